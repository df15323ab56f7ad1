"""Figures of ``onnxz analyze`` and ``onnxz sweep`` with matplotlib (``onnxz[plot]``).

Written without a display (the Agg backend), as PNG and, on request, SVG too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxz.analysis.fits import FitResult
from onnxz.analysis.stats import STRONG
from onnxz.fileio import atomic_outputs

if TYPE_CHECKING:
    from onnxz.analysis.analyze import ModelAnalysis
    from onnxz.analysis.sweep import SweepResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        _write(fig, path, fmt, dpi=100)
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _write(fig: Any, path: Path, fmt: str, dpi: int) -> None:
    """``fig`` as ``path``, which appears only complete (an interrupted figure leaves the
    one before it, or none)."""
    with atomic_outputs([path], force=True) as (temporary,):
        fig.savefig(temporary, format=fmt, dpi=dpi)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:60] or "tensor"


def plot_fit(fit: FitResult, title: str, stem: Path, formats: Sequence[str]) -> list[Path]:
    """The histogram with every fitted law's density (its mean over each bin), on a linear
    and a log scale."""
    plt = _pyplot()
    hist = fit.histogram
    curves = [(f.family, f.bin_density) for f in fit.fits if f.bin_density.size]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    best = fit.ranked("kl")[:3]
    for ax, log in zip(axes, (False, True), strict=True):
        ax.stairs(hist.density, hist.edges, fill=True, color="0.8", label="weights")
        for family, y in curves:
            ax.plot(hist.centres, y, lw=1.6 if family in best else 0.8,
                    ls="-" if family in best else ":", label=family)
        ax.set_xlabel("weight value")
        ax.set_ylabel("density")
        if log:
            positive = hist.density[hist.density > 0]
            ax.set_yscale("log")
            ax.set_ylim(positive.min() / 3 if positive.size else 1e-6,
                        hist.density.max() * 3)
        ax.set_title(f"{title} ({'log' if log else 'linear'} scale)", fontsize=9)
    axes[1].legend(fontsize=7, loc="lower center")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.86, wspace=0.2)
    fig.suptitle(f"best by KL: {', '.join(best)}; by SSE: {', '.join(fit.ranked('sse')[:3])}",
                 fontsize=9)
    return _save(fig, stem, formats)


def plot_analysis(result: ModelAnalysis, folder: str | Path, svg: bool = False) -> list[Path]:
    """Every figure of an analysis into ``folder`` (created): one histogram figure per tensor
    and for the whole model, the autocorrelation, and the layer correlation matrix."""
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    formats = ("png", "svg") if svg else ("png",)
    written = plot_fit(result.fit, "whole model", folder / "model_histogram", formats)
    for i, t in enumerate(result.tensors):
        written += plot_fit(t.fit, t.name or f"tensor {i}",
                            folder / f"tensor_{i:03d}_{_safe(t.name)}", formats)
    lags = np.arange(1, result.max_lag + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in result.tensors:
        ax.plot(lags, t.autocorrelation, color="tab:blue", alpha=0.35, lw=0.8)
    ax.plot(lags, np.abs(result.autocorrelations).mean(0), color="k", lw=2, label="mean |ρ|")
    for level in (STRONG, -STRONG):
        ax.axhline(level, color="tab:red", ls="--", lw=0.8)
    ax.set_xlabel("lag (elements, row-major)")
    ax.set_ylabel("autocorrelation ρ")
    ax.set_ylim(-1, 1)
    ax.set_title(f"autocorrelation inside {len(result.tensors)} tensors", fontsize=9)
    ax.legend(fontsize=8)
    written += _save(fig, folder / "autocorrelation", formats)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(result.correlation, vmin=-1, vmax=1, cmap="coolwarm")
    fig.colorbar(image, ax=ax, label="Pearson ρ")
    ax.set_title("correlation between layers (equal-length samples)", fontsize=9)
    ax.set_xlabel("tensor")
    ax.set_ylabel("tensor")
    written += _save(fig, folder / "layer_correlation", formats)
    return written


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """Rate against fidelity: one line per method, the Pareto front, the best point.
    The format follows ``path``'s suffix (.png, .svg, .pdf)."""
    plt = _pyplot()
    path = Path(path)
    user = result.fidelity.evaluate is not None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(p["method"] for p in result.measured):
        mine = sorted((p for p in result.measured if p["method"] == name),
                      key=lambda p: p["bits_per_weight"])
        ax.plot([p["bits_per_weight"] for p in mine], [p["fidelity"] for p in mine],
                marker="o", ms=3, lw=1, label=mine[0]["label"].split(",")[0])
    front = result.pareto
    ax.plot([p["bits_per_weight"] for p in front], [p["fidelity"] for p in front],
            color="k", lw=2.5, alpha=0.3, label="Pareto front")
    if user and result.reference is not None:
        ax.axhline(result.reference, color="0.3", ls=":", lw=1, label="original")
        ax.axhline(result.reference - result.tolerance, color="tab:red", ls="--", lw=1,
                   label=f"tolerance {result.tolerance:g}")
        ax.set_ylim(max(min(p["fidelity"] for p in result.measured),
                        result.reference - 20 * max(result.tolerance, 1e-3)),
                    result.reference + 4 * max(result.tolerance, 1e-3))
    elif not user:
        ax.axhline(20.0, color="tab:red", ls="--", lw=1, label="verify: 20 dB")
        finite = [p["fidelity"] for p in result.measured if abs(p["fidelity"]) < 1e8]
        if finite:
            ax.set_ylim(min(finite) - 3, max(finite) + 3)
    best = result.best
    if best is not None:
        ax.plot([best["bits_per_weight"]], [best["fidelity"]], marker="*", ms=16,
                color="gold", mec="k", ls="none", label=f"best: {best['label']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight (whole file)")
    ax.set_ylabel("score (evaluate)" if user else "lowest output SNR, dB (verify)")
    ax.set_title(f"{Path(result.model).name}: rate vs {'score' if user else 'fidelity'}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _write(fig, path, path.suffix[1:].lower(), dpi=110)
    plt.close(fig)
    return path
