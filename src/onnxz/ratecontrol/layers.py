"""The linear layers of a model as calibration-aware rounding (:mod:`.feedback`) sees them:
each weight as a matrix over its layer's input columns, the value that input is, and the
second moments H = Σ x·xᵀ of those inputs on the calibration samples.

Conv (any groups; the input unfolded into windows), Gemm and MatMul layers, and the input
(W, on x) and hidden (R, on the state before each step; forward layers) weights of LSTM,
GRU and RNN layers — reached through the gate-reordering Slices and Concats of PyTorch's
export, which keep each row whole — whose weight is a float tensor used by that layer
alone, in the top-level graph or in the branch of an If that every sample takes
(:func:`inline_taken_branches`: onnxruntime returns only top-level values).

>>> import onnx
>>> from onnx import TensorProto, helper, numpy_helper
>>> import numpy as np
>>> w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
>>> graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
>>> (layer,) = find_linear_layers(helper.make_model(graph))
>>> layer.form, layer.source, layer.columns   # y = x·w: 4 input columns per output
('matmul', 'x', 4)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
from onnx import helper

from onnxz.inputs import RECURRENT_OPS
from onnxz.verifier import ModelFailed, ReferenceRun
from onnxz.walker import (
    Path,
    constant_values,
    consumers,
    float_tensor_paths,
    graph_at,
    graph_constants,
    node_attributes,
    resolve,
)

DAMPING = 0.01
"""Added to H's diagonal, as a share of its mean: keeps H⁻¹ stable where inputs are
(nearly) linearly dependent, as GPTQ does."""

ROWS_PER_SAMPLE = 512
"""Input rows (a Conv's windows, a MatMul's tokens) per sample that H sums, chosen evenly."""

MAX_COLUMNS = 4096
"""Layers with more input columns are rounded plainly (H would take 128 MiB)."""

MIN_ROWS_PER_COLUMN = 2
"""A layer gets the feedback only if each half of the samples gives H at least this many
input rows per column: with fewer, H is interpolated rather than estimated (at twice as
many rows as columns the sample H's smallest eigenvalue is still about 9% of the true
one, Marchenko–Pastur), and the rounding fits the samples (PP-LCNet's pooled 1280×512
head, 0.03 rows per column: 1.8 bits per weight at 44 dB output SNR on the calibration
images, 35 dB on held-out ones)."""


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

    damping: ClassVar[float] = DAMPING

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
            rows = rows[evenly_spaced(rows.shape[0], limit)].astype(np.float32)
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
        at = np.unravel_index(evenly_spaced(int(np.prod(grid)), limit), grid)
        chosen = windows[(at[0], slice(None), *at[1:])].astype(np.float32)
        per_group = chosen.shape[1] // self.groups
        return chosen.reshape(chosen.shape[0], self.groups, per_group * int(np.prod(kernel))
                              ).transpose(1, 0, 2)


def evenly_spaced(count: int, limit: int) -> np.ndarray:
    """``limit`` indices spread evenly over ``range(count)`` (all of them if fewer)."""
    return np.arange(count) if count <= limit else np.linspace(0, count - 1, limit).astype(
        np.intp)


@dataclass(frozen=True)
class InlinedModel:
    """A model with branches in line (:func:`inline_taken_branches`; the model itself if
    none is) and the
    paths, in the original, of the graphs whose nodes are now in its top level
    (``("graph",)`` first)."""

    model: onnx.ModelProto
    graphs: tuple[Path, ...]


def find_linear_layers(model: onnx.ModelProto, inlined: InlinedModel | None = None
                       ) -> list[LinearLayer]:
    """The Conv, Gemm and MatMul layers, and the W and R weights of LSTM, GRU and RNN layers,
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
        attrs = node_attributes(node)
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
    found += _recurrent_weights(model, graphs, paths, uses)
    return [layer for layer in found if layer.columns <= MAX_COLUMNS]


LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"}) | RECURRENT_OPS

ROW_OPS = frozenset({"Identity", "Slice", "Concat", "Unsqueeze"})
"""Ops that may stand between a weight and a recurrent layer's W: with the last axis (the
input's) left whole, each row of W stays a row of the weight (gates reordered, a
direction axis added), and a row's output error depends on the inputs alone."""


def _recurrent_weights(model: onnx.ModelProto, graphs: Sequence[Path],
                       paths: dict[str, Path], uses: dict) -> list[LinearLayer]:
    """The weights W (on x) and R (on the state before each step; forward layers with an
    initial state and output Y) of the LSTM, GRU and RNN layers of ``graphs``, each
    reached through :data:`ROW_OPS` as rows × input size: a ``gemm_t`` layer."""
    nodes = [node for graph in graphs for node in graph_at(model, graph).node]
    producers = {name: node for node in nodes for name in node.output}
    constants = {name: t for graph in graphs for name, t in graph_constants(model, graph).items()}
    ranks = {name: len(resolve(model, path).dims) for name, path in paths.items()}
    found = []
    for node in nodes:
        if node.op_type not in RECURRENT_OPS or len(node.input) < 2:
            continue
        attrs = node_attributes(node)
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
    attrs = node_attributes(node)

    def ints(index: int, attribute: str) -> list[int] | None:
        if attribute in attrs:
            return [int(v) for v in attrs[attribute]]
        if len(node.input) > index and node.input[index]:
            tensor = constants.get(node.input[index])
            values = None if tensor is None else constant_values(tensor)
            return None if values is None else [int(v) for v in values.reshape(-1)]
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
    fails to run. The model is copied only if a branch goes in line."""
    flat = model
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
            if flat is model:
                flat = onnx.ModelProto()
                flat.CopyFrom(model)
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


def output_error(error: np.ndarray, h: np.ndarray) -> float:
    """Σ over groups of trace(E·H·Eᵀ): the squared output error of weight error ``E``
    (groups, rows, columns) on inputs whose moments are ``h``."""
    return float(np.sum((error @ h) * error))


@dataclass
class InputMoments:
    """A layer's H = Σ x·xᵀ over its input rows, for the first and for the second half of
    the samples ((groups, columns, columns) float64 each), and how many rows each half
    summed (the fewer of the two)."""

    first: np.ndarray
    second: np.ndarray
    rows: int = 0

    whole_matrix: ClassVar[bool] = False
    """Whether :meth:`error` needs every row of the weight matrix (not a sample of them)."""

    @property
    def enough(self) -> bool:
        """Whether each half has :data:`MIN_ROWS_PER_COLUMN` rows per input column."""
        return self.rows >= MIN_ROWS_PER_COLUMN * self.first.shape[-1]

    def error(self, error: np.ndarray, half: int) -> float:
        """The squared output error of weight error ``error`` (as the layer's matrix) on the
        first (0) or second (1) half of the samples."""
        return output_error(error, self.second if half else self.first)


def sample_halves(model: onnx.ModelProto, reference: ReferenceRun, values: Sequence[str]
                  ) -> Iterator[tuple[int, list[np.ndarray], dict[str, np.ndarray]]]:
    """Per sample of ``reference``, in order (one run of ``model`` each): the half of the
    samples it belongs to (0: the first ``count // 2``), the model's own outputs, and
    ``values`` (extra outputs) by name."""
    count, own = len(reference.feeds), len(reference.output_specs)
    for i, outputs in enumerate(reference.stream(model, extra_outputs=values)):
        yield (0 if i < count // 2 else 1), outputs[:own], dict(
            zip(values, outputs[own:], strict=True))


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
    moments = {layer.weight: InputMoments(*(np.zeros((layer.groups, layer.columns,
                                                      layer.columns)) for _ in range(2)))
               for layer in layers}
    rows = {layer.weight: [0, 0] for layer in layers}
    try:
        for half, _, values in sample_halves(model, reference, sources):
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
