"""Bad input: typed errors, no partial output, the input untouched."""

from __future__ import annotations

import ast
import hashlib
import tracemalloc
from pathlib import Path

import container_edit
import fuzzing
import numpy as np
import onnx
import pytest
import zstandard
from make_vectors import future_minor
from models import big_conv, mlp

import onnxz
from onnxz import container

VECTORS = Path(__file__).resolve().parent / "vectors"
SMALL_VECTORS = ("spec_example_lossless", "spec_example_deadzone")
"""Vectors under 1 KB: every truncation and every bit flip of them is tried."""


@pytest.fixture
def packed(tmp_path):
    path = tmp_path / "m.onnxz"
    onnxz.save(mlp(), path, lossless=True)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(onnxz.InputNotFoundError):
        onnxz.load(tmp_path / "nope.onnxz")
    with pytest.raises(onnxz.InputNotFoundError):
        onnxz.save(tmp_path / "nope.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()


def test_non_onnx_input(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all \xff\xfe" * 10)
    with pytest.raises(onnxz.InvalidModelError):
        onnxz.save(bad, tmp_path / "out.onnxz")
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("name", [b"w1", b"hb", b"onnxz-tests", b"purpose"])
def test_a_name_that_is_not_utf8_is_an_invalid_model(tmp_path, name):
    """Protobuf hands a string field that is not UTF-8 to Python as bytes: a weight's name
    so made pack fail with an AttributeError traceback (sweep 12's pack fuzzer). Every
    name, op type and key is checked when the model is read: a one-line error, no output,
    verify's failure to load (exit 1)."""
    from click.testing import CliRunner

    from onnxz.cli import main

    data = bytearray(mlp().SerializeToString())
    data[data.index(name)] = 0xFF
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(data))
    with pytest.raises(onnxz.InvalidModelError, match="is not valid UTF-8"):
        onnxz.save(bad, tmp_path / "out.onnxz", lossless=True)
    with pytest.raises(onnxz.InvalidModelError, match="is not valid UTF-8"):
        onnxz.save(onnx.load(bad), tmp_path / "out.onnxz", lossless=True)
    assert list(tmp_path.iterdir()) == [bad]
    onnxz.save(mlp(), tmp_path / "good.onnxz", lossless=True)
    result = CliRunner().invoke(main, ["verify", str(bad), str(tmp_path / "good.onnxz")])
    assert result.exit_code == 1 and "not valid UTF-8" in result.output
    assert "Traceback" not in result.output


CYCLIC_PACK = """
import sys
sys.path.insert(0, sys.argv[2])
import onnx
import onnxz
from models import mlp
model = mlp()
model.graph.node.append(onnx.helper.make_node("Identity", ["z"], ["z"]))
model.graph.output.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
try:
    onnxz.save(model, sys.argv[1])
except onnxz.InvalidModelError as exc:
    print(exc)
"""


def test_a_cyclic_graph_is_an_invalid_model_not_a_hang(tmp_path):
    """An output an Identity makes of itself made pack's default loop for ever (following
    pass-through ops back to the op that makes an output: sweep 12's pack fuzzer): every
    graph and subgraph is checked to be acyclic when a model is read. (In a subprocess
    with a timeout: a regression is a hang.)"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", CYCLIC_PACK, str(tmp_path / "out.onnxz"),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=120)
    assert "graph 'mlp': value 'z' depends on itself (a cycle of 1 nodes)" in proc.stdout, (
        proc.stdout + proc.stderr)
    assert not (tmp_path / "out.onnxz").exists()
    model = mlp()
    model.graph.node[0].input[0] = "y"  # the first MatMul reads the last one's output
    with pytest.raises(onnxz.InvalidModelError, match=r"'h' depends on itself \(a cycle of 4"):
        onnxz.save(model, tmp_path / "out.onnxz", lossless=True)


def test_onnxz_given_to_pack(packed, tmp_path):
    with pytest.raises(onnxz.InvalidModelError, match="onnxz file"):
        onnxz.save(packed, tmp_path / "again.onnxz")


def test_non_onnxz_input(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(mlp().SerializeToString())
    with pytest.raises(onnxz.FormatError, match=r"not an onnxz file .*ONNX model\? `onnxz pack`"):
        onnxz.load(onnx_file)
    other = tmp_path / "calib.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(onnxz.FormatError, match=r"not an onnxz file \(signature mismatch\)$"):
        onnxz.load(other)


def test_text_mode_damage_is_named(packed, tmp_path):
    data = packed.read_bytes().replace(b"\r\n", b"\n", 1)
    damaged = tmp_path / "crlf.onnxz"
    damaged.write_bytes(data)
    with pytest.raises(onnxz.OnnxzError):
        onnxz.load(damaged)


def _unused_bytes(data: bytes) -> set[int]:
    """Offsets of the bytes no header, chunk, section or footer covers (SPEC.md §2)."""
    fields = container_edit.read_index(data)
    footer = container_edit.Footer.of(data)
    used = [(0, 16), (len(data) - 40, len(data)),
            (footer.index_offset, footer.index_offset + footer.index_length),
            (fields["graph"]["offset"], fields["graph"]["offset"] + fields["graph"]["length"])]
    used += [(c[0], c[0] + sum(c[1])) for t in fields["tensors"] for c in t["chunks"]]
    return set(range(len(data))).difference(*(range(a, b) for a, b in used))


def _load_error(path: Path) -> onnxz.OnnxzError:
    with pytest.raises(onnxz.OnnxzError) as caught:
        onnxz.load(path)
    assert isinstance(caught.value, onnxz.FormatError | onnxz.CorruptDataError)
    assert fuzzing.SECTION_NAMED.match(str(caught.value)), caught.value
    return caught.value


@pytest.mark.parametrize("name", SMALL_VECTORS)
def test_truncation_at_every_byte_is_detected(tmp_path, name):
    data = (VECTORS / f"{name}.onnxz").read_bytes()
    cut = tmp_path / "cut.onnxz"
    for keep in range(len(data)):
        cut.write_bytes(data[:keep])
        _load_error(cut)


@pytest.mark.parametrize("name", SMALL_VECTORS)
def test_every_bit_flip_is_detected_unless_in_unused_bytes(tmp_path, name):
    data = (VECTORS / f"{name}.onnxz").read_bytes()
    original = onnxz.load(VECTORS / f"{name}.onnxz").SerializeToString()
    unused = _unused_bytes(data)
    assert 0 < len(unused) < len(data) // 4
    target = tmp_path / "flip.onnxz"
    harmless = set()
    for pos in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            target.write_bytes(flipped)
            try:
                decoded = onnxz.load(target).SerializeToString()
            except onnxz.OnnxzError as exc:
                assert fuzzing.SECTION_NAMED.match(str(exc)), exc
                continue
            assert decoded == original, f"flip of bit {bit} of byte {pos}: a different model"
            harmless.add(pos)
    assert harmless == unused  # CRC-32 catches every single-bit error it covers


def _rewrite_index(path, mutate):
    """Rewrite the index of ``path`` through ``mutate(fields)``, fixing up the CRCs."""
    data = path.read_bytes()
    fields = container_edit.read_index(data)
    mutate(fields)
    path.write_bytes(container_edit.with_index(data, fields))


def test_unknown_optional_fields_are_ignored_at_any_minor_version(packed):
    before = onnxz.load(packed).SerializeToString()
    future = future_minor(packed.read_bytes())  # unknown keys in every map, chunk elements
    for minor in (1, 3, 65535):
        packed.write_bytes(container_edit.with_version(future, 1, minor))
        assert onnxz.load(packed).SerializeToString() == before
        assert onnxz.info(packed).version == f"1.{minor}"


@pytest.mark.parametrize("major", [0, 2, 65535])
def test_other_major_versions_are_refused_naming_both(packed, major):
    packed.write_bytes(container_edit.with_version(packed.read_bytes(), major, 4))
    for read in (onnxz.load, onnxz.info):
        with pytest.raises(onnxz.FormatError, match=rf"{major}\.4 is not supported.*1\.x"):
            read(packed)


def _tensor(fields):
    return fields["tensors"][0]


def _set(*keys_and_value):
    """A mutation setting ``fields[k0][k1]...`` (``tensor`` = the first tensor entry)."""
    *keys, value = keys_and_value

    def mutate(fields):
        target = _tensor(fields) if keys[0] == "tensor" else fields[keys[0]]
        for k in keys[1:-1]:
            target = target[k]
        target[keys[-1]] = value
    return mutate


def _absurd_shape(fields):
    t = _tensor(fields)
    t["shape"] = [10**6, 10**6]
    t["chunks"] = [[t["chunks"][0][0], t["chunks"][0][1], 10**12, t["chunks"][0][3]]]


def _overlap(fields):
    fields["tensors"][1]["chunks"][0][0] = fields["tensors"][0]["chunks"][0][0]


CRAFTED_INDEX = {
    "unknown codec": (_set("tensor", "codec", "wavelet9"), onnxz.FormatError,
                      "tensor 'w1': codec 'wavelet9' is not known"),
    "unknown dtype": (_set("tensor", "dtype", "float128"), onnxz.FormatError, "float128"),
    "unknown mode": (_set("tensor", "params", "mode", "brotli"), onnxz.FormatError, "brotli"),
    "unknown method": (_set("tensor", "params", "planes", 0, "method", "rle"), onnxz.FormatError,
                       "rle"),
    "absurd shape": (_absurd_shape, onnxz.LimitExceededError, "exceed"),
    "overlapping chunks": (_overlap, onnxz.FormatError, "overlapping"),
    "chunk beyond the file": (_set("tensor", "chunks", 0, 0, 2**63), onnxz.FormatError,
                              "index: tensor 'w1' has a chunk outside"),
    "graph beyond the file": (_set("graph", "offset", 2**40), onnxz.FormatError,
                              "index: graph section lies outside"),
    "bool for an int": (_set("tensor", "shape", [True, 64]), onnxz.FormatError, "tensor 'w1'"),
    "bin map key": (_set("tensor", b"extra", 1), onnxz.FormatError, "index: a map key"),
    "params not a map": (_set("tensor", "params", "planes", [1, 2, 3, 4]), onnxz.FormatError,
                         "tensor 'w1': codec parameters: expected a map"),
    "tensor entry missing": (lambda f: f["tensors"].pop(0), onnxz.FormatError,
                             "graph: tensor 'w1' .* has no data"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_INDEX))
def test_crafted_index_is_refused_naming_the_section(packed, case):
    mutate, error, match = CRAFTED_INDEX[case]
    _rewrite_index(packed, mutate)
    with pytest.raises(error, match=match):
        onnxz.load(packed)


@pytest.mark.parametrize("raw", [b"\xc1", b"\x81\xa1a\x01\x00", b"\x82\xa1a\x01\xa1a\x02",
                                 b"\x92\x01\x02"])
def test_index_that_is_not_one_valid_map_is_a_format_error(packed, raw):
    """A reserved byte, trailing bytes, a repeated key, an array."""
    packed.write_bytes(container_edit.with_index(packed.read_bytes(), raw=raw))
    with pytest.raises(onnxz.FormatError, match=r"^index: "):
        onnxz.load(packed)


def test_graph_that_is_not_a_model_is_a_format_error(packed):
    packed.write_bytes(container_edit.with_graph(packed.read_bytes(), b"\xff" * 40))
    with pytest.raises(onnxz.FormatError, match=r"^graph: not a valid ONNX ModelProto"):
        onnxz.load(packed)


def test_zstd_sections_decompress_in_bounded_memory(packed):
    """A frame without a content size may not make the reader reserve its declared size."""
    data = packed.read_bytes()
    graph = container_edit.read_graph(data)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(graph)
    packed.write_bytes(container_edit.with_graph_frame(data, frame, len(graph)))
    assert onnxz.load(packed).SerializeToString()  # a frame without content size is fine
    for raw_length in (container.ReadLimits().max_graph_size, 10):  # declared too big, too small
        packed.write_bytes(container_edit.with_graph_frame(data, frame, raw_length))
        tracemalloc.start()
        try:
            with pytest.raises(onnxz.CorruptDataError, match=r"^graph: zstd frame holds"):
                onnxz.load(packed)
            assert tracemalloc.get_traced_memory()[1] < 64 << 20
        finally:
            tracemalloc.stop()


def test_decoded_size_bounds_the_memory_of_a_tiny_file(tmp_path):
    """A 4 MiB constant tensor in one chunk: a file of a few hundred bytes."""
    ones = onnx.numpy_helper.from_array(np.ones(1 << 22, dtype=np.uint8), "ones")
    graph = onnx.helper.make_graph([], "g", [], [], [ones])
    path = tmp_path / "ones.onnxz"
    onnxz.save(onnx.helper.make_model(graph), path,
               options=onnxz.PackOptions(lossless=True, chunk_elements=1 << 22))
    assert path.stat().st_size < 1024
    tracemalloc.start()
    try:
        model = onnxz.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.graph.initializer[0].raw_data == b"\x01" * (1 << 22)
    assert peak < 4 * (1 << 22)  # the output, its serialized copy, and bounded batches


def test_existing_output_needs_force_and_input_is_untouched(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp().SerializeToString())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "m.onnxz"
    out.write_bytes(b"keep me")
    with pytest.raises(onnxz.OutputExistsError):
        onnxz.save(src, out)
    assert out.read_bytes() == b"keep me"
    onnxz.save(src, out, force=True)
    assert out.read_bytes()[:8] == container.MAGIC
    with pytest.raises(onnxz.OutputPathError):
        onnxz.save(src, src, force=True)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_failed_unpack_leaves_no_output(packed, tmp_path):
    data = bytearray(packed.read_bytes())
    data[100] ^= 0xFF
    packed.write_bytes(data)
    out = tmp_path / "out.onnx"
    with pytest.raises(onnxz.OnnxzError):
        onnxz.unpack(packed, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnxz"]


def test_missing_external_data_file(tmp_path):
    model = mlp()
    import onnx

    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(onnxz.InvalidModelError, match="external data"):
        onnxz.save(tmp_path / "ext.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()


class Interrupted(Exception):
    """Raised from a progress callback, as a crash or a Ctrl-C would strike mid-write."""


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_interrupted_save_leaves_the_old_output_and_no_temporary_file(tmp_path, error):
    out = tmp_path / "m.onnxz"
    out.write_bytes(b"keep me")

    def progress(done, total, name):
        if done == 1:  # its chunks written, the graph and index not
            raise error("stop")

    with pytest.raises(error):
        onnxz.save(big_conv(), out, force=True, lossless=True, progress=progress)
    assert out.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnxz"]


def test_interrupted_unpack_leaves_no_output(packed, tmp_path):
    """Unpacking to external data: the crash comes after part of the data file is written."""

    def progress(done, total, name):
        if done == 2:
            raise Interrupted("disk full")

    with pytest.raises(Interrupted):
        onnxz.unpack(packed, tmp_path / "out.onnx", external_data=True, progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnxz"]


def test_reading_never_modifies_the_input(packed, tmp_path):
    before = (packed.read_bytes(), packed.stat().st_mtime_ns)
    onnxz.load(packed)
    onnxz.info(packed)
    onnxz.unpack(packed, tmp_path / "out.onnx")
    with pytest.raises(onnxz.OutputPathError):
        onnxz.unpack(packed, packed, force=True)
    assert (packed.read_bytes(), packed.stat().st_mtime_ns) == before


def test_no_code_runs_from_data():
    """Files are read with msgpack and protobuf only: no pickle, eval, exec or the like (an
    ``exec`` of a string literal aside: console.py's, which clears a CPython flag)."""
    forbidden_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}
    forbidden_calls = {"eval", "exec", "compile", "__import__"}
    src = Path(onnxz.__file__).parent
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & forbidden_modules, path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in forbidden_modules, path
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                literal = (node.func.id == "exec" and node.args
                           and isinstance(node.args[0], ast.Constant)
                           and isinstance(node.args[0].value, str))
                assert literal or node.func.id not in forbidden_calls, (path, node.lineno)
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path


def test_constants_the_walks_cannot_read_are_unknown_not_a_value_error():
    """A small integer constant with a `segment` (or external data, or a payload of another
    size than its shape) ended pack's default in onnx's "ValueError: Currently not
    supporting loading segments." while it looked for the sizes a model runs on (sweep
    12's pack fuzzer). The walks that read constants take such a one as unknown."""
    from onnx import TensorProto, helper

    from onnxz.inputs import _compared_with, _search_sizes

    rate = helper.make_tensor("rate", TensorProto.INT64, [1], [16000])
    rate.segment.begin = 0
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [2], [300, 400])
    sizes.dims[0] = 3  # two values for a shape of three
    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate"], ["is_rate"]),
         helper.make_node("Reshape", ["x", "sizes"], ["y"])], "g",
        [helper.make_tensor_value_info("sr", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [rate, sizes])
    model = helper.make_model(graph)
    assert _compared_with(model) == {}
    assert 300 not in _search_sizes(model) and 3 in _search_sizes(model)
    rate.ClearField("segment")
    model.graph.initializer[0].CopyFrom(rate)
    assert _compared_with(model) == {"sr": 16000}


@pytest.mark.parametrize(("data_type", "name"), [(onnx.TensorProto.STRING, "STRING"), (99, "99")])
def test_external_data_of_a_type_that_cannot_be_packed_is_named(tmp_path, data_type, name):
    """An external tensor of an element type ONNX does not define (99) ended pack in
    protobuf's "ValueError: Enum DataType has no name defined for value 99" (sweep 12's
    pack fuzzer); it is refused naming the number, as a known type is by its name."""
    model = mlp()
    tensor = model.graph.initializer[0]
    tensor.data_type = data_type
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    (tmp_path / "w.bin").write_bytes(b"\0" * 4096)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(onnxz.UnsupportedModelError, match=f"external data of type {name} "):
        onnxz.save(tmp_path / "m.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()


def test_onnxruntime_log_stays_off_the_cli_error(tmp_path):
    """A constant claiming 2^62 elements made onnxruntime log "[E:onnxruntime:Default,
    allocator.cc:99] ... Integer overflow" (in colour, three times) above pack's one-line
    error (sweep 12's pack fuzzer): its default logger is off in commands that run models."""
    import subprocess
    import sys

    from onnx import TensorProto, helper

    model = mlp()
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 10])
    shape.dims[0] = 2**62
    model.graph.initializer.append(shape)
    model.graph.node.append(helper.make_node("Reshape", ["y", "shape"], ["y2"]))
    model.graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    onnx.save(model, tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-m", "onnxz", "pack", str(tmp_path / "m.onnx"),
                           "-o", str(tmp_path / "m.onnxz")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("onnxz: error: ") and "E:onnxruntime" not in proc.stderr
