"""Round-trip verification: run the original and the packed model on the same samples and
compare every output (``onnxz verify``, :func:`onnxz.verify`).

Both models run in onnxruntime on the CPU. Samples are fed one at a time and the metrics
are running sums, so no more than one sample's outputs are held. A model that fails to load
or run gives a failed report naming the reason; inputs that do not fit the model raise
:class:`onnxz.VerificationInputError`.

Recurrent state is carried the way a streaming caller carries it: where a sample's input is
exactly the original's output on the previous sample (an LSTM's state fed back chunk after
chunk), the packed model gets its own previous output there instead (:func:`carried_state`),
so that errors compound over a stream as they do in use.

This module does not decode .onnxz files itself: callers pass a function that opens the
packed model's session (the API passes :func:`onnxz.inference_session`), so packing can
verify its own output without an import cycle. :class:`ReferenceRun` keeps the original's
outputs on a fixed set of samples, for callers that compare many candidates to it (rate
control).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model

from onnxz import interrupts
from onnxz.arguments import real_number
from onnxz.container import MAGIC
from onnxz.ctc import blank_class, greedy_string
from onnxz.errors import (
    InvalidArgumentError,
    InvalidModelError,
    OnnxzError,
    OutOfMemoryError,
    TargetNotMetError,
    VerificationInputError,
    first_line,
)
from onnxz.fidelity import Criterion, Fidelity
from onnxz.fileio import check_input, utf8_spelling
from onnxz.inputs import (
    DefaultInputs,
    Feed,
    GeneratedInputs,
    InputsArg,
    Samples,
    TensorSpec,
    graph_specs,
    runnable_generated,
    samples_for,
)
from onnxz.modelio import EXTERNAL_MIN_BYTES, PROTOBUF_LIMIT
from onnxz.outputs import (
    IDS_EVIDENCE,
    NO_PICKS,
    ClassScores,
    Pin,
    class_evidence,
    class_id_outputs,
    concat_parts,
    find_picks,
    sequence_outputs,
    stand_ins,
    string_outputs,
)
from onnxz.progress import Progress
from onnxz.walker import check_model, consumers, take_payload

TOP_K = 5
CTC_MAX_ROWS = 4096
"""Samples with more class-score rows than this get no ``ctc`` figure: it keeps each
sample's argmax paths until the end (the blank is decided over all of them), and a CTC
line has tens to hundreds of rows (a minute of speech at 50 per second, 3000), a
detector's page of anchors thousands."""
SessionFactory = Callable[[Any, "Probe"], Any]
"""``factory(session_options, probe) -> onnxruntime.InferenceSession`` of one model, changed
by :meth:`Probe.apply` before the session is made."""


@dataclass(frozen=True)
class Probe:
    """What a run that judges a model changes in it: the intermediate values
    ``extra_outputs`` added as outputs after its own, and the ``pins``
    (:class:`~onnxz.outputs.Pin`) fed from the original's run (:meth:`feed`)."""

    extra_outputs: tuple[str, ...] = ()
    pins: tuple[Pin, ...] = ()

    @classmethod
    def of(cls, extra_outputs: Sequence[str], pins: Sequence[Pin], outputs: Sequence[str]
           ) -> Probe:
        """``extra_outputs``, then the ``pins``' indices that are not model ``outputs``
        (the original's run gives them to feed the packed model's; last, as they are not
        judged), and the pins."""
        return cls(tuple(dict.fromkeys((*extra_outputs, *(
            p.indices for p in pins if p.indices not in outputs)))), tuple(pins))

    def apply(self, model: onnx.ModelProto) -> None:
        """Change ``model`` in place."""
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name)
                                  for name in dict.fromkeys(self.extra_outputs)
                                  if name not in known)
        for pin in self.pins:
            pin.apply(model.graph)

    def applied(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A changed copy of ``model`` (``model`` itself when nothing changes)."""
        if not self.extra_outputs and not self.pins:
            return model
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        self.apply(copy)
        return copy

    def feed(self, original: dict[str, np.ndarray]) -> Feed:
        """The pinned picks' inputs, from the original's values by name."""
        return {pin.fed: original[pin.indices] for pin in self.pins}

    @property
    def fed(self) -> frozenset[str]:
        """The graph inputs :meth:`apply` adds."""
        return frozenset(pin.fed for pin in self.pins)

DISTRIBUTION_TOLERANCE = 1e-3
"""Rows count as probability distributions when non-negative and summing to 1 ± this."""


@dataclass(frozen=True)
class Thresholds:
    """``onnxz verify``'s default pass criteria, applied to every output; all must hold.
    Measured on real inputs (examples/), one step of 1/64 for every weight (v0.1's default)
    gives 45–59 dB and changes ≤ 0.5% of decisions; step 1 (about 2 bits/weight) gives
    10–25 dB and changes 1.6–15%.

    - ``min_snr_db`` (dB, default 20): output SNR = 10·log10(Σref² / Σ(ref − packed)²) over
      all samples: at 20 dB the error carries 1% of the output's energy, the region where
      the examples' decisions start to move.
    - ``min_cosine`` (default 0.99): the worst sample's cosine similarity (an angle of 8°,
      about 17 dB for that sample), so a few ruined samples cannot hide behind a good SNR
      (Silero VAD at step 1: state SNR 23 dB, worst sample 0.87).
    - ``min_top1`` (fraction, default 0.99): top-1 agreement on class-score outputs (see
      :class:`OutputMetrics`): at most 1 prediction in 100 may change (Magika at step 1/4:
      SNR 23 dB, top-1 0.96). Judged on the user's inputs; on generated ones only with
      ``top1_on_generated``: random inputs give near-tie scores real ones need not have
      (openWakeWord's timer model, 7 classes at most 0.19 on noise: one of 8 generated
      samples flipped at 62 dB of SNR), and 8 samples cannot measure 0.99 (one flip is
      0.875). pack's default judges class scores by their logits' SNR for the same reason.
      SNR and cosine still catch damage there, and top-1 is still reported. A text
      recognizer's greedy CTC strings (``ctc``) are judged at it too, where top-1 is.

    - ``noise_floor`` (default 1e-5): differences of at most ε = noise_floor × max(1, the
      sample's largest |original|) count as no difference (SNR, cosine, top-k), so an output
      that is ~0 everywhere (a detector's probability map on an input with nothing to find:
      original 0, packed 3e-8) is not judged by the ratio of two noises. Below scale 1
      the floor is absolute (probabilities, normalized features), above it relative
      (−100 dB of the peak); 0 compares exactly. Max and mean errors stay raw.

    NaN is refused for every threshold; ``min_snr_db`` may be −inf (no SNR criterion).
    Any other set of criteria is a :class:`onnxz.fidelity.Fidelity` (the noise floor is then
    :func:`verify`'s ``noise_floor``).
    """

    min_snr_db: float = 20.0
    min_cosine: float = 0.99
    min_top1: float = 0.99
    noise_floor: float = 1e-5
    top1_on_generated: bool = False

    def __post_init__(self) -> None:
        real_number(self.min_snr_db, "min_snr_db")
        if not isinstance(self.top1_on_generated, bool):
            raise InvalidArgumentError(
                f"top1_on_generated must be True or False, not {self.top1_on_generated!r}")
        for name, low, high in (("min_cosine", -1, 1), ("min_top1", 0, 1),
                                ("noise_floor", 0, 1)):
            if not low <= real_number(getattr(self, name), name) <= high:
                raise InvalidArgumentError(
                    f"{name} must be in [{low}, {high}], not {getattr(self, name)}")

    def fidelity(self, generated: bool = False, class_ids: Sequence[str] = (),
                 outputs: Sequence[str] = (), sequences: Sequence[str] = (),
                 strings: Sequence[str] = ()) -> Fidelity:
        """The criteria on the user's inputs, or on generated ones (``generated``).

        ``class_ids`` are outputs that are the class numbers an in-graph ArgMax makes (a
        scikit-learn classifier's ``label``), among the model's ``outputs``: an SNR or a
        cosine of class numbers depends on how the classes are numbered (one flip of 100,
        class 0 to 2, is 13.9 dB and a cosine of 0), so they are judged as their decisions
        are, by ``top1`` at ``min_top1`` (each class number a decision, as each row of class
        scores: a matcher's 1,000 matches per image pair, a segmenter's pixels; whole
        samples are reported), and only where top-1 is judged (also where they are the
        only outputs); the other outputs keep SNR and cosine, each named.

        ``sequences`` are class-score outputs with several rows per sample (a recognizer's
        positions, :func:`onnxz.outputs.sequence_outputs`). Where top-1 is judged, their
        rows are, and a sample's cosine is not: over a sequence of confident rows it moves
        with their timing (a character read one frame earlier: 0.97 for the same string).
        ``strings``, among them, are a text recognizer's (:func:`onnxz.outputs.string_outputs`):
        where top-1 is judged, so are their samples' greedy CTC strings, by ``ctc`` at
        ``min_top1`` (each string a decision). Rows alone passed a plate recognizer's file
        that changed 17 of 100 plates (per-row top-1 0.9966).
        """
        judge_top1 = self.top1_on_generated or not generated
        others = [o for o in outputs if o not in class_ids]
        plain = [Criterion("snr", self.min_snr_db)] if self.min_snr_db > -math.inf else []
        plain.append(Criterion("cosine", self.min_cosine))
        rows_judged = set(sequences) if judge_top1 else set()
        criteria = [Criterion(c.metric, c.bound, o) for o in others for c in plain
                    if c.metric != "cosine" or o not in rows_judged
                    ] if (class_ids or rows_judged) and others else plain
        read = [Criterion("ctc", self.min_top1, o) for o in strings] if judge_top1 else []
        if judge_top1 and class_ids and not others:  # nothing but class numbers
            return Fidelity((*(Criterion("top1", self.min_top1, o) for o in class_ids), *read))
        if judge_top1 and class_ids and others:  # the ids' decisions, each named
            criteria += [Criterion("top1", self.min_top1, o) for o in (*others, *class_ids)]
        elif judge_top1:
            criteria.append(Criterion("top1", self.min_top1))
        return Fidelity((*criteria, *read))

    def to_dict(self) -> dict[str, float | bool | None]:
        """JSON-safe: a non-finite threshold is null."""
        return {k: v if isinstance(v, bool) else _json_number(v)
                for k, v in asdict(self).items()}


def judged_evidence(model: onnx.ModelProto, class_outputs: Sequence[str] = ()
                    ) -> dict[str, ClassScores]:
    """Output -> why its values are class scores (:func:`~onnxz.outputs.class_evidence`,
    ``class_outputs`` named by the user), and the class numbers an in-graph ArgMax makes
    (:data:`~onnxz.outputs.IDS_EVIDENCE`): the outputs verify judges by their decisions."""
    evidence = class_evidence(model, class_outputs)
    evidence.update((n, IDS_EVIDENCE) for n in class_id_outputs(model) if n not in evidence)
    return evidence


def thresholds_fidelity(thresholds: Thresholds, model: onnx.ModelProto,
                        evidence: Mapping[str, ClassScores], generated: bool) -> Fidelity:
    """The criteria ``thresholds`` give this model's outputs (:meth:`Thresholds.fidelity`),
    ``evidence`` from :func:`judged_evidence`: what verify judges without ``--fidelity``."""
    class_ids = [n for n, e in evidence.items() if e is IDS_EVIDENCE]
    return thresholds.fidelity(generated, class_ids, [o.name for o in model.graph.output],
                               sequence_outputs(model, evidence),
                               string_outputs(model, evidence))


@dataclass(frozen=True)
class OutputMetrics:
    """How one output of the packed model differs from the original's, over all samples.

    Errors are absolute, in the output's units (compared as float64); ``original_max_abs``,
    the original's largest magnitude, puts them in scale. ``snr_db``, the cosines and top-k
    count differences within the noise floor (:class:`Thresholds`) as none; ``snr_db`` is +inf
    when no difference is left, −inf when the original is all zeros and the packed is not.
    A NaN or inf where the original has a finite value is an infinite error (SNR −inf,
    cosine 0); where both are NaN they agree. ``finite`` counts the original's finite
    values: with none there is nothing to compare, and the output fails.
    ``exact`` is the fraction of samples whose output equals the original's exactly.
    ``top1``/``top5`` exist for class-score outputs only (``class_scores`` says why it is
    one: the graph makes it with Softmax/LogSoftmax or feeds it to ArgMax/TopK, its rows are
    probability distributions on every sample, its name says so, or the caller named it);
    each row along the class axis is one prediction. ``top1`` = fraction of rows with the
    same argmax; ``top1_sample`` = fraction of samples all of whose rows keep their argmax
    (a whole recognized string); ``ctc`` = fraction of samples whose greedy CTC string
    (argmax per row, repeats merged, the blank dropped: :mod:`onnxz.ctc`; the blank is the
    class the original's rows take most often) is unchanged, for samples of up to
    :data:`CTC_MAX_ROWS` rows; ``top5`` = mean share of the original's 5 best classes
    among the packed's 5 best (more than 5 classes only).
    """

    name: str
    dtype: str
    samples: int
    elements: int
    original_max_abs: float
    max_abs_error: float
    mean_abs_error: float
    snr_db: float
    cosine_mean: float
    cosine_min: float
    exact: float
    top1: float | None
    top5: float | None
    class_scores: str | None = None
    top1_sample: float | None = None
    finite: int | None = None
    ctc: float | None = None
    picked: str | None = None
    """The op that picks this output's rows by rank (:data:`PICKERS`): reported, not judged;
    the values the pick reads are judged in its place."""
    stands_for: tuple[str, ...] = ()
    """For a value a pick reads (not an output): the picked or pinned outputs it is judged
    for."""
    pinned: str | None = None
    """The op whose picks weights act after (:class:`~onnxz.outputs.Pin`): this output was
    judged on a run of the packed model with the original's picks fed in."""
    part_of: tuple[str, ...] = ()
    """For a value a Concat joins into outputs (:func:`~onnxz.outputs.concat_parts`: a
    detector's class probabilities beside its boxes): those outputs, whose ``snr``
    criteria it is judged by too (alone, the whole output's SNR is its largest part's)."""
    lost_classes: tuple[tuple[int, int], ...] = ()
    """Classes the original decides on at least :data:`LOST_CLASS_MIN_ROWS` rows of which
    the packed keeps none, each with that count of rows: reported, not judged (``top1``
    counts every row alike, so a keyword spotter that never says yes keeps 99.8% of the
    decisions of 1,079 windows holding 2 positives)."""

    def value(self, criterion: Criterion) -> float | None:
        """The value ``criterion`` reads (None if the metric does not apply here)."""
        return getattr(self, criterion.field)

    def judged_by(self, criterion: Criterion) -> bool:
        """Whether ``criterion`` applies to this row: to the output itself, or to a value
        that stands for picked outputs as it would to them, or ``snr`` to a part of an
        output as to the output; never to a picked output."""
        if criterion.metric == "snr" and any(
                criterion.applies_to(name, False) for name in self.part_of):
            return True
        if self.part_of and not self.stands_for:
            return False
        return self.picked is None and any(
            criterion.applies_to(name, self.class_scores is not None)
            for name in self.stands_for or (self.name,))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite number is null (``snr_db`` +inf: no difference beyond the
        noise floor; an infinite error: NaN or inf against a number)."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Failure:
    """One output's metric on the wrong side of its bound."""

    output: str
    metric: str
    value: float
    threshold: float

    def __str__(self) -> str:
        if self.metric == "finite":
            return (f"output {self.output!r}: the original has no finite value on these "
                    "inputs (nothing to compare)")
        if self.metric == "elements":
            return (f"output {self.output!r}: empty on these inputs, as is every output "
                    "(nothing to compare)")
        if self.metric == "ctc_rows":
            return (f"output {self.output!r}: ctc judges samples of up to {CTC_MAX_ROWS} "
                    "rows (CTC strings); this output has more")
        label, unit, op = _METRIC_LABELS[self.metric]
        return (f"output {self.output!r}: {label} {self.value:.4g}{unit} {op} "
                f"{self.threshold:g}{unit}")

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


_METRIC_LABELS = {"snr_db": ("SNR", " dB", "<"), "cosine_min": ("worst-sample cosine", "", "<"),
                  "top1": ("top-1 agreement", "", "<"), "top5": ("top-5 overlap", "", "<"),
                  "top1_sample": ("fraction of samples with every top-1 kept", "", "<"),
                  "ctc": ("fraction of samples with the CTC string kept", "", "<"),
                  "max_abs_error": ("max abs error", "", ">"),
                  "exact": ("exact-sample fraction", "", "<")}


def _json_number(value: Any) -> Any:
    """``value``, or None for a float that strict JSON cannot hold (inf, NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def failures(outputs: Sequence[OutputMetrics], fidelity: Fidelity) -> tuple[Failure, ...]:
    """Every (output, criterion) pair where the criterion applies and does not hold, and
    every output whose original had no finite value (nothing was compared), and every
    output if none has an element (a batch of 0: nothing at all was compared)."""
    found = []
    empty = not any(m.elements for m in outputs)
    for m in outputs:
        for c in fidelity.criteria:
            applies = m.judged_by(c)
            value = m.value(c) if applies else None
            if value is not None and not c.holds(value):
                found.append(Failure(m.name, c.field, value, c.bound))
            elif applies and value is None and c.metric == "ctc":
                found.append(Failure(m.name, "ctc_rows", CTC_MAX_ROWS, c.bound))
        if m.finite == 0 and m.elements:
            found.append(Failure(m.name, "finite", 0, 1))
        elif empty:
            found.append(Failure(m.name, "elements", 0, 1))
    return tuple(found)


@dataclass(frozen=True)
class VerifyReport:
    """The result of :func:`verify`: per-output metrics, the criteria, and the verdict.

    ``error`` is the reason when a model failed to load or run (then ``outputs`` holds the
    metrics of the ``samples`` compared before it); ``passed`` means no error and no
    :attr:`failures`. ``thresholds`` is set when the criteria came from :class:`Thresholds`.
    """

    original: str
    packed: str
    inputs: str
    samples: int
    fidelity: Fidelity
    outputs: tuple[OutputMetrics, ...]
    error: str | None = None
    thresholds: Thresholds | None = None
    carried: int = 0
    """Samples whose state inputs were the packed model's own previous outputs."""

    @property
    def failures(self) -> tuple[Failure, ...]:
        """Every (output, criterion) that does not hold (see :func:`failures`)."""
        return failures(self.outputs, self.fidelity)

    @property
    def passed(self) -> bool:
        """No error, at least one sample, and no failure."""
        return self.error is None and self.samples > 0 and not self.failures

    @property
    def verdict(self) -> str:
        """``passed``, or ``FAILED:`` and the failing metrics (for one table cell)."""
        return "passed" if self.passed else "FAILED: " + ", ".join(
            f.metric for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """The report as strict JSON values (``verify --json``)."""
        return {
            "original": self.original,
            "packed": self.packed,
            "inputs": self.inputs,
            "samples": self.samples,
            "carried": self.carried,
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "criteria": [str(c) for c in self.fidelity.criteria],
            "outputs": [m.to_dict() for m in self.outputs],
            "failures": [f.to_dict() for f in self.failures],
            "error": self.error,
            "passed": self.passed,
        }

    def _judged(self, m: OutputMetrics, metric: str) -> bool:
        return any(c.metric == metric and m.judged_by(c) for c in self.fidelity.criteria)

    def table(self) -> str:
        """The report for people: a line per output, the criteria, the verdict."""
        lines = [f"original  {self.original}", f"packed    {self.packed}",
                 f"inputs    {self.inputs}"]
        if self.carried:
            lines.append(f"state     carried from the packed model's previous outputs on "
                         f"{_count(self.carried, 'sample')}")
        lines.append("")
        if self.outputs:
            lines += [metrics_table(self.outputs), ""]
        lines.append(f"criteria: {', '.join(map(str, self.fidelity.criteria))}"
                     + (" (top1/top5: class-score outputs)" if any(
                         c.metric in ("top1", "top5") for c in self.fidelity.criteria) else ""))
        classes = [f"{m.name} ({m.class_scores})" for m in self.outputs
                   if m.class_scores and not m.picked]
        lines.append("class scores: " + (", ".join(classes) if classes else "none"))
        sequences = [m for m in self.outputs if self.thresholds is not None
                     and m.class_scores and m.class_scores != IDS_EVIDENCE.reason
                     and self._judged(m, "top1") and not self._judged(m, "cosine")]
        for judged, how in ((False, "row by row (top-1) and by SNR"),
                            (True, "row by row (top-1), by SNR and by each sample's greedy "
                                   "CTC string (ctc: a text recognizer's reading)")):
            named = [m.name for m in sequences if self._judged(m, "ctc") is judged]
            if named:
                lines.append(f"sequences: {', '.join(named)}: several rows per sample, "
                             f"judged {how}; a sample's cosine moves with the timing of its "
                             "confident rows: reported, not judged")
        for m in self.outputs:  # rows per sample: what a string-reading task sees
            if (m.ctc is not None and m.top1 is not None and m.top1_sample != m.top1
                    and not any(m.judged_by(c) and c.metric in ("ctc", "top1_sample")
                                for c in self.fidelity.criteria)):
                lines.append(f"rows per sample: {m.name}: {m.top1:.2%} of rows keep their "
                             f"class (top-1), {m.top1_sample:.2%} of samples every row "
                             f"(top1_sample), {m.ctc:.2%} their greedy CTC string (ctc: a "
                             "recognizer's reading); whole samples are not judged: ask "
                             "ctc>=0.99 or top1_sample>=0.99 to judge them")
                if any(f.output == m.name and f.metric == "cosine_min" for f in self.failures):
                    lines.append(f"  ({m.name}'s worst-sample cosine moves with the timing of "
                                 "a sequence's confident rows, which a CTC string does not "
                                 "see: if it is a recognizer's, judge it by its strings: "
                                 '--fidelity "ctc>=0.99")')
        for m in self.outputs:
            if m.lost_classes:
                lost = ", ".join(f"class {c} (the original's decision on {_count(n, 'row')})"
                                 for c, n in m.lost_classes)
                lines.append(f"lost classes: {m.name}: {lost}: the packed model decides it on "
                             "none of them; top-1 counts every row alike, so a rare class "
                             "can go without failing it (judge the scores by snr)")
        for m in self.outputs:
            if m.picked:
                read = [r.name for r in self.outputs if m.name in r.stands_for]
                lines.append(f"picked: {m.name}'s rows are picked by {m.picked} (ranked by "
                             "scores, so any change can reorder them): not judged; judged "
                             f"instead: {', '.join(read) or 'nothing (no float value read)'}")
        pinned = [m.name for m in self.outputs if m.pinned]
        if pinned:
            read = [r.name for r in self.outputs if set(pinned) & set(r.stands_for)]
            ops = sorted({m.pinned for m in self.outputs if m.pinned})
            lines.append(f"pinned: {', '.join(pinned)}: weights act on the rows "
                         f"{' and '.join(ops)} picks: judged with the original's picks fed to "
                         "the packed model (a swap of near ties would move whole rows); the "
                         f"values the pick reads judged too: {', '.join(read) or 'none'}")
        joined: dict[str, list[str]] = {}
        for m in self.outputs:
            for output in m.part_of:
                joined.setdefault(output, []).append(m.name)
        for output, parts in joined.items():
            lines.append(f"parts: {output} joins {', '.join(parts)} (a Concat; their scales "
                         "may differ by hundreds, so the whole output's SNR is its largest "
                         f"part's): each part is judged by {output}'s SNR criterion too")
        if classes and self.thresholds and all(c.metric not in ("top1", "exact")
                                               for c in self.fidelity.criteria):
            lines.append("top-1 is reported, not judged, on generated inputs (their scores "
                         "are near ties real inputs need not have): give --inputs, or "
                         "--min-top1 to judge it anyway")
        if self.passed:
            judged = [m for m in self.outputs if not (m.picked or m.stands_for or m.part_of)]
            values = sum(bool(m.stands_for or m.part_of) for m in self.outputs)
            also = f" (and {_count(values, 'value')} judged for them)" if values else ""
            lines.append(f"PASSED: {_count(len(judged), 'output')}{also} within the criteria "
                         f"on {_count(self.samples, 'sample')}")
        else:
            reasons = [self.error] if self.error else [str(f) for f in self.failures]
            lines.append("FAILED: " + ("; ".join(reasons) or "no samples compared"))
        return "\n".join(lines)


def metrics_table(outputs: Sequence[OutputMetrics]) -> str:
    """A line per output: errors, SNR, cosines, exact fraction, top-1/top-5."""
    header = ("output", "dtype", "max |orig|", "max abs err", "mean abs err", "SNR dB",
              "cos mean", "cos worst", "exact", "top-1", "top-5")
    rows = [header] + [(
        m.name if len(m.name) <= 32 else "…" + m.name[-31:],
        m.dtype,
        f"{m.original_max_abs:.3g}",
        f"{m.max_abs_error:.3g}",
        f"{m.mean_abs_error:.3g}",
        f"{m.snr_db:.1f}",
        f"{m.cosine_mean:.6f}",
        f"{m.cosine_min:.6f}",
        f"{m.exact:.4f}",
        "-" if m.top1 is None else f"{m.top1:.4f}",
        "-" if m.top5 is None else f"{m.top5:.4f}",
    ) for m in outputs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_fidelity(criteria: Thresholds | Fidelity | str | None,
                generated: bool = False) -> Fidelity:
    """The criteria as a :class:`Fidelity` (None: the :class:`Thresholds` defaults), on
    generated samples if ``generated`` (see :attr:`Thresholds.min_top1`)."""
    if criteria is None:
        return Thresholds().fidelity(generated)
    if isinstance(criteria, Thresholds):
        return criteria.fidelity(generated)
    if isinstance(criteria, Fidelity):
        return criteria
    if isinstance(criteria, str):
        return Fidelity.parse(criteria)
    raise InvalidArgumentError(f"thresholds must be a Thresholds, a Fidelity or a string like "
                               f"'snr>=30', not {type(criteria).__name__}")


def verify(
    original: onnx.ModelProto | str | os.PathLike,
    packed: str | os.PathLike,
    open_packed: SessionFactory,
    inputs: InputsArg = None,
    thresholds: Thresholds | Fidelity | str | None = None,
    *,
    class_outputs: Sequence[str] = (),
    noise_floor: float | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run ``original`` (.onnx path or ModelProto) and the packed model (``packed`` names
    it in the report; ``open_packed(session_options, probe)`` opens its session) on the same
    samples and compare their outputs against ``thresholds``.

    See :func:`onnxz.verify` for ``inputs``. ``class_outputs`` names outputs to treat as
    class scores in addition to those the graph and the data show to be; ``noise_floor``
    overrides the thresholds' (see :class:`Thresholds`).
    """
    generated = inputs is None or isinstance(inputs, GeneratedInputs | DefaultInputs)
    fidelity = as_fidelity(thresholds, generated)
    floor = _noise_floor(thresholds, noise_floor)
    if progress is not None and not callable(progress):
        raise InvalidArgumentError(f"progress must be callable or None, not {progress!r}")
    if not isinstance(original, onnx.ModelProto):
        original = check_input(original, "original")
    described = "(not read)"
    accumulators: list[_Accumulator] = []
    error: str | None = None
    carried = 0
    try:
        model = _original_model(original)
        input_specs, output_specs = graph_specs(model)
        picks = find_picks(model)
        parts = concat_parts(model, skip=picks.outputs)
        if (picks.outputs or picks.pins or parts) and not isinstance(
                original, onnx.ModelProto) and _stored_bytes(original, model) >= PROTOBUF_LIMIT:
            picks, parts = NO_PICKS, {}  # extra outputs would need it in one protobuf
        picked, stands_for = picks.outputs, stand_ins(model, picks=picks)
        names = [s.name for s in output_specs]
        probe = Probe.of([*stands_for, *parts], picks.pins, names)
        reference = _original_session(original, probe.extra_outputs)
        evidence = judged_evidence(model, class_outputs)
        if isinstance(thresholds, Thresholds | None):  # class ids: by their decisions
            fidelity = thresholds_fidelity(thresholds or Thresholds(), model, evidence,
                                           generated)
        else:  # the user's criteria name outputs that must exist and fit
            _check_criteria(fidelity, output_specs, evidence)
        samples = (samples_for(input_specs, inputs)
                   if inputs is not None and not isinstance(inputs, DefaultInputs)
                   else _runnable_samples(input_specs, model, reference, inputs))
        described = samples.description
        candidate = _session(lambda: open_packed(quiet_options(), probe), "packed")
        _check_interfaces(reference, candidate, probe.fed)
        accumulators = [_Accumulator(s, evidence.get(s.name), floor,
                                     picked=picked[s.name].op if s.name in picked else None,
                                     pinned=picks.pinned.get(s.name))
                        for s in output_specs]
        previous: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        for i in range(samples.count):
            feed = _feed(samples, i)
            ref = run_session(reference, feed, "original", i, samples.hint)
            links = carried_state(feed, previous[0][:len(output_specs)]) if previous else {}
            carried += bool(links)
            out = run_session(candidate, _with_state(feed, links, previous) | probe.feed(
                dict(zip(names + list(probe.extra_outputs), ref, strict=True))), "packed", i)
            if i == 0:  # the values picks read and the parts: their types are known now
                accumulators += [
                    _Accumulator(TensorSpec(v, r.dtype, r.shape), None, floor,
                                 stands_for=stands_for.get(v, ()), part_of=parts.get(v, ()))
                    for v, r in zip(probe.extra_outputs, ref[len(names):], strict=False)
                    if v in stands_for or v in parts]
            judged = len(accumulators)  # the pins' indices come last: fed, not judged
            _accumulate(accumulators, ref[:judged], out[:judged], i)
            previous = ref, out
            if progress:
                progress(i + 1, samples.count, f"sample {i}")
    except ModelFailed as exc:
        error = str(exc)
    if error is None and not isinstance(thresholds, Thresholds | None):
        fidelity.check_outputs({a.spec.name: a.class_scores() is not None for a in accumulators})
    return VerifyReport(
        original=str(original) if isinstance(original, Path) else "<ModelProto>",
        packed=str(packed),
        inputs=described,
        samples=min((a.samples for a in accumulators), default=0),
        fidelity=fidelity,
        outputs=tuple(a.result() for a in accumulators if a.samples),
        error=error,
        thresholds=thresholds if isinstance(thresholds, Thresholds) else (
            Thresholds() if thresholds is None else None),
        carried=carried,
    )


def carried_state(feed: Feed, previous: Sequence[np.ndarray]) -> dict[str, int]:
    """The inputs of ``feed`` that carry state from the previous sample: input name ->
    index of the output (in ``previous``, the original model's outputs on the previous
    sample) that it equals exactly. Only float arrays with a non-zero element count (a
    stream's reset state, all zeros, is no evidence of a link).

    >>> state = np.array([[0.5, -1.0]], dtype=np.float32)
    >>> carried_state({"x": np.ones((1, 4), np.float32), "h": state.copy()},
    ...               [np.zeros((1, 1), np.float32), state])
    {'h': 1}
    """
    links = {}
    for name, value in feed.items():
        value = np.asarray(value)
        if value.dtype.kind != "f" or not value.any():
            continue
        for index, out in enumerate(previous):
            if out.shape == value.shape and out.dtype == value.dtype and np.array_equal(
                    out, value):
                links[name] = index
                break
    return links


def _with_state(feed: Feed, links: dict[str, int],
                previous: tuple[list[np.ndarray], list[np.ndarray]] | None) -> Feed:
    """``feed`` with its state inputs replaced by the packed model's previous outputs."""
    if not links or previous is None:
        return feed
    return {**feed, **{name: previous[1][index] for name, index in links.items()}}


def _noise_floor(thresholds: object, noise_floor: float | None) -> float:
    if noise_floor is None:
        return thresholds.noise_floor if isinstance(thresholds, Thresholds) else (
            Thresholds.noise_floor)
    if not 0 <= real_number(noise_floor, "noise_floor") <= 1:
        raise InvalidArgumentError(f"noise_floor must be in [0, 1], not {noise_floor}")
    return noise_floor


def _feed(samples: Samples, i: int) -> Feed:
    try:
        return samples.feed(i)
    except MemoryError as exc:
        raise OutOfMemoryError(f"out of memory while building sample {i} of the inputs "
                               f"({samples.description})") from exc


class ReferenceRun:
    """The original model's outputs on a fixed set of samples, computed once, to compare
    candidates against (rate control compares dozens). Holds every sample and output in
    memory: meant for calibration-sized sample sets.

    ``extra_outputs`` are intermediate values added as outputs to the original and to
    every candidate (e.g. the scores an in-graph ArgMax reads), followed by the indices of
    the model's pinned picks (:class:`~onnxz.outputs.Pin`: candidates run with the
    original's); :meth:`metrics` covers the model's own outputs and the values that stand
    for picked and pinned ones.
    """

    noise_floor = Thresholds.noise_floor
    """Metrics use :func:`verify`'s default noise floor, so that verify agrees with them."""

    def __init__(self, model: onnx.ModelProto, inputs: InputsArg,
                 class_outputs: Sequence[str] = (), extra_outputs: Sequence[str] = ()) -> None:
        input_specs, self.output_specs = graph_specs(model)
        self.evidence = evidence = judged_evidence(model, class_outputs)
        """Output -> why it is judged by its decisions (:func:`judged_evidence`)."""
        self.samples = samples_for(input_specs, inputs)
        self.picks = find_picks(model)
        self.picked = self.picks.outputs
        self.extra_outputs = Probe.of(extra_outputs, self.picks.pins,
                                      [s.name for s in self.output_specs]).extra_outputs
        judged_for = (stand_ins(model, picks=self.picks)
                      | stand_ins(model, logits=True, picks=self.picks))
        self.stands_for = {v: judged_for[v] for v in self.extra_outputs if v in judged_for}
        """Extra outputs judged in the place of picked outputs or for pinned ones -> the
        outputs they stand for (:func:`stand_ins`)."""
        session = _session(lambda: session_from_proto(model, Probe(self.extra_outputs)),
                           "original")
        self.feeds: list[Feed] = [_feed(self.samples, i) for i in range(self.samples.count)]
        self.outputs = [run_session(session, f, "original", i, self.samples.hint)
                        for i, f in enumerate(self.feeds)]
        own = len(self.output_specs)  # the model's own outputs, not the extra ones
        self.links: list[dict[str, int]] = [{}] + [
            carried_state(f, previous[:own]) for f, previous in zip(
                self.feeds[1:], self.outputs, strict=False)]
        """Per sample, its state inputs (see :func:`carried_state`)."""
        probes = [_Accumulator(s, evidence.get(s.name), self.noise_floor)
                  for s in self.output_specs]
        for outs in self.outputs:
            for acc, r in zip(probes, outs, strict=False):
                acc.add(r, r)
        self.class_scores: dict[str, ClassScores] = {
            a.spec.name: scores for a in probes if (scores := a.class_scores()) is not None}
        self.not_finite = tuple(a.spec.name for a in probes if a.elements and not a.finite)
        """Outputs with no finite value on any sample: verify fails them (nothing to
        compare), so no target can be judged on them."""
        self.empty = not any(a.elements for a in probes)
        """No output has an element on any sample (a batch of 0): verify fails them all."""

    def position(self, value: str) -> int:
        """Where ``value`` (an output or an extra output) is in the outputs of a run."""
        names = [s.name for s in self.output_specs]
        if value in names:
            return names.index(value)
        return len(names) + self.extra_outputs.index(value)

    def check(self, fidelity: Fidelity) -> None:
        """:class:`TargetSpecError` if a criterion names no output or applies to none;
        :class:`TargetNotMetError` as :meth:`check_finite`."""
        fidelity.check_outputs({s.name: s.name in self.class_scores for s in self.output_specs})
        self.check_finite(str(fidelity))

    def check_finite(self, target: str) -> None:
        """:class:`TargetNotMetError` if an output has no finite value on the samples:
        verify fails it whatever the packed model computes, so ``target`` cannot be judged
        on them."""
        hint = f" ({self.samples.hint})" if self.samples.hint else ""
        if self.empty:
            raise TargetNotMetError(f"{target}: cannot be judged: every output of the "
                                    f"original is empty on these inputs{hint}")
        if self.not_finite:
            raise TargetNotMetError(
                f"{target}: cannot be judged: output {self.not_finite[0]!r} of the original "
                f"has no finite value (NaN or inf) on these inputs{hint}")

    def run(self, model: onnx.ModelProto, samples: int | None = None
            ) -> list[list[np.ndarray]]:
        """A candidate's outputs (the model's own, then the extra ones) on the first
        ``samples`` samples (all by default); state inputs get the candidate's own previous
        outputs."""
        return list(self.stream(model, samples))

    def stream(self, model: onnx.ModelProto, samples: int | None = None,
               extra_outputs: Sequence[str] | None = None) -> Iterator[list[np.ndarray]]:
        """:meth:`run` one sample at a time (only the previous sample's outputs are kept);
        ``extra_outputs`` in place of the run's own extra outputs (state links stay: they
        read the model's own outputs, which come first; so do the pins)."""
        probe = Probe(tuple(self.extra_outputs if extra_outputs is None else extra_outputs),
                      self.picks.pins)
        session = _session(lambda: session_from_proto(model, probe), "candidate")
        names = [s.name for s in self.output_specs] + list(self.extra_outputs)
        last: list[np.ndarray] | None = None
        for i, (feed, links) in enumerate(zip(self.feeds[:samples], self.links, strict=False)):
            previous = (self.outputs[i - 1], last) if last is not None else None
            last = run_session(session, _with_state(feed, links, previous) | probe.feed(
                dict(zip(names, self.outputs[i], strict=True))), "candidate", i)
            yield last

    def metrics(self, outputs: list[list[np.ndarray]]) -> tuple[OutputMetrics, ...]:
        """The metrics of a candidate's outputs (from :meth:`run`) against the original's:
        the model's own outputs, then the extra outputs that stand for picked ones."""
        accs = [_Accumulator(s, self.class_scores.get(s.name), self.noise_floor,
                             picked=self.picked[s.name].op if s.name in self.picked else None,
                             pinned=self.picks.pinned.get(s.name))
                for s in self.output_specs]
        positions = list(range(len(accs)))
        for value, picked in self.stands_for.items():
            positions.append(self.position(value))
            first = self.outputs[0][positions[-1]]
            accs.append(_Accumulator(TensorSpec(value, first.dtype, first.shape), None,
                                     self.noise_floor, stands_for=picked))
        for i, (ref, out) in enumerate(zip(self.outputs, outputs, strict=True)):
            _accumulate(accs, [ref[p] for p in positions], [out[p] for p in positions], i,
                        lost=True)
        return tuple(a.result() for a in accs)


def _check_criteria(fidelity: Fidelity, specs: Sequence[TensorSpec],
                    evidence: dict[str, ClassScores]) -> None:
    """Criteria naming unknown outputs, or applying to none, fail before any run. Outputs
    that may still turn out to be probability rows count as class scores here."""
    fidelity.check_outputs({s.name: s.name in evidence or _may_be_distribution(s)
                            for s in specs})


def _may_be_distribution(spec: TensorSpec) -> bool:
    """A float output with a last axis: ≥ 2 classes, or one probability per row."""
    return spec.dtype.kind == "f" and bool(spec.shape)


class ModelFailed(OnnxzError):
    """A model failed to load or run: the verification fails with this reason (an
    :class:`~onnxz.errors.OnnxzError`, so that one escaping elsewhere is still one line)."""


class SampleFailed(ModelFailed):
    """A model loaded but failed to run on a sample (e.g. sizes that do not fit it)."""


_RUNTIME_LOG = {"off": False}
"""Whether :func:`quiet_options` turns onnxruntime's default logger off too (the CLI's
choice: :func:`turn_runtime_log_off`)."""


def turn_runtime_log_off() -> None:
    """Turn onnxruntime's default logger off when onnxz next opens a session: the CLI
    reports every error in one line, and that logger printed its own ("[E:onnxruntime:
    Default, allocator.cc:99] ... Integer overflow" before refusing a tensor of 2^62
    elements). Process-wide, so the API leaves it to the caller. onnxruntime is imported
    only when a session is needed: under a memory limit the import itself fails, and
    prints."""
    _RUNTIME_LOG["off"] = True


def quiet_options() -> Any:
    """Session options that keep onnxruntime's own error log off stderr (we report)."""
    import onnxruntime as ort

    if _RUNTIME_LOG["off"]:
        ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return opts


SESSION_PLACEHOLDER = "onnxz-decoded-in-memory"
"""The external-data location given to initializers handed to onnxruntime as in-memory
OrtValues (no such file is ever read)."""

ORT_NUMPY_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
    onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32,
    onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL})
"""Element types whose numpy arrays onnxruntime reads as that same ONNX type (not bfloat16
or float8, which numpy holds as unsigned integers)."""

def goes_outside(tensor: onnx.TensorProto, nbytes: int, read: Collection[str]) -> bool:
    """Whether an initializer of the main graph reaches onnxruntime as an OrtValue: of a
    type numpy holds as it is, of at least ``EXTERNAL_MIN_BYTES`` (the bytes an unpacked
    model writes to external data), read by a node
    (onnxruntime drops an initializer no node reads before it takes the OrtValues, and then
    refuses an OrtValue for it)."""
    return (tensor.data_type in ORT_NUMPY_TYPES and nbytes >= EXTERNAL_MIN_BYTES
            and tensor.name in read)


def point_to_placeholder(tensor: onnx.TensorProto, nbytes: int) -> None:
    """Make ``tensor`` an external-data reference to :data:`SESSION_PLACEHOLDER`."""
    take_payload(tensor)
    del tensor.external_data[:]
    for key, value in (("location", SESSION_PLACEHOLDER), ("offset", "0"),
                       ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def session_with_initializers(serialized: bytes, options: Any, names: Sequence[str],
                              arrays: Sequence[np.ndarray],
                              providers: Sequence[str] = ("CPUExecutionProvider",)) -> Any:
    """A session of the ``serialized`` model whose initializers ``names`` (pointing to
    :data:`SESSION_PLACEHOLDER`) are ``arrays``, given as OrtValues; the session keeps the
    arrays alive. ``options`` receives them, so it must be a fresh one."""
    import onnxruntime as ort

    if names:
        options.add_external_initializers(
            list(names), [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
    session = ort.InferenceSession(serialized, options, providers=list(providers))
    session._onnxz_initializers = arrays  # keep them alive
    return session


def session_from_proto(model: onnx.ModelProto, probe: Probe | None = None) -> Any:
    """A session of ``model`` (changed by ``probe``: extra outputs, pins; ``model`` itself is
    left as it is). Its main graph's initializers that :func:`goes_outside` are lent to
    onnxruntime as OrtValues instead of being serialized, copied and parsed again: a 90 MB
    sentence encoder's session takes 0.37 s instead of 0.58, and rate control opens one
    per plan it tries. (It serializes a copy made without the lent payloads, not ``model``
    changed and restored: protobuf's arena would keep every payload set back until
    ``model`` is freed, 90 MB a session.)"""
    read = consumers(model)
    inputs = {v.name for v in model.graph.input}
    lent: dict[str, np.ndarray] = {}  # each payload read once: every read is a copy
    for t in model.graph.initializer:
        if t.HasField("raw_data") and t.name not in inputs and t.data_type in ORT_NUMPY_TYPES:
            raw = t.raw_data
            if goes_outside(t, len(raw), read):
                lent[t.name] = np.frombuffer(raw, dtype=onnx.helper.tensor_dtype_to_np_dtype(
                    t.data_type)).reshape(tuple(t.dims))
    if lent:
        changed = _copied(model, "graph")
        _copied(model.graph, "initializer", changed.graph)
        for tensor in model.graph.initializer:
            if tensor.name in lent:
                point_to_placeholder(_copied(tensor, "raw_data", changed.graph.initializer.add()),
                                     lent[tensor.name].nbytes)
            else:
                changed.graph.initializer.add().CopyFrom(tensor)
        if probe is not None:
            probe.apply(changed)
    else:
        changed = model if probe is None else probe.applied(model)
    return session_with_initializers(changed.SerializeToString(), quiet_options(),
                                     list(lent), list(lent.values()))


def _copied(message: Any, leave: str, into: Any = None) -> Any:
    """A copy of a protobuf ``message`` without its field ``leave`` (into ``into``, a new
    message of its type if None): the lent payloads are never copied (protobuf crashes,
    not raises, when it cannot allocate a copy under a memory limit)."""
    out = type(message)() if into is None else into
    for descriptor, value in message.ListFields():
        if descriptor.name == leave:
            continue
        if getattr(descriptor, "is_repeated", None) or (  # protobuf < 6 has label only
                getattr(descriptor, "label", None) == descriptor.LABEL_REPEATED):
            getattr(out, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(out, descriptor.name).CopyFrom(value)
        else:
            setattr(out, descriptor.name, value)
    return out


def _session(make: Callable[[], Any], which: str) -> Any:
    """``make()``, any failure becoming the verification's reason."""
    # onnxruntime's exceptions derive from Exception only; onnxz's from OnnxzError.
    try:
        return make()
    except Exception as exc:
        raise ModelFailed(f"{which} model failed to load: {first_line(exc)}") from exc


def _original_model(original: onnx.ModelProto | Path) -> onnx.ModelProto:
    """The original's graph (its weights not loaded when it is a path)."""
    if not isinstance(original, onnx.ModelProto):
        with open(original, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                raise ModelFailed(f"original model failed to load: {original} is an .onnxz "
                                  "file (give the .onnx first, then the .onnxz)")
        try:
            original = onnx.load(str(original), load_external_data=False)
        except (DecodeError, ValueError, RuntimeError, OSError) as exc:
            raise ModelFailed(f"original model failed to load: {first_line(exc)}") from exc
    try:
        check_model(original)
    except InvalidModelError as exc:
        raise ModelFailed(f"original model failed to load: {exc}") from exc
    return original


def _original_session(original: onnx.ModelProto | Path, extra_outputs: Sequence[str]) -> Any:
    """A session of the original with ``extra_outputs`` added (then the model is loaded
    whole and must be under 2 GiB)."""
    import onnxruntime as ort

    if isinstance(original, onnx.ModelProto) or extra_outputs:
        return _session(lambda: session_from_proto(
            original if isinstance(original, onnx.ModelProto) else _whole_model(original),
            Probe(tuple(extra_outputs))), "original")
    return _session(
        lambda: ort.InferenceSession(_model_for_onnxruntime(original), quiet_options(),
                                     ["CPUExecutionProvider"]),
        "original")


def _model_for_onnxruntime(path: Path) -> str | bytes:
    """What onnxruntime can open: the path if UTF-8 can spell it (its external data is then
    found beside it), else the model with its external data, serialized (< 2 GiB)."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        return _whole_model(path).SerializeToString()


def _stored_bytes(path: Path, model: onnx.ModelProto) -> int:
    """The bytes of the .onnx at ``path`` and of the external data files its main graph's
    initializers name (each once)."""
    locations = {e.value for t in model.graph.initializer for e in t.external_data
                 if e.key == "location"}
    return path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in locations
        if (path.parent / name).is_file())


def _whole_model(path: Path) -> onnx.ModelProto:
    """The model at ``path`` with its external data loaded."""
    model = onnx.load(path, load_external_data=False)
    with utf8_spelling(path.parent) as folder:
        load_external_data_for_model(model, folder)
    return model


def _runnable_samples(specs: tuple[TensorSpec, ...], model: onnx.ModelProto,
                      reference: Any, changes: DefaultInputs | None = None) -> Samples:
    """Verify's default samples: the generated inputs ``pack``'s default runs the model on
    (:func:`~onnxz.inputs.runnable_generated`, with the settings ``changes`` gives); if none
    runs, the plain generated inputs (whose run then reports why)."""
    found = runnable_generated(model, original_runs(reference, specs), changes)
    return samples_for(specs, found if found is not None else changes)


def original_runs(session: Any, specs: tuple[TensorSpec, ...]
                  ) -> Callable[[GeneratedInputs], bool]:
    """Whether the model of ``session`` runs on sample 0 of some generated inputs: the test
    :func:`~onnxz.inputs.runnable_generated` asks."""
    def runs(generated: GeneratedInputs) -> bool:
        try:
            samples = samples_for(specs, generated)
            run_session(session, _feed(samples, 0), "original", 0)
        except (ModelFailed, VerificationInputError):
            return False
        return True
    return runs


def _check_interfaces(reference: Any, candidate: Any, fed: frozenset[str]) -> None:
    """:class:`ModelFailed` unless both sessions have the same inputs (but the pins'
    ``fed``) and outputs."""
    for kind, ref, cand in (("inputs", reference.get_inputs(), candidate.get_inputs()),
                            ("outputs", reference.get_outputs(), candidate.get_outputs())):
        a = [(x.name, x.type) for x in ref]
        b = [(x.name, x.type) for x in cand if x.name not in fed]
        if a != b:
            raise ModelFailed(f"the packed model's {kind} {b} differ from the original's {a}")


def _accumulate(accumulators: list[_Accumulator], ref: list[np.ndarray],
                out: list[np.ndarray], index: int, lost: bool = False) -> None:
    """Add one sample's outputs; :class:`ModelFailed` if an output's dtype differs from the
    original's, or its shape where no pick chose its rows (unless ``lost``: then that
    output counts as lost on the sample, as a candidate in rate control)."""
    for acc, r, o in zip(accumulators, ref, out, strict=True):
        if (r.shape != o.shape and acc.picked is None and not lost) or r.dtype != o.dtype:
            raise ModelFailed(
                f"sample {index}: output {acc.spec.name!r} of the packed model is {o.dtype} "
                f"{o.shape}, the original's is {r.dtype} {r.shape}"
            )
    for acc, r, o in zip(accumulators, ref, out, strict=True):
        acc.add(r, o)


def run_session(session: Any, feed: Feed, which: str, index: int,
                hint: str = "") -> list[np.ndarray]:
    """The session's outputs on one sample; ``hint`` is added to a failure's reason."""
    # onnxruntime's exceptions derive from Exception only.
    try:
        return [np.asarray(o) for o in interrupts.run(session, feed)]
    except Exception as exc:
        raise SampleFailed(f"{which} model failed to run on sample {index}: {first_line(exc)}"
                           + (f" ({hint})" if hint else "")) from exc


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


DATA_EVIDENCE = ClassScores("rows sum to 1", log_domain=False)
PROBABILITY_EVIDENCE = ClassScores("one probability per row, decided at 0.5",
                                   log_domain=False, binary=True)
@dataclass
class _Accumulator:
    """Running sums for one output, updated one sample at a time by :meth:`add`.

    ``scores`` is the graph's or the caller's evidence that the output is class scores;
    without it, rows (along the last axis) that are probability distributions on every
    sample so far are the evidence, and rankings are kept while that holds.
    """

    spec: TensorSpec
    scores: ClassScores | None = None
    noise_floor: float = 0.0
    samples: int = 0
    exact_samples: int = 0
    elements: int = 0
    finite: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    ref_max: float = 0.0
    signal: float = 0.0
    noise: float = 0.0
    cos_sum: float = 0.0
    cos_min: float = 1.0
    rows: int = 0
    classes: int = 0
    top1_hits: int = 0
    top1_samples: int = 0
    paths: list[tuple[np.ndarray, np.ndarray]] | None = field(default_factory=list)
    """Per sample, the original's and the packed's argmax paths (int32; None once a
    sample has more than :data:`CTC_MAX_ROWS` rows)."""
    class_rows: dict[int, int] = field(default_factory=dict)
    """Rows per class the original decides (every sample so far)."""
    class_kept: dict[int, int] = field(default_factory=dict)
    """Of those, the rows where the packed decides the same."""
    top5_sum: float = 0.0
    distributions: bool = True
    probabilities: bool = True
    picked: str | None = None
    stands_for: tuple[str, ...] = ()
    pinned: str | None = None
    part_of: tuple[str, ...] = ()
    lost: int = 0
    """Samples where the output had another shape than the original's and no pick chose
    its rows (a candidate in rate control): nothing of it counts as kept."""
    vocabulary: dict[object, int] = field(default_factory=dict)
    """A string output's distinct values, numbered (:meth:`_numbered`)."""

    def class_scores(self) -> ClassScores | None:
        """The evidence that this output is class scores, if any (after some samples)."""
        if self.scores is not None:
            return self.scores
        return self._data_evidence() if self.rows else None

    def _data_evidence(self) -> ClassScores | None:
        """Rows that are distributions on every sample so far, or else a single column of
        probabilities (values in [0, 1], last axis 1 or a vector)."""
        if self.distributions:
            return DATA_EVIDENCE
        return PROBABILITY_EVIDENCE if self.probabilities else None

    def add(self, reference: np.ndarray, packed: np.ndarray) -> None:
        if reference.shape != packed.shape:  # a picked output: another count of rows
            self.samples += 1
            self.lost += self.picked is None
            return
        if reference.dtype.kind in "OSU":  # strings (labels, tokens): numbered as decisions
            reference, packed = self._numbered(reference), self._numbered(packed)
        ref = reference.astype(np.float64).ravel()
        out = packed.astype(np.float64).ravel()
        same = (ref == out) | (np.isnan(ref) & np.isnan(out))
        finite = np.isfinite(ref) & np.isfinite(out)
        with np.errstate(invalid="ignore"):  # inf − inf, NaN − x
            err = np.where(same, 0.0, np.abs(ref - out))
        err[np.isnan(err)] = np.inf  # NaN against a number
        self.samples += 1
        self.exact_samples += bool(same.all())
        self.elements += err.size
        if err.size:
            self.abs_sum += float(err.sum())
            self.abs_max = max(self.abs_max, float(err.max()))
        finite_ref = ref[np.isfinite(ref)]
        peak = float(np.abs(finite_ref).max()) if finite_ref.size else 0.0
        self.finite += finite_ref.size
        self.ref_max = max(self.ref_max, peak)
        within_floor = err <= self.noise_floor * max(1.0, peak)  # no difference (Thresholds)
        out = np.where(within_floor & finite, ref, out)
        packed = out.reshape(packed.shape)
        err = np.where(within_floor, 0.0, err)
        self.signal += float(np.sum(np.square(finite_ref)))
        self.noise += float(np.sum(np.square(err)))
        cosine = _cosine(ref[finite], out[finite]) if (same | finite).all() else 0.0
        self.cos_sum += cosine
        self.cos_min = min(self.cos_min, cosine)
        if self.scores is None:
            self.distributions = self.distributions and _is_distribution(reference)
            self.probabilities = self.probabilities and _is_probability_column(reference)
        scores = self.scores or self._data_evidence()
        if scores is not None and scores.ids:
            self._add_paths(np.asarray(reference).ravel(), np.asarray(packed).ravel())
        elif scores is not None and reference.size and (
                reference.dtype.kind == "f"
                or (self.scores is not None and reference.dtype.kind in "iu")):
            # integer scores (a quantized model's) where the graph or the caller says so
            self._add_rankings(scores.rows(reference), scores.rows(packed))

    def _numbered(self, values: np.ndarray) -> np.ndarray:
        """A string output's values as numbers: each distinct string its own, the same on
        every sample (in the order first seen), so they are compared as class numbers are."""
        names = self.vocabulary
        flat = [names.setdefault(v, len(names)) for v in values.ravel().tolist()]
        return np.array(flat, np.int64).reshape(values.shape)

    def _add_rankings(self, ref: np.ndarray, out: np.ndarray) -> None:
        self.classes = ref.shape[1]
        self._add_paths(ref.argmax(-1), out.argmax(-1))
        if ref.shape[1] > TOP_K:
            top_ref = np.argpartition(-ref, TOP_K, axis=-1)[:, :TOP_K]
            top_out = np.argpartition(-out, TOP_K, axis=-1)[:, :TOP_K]
            shared = (top_ref[:, :, None] == top_out[:, None, :]).any(-1).sum(-1)
            self.top5_sum += float(shared.sum()) / TOP_K

    def _add_paths(self, ref_path: np.ndarray, out_path: np.ndarray) -> None:
        """One sample's decisions: the original's and the packed's class per row."""
        self.rows += ref_path.shape[0]
        kept = ref_path == out_path
        _count_classes(self.class_rows, ref_path)
        _count_classes(self.class_kept, ref_path[kept])
        hits = int(np.sum(kept))
        self.top1_hits += hits
        self.top1_samples += hits == ref_path.shape[0]
        if self.paths is not None and ref_path.size <= CTC_MAX_ROWS:
            self.paths.append((ref_path.astype(np.int64), out_path.astype(np.int64)))
        else:
            self.paths = None

    def _ctc(self) -> float | None:
        if not self.paths:
            return None
        blank = blank_class([ref for ref, _ in self.paths])
        kept = sum(greedy_string(ref, blank) == greedy_string(out, blank)
                   for ref, out in self.paths)
        return kept / len(self.paths)

    def result(self) -> OutputMetrics:
        result = self._result()
        if not self.lost:
            return result
        decisions = [k for k in ("top1", "top1_sample", "ctc", "top5")
                     if getattr(result, k) is not None]
        return replace(result, snr_db=-math.inf, max_abs_error=math.inf, cosine_min=0.0,
                       **dict.fromkeys(decisions, 0.0))

    def _result(self) -> OutputMetrics:
        if self.noise == 0:
            snr = math.inf
        elif self.signal == 0 or math.isinf(self.noise):
            snr = -math.inf
        else:
            snr = 10 * math.log10(self.signal / self.noise)
        scores = self.class_scores() if self.rows else None
        return OutputMetrics(
            name=self.spec.name,
            dtype=str(self.spec.dtype),
            samples=self.samples,
            elements=self.elements,
            original_max_abs=self.ref_max,
            max_abs_error=self.abs_max,
            mean_abs_error=self.abs_sum / self.elements if self.elements else 0.0,
            snr_db=snr,
            cosine_mean=self.cos_sum / self.samples if self.samples else 1.0,
            cosine_min=self.cos_min,
            exact=self.exact_samples / self.samples if self.samples else 1.0,
            top1=self.top1_hits / self.rows if scores else None,
            top5=self.top5_sum / self.rows if scores and self.classes > TOP_K else None,
            class_scores=scores.reason if scores else None,
            finite=self.finite,
            top1_sample=self.top1_samples / self.samples if scores else None,
            ctc=self._ctc() if scores else None,
            picked=self.picked,
            stands_for=self.stands_for,
            pinned=self.pinned,
            part_of=self.part_of,
            lost_classes=tuple(
                (c, n) for c, n in sorted(self.class_rows.items())
                if n >= LOST_CLASS_MIN_ROWS and not self.class_kept.get(c)) if scores else (),
        )


def _is_distribution(values: np.ndarray) -> bool:
    """True if ``values`` has rows (last axis, ≥ 2 entries) that are all probability
    distributions: non-negative and summing to 1 (± :data:`DISTRIBUTION_TOLERANCE`)."""
    if values.dtype.kind != "f" or values.ndim == 0 or values.shape[-1] < 2 or not values.size:
        return False
    rows = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return bool((rows >= -DISTRIBUTION_TOLERANCE).all()
                and (np.abs(rows.sum(-1) - 1) <= DISTRIBUTION_TOLERANCE).all())


def _is_probability_column(values: np.ndarray) -> bool:
    """True if ``values`` is one probability per row: a last axis of 1, or a vector (one
    value per row: faster-whisper's Silero VAD gives its chunks' speech probabilities as
    shape [chunks]), every value finite and within [0, 1]."""
    if (values.dtype.kind != "f" or values.ndim == 0 or not values.size
            or (values.ndim > 1 and values.shape[-1] != 1)):
        return False
    return bool(((values >= 0) & (values <= 1)).all())


LOST_CLASS_MIN_ROWS = 2
"""Rows of the original's decisions a class needs before losing all of them is reported
(:attr:`OutputMetrics.lost_classes`; one row lost is one flip, which ``top1`` counts)."""


BINCOUNT_CLASSES = 1 << 16
"""Class numbers below this are counted by a histogram instead of a sort."""


def _count_classes(counts: dict[int, int], path: np.ndarray) -> None:
    """Add each class's rows in ``path`` (class numbers, any integers) to ``counts``."""
    if (path.dtype.kind in "iu" and path.size and path.min() >= 0
            and path.max() < BINCOUNT_CLASSES):  # no sort
        rows = np.bincount(path)
        classes = rows.nonzero()[0]
        rows = rows[classes]
    else:
        classes, rows = np.unique(path, return_counts=True)
    for c, n in zip(classes.tolist(), rows.tolist(), strict=True):
        counts[c] = counts.get(c, 0) + n


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; 1 if both are zero, 0 if only one is."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))
