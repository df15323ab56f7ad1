"""Tensor codecs on their own: exactness, the quantizer formula, entropy efficiency."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zstandard

from onnxz.codecs import REGISTRY, DeadzoneCodec, LosslessCodec, NotQuantizable, ans
from onnxz.codecs.base import BATCH
from onnxz.codecs.deadzone import (
    choose_range_of_histogram,
    dequantize,
    from_float64,
    quantize,
)
from onnxz.codecs.lossless import (
    join_planes,
    pack_bits,
    plane_layouts,
    split_planes,
    zstd_plane,
)
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError
from onnxz.zstdframe import decompress_exact


def decode(codec, params, chunks, dtype):
    """The tensor of ``chunks`` ((parts, count) pairs) decoded as the reader does."""
    etype = BY_NAME[dtype]
    decoder = codec.decoder(params, etype)
    out = np.empty(sum(count for _, count in chunks), dtype=etype.numpy)
    start = 0
    for parts, count in chunks:
        decoder.decode_into(parts, out[start:start + count])
        start += count
    return out


def roundtrip(codec, values, dtype, chunk_elements=1 << 20):
    enc = codec.encode(values, BY_NAME[dtype], chunk_elements)
    decoded = decode(type(codec), enc.params, [(c.parts, c.count) for c in enc.chunks], dtype)
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_planes_join_back_to_every_bit_pattern(dtype):
    etype = BY_NAME[dtype]
    raw = np.random.default_rng(2).integers(0, 256, 4099 * etype.width, dtype=np.uint8)
    values = raw.view(etype.numpy)
    assert join_planes(split_planes(values, etype), etype).tobytes() == raw.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64", "int16"])
def test_a_constant_plane_joins_as_the_array_of_its_value(dtype):
    etype = BY_NAME[dtype]
    raw = np.random.default_rng(3).integers(0, 256, 40 * etype.width, dtype=np.uint8)
    planes = split_planes(raw.view(etype.numpy), etype)
    for k, plane in enumerate(planes):
        for value in {0, 1, int(plane[0]), int(plane.max())}:
            as_array = [*planes[:k], np.full(plane.size, value, plane.dtype), *planes[k + 1 :]]
            as_int = [*planes[:k], value, *planes[k + 1 :]]
            out = np.empty(plane.size, etype.numpy)
            assert (join_planes(as_int, etype, out).tobytes()
                    == join_planes(as_array, etype).tobytes())


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


def test_deadzone_declines_a_step_too_fine_for_any_table(tmp_path):
    """Symbols spanning more than a table's alphabet even with half of them escaped: the
    codec declines (the writer stores the tensor losslessly) instead of failing an assert."""
    x = np.random.default_rng(0).laplace(0, 1, 200_000).astype(np.float32)
    with pytest.raises(NotQuantizable, match="too fine"):
        DeadzoneCodec(1e-6, 0.5).encode(x, BY_NAME["float32"], 1 << 20)
    import onnx.helper as h
    import onnx.numpy_helper as nh

    import onnxz

    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", 1, [1, 400])],
                         [h.make_tensor_value_info("y", 1, [1, 500])],
                         [nh.from_array(x.reshape(400, 500), "w")])
    source = tmp_path / "m.onnx"
    source.write_bytes(h.make_model(graph).SerializeToString())
    info = onnxz.save(source, tmp_path / "m.onnxz", step_rel=1e-6)
    assert [t.codec for t in info.tensors] == ["lossless"]


def test_ans_table_validation():
    with pytest.raises(FormatError):
        ans.FrequencyTable(0, 8, np.array([100, 100], dtype=np.uint32))  # sums to 200, not 256
    with pytest.raises(FormatError):
        ans.FrequencyTable(0, 8, np.array([256], dtype=np.uint32))  # one symbol


def test_ans_table_fit_stops_early_yet_picks_the_table_of_least_total_bits():
    def every_precision(counts, offset):  # the whole walk, each total computed
        least = max(ans.MIN_TABLE_PRECISION, int(np.ceil(np.log2(counts.size))) + 1)
        tables = [ans.FrequencyTable(offset, p, ans._quantize_counts(counts, p))
                  for p in range(least, ans.CODER_PRECISION + 1)]
        totals = [t.cost_bits(counts) + 8 * t.stored_size for t in tables]
        return tables[int(np.argmin(totals))]  # the lowest precision on a tie

    rng = np.random.default_rng(11)
    histograms = [np.bincount(np.clip(np.round(rng.laplace(0, scale, n)), -999, 999)
                              .astype(np.int64) + 999)
                  for scale in (0.4, 3, 40, 400) for n in (50, 5_000, 500_000)]
    histograms += [rng.integers(0, 5, 300), rng.integers(0, 10**6, 1000),
                   np.eye(1, 700, 350, dtype=np.int64)[0] * 10**6, np.zeros(40, np.int64)]
    chosen = set()
    for counts in histograms:
        fitted = ans.FrequencyTable.fit_counts(counts, -7)
        expected = every_precision(counts, -7)
        assert (fitted.offset, fitted.precision) == (-7, expected.precision)
        assert fitted.freqs.tolist() == expected.freqs.tolist()
        chosen.add(fitted.precision)
    assert len(chosen) > 3  # the histograms reach several precisions


def test_ans_stream_damage_is_an_onnxz_error():
    symbols = np.random.default_rng(7).integers(-5, 5, 1000)
    table = ans.FrequencyTable.fit(symbols)
    stream = ans.encode(symbols, table)
    with pytest.raises(CorruptDataError):
        ans.decode(stream[:-1], table, symbols.size)
    with pytest.raises(CorruptDataError):
        ans.decode(stream[:-4] + b"\0\0\0\0", table, symbols.size)


def test_registry_lists_every_codec_once():
    assert set(REGISTRY) == {"lossless", "deadzone", "mulaw", "minifloat", "trellis",
                             "predictive", "deadzone_zstd", "trellis_zstd"}
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


def test_two_byte_zigzag_is_the_general_decoding():
    """Every 16-bit word, and sequences of them: the table's values where the general path
    decodes one two-byte value each, None wherever it does not."""
    from onnxz.codecs import varint

    for word in range(1 << 16):
        data = word.to_bytes(2, "little")
        try:
            general = varint.zigzag_decode(varint._decode_uvarints_scalar(data, 1)).tolist()
        except FormatError:  # not one value, not in its shortest form
            general = None
        fast = varint.two_byte_zigzag(data)
        assert (fast.tolist() if fast is not None else None) == general
    values = np.random.default_rng(0).integers(-8192, 8192, 300)
    data = varint.encode_uvarints(varint.zigzag_encode(values))
    assert len(data) < 2 * values.size  # some one-byte values: no two-byte sequence
    two_byte = values[np.abs(values) >= 64]
    data = varint.encode_uvarints(varint.zigzag_encode(two_byte))
    assert varint.two_byte_zigzag(data).tolist() == two_byte.tolist()
    assert varint.two_byte_zigzag(data + b"\x01\x02") is None
    assert varint.two_byte_zigzag(b"") is None and varint.two_byte_zigzag(data[:-1]) is None


def test_varints_must_be_shortest():
    from onnxz.codecs.varint import decode_uvarints

    with pytest.raises(FormatError, match="shortest"):
        decode_uvarints(b"\x80\x00", 1)
    with pytest.raises(FormatError, match="64 bits"):
        decode_uvarints(b"\xff" * 9 + b"\x02", 1)


@pytest.mark.parametrize("values", [
    [200] * 60,                      # every value two bytes: the two-byte path
    [200] * 59 + [5],                # one short value among them
    [200] * 59 + [1 << 20],          # one long value
    [1 << 40] * 60,
])
def test_varint_paths_agree(values):
    """The two-byte path, the plain loop and the vectorized decoder: one result."""
    from onnxz.codecs import varint

    data = varint.encode_uvarints(np.array(values, dtype=np.uint64))
    for count in (None, len(values)):
        assert varint.decode_uvarints(data, count).tolist() == values
        assert varint._decode_uvarints_scalar(data, count).tolist() == values
    bad = data[:-2] + b"\x80\x00"  # the last value not in its shortest form
    with pytest.raises(FormatError, match="shortest"):
        varint.decode_uvarints(bad)


def test_ans_bytes_are_pinned():
    """The ANS arithmetic is part of the format (SPEC.md §8): these bytes never change."""
    table = ans.FrequencyTable(-2, 8, np.array([10, 40, 150, 40, 16], dtype=np.uint32))
    symbols = np.array([0, 0, 1, -1, 0, 2, -2, 0, 0, 1, 0, -1, 0, 0, 0, 2, 1, 0, -1, 0])
    assert ans.encode(symbols, table).hex() == "00008aec56ff6f03"
    assert ans.decode(bytes.fromhex("00008aec56ff6f03"), table, 20).tolist() == symbols.tolist()


def test_escape_range_is_never_empty():
    """Two far-apart symbols once gave lo > hi, and an encoder crash on small tensors."""
    lo, hi = choose_range_of_histogram(*ans.histogram(np.array([1, 100])))
    assert lo <= hi
    x = np.random.default_rng(0).laplace(0, 0.05, 64).astype(np.float32)
    roundtrip(DeadzoneCodec(1 / 64, 0.5), x, "float32")


DEADZONE_PARAMS = {"step": 0.1, "deadzone": 0.5, "reconstruction": "midpoint", "escape": False,
                   "table": {"offset": 0, "precision": 8, "size": 2, "freqs": b"\x80\x01\x80\x01"}}


@pytest.mark.parametrize("key", ["step", "deadzone"])
def test_a_bool_is_not_a_number(key):
    with pytest.raises(FormatError, match=key):
        DeadzoneCodec.decoder({**DEADZONE_PARAMS, key: True}, BY_NAME["float32"])


def test_symbols_beyond_2_pow_53_are_refused_even_at_int64_min():
    """|−2**63| overflows int64: a bound check through abs() would let it through."""
    table = {**DEADZONE_PARAMS["table"], "offset": -(2**63)}
    decoder = DeadzoneCodec.decoder({**DEADZONE_PARAMS, "table": table}, BY_NAME["float32"])
    with pytest.raises(FormatError, match="beyond 2"):
        decoder.decode_into([b"", b""], np.empty(10, dtype=np.float32))  # all index 0


@pytest.mark.parametrize("payload", [b"", bytes(range(256)) * 4])
def test_zstd_frames_without_content_size_decode(payload):
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    assert decompress_exact(frame, len(payload), "x") == payload
    out = np.empty(len(payload), dtype=np.uint8)
    LosslessCodec.decoder({"mode": "zstd"}, BY_NAME["uint8"]).decode_into([frame], out)
    assert out.tobytes() == payload


def test_zstd_frame_damage_is_corrupt_data():
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"abc" * 100)
    for bad, size in ((frame[:-1], 300), (frame, 299), (frame, 301), (b"", 0), (frame[:3], 300),
                      (frame + b"trailing", 300)):
        with pytest.raises(CorruptDataError, match=r"^x: "):
            decompress_exact(bad, size, "x")
    assert decompress_exact(frame, 300, "x") == b"abc" * 100


@pytest.mark.parametrize(("dtype", "codec"), [
    ("float16", LosslessCodec()), ("float32", LosslessCodec()), ("uint8", LosslessCodec()),
    ("float16", DeadzoneCodec(1 / 16, 0.25)), ("float32", DeadzoneCodec(1 / 16, 0.25)),
])
def test_chunks_longer_than_a_batch_decode_exactly(dtype, codec):
    """Batches split packed planes on bytes and escapes across batch boundaries."""
    etype = BY_NAME[dtype]
    rng = np.random.default_rng(11)
    n = 2 * BATCH + 13
    values = rng.integers(0, 256, n * etype.width, dtype=np.uint8).view(etype.numpy)
    if etype.is_float:
        values = rng.laplace(0, 1, n).astype(etype.numpy)
        values[[5, BATCH - 1, BATCH, 2 * BATCH + 7]] = [300, -400, 500, -600]  # escapes
    enc, decoded = roundtrip(codec, values, dtype)
    assert len(enc.chunks) == 1
    if codec.codec_id == "lossless":
        assert decoded.tobytes() == values.tobytes()
    else:
        assert enc.params["escape"]


@pytest.mark.parametrize(("dtype", "codec", "params", "parts"), [
    ("uint8", LosslessCodec, {"mode": "planes", "planes": [{"method": "constant", "value": 7}]},
     [b""]),
    ("float32", LosslessCodec,
     {"mode": "planes", "planes": [{"method": "constant", "value": 7}] * 4}, [b""] * 4),
    ("float16", LosslessCodec,
     {"mode": "planes", "planes": [{"method": "ans", "table": DEADZONE_PARAMS["table"]}] * 3},
     [b""] * 3),
    ("float16", DeadzoneCodec, DEADZONE_PARAMS, [b"", b""]),
])
def test_chunk_decoding_memory_is_bounded_whatever_its_count(dtype, codec, params, parts):
    """An empty ANS stream or a constant plane is a few bytes for any number of elements:
    decoding must not need memory in proportion to the count beyond the output itself."""
    out = np.empty(1 << 21, dtype=BY_NAME[dtype].numpy)
    decoder = codec.decoder(params, BY_NAME[dtype])
    tracemalloc.start()
    try:
        decoder.decode_into(parts, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # a few batches' worth, against 16-36x the output before


def test_reconstruction_rounding_matches_the_reference():
    """binary64 -> float32/float16/bfloat16 as the reference decoder computes it (SPEC §7.3),
    on values where double rounding, ties, subnormals and overflow decide."""
    from reference_decoder import round_binary64

    rng = np.random.default_rng(12)
    half = np.arange(0, 0x7C00, 7, dtype=np.uint16).view(np.float16).astype(np.float64)
    nudges = np.array([0, 2.0**-11, -(2.0**-11), 2.0**-11 + 2.0**-40, 2.0**-12, 2.0**-24])
    x = np.concatenate([
        (half[:, None] * (1 + nudges)).ravel(),
        rng.standard_normal(2000) * 2.0 ** rng.integers(-150, 130, 2000),
        [0.0, 65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 3.4028235e38,
         3.4028236e38, 2.0**-149, 2.0**-150, 1e300, np.inf],
    ])
    x = np.concatenate([x, -x])
    for dtype, (e, m) in (("float32", (8, 23)), ("float16", (5, 10))):
        ours = from_float64(x, BY_NAME[dtype]).view(f"<u{BY_NAME[dtype].width}")
        assert ours.tolist() == [round_binary64(float(v), e, m) for v in x], dtype
    b = [round_binary64(float(v), 8, 23) for v in x]
    expected = [(v + 0x7FFF + ((v >> 16) & 1)) >> 16 for v in b]
    assert from_float64(x, BY_NAME["bfloat16"]).tolist() == expected


def test_large_planes_go_to_zstd_small_ones_keep_ans():
    """Big planes get the fast zstd method (format 1.1); a small tensor's exponents stay
    ANS, where zstd's frame overhead would cost more than ANS's slower decoding."""
    rng = np.random.default_rng(13)
    big, _ = roundtrip(LosslessCodec(), rng.laplace(0, 0.02, 100_000).astype(np.float32),
                       "float32")
    assert [p["method"] for p in big.params["planes"]] == ["zstd", "packed", "packed", "packed"]
    assert big.format_minor == 1
    small, _ = roundtrip(LosslessCodec(), rng.laplace(0, 0.02, 64).astype(np.float32),
                         "float32")
    assert small.params["planes"][0]["method"] == "ans"
    assert small.format_minor == 0


def test_zstd_plane_symbols_outside_the_plane_are_a_format_error():
    """float16's exponent plane has 5 bits: a zstd byte of 32 or more is out of range."""
    etype = BY_NAME["float16"]
    params = {"mode": "planes", "planes": [{"method": "zstd"}, {"method": "packed"},
                                           {"method": "packed"}]}
    parts = [zstandard.ZstdCompressor().compress(bytes([15, 32])), b"\0\0", b"\0"]
    with pytest.raises(FormatError, match="5-bit"):
        LosslessCodec.decoder(params, etype).decode_into(parts, np.empty(2, np.float16))


@pytest.mark.parametrize(("symbols", "error"), [([30, 31, 30], None), ([30, 32, 31], "5-bit")])
def test_ans_plane_whose_table_reaches_beyond_the_plane(symbols, error):
    """A table may hold symbols the plane cannot (float16's exponent: 5 bits, the table
    30..33): a stream of in-range symbols decodes, one that reaches 32 is a FormatError."""
    etype = BY_NAME["float16"]
    table = ans.FrequencyTable(30, 8, np.array([64, 64, 64, 64], dtype=np.uint32))
    params = {"mode": "planes", "planes": [{"method": "ans", "table": table.to_fields()},
                                           {"method": "constant", "value": 0},
                                           {"method": "constant", "value": 0}]}
    parts = [ans.encode(np.array(symbols), table), b"", b""]
    out = np.empty(3, np.float16)
    decoder = LosslessCodec.decoder(params, etype)
    if error is None:
        decoder.decode_into(parts, out)
        assert (out.view(np.uint16) >> 10).tolist() == symbols
    else:
        with pytest.raises(FormatError, match=error):
            decoder.decode_into(parts, out)


@pytest.mark.parametrize(("frame_content", "count"), [(b"\x01" * 3, 2), (b"\x01", 2)])
def test_zstd_plane_of_the_wrong_size_is_corrupt(frame_content, count):
    params = {"mode": "planes", "planes": [{"method": "zstd"}]}
    for write_size in (True, False):
        frame = zstandard.ZstdCompressor(write_content_size=write_size).compress(frame_content)
        with pytest.raises(CorruptDataError, match="zstd"):
            LosslessCodec.decoder(params, BY_NAME["uint8"]).decode_into(
                [frame], np.empty(count, np.uint8))


def test_zstd_plane_of_2_byte_symbols_round_trips():
    """float64 exponents are 11 bits: a zstd plane holds them as 2 little-endian bytes."""
    etype = BY_NAME["float64"]
    values = np.random.default_rng(14).laplace(0, 1, 3000)
    planes = {"mode": "planes", "planes": [{"method": "zstd"}] + [{"method": "packed"}] * 7}
    parts = [zstd_plane(p, lay.bits, 3) if i == 0 else pack_bits(p, lay.bits)
             for i, (p, lay) in enumerate(zip(split_planes(values, etype),
                                              plane_layouts(etype), strict=True))]
    out = decode(LosslessCodec, planes, [(parts, values.size)], "float64")
    assert out.tobytes() == values.tobytes()


def test_zstd_plane_with_bytes_after_its_frame_is_corrupt():
    """SPEC §1: the part is exactly one frame; the one-call fast path must not skip this."""
    params = {"mode": "planes", "planes": [{"method": "zstd"}]}
    frame = zstandard.ZstdCompressor().compress(bytes(range(200)))
    decoder = LosslessCodec.decoder(params, BY_NAME["uint8"])
    out = np.empty(200, np.uint8)
    decoder.decode_into([frame], out)
    assert out.tobytes() == bytes(range(200))
    with pytest.raises(CorruptDataError, match="after the zstd frame"):
        decoder.decode_into([frame + b"\0"], out)


@pytest.mark.parametrize("kwargs", [
    {"target_snr_db": 50.0, "channel_snr_db": 45.0},  # no channel length
    {"target_snr_db": 50.0, "channel": 9},  # no channel SNR
    {"step": 0.1, "channel_snr_db": 45.0, "channel": 9},  # a floor without an SNR target
    {"target_snr_db": 50.0, "channel_snr_db": float("nan"), "channel": 9},
    {"target_snr_db": 50.0, "channel_snr_db": 45.0, "channel": 0},
])
def test_a_channel_floor_needs_its_length_and_an_snr_target(kwargs):
    with pytest.raises(ValueError):
        DeadzoneCodec(None, 0.5, **kwargs)
