"""``onnxz analyze``: the research's study of a model's weights, on the user's model.

Per weight tensor and for all of them pooled: moments, empirical float32 entropy, the eight
families of :mod:`onnxz.analysis.fits` ranked by histogram SSE and by KL divergence; then the
correlation between layers and inside tensors (the evidence for scalar quantization).

>>> result = analyze("examples/digits_cnn.onnx")           # doctest: +SKIP
>>> result.tensors[0].fit.ranked("kl")[:2]                  # doctest: +SKIP
['laplace', 'logistic']
>>> print(result.table())                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxz.analysis.fits import FAMILIES, FitResult, fit_families
from onnxz.analysis.stats import (
    STRONG,
    TensorStats,
    autocorrelation,
    layer_correlation,
    strong_share,
    tensor_stats,
)
from onnxz.codecs.deadzone import to_float64
from onnxz.errors import UnsupportedModelError
from onnxz.modelio import open_model

DEFAULT_MAX_LAG = 10
DEFAULT_MIN_ELEMENTS = 1024

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TensorAnalysis:
    """One tensor: where it is, its statistics, fits and autocorrelation (lags 1 … k)."""

    name: str
    path: tuple[str | int, ...]
    dtype: str
    shape: tuple[int, ...]
    stats: TensorStats
    fit: FitResult
    autocorrelation: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": list(self.path), "dtype": self.dtype,
                "shape": list(self.shape), "stats": self.stats.to_dict(),
                "fits": self.fit.to_dict(), "autocorrelation": self.autocorrelation.tolist()}


@dataclass(frozen=True)
class ModelAnalysis:
    """The whole study: every analyzed tensor, the pooled weights, the correlations."""

    model: str
    tensors: tuple[TensorAnalysis, ...]
    stats: TensorStats
    fit: FitResult
    correlation: np.ndarray
    max_lag: int

    @property
    def layer_pairs(self) -> np.ndarray:
        """ρ of every pair of distinct tensors (upper triangle of :attr:`correlation`)."""
        return self.correlation[np.triu_indices(len(self.tensors), 1)]

    @property
    def autocorrelations(self) -> np.ndarray:
        """All tensors' ρ at lags 1 … k, one row per tensor."""
        return np.array([t.autocorrelation for t in self.tensors]).reshape(-1, self.max_lag)

    def family_places(self, criterion: str) -> dict[str, list[int]]:
        """family -> how many tensors ranked it 1st, 2nd, … by ``"sse"`` or ``"kl"``."""
        places = {name: [0] * len(FAMILIES) for name in FAMILIES}
        for t in self.tensors:
            for place, name in enumerate(t.fit.ranked(criterion)):
                places[name][place] += 1
        return places

    def to_dict(self) -> dict[str, Any]:
        pairs, lags = self.layer_pairs, self.autocorrelations
        return {
            "model": self.model,
            "tensors": [t.to_dict() for t in self.tensors],
            "whole_model": {"stats": self.stats.to_dict(), "fits": self.fit.to_dict()},
            "family_places": {c: self.family_places(c) for c in ("sse", "kl")},
            "correlation": {
                "names": [t.name for t in self.tensors],
                "matrix": self.correlation.tolist(),
                "pairs": int(pairs.size),
                "strong_share": strong_share(pairs),
                "max_abs": float(np.abs(pairs).max(initial=0.0)),
            },
            "autocorrelation": {
                "lags": self.max_lag,
                "values": int(lags.size),
                "strong_share": strong_share(lags),
                "max_abs": float(np.abs(lags).max(initial=0.0)),
            },
            "strong_threshold": STRONG,
        }

    def table(self) -> str:
        """The study for people: a row per tensor, the pooled row, the summaries."""
        header = ("tensor", "shape", "count", "mean", "std", "kurt", "near0", "H bits",
                  "best SSE", "best KL", "max|ρ| lag")
        rows = [header]
        for label, shape, s, fit, auto in (
            *((t.name, "x".join(map(str, t.shape)), t.stats, t.fit, t.autocorrelation)
              for t in self.tensors),
            ("(whole model)", "", self.stats, self.fit, None),
        ):
            rows.append((
                label if len(label) <= 36 else "…" + label[-35:], shape, str(s.count),
                f"{s.mean:.3g}", f"{s.std:.3g}", f"{s.kurtosis:.2f}", f"{s.near_zero:.3f}",
                f"{s.entropy_bits:.2f}", fit.ranked("sse")[0], fit.ranked("kl")[0],
                "-" if auto is None else f"{np.abs(auto).max(initial=0.0):.3f}",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i in (0, 1, 8, 9) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "")
        n = len(self.tensors)
        lines += ["", f"{self.model}: {n} weight tensors, {self.stats.count} weights; "
                  f"H = empirical entropy of the float32 values (bits/weight); kurt = excess "
                  f"kurtosis (Gaussian 0, Laplace 3); near0 = share with |x| < 0.1 std", ""]
        for criterion, title in (("sse", "histogram SSE"), ("kl", "KL divergence")):
            places = self.family_places(criterion)
            order = sorted(FAMILIES, key=lambda f: [-c for c in places[f]])
            lines.append(f"families by {title} (tensors placing it 1st / 2nd / 3rd):")
            lines += [f"  {f:<13} {places[f][0]:>4} {places[f][1]:>4} {places[f][2]:>4}"
                      for f in order]
        pairs, lags = self.layer_pairs, self.autocorrelations
        lines += [
            "",
            f"correlation between layers (Pearson, equal-length samples): {pairs.size} pairs, "
            f"{strong_share(pairs):.1%} with |ρ| ≥ {STRONG} "
            f"(max |ρ| {np.abs(pairs).max(initial=0.0):.3f})",
            f"autocorrelation inside tensors, lags 1..{self.max_lag}: {lags.size} values, "
            f"{strong_share(lags):.1%} with |ρ| ≥ {STRONG} "
            f"(max |ρ| {np.abs(lags).max(initial=0.0):.3f})",
        ]
        return "\n".join(lines)


def analyze(model: onnx.ModelProto | str | os.PathLike, *, max_lag: int = DEFAULT_MAX_LAG,
            min_elements: int = DEFAULT_MIN_ELEMENTS, weights_only: bool = True,
            progress: Progress | None = None) -> ModelAnalysis:
    """Study the float tensors of ``model`` (a path or ModelProto).

    Tensors analyzed: float tensors of at least ``min_elements`` elements that feed weight
    inputs (the tensors ``onnxz pack`` quantizes), or every float tensor of that size when
    ``weights_only`` is False. Raises :class:`onnxz.UnsupportedModelError` if there is none.
    ``progress(done, total, name)`` is called after each tensor.
    """
    if max_lag < 1 or min_elements < max_lag + 2:
        raise ValueError("need max_lag ≥ 1 and min_elements ≥ max_lag + 2")
    source = open_model(model)  # external data read tensor by tensor
    path = source.path
    chosen = []
    integers = 0  # 8-bit integer tensors (an int8 model's weights): not studied
    for tensor in source.tensors:
        slot, etype = tensor.slot, tensor.etype
        if tensor.count < min_elements:
            continue
        if etype.name in ("int8", "uint8"):
            integers += 1
        if not etype.is_quantizable or (weights_only and not slot.is_weight):
            continue
        values = to_float64(tensor.payload().read(), etype)
        if np.isfinite(values).all():
            chosen.append((slot, etype, values))
    if not chosen:
        what = "float weight tensors" if weights_only else "float tensors"
        why = (f" (its {integers} 8-bit integer tensors, an integer-quantized model's "
               "weights, are not studied)" if integers else "")
        raise UnsupportedModelError(
            f"no finite {what} of ≥ {min_elements} elements to analyze{why}")
    tensors = []
    for done, (slot, etype, values) in enumerate(chosen, 1):
        tensors.append(TensorAnalysis(
            name=slot.tensor.name, path=slot.path, dtype=etype.name,
            shape=tuple(slot.tensor.dims), stats=tensor_stats(values),
            fit=fit_families(values), autocorrelation=autocorrelation(values, max_lag)))
        if progress:
            progress(done, len(chosen), slot.tensor.name)
    pooled = np.concatenate([values for _, _, values in chosen])
    return ModelAnalysis(
        model=str(path) if path else "<ModelProto>",
        tensors=tuple(tensors),
        stats=tensor_stats(pooled),
        fit=fit_families(pooled),
        correlation=layer_correlation([values for _, _, values in chosen]),
        max_lag=max_lag,
    )
