"""Lossless mode ``magnitude`` (format 1.7, SPEC.md §6.8): a float's magnitude in bytes and
its sign apart; bit-exact, chosen only where smaller, refused with typed errors when damaged
or in a file declaring an older version."""

from __future__ import annotations

import container_edit
import crafted
import numpy as np
import pytest
import reference_decoder
from onnx import TensorProto, helper, numpy_helper
from test_codecs import decode, roundtrip

import onnxz
from onnxz.codecs import LosslessCodec, lossless
from onnxz.codecs.lossless import (
    join_planes,
    magnitude_layouts,
    pack_bits,
    split_planes,
    zstd_plane,
)
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError

FLOATS = ("float16", "bfloat16", "float32", "float64")
SPECIAL_F16 = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFE00, 0x7C01, 0x0001,
                        0x8001, 0x03FF, 0x83FF, 0x7BFF, 0xFBFF], "<u2")
"""+0.0, −0.0, ±inf, NaNs (quiet with a payload, negative quiet, signalling), subnormals
(smallest and largest, both signs), ±65504."""


def specials(dtype: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` Laplacian weights of ``dtype`` with ±0.0, ±inf, NaN payloads and subnormals at
    the front."""
    etype = BY_NAME[dtype]
    rng = np.random.default_rng(seed)
    x = rng.laplace(0, 0.05, n)
    if dtype == "bfloat16":
        words = (x.astype(np.float32).view("<u4") >> 16).astype("<u2")
        words[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001]
        return words
    out = x.astype(etype.numpy)
    word = out.view(f"<u{etype.width}")
    top, mantissa = 1 << (8 * etype.width - 1), 1 << etype.mantissa_bits
    inf = ((1 << etype.exponent_bits) - 1) * mantissa
    word[:8] = [0, top, inf, top | inf, inf | 1, top | inf | (mantissa >> 1) | 5, 1,
                top | (mantissa - 1)]
    return out


@pytest.mark.parametrize("dtype", FLOATS)
def test_magnitude_planes_join_back_to_every_bit_pattern(dtype):
    etype = BY_NAME[dtype]
    if etype.width == 2:
        raw = np.arange(1 << 16, dtype="<u2").view(np.uint8)
    else:
        raw = np.random.default_rng(2).integers(0, 256, 4099 * etype.width, dtype=np.uint8)
    layouts = magnitude_layouts(etype)
    planes = split_planes(raw.view(etype.numpy), etype, layouts)
    assert [p.bits for p in layouts] == [7] + [8] * (etype.width - 1) + [1]
    assert sum(p.bits for p in layouts) == 8 * etype.width
    assert join_planes(planes, etype, None, layouts).tobytes() == raw.tobytes()
    for k, plane in enumerate(planes):  # a constant plane joins as the array of its value
        for value in {0, int(plane.max())}:
            as_int = [*planes[:k], value, *planes[k + 1:]]
            as_array = [*planes[:k], np.full(plane.size, value, plane.dtype), *planes[k + 1:]]
            assert (join_planes(as_int, etype, np.empty(plane.size, etype.numpy), layouts)
                    .tobytes() == join_planes(as_array, etype, None, layouts).tobytes())


def test_float16_planes_are_the_exponent_with_2_mantissa_bits_the_low_byte_and_the_sign():
    words = SPECIAL_F16
    planes = split_planes(words.view(np.float16), BY_NAME["float16"],
                          magnitude_layouts(BY_NAME["float16"]))
    assert planes[0].tolist() == ((words & 0x7FFF) >> 8).tolist()
    assert (planes[0] >> 2).tolist() == ((words >> 10) & 0x1F).tolist()  # E
    assert planes[1].tolist() == (words & 0xFF).tolist()
    assert planes[2].tolist() == (words >> 15).tolist()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("method", ["ans", "packed", "zstd"])
def test_every_float_round_trips_in_mode_magnitude(dtype, method):
    x = specials(dtype, 5000, seed=len(dtype))
    etype = BY_NAME[dtype]
    methods = [method] * (etype.width + 1)
    enc, decoded = roundtrip(crafted.ForcedPlanes(methods, mode="magnitude"), x, dtype,
                             chunk_elements=1234)
    assert enc.params["mode"] == "magnitude" and len(enc.params["planes"]) == etype.width + 1
    assert decoded.tobytes() == x.tobytes()


def test_constant_planes_decode():
    x = np.abs(np.random.default_rng(4).laplace(0, 0.05, 3000)).astype(np.float16)  # sign 0
    enc, decoded = roundtrip(crafted.ForcedPlanes(["zstd", "packed", "constant"],
                                                  mode="magnitude"), x, "float16", 1000)
    assert enc.params["planes"][2] == {"method": "constant", "value": 0}
    assert decoded.tobytes() == x.tobytes()
    minus = np.full(300, -0.0, np.float16)
    enc, decoded = roundtrip(crafted.ForcedPlanes(["constant"] * 3, mode="magnitude"), minus,
                             "float16")
    assert [p["value"] for p in enc.params["planes"]] == [0, 0, 1]
    assert decoded.tobytes() == minus.tobytes() and enc.coded_bytes == 0


def sign_symmetric(n: int, dtype: str = "float16", seed: int = 0) -> np.ndarray:
    """A Fourier-like basis whose rows repeat magnitudes under varying signs."""
    rng = np.random.default_rng(seed)
    base = np.cos(np.outer(np.arange(1, 33), np.arange(n // 32)) * 0.37).reshape(-1)
    signs = rng.choice([-1.0, 1.0], base.size)
    x = (base * signs).astype(np.float32)
    return (x.astype(np.float16) if dtype == "float16"
            else (x.view("<u4") >> 16).astype("<u2"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_writer_chooses_magnitude_where_smaller_and_bit_exact(monkeypatch, dtype):
    x = sign_symmetric(32 * 1024, dtype)
    x.view("<u2")[:6] = SPECIAL_F16[:6] if dtype == "float16" else [0, 0x8000, 0x7F80, 0xFF80,
                                                                    0x7FC1, 1]
    enc, decoded = roundtrip(LosslessCodec(), x, dtype, chunk_elements=10_000)
    assert enc.params["mode"] == "magnitude" and enc.format_minor == lossless.MAGNITUDE_MINOR
    assert decoded.tobytes() == x.tobytes()
    monkeypatch.setattr(lossless, "MAGNITUDE_WRITER_WIDTHS", frozenset())
    without = LosslessCodec().encode(x, BY_NAME[dtype], 10_000)
    assert without.params["mode"] != "magnitude"
    assert enc.coded_bytes + enc.table_bytes < without.coded_bytes + without.table_bytes


@pytest.mark.parametrize(("case", "mode"), [("uniform words", "zstd"), ("constant", "planes"),
                                            ("float32", "planes"), ("grid", "palette")])
def test_writer_keeps_the_other_modes_where_magnitude_is_not_smaller(case, mode):
    rng = np.random.default_rng(8)
    x, dtype = {
        "uniform words": (rng.integers(0, 1 << 16, 20_000).astype("<u2").view(np.float16),
                          "float16"),
        "constant": (np.full(5000, -1.5, np.float16), "float16"),  # 0 bytes either way
        "float32": (sign_symmetric(32 * 1024).astype(np.float32), "float32"),  # not tried
        "grid": (rng.choice(np.arange(-20, 20) / 8, 20_000).astype(np.float16), "float16"),
    }[case]
    enc, decoded = roundtrip(LosslessCodec(), x, dtype)
    assert enc.params["mode"] == mode and decoded.tobytes() == x.tobytes()
    assert enc.format_minor < lossless.MAGNITUDE_MINOR


# --- decoder checks ------------------------------------------------------------------------

def _params(*planes: dict) -> dict:
    return {"mode": "magnitude", "planes": list(planes)}


PACKED3 = _params({"method": "packed"}, {"method": "packed"}, {"method": "packed"})


def test_spec_example_decodes():
    """SPEC.md §6.8's example, byte for byte."""
    parts = [bytes.fromhex("78F0000FC0"), bytes.fromhex("0000000101"), bytes.fromhex("60")]
    out = decode(LosslessCodec, PACKED3, [(parts, 5)], "float16")
    assert out.view("<u2").tolist() == [0x3C00, 0xBC00, 0x8000, 0x0001, 0x7E01]
    enc = crafted.ForcedPlanes(["packed"] * 3, mode="magnitude").encode(
        out, BY_NAME["float16"], 1 << 20)
    assert list(enc.chunks[0].parts) == parts


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float8e4m3fn", "int32", "bool"])
def test_magnitude_of_a_non_float_type_is_a_format_error(dtype):
    planes = [{"method": "packed"}] * (BY_NAME[dtype].width + 1)
    with pytest.raises(FormatError, match="not a float type"):
        LosslessCodec.decoder(_params(*planes), BY_NAME[dtype])


@pytest.mark.parametrize(("planes", "match"), [
    ([{"method": "packed"}] * 2, "3 planes"),                                  # W, not W + 1
    ([{"method": "packed"}] * 4, "3 planes"),
    ([{"method": "constant", "value": 128}, {"method": "packed"}, {"method": "packed"}],
     "7-bit"),                                                                 # plane 0: 7 bits
    ([{"method": "packed"}, {"method": "packed"}, {"method": "constant", "value": 2}],
     "1-bit"),                                                                 # the sign: 1 bit
    ([{"method": "packed"}, {"method": "rle"}, {"method": "packed"}], "rle"),
    (None, "planes"),
])
def test_invalid_magnitude_parameters_are_format_errors(planes, match):
    params = _params(*(planes or []))
    if planes is None:
        del params["planes"]
    with pytest.raises(FormatError, match=match):
        LosslessCodec.decoder(params, BY_NAME["float16"])


def test_symbol_beyond_a_plane_is_a_format_error():
    """Plane 0 is 7 bits and the sign 1 bit: a zstd or ANS symbol beyond is a format error."""
    top = np.array([3, 200, 5], np.uint8)
    with pytest.raises(FormatError, match="7-bit"):
        decode(LosslessCodec, _params({"method": "zstd"}, {"method": "packed"},
                                      {"method": "packed"}),
               [([zstd_plane(top, 8, 1), bytes(3), b"\x00"], 3)], "float16")
    sign = np.array([0, 1, 2], np.uint8)
    with pytest.raises(FormatError, match="1-bit"):
        decode(LosslessCodec, _params({"method": "packed"}, {"method": "packed"},
                                      {"method": "zstd"}),
               [([pack_bits(np.zeros(3, np.uint8), 7), bytes(3), zstd_plane(sign, 8, 1)], 3)],
               "float16")
    table = crafted.table_for(np.array([0, 1, 2]), 0, 3)
    coding = lossless.PlaneCoding("ans", table=table)
    params = _params({"method": "packed"}, {"method": "packed"}, coding.to_fields())
    with pytest.raises(FormatError, match="1-bit"):
        decode(LosslessCodec, params, [([pack_bits(np.zeros(3, np.uint8), 7), bytes(3),
                                         coding.encode(sign, 8)], 3)], "float16")


def test_damaged_parts_are_typed_errors():
    good = [bytes.fromhex("78F0000FC0"), bytes.fromhex("0000000101"), bytes.fromhex("60")]
    assert decode(LosslessCodec, PACKED3, [(good, 5)], "float16").size == 5
    with pytest.raises(CorruptDataError, match="packed"):
        decode(LosslessCodec, PACKED3, [([good[0][:-1], good[1], good[2]], 5)], "float16")
    with pytest.raises(CorruptDataError, match="packed"):
        decode(LosslessCodec, PACKED3, [([good[0], good[1], good[2] + b"\x00"], 5)], "float16")
    with pytest.raises(FormatError, match="3 planes"):
        decode(LosslessCodec, PACKED3, [(good[:2], 5)], "float16")
    zstd3 = _params({"method": "zstd"}, {"method": "packed"}, {"method": "packed"})
    with pytest.raises(CorruptDataError):
        decode(LosslessCodec, zstd3, [([b"", good[1], good[2]], 5)], "float16")
    with pytest.raises(CorruptDataError, match="constant"):
        decode(LosslessCodec, _params({"method": "packed"}, {"method": "packed"},
                                      {"method": "constant", "value": 0}),
               [(good, 5)], "float16")
    sign = np.array([0, 1, 1, 0, 1], np.uint8)
    coding = lossless.PlaneCoding("ans", table=crafted.table_for(sign, 0, 2))
    ans3 = _params({"method": "packed"}, {"method": "packed"}, coding.to_fields())
    stream = coding.encode(sign, 1)
    assert decode(LosslessCodec, ans3, [([good[0], good[1], stream], 5)], "float16").size == 5
    with pytest.raises(CorruptDataError):  # the stream holds 5 symbols, not 4
        decode(LosslessCodec, ans3, [([good[0][:4], good[1][:4], stream], 4)], "float16")


# --- files ----------------------------------------------------------------------------------

def _model(tensors: dict[str, np.ndarray]):
    kinds = {np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float32): TensorProto.FLOAT}
    inits = []
    for k, v in tensors.items():
        if v.dtype == np.dtype("<u2"):  # bfloat16 words
            inits.append(helper.make_tensor(k, TensorProto.BFLOAT16, v.shape, v.tobytes(),
                                            raw=True))
        else:
            inits.append(numpy_helper.from_array(v, k))
    nodes = [helper.make_node("Identity", [k], [k + "_out"]) for k in tensors]
    outputs = [helper.make_tensor_value_info(k + "_out", kinds.get(v.dtype, TensorProto.BFLOAT16),
                                             None) for k, v in tensors.items()]
    return helper.make_model(helper.make_graph(nodes, "g", [], outputs, inits),
                             opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _pack(tmp_path, tensors):
    path = tmp_path / "m.onnxz"
    onnxz.save(_model(tensors), path, lossless=True)
    return path, path.read_bytes()


def test_file_with_magnitude_declares_1_7_and_the_reference_decoder_agrees(tmp_path):
    x = sign_symmetric(16 * 1024)
    x.view("<u2")[:len(SPECIAL_F16)] = SPECIAL_F16
    b = sign_symmetric(32 * 1024, "bfloat16", seed=1)
    path, data = _pack(tmp_path, {"w": x, "b": b, "c": np.random.default_rng(1).standard_normal(
        5000).astype(np.float32)})
    assert int.from_bytes(data[10:12], "little") == 7
    assert [t.mode for t in onnxz.info(path).tensors] == ["magnitude", "magnitude", "planes"]
    model = onnxz.load(path)
    assert numpy_helper.to_array(model.graph.initializer[0]).tobytes() == x.tobytes()
    reference = reference_decoder.decode(data)
    assert reference.tensors[("graph", "initializer", 0)] == x.tobytes()
    assert reference.tensors[("graph", "initializer", 1)] == b.tobytes()
    assert reference.model.SerializeToString() == model.SerializeToString()


def test_file_without_magnitude_keeps_its_version(tmp_path):
    rng = np.random.default_rng(1)
    _, data = _pack(tmp_path, {"c": rng.standard_normal(500).astype(np.float32),
                               "h": rng.integers(0, 1 << 16, 4000).astype("<u2").view(
                                   np.float16)})
    assert int.from_bytes(data[10:12], "little") < 5


def test_magnitude_in_a_file_declaring_1_6_is_a_format_error(tmp_path):
    """SPEC.md §6.8: the mode needs format 1.7; a file declaring 1.6 that uses it is refused
    (a 1.6 reader would not know the mode) by onnxz and by the reference decoder, before any
    tensor is decoded."""
    _, data = _pack(tmp_path, {"w": sign_symmetric(16 * 1024)})
    for minor in (6, 0):
        old = container_edit.with_version(data, 1, minor)
        path = tmp_path / f"old_{minor}.onnxz"
        path.write_bytes(old)
        with pytest.raises(FormatError, match=r"magnitude.*1\.7"):
            onnxz.load(path)
        with pytest.raises(FormatError, match="magnitude"):
            onnxz.open(path)
        with pytest.raises(reference_decoder.DecodeError, match="magnitude") as caught:
            reference_decoder.decode(old)
        assert caught.value.kind == "format"
    newer = tmp_path / "newer.onnxz"
    newer.write_bytes(container_edit.with_version(data, 1, 8))  # a later minor reads
    assert onnxz.load(newer).SerializeToString() == onnxz.load(tmp_path / "m.onnxz"
                                                                ).SerializeToString()
