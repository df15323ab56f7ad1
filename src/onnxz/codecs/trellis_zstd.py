"""Lossy codec: trellis-coded quantization, its levels coded by zstd instead of ANS.

The levels, the escapes and the reconstruction are those of ``trellis`` (SPEC.md §15);
the levels are coded as ``deadzone_zstd`` codes its symbols (§17.2): a zstd frame of high
bytes and k packed low bits per level, no frequency table (§18). The writer uses it where
it is at most :data:`~onnxz.codecs.deadzone_zstd.MAX_GROWTH` of the ``trellis`` size, and
writes ``trellis`` otherwise.

>>> import numpy as np
>>> from onnxz.codecs.trellis import TrellisCodec
>>> from onnxz.dtypes import BY_NAME
>>> x = np.random.default_rng(0).laplace(0, 0.1, 1 << 16).astype(np.float32)
>>> fast = TrellisZstdCodec(1 / 64).encode(x, BY_NAME["float32"], 1 << 20)
>>> plain = TrellisCodec(1 / 64).encode(x, BY_NAME["float32"], 1 << 20)
>>> fast.codec_id, bool((fast.reconstruction == plain.reconstruction).all())
('trellis_zstd', True)
>>> 1.0 < fast.coded_bytes / plain.coded_bytes < 1.02      # 2% larger at most, faster
True
>>> TrellisZstdCodec(1 / 2).encode(x, BY_NAME["float32"], 1 << 20).codec_id  # 17% larger
'trellis'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxz.codecs import ans
from onnxz.codecs.base import ChunkDecoder, EncodedTensor, QuantizedTensor
from onnxz.codecs.deadzone_zstd import (
    ZstdSymbolDecoder,
    checked_low_bits,
    parse_symbol_range,
    zstd_coding,
)
from onnxz.codecs.trellis import (
    SEGMENT,
    TrellisCodec,
    TrellisDecoder,
    TrellisQuantized,
    parse_trellis,
)
from onnxz.dtypes import ElementType

FORMAT_MINOR = 4
"""The codec is a format 1.4 addition (SPEC.md §3)."""


class TrellisZstdCodec(TrellisCodec):
    """The trellis quantizer (settings as :class:`TrellisCodec`); each tensor is written as
    ``trellis_zstd`` when that is at most ``MAX_GROWTH`` of its ``trellis`` size, else as
    ``trellis``. With ``low_bits``, every tensor is written as ``trellis_zstd`` with that k
    (at least the fewest its range needs)."""

    codec_id = "trellis_zstd"

    def __init__(self, step_rel: float, segment: int = SEGMENT, *,
                 low_bits: int | None = None) -> None:
        super().__init__(step_rel, segment)
        self.low_bits = checked_low_bits(low_bits)

    def encode_quantized(self, quantized: QuantizedTensor, etype: ElementType,
                         chunk_elements: int) -> EncodedTensor:
        assert isinstance(quantized, TrellisQuantized)
        q = quantized
        chunk_elements = max(q.segment, chunk_elements - chunk_elements % q.segment)
        ans_bytes = q.table.cost_bits(q.counts) / 8 + q.table_bytes
        coded = zstd_coding(q.levels, q.histogram, q.lo, q.hi, ans_bytes, chunk_elements,
                            self.low_bits)
        if coded is None:
            return super().encode_quantized(quantized, etype, chunk_elements)
        params = {"step": q.step, "segment": q.segment, "escape": coded.escape,
                  "offset": coded.lo, "size": coded.size, "low_bits": coded.low_bits,
                  "step_rel": self.step_rel}
        return EncodedTensor(
            self.codec_id, params, coded.chunks, q.reconstruction(etype),
            entropy_bits=ans.entropy_bits_of_counts(q.counts),
            format_minor=FORMAT_MINOR)

    @classmethod
    def decoder(cls, params: Mapping[str, Any], etype: ElementType) -> ChunkDecoder:
        step, segment, escape = parse_trellis(params, etype, cls.codec_id)
        symbols, low_bits = parse_symbol_range(params, cls.codec_id)
        return TrellisZstdDecoder(step, segment, escape, symbols, etype, low_bits=low_bits)


class TrellisZstdDecoder(ZstdSymbolDecoder, TrellisDecoder):
    """Levels from parts 0–2 as ``deadzone_zstd`` reads symbols; values as ``trellis``."""

    codec_id = "trellis_zstd"
