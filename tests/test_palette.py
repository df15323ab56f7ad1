"""Lossless mode ``palette`` (format 1.5, SPEC.md §6.6): a table of distinct values and one
index plane; bit-exact, chosen only where smaller, refused with typed errors when damaged."""

from __future__ import annotations

import crafted
import numpy as np
import pytest
import reference_decoder
from onnx import TensorProto, helper, numpy_helper
from test_codecs import decode, roundtrip

import onnxz
from onnxz.codecs import LosslessCodec, lossless
from onnxz.codecs.lossless import PlaneCoding, pack_bits, palette_layout
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError

NAN_PAYLOADS = np.array([0x7FC00123, 0xFF800001, 0x7F800001, 0xFFFFFFFF], dtype="<u4")


def grid(n: int, values: int, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    """``n`` elements drawn from ``values`` multiples of 1/160 (Laplacian-like weights)."""
    rng = np.random.default_rng(seed)
    table = (np.arange(values) - values // 2) / 160
    p = np.exp(-np.abs(np.arange(values) - values // 2) / (values / 6))
    return rng.choice(table, n, p=p / p.sum()).astype(BY_NAME[dtype].numpy)


def test_grid_weights_are_a_palette_and_bit_exact_with_signed_zeros_and_nan_payloads():
    x = grid(50_000, 100)
    words = x.view("<u4")
    words[[1, 2]] = [0x00000000, 0x80000000]  # +0.0 and -0.0: different values
    words[[10, 11, 12, 13]] = NAN_PAYLOADS
    enc, decoded = roundtrip(LosslessCodec(), x, "float32", chunk_elements=7000)
    assert enc.params["mode"] == "palette" and enc.format_minor == lossless.PALETTE_MINOR
    assert decoded.tobytes() == x.tobytes()
    table = np.frombuffer(enc.params["values"], "<u4")
    assert table.tolist() == sorted(set(words.tolist()))  # distinct words, ascending
    assert {0, 0x80000000, *NAN_PAYLOADS.tolist()} <= set(table.tolist())
    assert enc.coded_bytes + len(enc.params["values"]) < x.size * 7 / 8  # below 7-bit indices


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int16",
                                   "uint16", "int32", "uint32", "int64", "uint64"])
def test_every_wide_dtype_round_trips_as_a_palette(dtype):
    etype = BY_NAME[dtype]
    rng = np.random.default_rng(3)
    words = rng.integers(0, 1 << 63, 37, dtype=np.uint64).astype(f"<u{etype.width}")
    x = rng.choice(words, 20_000).view(etype.numpy)
    enc, decoded = roundtrip(LosslessCodec(), x, dtype, chunk_elements=3000)
    assert enc.params["mode"] == "palette", dtype
    assert enc.params["index"]["method"] in ("ans", "zstd", "packed")
    assert decoded.tobytes() == x.tobytes()


@pytest.mark.parametrize("k", [1, 2, 5, 8, 9])
def test_exactly_2_to_the_k_values_take_k_bit_indices(k):
    x = grid(max(40_000, 8 << k), 1 << k, seed=k)
    x[: 1 << k] = (np.arange(1 << k) - (1 << k) // 2) / 160  # every value occurs
    enc, decoded = roundtrip(LosslessCodec(), x, "float32", chunk_elements=10_000)
    assert enc.params["mode"] == "palette"
    assert len(enc.params["values"]) == 4 << k and palette_layout(1 << k).bits == k
    assert decoded.tobytes() == x.tobytes()


@pytest.mark.parametrize(("k", "method"), [(12, "packed"), (12, "zstd"), (16, "zstd"),
                                           (16, "packed")])
def test_large_tables_of_2_to_the_k_values_decode(k, method):
    """Tables the writer does not choose (above 4096 values) up to the format's 65536."""
    rng = np.random.default_rng(k)
    x = rng.permutation(np.r_[np.arange(1 << k), rng.integers(0, 1 << k, 5000)]).astype("<u2")
    enc, decoded = roundtrip(crafted.ForcedPalette(method), x, "uint16", chunk_elements=9000)
    assert len(enc.params["values"]) == 2 << k and palette_layout(1 << k).bits == k
    assert decoded.tobytes() == x.tobytes()
    assert palette_layout((1 << k) + 1).bits == k + 1


@pytest.mark.parametrize("method", ["ans", "packed", "zstd", "constant"])
def test_one_value_and_every_index_method_decode(method):
    """The writer codes a constant tensor as constant planes (0 bytes), but a palette of one
    value (b = 1) is valid: every method of the index plane decodes."""
    x = np.full(3000, -0.0, np.float32) if method == "constant" else grid(3000, 3)
    enc, decoded = roundtrip(crafted.ForcedPalette(method), x, "float32", chunk_elements=1000)
    assert enc.params["index"]["method"] == method and decoded.tobytes() == x.tobytes()
    one, _ = roundtrip(LosslessCodec(), np.full(3000, -0.0, np.float32), "float32")
    assert one.params["mode"] == "planes" and one.coded_bytes == 0


def test_unordered_table_with_repeats_decodes():
    """Readers take the table as it is: order, repeats and unused values are not errors."""
    x = np.array([7, -3, 100] * 30, dtype="<i2")
    table = (7, 0xFFFD, 7, 100, 5)
    enc, decoded = roundtrip(crafted.ForcedPalette("packed", table=table), x, "int16")
    assert decoded.tobytes() == x.tobytes()
    assert np.frombuffer(enc.params["values"], "<u2").tolist() == list(table)


def _writer_sizes(monkeypatch, x, dtype):
    with_palette = LosslessCodec().encode(x, BY_NAME[dtype], 1 << 20)
    monkeypatch.setattr(lossless, "PALETTE_WRITER_MAX_VALUES", 0)
    without = LosslessCodec().encode(x, BY_NAME[dtype], 1 << 20)
    monkeypatch.undo()

    def size(enc):
        return enc.coded_bytes + enc.table_bytes
    return with_palette, size(with_palette), without, size(without)


@pytest.mark.parametrize("case", ["grid", "two values", "tiled", "continuous", "few elements",
                                  "int32 steps"])
def test_writer_chooses_palette_only_when_smaller(monkeypatch, case):
    rng = np.random.default_rng(11)
    x, dtype = {
        "grid": (grid(30_000, 120), "float32"),
        "two values": (rng.choice([0.25, -1.5], 30_000).astype(np.float32), "float32"),
        "tiled": (np.tile(rng.standard_normal(64).astype(np.float32), 500), "float32"),
        "continuous": (rng.laplace(0, 0.02, 30_000).astype(np.float32), "float32"),
        "few elements": (np.array([0.5, 1.5, 0.5, 2.5] * 4, np.float32), "float32"),
        "int32 steps": (rng.choice(np.arange(-20, 20) * 1000, 30_000).astype("<i4"), "int32"),
    }[case]
    chosen, chosen_size, without, without_size = _writer_sizes(monkeypatch, x, dtype)
    assert without.params["mode"] != "palette"
    if chosen.params["mode"] == "palette":
        palette_size = chosen.coded_bytes + len(chosen.params["index"].get("table", {}).get(
            "freqs", b"")) + len(chosen.params["values"])
        assert palette_size < without.coded_bytes + without.table_bytes
    else:
        assert chosen.params == without.params and chosen_size == without_size
    assert {"grid": "palette", "two values": "palette", "continuous": "planes",
            "int32 steps": "palette"}.get(case, chosen.params["mode"]) == chosen.params["mode"]


def test_palette_check_does_not_sort_a_continuous_tensor(monkeypatch):
    """More distinct values than the writer takes among the first elements: no full sort."""
    calls = []
    real = np.unique

    def counting(a, *args, **kwargs):
        calls.append(a.size)
        return real(a, *args, **kwargs)
    monkeypatch.setattr(lossless.np, "unique", counting)
    x = np.random.default_rng(2).laplace(0, 0.02, 200_000).astype(np.float32)
    assert lossless.palette_of(x, BY_NAME["float32"]) is None
    assert calls == [lossless.PALETTE_SAMPLE]


# --- decoder checks ------------------------------------------------------------------------

def _params(values: bytes, index: dict) -> dict:
    return {"mode": "palette", "values": values, "index": index}


FIVE_I16 = np.array([7, -3, 100, 5, 9], "<i2").tobytes()


def test_index_beyond_the_table_is_a_format_error():
    index = np.array([0, 1, 4, 7, 2, 3], np.uint8)  # b = 3 for 5 values; 7 is beyond
    part = pack_bits(index, 3)
    with pytest.raises(FormatError, match="index 7 beyond"):
        decode(LosslessCodec, _params(FIVE_I16, {"method": "packed"}), [([part], 6)], "int16")
    good = decode(LosslessCodec, _params(FIVE_I16, {"method": "packed"}),
                  [([pack_bits(index[:3], 3)], 3)], "int16")
    assert good.tolist() == [7, -3, 9]


def test_index_beyond_the_table_in_a_later_batch_is_found():
    n = 3 * (1 << 16) + 5
    index = np.zeros(n, np.uint8)
    index[-1] = 6
    with pytest.raises(FormatError, match="beyond"):
        decode(LosslessCodec, _params(FIVE_I16, {"method": "zstd"}),
               [([lossless.zstd_plane(index, 3, 1)], n)], "int16")


def test_constant_index_beyond_the_table_fails_at_the_first_element():
    params = _params(FIVE_I16, {"method": "constant", "value": 6})
    assert decode(LosslessCodec, params, [([b""], 0)], "int16").size == 0
    with pytest.raises(FormatError, match="beyond"):
        decode(LosslessCodec, params, [([b""], 1)], "int16")


@pytest.mark.parametrize(("values", "index", "match"), [
    (FIVE_I16[:-1], {"method": "packed"}, "values"),          # not a whole number of values
    (b"", {"method": "packed"}, "values"),                     # n = 0
    (bytes(2 * 65537), {"method": "packed"}, "values"),        # n > 65536
    (FIVE_I16, {"method": "constant", "value": 8}, "3-bit"),   # beyond b bits
    (FIVE_I16, {"method": "rle"}, "rle"),
    (FIVE_I16, None, "index"),
])
def test_invalid_palette_parameters_are_format_errors(values, index, match):
    params = _params(values, index)
    if index is None:
        del params["index"]
    with pytest.raises(FormatError, match=match):
        LosslessCodec.decoder(params, BY_NAME["int16"])


def test_largest_table_is_accepted():
    values = np.arange(65536, dtype="<u2").tobytes()
    decoder = LosslessCodec.decoder(_params(values, {"method": "zstd"}), BY_NAME["uint16"])
    assert decoder.layout.bits == 16
    index = np.array([65535, 0, 12345], "<u2")
    out = decode(LosslessCodec, _params(values, {"method": "zstd"}),
                 [([lossless.zstd_plane(index, 16, 1)], 3)], "uint16")
    assert out.tolist() == [65535, 0, 12345]


def test_damaged_index_parts_are_typed_errors():
    params = _params(FIVE_I16, {"method": "packed"})
    with pytest.raises(CorruptDataError, match="packed"):
        decode(LosslessCodec, params, [([b"\x00"], 6)], "int16")
    with pytest.raises(FormatError, match="1 part"):
        decode(LosslessCodec, params, [([b"\x00", b""], 2)], "int16")
    with pytest.raises(CorruptDataError):
        decode(LosslessCodec, _params(FIVE_I16, {"method": "zstd"}), [([b""], 0)], "int16")
    table = crafted.table_for(np.array([0, 1, 2]), 0, 5)
    coding = PlaneCoding("ans", table=table)
    stream = coding.encode(np.array([0, 1, 2, 1], np.uint8), 3)
    ans_params = _params(FIVE_I16, coding.to_fields())
    assert decode(LosslessCodec, ans_params, [([stream], 4)], "int16").tolist() == [7, -3, 100,
                                                                                   -3]
    with pytest.raises(CorruptDataError):  # the stream holds 4 symbols, not 3
        decode(LosslessCodec, ans_params, [([stream], 3)], "int16")


# --- files ----------------------------------------------------------------------------------

def _model(tensors: dict[str, np.ndarray]):
    inits = [numpy_helper.from_array(v, k) for k, v in tensors.items()]
    nodes = [helper.make_node("Identity", [k], [k + "_out"]) for k in tensors]
    outputs = [helper.make_tensor_value_info(k + "_out", TensorProto.FLOAT, None)
               for k in tensors]
    return helper.make_model(helper.make_graph(nodes, "g", [], outputs, inits),
                             opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_file_with_a_palette_declares_1_5_and_the_reference_decoder_agrees(tmp_path):
    x = grid(20_000, 90)
    x.view("<u4")[[0, 1, 2]] = [0x80000000, 0x7FC00123, 0]
    path = tmp_path / "m.onnxz"
    onnxz.save(_model({"w": x, "c": np.random.default_rng(1).standard_normal(
        5000).astype(np.float32)}), path, lossless=True)
    data = path.read_bytes()
    assert int.from_bytes(data[10:12], "little") == 5
    info = onnxz.info(path)
    assert [t.mode for t in info.tensors] == ["palette", "planes"]
    reference = reference_decoder.decode(data)
    restored = numpy_helper.to_array(onnxz.load(path).graph.initializer[0])
    assert restored.tobytes() == x.tobytes()
    assert reference.tensors[("graph", "initializer", 0)] == x.tobytes()
    assert reference.model.SerializeToString() == onnxz.load(path).SerializeToString()


def test_file_without_a_palette_keeps_its_version(tmp_path):
    path = tmp_path / "m.onnxz"
    onnxz.save(_model({"c": np.random.default_rng(1).standard_normal(
        500).astype(np.float32)}), path, lossless=True)
    assert int.from_bytes(path.read_bytes()[10:12], "little") < 5
