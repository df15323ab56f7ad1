"""Calibration-aware rounding: choose each weight's level with the rounding errors of the
weights before it fed back through the layer's inputs (GPTQ, Frantar et al. 2022).

A linear layer's output error is ΔW·x, not ΔW alone. With H = Σ x·xᵀ over the calibration
inputs (per input column of the weight matrix), rounding the columns one at a time and
moving each column's rounding error onto the columns not yet rounded, weighted by H⁻¹,
leaves an error that x hardly sees: ‖ΔW·X‖² falls while the levels — and so the bits — stay
those of the same step. Nothing changes in the format: the file stores dead-zone levels at
the tensor's step, only other ones.

Where it applies: a Conv (any groups; the input unfolded into windows), a Gemm or a MatMul
whose weight is a float32 tensor of the top-level graph used by that layer alone (the
writer quantizes the fed-back values again at their step: in float16, a level beyond 2¹⁰
could come back as its neighbour). H is summed over
at most :data:`ROWS_PER_SAMPLE` input rows per sample (windows, tokens), from the original
model's layer inputs. Whether the feedback helps is checked per tensor before it is used:
each half of the samples must give H :data:`MIN_ROWS_PER_COLUMN` rows per column (a layer
after global pooling sees one row per sample: its rounding would fit the samples), and,
rounded with H of the first half, its error is measured under H of the second half
(:attr:`ErrorFeedback.gain`, the error relative to plain rounding); a tensor where it does
not hold up (:data:`MAX_GAIN`) is rounded plainly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(4000, 3)) @ rng.normal(size=(3, 8))   # correlated inputs
>>> x += 0.1 * rng.normal(size=x.shape)
>>> w = rng.normal(size=(1, 16, 8))                             # one group, 16 rows, 8 columns
>>> h = (x.T @ x)[None]
>>> plain = np.round(w / 0.5) * 0.5
>>> fed = round_with_feedback(w, upper_inverse_factor(h), 0.5, 0.5)
>>> bool(np.all(np.abs(fed / 0.5 - np.round(fed / 0.5)) < 1e-9))  # still on the grid
True
>>> bool(output_error(w - fed, h) < 0.5 * output_error(w - plain, h))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxz.codecs.deadzone import dequantize, quantize
from onnxz.verifier import ModelFailed, ReferenceRun
from onnxz.walker import Path, consumers, float_tensor_paths, resolve

ROWS_PER_SAMPLE = 512
"""Input rows (a Conv's windows, a MatMul's tokens) per sample that H sums, chosen evenly."""

MAX_COLUMNS = 4096
"""Layers with more input columns are rounded plainly (H would take 128 MiB)."""

DAMPING = 0.01
"""Added to H's diagonal, as a share of its mean: keeps H⁻¹ stable where inputs are
(nearly) linearly dependent, as GPTQ does."""

MIN_ROWS_PER_COLUMN = 8
"""A layer gets the feedback only if each half of the samples gives H at least this many
input rows per column. With fewer (a layer after global pooling: one row per sample) the
rounding fits the calibration samples instead of the layer: at the coarse steps it then
allows, their outputs stay close while other inputs' do not (PP-LCNet's 1280×512 head at
1.8 bits per weight: 44 dB output SNR on the calibration images, 35 dB on held-out ones)."""

MAX_LEVEL = 1 << 21
"""Levels stay below this (at the finest step priced) where the feedback is used: the
writer quantizes the fed-back float32 values again, exact for levels below 2²²."""

MAX_GAIN = 0.9
"""The feedback is used on a tensor only if its output error on the held-back half of the
samples is below this share of plain rounding's (0.46 dB)."""

GAIN_STEP = 1 / 8
"""Relative step at which the gain decides whether a tensor gets the feedback (rate
control's sensitivity probe)."""

BLOCK = 128
"""Columns rounded together before the columns after them are updated at once."""

GAIN_OCTAVES = 1.0
"""The gains are measured at steps this many octaves apart (the others take the nearest)."""

GAIN_ROWS = 256
"""Rows of the weight matrix (over all groups) the gains are measured on."""


@dataclass(frozen=True)
class LinearLayer:
    """A weight as a linear map of its layer's input: ``form`` ``conv`` (weight (O, C/g,
    k…), input (N, C, …)), ``gemm_t`` (weight (N, K)) or ``matmul`` (weight (K, N), input
    channels last); ``source`` the input value; for a Conv its ``groups``, ``strides``,
    ``pads`` (begins then ends) and ``dilations``."""

    weight: Path
    form: str
    source: str
    weight_shape: tuple[int, ...]
    groups: int = 1
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()

    @property
    def columns(self) -> int:
        """Input columns of one row of the weight matrix."""
        if self.form == "conv":
            return int(np.prod(self.weight_shape[1:]))
        return self.weight_shape[1] if self.form == "gemm_t" else self.weight_shape[0]

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight (its own shape, or flat) as (groups, rows, columns)."""
        if self.form == "conv":
            return w.reshape(self.groups, self.weight_shape[0] // self.groups, -1)
        w = w.reshape(self.weight_shape)
        return (w if self.form == "gemm_t" else w.T)[None]

    def weight_of(self, m: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`matrix`: the weight's own shape, flat."""
        if self.form == "conv":
            return m.reshape(-1)
        return (m[0] if self.form == "gemm_t" else m[0].T).reshape(-1)

    def input_rows(self, x: np.ndarray, limit: int) -> np.ndarray:
        """At most ``limit`` rows of the input as the weight matrix sees it: (groups,
        rows, columns), float32 (H's products are summed in float64 per sample)."""
        if self.form != "conv":
            rows = x.reshape(-1, x.shape[-1]) if self.form == "matmul" else x.reshape(
                -1, self.columns)
            rows = rows[_evenly(rows.shape[0], limit)].astype(np.float32)
            return rows[None]
        kernel = self.weight_shape[2:]
        axes = tuple(range(2, 2 + len(kernel)))
        half = len(kernel)
        padded = np.pad(x, [(0, 0), (0, 0)] + [(self.pads[i], self.pads[i + half])
                                                for i in range(half)])
        extent = [(k - 1) * d + 1 for k, d in zip(kernel, self.dilations, strict=True)]
        windows = np.lib.stride_tricks.sliding_window_view(padded, extent, axis=axes)
        windows = windows[(slice(None), slice(None),
                           *(slice(None, None, s) for s in self.strides),
                           *(slice(None, None, d) for d in self.dilations))]
        # (N, C, out…, k…) -> (positions, C, k…) at evenly chosen positions, gathered
        # without unfolding the others
        grid = (windows.shape[0], *windows.shape[2 : 2 + half])
        at = np.unravel_index(_evenly(int(np.prod(grid)), limit), grid)
        chosen = windows[(at[0], slice(None), *at[1:])].astype(np.float32)
        per_group = chosen.shape[1] // self.groups
        return chosen.reshape(chosen.shape[0], self.groups, per_group * int(np.prod(kernel))
                              ).transpose(1, 0, 2)


def _evenly(count: int, limit: int) -> np.ndarray:
    return np.arange(count) if count <= limit else np.linspace(0, count - 1, limit).astype(
        np.intp)


def find_linear_layers(model: onnx.ModelProto) -> list[LinearLayer]:
    """The Conv, Gemm and MatMul layers of the top-level graph whose weight is a float
    tensor of the graph (initializer or Constant, not bfloat16) that no other node reads."""
    paths = float_tensor_paths(model)
    uses = consumers(model)
    found = []
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in paths or len(
                uses.get(node.input[1], [])) != 1:
            continue
        path = paths[node.input[1]]
        shape = tuple(int(d) for d in resolve(model, path).dims)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and len(shape) >= 3:
            groups, half = int(attrs.get("group", 1)), len(shape) - 2
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID",
                                                         "VALID") or shape[0] % groups:
                continue
            found.append(LinearLayer(
                path, "conv", node.input[0], shape, groups,
                tuple(attrs.get("strides", [1] * half)),
                tuple(attrs.get("pads", [0] * 2 * half)),
                tuple(attrs.get("dilations", [1] * half))))
        elif node.op_type == "Gemm" and len(shape) == 2 and not attrs.get("transA", 0):
            found.append(LinearLayer(path, "gemm_t" if attrs.get("transB", 0) else "matmul",
                                     node.input[0], shape))
        elif node.op_type == "MatMul" and len(shape) == 2:
            found.append(LinearLayer(path, "matmul", node.input[0], shape))
    return [layer for layer in found if layer.columns <= MAX_COLUMNS]


@dataclass
class InputMoments:
    """A layer's H = Σ x·xᵀ over its input rows, for the first and for the second half of
    the samples ((groups, columns, columns) float64 each), and how many rows each half
    summed (the fewer of the two)."""

    first: np.ndarray
    second: np.ndarray
    rows: int = 0

    @property
    def enough(self) -> bool:
        """Whether each half has :data:`MIN_ROWS_PER_COLUMN` rows per input column."""
        return self.rows >= MIN_ROWS_PER_COLUMN * self.first.shape[-1]


def input_moments(model: onnx.ModelProto, reference: ReferenceRun,
                  layers: Sequence[LinearLayer]) -> dict[Path, InputMoments]:
    """Per layer (by weight path), its :class:`InputMoments` on the samples. Empty if the
    model fails to run with its layer inputs as outputs, or has fewer than 2 samples; a
    layer whose input does not fit its weight (a rank or size the form does not expect) is
    left out."""
    count = len(reference.feeds)
    if count < 2 or not layers:
        return {}
    sources = list(dict.fromkeys(layer.source for layer in layers))
    own = len(reference.output_specs)
    moments = {layer.weight: InputMoments(*(np.zeros((layer.groups, layer.columns,
                                                      layer.columns)) for _ in range(2)))
               for layer in layers}
    rows = {layer.weight: [0, 0] for layer in layers}
    try:
        for i, outputs in enumerate(reference.stream(model, extra_outputs=sources)):
            values = dict(zip(sources, outputs[own:], strict=True))
            half = 0 if i < count // 2 else 1
            for layer in layers:
                if layer.weight not in moments:
                    continue
                try:
                    x = layer.input_rows(np.asarray(values[layer.source]), ROWS_PER_SAMPLE)
                except ValueError:  # e.g. a MatMul whose input is a vector
                    del moments[layer.weight]
                    continue
                found = moments[layer.weight]
                (found.first if half == 0 else found.second)[...] += x.transpose(0, 2, 1) @ x
                rows[layer.weight][half] += x.shape[1]
    except ModelFailed:
        return {}
    for path, found in moments.items():
        found.rows = min(rows[path])
    return moments


def upper_inverse_factor(h: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of (H + damping)⁻¹ per group (GPTQ's ``Hinv``); a column
    no input reached gets the damping alone (it is rounded plainly)."""
    h = h.copy()
    for g in range(h.shape[0]):
        diagonal = np.diagonal(h[g])
        mean = float(diagonal.mean())
        h[g][np.diag_indices_from(h[g])] += DAMPING * mean if mean > 0 else 1.0
        dead = np.diagonal(h[g]) <= 0
        h[g][dead, dead] = 1.0
    inverse = np.linalg.inv(h)
    return np.linalg.cholesky(inverse).transpose(0, 2, 1)


def round_with_feedback(w: np.ndarray, factor: np.ndarray, step: float,
                        deadzone: float) -> np.ndarray:
    """Dead-zone reconstructions (float64, like ``w``: (groups, rows, columns)) of the
    weights, column by column, each column's rounding error fed forward to the columns
    after it through ``factor`` (:func:`upper_inverse_factor`)."""
    w = np.array(w, dtype=np.float64)
    out = np.empty_like(w)
    columns = w.shape[2]
    for start in range(0, columns, BLOCK):  # GPTQ's lazy batches: the rest once per block
        stop = min(start + BLOCK, columns)
        block = w[:, :, start:stop]
        errors = np.empty_like(block)
        for i in range(stop - start):
            column, at = block[:, :, i], start + i
            rounded = dequantize(quantize(column, step, deadzone), step, deadzone)
            out[:, :, at] = rounded
            errors[:, :, i] = (column - rounded) / factor[:, at, at][:, None]
            block[:, :, i + 1:] -= errors[:, :, i, None] * factor[:, None, at, at + 1:stop]
        w[:, :, stop:] -= errors @ factor[:, start:stop, stop:]
    return out


def output_error(error: np.ndarray, h: np.ndarray) -> float:
    """Σ over groups of trace(E·H·Eᵀ): the squared output error of weight error ``E``
    (groups, rows, columns) on inputs whose moments are ``h``."""
    return float(np.sum((error @ h) * error))


@dataclass
class ErrorFeedback:
    """One weight tensor's calibration-aware rounding: its layer, the factor of its inputs'
    H (both halves), and per relative step its ``gains``: the layer's output error with
    feedback relative to plain rounding's, on the half of the samples that the rounding
    did not see (see the module docstring), measured on up to :data:`GAIN_ROWS` rows per
    group of the weight matrix."""

    layer: LinearLayer
    factor: np.ndarray
    gains: dict[float, float]

    @classmethod
    def measure(cls, layer: LinearLayer, values: np.ndarray, spread: float,
                moments: InputMoments, steps_rel: Sequence[float]) -> ErrorFeedback | None:
        """The feedback for ``values`` (float64, flat) with its gain at each of
        ``steps_rel``, if ``moments`` has enough rows and the gain at :data:`GAIN_STEP`
        is below :data:`MAX_GAIN`; else None."""
        if not (moments.enough and spread > 0 and steps_rel
                and np.abs(values).max() < MAX_LEVEL * min(steps_rel) * spread
                and np.trace(moments.second, axis1=1, axis2=2).any()):
            return None
        w = layer.matrix(values)
        w = w[:, _evenly(w.shape[1], max(1, GAIN_ROWS // layer.groups)), :]
        first = upper_inverse_factor(moments.first)

        def gain(step_rel: float) -> float:
            step = step_rel * spread
            plain = output_error(w - dequantize(quantize(w, step, 0.5), step, 0.5),
                                 moments.second)
            fed = output_error(w - round_with_feedback(w, first, step, 0.5), moments.second)
            return fed / plain if plain > 0 else 1.0

        if not gain(GAIN_STEP) < MAX_GAIN:
            return None
        measured = sorted({s for s in steps_rel
                           if abs(math.log2(s) / GAIN_OCTAVES - round(math.log2(s) / GAIN_OCTAVES))
                           < 1e-9} or set(steps_rel))
        gains = {s: min(gain(s), 1.0) for s in measured}
        return cls(layer, upper_inverse_factor(moments.first + moments.second), gains)

    def gain(self, step_rel: float) -> float:
        """The gain at the measured step nearest ``step_rel`` (in ratio)."""
        nearest = min(self.gains, key=lambda s: abs(np.log(s / step_rel)))
        return self.gains[nearest]

    def reconstruction(self, values: np.ndarray, step: float, deadzone: float) -> np.ndarray:
        """The tensor's dead-zone reconstruction (float64, flat) at ``step``, with feedback."""
        return self.layer.weight_of(round_with_feedback(self.layer.matrix(values),
                                                        self.factor, step, deadzone))
