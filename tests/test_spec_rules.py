"""SPEC revision 2 (issue 14): each settled point, checked on onnxz and on the independent
reference decoder alike: both decode the file, or both report the error class of §10.2
(and onnxz's message names the section). The published vectors of this revision are checked
in test_vectors.py; these tests cover the variants that do not need a vector of their own.
"""

from __future__ import annotations

from pathlib import Path

import container_edit
import crafted
import make_vectors
import msgpack
import numpy as np
import onnx
import pytest
import zstandard
from fuzzing import SECTION_NAMED, onnxz_outcome, reference_outcome
from models import mlp

import onnxz
from onnxz.codecs.varint import encode_uvarints

VECTORS = Path(__file__).resolve().parent / "vectors"


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.onnxz").read_bytes()


def outcome(tmp_path: Path, data: bytes, kind: str, match: str = "") -> bytes:
    """Assert onnxz and the reference both give ``kind`` (``ok``: both decode the same
    model) and onnxz's message contains ``match``; returns the decoded model."""
    path = tmp_path / "case.onnxz"
    path.write_bytes(data)
    mine, theirs = onnxz_outcome(path), reference_outcome(data)
    assert (mine.kind, theirs.kind) == (kind, kind), (mine.message, theirs.message)
    if kind == "ok":
        assert mine.model == theirs.model
    else:
        assert SECTION_NAMED.match(mine.message) and match in mine.message, mine.message
    return mine.model


def packed(tmp_path: Path, model: onnx.ModelProto, **save) -> bytes:
    """``model`` packed; its payloads of 128 bytes or more stored (entries to edit)."""
    path = tmp_path / "packed.onnxz"
    save.setdefault("options", onnxz.PackOptions(inline_max_bytes=128))
    onnxz.save(model, path, force=True, **save)
    return path.read_bytes()


def edit_index(data: bytes, mutate) -> bytes:
    fields = container_edit.read_index(data)
    mutate(fields)
    return container_edit.with_index(data, fields)


def with_raw_index_value(data: bytes, value: bytes) -> bytes:
    """``data`` whose index gains the unknown key ``future`` holding the msgpack ``value``
    (bytes that msgpack-python would not write itself)."""
    fields = container_edit.read_index(data)
    fields["future"] = "PLACEHOLDER"
    raw = msgpack.packb(fields, use_bin_type=True).replace(b"\xabPLACEHOLDER", value)
    return container_edit.with_index(data, raw=raw)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


# --- §1: numbers; one zstd frame, nothing else ------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("step", True), ("step", "0.1"), ("step", 0), ("step", -1), ("step", None),
    ("deadzone", False), ("deadzone", 2), ("deadzone", -1),
])
def test_number_parameters_refuse_bools_strings_and_bad_ints(tmp_path, key, value):
    def mutate(fields):
        fields["tensors"][0]["params"][key] = value
    outcome(tmp_path, edit_index(vector("spec_example_deadzone"), mutate), "format", "tensor")


def test_an_int_step_decodes_like_the_float_it_rounds_to(tmp_path):
    """2^54 + 3 is stored as an int; as a float it is 2^54 + 4 (ties to even, §1)."""
    data = vector("deadzone_int_params")

    def as_float(fields):
        fields["tensors"][0]["params"]["step"] = float(2**54 + 3)
    assert float(2**54 + 3) == 2.0**54 + 4
    assert outcome(tmp_path, edit_index(data, as_float), "ok") == outcome(tmp_path, data, "ok")


@pytest.mark.parametrize("tail", [b"\0", b"\0" * 1500, crafted.skippable_frame(),
                                  _zstd(b"more")], ids=["byte", "bytes", "skippable", "frame"])
def test_bytes_after_a_section_frame_are_corrupt_data(tmp_path, tail):
    data = vector("spec_example_lossless")
    graph = container_edit.read_graph(data)
    outcome(tmp_path, container_edit.with_graph_frame(data, _zstd(graph) + tail, len(graph)),
            "corrupt", "graph: bytes after the zstd frame")
    outcome(tmp_path, container_edit.with_index(data, container_edit.read_index(data),
                                                frame=lambda raw: _zstd(raw) + tail),
            "corrupt", "index: bytes after the zstd frame")


def test_a_section_that_is_a_skippable_frame_is_corrupt_data(tmp_path):
    data = vector("spec_example_lossless")
    graph = container_edit.read_graph(data)
    frame = crafted.skippable_frame() + _zstd(graph)
    outcome(tmp_path, container_edit.with_graph_frame(data, frame, len(graph)), "corrupt",
            "graph: not a zstd frame")


def _spec_w_in_zstd(tmp_path: Path, frame) -> bytes:
    return packed(tmp_path, make_vectors.spec_example(tmp_path),
                  **make_vectors.spec_w_zstd(frame))


def test_a_window_of_2_27_is_accepted(tmp_path):
    """The largest window allowed (§1 item 2): libzstd reserves it, but accepts it."""
    frame = crafted.streamed_frame(make_vectors.SPEC_W.tobytes(), window_log=27)
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    outcome(tmp_path, _spec_w_in_zstd(tmp_path, lambda d: frame), "ok")


def _with_dictionary_id(frame: bytes, dict_id: int = 7) -> bytes:
    """A single-segment frame whose header also names a 1-byte dictionary id."""
    descriptor = frame[4]
    assert descriptor & 0x20 and not descriptor & 0x03  # single segment, no dictionary id
    return frame[:4] + bytes([descriptor | 0x01, dict_id]) + frame[5:]


def test_a_frame_naming_a_dictionary_is_corrupt_data(tmp_path):
    frame = _with_dictionary_id(_zstd(make_vectors.SPEC_W.tobytes()))
    assert zstandard.get_frame_parameters(frame).dict_id == 7
    outcome(tmp_path, _spec_w_in_zstd(tmp_path, lambda d: frame), "corrupt", "dictionary")


# --- §4: the index, validated everywhere ------------------------------------------------------

@pytest.mark.parametrize(("value", "match"), [
    (b"\x82\xa1a\x01\xa1a\x02", "repeats a key"),  # {"a": 1, "a": 2}
    (b"\x81\xc4\x01k\x01", "key"),  # {b"k": 1}: a bin key
    (b"\xa2\xff\xfe", "not valid msgpack"),  # a str that is not UTF-8
    (b"\xd6\xff\x00\x00\x00\x00", "ext value"),  # a timestamp (ext type -1)
    (b"\x91" * 64 + b"\x00", "nest"),  # depth 65 (the index map is depth 1)
], ids=["repeated key", "bin key", "bad utf-8", "timestamp", "depth 65"])
def test_ignored_index_values_are_still_validated(tmp_path, value, match):
    outcome(tmp_path, with_raw_index_value(vector("spec_example_lossless"), value), "format",
            match)


def test_nesting_to_depth_64_is_accepted(tmp_path):
    outcome(tmp_path, with_raw_index_value(vector("spec_example_lossless"),
                                           b"\x91" * 63 + b"\x00"), "ok")


# --- §4.5 item 3, §10.1: element counts -------------------------------------------------------

@pytest.mark.parametrize(("shape", "kind", "match"), [
    ([2**64 - 1], "format", "hold 40 elements"),  # below the limit: the chunk count decides
    ([2**32, 2**32], "limit", "2^64"),
    ([2**63, 2**63, 2**63], "limit", "2^64"),
    ([0, 2**63, 2**63], "format", "hold 40 elements"),  # a factor 0: 0 elements
])
def test_element_counts_of_2_64_or_more_are_a_limit_error(tmp_path, shape, kind, match):
    def mutate(fields):
        fields["tensors"][0]["shape"] = shape
    outcome(tmp_path, edit_index(vector("spec_example_lossless"), mutate), kind, match)


def test_chunk_counts_summing_beyond_2_64_differ_from_the_element_count(tmp_path):
    def mutate(fields):
        chunk = fields["tensors"][0]["chunks"][0]
        fields["tensors"][0]["chunks"] = [[chunk[0], [], 2**64 - 1, 0], chunk]
    outcome(tmp_path, edit_index(vector("spec_example_lossless"), mutate), "format", "hold")


def test_a_later_chunks_crc_comes_before_the_tensors_params(tmp_path):
    """§10.2 checks every chunk's CRC before the codec parameters: a tensor whose table lost
    a key and whose second chunk is damaged is corrupt data, not a format error (found by
    fuzzing; onnxz set up the decoder after the first chunk only)."""
    def break_both(fields):
        t = next(t for t in fields["tensors"] if len(t["chunks"]) > 1
                 and any(p.get("method") == "ans" for p in t["params"]["planes"]))
        table = next(p for p in t["params"]["planes"] if p.get("method") == "ans")["table"]
        table["nffset"] = table.pop("offset")
        t["chunks"][1][3] ^= 1
    outcome(tmp_path, edit_index(vector("lossless_chunked"), break_both), "corrupt", "chunk")


def test_tensors_are_checked_in_order_path_and_all(tmp_path):
    """§10.2 takes tensors in order, each from its path to its CRC: a damaged chunk of the
    first tensor is corrupt data even when a later tensor's path does not resolve (onnxz
    resolved every path before decoding the first tensor; found by fuzzing)."""
    def break_both(fields):
        first, last = fields["tensors"][0], fields["tensors"][-1]
        first["chunks"][0][3] ^= 1
        last["path"][0] = "fraph"
    data = edit_index(vector("lossless_chunked"), break_both)
    outcome(tmp_path, data, "corrupt", "chunk")
    with pytest.raises(onnxz.CorruptDataError):
        onnxz.unpack(tmp_path / "case.onnxz", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_the_first_faulty_tensor_entry_decides_the_class(tmp_path):
    """Entries are checked in array order (§10.2): a count limit in entry 1 comes before a
    duplicate path found after all entries, and after a count mismatch in entry 0."""
    data = packed(tmp_path, mlp(), lossless=True)

    def limit_then_duplicate(fields):
        t = fields["tensors"]
        t[1]["shape"] = [2**32, 2**32]
        t[2]["path"] = t[0]["path"]
    outcome(tmp_path, edit_index(data, limit_then_duplicate), "limit", "2^64")

    def mismatch_then_limit(fields):
        t = fields["tensors"]
        t[0]["shape"] = [1]
        t[1]["shape"] = [2**32, 2**32]
    outcome(tmp_path, edit_index(data, mismatch_then_limit), "format", "elements")


# --- §5.1: paths follow the attribute's type --------------------------------------------------

def test_a_path_into_a_graph_attribute_t_field_is_a_format_error(tmp_path):
    data = packed(tmp_path, make_vectors.constant_node(tmp_path), lossless=True)
    model = onnx.ModelProto.FromString(container_edit.read_graph(data))
    model.graph.node[0].attribute[0].type = onnx.AttributeProto.GRAPH
    outcome(tmp_path, container_edit.with_graph(data, model.SerializeToString()), "format",
            "type")


def test_a_tensor_in_a_field_its_attribute_does_not_select_is_not_walked(tmp_path):
    """An INT attribute that also holds an empty `t`: not moved when packing, and not a
    tensor without payload when loading (§5.2 item 4 goes by type too)."""
    model = mlp()
    stray = onnx.helper.make_attribute("alpha", 2)
    stray.t.CopyFrom(onnx.TensorProto(name="stray", data_type=onnx.TensorProto.FLOAT, dims=[64]))
    model.graph.node[2].attribute.append(stray)
    decoded = onnx.ModelProto.FromString(
        outcome(tmp_path, packed(tmp_path, model, lossless=True), "ok"))
    assert decoded.graph.node[2].attribute[0].t == stray.t


# --- §6.2: ANS tables may cover more than the plane -------------------------------------------

def test_a_decoded_plane_symbol_beyond_the_plane_is_a_format_error(tmp_path):
    codec = make_vectors.MisorderedPlanes(plane_0_ends_right=True)
    data = packed(tmp_path, make_vectors.uint16_model(tmp_path),
                  **make_vectors._options(("u16", codec)))
    outcome(tmp_path, data, "format", "tensor 'u16': lossless plane: symbol outside")


# --- §2: gaps ---------------------------------------------------------------------------------

def test_unused_bytes_before_the_footer_may_hold_anything(tmp_path):
    data = vector("spec_example_lossless")
    original = outcome(tmp_path, data, "ok")
    gap = container_edit.with_gap_before_footer(data, b"\xffonnxz gap" * 7)
    assert outcome(tmp_path, gap, "ok") == original


# --- §7.2: escape errors, each class where the rule is ----------------------------------------

ESCAPED = np.array([0, 1, -1, 5, 2, -7] + [0] * 58)  # 5 and −7 are escaped when coded = (−2, 2)


@pytest.mark.parametrize(("edit", "kind", "match"), [
    (lambda s, e: (s, e[:1]), "format", "more escape symbols than escaped values"),
    (lambda s, e: (s, e + b"\x02"), "format", "more escaped values than escape symbols"),
    (lambda s, e: (s, e[:-1] + b"\x80"), "format", "varint"),
    (lambda s, e: (s, e[:1] + encode_uvarints(np.array([2**54 + 2], np.uint64))), "format",
     "beyond 2**53"),  # zigzag 2^54 + 2 is 2^53 + 1
], ids=["too few", "too many", "malformed", "beyond 2^53"])
def test_escape_part_errors(tmp_path, edit, kind, match):
    codec = crafted.ExplicitDeadzone(ESCAPED, 0.1, coded=(-2, 2), edit=edit)
    model = make_vectors._constants_model([make_vectors._raw(
        "w", onnx.TensorProto.FLOAT, make_vectors._dz(ESCAPED, 0.1, 0.5, "float32"))])
    outcome(tmp_path, packed(tmp_path, model, **make_vectors._options(("w", codec))), kind,
            match)


def test_escape_bytes_without_escape_are_corrupt_data(tmp_path):
    q = np.arange(-32, 32)
    codec = crafted.ExplicitDeadzone(q, 0.1, edit=lambda s, e: (s, b"\x02"))
    model = make_vectors._constants_model([make_vectors._raw(
        "w", onnx.TensorProto.FLOAT, make_vectors._dz(q, 0.1, 0.5, "float32"))])
    outcome(tmp_path, packed(tmp_path, model, **make_vectors._options(("w", codec))),
            "corrupt", "escape bytes without escape symbol")


def test_every_chunks_crc_comes_before_a_malformed_first_chunk(tmp_path):
    """§10.2 checks every chunk's CRC (a tensor check) before any chunk's content: a first
    chunk with one part too many and a damaged second chunk is corrupt data (onnxz decoded
    the first chunk before reading the second)."""
    def break_both(fields):
        t = next(t for t in fields["tensors"] if len(t["chunks"]) > 1)
        t["chunks"][0][1] = [*t["chunks"][0][1], 0]
        t["chunks"][1][3] ^= 1
    outcome(tmp_path, edit_index(vector("lossless_chunked"), break_both), "corrupt", "chunk")

    def only_the_parts(fields):
        t = next(t for t in fields["tensors"] if len(t["chunks"]) > 1)
        t["chunks"][0][1] = [*t["chunks"][0][1], 0]
    outcome(tmp_path, edit_index(vector("lossless_chunked"), only_the_parts), "format",
            "needs 4 planes")


@pytest.mark.parametrize("workers", [1, 2])
def test_with_workers_too_a_later_chunks_crc_comes_before_the_tensors_params(
        tmp_path, monkeypatch, workers):
    """Cut into one job per chunk, decoded by two worker processes, a tensor whose
    parameters are invalid and whose second chunk is damaged is still corrupt data: the
    worker of the first job checked only its own chunk (onnxz reported a format error)."""
    from onnxz import reader

    monkeypatch.setattr(reader, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(reader, "TASK_ELEMENTS", 1)

    def break_both(fields):
        t = next(t for t in fields["tensors"] if len(t["chunks"]) > 1)
        t["codec"] = "no-such-codec"
        t["chunks"][1][3] ^= 1
    path = tmp_path / "case.onnxz"
    path.write_bytes(edit_index(vector("lossless_chunked"), break_both))
    with pytest.raises(onnxz.CorruptDataError, match="chunk"):
        onnxz.load(path, workers=workers)


def test_the_graph_sections_checks_come_before_the_dtypes(tmp_path):
    """§10.2: the graph's CRC and frame (corrupt data) come before every dtype known (a
    format error): a file with both faults is corrupt data (found by fuzzing: onnxz checked
    the dtypes when it opened the file)."""
    def break_both(fields):
        fields["graph"]["raw_length"] -= 1
        fields["tensors"][0]["dtype"] = "gloat16"
    outcome(tmp_path, edit_index(vector("deadzone_f16_bf16_f64"), break_both), "corrupt",
            "graph")
    with pytest.raises(onnxz.CorruptDataError):
        onnxz.unpack(tmp_path / "case.onnxz", tmp_path / "out.onnx")
