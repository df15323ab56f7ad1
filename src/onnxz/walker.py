"""The ONNX model walker: where tensor payloads live, what they feed, and how to move them.

Weights sit in ``graph.initializer``, in ``Constant`` nodes (and any other tensor-valued
attribute), inside subgraphs of ``If``/``Loop``/``Scan`` at any depth, and in model-local
functions. Each is found as a :class:`TensorSlot` whose ``path`` names protobuf fields and
list indices from the ``ModelProto`` down, e.g. ``("graph", "node", 5, "attribute", 0, "t")``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from onnxz.dtypes import ElementType, element_type
from onnxz.errors import FormatError, InvalidModelError

Path = tuple[str | int, ...]

PATH_FIELDS = frozenset(
    {"graph", "initializer", "node", "attribute", "t", "tensors", "g", "graphs", "functions"}
)
"""Protobuf field names a path may use (anything else is refused by :func:`resolve`)."""

ATTRIBUTE_VALUE_TYPES = {
    "t": AttributeProto.TENSOR, "tensors": AttributeProto.TENSORS,
    "g": AttributeProto.GRAPH, "graphs": AttributeProto.GRAPHS,
}
"""The attribute type that makes each tensor-holding field the attribute's value: a path
steps only into the field its attribute's type selects (SPEC.md §5.1), as the walk does."""

WEIGHT_INPUTS: dict[str, frozenset[int] | None] = {
    "Conv": frozenset({1}),
    "ConvTranspose": frozenset({1}),
    "DeformConv": frozenset({1}),
    "MatMul": frozenset({0, 1}),
    "Gemm": frozenset({0, 1}),
    "LSTM": frozenset({1, 2}),
    "GRU": frozenset({1, 2}),
    "RNN": frozenset({1, 2}),
    "Gather": frozenset({0}),
    "Einsum": None,  # every input
}
"""Inputs that carry learned weight matrices: the tensors a lossy codec may touch."""

PASS_THROUGH: dict[str, frozenset[int] | None] = {
    "Identity": frozenset({0}), "Cast": frozenset({0}), "Reshape": frozenset({0}),
    "Transpose": frozenset({0}), "Squeeze": frozenset({0}), "Unsqueeze": frozenset({0}),
    "Flatten": frozenset({0}), "Slice": frozenset({0}), "Split": frozenset({0}),
    "Concat": None,
}
"""Ops whose outputs carry values of these inputs (None: all) unchanged but rearranged."""

SHAPE_ONLY = frozenset({"Shape", "Size"})

QUANTIZATION_PARAMETERS: dict[str, frozenset[int]] = {
    "QuantizeLinear": frozenset({1, 2}),
    "DequantizeLinear": frozenset({1, 2}),
    "QLinearConv": frozenset({1, 2, 4, 5, 6, 7}),
    "QLinearMatMul": frozenset({1, 2, 4, 5, 6, 7}),
    "MatMulInteger": frozenset({2, 3}),
    "ConvInteger": frozenset({2, 3}),
}
"""Inputs that define an integer grid (scales and zero points) rather than carry weights: a
lossy codec keeps them exact. A quantized model requantizes its activations on grids of
fixed scales, so a scale changed by 2^-11 moves every value near a rounding boundary by a
whole step there, and its outputs by steps that generated inputs do not show (pipecat's
smart-turn v3.2, a QDQ Whisper encoder: its per-channel weight scales rounded to 10
mantissa bits changed 3 of 100 held-out end-of-turn decisions at 16 dB on the logit, for
0.12% of the file)."""


@dataclass(frozen=True)
class TensorSlot:
    """One tensor payload in the model: where it is, the proto, whether it is a weight, and
    whether it is a quantization parameter (:data:`QUANTIZATION_PARAMETERS`)."""

    path: Path
    tensor: TensorProto
    is_weight: bool
    is_quantization_parameter: bool = False


def iter_tensor_slots(model: onnx.ModelProto) -> list[TensorSlot]:
    """Every tensor payload of the model, in a stable depth-first order."""
    uses = consumers(model)
    known: dict[tuple[str, int], bool] = {}
    return [
        TensorSlot(path, tensor, _is_weight(name, uses, known),
                   _is_quantization_parameter(name, uses))
        for path, tensor, source in _find_tensors(model)
        for name in (_value_name(source),)
    ]


def iter_tensors(model: onnx.ModelProto) -> list[tuple[Path, TensorProto]]:
    """The paths and protos of :func:`iter_tensor_slots`, without the weight analysis."""
    return [(path, tensor) for path, tensor, _ in _find_tensors(model)]


Source = str | onnx.NodeProto
"""Where a payload found by the walk comes from: the node whose ``TENSOR`` attribute holds
it, else the name of the value it is (an initializer's; "" in a ``TENSORS`` attribute)."""


def _value_name(source: Source) -> str:
    """The name of the value a payload is: a Constant node's output, an initializer's name
    ("" if it is neither)."""
    if isinstance(source, str):
        return source
    return source.output[0] if source.op_type == "Constant" and source.output else ""


def _find_tensors(model: onnx.ModelProto) -> list[tuple[Path, TensorProto, Source]]:
    """Every payload, its path and :data:`Source` (its value's name is looked up only by
    :func:`iter_tensor_slots`, which needs it)."""
    found: list[tuple[Path, TensorProto, Source]] = []
    _walk_graph(model.graph, ("graph",), found)
    for f_index, function in enumerate(model.functions):
        _walk_nodes(function.node, ("functions", f_index), found)
    return found


def _walk_graph(graph: onnx.GraphProto, path: Path, found: list) -> None:
    for i, tensor in enumerate(graph.initializer[:]):
        found.append(((*path, "initializer", i), tensor, tensor.name))
    _walk_nodes(graph.node, path, found)


_HOLDS_TENSORS = frozenset({AttributeProto.TENSOR, AttributeProto.TENSORS, AttributeProto.GRAPH,
                            AttributeProto.GRAPHS})


def _walk_nodes(nodes: Sequence[onnx.NodeProto], path: Path, found: list) -> None:
    # Repeated fields are walked as lists ([:]): protobuf's containers have no iterator,
    # and iterating one ends in an IndexError with a formatted message (~1,600 instructions
    # a loop: a tenth of finding PP-OCR cls's slots).
    for n, node in enumerate(nodes[:]):
        attributes = node.attribute
        if not attributes:  # many nodes (Add, Relu): spares an iterator each
            continue
        for a, attr in enumerate(attributes[:]):
            kind = attr.type
            if kind not in _HOLDS_TENSORS:  # most attributes: ints, floats, strings
                continue
            if kind == AttributeProto.TENSOR:  # the path in one tuple: most payloads are these
                found.append(((*path, "node", n, "attribute", a, "t"), attr.t, node))
                continue
            here = (*path, "node", n, "attribute", a)
            if kind == AttributeProto.TENSORS:
                for k, tensor in enumerate(attr.tensors[:]):
                    found.append(((*here, "tensors", k), tensor, ""))
            elif kind == AttributeProto.GRAPH:
                _walk_graph(attr.g, (*here, "g"), found)
            else:
                for k, sub in enumerate(attr.graphs[:]):
                    _walk_graph(sub, (*here, "graphs", k), found)


def float_tensor_paths(model: onnx.ModelProto, graph: Path = ("graph",)) -> dict[str, Path]:
    """Value name -> path of the float initializers and Constant tensors (bfloat16 aside)
    of the graph at ``graph`` (the top-level one unless told): where the weights of its
    layers can live."""
    found: dict[str, Path] = {}
    at = graph_at(model, graph)
    for i, tensor in enumerate(at.initializer):
        found[tensor.name] = (*graph, "initializer", i)
    for n, node in enumerate(at.node):
        if node.op_type == "Constant" and node.output:
            for a, attr in enumerate(node.attribute):
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    found[node.output[0]] = (*graph, "node", n, "attribute", a, "t")
    return {name: path for name, path in found.items()
            if (etype := payload_type(resolve(model, path))) is not None and etype.is_float
            and etype.name != "bfloat16"}


def constant_values(tensor: TensorProto) -> np.ndarray | None:
    """A constant's values (a shape, an axis, a bias: what a walk reads to understand the
    graph) as onnx's numpy_helper gives them, or None where they cannot be read: a segment,
    external data, a payload of another size than its shape's, an unknown element type.
    Such a constant is taken as unknown (onnxruntime will say what is wrong with it).

    >>> constant_values(onnx.helper.make_tensor("axes", TensorProto.INT64, [2], [0, 1]))
    array([0, 1])
    >>> bad = onnx.helper.make_tensor("axes", TensorProto.INT64, [2], [0, 1])
    >>> bad.dims[0] = 3
    >>> constant_values(bad) is None
    True
    """
    if tensor.HasField("segment") or tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return onnx.numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        return None


def graph_constants(model: onnx.ModelProto, graph: Path = ("graph",)
                    ) -> dict[str, TensorProto]:
    """The initializers and Constant node values of the graph at ``graph`` (the top-level
    one unless told), by value name."""
    at = graph_at(model, graph)
    found = {t.name: t for t in at.initializer}
    for node in at.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and node.output:
                found[node.output[0]] = attr.t
    return found


def node_attributes(node: onnx.NodeProto) -> dict[str, object]:
    """A node's attributes by name, as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Value name -> (node, input index) of every use, across the graph and its subgraphs."""
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    graph_outputs: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        graph_outputs.update(o.name for o in graph.output)
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name:
                    uses[name].append((node, i))
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    for name in graph_outputs:
        uses[name].append((onnx.NodeProto(op_type="<graph output>"), 0))
    return uses


def _is_weight(name: str, uses: dict, known: dict[tuple[str, int], bool], depth: int = 0
               ) -> bool:
    """True if every use of ``name`` (through pass-through ops) is a weight input.

    ``known`` remembers answers, so that values used many times over (however a graph is
    made) are looked at once per depth, not once per path to them.
    """
    if (name, depth) not in known:
        known[name, depth] = _uses_are_weights(name, uses, known, depth)
    return known[name, depth]


def _uses_are_weights(name: str, uses: dict, known: dict[tuple[str, int], bool], depth: int,
                      skip: frozenset[int] = frozenset()) -> bool:
    if not name or depth > 8 or not uses.get(name):
        return False
    any_weight = False
    for node, index in uses[name]:
        if node.op_type in SHAPE_ONLY or id(node) in skip:
            continue
        if node.op_type == "Loop" and index >= 2:  # a loop-carried value
            if not _carried_weight(node, index, uses, known, depth):
                return False
            any_weight = True
            continue
        if node.op_type in PASS_THROUGH and _takes(PASS_THROUGH[node.op_type], index):
            if not all(_is_weight(out, uses, known, depth + 1) for out in node.output):
                return False
            any_weight = True
            continue
        if node.op_type not in WEIGHT_INPUTS or not _takes(WEIGHT_INPUTS[node.op_type], index):
            return False
        any_weight = True
    return any_weight


def _carried_weight(loop: onnx.NodeProto, index: int, uses: dict,
                    known: dict[tuple[str, int], bool], depth: int) -> bool:
    """True if the value a Loop carries at input ``index`` is a weight: the body passes it on
    unchanged (its output is the body input, or an Identity of it), every other use in the
    body is a weight input, and the Loop's final value of it is unused or a weight. tf2onnx
    carries a Keras LSTM's kernels so (chars2vec's two LSTMs: 1.3M weights that were
    rounded to 10 mantissa bits as non-weights, never quantized)."""
    body = next((a.g for a in loop.attribute if a.name == "body"), None)
    if body is None or index >= len(body.input) or index - 1 >= len(body.output):
        return False
    inner, passed = body.input[index].name, body.output[index - 1].name
    skip = {id(n) for n in body.node
            if n.op_type == "Identity" and list(n.input) == [inner] and n.output[0] == passed}
    if passed == inner:
        skip |= {id(n) for n, _ in uses.get(inner, ()) if n.op_type == "<graph output>"}
    elif not skip:
        return False  # changed in the loop: state, not a weight
    final = loop.output[index - 2] if index - 2 < len(loop.output) else ""
    if final and uses.get(final) and not _is_weight(final, uses, known, depth + 1):
        return False
    return _uses_are_weights(inner, uses, known, depth + 1, frozenset(skip))


def _is_quantization_parameter(name: str, uses: dict) -> bool:
    """True if some node reads ``name`` as a scale or zero point."""
    return any(index in QUANTIZATION_PARAMETERS.get(node.op_type, ())
               for node, index in uses.get(name, ()))


def _takes(inputs: frozenset[int] | None, index: int) -> bool:
    return inputs is None or index in inputs


def resolve(model: onnx.ModelProto, path: Sequence[str | int]) -> TensorProto:
    """The tensor at ``path``; :class:`FormatError` if the path is invalid for this model."""
    found = _follow(model, path)
    if not isinstance(found, TensorProto):
        raise FormatError(f"tensor path {list(path)} does not lead to a tensor")
    return found


def graph_at(model: onnx.ModelProto, path: Sequence[str | int]) -> onnx.GraphProto:
    """The graph at ``path`` (``("graph",)``: the top-level one, or a subgraph's path as
    :func:`iter_tensor_slots` spells it); :class:`FormatError` if there is none."""
    found = _follow(model, path)
    if not isinstance(found, onnx.GraphProto):
        raise FormatError(f"path {list(path)} does not lead to a graph")
    return found


def _follow(model: onnx.ModelProto, path: Sequence[str | int]) -> object:
    obj: object = model
    for step in path:
        if isinstance(step, str) and step in PATH_FIELDS:
            if isinstance(obj, AttributeProto) and obj.type != ATTRIBUTE_VALUE_TYPES.get(step):
                raise FormatError(f"tensor path {list(path)}: attribute {obj.name!r} has type "
                                  f"{obj.type}, so its value is not {step!r}")
            obj = getattr(obj, step, None)
            if obj is None:
                raise FormatError(f"tensor path {list(path)}: no field {step!r} here")
        elif isinstance(step, int) and not isinstance(step, bool):
            if not hasattr(obj, "__len__") or not 0 <= step < len(obj):  # type: ignore[arg-type]
                raise FormatError(f"tensor path {list(path)}: index {step} out of range")
            obj = obj[step]  # type: ignore[index]
        else:
            raise FormatError(f"tensor path {list(path)}: invalid step {step!r}")
    return obj


def element_count(tensor: TensorProto) -> int:
    """The product of ``dims`` (1 for a scalar), without overflow."""
    return math.prod(tensor.dims[:])


def row_length(dims: Sequence[int]) -> int:
    """Elements of one row of a tensor of shape ``dims``: the product of all dimensions but
    the first (a 1-D tensor is one row); what a codec that predicts along rows uses.

    >>> row_length([258, 1, 256]), row_length([64]), row_length([])
    (256, 64, 1)
    """
    return math.prod(dims[1:]) if len(dims) > 1 else math.prod(dims)


def payload_type(tensor: TensorProto) -> ElementType | None:
    """The element type if onnxz can move this tensor's payload, else None."""
    if tensor.HasField("segment") or tensor.data_location == TensorProto.EXTERNAL:
        return None
    return element_type(tensor.data_type)


def read_payload(tensor: TensorProto, etype: ElementType) -> np.ndarray:
    """The elements of ``tensor`` as a flat array of ``etype.numpy``."""
    if any(d < 0 for d in tensor.dims):
        raise InvalidModelError(
            f"tensor {tensor.name!r}: negative dimension in its shape {list(tensor.dims)}")
    count = element_count(tensor)
    if tensor.raw_data:
        if len(tensor.raw_data) != count * etype.width:
            raise InvalidModelError(
                f"tensor {tensor.name!r}: {len(tensor.raw_data)} bytes of raw_data for "
                f"{count} elements of {etype.name}"
            )
        return np.frombuffer(tensor.raw_data, dtype=etype.numpy)
    if etype.name == "float32":
        values = np.asarray(tensor.float_data, dtype=np.float32)
    elif etype.name == "float64":
        values = np.asarray(tensor.double_data, dtype=np.float64)
    elif etype.name == "int64":
        values = np.asarray(tensor.int64_data, dtype=np.int64)
    elif etype.name in ("uint32", "uint64"):
        values = np.asarray(tensor.uint64_data, dtype=np.uint64)
    else:  # int32_data carries every narrower type, floats as their bit patterns
        values = np.asarray(tensor.int32_data, dtype=np.int64)
    if values.size != count:
        raise InvalidModelError(
            f"tensor {tensor.name!r}: {values.size} values for {count} elements"
        )
    if etype.is_float and etype.width == 2:  # float16/bfloat16 arrive as bit patterns
        return values.astype(np.uint16).view(etype.numpy)
    return values.astype(etype.numpy)


PAYLOAD_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                  "uint64_data")


def has_payload(tensor: TensorProto) -> bool:
    """Whether any payload field holds data: ``raw_data`` first, where exporters put it,
    then the typed fields in :data:`PAYLOAD_FIELDS` order, none fetched after the first
    that holds data (PP-OCR cls's 263 payloads left in the graph, half of them in
    ``float_data`` or ``int64_data``: 115 -> 44 µs in all)."""
    return bool(tensor.raw_data or tensor.float_data or tensor.int32_data or tensor.int64_data
                or tensor.double_data or tensor.uint64_data)


def take_payload(tensor: TensorProto) -> None:
    """Clear every payload field of ``tensor`` (names, type and dims stay)."""
    for name in PAYLOAD_FIELDS:
        tensor.ClearField(name)


def put_payload(tensor: TensorProto, values: np.ndarray) -> None:
    """Store ``values`` (already of the tensor's element type) as ``raw_data``."""
    take_payload(tensor)
    tensor.raw_data = np.ascontiguousarray(values).tobytes()



def check_text(model: onnx.ModelProto) -> None:
    """:class:`InvalidModelError` naming the first name, type or key of ``model`` (its
    graphs, subgraphs, functions, tensors and metadata) that is not valid UTF-8. ONNX's
    strings must be; protobuf reads a string field that is not as ``bytes``, which no
    ``str`` operation expects (doc strings are copied as they are, never read).

    >>> from onnx import helper
    >>> model = helper.make_model(helper.make_graph([], "g", [], []))
    >>> check_text(model)
    >>> bad = bytearray(model.SerializeToString())
    >>> bad[bad.index(b"g")] = 0xFF
    >>> check_text(onnx.ModelProto.FromString(bytes(bad)))
    Traceback (most recent call last):
    ...
    onnxz.errors.InvalidModelError: graph name b'\\xff' is not valid UTF-8 (ONNX strings must be)
    """
    for what, value in _texts(model):
        if not isinstance(value, str):
            raise InvalidModelError(f"{what} {value!r} is not valid UTF-8 (ONNX strings must be)")


def _texts(model: onnx.ModelProto):
    yield "the producer's name", model.producer_name
    yield "the producer's version", model.producer_version
    yield "the model's domain", model.domain
    for entry in model.metadata_props:
        yield "a metadata key", entry.key
        yield "a metadata value", entry.value
    for opset in model.opset_import:
        yield "an opset domain", opset.domain
    yield from _graph_texts(model.graph)
    for function in model.functions:
        yield "a function name", function.name
        yield "a function domain", function.domain
        for name in (*function.input, *function.output, *function.attribute):
            yield f"a name in function {function.name!r}", name
        yield from _node_texts(function.node)


def _graph_texts(graph: onnx.GraphProto):
    yield "graph name", graph.name
    for value in (*graph.input, *graph.output, *graph.value_info):
        yield "a value name", value.name
    for tensor in graph.initializer:
        yield from _tensor_texts(tensor)
    for sparse in graph.sparse_initializer:
        yield from _tensor_texts(sparse.values)
        yield from _tensor_texts(sparse.indices)
    yield from _node_texts(graph.node)


def _node_texts(nodes: Sequence[onnx.NodeProto]):
    for node in nodes:  # a name is checked before a later message shows it
        yield "a node name", node.name
        yield "an op type", node.op_type
        yield f"the domain of a {node.op_type} node", node.domain
        label = f"{node.op_type} node {node.name!r}" if node.name else f"a {node.op_type} node"
        for name in (*node.input, *node.output):
            yield f"a value name of {label}", name
        for attr in node.attribute:
            yield f"an attribute name of {label}", attr.name
            yield f"an attribute reference of {label}", attr.ref_attr_name
            if attr.type == AttributeProto.TENSOR:
                yield from _tensor_texts(attr.t)
            for tensor in attr.tensors:
                yield from _tensor_texts(tensor)
        for graph in subgraphs(node):
            yield from _graph_texts(graph)


def _tensor_texts(tensor: TensorProto):
    yield "a tensor name", tensor.name
    for entry in tensor.external_data:
        yield f"an external data key of tensor {tensor.name!r}", entry.key
        yield f"an external data value of tensor {tensor.name!r}", entry.value


def check_acyclic(model: onnx.ModelProto) -> None:
    """:class:`InvalidModelError` if a graph of ``model`` (or a subgraph) has a cycle: a
    value that, through the nodes making it (the last node naming it as an output), is an
    input of its own making. An ONNX graph is acyclic; walks that follow values back to
    their makers (through reshapes, to a Softmax) would not end on one that is not.

    >>> from onnx import helper
    >>> loop = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    >>> check_acyclic(helper.make_model(helper.make_graph(loop, "g", [], [])))
    Traceback (most recent call last):
    ...
    onnxz.errors.InvalidModelError: graph 'g': value 'a' depends on itself (a cycle of 2 nodes)
    """
    graphs = [model.graph, *(g for f in model.functions for n in f.node for g in subgraphs(n))]
    while graphs:
        graph = graphs.pop()
        graphs += [g for node in graph.node for g in subgraphs(node)]
        _check_graph_acyclic(graph.name, graph.node)
    for function in model.functions:
        _check_graph_acyclic(f"function {function.name}", function.node)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs ``node``'s attributes hold (an If's branches, a Loop's body)."""
    return [g for a in node.attribute if a.type in _HOLDS_GRAPHS
            for g in ([a.g] if a.type == AttributeProto.GRAPH else a.graphs)]


_HOLDS_GRAPHS = frozenset({AttributeProto.GRAPH, AttributeProto.GRAPHS})


def _check_graph_acyclic(name: str, nodes: Sequence[onnx.NodeProto]) -> None:
    """Depth-first from every value, iteratively: a value met again while still open is a
    cycle."""
    producer = {o: n for n in nodes for o in n.output if o}
    done: set[str] = set()
    for root in producer:
        if root in done:
            continue
        open_values = {root}
        stack = [(root, iter(producer[root].input))]
        while stack:
            value, inputs = stack[-1]
            following = next((v for v in inputs if v in producer and v not in done), None)
            if following is None:
                stack.pop()
                open_values.discard(value)
                done.add(value)
            elif following in open_values:
                raise InvalidModelError(
                    f"graph {name!r}: value {following!r} depends on itself (a cycle of "
                    f"{len(stack) - [v for v, _ in stack].index(following)} nodes)")
            else:
                open_values.add(following)
                stack.append((following, iter(producer[following].input)))


def check_model(model: onnx.ModelProto) -> None:
    """What every walk over ``model`` relies on, checked once when a model is read: its
    strings are UTF-8 (:func:`check_text`) and its graphs acyclic (:func:`check_acyclic`)."""
    check_text(model)
    check_acyclic(model)
