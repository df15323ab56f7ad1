"""ModelStream: unpack writes payloads from the decoder to the file, never into the proto.

The bytes must be those protobuf writes for the filled model (so the unpacked file is the
same whichever way it was written), and a faulty file must report the fault SPEC.md §10.2
names first although the stream decodes the tensors in the order of the fields.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from container_edit import read_index, with_index
from models import OPSET, constants_and_if, mlp
from onnx import TensorProto, helper, numpy_helper

import onnxz
from onnxz.dtypes import element_type
from onnxz.modelio import ModelStream
from onnxz.walker import (
    PAYLOAD_FIELDS,
    has_payload,
    iter_tensors,
    put_payload,
    read_payload,
    resolve,
    take_payload,
)


def _every_kind_of_slot() -> onnx.ModelProto:
    """Initializers, Constant nodes, If branches, a TENSORS attribute, a function's Constant,
    fields numbered above raw_data on a slot, and payloads whose sizes cross the one-,
    two- and three-byte lengths (so every enclosing length grows)."""
    def weight(name: str, count: int, seed: int) -> TensorProto:
        rng = np.random.default_rng(seed)
        return numpy_helper.from_array(rng.standard_normal(count).astype(np.float32), name)

    branch_w = weight("bw", 40, 3)  # 160 bytes: a two-byte length
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["bc"], value=weight("bcv", 31, 4)),  # 124 bytes
         helper.make_node("Identity", ["bw"], ["b_out"])],
        "branch", [], [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [40])],
        [branch_w])
    documented = weight("doc", 4096, 5)  # 16,384 bytes: a three-byte length
    documented.doc_string = "fields 12 and 16 come after raw_data (9)"
    documented.metadata_props.add(key="k", value="v")
    function = helper.make_function(
        "custom", "f", ["x"], ["y"],
        [helper.make_node("Constant", [], ["c"], value=weight("fc", 32, 6)),
         helper.make_node("Add", ["x", "c"], ["y"])], OPSET)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=weight("kv", 32, 1)),  # 128 bytes
         helper.make_node("If", ["flag"], ["o"], then_branch=branch, else_branch=branch),
         helper.make_node("Bag", [], ["t"], domain="custom",
                          tensors=[weight("t0", 20, 7), weight("t1", 300, 8)])],
        "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [40])],
        [weight("w", 1000, 2), documented])
    model = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("custom", 1)],
                              functions=[function])
    model.metadata_props.add(key="after", value="the graph")
    return model


@pytest.mark.parametrize("make", [_every_kind_of_slot, constants_and_if, mlp])
def test_the_stream_is_what_protobuf_writes_for_the_filled_model(make):
    filled = make()
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(filled)
    slots, payloads = [], []
    for path, tensor in iter_tensors(skeleton):
        payloads.append(read_payload(tensor, element_type(tensor.data_type)).copy())
        slots.append((path, payloads[-1].nbytes))
        take_payload(tensor)
    for (path, _), values in zip(slots, payloads, strict=True):
        put_payload(resolve(filled, path), values)  # raw_data, as unpack gives them

    stream = ModelStream.plan(skeleton, slots)
    out = io.BytesIO()
    stream.write(out, [payloads[k] for k in stream.order])
    assert out.getvalue() == filled.SerializeToString()
    assert sorted(stream.order) == list(range(len(slots)))
    assert not any(tensor.raw_data for _, tensor in iter_tensors(skeleton))  # left as it was


def _as_written(path: tuple) -> tuple[int, ...]:
    """A path as field numbers and indices: protobuf writes fields in number order."""
    key, descriptor = [], onnx.ModelProto.DESCRIPTOR
    for step in path:
        if isinstance(step, int):
            key.append(step)
        else:
            field = descriptor.fields_by_name[step]
            key.append(field.number)
            descriptor = field.message_type
    return tuple(key)


def test_the_stream_takes_payloads_in_the_order_of_the_fields():
    """Nodes (field 1) come before initializers (field 5) in the file, while the walk, and
    so the index, lists initializers first."""
    model = _every_kind_of_slot()
    paths = [path for path, _ in iter_tensors(model)]
    assert paths[0][:2] == ("graph", "initializer")
    order = ModelStream.plan(model, [(p, 4) for p in paths]).order
    assert [paths[k] for k in order] == sorted(paths, key=_as_written) != paths


def test_unpack_writes_the_bytes_load_gives(tmp_path):
    model = _every_kind_of_slot()
    packed = tmp_path / "m.onnxz"
    onnxz.save(model, packed, lossless=True,
               options=onnxz.PackOptions(inline_max_bytes=128))
    unpacked = onnxz.unpack(packed, tmp_path / "m.onnx")
    assert unpacked.read_bytes() == onnxz.load(packed).SerializeToString()
    assert unpacked.read_bytes() == model.SerializeToString()  # raw_data already


def _mixed_model() -> onnx.ModelProto:
    """An initializer (index entry 0, written second) and a Constant (entry 1, first)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "cv")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=c),
         helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("MatMul", ["h", "c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w])
    return helper.make_model(graph, opset_imports=OPSET)


@pytest.mark.parametrize(("damaged", "unknown_codec", "error"), [
    (0, 1, onnxz.CorruptDataError),  # entry 0's chunk first, though entry 1 is decoded first
    (1, 0, onnxz.FormatError),
])
def test_unpack_reports_the_first_fault_of_the_index(tmp_path, damaged, unknown_codec, error):
    packed = tmp_path / "m.onnxz"
    onnxz.save(_mixed_model(), packed, lossless=True)
    data = packed.read_bytes()
    fields = read_index(data)
    assert [t["path"][1] for t in fields["tensors"]] == ["initializer", "node"]
    fields["tensors"][damaged]["chunks"][0][3] ^= 1
    fields["tensors"][unknown_codec]["codec"] = "no-such-codec"
    packed.write_bytes(with_index(data, fields))
    with pytest.raises(error):
        onnxz.unpack(packed, tmp_path / "out.onnx")
    with pytest.raises(error):
        onnxz.load(packed)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("field", PAYLOAD_FIELDS)
def test_has_payload_sees_every_payload_field(field):
    """has_payload names the fields one by one (2.4x faster than a loop over
    PAYLOAD_FIELDS on the unpack path): each field alone counts, none is missed."""
    tensor = TensorProto(name="t", data_type=TensorProto.FLOAT, dims=[1])
    assert not has_payload(tensor)
    if field == "raw_data":
        tensor.raw_data = b"\0\0\0\0"
    else:
        getattr(tensor, field).append(1)
    assert has_payload(tensor)
