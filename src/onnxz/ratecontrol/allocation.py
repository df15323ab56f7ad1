"""Per-tensor sensitivity and the equal-slope allocation of bits.

Sensitivity: quantize one tensor at a probe step, leave the others exact, run the samples and
measure the objective; its sensitivity is that distortion per unit of the tensor's squared
weight error. Allocation: for a slope λ every tensor takes the point of its rate–distortion
curve that minimizes ``sensitivity · sse + λ · bytes`` (the Lagrangian of "fewest bytes for
this much output distortion"); one λ for all tensors is the equal-slope condition.

>>> import numpy as np
>>> curve = [(0.0, 100.0), (1.0, 60.0), (4.0, 30.0)]   # (sse, bytes) from fine to coarse
>>> [lagrangian_choice(curve, 1.0, lam) for lam in (0.01, 0.05, 1.0)]
[0, 1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from onnxz.ratecontrol.tensors import Candidate, Point, Setting
from onnxz.walker import Path

PROBE_STEP = 1 / 8
"""Relative step of the sensitivity probe: about 29 dB weight SNR, small enough for the
outputs to respond linearly, large enough to rise above float rounding."""

Plan = dict[Path, Point]
"""The chosen point of every candidate tensor, by its path in the model."""


def lagrangian_choice(curve: Sequence[tuple[float, float]], sensitivity: float,
                      lam: float) -> int:
    """Index of the (sse, bytes) pair minimizing ``sensitivity·sse + lam·bytes``."""
    costs = [sensitivity * sse + lam * size for sse, size in curve]
    return int(np.argmin(costs))


def allocate(candidates: Sequence[Candidate], lam: float) -> Plan:
    """Every candidate's point at slope ``lam`` (sensitivities must be filled in)."""
    plan = {}
    for c in candidates:
        assert c.sensitivity is not None
        index = lagrangian_choice([(p.sse, p.bytes) for p in c.points], c.sensitivity, lam)
        plan[c.path] = c.points[index]
    return plan


def predicted_distortion(candidates: Sequence[Candidate], plan: Plan) -> float:
    """The objective the additive model predicts for ``plan``."""
    return sum(c.sensitivity * plan[c.path].sse for c in candidates)  # type: ignore[operator]


def plan_bytes(plan: Plan) -> float:
    return sum(p.bytes for p in plan.values())


def slope_range(candidates: Sequence[Candidate]) -> tuple[float, float]:
    """Slopes λ below which every tensor stays at its finest point and above which every
    tensor takes its coarsest (bracketing the search)."""
    slopes = []
    for c in candidates:
        for a, b in zip(c.points, c.points[1:], strict=False):
            saved = a.bytes - b.bytes
            if saved > 0 and b.sse > a.sse:
                slopes.append(c.sensitivity * (b.sse - a.sse) / saved)  # type: ignore[operator]
    positive = [s for s in slopes if s > 0 and math.isfinite(s)]
    if not positive:
        return 1e-12, 1.0
    return min(positive) / 4, max(positive) * 4


def slope_for(candidates: Sequence[Candidate], predicate: Callable[[Plan], bool],
              iterations: int = 50) -> float:
    """The largest λ (by bisection in log space) whose allocation satisfies ``predicate``,
    which must be monotone (true for small λ); uses no model runs."""
    lo, hi = slope_range(candidates)
    if predicate(allocate(candidates, hi)):
        return hi
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if predicate(allocate(candidates, mid)) else (lo, mid)
    return lo


def measure_sensitivities(
    candidates: Sequence[Candidate],
    distortion_with: Callable[[dict[Path, Setting]], float],
    progress: Callable[[int, int, str], None] | None = None,
) -> None:
    """Fill in every candidate's sensitivity: ``distortion_with(settings)`` is the objective
    with only the tensors in ``settings`` changed. A weight tensor is probed alone at
    :data:`PROBE_STEP`; the auxiliary tensors together at their one lossy setting (they share
    a sensitivity per unit of error: one run, not one per bias). Weight tensors no sample
    exercises (the outputs did not change at all) get the median sensitivity per unit of
    relative error of the others."""
    probe = Setting.step(PROBE_STEP)
    weights = [c for c in candidates if not c.auxiliary]
    auxiliary = [(c, c.points[-1]) for c in candidates if c.auxiliary and len(c.points) > 1]
    if auxiliary:
        error = sum(point.sse for _, point in auxiliary)
        shared = distortion_with({c.path: p.setting for c, p in auxiliary}) / error if (
            error) else 0.0
        for c, _ in auxiliary:
            c.sensitivity = shared
    for c in candidates:
        if c.auxiliary and c.sensitivity is None:
            c.sensitivity = 0.0
    for done, c in enumerate(weights, 1):
        # priced apart when the curve lacks it (a weight-SNR floor removed the coarse steps)
        point = next((p for p in c.points if p.setting == probe), None) or c.price(probe)
        if point is None or point.sse == 0:
            c.sensitivity = 0.0
        else:
            c.sensitivity = distortion_with({c.path: probe}) / point.sse
        if progress:
            progress(done, len(weights), c.name)
    relative = [c.sensitivity * c.energy for c in weights if c.sensitivity]
    typical = float(np.median(relative)) if relative else 1.0
    for c in weights:
        if not c.sensitivity:
            c.sensitivity = typical / c.energy if c.energy else 0.0
            c.exercised = False


def clip_sensitivities(candidates: Sequence[Candidate], spread_db: float) -> None:
    """Bring every weight tensor's relative sensitivity within ``spread_db`` of their
    median: for sensitivities measured on inputs that may be unlike real ones (the default's
    generated inputs), no tensor is left nearly exact or nearly erased on their word."""
    weights = [c for c in candidates if not c.auxiliary and c.sensitivity and c.energy]
    if not weights:
        return
    median = float(np.median([c.sensitivity * c.energy for c in weights]))  # type: ignore[operator]
    factor = 10 ** (spread_db / 10)
    for c in weights:
        relative = min(max(c.sensitivity * c.energy, median / factor), median * factor)  # type: ignore[operator]
        c.sensitivity = relative / c.energy
