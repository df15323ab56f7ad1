"""What a model's outputs are, read from its graph: class scores and why (a Softmax makes
them, an ArgMax or TopK reads them, their name says so), the class numbers an in-graph
ArgMax makes, outputs whose rows a TopK or NonMaxSuppression picks (and the values the pick
reads), picks that weights act after (pinned to the original's in the runs that judge the
model: :class:`Pin` edits a graph for them), and the parts an output's SNR is measured on.
Verification and rate control both judge outputs by these; nothing here runs a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxz.errors import TargetSpecError
from onnxz.inputs import graph_specs, image_inputs
from onnxz.walker import subgraphs

PASS_THROUGH = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
"""Ops that keep class scores class scores (last axis unchanged in practice)."""

SCORE_PRODUCERS = frozenset({"Softmax", "LogSoftmax"})
DECISION_CONSUMERS = frozenset({"ArgMax", "TopK"})

SCORE_NAMES = frozenset({"logits", "logit", "probs", "probabilities", "softmax"})
"""Output-name words that say "class scores" (``logits``, ``output_probs``, ...)."""


@dataclass(frozen=True)
class ClassScores:
    """Why an output counts as class scores, and where its classes are.

    ``axis`` is the class axis; with ``coerced`` (a Softmax of opset < 13) the classes are
    every axis from ``axis`` on, flattened. ``log_domain`` is True when the values are
    logits or log-probabilities, False when they are probabilities. ``binary``: every value
    is the probability p of one class, a yes/no decision at 0.5 (a voice activity
    detector's speech probability); its rows are (1 − p, p); with ``log_domain`` every value
    is that class's logit z, a yes/no decision at 0, and its rows are (0, z), whose softmax
    is (1 − sigmoid(z), sigmoid(z)). ``ids``: the output holds the
    decisions themselves, the class numbers an in-graph ArgMax makes (one per element: a
    recognizer's id path), so top-1 and ``ctc`` read them as they are; no rows of scores.

    >>> ClassScores("p", log_domain=False, binary=True).rows(np.array([[0.2], [0.9]]))
    array([[0.8, 0.2],
           [0.1, 0.9]])
    """

    reason: str
    axis: int = -1
    coerced: bool = False
    log_domain: bool = True
    binary: bool = False
    ids: bool = False

    def rows(self, values: np.ndarray) -> np.ndarray:
        """The output as a 2-D array, one prediction per row, one class per column."""
        if self.binary:
            p = values.reshape(-1, 1)
            return np.concatenate([np.zeros_like(p) if self.log_domain else 1 - p, p], axis=1)
        if values.ndim == 0:
            return values.reshape(1, 1)
        axis = self.axis % values.ndim
        if self.coerced:
            return values.reshape(math.prod(values.shape[:axis]), -1)
        return np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])


IDS_EVIDENCE = ClassScores("class numbers an in-graph ArgMax makes", ids=True)
"""An integer output that an ArgMax makes: its elements are the decisions (top-1 per
element, ``ctc`` over each sample's path; SNR and cosine stay, and ``exact``)."""


def argmax_sources(model: onnx.ModelProto) -> dict[str, tuple[str, ClassScores]]:
    """Integer outputs that are an ArgMax of a float value (through Cast/Identity/Squeeze/
    Unsqueeze/Reshape, the class table an ArrayFeatureExtractor looks its index up in, as
    scikit-learn's converters write a classifier's ``label``, and a Where that puts a
    constant in some places, as a keypoint matcher's -1 for a keypoint without a match):
    output name -> (the value ArgMax reads, its class axis)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = _constant_names(model.graph)
    found = {}
    for output in model.graph.output:
        value = output.name
        for _ in range(8):
            node = producer.get(value)
            if node is None:
                break
            if node.op_type == "ArgMax":
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                found[output.name] = (node.input[0], ClassScores("ArgMax input", axis=axis))
                break
            if node.op_type == "ArrayFeatureExtractor" and len(node.input) == 2:
                value = node.input[1]  # the class table, indexed by the ArgMax
                continue
            if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in constants:
                value = node.input[1]  # a table of labels (strings), indexed by the ArgMax
                continue
            computed = [v for v in node.input[1:] if v not in constants]
            if node.op_type == "Where" and len(node.input) == 3 and len(computed) == 1:
                value = computed[0]  # the other branch: a constant where the mask says
                continue
            if node.op_type not in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape"):
                break
            value = node.input[0]
    return found


ID_LAYOUT = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
                       "Transpose", "Slice"})
"""Ops that move class numbers around without changing them (their first input is the data)."""


def class_id_outputs(model: onnx.ModelProto) -> list[str]:
    """Integer outputs that hold the class numbers of in-graph ArgMaxes: those of
    :func:`argmax_sources`, and those whose every element an ArgMax or a constant makes
    through Concat, Slice, Transpose and reshapes (a greedy decoder unrolled step by step
    concatenates each step's ArgMax after a start token). These are judged as decisions
    (``exact``, top-1, ``ctc``), never by SNR: class numbers have no scale."""
    found = list(argmax_sources(model))
    found += [o.name for o in model.graph.output  # strings (labels, tokens) have no scale
              if o.type.tensor_type.elem_type == onnx.TensorProto.STRING and o.name not in found]
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = _constant_names(model.graph)
    for output in model.graph.output:
        if output.name in found or output.type.tensor_type.elem_type not in _INTEGER_TYPES:
            continue
        pending, seen, argmaxes, made = [output.name], set(), 0, True
        while pending and made:
            value = pending.pop()
            if value in seen or value in constants:
                continue
            seen.add(value)
            node = producer.get(value)
            if node is not None and node.op_type == "ArgMax":
                argmaxes += 1
            elif node is not None and node.op_type == "Concat":
                pending.extend(node.input)
            elif node is not None and node.op_type in ID_LAYOUT and node.input:
                pending.append(node.input[0])
            else:
                made = False  # an input, or an op that computes
        if made and argmaxes:
            found.append(output.name)
    return found


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    """The names of ``graph``'s initializers and Constant nodes' outputs."""
    return {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}


_INTEGER_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                            onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                            onnx.TensorProto.UINT64, onnx.TensorProto.UINT32,
                            onnx.TensorProto.UINT16, onnx.TensorProto.UINT8})


def class_evidence(model: onnx.ModelProto, named: Sequence[str] = ()) -> dict[str, ClassScores]:
    """Outputs the graph (or the caller, by name) shows to be class scores: produced by
    Softmax/LogSoftmax or consumed by ArgMax/TopK, through Identity/Cast/Reshape/Squeeze/
    Unsqueeze/Flatten, or named so (a word of :data:`SCORE_NAMES`, with a fixed last axis of
    at least 2). Rows that sum to 1 are the data's evidence, added by the accumulator.
    """
    outputs = [o.name for o in model.graph.output]
    unknown = [n for n in named if n not in outputs]
    if unknown:
        raise TargetSpecError(f"class output {unknown[0]!r}: the model has no such output "
                              f"(its outputs: {', '.join(map(repr, outputs)) or 'none'})")
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    ids = class_id_outputs(model)  # named or not, an ArgMax's class numbers are decisions
    found = {name: IDS_EVIDENCE if name in ids else _named(model, name, producer)
             for name in named}
    for name in outputs:
        if name in found:
            continue
        value, seen = name, set()
        while value not in seen:
            seen.add(value)
            if any(c.op_type in DECISION_CONSUMERS for c in consumers.get(value, ())):
                found[name] = ClassScores(f"feeds {_op_of(consumers[value])}")
                break
            node = producer.get(value)
            if node is None:
                break
            if node.op_type in SCORE_PRODUCERS:
                found[name] = _softmax_scores(node, opset)
                break
            if node.op_type not in PASS_THROUGH or not node.input:
                break
            value = node.input[0]
    for spec in graph_specs(model)[1]:
        words = set(re.split(r"[^a-z0-9]+", spec.name.lower()))
        if (spec.name not in found and words & SCORE_NAMES and spec.dtype.kind == "f"
                and spec.shape and isinstance(spec.shape[-1], int) and spec.shape[-1] >= 2):
            found[spec.name] = ClassScores(f"named {spec.name!r}")
    return found


def sequence_outputs(model: onnx.ModelProto, evidence: Mapping[str, ClassScores]
                     ) -> list[str]:
    """The outputs of ``evidence`` (class scores, as :func:`class_evidence` finds them) whose
    declared shape gives a sample several rows: an axis besides the batch (axis 0) and the
    classes that is dynamic or longer than 1, as a recognizer's positions ``[N, T, C]``.
    Not a yes/no per element, not class numbers, and not an output of unknown rank.

    >>> from onnx import TensorProto, helper
    >>> graph = helper.make_graph([], "g", [], [
    ...     helper.make_tensor_value_info("rec", TensorProto.FLOAT, ["N", "T", 97]),
    ...     helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["N", 1, 2])])
    >>> scores = ClassScores("Softmax output")
    >>> sequence_outputs(helper.make_model(graph), {"rec": scores, "cls": scores})
    ['rec']
    """
    found = []
    for spec in graph_specs(model)[1]:
        scores = evidence.get(spec.name)
        if scores is None or scores.binary or scores.ids or not spec.shape:
            continue
        rank = len(spec.shape)
        classes = scores.axis % rank if -rank <= scores.axis < rank else None
        if classes is None:
            continue
        rows = spec.shape[1:classes] if scores.coerced else [
            d for k, d in enumerate(spec.shape) if k not in (0, classes)]
        if any(not isinstance(d, int) or d > 1 for d in rows):
            found.append(spec.name)
    return found


def string_outputs(model: onnx.ModelProto, evidence: Mapping[str, ClassScores]) -> list[str]:
    """The output a text recognizer's greedy CTC strings are read from: the model's only
    output, with an image among its inputs (a float input of rank 4), and either one of
    :func:`sequence_outputs` with one axis of rows and the classes last (``[N, T, C]``) or
    the id paths an in-graph ArgMax makes (``[N, T]``, ``ids`` evidence). Other rows are
    not read as strings: a detector's anchors (beside its boxes: more outputs), an audio
    frame tagger's frames (no image), a segmenter's pixels (two axes of rows); there a row
    flip that no task sees would change the "string".

    >>> from onnx import TensorProto, helper
    >>> def model(x, y):
    ...     return helper.make_model(helper.make_graph([], "g", [
    ...         helper.make_tensor_value_info("x", TensorProto.FLOAT, x)], [
    ...         helper.make_tensor_value_info("probs", TensorProto.FLOAT, y)]))
    >>> scores = {"probs": ClassScores("Softmax output")}
    >>> string_outputs(model(["N", 3, 48, "W"], ["N", "T", 97]), scores)   # a recognizer
    ['probs']
    >>> string_outputs(model([1, "T", 400], [1, "T", 248]), scores)        # a frame tagger
    []
    """
    inputs, outputs = graph_specs(model)
    if not image_inputs(inputs) or len(outputs) != 1 or outputs[0].shape is None:
        return []
    name, shape = outputs[0].name, outputs[0].shape
    scores = evidence.get(name)
    if scores is None:
        return []
    if scores.ids:
        path = len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] > 1)
    else:
        path = (len(shape) == 3 and scores.axis in (2, -1)
                and name in sequence_outputs(model, evidence))
    return [name] if path else []


def _named(model: onnx.ModelProto, name: str, producer: dict[str, onnx.NodeProto]
           ) -> ClassScores:
    """The caller's class output ``name``: rows along its last axis, or, when that axis is
    one element long (a speech logit ``[batch, 1]``) or the output is a vector of a
    Sigmoid's probabilities (a speech probability per chunk), one yes/no per element: at
    0.5 on a Sigmoid's output, at 0 on anything else (a logit). Ranked over one column (or
    over the chunks), any file kept every decision and a search's margins were NaN."""
    spec = next(s for s in graph_specs(model)[1] if s.name == name)
    node = producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH and node.input:
        node = producer.get(node.input[0])
    sigmoid = node is not None and node.op_type == "Sigmoid"
    if not spec.shape or (spec.shape[-1] != 1 and not (len(spec.shape) == 1 and sigmoid)):
        return ClassScores("named by the caller")
    if sigmoid:
        return ClassScores("named by the caller; one probability per row, decided at 0.5",
                           log_domain=False, binary=True)
    return ClassScores("named by the caller; one logit per row, decided at 0", binary=True)


def _op_of(nodes: list[onnx.NodeProto]) -> str:
    return next(n.op_type for n in nodes if n.op_type in DECISION_CONSUMERS)


def _softmax_scores(node: onnx.NodeProto, opset: int) -> ClassScores:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    return ClassScores(f"{node.op_type} output", axis=axis, coerced=opset < 13,
                       log_domain=node.op_type == "LogSoftmax")


def value_parts(model: onnx.ModelProto, values: Sequence[str], logits: bool = False
                ) -> dict[str, list[str]]:
    """Value -> the values its SNR is measured on: the value itself, or, through reshapes
    and casts, the parts a Concat joins, each on its own (a detector's boxes and class
    scores differ in scale by hundreds: an SNR over both is the boxes'); with ``logits``, a
    Sigmoid's input instead of its output (a saturated probability map hides them)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def parts(value: str, depth: int) -> list[str]:
        node = producer.get(value)
        while node is not None and node.op_type in PASS_THROUGH and node.input:
            node = producer.get(node.input[0])
        if node is None or depth > 4:
            return [value]
        if logits and node.op_type == "Sigmoid" and node.input:
            return [node.input[0]]
        if node.op_type == "Concat":
            return [p for v in node.input if v for p in parts(v, depth + 1)]
        return [value]

    return {v: parts(v, 0) for v in values}


PICKERS = frozenset({"TopK", "NonMaxSuppression", "NonZero", "Where"})
"""Ops that pick elements by the rank of their scores or by a decision on them (a NonZero
of a comparison: a detector keeping the boxes that score above 0.5; a Where whose mask is
such a decision, or compares ArgMax results: a keypoint matcher's mutual-match check
zeroing the scores of matches it drops): what follows them is chosen, ordered, counted or
masked by those decisions, so any weight error can swap near-tied rows (an NMS-free
detector's 300 candidates past its real detections) or turn one on or off, and an SNR of
what they pick says nothing of the model's quality. A Where picks only where an output
shows what it masks as it is (through :data:`PICK_THROUGH` ops) and no weights act after
it: one inside the network (a ReLU written as one, a max-pool suppression before a TopK,
read through by :func:`_cut_from`) is judged with the rest."""

_THRESHOLDS = frozenset({"Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal"})
_MASK_LOGIC = frozenset({"And", "Or", "Not", "Xor"})

PICK_THROUGH = PASS_THROUGH | {"Transpose", "Split", "ReduceMax", "ReduceMin"}
"""Ops walked back through from a value a pick reads, to the whole value it was cut from (a
detector's candidates before they are split into boxes and scores)."""

_METADATA_OPS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class Picked:
    """An output a :data:`PICKERS` op picks: ``op`` names it, ``sources`` are the float
    values the pick reads (before it), judged in the output's place."""

    op: str
    sources: tuple[str, ...]


PIN_SUFFIX = ".pinned"
"""Appended to a pin's indices to name the graph input its copy is fed from."""


@dataclass(frozen=True)
class Pin:
    """A pick that a layer's weights act after (a DETR's decoder runs on the queries a
    TopK picked; a mixture of experts routes by one): verify and rate control run the
    packed model with the original's picks fed in its place (:meth:`apply`), so that its
    outputs compare row for row, and judge the values the pick reads (``reads``) for the
    ``outputs`` computed after it. Without the pin, a weight error that swaps two near-tied
    candidates moves whole rows: an SNR of what follows says nothing of the model.

    ``indices`` is the pick's output of indices (TopK's second, NonMaxSuppression's only);
    the copy reads them from the graph input :attr:`fed`.
    """

    op: str
    indices: str
    reads: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def fed(self) -> str:
        """The graph input the pinned copy takes the original's indices from."""
        return self.indices + PIN_SUFFIX

    def apply(self, graph: onnx.GraphProto) -> None:
        """Replace the pick in ``graph`` (in place) by its indices read from :attr:`fed`; a
        TopK's values become the data at those indices (GatherElements on its axis).
        ValueError if no node of ``graph`` makes :attr:`indices` (another model)."""
        found = [(i, n) for i, n in enumerate(graph.node) if self.indices in n.output]
        if not found:
            raise ValueError(f"no node of the graph makes {self.indices!r}, the pick to pin")
        at, node = found[0]
        nodes = [onnx.helper.make_node("Identity", [self.fed], [self.indices])]
        if node.op_type == "TopK" and node.output[0]:
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            nodes.append(onnx.helper.make_node("GatherElements", [node.input[0], self.indices],
                                               [node.output[0]], axis=axis))
        del graph.node[at]
        for offset, new in enumerate(nodes):
            graph.node.insert(at + offset, new)
        graph.input.append(onnx.helper.make_tensor_value_info(self.fed, onnx.TensorProto.INT64,
                                                              None))


@dataclass(frozen=True)
class Picks:
    """A model's picks (:func:`find_picks`): ``outputs`` picked with nothing weighty after
    the pick, judged by the values it reads in their place, and ``pins``, picks that
    weights act after, pinned to the original's in the packed model's runs."""

    outputs: dict[str, Picked]
    pins: tuple[Pin, ...] = ()

    @property
    def pinned(self) -> dict[str, str]:
        """Output -> the op of the pin it is judged after."""
        return {output: pin.op for pin in self.pins for output in pin.outputs}


NO_PICKS = Picks({})


def find_picks(model: onnx.ModelProto) -> Picks:
    """The model's picks: outputs computed from the indices a TopK or NonMaxSuppression
    picks by ranking float scores, or a NonZero by a threshold on them (a TopK's sorted
    values change smoothly: they are no pick), with the values the picking reads: every
    value computed from the inputs (not from constants or shapes alone) that feeds a node
    after the pick, walked back through :data:`PICK_THROUGH` and masks. A TopK of integers
    (a converter's segment ids) picks nothing. A pick of the main graph that a layer's
    weights act after (a float constant of more than :data:`PICK_MAX_CONSTANT` elements on
    the way to an output) is a :class:`Pin`, read as a graph input by the runs that judge
    the outputs after it (a pick inside a Loop or If body is none of these: what follows it
    is judged as it is).

    >>> from onnx import helper, TensorProto as T
    >>> nodes = [helper.make_node("Sigmoid", ["x"], ["p"]),
    ...          helper.make_node("TopK", ["p", "k"], ["v", "i"]),
    ...          helper.make_node("Gather", ["boxes", "i"], ["picked"], axis=1)]
    >>> graph = helper.make_graph(nodes, "g", [
    ...     helper.make_tensor_value_info(n, T.FLOAT, None) for n in ("x", "boxes")],
    ...     [helper.make_tensor_value_info("picked", T.FLOAT, None)],
    ...     [helper.make_tensor("k", T.INT64, [1], [2])])
    >>> find_picks(helper.make_model(graph)).outputs
    {'picked': Picked(op='TopK', sources=('boxes', 'p'))}
    """
    graph = model.graph
    if not any(n.op_type in PICKERS for n in graph.node):
        return NO_PICKS
    types = _value_types(model)
    producer = {o: n for n in graph.node for o in n.output}
    reads = {id(n): _reads(n) for n in graph.node}  # a Loop's or If's outer-scope values too
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in reads[id(node)]:
            consumers.setdefault(name, []).append(node)
    constant = {t.name for t in graph.initializer}
    data = _downstream([i.name for i in graph.input if i.name not in constant], consumers,
                       stop=_METADATA_OPS)
    def floats(values: Sequence[str]) -> list[str]:
        return [v for v in values if v in data and types.get(
            v, onnx.TensorProto.FLOAT) in _FLOAT_TYPES]

    outputs = [o.name for o in graph.output]
    shown = set(outputs)

    def picks_by_rank_or_decision(node: onnx.NodeProto) -> bool:  # a Where: masking scores
        return node.op_type in PICKERS and (node.op_type != "Where" or bool(
            floats(node.input[1:])  # and an output shows what it masks, as it is
            and shown & _downstream(node.output[:1], consumers, through=PICK_THROUGH)))

    ranked = {id(n): floats(_ranked(n, producer)) for n in graph.node
              if picks_by_rank_or_decision(n)}
    pickers = [n for n in graph.node if ranked.get(id(n))]
    weights = _float_constants(graph)
    ids = set(class_id_outputs(model))  # class numbers: judged as such, masked or not
    pins = []
    inside = set()  # a Where that weights also act after: a mask inside the network
    for node in pickers:
        indices = _picked_indices(node)
        after = _downstream([indices], consumers)
        if not any(_holds_weights(c) or any(r in weights for r in reads[id(c)])
                   for v in after for c in consumers.get(v, ())):
            continue
        if node.op_type == "Where":
            inside.add(indices)
            continue
        pinned_outputs = tuple(o for o in outputs if o in after)
        if pinned_outputs:
            pins.append(Pin(node.op_type, indices, tuple(dict.fromkeys(
                _cut_from(v, producer, data) for v in ranked[id(node)])), pinned_outputs))
    pinned = {p.indices for p in pins}
    pickers = [n for n in pickers if _picked_indices(n) not in pinned | inside]
    picked = _downstream([i for n in pickers if (i := _picked_indices(n))], consumers)
    found = {}
    for output in outputs:
        if output not in picked or output in ids:
            continue
        sources: dict[str, None] = {}
        stack, seen = [output], set()
        while stack:  # no weights on the way: they would have pinned the pick
            value = stack.pop()
            node = producer.get(value)
            if value in seen or node is None:
                continue
            seen.add(value)
            for name in ranked.get(id(node), ()):  # what a pick on the way ranks
                sources[_cut_from(name, producer, data)] = None
            for name in reads[id(node)]:
                if name in picked:
                    stack.append(name)
                elif floats([name]):
                    sources[_cut_from(name, producer, data)] = None
        op = next(n.op_type for n in pickers if set(n.output) & (seen | {output}))
        found[output] = Picked(op, tuple(sorted(sources)))
    return Picks(found, tuple(pins))


def _picked_indices(node: onnx.NodeProto) -> str:
    """The output of a :data:`PICKERS` node that holds the indices it picked."""
    return node.output[1] if node.op_type == "TopK" else node.output[0]


def _ranked(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> list[str]:
    """The values a :data:`PICKERS` node ranks or thresholds: a TopK's data, a
    NonMaxSuppression's boxes and scores, the operands of the comparisons (through And, Or,
    Not and :data:`PASS_THROUGH` ops) whose mask a NonZero or a Where reads, and where an
    operand is an ArgMax's result (through :data:`PASS_THROUGH` ops and the data a Gather
    reads: a mutual-match check), the scores that ArgMax ranks."""
    if node.op_type == "TopK":
        return list(node.input[:1])
    if node.op_type == "NonMaxSuppression":
        return [v for v in node.input[:2] if v]
    found: list[str] = []
    stack, seen = list(node.input[:1]), set()
    while stack:
        value = stack.pop()
        source = producer.get(value)
        if value in seen or source is None:
            continue
        seen.add(value)
        if source.op_type in _THRESHOLDS:
            found += [_argmax_scores(v, producer) for v in source.input if v]
        elif source.op_type in _MASK_LOGIC or source.op_type in PASS_THROUGH:
            stack += [v for v in source.input[:2 if source.op_type in _MASK_LOGIC else 1] if v]
    return found


_GATHERS = frozenset({"Gather", "GatherElements", "GatherND"})


def _argmax_scores(value: str, producer: dict[str, onnx.NodeProto]) -> str:
    """The scores an ArgMax ranks, if ``value`` is its result (through
    :data:`PASS_THROUGH` ops and the data a Gather reads); else ``value``."""
    walked = value
    for _ in range(8):
        node = producer.get(walked)
        if node is None or not node.input:
            break
        if node.op_type in ("ArgMax", "ArgMin"):
            return node.input[0]
        if node.op_type not in PASS_THROUGH and node.op_type not in _GATHERS:
            break
        walked = node.input[0]
    return value


PICK_MAX_CONSTANT = 16
"""A float constant of more elements than this between a pick and an output (a layer's
weights: a DETR's decoder, a mixture of experts routing by TopK, a point-cloud network
picking neighbours by it) makes the pick a :class:`Pin`: nothing before the pick would show
the constant's errors."""

def _reads(node: onnx.NodeProto) -> list[str]:
    """The values a node reads: its inputs and, for a Loop, If or Scan, the outer-scope
    values its subgraphs name (a TF object-detection postprocessor's map_fn gathers the
    boxes a NonMaxSuppression picked inside a Loop body)."""
    found = dict.fromkeys(n for n in node.input if n)
    for g in subgraphs(node):
        defined = {i.name for i in g.input} | {t.name for t in g.initializer}
        for inner in g.node:
            found.update(dict.fromkeys(n for n in _reads(inner) if n not in defined))
            defined.update(inner.output)
    return list(found)


def _holds_weights(node: onnx.NodeProto) -> bool:
    """Whether a node's subgraphs hold a layer's weights (a float constant of more than
    :data:`PICK_MAX_CONSTANT` elements): a weightless Loop or If after a pick only moves
    what the pick chose."""
    return any(_float_constants(g)
               or any(_holds_weights(inner) for inner in g.node) for g in subgraphs(node))


def _float_constants(graph: onnx.GraphProto) -> set[str]:
    """Initializers and Constant outputs of a float type with more than
    :data:`PICK_MAX_CONSTANT` elements."""
    most = PICK_MAX_CONSTANT
    found = {t.name for t in graph.initializer
             if t.data_type in _FLOAT_TYPES and math.prod(t.dims) > most}
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for a in node.attribute:
            if ((a.name == "value" and a.t.data_type in _FLOAT_TYPES and math.prod(a.t.dims) > most)
                    or (a.name == "value_floats" and len(a.floats) > most)):
                found.add(node.output[0])
    return found


def stand_ins(model: onnx.ModelProto, logits: bool = False,
              picks: Picks | None = None) -> dict[str, tuple[str, ...]]:
    """The values judged in the place of picked outputs and for pinned ones (``picks``, by
    default :func:`find_picks`: pass them where they are known, it runs shape inference),
    split into the parts an SNR is measured on (:func:`value_parts`; with ``logits``, a
    Sigmoid's input): value -> the outputs it stands for."""
    picks = find_picks(model) if picks is None else picks
    judged = [(output, pick.sources) for output, pick in picks.outputs.items()] + [
        (output, pin.reads) for pin in picks.pins for output in pin.outputs]
    parts = value_parts(model, sorted({v for _, sources in judged for v in sources}), logits)
    return _by_value((output, [v for s in sources for v in parts[s]])
                     for output, sources in judged)


def concat_parts(model: onnx.ModelProto, skip: Collection[str] = ()
                 ) -> dict[str, tuple[str, ...]]:
    """The parts of outputs that join values by a Concat (:func:`value_parts`, probabilities
    as they are), outputs in ``skip`` (picked ones) left out: value -> the outputs it is a
    part of. Their scales may differ by hundreds (a detector's boxes in pixels and its class
    probabilities), so an SNR over the whole output is its largest part's."""
    outputs = [o.name for o in model.graph.output]
    joined = value_parts(model, [o for o in outputs if o not in skip])
    return _by_value((output, [v for v in parts if v not in outputs])
                     for output, parts in joined.items() if len(parts) > 1)


def _by_value(pairs: Iterable[tuple[str, Sequence[str]]]) -> dict[str, tuple[str, ...]]:
    """(output, its values) pairs turned round: value -> the outputs it belongs to, each
    once, in the order met."""
    found: dict[str, tuple[str, ...]] = {}
    for output, values in pairs:
        for value in values:
            if output not in found.get(value, ()):
                found[value] = (*found.get(value, ()), output)
    return found


_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                          onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE})


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the graph's values as ONNX's shape inference finds them (none if it
    fails: a model past 2 GiB, an op it does not know)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # onnx raises its own errors and ValueError; none is the user's
        return {}
    graph = inferred.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    types = {v.name: v.type.tensor_type.elem_type for v in values
             if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    types.update((t.name, t.data_type) for t in graph.initializer)
    return types


def _downstream(starts: Sequence[str], consumers: dict[str, list[onnx.NodeProto]],
                stop: frozenset[str] = frozenset(), through: frozenset[str] | None = None
                ) -> set[str]:
    """``starts`` and every value computed from them (not through ``stop`` ops; with
    ``through``, only through those ops)."""
    found, stack = set(starts), list(starts)
    while stack:
        for node in consumers.get(stack.pop(), ()):
            if node.op_type in stop or (through is not None and node.op_type not in through):
                continue
            for name in node.output:
                if name and name not in found:
                    found.add(name)
                    stack.append(name)
    return found


def _cut_from(value: str, producer: dict[str, onnx.NodeProto], data: set[str]) -> str:
    """``value`` walked back through :data:`PICK_THROUGH` ops and masks: a Where's one
    branch computed from the inputs (the other a constant or zeros of its shape), a Mul's
    operand that is not a comparison's mask, a Scatter's data. A keypoint or CenterNet-style
    detector ranks its score map after a max-pool non-maximum suppression zeroed all but
    the local maxima (``Where(score == MaxPool(score), score, 0)``): any error turns near
    ties on and off there, so the map before the mask is what is judged."""
    for _ in range(32):
        node = producer.get(value)
        if node is None or not node.input:
            break
        if node.op_type in PICK_THROUGH or node.op_type in _SCATTERS:
            value = node.input[0]
        elif node.op_type == "Where" and len(node.input) == 3:
            branches = [v for v in node.input[1:] if v in data]
            if len(branches) != 1:
                break
            value = branches[0]
        elif node.op_type == "Mul" and len(node.input) == 2:
            kept = [v for v in node.input if not _is_mask(v, producer)]
            if len(kept) != 1:
                break
            value = kept[0]
        else:
            break
    return value


_SCATTERS = frozenset({"ScatterND", "ScatterElements"})
_COMPARISONS = frozenset({"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And",
                          "Or", "Not", "Xor"})


def _is_mask(value: str, producer: dict[str, onnx.NodeProto]) -> bool:
    """Whether ``value`` is a comparison's result (through Casts): a mask of 0s and 1s."""
    node = producer.get(value)
    while node is not None and node.op_type == "Cast" and node.input:
        node = producer.get(node.input[0])
    return node is not None and node.op_type in _COMPARISONS
