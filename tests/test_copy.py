"""Lossless mode ``copy`` (format 1.6, SPEC.md §6.7): a tensor encoded exactly as an earlier
one is stored as a reference to it; bit-exact, smaller, decoded alike by one worker or many
and by the reference decoder, refused with typed errors naming the tensor when malformed."""

from __future__ import annotations

import itertools
import json

import container_edit
import numpy as np
import onnx
import pytest
import reference_decoder
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxz
import onnxz.parallel
import onnxz.reader
from onnxz.cli import main
from onnxz.codecs import LosslessCodec
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError


def tied_model(seed: int = 0) -> onnx.ModelProto:
    """Y1 = X·W, Y2 = X·W_tied (W_tied = W), Z = X·V (V another weight), U = Identity(E) and
    Identity(E_flat) (E_flat = E reshaped): the ties of an export that writes them twice."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(0, 0.05, (64, 64)).astype(np.float32)
    v = rng.laplace(0, 0.05, (64, 64)).astype(np.float32)
    e = rng.normal(0, 1, (40, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(v, "V"),
             numpy_helper.from_array(w.copy(), "W_tied"), numpy_helper.from_array(e, "E"),
             numpy_helper.from_array(e.reshape(-1).copy(), "E_flat")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y1"]),
             helper.make_node("MatMul", ["X", "W_tied"], ["Y2"]),
             helper.make_node("MatMul", ["X", "V"], ["Z"]),
             helper.make_node("Identity", ["E"], ["U"]),
             helper.make_node("Identity", ["E_flat"], ["U_flat"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
               for n in ("Y1", "Y2", "Z", "U", "U_flat")]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [1, 64])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


MODES = {"lossless": {"lossless": True}, "step_rel": {"step_rel": 0.05}}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_duplicates_are_copies_bit_exact_and_smaller(tmp_path, mode, monkeypatch):
    model = tied_model()
    packed = tmp_path / "m.onnxz"
    info = onnxz.save(model, packed, **MODES[mode])
    by_name = {t.name: t for t in info.tensors}
    names = [t.name for t in info.tensors]
    assert info.version == "1.6"
    assert (by_name["W_tied"].mode, by_name["W_tied"].copy_of) == ("copy", names.index("W"))
    assert (by_name["E_flat"].mode, by_name["E_flat"].copy_of) == ("copy", names.index("E"))
    assert by_name["W_tied"].coded_bytes == by_name["E_flat"].coded_bytes == 0
    assert by_name["V"].copy_of is None and by_name["W"].copy_of is None
    decoded = onnxz.load(packed)
    values = initializers(decoded)
    assert values["W_tied"].tobytes() == values["W"].tobytes()
    assert values["E_flat"].tobytes() == values["E"].tobytes()
    if mode == "lossless":
        assert decoded == model
    twice = tmp_path / "twice.onnxz"  # the writer without copies: every encoding looks new
    counter = itertools.count()
    monkeypatch.setattr(onnxz.parallel.EncodedResult, "digest",
                        property(lambda self: next(counter).to_bytes(8, "little")))
    without = onnxz.save(model, twice, **MODES[mode])
    assert all(t.mode != "copy" for t in without.tensors)
    assert onnxz.load(twice) == decoded  # the same values, coded twice
    saved = (by_name["W"].coded_bytes + by_name["E"].coded_bytes)
    assert info.file_bytes < without.file_bytes - saved + 200
    assert reference_decoder.decode(packed.read_bytes()).model == decoded


def test_default_lossy_copies_tied_weights(tmp_path):
    """Rate control gives the two symmetric ties the same setting: one is a copy, sized as
    written (its sizing uses the writer's entries)."""
    model = tied_model(1)
    packed = tmp_path / "m.onnxz"
    info = onnxz.save(model, packed)
    by_name = {t.name: t for t in info.tensors}
    assert by_name["W"].codec != "lossless"
    assert by_name["W_tied"].mode == "copy" and by_name["E_flat"].mode == "copy"
    values = initializers(onnxz.load(packed))
    assert values["W_tied"].tobytes() == values["W"].tobytes()
    assert reference_decoder.decode(packed.read_bytes()).model == onnxz.load(packed)


def test_rate_control_codes_twins_alike_where_they_weigh_differently(tmp_path):
    """Initializers of the same dims and bytes are one rate-control candidate (its twins,
    coded at its setting): the second is a copy although it weighs ten times more on the
    output, and the file reproduces what rate control measured with both."""
    rng = np.random.default_rng(5)
    w = rng.laplace(0, 0.05, (64, 64)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w.copy(), "W_twin"),
             numpy_helper.from_array(np.array(10, np.float32), "ten")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["A"]),
             helper.make_node("MatMul", ["X", "W_twin"], ["B"]),
             helper.make_node("Mul", ["B", "ten"], ["C"]),
             helper.make_node("Add", ["A", "C"], ["Y"])]
    graph = helper.make_graph(nodes, "twins", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)],
                              ir_version=9)
    for target in ({}, {"fidelity": "snr>=30"}, {"max_size": 12_000}):
        packed = tmp_path / "t.onnxz"
        info = onnxz.save(model, packed, force=True, **target)
        by_name = {t.name: t for t in info.tensors}
        assert by_name["W"].codec != "lossless" or by_name["W"].rounded_bits, target  # lossy
        assert (by_name["W_twin"].mode, by_name["W_twin"].copy_of) == ("copy", 0), target
        values = initializers(onnxz.load(packed))
        assert values["W_twin"].tobytes() == values["W"].tobytes()
    assert info.file_bytes <= 12_000


def test_reader_tensor_of_a_copy_reads_its_source_in_its_own_shape(tmp_path):
    model = tied_model()
    packed = tmp_path / "m.onnxz"
    onnxz.save(model, packed, lossless=True)
    original = initializers(model)
    with onnxz.open(packed) as reader:
        flat = reader.tensor("E_flat")
        assert flat.shape == (640,) and flat.tobytes() == original["E"].tobytes()
        assert reader.tensor("W_tied").tobytes() == original["W"].tobytes()
        assert reader.entry("E_flat").coded_bytes == 0


@pytest.mark.parametrize("lossless", [True, False])
def test_two_workers_decode_copies_as_one_does(tmp_path, monkeypatch, lossless):
    monkeypatch.setattr(onnxz.reader, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(onnxz.reader, "TASK_ELEMENTS", 1000)
    model = tied_model()
    packed = tmp_path / "m.onnxz"
    onnxz.save(model, packed, lossless=lossless, step_rel=None if lossless else 0.05,
               options=onnxz.PackOptions(chunk_elements=700))
    assert onnxz.info(packed).tensors[2].mode == "copy"
    one = onnxz.load(packed, workers=1)
    assert onnxz.load(packed, workers=2) == one
    with onnxz.open(packed, workers=2) as reader:
        assert reader.tensor("W_tied").tobytes() == initializers(one)["W"].tobytes()


def test_a_file_without_duplicates_keeps_its_version(tmp_path):
    model = tied_model()
    del model.graph.initializer[2]  # W_tied
    model.graph.initializer.pop()  # E_flat
    del model.graph.node[1]
    model.graph.node.pop()
    del model.graph.output[1]
    model.graph.output.pop()
    info = onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    assert info.version != "1.6" and all(t.mode != "copy" for t in info.tensors)


def test_equal_bytes_of_another_dtype_are_not_copies(tmp_path):
    x = np.arange(-300, 300, dtype=np.int32)
    inits = [numpy_helper.from_array(x, "I"), numpy_helper.from_array(x.view(np.float32), "F"),
             numpy_helper.from_array(x.view(np.uint32).reshape(20, 30), "U")]
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n in "IFU"]
    outputs = [helper.make_tensor_value_info(n + "_out", t.data_type, None)
               for n, t in zip("IFU", inits, strict=True)]
    model = helper.make_model(helper.make_graph(nodes, "g", [], outputs, inits),
                              opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    info = onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    assert all(t.mode != "copy" for t in info.tensors)


# --- malformed copies: format errors naming the tensor, found before decoding -------------

def packed_with(tmp_path, edit) -> bytes:
    """The lossless tied model with its index edited by ``edit(tensors)`` (entries by name)."""
    packed = tmp_path / "m.onnxz"
    onnxz.save(tied_model(), packed, lossless=True)
    data = packed.read_bytes()
    fields = container_edit.read_index(data)
    edit({t["name"]: t for t in fields["tensors"]})
    return container_edit.with_index(data, fields)


def position(tensors: dict, name: str) -> int:
    return list(tensors).index(name)


def set_of(name: str, value):
    def edit(tensors):
        tensors[name]["params"]["of"] = value(tensors) if callable(value) else value
    return edit


def del_of(tensors):
    del tensors["W_tied"]["params"]["of"]


def of_a_copy(tensors):
    """V made a (valid) copy of W, and W_tied a copy of V."""
    second = tensors["V"]
    second["codec"], second["params"] = "lossless", {"mode": "copy", "of": 0}
    second["chunks"] = [[c[0], [], c[2], 0] for c in second["chunks"]]
    tensors["W_tied"]["params"]["of"] = position(tensors, "V")


def other_dtype(tensors):
    tensors["W"]["dtype"] = "int32"


def other_count(tensors):
    tensors["E_flat"]["params"]["of"] = position(tensors, "W")


def chunk_with_parts(tensors):
    tensors["W_tied"]["chunks"][0][1] = [0, 0]


def chunk_with_crc(tensors):
    tensors["W_tied"]["chunks"][0][3] = 1


MALFORMED = [
    ("W_tied", set_of("W_tied", lambda t: position(t, "W_tied")), "earlier"),
    ("W_tied", set_of("W_tied", lambda t: position(t, "E")), "earlier"),
    ("W_tied", set_of("W_tied", -1), "earlier"),
    ("W_tied", set_of("W_tied", "0"), "earlier"),
    ("W_tied", set_of("W_tied", True), "earlier"),
    ("W_tied", set_of("W_tied", 0.0), "earlier"),
    ("W_tied", del_of, "earlier"),
    ("W_tied", of_a_copy, "itself a copy"),
    ("W_tied", other_dtype, "int32"),
    ("E_flat", other_count, "4096"),
    ("W_tied", chunk_with_parts, "parts"),
    ("W_tied", chunk_with_crc, "parts"),
]


@pytest.mark.parametrize(("name", "edit", "match"), MALFORMED,
                         ids=[f"{i}-{m[2]}" for i, m in enumerate(MALFORMED)])
def test_malformed_copies_are_format_errors_naming_the_tensor(tmp_path, name, edit, match):
    data = packed_with(tmp_path, edit)
    path = tmp_path / "bad.onnxz"
    path.write_bytes(data)
    for action in (lambda: onnxz.load(path), lambda: onnxz.open(path).tensor("V")):
        with pytest.raises(FormatError, match=match) as caught:
            action()
        assert f"tensor {name!r}" in str(caught.value)
    with pytest.raises(reference_decoder.DecodeError) as ref_caught:
        reference_decoder.decode(data)
    assert ref_caught.value.kind == "format"


def test_a_copy_whose_crc_differs_from_its_source_is_corrupt(tmp_path):
    data = packed_with(tmp_path, lambda t: t["W_tied"].update(crc32=t["W_tied"]["crc32"] ^ 1))
    path = tmp_path / "bad.onnxz"
    path.write_bytes(data)
    with pytest.raises(CorruptDataError, match="W_tied"):
        onnxz.load(path)
    with onnxz.open(path) as reader:
        assert reader.tensor("W").size == 4096  # the source itself is fine
        with pytest.raises(CorruptDataError, match="W_tied"):
            reader.tensor("W_tied")
    with pytest.raises(reference_decoder.DecodeError) as ref_caught:
        reference_decoder.decode(data)
    assert ref_caught.value.kind == "corrupt"


def test_the_codec_alone_refuses_mode_copy():
    with pytest.raises(FormatError, match="copy"):
        LosslessCodec.decoder({"mode": "copy", "of": 0}, BY_NAME["float32"])


def test_info_shows_copies_and_pack_counts_them_by_their_source(tmp_path):
    model = tied_model()
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    packed = tmp_path / "m.onnxz"
    result = CliRunner().invoke(main, ["pack", str(tmp_path / "m.onnx"), "-o", str(packed),
                                       "--step-rel", "0.05"])
    assert result.exit_code == 0, result.output
    assert "3 tensors quantized" in result.output  # W, V and W_tied, a copy of W
    text = CliRunner().invoke(main, ["info", str(packed)]).output
    assert "lossless/copy" in text
    data = json.loads(CliRunner().invoke(main, ["info", str(packed), "--json"]).output)
    tensors = {t["name"]: t for t in data["tensors"]}
    assert tensors["W_tied"]["copy_of"] == [t["name"] for t in data["tensors"]].index("W")
    assert tensors["W_tied"]["coded_bytes"] == 0 and tensors["W"]["copy_of"] is None
