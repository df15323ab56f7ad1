"""The trellis_zstd codec: trellis levels coded as deadzone_zstd codes its symbols (SPEC.md
§18)."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from models import matmul
from test_codecs import decode

import onnxz
from onnxz.codecs import TrellisCodec, TrellisZstdCodec, codec_class
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError
from onnxz.policy import quantizer


def laplace(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0, 0.1, n).astype(np.float32)


def decoded(enc, dtype: str = "float32") -> np.ndarray:
    return decode(codec_class(enc.codec_id), enc.params,
                  [(c.parts, c.count) for c in enc.chunks], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("low_bits", [0, 4])
def test_decodes_to_the_trellis_levels(dtype, low_bits):
    x = laplace(5000)
    values = x.view(np.uint16)[1::2].copy() if dtype == "bfloat16" else x.astype(dtype)
    enc = TrellisZstdCodec(1 / 32, 64, low_bits=low_bits).encode(values, BY_NAME[dtype], 1500)
    plain = TrellisCodec(1 / 32, 64).encode(values, BY_NAME[dtype], 1500)
    assert enc.codec_id == "trellis_zstd" and enc.format_minor == 4
    assert [c.count for c in enc.chunks] == [c.count for c in plain.chunks]  # whole segments
    assert enc.params["low_bits"] >= low_bits
    assert decoded(enc, dtype).tobytes() == plain.reconstruction.tobytes()
    assert enc.reconstruction.tobytes() == plain.reconstruction.tobytes()


def test_escapes_decode_in_the_chunks_that_hold_them():
    x = laplace(3072)
    x[[10, 3000]] = [40.0, -50.0]  # beyond the bucket table's range: escaped
    enc = TrellisZstdCodec(1 / 4, low_bits=1).encode(x, BY_NAME["float32"], 1024)
    assert enc.params["escape"]
    assert [len(c.parts[1]) > 0 for c in enc.chunks] == [True, False, True]
    assert np.array_equal(decoded(enc), enc.reconstruction)
    assert enc.reconstruction[10] == pytest.approx(40.0, abs=0.1)


def test_the_writer_falls_back_to_trellis_where_zstd_costs_more():
    fine = TrellisZstdCodec(1 / 32).encode(laplace(1 << 16), BY_NAME["float32"], 1 << 20)
    coarse = TrellisZstdCodec(2).encode(laplace(1 << 16), BY_NAME["float32"], 1 << 20)
    assert fine.codec_id == "trellis_zstd"
    assert coarse.codec_id == "trellis"  # under a bit per level: Huffman needs at least 1
    assert "buckets" in coarse.params or "table" in coarse.params
    assert np.array_equal(decoded(coarse), coarse.reconstruction)


def test_pack_codec_trellis_writes_it_and_the_file_declares_1_4(tmp_path):
    out = tmp_path / "m.onnxz"
    onnxz.save(matmul(laplace(256 * 512).reshape(256, 512)), out, options=onnxz.PackOptions(
        quantizer=quantizer("trellis", step_rel=1 / 32)))
    with onnxz.open(out) as reader:
        assert reader.entry("w").codec == "trellis_zstd"
        assert reader.info.version == "1.4"
    assert isinstance(quantizer("trellis"), TrellisZstdCodec)


@pytest.mark.parametrize("change, match", [
    ({"low_bits": 9}, "low_bits 9"),
    ({"size": 1}, "symbol range"),
    ({"offset": None}, "offset"),
    ({"segment": 3}, "segment 3"),
    ({"segment": 1 << 17}, "segment"),
    ({"step": -1.0}, "step"),
    ({"escape": 1}, "escape"),
])
def test_invalid_parameters_are_format_errors(change, match):
    enc = TrellisZstdCodec(1 / 32, low_bits=2).encode(laplace(4096), BY_NAME["float32"], 4096)
    with pytest.raises(FormatError, match=match):
        TrellisZstdCodec.decoder(dict(enc.params) | change, BY_NAME["float32"])


def test_damaged_chunks_are_refused():
    enc = TrellisZstdCodec(1 / 2, low_bits=0).encode(laplace(4096), BY_NAME["float32"], 4096)
    (chunk,) = enc.chunks

    def fails(parts, error, match):
        with pytest.raises(error, match=match):
            decode(TrellisZstdCodec, enc.params, [(parts, chunk.count)], "float32")

    fails(chunk.parts[:2], FormatError, "3 parts")
    fails((chunk.parts[0][:-3], *chunk.parts[1:]), CorruptDataError, "zstd")
    high = bytearray(zstandard.ZstdDecompressor().decompress(chunk.parts[0]))
    high[5] = 255  # a few levels: position 255 is beyond the range
    fails((zstandard.ZstdCompressor().compress(bytes(high)), *chunk.parts[1:]), FormatError,
          "position")
