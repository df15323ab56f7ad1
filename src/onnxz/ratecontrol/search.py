"""The searches: the smallest allocation that keeps a fidelity target, the best one that fits
a byte budget, and the per-tensor weight-SNR floor.

Every search works on a :class:`Workbench`: the model with its candidate tensors' payloads
swappable in place, and the original's outputs on the samples. A plan is judged by running
it (onnxruntime, the reconstructions a decoder would produce) — never by the additive model
alone, which only chooses where to look first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from onnxz.codecs.deadzone import to_float64
from onnxz.errors import TargetNotMetError
from onnxz.fidelity import Fidelity
from onnxz.inputs import InputsArg
from onnxz.policy import PackOptions
from onnxz.progress import Progress
from onnxz.ratecontrol.allocation import (
    Plan,
    allocate,
    clip_sensitivities,
    measure_sensitivities,
    plan_bytes,
    predicted_distortion,
    slope_for,
    slope_range,
)
from onnxz.ratecontrol.correction import BiasCorrection
from onnxz.ratecontrol.feedback import ErrorFeedback
from onnxz.ratecontrol.heads import find_head_layers, output_moments
from onnxz.ratecontrol.layers import find_linear_layers, inline_taken_branches, input_moments
from onnxz.ratecontrol.objective import Objective, extra_outputs_for
from onnxz.ratecontrol.tensors import (
    LOSSLESS,
    Candidate,
    Point,
    Setting,
    find_candidates,
    tied,
)
from onnxz.verifier import ModelFailed, OutputMetrics, ReferenceRun
from onnxz.walker import Path, put_payload, resolve

MAX_EVALUATIONS = 14
"""Model runs the fidelity search may spend after the sensitivity pass."""

SENSITIVITY_UNITS = 4096
"""The sensitivity pass runs the first samples that hold this many output units (a row of
class scores, or an element of any other output: the things its measures average over),
at least :data:`MIN_SENSITIVITY_SAMPLES`, at most :data:`SENSITIVITY_RUNS` / tensors.
Deterministic, unlike a time budget: a page-sized detector output holds them in one sample
(but see :data:`MIN_SENSITIVITY_SAMPLES`), a classifier's one row per sample needs many
(and they are cheap). On a model that carries
state from sample to sample it runs the stream from its start, all of it unless
:data:`STREAM_SENSITIVITY_PASSES` stops it: the start of a stream is not like the rest
(silero-vad's first 16 chunks, half a second of audio, gave sensitivities that made its
`top1>=0.995` file 348 KB; the whole calibration stream, 310 KB at the same held-out
agreement: 99.70% vs 99.66%)."""

SENSITIVITY_RUNS = 1024
"""Sample runs (one per tensor and sample) the sensitivity pass may spend."""

MIN_SENSITIVITY_SAMPLES = 8
"""The fewest samples the sensitivity pass runs (if there are that many and
:data:`SENSITIVITY_RUNS` allows: a model of more than 128 tensors runs its budget's
share, at least 2, as before). A large output's units are not independent: they answer
one input. NudeNet's (a detector, 63 weight tensors) sensitivities measured on the two
halves of its 86 calibration images differed by a median of 8.0 dB (centred; their own
spread 13.4 dB) with 2 images each, 4.8 dB with 8 (``tools/sensitivity_noise.py``); its
`snr>=25` file went from 3,128,641 to 2,079,027 bytes, the smallest with every held-out box
kept (swept) from 3,768,897 to 2,894,696 bytes.
PP-OCRv4 det's default pack takes 55 s of CPU instead of 39."""

STREAM_SENSITIVITY_PASSES = 4
"""On a model that carries state, the sensitivity pass runs the stream from its start, as
far as this many times the search's own sample runs (:data:`MAX_EVALUATIONS` runs of every
sample) allow: the whole stream unless the model has more than 56 candidate tensors."""

EQUALIZED_DB = 0.0
"""The fidelity search's second try on models that carry state from sample to sample
(:func:`onnxz.verifier.carried_state`): every weight tensor's sensitivity set to the
median, i.e. the allocation for equal relative error everywhere. There the error compounds
over a stream, which one-tensor probes do not capture, and the measured sensitivities
could misdirect bits (silero-vad, when they came from the stream's first 16 chunks: 368 KB
by them at output SNR 24.7 dB against 324 KB at one relative step with 30 dB; they now come
from the whole stream, see :data:`SENSITIVITY_UNITS`). On stateless models they are kept:
the equal plan is smaller there too but keeps fewer decisions on held-out inputs (magika,
PP-OCR cls: 99.3% against ≥ 99.5%)."""

BISECTION_RATIO = 1.25
"""The fidelity search's bisection on the slope stops when the passing and failing slopes
are this close; :data:`REFINEMENT_RUNS` then split the difference tensor by tensor."""

REFINEMENT_RUNS = 3
"""Model runs the fidelity search spends, after its bisection on the slope, between the
passing plan and the failing one: equal-slope plans move tensors of like sensitivity
together (all-MiniLM-L6-v2's six feed-forward layers and its word embeddings switched
one step between two slopes 1.19 apart, 0.58 MB of a 20.9 MB file), so the search then
switches the tensors that differ one group at a time, cheapest in predicted distortion per
byte first (:func:`switch_order`), bisecting on how many."""

SizeOf = Callable[[Plan, dict], int]
"""``size_of(plan, summary)``: the exact size of the file of ``plan`` whose index records
``summary`` (the API packs it in memory)."""


@dataclass
class RateResult:
    """What a search chose: ``settings`` per tensor path, with the figures behind it.

    ``metrics`` are the chosen plan's outputs against the original's on the samples of
    ``reference`` (none when the plan was chosen without running the model); ``predicted``
    the decision checks' predicted agreement per criterion;
    ``met`` says whether the target holds (False only with ``best_effort``);
    ``corrections`` the new values (before their own coding) of the biases that absorb
    their layer's quantization shift (:mod:`onnxz.ratecontrol.correction`), by path;
    ``rounded`` the values of the weights rounded with error feedback
    (:mod:`onnxz.ratecontrol.feedback`), which the writer codes at their settings' absolute
    steps; ``folded`` the new values of the batch normalizations' tensors re-expressed
    without their statistics (:mod:`onnxz.ratecontrol.statistics`); ``fidelity`` the
    criteria a ``fidelity`` search judged (None in the other modes).
    """

    mode: str
    target: str
    reference: ReferenceRun | None
    candidates: list[Candidate]
    plan: Plan
    metrics: tuple[OutputMetrics, ...]
    predicted: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    met: bool = True
    note: str = ""
    corrections: dict[Path, np.ndarray] = field(default_factory=dict)
    rounded: dict[Path, np.ndarray] = field(default_factory=dict)
    folded: dict[Path, np.ndarray] = field(default_factory=dict)
    fidelity: Fidelity | None = None

    @property
    def settings(self) -> dict[Path, Setting]:
        """Every candidate's setting and its twins' (:func:`tied`)."""
        return tied({path: point.setting for path, point in self.plan.items()},
                    self.candidates)

    def sensitivities(self) -> dict[Path, float]:
        """Each measured tensor's relative sensitivity (what the file records)."""
        return {c.path: c.relative_sensitivity for c in self.candidates
                if c.exercised and c.relative_sensitivity is not None}

    def unjudged(self) -> list[str]:
        """The outputs no criterion of the ``fidelity`` target judges, neither themselves nor
        through a value that stands for them or a part of them: the search was free to
        change them as much as it liked (a table recognizer's cell boxes under ``top1`` of
        its tokens: every box moved)."""
        if self.fidelity is None:
            return []
        judged: set[str] = set()
        for m in self.metrics:
            if any(m.judged_by(c) for c in self.fidelity.criteria):
                judged.update((m.name, *m.stands_for, *m.part_of))
        return [m.name for m in self.metrics
                if not (m.stands_for or m.part_of) and m.name not in judged]

    def summary(self) -> dict:
        """What the index records of this search (JSON-safe)."""
        achieved = {}
        for m in self.metrics:
            figures = {"snr": m.snr_db, "cosine": m.cosine_min, "exact": m.exact,
                       "top1": m.top1, "top1_sample": m.top1_sample, "ctc": m.ctc, "top5": m.top5,
                       "max_abs": m.max_abs_error}
            achieved[m.name] = {k: v for k, v in figures.items()
                                if v is not None and math.isfinite(v)}
            if m.picked:
                achieved[m.name]["picked_by"] = m.picked
            if m.stands_for:
                achieved[m.name]["stands_for"] = list(m.stands_for)
            if m.pinned:
                achieved[m.name]["pinned_by"] = m.pinned
            if m.lost_classes:
                achieved[m.name]["lost_classes"] = [list(lost) for lost in m.lost_classes]
        changed = {"corrected_biases": len(self.corrections)} if self.corrections else {}
        if self.rounded:
            changed["calibrated_rounding"] = len(self.rounded)
        if self.folded:
            changed["folded_normalizations"] = len(self.folded) // 4  # four tensors each
        if unjudged := self.unjudged():
            changed["unjudged"] = unjudged
        return {"mode": self.mode, "target": self.target,
                "inputs": self.reference.samples.description if self.reference else None,
                "note": self.note,
                "met": self.met, "evaluations": self.evaluations, "achieved": achieved,
                "predicted": self.predicted} | changed


@dataclass(frozen=True)
class SizingPlan:
    """A plan as the writer sees it while its file is only being sized: the figures the
    file will record are not known yet, so incompressible stand-ins of the same shape."""

    plan: Plan
    recorded: dict

    @property
    def settings(self) -> dict[Path, Setting]:
        return {path: point.setting for path, point in self.plan.items()}

    def sensitivities(self) -> dict[Path, float]:
        noise = np.random.default_rng(0).random(len(self.plan))
        return dict(zip(self.plan, map(float, noise), strict=True))

    def summary(self) -> dict:
        return self.recorded


class Workbench:
    """The model with swappable weights, its candidates and the original's outputs.

    ``model`` is a private copy: candidates' payloads in it are replaced while plans are
    evaluated and restored afterwards. ``settings`` are the weight tensors' settings to price
    (default: :func:`~onnxz.ratecontrol.tensors.find_candidates`'s). With
    ``correct_biases``, every plan runs with the biases that absorb their layer's
    quantization shift corrected (:mod:`onnxz.ratecontrol.correction`, means measured on
    these inputs). ``folded`` are new values of the model's tensors, by path, that the
    candidates start from, put in after the original's run: the batch normalizations
    without their statistics (:func:`onnxz.ratecontrol.statistics.fold_statistics`).
    ``workers`` processes price the candidates (the result is the same for any number).
    """

    def __init__(self, model: onnx.ModelProto, inputs: InputsArg, options: PackOptions,
                 fidelity: Fidelity | None, class_outputs: Sequence[str] = (),
                 progress: Progress | None = None, extra_outputs: Sequence[str] = (),
                 settings: Sequence[Setting] | None = None,
                 correct_biases: bool = False, calibrated_rounding: bool = False,
                 folded: Mapping[Path, np.ndarray] | None = None, workers: int = 1) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.fidelity = fidelity
        extras = extra_outputs_for(fidelity, model) if fidelity else tuple(extra_outputs)
        try:
            self.reference = ReferenceRun(self.model, inputs, class_outputs, extras)
        except ModelFailed as exc:
            raise TargetNotMetError(f"rate control needs the model to run: {exc}") from exc
        if fidelity is not None:
            self.reference.check(fidelity)
        self.folded = dict(folded or {})
        for path, values in self.folded.items():
            put_payload(resolve(self.model, path), values)
        self.candidates = find_candidates(self.model, options, settings, workers=workers)
        self.correction = (BiasCorrection.measure(self.model, self.reference)
                           if correct_biases else None)
        self._by_path = {c.path: c for c in self.candidates}
        self.feedback = self._measure_feedback() if calibrated_rounding else {}
        self.progress = progress
        self.evaluations = 0
        self._current: dict[Path, Setting] = {}
        self._shifts: dict[Path, np.ndarray] = {}  # per corrected bias: its layer's shift

    def apply(self, settings: dict[Path, Setting]) -> None:
        """Put every candidate's reconstruction under ``settings`` (missing: exact) into the
        working model, and the corrected biases (with their own settings)."""
        moved: set[Path] = set()
        for c in self.candidates:
            setting = settings.get(c.path, LOSSLESS)
            if self._current.get(c.path, LOSSLESS) != setting:
                values = c.reconstruction(setting)
                for slot in (c.slot, *c.twins):  # twins are coded alike
                    put_payload(slot.tensor, values)
                self._current[c.path] = setting
                moved.add(c.path)
                if self.correction and c.path in self.correction.by_weight:
                    target = self.correction.by_weight[c.path].target
                    self._shifts[target] = self.correction.shift(
                        c.path, to_float64(c.values, c.etype), to_float64(values, c.etype))
                    moved.add(target)
        for target in moved & self._shifts.keys():
            values = self._corrected(target)
            if target in self._by_path:
                values = self._by_path[target].reconstruction(settings.get(target, LOSSLESS),
                                                              values)
            put_payload(resolve(self.model, target), values)

    def _measure_feedback(self) -> dict[Path, ErrorFeedback]:
        """The rounding with error feedback (:mod:`onnxz.ratecontrol.feedback`) of every
        weight tensor of a linear layer where it holds up on the samples: through its inputs,
        or a classifier head's through its outputs (:mod:`onnxz.ratecontrol.heads`)."""
        # float32 only: the writer quantizes the fed-back values again (see feedback.py)
        weights = {c.path: c for c in self.candidates
                   if not c.auxiliary and c.row == 1 and c.etype.name == "float32"}
        inlined = inline_taken_branches(self.model, self.reference)
        layers = {layer.weight: layer for layer in find_linear_layers(self.model, inlined)
                  if layer.weight in weights}
        outputs = {spec.name: spec.name in self.reference.class_scores
                   for spec in self.reference.output_specs}
        decided = self.fidelity.decided(outputs) if self.fidelity else frozenset()
        heads = {head.weight: head for head in find_head_layers(self.model)
                 if head.weight in weights}
        sides = [(layers, input_moments(inlined.model, self.reference, list(layers.values()))),
                 (heads, output_moments(self.model, self.reference, list(heads.values()),
                                        decided))]
        found = {}
        for side, moments in sides:  # the input side first; a head's outputs where it fails
            for path, measured in moments.items():
                c = weights[path]
                if path not in found and (feedback := ErrorFeedback.measure(
                        side[path], to_float64(c.values, c.etype), c.spread, measured,
                        c.dead_zone_steps())) is not None:
                    found[path] = feedback
        return found

    def use_feedback(self) -> None:
        """From now on, round the tensors :attr:`feedback` holds with it (after the
        sensitivity pass, which measures each tensor with plain rounding)."""
        for path, feedback in self.feedback.items():
            self._by_path[path].use_feedback(feedback)

    def coded(self, plan: Plan) -> tuple[Plan, dict[Path, np.ndarray]]:
        """``plan`` as the writer codes it (fed-back tensors at their absolute steps) and
        the fed-back tensors' values."""
        fed = {path: self._by_path[path] for path, point in plan.items()
               if path in self._by_path and self._by_path[path].fed_back(point.setting)}
        coded = {path: replace(point, setting=fed[path].coded_setting(point.setting))
                 if path in fed else point for path, point in plan.items()}
        return coded, {path: c.rounded(plan[path].setting) for path, c in fed.items()}

    def corrections(self, settings: dict[Path, Setting]) -> dict[Path, np.ndarray]:
        """The corrected biases' values under ``settings`` (before their own coding): what
        the file stores in their place."""
        self.apply(settings)
        return {target: self._corrected(target) for target, shift in self._shifts.items()
                if shift.any()}

    def _corrected(self, target: Path) -> np.ndarray:
        assert self.correction is not None
        return self.correction.corrected(target, self._shifts[target])

    def run(self, settings: dict[Path, Setting], samples: int | None = None):
        self.apply(settings)
        try:
            return self.reference.run(self.model, samples)
        except ModelFailed as exc:
            raise TargetNotMetError(f"a quantized candidate failed to run: {exc}") from exc

    def restore(self) -> None:
        self.apply({})


def choose_for_fidelity(bench: Workbench, objective: Objective,
                        sensitivity_spread_db: float | None = None) -> RateResult:
    """The smallest plan (by estimated bytes) whose outputs meet ``objective``; with
    ``sensitivity_spread_db``, the measured sensitivities are first clipped to that far
    around their median (:func:`~onnxz.ratecontrol.allocation.clip_sensitivities`).
    Without it, on a model that carries state between samples, the search runs with the
    sensitivities as measured and again with all of them equal (:data:`EQUALIZED_DB`), and
    keeps the smaller plan that holds."""
    candidates = bench.candidates
    sensitivity_pass(bench, objective)
    bench.use_feedback()
    stateful = any(bench.reference.links)
    spreads = ((sensitivity_spread_db,) if sensitivity_spread_db is not None
               else (None, EQUALIZED_DB) if stateful else (None,))
    measured = [c.sensitivity for c in candidates]
    verdicts: dict[frozenset, tuple[bool, tuple[OutputMetrics, ...], dict[str, float]]] = {}
    plan: Plan | None = None
    for spread in spreads:
        if spread is not None:
            clip_sensitivities(candidates, spread)
        found = _smallest_passing(bench, objective, verdicts, len(spreads),
                                  math.inf if plan is None else plan_bytes(plan))
        plan = plan if found is None else found
    if len(spreads) > 1:  # after the equal try: the file records them as measured
        for c, value in zip(candidates, measured, strict=True):
            c.sensitivity = value
    assert plan is not None  # the first search has no ceiling
    _, metrics, predictions = verdicts.get(_key(plan)) or _evaluate(bench, objective, plan)
    corrections = bench.corrections({path: point.setting for path, point in plan.items()})
    plan, rounded = bench.coded(plan)
    return RateResult("fidelity", str(objective.fidelity), bench.reference, candidates, plan,
                      metrics, predictions, bench.evaluations, corrections=corrections,
                      rounded=tied(rounded, candidates), folded=bench.folded,
                      fidelity=objective.fidelity)


def _smallest_passing(bench: Workbench, objective: Objective, verdicts: dict,
                      searches: int, ceiling: float) -> Plan | None:
    """The smallest plan found to meet ``objective``: the equal-slope plan at the largest
    slope found to meet it (bisection on the slope), then, if a larger slope's plan missed,
    that plan with the tensors that differ from the failing one switched a share at a time
    (:data:`REFINEMENT_RUNS`); up to :data:`MAX_EVALUATIONS` model runs in all. None if it
    is not smaller than ``ceiling`` bytes: plans that are not are taken to pass without a
    run (a finer one is no better)."""
    candidates = bench.candidates
    predicted = slope_for(candidates,
                          lambda plan: predicted_distortion(candidates, plan) <= 1.0)
    runs = 0

    def passes(lam: float) -> bool:
        return plan_passes(allocate(candidates, lam))

    def plan_passes(plan: Plan) -> bool:
        nonlocal runs
        if plan_bytes(plan) >= ceiling:
            return True
        key = _key(plan)
        if key not in verdicts:
            verdicts[key] = _evaluate(bench, objective, plan)
            bench.evaluations += 1
            runs += 1
            if bench.progress:
                ok = "meets" if verdicts[key][0] else "misses"
                bench.progress(bench.evaluations, MAX_EVALUATIONS * searches,
                               f"search: {plan_bytes(plan) / 1000:.0f} KB {ok} the target")
        return verdicts[key][0]

    lam_min, lam_max = slope_range(candidates)
    lo, hi = lam_min, lam_max  # lo passes (every tensor at its finest: lossless)
    lam = min(max(predicted, lam_min), lam_max)
    if passes(lam):
        lo = lam
        while lo < lam_max and runs < MAX_EVALUATIONS:
            nxt = min(lo * 4, lam_max)
            if not passes(nxt):
                hi = nxt
                break
            lo = nxt
        else:
            hi = lo
    else:
        hi = lam
        while runs < MAX_EVALUATIONS:
            nxt = hi / 4
            if nxt <= lam_min:
                break
            if passes(nxt):
                lo = nxt
                break
            hi = nxt
    while hi / lo > BISECTION_RATIO and runs < MAX_EVALUATIONS:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    plan = allocate(candidates, lo)
    if hi > lo:  # allocate(hi) missed the target: try plans between the two
        order = switch_order(candidates, plan, allocate(candidates, hi))
        passing, missing = 0, len(order)
        limit = min(MAX_EVALUATIONS, runs + REFINEMENT_RUNS)
        while missing - passing > 1 and runs < limit:
            mid = (passing + missing) // 2
            if plan_passes(switched(plan, order[:mid])):
                passing = mid
            else:
                missing = mid
        plan = switched(plan, order[:passing])
    return plan if plan_bytes(plan) < ceiling else None


def switch_order(candidates: Sequence[Candidate], fine: Plan, coarse: Plan
                 ) -> list[tuple[Path, Point]]:
    """The tensors whose point differs between ``fine`` and ``coarse``, each with its point
    in ``coarse``, in the order that saves the most bytes per unit of predicted distortion
    first (the order a slope between the two plans' would switch them in, were the slopes
    continuous)."""
    def cost(c: Candidate) -> float:
        saved = fine[c.path].bytes - coarse[c.path].bytes
        added = c.sensitivity * (coarse[c.path].sse - fine[c.path].sse)  # type: ignore[operator]
        return added / saved if saved > 0 else math.inf
    changed = [c for c in candidates if fine[c.path] is not coarse[c.path]]
    return [(c.path, coarse[c.path]) for c in sorted(changed, key=cost)]


def switched(plan: Plan, points: Sequence[tuple[Path, Point]]) -> Plan:
    """``plan`` with ``points`` in place of its own."""
    return {**plan, **dict(points)}


def _key(plan: Plan) -> frozenset:
    return frozenset((path, point.setting) for path, point in plan.items())


def _evaluate(bench: Workbench, objective: Objective, plan: Plan
              ) -> tuple[bool, tuple[OutputMetrics, ...], dict[str, float]]:
    settings = {path: point.setting for path, point in plan.items()}
    outputs = bench.run(settings)
    metrics = bench.reference.metrics(outputs)
    predicted = [d.predicted(outputs) for d in objective.decisions]
    predictions = {f"{d.criterion} ({d.output})": p
                   for d, p in zip(objective.decisions, predicted, strict=True)}
    return (objective.holds(metrics, bench.reference.outputs, outputs, predicted), metrics,
            predictions)


def sensitivity_pass(bench: Workbench, objective: Objective) -> None:
    """The sensitivity pass: every candidate's sensitivity, measured on the samples
    :data:`SENSITIVITY_UNITS` and :data:`MIN_SENSITIVITY_SAMPLES` ask for."""
    samples = sensitivity_samples(bench.reference, len(bench.candidates))

    def distortion_with(settings: dict[Path, Setting]) -> float:
        outputs = bench.run(settings, samples)
        return objective.distortion(bench.reference.outputs, outputs)

    progress = bench.progress
    measure_sensitivities(bench.candidates, distortion_with, progress and (
        lambda done, total, name: progress(done, total, f"sensitivity: {name}")))
    bench.restore()


def sensitivity_samples(reference: ReferenceRun, tensors: int) -> int:
    """How many of the first samples the sensitivity pass runs on a model of ``tensors``
    candidates (see :data:`SENSITIVITY_UNITS`)."""
    if any(reference.links):  # a stream: as much of it as STREAM_SENSITIVITY_PASSES allow
        most = STREAM_SENSITIVITY_PASSES * MAX_EVALUATIONS * reference.samples.count
        return max(min(reference.samples.count, most // max(tensors, 1)),
                   MIN_SENSITIVITY_SAMPLES)
    units = 0
    count = 0
    for outputs in reference.outputs:
        count += 1
        units += sum(
            (reference.class_scores[spec.name].rows(out).shape[0]
             if spec.name in reference.class_scores else out.size)
            for spec, out in zip(reference.output_specs, outputs, strict=False))
        if units >= SENSITIVITY_UNITS:
            break
    most = max(2, SENSITIVITY_RUNS // max(tensors, 1))  # the budget, never below 2
    return min(max(count, MIN_SENSITIVITY_SAMPLES), most, reference.samples.count)


def choose_for_size(bench: Workbench, objective: Objective, max_bytes: int,
                    size_of: SizeOf) -> RateResult:
    """The plan with the least predicted output distortion whose file fits ``max_bytes``
    (exact sizes, by bisection on the slope)."""
    candidates = bench.candidates
    sensitivity_pass(bench, objective)
    lam_min, lam_max = slope_range(candidates)
    sizes: dict[float, int] = {}

    summary = summary_template(bench, "max_size", f"size<={max_bytes}")

    def fits(lam: float) -> bool:
        if lam not in sizes:
            sizes[lam] = size_of(tied(allocate(candidates, lam), candidates), summary)
            if bench.progress:
                bench.progress(len(sizes), 24, f"size search: {sizes[lam]:,} bytes")
        return sizes[lam] <= max_bytes

    met = fits(lam_max)
    lam = lam_max
    if met and not fits(lam_min):
        lo, hi = lam_min, lam_max  # hi fits, lo does not
        for _ in range(22):
            if hi / lo < 1.02:
                break
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        lam = hi
    elif met:
        lam = lam_min
    plan = allocate(candidates, lam)
    settings = {path: point.setting for path, point in plan.items()}
    metrics = bench.reference.metrics(bench.run(settings))
    bench.evaluations += 1
    result = RateResult("max_size", f"size<={max_bytes}", bench.reference, candidates, plan,
                        metrics, evaluations=bench.evaluations, met=met, folded=bench.folded)
    if not met:
        result.note = f"the smallest file is about {sizes[lam_max]:,} bytes"
    return result


def summary_template(bench: Workbench, mode: str, target: str,
                     fidelity: Fidelity | None = None) -> dict:
    """A summary as large as any the search's result can record (every figure present), to
    size files before the achieved figures are known."""
    metrics = bench.reference.metrics(bench.reference.outputs)
    rng = np.random.default_rng(0)  # incompressible, like real figures

    def figures(m: OutputMetrics) -> OutputMetrics:
        return replace(m, snr_db=rng.random(), max_abs_error=rng.random(),
                       cosine_min=rng.random(), exact=rng.random(),
                       top1=None if m.top1 is None else rng.random(),
                       top1_sample=None if m.top1_sample is None else rng.random(),
                       ctc=None if m.ctc is None else rng.random(),
                       top5=None if m.top5 is None else rng.random())

    result = RateResult(mode, target, bench.reference, [], {}, tuple(map(figures, metrics)),
                        evaluations=MAX_EVALUATIONS, fidelity=fidelity)
    return result.summary()


