"""Which probability law fits a tensor's weights: eight families fitted with scipy, ranked
by the squared error of the histogram and by Kullback–Leibler divergence (the research's
two criteria). Needs scipy (``pip install 'onnxz[analysis]'``); nothing else in onnxz does.

The histogram has :data:`BINS` bins over the central 99.8% of the values (so that a few
outliers do not squeeze the bulk into one bin), as a density of all the values.

- SSE = Σ_bins (histogram density − the fitted law's mean density over the bin)², the
  latter (F(right) − F(left)) / width from the cdf F (the pdf at the centre misjudges bins
  that are wide against a sharp peak, as for Cauchy-like tails).
- KL = Σ_bins P_i log2(P_i / Q_i), P the histogram's bin probabilities, Q the fitted law's
  (cdf differences, renormalized over the histogram's range), in bits.

Location and scale (and shape) are maximum-likelihood estimates from ``scipy.stats`` on at
most :data:`MAX_SAMPLE` values drawn without replacement (seeded). Gamma and exponential are
one-sided laws fitted with a free location, so on symmetric weights they rank low, as they
should. The α-stable law has no practical MLE in scipy: its parameters are McCulloch's
quantile estimates (scipy's own starting point for ``levy_stable.fit``).

>>> import numpy as np
>>> x = np.random.default_rng(0).laplace(0, 0.05, 20_000)
>>> result = fit_families(x)
>>> result.ranked("sse")[0], result.ranked("kl")[0]
('laplace', 'laplace')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

FAMILIES: dict[str, str] = {
    "laplace": "laplace",
    "gaussian": "norm",
    "cauchy": "cauchy",
    "logistic": "logistic",
    "uniform": "uniform",
    "gamma": "gamma",
    "exponential": "expon",
    "alpha-stable": "levy_stable",
}
"""Family name -> ``scipy.stats`` distribution name."""

BINS = 100
COVERAGE = 0.998
MAX_SAMPLE = 20_000
PROBABILITY_FLOOR = 1e-12
"""Q_i below this (a law with no mass where data are) is taken as this in the KL sum."""


@dataclass(frozen=True)
class Histogram:
    """``density[i]`` = count in [edges[i], edges[i+1]) / (all values × bin width)."""

    edges: np.ndarray
    counts: np.ndarray
    total: int

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def density(self) -> np.ndarray:
        return self.counts / (self.total * np.diff(self.edges))

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist(),
                "total": self.total}


@dataclass(frozen=True)
class FamilyFit:
    """One family fitted to the values: its scipy parameters, the two scores, and its mean
    density over each histogram bin (what SSE compares; empty if the fit failed)."""

    family: str
    params: tuple[float, ...]
    sse: float
    kl_bits: float
    bin_density: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        finite = np.isfinite
        return {"family": self.family, "params": list(self.params),
                "sse": self.sse if finite(self.sse) else None,
                "kl_bits": self.kl_bits if finite(self.kl_bits) else None}


@dataclass(frozen=True)
class FitResult:
    """The histogram and every family's fit, in :data:`FAMILIES` order."""

    histogram: Histogram
    fits: tuple[FamilyFit, ...]

    def ranked(self, criterion: str) -> list[str]:
        """Family names, best first, by ``"sse"`` or ``"kl"`` (failed fits last)."""
        key = {"sse": lambda f: f.sse, "kl": lambda f: f.kl_bits}[criterion]
        return [f.family for f in sorted(self.fits, key=lambda f: (np.nan_to_num(
            key(f), nan=np.inf), f.family))]

    def to_dict(self) -> dict[str, Any]:
        by_name = {f.family: f for f in self.fits}
        return {
            "by_sse": [by_name[n].to_dict() for n in self.ranked("sse")],
            "by_kl": [by_name[n].to_dict() for n in self.ranked("kl")],
        }


def histogram(x: np.ndarray, bins: int = BINS, coverage: float = COVERAGE) -> Histogram:
    """The :class:`Histogram` of ``x`` over its central ``coverage`` quantile range."""
    x = np.asarray(x, dtype=np.float64).ravel()
    tail = (1 - coverage) / 2
    lo, hi = np.quantile(x, [tail, 1 - tail])
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    return Histogram(edges, counts, int(x.size))


def fit_families(x: np.ndarray, bins: int = BINS, max_sample: int = MAX_SAMPLE, seed: int = 0
                 ) -> FitResult:
    """Fit every family of :data:`FAMILIES` to ``x`` and score it on ``x``'s histogram."""
    x = np.asarray(x, dtype=np.float64).ravel()
    sample = x
    if x.size > max_sample:
        sample = np.random.default_rng(seed).choice(x, max_sample, replace=False)
    hist = histogram(x, bins)
    return FitResult(hist, tuple(_fit(name, sample, hist) for name in FAMILIES))


def _fit(family: str, sample: np.ndarray, hist: Histogram) -> FamilyFit:
    dist = getattr(scipy.stats, FAMILIES[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if family == "alpha-stable":
                params = tuple(float(p) for p in dist._fitstart(sample))
            else:
                params = tuple(float(p) for p in dist.fit(sample))
            cdf = dist.cdf(hist.edges, *params)
        except (ValueError, RuntimeError, FloatingPointError):
            return FamilyFit(family, (), np.inf, np.inf, np.zeros(0))
    mass = np.diff(cdf)
    density = mass / np.diff(hist.edges)
    sse = float(np.sum((hist.density - density) ** 2))
    p = hist.counts / hist.counts.sum()
    q = np.maximum(mass / max(float(mass.sum()), PROBABILITY_FLOOR), PROBABILITY_FLOOR)
    present = p > 0
    kl = float(np.sum(p[present] * np.log2(p[present] / q[present])))
    if not (np.isfinite(sse) and np.isfinite(kl)):
        return FamilyFit(family, params, np.inf, np.inf, np.zeros(0))
    return FamilyFit(family, params, sse, kl, density)
