"""The lossy default: rate control on generated inputs, so that a plain ``onnxz pack`` keeps
the job of models nobody tuned it for.

Without the user's data the default measures each weight tensor's sensitivity on generated
inputs (:func:`generated_inputs`) and gives the bits to the tensors that move the outputs,
until every float output keeps :data:`DEFAULT_SNR_DB` of SNR on those inputs — class-score
outputs (and the scores behind an in-graph ArgMax) measured on their centered logits, since
the decision margins of generated inputs say nothing about real ones while the logits' noise
does. No quantized tensor goes below :data:`WEIGHT_FLOOR_DB` of weight SNR. A model that
cannot run on generated inputs (inputs that cannot be generated, values the model rejects)
or is too large to run many times falls back to a data-free rule:
:data:`FALLBACK_WEIGHT_SNR_DB` of weight SNR for every quantized tensor.

What it guarantees and what not (also in the README): the SNRs hold on the generated
samples, checked in onnxruntime before the file is written; on real data the task decisions
held on every model measured (tools/bench_rate.py), but generated inputs are not the user's
data — pass ``--fidelity`` with ``--inputs`` for a guarantee on yours.
"""

from __future__ import annotations

import onnx

from onnxz.inputs import GeneratedInputs, graph_specs
from onnxz.ratecontrol.objective import Measure, Objective, argmax_sources
from onnxz.ratecontrol.tensors import Candidate
from onnxz.verifier import ReferenceRun

DEFAULT_SAMPLES = 8
"""Generated samples the default measures and checks on."""

DEFAULT_SNR_DB = 35.0
"""SNR every float output keeps on the generated samples (class scores: centered logits)."""

WEIGHT_FLOOR_DB = 20.0
"""No quantized tensor of the default goes below this weight SNR, whatever its measured
sensitivity (generated inputs may not exercise a tensor the way real ones do)."""

FALLBACK_WEIGHT_SNR_DB = 40.0
"""Weight SNR of every quantized tensor when the model cannot run on generated inputs."""

DEFAULT_MAX_WEIGHT_BYTES = 1 << 30
"""Models with more weight bytes than this get the fallback rule (the default would run them
hundreds of times)."""

INDEX_PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
                                "Identity"})


def generated_inputs(model: onnx.ModelProto) -> GeneratedInputs:
    """Generated inputs the model can run on: unnamed dynamic dims beyond axis 0 are 1 (an
    RNN state's batch), and an integer input that indexes a Gather table (token ids, token
    types) stays within the table's rows."""
    specs = graph_specs(model)[0]
    dims = {f"{s.name}:{axis}": 1 for s in specs for axis, d in enumerate(s.shape or ())
            if d is None and axis > 0}
    rows = _gather_rows(model)
    int_ranges = {s.name: (0, rows[s.name]) for s in specs
                  if s.dtype.kind in "iu" and s.name in rows}
    return GeneratedInputs(samples=DEFAULT_SAMPLES, dims=dims, int_ranges=int_ranges)


def _gather_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> the fewest rows of a Gather table it indexes (through casts/reshapes),
    for tables that are initializers or Constant outputs with a known first dim."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    shapes[node.output[0]] = list(attr.t.dims)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: dict[str, int] = {}
    for value in (i.name for i in model.graph.input):
        frontier, seen = [value], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for node in consumers.get(name, ()):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                    table = shapes.get(node.input[0])
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if table and 0 <= axis < len(table) and table[axis] > 0:
                        found[value] = min(found.get(value, table[axis]), table[axis])
                elif node.op_type in INDEX_PASS_THROUGH and node.input[0] == name:
                    frontier += [o for o in node.output if o not in seen]
    return found


def default_objective(reference: ReferenceRun, model: onnx.ModelProto) -> Objective:
    """The default's measures on this model's outputs, each allowed 1/10^(S/10) of its
    energy (S = :data:`DEFAULT_SNR_DB`): the log-domain scores of class-score outputs and of
    the scores behind an in-graph ArgMax (centered logits: margins on generated inputs say
    nothing about real ones, the logits' noise does), every other float output as is."""
    allowed = 10 ** (-DEFAULT_SNR_DB / 10)
    names = [s.name for s in reference.output_specs]
    sources = argmax_sources(model)
    measures = []
    for index, spec in enumerate(reference.output_specs):
        if spec.name in reference.class_scores:
            measures.append(Measure("logrelmse", index, allowed,
                                    reference.class_scores[spec.name]))
        elif spec.name in sources and sources[spec.name][0] in reference.extra_outputs:
            value, scores = sources[spec.name]
            extra = len(names) + reference.extra_outputs.index(value)
            measures.append(Measure("logrelmse", extra, allowed, scores))
        elif spec.dtype.kind == "f":
            measures.append(Measure("relmse", index, allowed))
    return Objective(None, tuple(measures), (), reference.extra_outputs)


def default_extra_outputs(model: onnx.ModelProto) -> tuple[str, ...]:
    """The scores behind integer outputs that are an in-graph ArgMax."""
    outputs = {o.name for o in model.graph.output}
    return tuple(dict.fromkeys(v for v, _ in argmax_sources(model).values()
                               if v not in outputs))


def apply_floor(candidates: list[Candidate], floor_db: float) -> None:
    """Drop every lossy point whose weight SNR is below ``floor_db`` (lossless stays)."""
    for c in candidates:
        c.points = [p for p in c.points if c.weight_snr_db(p) >= floor_db]
