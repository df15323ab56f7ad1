"""Statistics of weight tensors with numpy alone: moments, empirical entropy, correlation.

>>> import numpy as np
>>> x = np.random.default_rng(0).laplace(0, 1, 200_000)
>>> s = tensor_stats(x)
>>> round(s.kurtosis), round(s.std, 2)           # excess kurtosis: 3 for Laplace
(3, 1.41)
>>> float32_entropy_bits(np.array([0.5, 0.5, -1.0, 2.0]))  # bits per value
1.5
>>> bool(abs(autocorrelation(x, 3)).max() < 0.01)           # i.i.d.: no correlation
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NEAR_ZERO = 0.1
"""|x| below this fraction of the tensor's standard deviation counts as near zero."""

STRONG = 0.5
"""|ρ| at or above this is a strong correlation (the research's threshold)."""


@dataclass(frozen=True)
class TensorStats:
    """Moments and entropy of a set of values.

    ``kurtosis`` is the excess kurtosis (0 for a Gaussian, 3 for a Laplacian);
    ``near_zero`` the fraction with |x| < :data:`NEAR_ZERO` × std; ``entropy_bits`` the
    empirical entropy of the values as float32 bit patterns, in bits per value.
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    kurtosis: float
    near_zero: float
    entropy_bits: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tensor_stats(x: np.ndarray) -> TensorStats:
    """The :class:`TensorStats` of a non-empty array of finite values."""
    x = np.asarray(x, dtype=np.float64).ravel()
    mean = float(x.mean())
    centred = x - mean
    var = float(np.mean(centred**2))
    std = var**0.5
    kurtosis = float(np.mean(centred**4)) / var**2 - 3.0 if var > 0 else 0.0
    return TensorStats(
        count=int(x.size),
        mean=mean,
        std=std,
        min=float(x.min()),
        max=float(x.max()),
        kurtosis=kurtosis,
        near_zero=float(np.mean(np.abs(x) < NEAR_ZERO * std)) if std > 0 else 1.0,
        entropy_bits=float32_entropy_bits(x),
    )


def float32_entropy_bits(x: np.ndarray) -> float:
    """Zeroth-order empirical entropy of the values cast to float32, in bits per value
    (what a lossless coder of independent float32 symbols could at best reach)."""
    bits = np.asarray(x, dtype=np.float32).ravel().view(np.uint32)
    if bits.size == 0:
        return 0.0
    counts = np.unique(bits, return_counts=True)[1].astype(np.float64)
    p = counts / bits.size
    return float(-(p * np.log2(p)).sum())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation coefficient of two equal-length arrays (0 if one is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / denominator if denominator > 0 else 0.0


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """ρ(lag) for lag = 1 … ``max_lag`` inside the flattened tensor: Pearson's coefficient
    of x[:-lag] and x[lag:] (lags beyond the length give 0)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return np.array([pearson(x[:-lag], x[lag:]) if lag < x.size - 1 else 0.0
                     for lag in range(1, max_lag + 1)])


def layer_correlation(tensors: list[np.ndarray], max_length: int = 1 << 16) -> np.ndarray:
    """Pearson's ρ between every two tensors on equal-length samples: the first
    min(len a, len b, ``max_length``) elements of each, flattened. Diagonal 1."""
    flat = [np.asarray(t, dtype=np.float64).ravel()[:max_length] for t in tensors]
    n = len(flat)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            m = min(flat[i].size, flat[j].size)
            matrix[i, j] = matrix[j, i] = pearson(flat[i][:m], flat[j][:m])
    return matrix


def strong_share(values: np.ndarray) -> float:
    """The fraction of ``values`` with |ρ| ≥ :data:`STRONG` (0 for none)."""
    values = np.asarray(values).ravel()
    return float(np.mean(np.abs(values) >= STRONG)) if values.size else 0.0
