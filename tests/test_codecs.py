"""Tensor codecs on their own: exactness, the quantizer formula, entropy efficiency."""

from __future__ import annotations

import numpy as np
import pytest

from onnxz.codecs import REGISTRY, DeadzoneCodec, LosslessCodec, NotQuantizable, ans
from onnxz.codecs.deadzone import dequantize, quantize
from onnxz.codecs.lossless import plane_layouts
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError


def roundtrip(codec, values, dtype, chunk_elements=1 << 20):
    etype = BY_NAME[dtype]
    enc = codec.encode(values, etype, chunk_elements)
    parts = [type(codec).decode_chunk(enc.params, c.parts, c.count, etype) for c in enc.chunks]
    decoded = np.concatenate(parts)
    assert decoded.tobytes() == enc.reconstruction.tobytes()  # what the writer checksums
    return enc, decoded


@pytest.mark.parametrize("dtype", sorted(BY_NAME))
def test_lossless_is_bit_exact_for_every_dtype(dtype):
    etype = BY_NAME[dtype]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, 5000 * etype.width, dtype=np.uint8).view(etype.numpy)
    if dtype in ("float32", "float16", "float64"):
        raw = rng.laplace(0, 0.05, 5000).astype(etype.numpy)
        raw[:4] = [np.inf, -np.inf, np.nan, -0.0]
    _, decoded = roundtrip(LosslessCodec(), raw, dtype, chunk_elements=1234)
    assert decoded.tobytes() == raw.tobytes()


def test_lossless_compresses_laplacian_floats_below_raw():
    x = np.random.default_rng(1).laplace(0, 0.02, 100_000).astype(np.float32)
    enc, _ = roundtrip(LosslessCodec(), x, "float32")
    assert enc.params["mode"] == "planes"
    assert enc.coded_bytes < 0.9 * x.nbytes


def test_float_planes_cover_every_bit_once():
    for name in ("float32", "float16", "bfloat16", "float64"):
        etype = BY_NAME[name]
        assert sum(p.bits for p in plane_layouts(etype)) == 8 * etype.width


def test_deadzone_formula_matches_the_research_definition():
    step, dz = 0.1, 0.3
    x = np.array([0.0, 0.029, 0.031, -0.031, 0.13, 0.131, -1.0])
    q = quantize(x, step, dz)
    expected = [0 if abs(v) < dz * step else int(np.sign(v) * np.ceil(abs(v) / step - dz))
                for v in x]
    assert q.tolist() == expected
    xhat = dequantize(q, step, dz)
    assert xhat.tolist() == [float(np.sign(k) * step * (abs(k) + (dz - 0.5))) for k in q]


@pytest.mark.parametrize("deadzone", [0.0, 0.25, 0.5, 0.75])
def test_deadzone_error_is_bounded_by_one_step(deadzone):
    x = np.random.default_rng(2).laplace(0, 1, 20_000)
    step = 0.05
    err = np.abs(dequantize(quantize(x, step, deadzone), step, deadzone) - x)
    bound = max(deadzone, 0.5) * step
    assert err.max() <= bound + 1e-12


def test_midrise_never_reconstructs_zero_and_midtread_does():
    x = np.random.default_rng(3).standard_normal(1000)
    assert (dequantize(quantize(x, 0.1, 0.0), 0.1, 0.0) != 0).all()
    assert (dequantize(quantize(x, 0.1, 0.5), 0.1, 0.5) == 0).any()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_deadzone_keeps_dtype_and_precision(dtype):
    etype = BY_NAME[dtype]
    x = np.random.default_rng(4).laplace(0, 0.05, 50_000)
    values = x.astype(np.float32)
    if dtype == "bfloat16":
        values = (values.view(np.uint32) >> 16).astype(np.uint16)
    else:
        values = x.astype(etype.numpy)
    enc, decoded = roundtrip(DeadzoneCodec(1 / 64, 0.5), values, dtype, chunk_elements=7000)
    assert decoded.dtype == etype.numpy
    assert len(enc.chunks) == 8
    if dtype != "bfloat16":
        err = decoded.astype(np.float64) - values.astype(np.float64)
        snr = 10 * np.log10((values.astype(np.float64) ** 2).sum() / (err**2).sum())
        assert snr > 40


def test_deadzone_coded_size_within_one_percent_of_entropy():
    x = np.random.default_rng(5).laplace(0, 0.05, 200_000).astype(np.float32)
    enc, _ = roundtrip(DeadzoneCodec(1 / 32, 0.5), x, "float32")
    assert enc.entropy_bits is not None
    assert enc.coded_bytes <= 1.01 * enc.entropy_bits / 8 + 8 * len(enc.chunks)


def test_outliers_are_escaped_not_tabled():
    x = np.random.default_rng(6).laplace(0, 0.05, 100_000)
    x[[10, 5000, 99_999]] = [1e6, -3e7, 9.8e7]  # BatchNorm-variance-like outliers
    enc, decoded = roundtrip(DeadzoneCodec(1 / 64, 0.5), x.astype(np.float32), "float32")
    assert enc.params["escape"] is True
    assert enc.params["table"]["size"] < 10_000
    assert enc.table_bytes < 20_000
    np.testing.assert_allclose(decoded[[10, 5000, 99_999]], x[[10, 5000, 99_999]], rtol=1e-3)


@pytest.mark.parametrize("values", [np.zeros(5000), np.full(5000, 3.0),
                                    np.array([np.nan] * 5000)])
def test_deadzone_declines_degenerate_tensors(values):
    with pytest.raises(NotQuantizable):
        DeadzoneCodec(1 / 64, 0.5).encode(values.astype(np.float32), BY_NAME["float32"], 1 << 20)


def test_ans_table_validation():
    with pytest.raises(FormatError):
        ans.FrequencyTable(0, 8, np.array([100, 100], dtype=np.uint32))  # sums to 200, not 256
    with pytest.raises(FormatError):
        ans.FrequencyTable(0, 8, np.array([256], dtype=np.uint32))  # one symbol


def test_ans_stream_damage_is_an_onnxz_error():
    symbols = np.random.default_rng(7).integers(-5, 5, 1000)
    table = ans.FrequencyTable.fit(symbols)
    stream = ans.encode(symbols, table)
    with pytest.raises(CorruptDataError):
        ans.decode(stream[:-1], table, symbols.size)
    with pytest.raises(CorruptDataError):
        ans.decode(stream[:-4] + b"\0\0\0\0", table, symbols.size)


def test_registry_lists_every_codec_once():
    assert set(REGISTRY) == {"lossless", "deadzone"}
    assert all(cls.codec_id == key for key, cls in REGISTRY.items())


def test_ans_stream_of_only_the_first_symbol_is_empty_and_decodes():
    table = ans.FrequencyTable.fit(np.array([0, 0, 0, 5]))
    stream = ans.encode(np.zeros(100, dtype=np.int64), table)
    assert stream == b""
    assert ans.decode(stream, table, 100).tolist() == [0] * 100


def test_lossless_chunk_whose_plane_is_all_the_first_symbol():
    values = np.concatenate([np.arange(1000), np.arange(1000) << 9]).astype(np.int32)
    _, decoded = roundtrip(LosslessCodec(), values, "int32", chunk_elements=1000)
    assert decoded.tobytes() == values.tobytes()


def test_ans_leftover_words_are_corruption():
    symbols = np.random.default_rng(8).integers(0, 4, 200)
    table = ans.FrequencyTable.fit(symbols)
    stream = ans.encode(symbols, table)
    with pytest.raises(CorruptDataError, match="left over"):
        ans.decode(b"\x07\0\0\0" + stream, table, symbols.size)


def test_varints_must_be_shortest():
    from onnxz.codecs.varint import decode_uvarints

    with pytest.raises(FormatError, match="shortest"):
        decode_uvarints(b"\x80\x00", 1)
    with pytest.raises(FormatError, match="64 bits"):
        decode_uvarints(b"\xff" * 9 + b"\x02", 1)


def test_ans_bytes_are_pinned():
    """The ANS arithmetic is part of the format (SPEC.md §8): these bytes never change."""
    table = ans.FrequencyTable(-2, 8, np.array([10, 40, 150, 40, 16], dtype=np.uint32))
    symbols = np.array([0, 0, 1, -1, 0, 2, -2, 0, 0, 1, 0, -1, 0, 0, 0, 2, 1, 0, -1, 0])
    assert ans.encode(symbols, table).hex() == "00008aec56ff6f03"
    assert ans.decode(bytes.fromhex("00008aec56ff6f03"), table, 20).tolist() == symbols.tolist()
