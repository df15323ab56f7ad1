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

if TYPE_CHECKING:
    from onnxz.analysis.analyze import ModelAnalysis


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=100)
        paths.append(path)
    _pyplot().close(fig)
    return paths


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
