"""Calibration-aware rounding: choose each weight's level with the rounding errors of the
weights before it fed back through the layer's inputs (GPTQ, Frantar et al. 2022).

A linear layer's output error is ΔW·x, not ΔW alone. With H = Σ x·xᵀ over the calibration
inputs (per input column of the weight matrix), rounding the columns one at a time and
moving each column's rounding error onto the columns not yet rounded, weighted by H⁻¹,
leaves an error that x hardly sees: ‖ΔW·X‖² falls while the levels — and so the bits — stay
those of the same step. Nothing changes in the format: the file stores dead-zone levels at
the tensor's step, only other ones.

Where it applies: a Conv (any groups; the input unfolded into windows), a Gemm or a
MatMul, and the input (W, on x) and hidden (R, on the state before each step; forward
layers) weights of an LSTM, GRU or RNN — the weight reached through gate-reordering Slices
and Concats that keep its rows whole — whose weight is a float32 tensor used by that layer
alone (the writer quantizes the fed-back values again at their step: in float16, a level
beyond 2¹⁰ could come back as its neighbour), in the top-level graph or in the branch of
an If that every sample takes (:func:`inline_taken_branches`). H is summed over
at most :data:`ROWS_PER_SAMPLE` input rows per sample (windows, tokens), from the original
model's layer inputs. Whether the feedback helps is checked per tensor before it is used:
each half of the samples must give H :data:`MIN_ROWS_PER_COLUMN` rows per column (a layer
after global pooling sees one row per sample: its rounding would fit the samples), and,
rounded with H of the first half, its error is measured under H of the second half
(:attr:`ErrorFeedback.gain`, the error relative to plain rounding) and of the first; a
tensor where it does not hold up (:data:`MAX_GAIN`), or holds up far better on the samples
it saw (:data:`MAX_OPTIMISM`), is rounded plainly.

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
from onnxz.walker import Path, consumers, float_tensor_paths, graph_at, resolve

ROWS_PER_SAMPLE = 512
"""Input rows (a Conv's windows, a MatMul's tokens) per sample that H sums, chosen evenly."""

MAX_COLUMNS = 4096
"""Layers with more input columns are rounded plainly (H would take 128 MiB)."""

DAMPING = 0.01
"""Added to H's diagonal, as a share of its mean: keeps H⁻¹ stable where inputs are
(nearly) linearly dependent, as GPTQ does."""

MIN_ROWS_PER_COLUMN = 2
"""A layer gets the feedback only if each half of the samples gives H at least this many
input rows per column: with fewer, H is interpolated rather than estimated (at twice as
many rows as columns the sample H's smallest eigenvalue is still about 9% of the true
one, Marchenko–Pastur), and the rounding fits the samples (PP-LCNet's pooled 1280×512
head, 0.03 rows per column: 1.8 bits per weight at 44 dB output SNR on the calibration
images, 35 dB on held-out ones)."""

MAX_LEVEL = 1 << 21
"""Levels stay below this (at the finest step priced) where the feedback is used: the
writer quantizes the fed-back float32 values again, exact for levels below 2²²."""

MAX_GAIN = 0.9
"""The feedback is used on a tensor only if its output error on the held-back half of the
samples is below this share of plain rounding's (0.46 dB)."""

MAX_OPTIMISM = 2.0
"""The feedback is used on a tensor only if its gain on the half of the samples it was
rounded with is at most this much better than on the other half (3 dB). Rate control
checks its files on the calibration samples, which the rounding has seen: where it fits
them far better than other inputs (a squeeze-excitation layer's pooled inputs: 0.13
against 0.90 on PP-LCNet at 3.9 rows per column), those checks would promise what
held-out inputs do not get."""

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
    ``pads`` (begins then ends) and ``dilations``; for a recurrent layer's hidden weights
    (R), ``source`` is the initial state and ``previous`` the layer's output Y, whose
    steps but the last are the next steps' inputs."""

    weight: Path
    form: str
    source: str
    weight_shape: tuple[int, ...]
    groups: int = 1
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    previous: str = ""

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

    def input_rows(self, x: np.ndarray, limit: int, previous: np.ndarray | None = None
                   ) -> np.ndarray:
        """At most ``limit`` rows of the input as the weight matrix sees it: (groups,
        rows, columns), float32 (H's products are summed in float64 per sample); with
        ``previous`` (the value of :attr:`previous`) the steps of the output before the
        last are rows too."""
        if self.form != "conv":
            rows = x.reshape(-1, x.shape[-1]) if self.form == "matmul" else x.reshape(
                -1, self.columns)
            if previous is not None:
                rows = np.concatenate([rows, previous[:-1].reshape(-1, self.columns)])
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


@dataclass(frozen=True)
class InlinedModel:
    """A copy of a model with branches in line (:func:`inline_taken_branches`) and the
    paths, in the original, of the graphs whose nodes are now in its top level
    (``("graph",)`` first)."""

    model: onnx.ModelProto
    graphs: tuple[Path, ...]


def find_linear_layers(model: onnx.ModelProto, inlined: InlinedModel | None = None
                       ) -> list[LinearLayer]:
    """The Conv, Gemm and MatMul layers, and the input weights of LSTM, GRU and RNN layers,
    of the top-level graph (and of the branches ``inlined`` has in line), whose weight is a
    float tensor of those graphs (initializer or Constant, not bfloat16) that no other node
    reads (in ``inlined``'s model: a branch no sample takes does not count)."""
    graphs = inlined.graphs if inlined is not None else (("graph",),)
    paths = {name: path for graph in graphs for name, path in
             float_tensor_paths(model, graph).items()}
    uses = consumers(inlined.model if inlined is not None else model)
    found = []
    for node in (node for graph in graphs for node in graph_at(model, graph).node):
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
    found += _recurrent_input_weights(model, graphs, paths, uses)
    return [layer for layer in found if layer.columns <= MAX_COLUMNS]


RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})

LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"}) | RECURRENT_OPS

ROW_OPS = frozenset({"Identity", "Slice", "Concat", "Unsqueeze"})
"""Ops that may stand between a weight and a recurrent layer's W: with the last axis (the
input's) left whole, each row of W stays a row of the weight (gates reordered, a
direction axis added), and a row's output error depends on the inputs alone."""


def _recurrent_input_weights(model: onnx.ModelProto, graphs: Sequence[Path],
                             paths: dict[str, Path], uses: dict) -> list[LinearLayer]:
    """The input weights W (rows × input size, through :data:`ROW_OPS`) of the LSTM, GRU
    and RNN layers of ``graphs``: W·x for every x of the sequence, a ``gemm_t`` layer."""
    nodes = [node for graph in graphs for node in graph_at(model, graph).node]
    producers = {name: node for node in nodes for name in node.output}
    constants = {**{t.name: t for graph in graphs for t in graph_at(model, graph).initializer},
                 **{node.output[0]: node.attribute[0].t for node in nodes
                    if node.op_type == "Constant" and node.output and node.attribute
                    and node.attribute[0].name == "value"}}
    ranks = {name: len(resolve(model, path).dims) for name, path in paths.items()}
    found = []
    for node in nodes:
        if node.op_type not in RECURRENT_OPS or len(node.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        forward = attrs.get("direction", b"forward") in (b"forward", "forward")
        inputs = [(1, node.input[0], "")]  # W reads x; R reads the state before each step
        if forward and len(node.input) > 5 and node.input[2] and node.input[5] and node.output[0]:
            inputs.append((2, node.input[5], node.output[0]))
        for index, source, previous in inputs:
            chain: list[onnx.NodeProto] = []
            traced = _rows_of(node.input[index], producers, ranks, constants, chain)
            if traced is None or len(traced[0]) != 1:
                continue
            (name,) = traced[0]
            readers = {n.output[0] for n in (*chain, node)}
            values = [name, *(out for n in chain for out in n.output)]
            if any(not user.output or user.output[0] not in readers
                   for value in values for user, _ in uses.get(value, [])):
                continue  # the weight (or a piece of it) is read elsewhere too
            path = paths[name]
            dims = tuple(int(d) for d in resolve(model, path).dims)
            if len(dims) >= 2:
                found.append(LinearLayer(path, "gemm_t", source,
                                         (math.prod(dims[:-1]), dims[-1]), previous=previous))
    return found


def _rows_of(name: str, producers: dict, ranks: dict[str, int], constants: dict,
             chain: list[onnx.NodeProto], depth: int = 0) -> tuple[set[str], int] | None:
    """The weights (of ``ranks``: name -> rank) whose rows make up value ``name``, and its
    rank, if only :data:`ROW_OPS` that keep the last axis whole make it (those nodes are
    added to ``chain``)."""
    if name in ranks:
        return {name}, ranks[name]
    node = producers.get(name)
    if node is None or node.op_type not in ROW_OPS or depth > 16:
        return None
    data = list(node.input) if node.op_type == "Concat" else node.input[:1]
    traced = [_rows_of(x, producers, ranks, constants, chain, depth + 1) for x in data]
    if any(t is None for t in traced) or len({t[1] for t in traced}) != 1:
        return None
    out_rank = _row_op_rank(node, traced[0][1], constants)
    if out_rank is None:
        return None
    chain.append(node)
    return set().union(*(t[0] for t in traced)), out_rank


def _row_op_rank(node: onnx.NodeProto, rank: int, constants: dict) -> int | None:
    """The rank of a :data:`ROW_OPS` node's output, or None if it touches the last axis
    (or its axes are not constants)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def ints(index: int, attribute: str) -> list[int] | None:
        if attribute in attrs:
            return [int(v) for v in attrs[attribute]]
        if len(node.input) > index and node.input[index]:
            tensor = constants.get(node.input[index])
            return None if tensor is None else [
                int(v) for v in onnx.numpy_helper.to_array(tensor).reshape(-1)]
        return []

    if node.op_type == "Identity":
        return rank
    if node.op_type == "Concat":
        return rank if int(attrs.get("axis", 0)) % rank != rank - 1 else None
    if node.op_type == "Unsqueeze":
        axes = ints(1, "axes")
        out = rank + len(axes) if axes else None
        return out if out and all(a % out != out - 1 for a in axes) else None
    axes = ints(3, "axes")  # Slice (opset ≥ 10: inputs; axes default to the first ones)
    if axes == []:
        starts = ints(1, "starts")
        axes = None if starts is None else list(range(len(starts)))
    return rank if axes is not None and all(a % rank != rank - 1 for a in axes) else None

MAX_INLINED_DEPTH = 4
"""Nested Ifs followed at most this deep (one run over the samples per level)."""


def inline_taken_branches(model: onnx.ModelProto, reference: ReferenceRun) -> InlinedModel:
    """``model`` with every If that holds a linear layer and takes the same branch on every
    sample replaced by that branch's nodes (its outputs passed on by Identity nodes), as
    often as that uncovers more. onnxruntime returns only top-level values, so this is how
    a layer inside a branch (silero-vad's sample-rate switch) shows its inputs. An If
    whose branch would reuse a name of the graph stays; so does everything if the model
    fails to run."""
    flat = onnx.ModelProto()
    flat.CopyFrom(model)
    graphs: list[Path] = [("graph",)]
    where = {node.output[0]: ("graph", "node", n)
             for n, node in enumerate(model.graph.node) if node.output}
    for _ in range(MAX_INLINED_DEPTH):
        ifs = [node for node in flat.graph.node if node.op_type == "If" and node.output
               and node.output[0] in where and _holds_linear_layers(node)]
        if not ifs:
            break
        try:
            taken = _branches_taken(flat, reference, ifs)
        except ModelFailed:
            break
        chosen = []  # read before the graph changes under the nodes
        for node, branch in zip(ifs, taken, strict=True):
            if branch is not None:
                a = next(i for i, attr in enumerate(node.attribute) if attr.name == branch)
                inlined = (*where[node.output[0]], "attribute", a, "g")
                nodes = {sub.output[0]: (*inlined, "node", n)
                         for n, sub in enumerate(node.attribute[a].g.node) if sub.output}
                chosen.append((node.output[0], branch, inlined, nodes))
        for node in ifs:  # asked once
            del where[node.output[0]]
        for output, branch, inlined, nodes in chosen:
            if _inline(flat, output, branch):
                graphs.append(inlined)
                where.update(nodes)
    return InlinedModel(flat, tuple(graphs))


def _holds_linear_layers(node: onnx.NodeProto) -> bool:
    return any(sub.op_type in LINEAR_OPS or _holds_linear_layers(sub)
               for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH
               for sub in attr.g.node)


def _branches_taken(model: onnx.ModelProto, reference: ReferenceRun,
                    ifs: Sequence[onnx.NodeProto]) -> list[str | None]:
    """Per If, ``then_branch`` or ``else_branch`` if it takes that one on every sample."""
    conditions = [node.input[0] for node in ifs]
    own = len(reference.output_specs)
    seen: list[set[bool]] = [set() for _ in ifs]
    for outputs in reference.stream(model, extra_outputs=conditions):
        for found, value in zip(seen, outputs[own:], strict=True):
            found.update(bool(v) for v in np.asarray(value).reshape(-1))
    return [("then_branch" if True in found else "else_branch") if len(found) == 1 else None
            for found in seen]


def _inline(model: onnx.ModelProto, output: str, branch_name: str) -> bool:
    """Replace the If of the top-level graph whose first output is ``output`` by the nodes
    of its branch ``branch_name``, unless a name the branch defines is already defined in
    the graph."""
    graph = model.graph
    at = next(i for i, node in enumerate(graph.node) if node.output and node.output[0] == output)
    node = onnx.NodeProto()
    node.CopyFrom(graph.node[at])
    branch = next(attr.g for attr in node.attribute if attr.name == branch_name)
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {
        name for n in graph.node for name in n.output}
    own = [t.name for t in branch.initializer] + [name for n in branch.node for name in n.output]
    if defined & set(own):
        return False
    passed_on = [helper.make_node("Identity", [out.name], [name])
                 for out, name in zip(branch.output, node.output, strict=True)]
    graph.initializer.extend(branch.initializer)
    after = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node[at + 1:]]
    del graph.node[at:]
    graph.node.extend([*branch.node, *passed_on, *after])
    return True


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
    sources = list(dict.fromkeys(name for layer in layers
                                 for name in (layer.source, layer.previous) if name))
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
                    x = layer.input_rows(np.asarray(values[layer.source]), ROWS_PER_SAMPLE,
                                         np.asarray(values[layer.previous])
                                         if layer.previous else None)
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
        is below :data:`MAX_GAIN` and within :data:`MAX_OPTIMISM` of the gain on the
        samples rounded with; else None."""
        if not (moments.enough and spread > 0 and steps_rel
                and np.abs(values).max() < MAX_LEVEL * min(steps_rel) * spread
                and np.trace(moments.second, axis1=1, axis2=2).any()):
            return None
        w = layer.matrix(values)
        w = w[:, _evenly(w.shape[1], max(1, GAIN_ROWS // layer.groups)), :]
        first = upper_inverse_factor(moments.first)

        def gain(step_rel: float, h: np.ndarray = moments.second) -> float:
            step = step_rel * spread
            plain = output_error(w - dequantize(quantize(w, step, 0.5), step, 0.5), h)
            fed = output_error(w - round_with_feedback(w, first, step, 0.5), h)
            return fed / plain if plain > 0 else 1.0

        held_out = gain(GAIN_STEP)
        if not (held_out < MAX_GAIN and held_out <= MAX_OPTIMISM * gain(GAIN_STEP,
                                                                         moments.first)):
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
