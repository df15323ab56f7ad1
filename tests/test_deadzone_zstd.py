"""The deadzone_zstd codec: dead-zone levels whose symbols are a zstd frame of high bytes
and packed low bits (SPEC.md §17)."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from models import matmul
from test_codecs import decode

import onnxz
from onnxz.codecs import DeadzoneCodec, DeadzoneZstdCodec, PredictiveCodec, codec_class
from onnxz.codecs.deadzone_zstd import fewest_low_bits, split_index, zstd_symbols
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError
from onnxz.policy import quantizer


def laplace(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0, 0.1, n).astype(np.float32)


def decoded(enc, dtype: str = "float32") -> np.ndarray:
    return decode(codec_class(enc.codec_id), enc.params,
                  [(c.parts, c.count) for c in enc.chunks], dtype)


def forced(values: np.ndarray, low_bits: int, dtype: str = "float32", step_rel: float = 1 / 64,
           chunk_elements: int = 1 << 20):
    return DeadzoneZstdCodec(step_rel, 0.5, low_bits=low_bits).encode(
        values, BY_NAME[dtype], chunk_elements)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("low_bits", [0, 3, 8])
def test_decodes_to_the_dead_zone_levels(dtype, low_bits):
    x = laplace(5000)
    values = x.view(np.uint16)[1::2].copy() if dtype == "bfloat16" else x.astype(dtype)
    enc = forced(values, low_bits, dtype, chunk_elements=1500)
    plain = DeadzoneCodec(1 / 64, 0.5).encode(values, BY_NAME[dtype], 1500)
    assert enc.codec_id == "deadzone_zstd" and enc.format_minor == 3
    assert enc.params["low_bits"] >= low_bits
    assert decoded(enc, dtype).tobytes() == plain.reconstruction.tobytes()
    assert enc.reconstruction.tobytes() == plain.reconstruction.tobytes()


def test_escapes_and_chunks_without_them_decode():
    x = laplace(3000)
    x[[10, 2990]] = [40.0, -50.0]  # far outside the range: escaped, first and last chunk
    enc = forced(x, 2, step_rel=1 / 4, chunk_elements=1000)
    assert enc.params["escape"]
    assert [len(c.parts[1]) > 0 for c in enc.chunks] == [True, False, True]
    assert np.array_equal(decoded(enc), enc.reconstruction)
    assert enc.reconstruction[10] == pytest.approx(40.0, abs=0.01)


def test_high_bytes_and_low_bits_split_the_position():
    index = np.arange(0, 2000, 7)
    for k in (0, 3, 8):
        high, low = split_index(index % (256 << k), k)
        assert ((high.astype(int) << k) | low).tolist() == (index % (256 << k)).tolist()
    assert [fewest_low_bits(n) for n in (2, 256, 257, 512, 513, 65536)] == [0, 0, 1, 1, 2, 8]


def test_the_writer_keeps_ans_where_huffman_codes_cost_too_much():
    fine = DeadzoneZstdCodec(1 / 64, 0.5).encode(laplace(1 << 17), BY_NAME["float32"], 1 << 20)
    coarse = DeadzoneZstdCodec(2, 0.5).encode(laplace(1 << 17), BY_NAME["float32"], 1 << 20)
    assert fine.codec_id == "deadzone_zstd"
    assert coarse.codec_id == "deadzone"  # ~0.7 bit per symbol: Huffman needs at least 1
    plain = DeadzoneCodec(1 / 64, 0.5).encode(laplace(1 << 17), BY_NAME["float32"], 1 << 20)
    assert fine.coded_bytes < 1.02 * plain.coded_bytes  # no table, Huffman-coded high bytes


def test_pack_writes_it_by_default_and_the_file_declares_1_3(tmp_path):
    out = tmp_path / "m.onnxz"
    onnxz.save(matmul(laplace(256 * 512).reshape(256, 512)), out, step_rel=1 / 64)
    with onnxz.open(out) as reader:
        assert reader.entry("w").codec == "deadzone_zstd"
        assert reader.info.version == "1.3"
    assert isinstance(quantizer("deadzone"), DeadzoneZstdCodec)
    assert isinstance(PredictiveCodec(1 / 64, 0.5, row=512), DeadzoneZstdCodec)


@pytest.mark.parametrize("change, match", [
    ({"low_bits": 9}, "low_bits 9"),
    ({"low_bits": -1}, "low_bits"),
    ({"low_bits": 1.0}, "low_bits"),
    ({"size": 1}, "symbol range"),
    ({"size": 65537}, "symbol range"),
    ({"offset": None}, "offset"),
    ({"step": 0.0}, "step"),
    ({"reconstruction": "centroid"}, "centroid"),
])
def test_invalid_parameters_are_format_errors(change, match):
    params = dict(forced(laplace(4000), 2).params) | change
    with pytest.raises(FormatError, match=match):
        DeadzoneZstdCodec.decoder(params, BY_NAME["float32"])


def test_low_bits_too_few_for_the_range_is_a_format_error():
    params = dict(forced(laplace(4000), 0, step_rel=1 / 16).params)
    params["size"] = 300  # needs one low bit
    with pytest.raises(FormatError, match="cannot split 300"):
        DeadzoneZstdCodec.decoder(params, BY_NAME["float32"])


def rewritten_high(parts: tuple[bytes, ...], edit) -> tuple[bytes, ...]:
    high = bytearray(zstandard.ZstdDecompressor().decompress(parts[0]))
    edit(high)
    return (zstandard.ZstdCompressor().compress(bytes(high)), *parts[1:])


def test_damaged_chunks_get_the_class_of_their_first_failing_check():
    enc = forced(laplace(4000), 0, step_rel=1 / 2)  # a few symbols: 255 is beyond them
    (chunk,) = enc.chunks
    params, count = enc.params, chunk.count

    def fails(parts, error, match):
        with pytest.raises(error, match=match):
            decode(DeadzoneZstdCodec, params, [(parts, count)], "float32")

    fails(chunk.parts[:2], FormatError, "3 parts")
    fails((chunk.parts[0][:-3], *chunk.parts[1:]), CorruptDataError, "zstd")
    fails((zstandard.ZstdCompressor().compress(b"\0" * (count - 1)), *chunk.parts[1:]),
          CorruptDataError, "zstd")
    beyond = rewritten_high(chunk.parts, lambda h: h.__setitem__(7, 255))
    fails(beyond, FormatError, "position")
    # the part checks (corrupt) come before the symbols' (format), SPEC.md §10.2
    fails((beyond[0], b"\x01", beyond[2]), CorruptDataError, "escape")
    coarse = forced(laplace(4000), 3)
    (chunk3,) = coarse.chunks
    with pytest.raises(CorruptDataError, match="low bits"):
        decode(DeadzoneZstdCodec, coarse.params,
               [((*chunk3.parts[:2], chunk3.parts[2][:-1]), chunk3.count)], "float32")


def test_an_empty_chunk_is_one_empty_frame():
    enc = forced(laplace(10), 2, chunk_elements=10)
    params = enc.params
    empty = (zstandard.ZstdCompressor().compress(b""), b"", b"")
    out = decode(DeadzoneZstdCodec, params,
                 [(empty, 0), (enc.chunks[0].parts, enc.chunks[0].count)], "float32")
    assert np.array_equal(out, enc.reconstruction)
    with pytest.raises(CorruptDataError):
        decode(DeadzoneZstdCodec, params, [((b"", b"", b""), 0)], "float32")


def test_the_writer_widens_the_range_where_escapes_cost_more_than_low_bits():
    # A small tensor at a fine step: an ANS table's range (§7.4) leaves a third of the
    # symbols to 2-byte escapes, as it would pay a table entry per symbol; zstd stores no
    # table, so a wider range that costs a low bit more is smaller.
    x = laplace(1408)
    codec = DeadzoneZstdCodec(1 / 256, 0.5)
    quantized = codec.quantize(x, BY_NAME["float32"])
    table_range = zstd_symbols(quantized.q, quantized.lo, quantized.hi, 1 << 20)
    assert quantized.escaped > 1408 // 4
    enc = codec.encode(x, BY_NAME["float32"], 1 << 20)
    assert enc.codec_id == "deadzone_zstd"
    assert enc.params["size"] > quantized.counts.size
    assert enc.coded_bytes < 0.9 * table_range.stored
    assert decoded(enc).tobytes() == enc.reconstruction.tobytes()
    assert enc.reconstruction.tobytes() == quantized.reconstruction(BY_NAME["float32"]).tobytes()
