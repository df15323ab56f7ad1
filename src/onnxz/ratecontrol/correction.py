"""Bias correction: quantizing a layer's weights moves the mean of its outputs; the layer's
bias absorbs that move.

A layer y = W·x + b whose weights become W + ΔW gives, on average over inputs like the
calibration samples, outputs shifted by ΔW·E[x] per output channel. Where x is not
centred — after a ReLU, a BatchNormalization's shift, an image — that shift is a large
part of the output error, and it is the same for every input: the bias b − ΔW·E[x]
removes it at no cost in bytes (Nagel et al., "Data-free quantization through weight
equalization and bias correction", 2019). E[x] is each layer's input mean per channel,
measured once on the original model over the calibration samples.

Three places can absorb the shift (the tensor must be used by that layer alone):

* a Conv's or Gemm's own bias input (``b − shift``; Gemm: ``C − α·shift/β``);
* the bias of a BatchNormalization that alone reads a bias-less Conv's output
  (``bias − shift·scale/√(var + ε)``, which leaves the mean and variance as they are: the
  constants 0 and 1 − ε once rate control has folded them, see
  :mod:`onnxz.ratecontrol.statistics`);
* the constant of an Add that alone reads a MatMul's output (``c − shift``).

Layers in subgraphs, or whose weight or bias has other users, are left as they are. For a
Conv the shift ignores the border (zero padding): it is the mean over full windows.

>>> import numpy as np
>>> delta_w = np.array([[[[0.5]], [[-1.0]]]])           # one output, two inputs, 1×1 kernel
>>> conv = Layer(("w",), ("b",), "conv", "x", delta_w.shape)
>>> conv.channels, conv.shift(delta_w, np.array([2.0, 1.0])).tolist()
(2, [0.0])
>>> Layer(("w",), ("b",), "matmul", "x", (2, 1)).shift(np.array([[1.0], [2.0]]),
...                                                          np.array([3.0, -1.0])).tolist()
[1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxz.codecs.deadzone import to_float64
from onnxz.dtypes import ElementType
from onnxz.ratecontrol.statistics import inference_epsilon, normalization_gain
from onnxz.verifier import ModelFailed, ReferenceRun
from onnxz.walker import (
    Path,
    consumers,
    float_tensor_paths,
    node_attributes,
    payload_type,
    read_payload,
    resolve,
)

MIN_OPSET = 5
"""The mean probes use Reshape with a shape input (opset 5 and later)."""

MEAN_SUFFIX = "__onnxz_input_mean"


@dataclass(frozen=True)
class Layer:
    """A layer whose output shift ``target`` absorbs: ``shift`` times ``scale`` (a Gemm's
    α/β; per channel, a BatchNormalization's scale/√(var + ε)) is taken from the target.
    ``form`` says how the weight meets its input's channels: ``conv`` (weight
    (O, C/groups, k…), input channel axis 1), ``gemm_t`` (weight (N, K)) or ``matmul``
    (weight (K, N), input channels last); ``source`` is the input value, ``weight_shape``
    the weight's dims."""

    weight: Path
    target: Path
    form: str
    source: str
    weight_shape: tuple[int, ...]
    groups: int = 1
    scale: float | np.ndarray = 1.0

    def shift(self, delta_w: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """ΔW·E[x] per output channel, from the weight change ``delta_w`` (the weight's
        shape) and the input's per-channel ``mean``."""
        if self.form == "conv":
            outputs, per_group = delta_w.shape[:2]
            summed = delta_w.reshape(outputs, per_group, -1).sum(axis=2)
            group = np.arange(outputs) // (outputs // self.groups)
            return (summed * mean.reshape(self.groups, per_group)[group]).sum(axis=1)
        if self.form == "gemm_t":
            return delta_w @ mean
        return mean @ delta_w

    @property
    def channels(self) -> int:
        """How many input channels the mean has."""
        if self.form == "conv":
            return self.weight_shape[1] * self.groups
        return self.weight_shape[1] if self.form == "gemm_t" else self.weight_shape[0]


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The layers of the top-level graph whose shift a tensor of the model can absorb (see
    the module docstring), on models of opset :data:`MIN_OPSET` or later."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return []
    paths = float_tensor_paths(model)
    uses = consumers(model)
    shapes = {name: tuple(resolve(model, path).dims) for name, path in paths.items()}

    def sole(value: str) -> onnx.NodeProto | None:
        used = uses.get(value, [])
        return used[0][0] if len(used) == 1 else None

    def alone(value: str, width: int) -> bool:  # a tensor only this layer reads, (width,)
        return (value in paths and len(uses.get(value, [])) == 1
                and shapes[value] in ((width,), (1, width)))

    found = []
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in paths or len(uses[node.input[1]]) != 1:
            continue
        weight = node.input[1]
        shape = shapes[weight]
        attrs = node_attributes(node)
        if node.op_type == "Conv" and len(shape) >= 3:
            layer = dict(weight=paths[weight], form="conv", source=node.input[0],
                         weight_shape=shape, groups=int(attrs.get("group", 1)))
            if shape[0] % layer["groups"]:
                continue
            if len(node.input) > 2 and node.input[2]:
                if alone(node.input[2], shape[0]):
                    found.append(Layer(target=paths[node.input[2]], **layer))
            elif (after := sole(node.output[0])) is not None and (
                    after.op_type == "BatchNormalization" and after.input[0] == node.output[0]
                    and len(after.input) == 5
                    and alone(after.input[2], shape[0])
                    and (gain := _normalization_gain(model, after, paths)) is not None):
                found.append(Layer(target=paths[after.input[2]], scale=gain, **layer))
        elif node.op_type == "Gemm" and len(shape) == 2 and not attrs.get("transA", 0):
            transposed = bool(attrs.get("transB", 0))
            width = shape[0] if transposed else shape[1]
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
            if len(node.input) > 2 and beta != 0 and alone(node.input[2], width):
                found.append(Layer(paths[weight], paths[node.input[2]],
                                   "gemm_t" if transposed else "matmul", node.input[0], shape,
                                   scale=alpha / beta))
        elif node.op_type == "MatMul" and len(shape) == 2:
            after = sole(node.output[0])
            if after is not None and after.op_type == "Add" and len(after.input) == 2:
                other = after.input[1] if after.input[0] == node.output[0] else after.input[0]
                if alone(other, shape[1]):
                    found.append(Layer(paths[weight], paths[other], "matmul",
                                       node.input[0], shape))
    return found


def _normalization_gain(model: onnx.ModelProto, node: onnx.NodeProto,
                        paths: Mapping[str, Path]) -> np.ndarray | None:
    """A BatchNormalization's :func:`~onnxz.ratecontrol.statistics.normalization_gain`, or
    None where it is in training mode, or its scale or variance is not a float constant."""
    epsilon = inference_epsilon(node)
    names = (node.input[1], node.input[4])  # scale, variance
    if epsilon is None or any(name not in paths for name in names):
        return None
    scale, var = (to_float64(*_payload(model, paths[name])) for name in names)
    return normalization_gain(scale, var, epsilon) if scale.shape == var.shape else None


def input_means(model: onnx.ModelProto, layers: Sequence[Layer], reference: ReferenceRun
                ) -> dict[str, np.ndarray]:
    """Each layer input's mean per channel (float64) on ``reference``'s samples, each
    sample weighing the same: the original model runs once with a GlobalAveragePool of
    every input added as an output (a Conv's input directly, a Gemm's or MatMul's with its
    channels moved first)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    names: dict[str, str] = {}
    for layer in layers:
        if layer.source in names:
            continue
        mean = layer.source + MEAN_SUFFIX
        if layer.form == "conv":
            graph.node.append(helper.make_node("GlobalAveragePool", [layer.source], [mean]))
        else:  # (…, K) -> (1, K, rows)
            channels = layer.channels
            rows, first, grid = (f"{mean}_{k}" for k in ("rows", "channels", "grid"))
            graph.initializer.extend([
                numpy_helper.from_array(np.array([-1, channels], np.int64), rows),
                numpy_helper.from_array(np.array([1, channels, -1], np.int64), grid)])
            graph.node.extend([
                helper.make_node("Reshape", [layer.source, rows], [rows + "_out"]),
                helper.make_node("Transpose", [rows + "_out"], [first], perm=[1, 0]),
                helper.make_node("Reshape", [first, grid], [grid + "_out"]),
                helper.make_node("GlobalAveragePool", [grid + "_out"], [mean])])
        graph.output.append(onnx.ValueInfoProto(name=mean))
        names[layer.source] = mean
    first_mean = len(model.graph.output)
    runs = reference.run(probe)
    means = {}
    for k, source in enumerate(names):
        per_sample = [np.asarray(run[first_mean + k], np.float64) for run in runs]
        means[source] = np.mean([m.reshape(m.shape[0], m.shape[1], -1).mean(axis=(0, 2))
                                 for m in per_sample], axis=0)
    return means


class BiasCorrection:
    """The layers of a model whose bias absorbs their weights' quantization shift, with
    their inputs' means: :meth:`corrected` gives a target's values for a weight's
    reconstruction."""

    def __init__(self, layers: Sequence[Layer], means: Mapping[str, np.ndarray],
                 originals: Mapping[Path, tuple[np.ndarray, ElementType]]) -> None:
        self.by_weight = {layer.weight: layer for layer in layers}
        self.means = dict(means)
        self.originals = dict(originals)  # target -> its original values and element type

    @classmethod
    def measure(cls, model: onnx.ModelProto, reference: ReferenceRun) -> BiasCorrection | None:
        """The model's correctable layers and their input means on ``reference``'s samples;
        None if it has none, or if the model with the means added does not run (it then
        packs as without correction)."""
        found = find_layers(model)
        originals = {layer.target: _payload(model, layer.target) for layer in found}
        layers = [layer for layer in found
                  if np.isfinite(to_float64(*originals[layer.target])).all()]
        if not layers:
            return None
        try:
            means = input_means(model, layers, reference)
        except ModelFailed:
            return None
        usable = [layer for layer in layers if means[layer.source].shape == (layer.channels,)
                  and np.isfinite(means[layer.source]).all()]
        return cls(usable, means, originals) if usable else None

    def shift(self, weight: Path, original: np.ndarray, reconstruction: np.ndarray
              ) -> np.ndarray:
        """The output shift of the layer of ``weight`` when its ``original`` values (flat,
        float64) become ``reconstruction``."""
        layer = self.by_weight[weight]
        delta_w = (reconstruction - original).reshape(layer.weight_shape)
        return layer.scale * layer.shift(delta_w, self.means[layer.source])

    def corrected(self, target: Path, shift: np.ndarray) -> np.ndarray:
        """The target's values (its element type, flat) once it absorbs ``shift``."""
        values, etype = self.originals[target]
        moved = to_float64(values, etype) - shift
        return moved.astype(etype.numpy)


def _payload(model: onnx.ModelProto, path: Path) -> tuple[np.ndarray, ElementType]:
    """A float tensor's values (a copy: the working model's payloads change) and type."""
    tensor = resolve(model, path)
    etype = payload_type(tensor)
    assert etype is not None
    return read_payload(tensor, etype).copy(), etype
