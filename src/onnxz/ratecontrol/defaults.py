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
:data:`WEIGHT_FLOOR_DB` of weight SNR. A model that cannot run on generated inputs (inputs
that cannot be generated, values the model rejects) or is too large to run many times falls
back to a data-free rule: :data:`FALLBACK_WEIGHT_SNR_DB` of weight SNR for every quantized
tensor.

What it guarantees and what not (also in the README): the SNRs hold on the generated
samples, checked in onnxruntime before the file is written. On real data it kept ≥ 99.5% of
the held-out task decisions on most models measured (tools/bench_rate.py and the README's
unseen-model sweeps), not on all: decisions dense near a threshold or tied between classes
(basic-pitch 97.2% of note events) and text recognizers' strings
(PP-OCRv2 rec 97.2%, trueocr's 97.9%: on real lines their decisions move 2–10× more than
on generated inputs). Generated inputs are not the user's data — pass ``--fidelity`` with
``--inputs`` for a guarantee on yours.
"""

from __future__ import annotations

import onnx

from onnxz.errors import TargetNotMetError
from onnxz.outputs import stand_ins
from onnxz.ratecontrol.objective import (
    FLOORED_PEAK,
    Measure,
    Objective,
    argmax_sources,
    output_parts,
    peak_magnitude,
)
from onnxz.ratecontrol.tensors import STEP_GRID, Candidate, Setting
from onnxz.verifier import ReferenceRun, Thresholds

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
