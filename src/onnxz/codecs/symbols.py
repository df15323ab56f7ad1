"""What the table-driven scalar quantizers share (``mulaw``, ``minifloat``): each element
becomes one integer symbol, the symbols of a tensor are ANS-coded under one stored frequency
table (one stream per chunk, the chunk's only part), and a codec-specific rule maps a symbol
back to a binary64 value, then to the tensor's dtype (SPEC.md §13, §14).

>>> import numpy as np
>>> from onnxz.dtypes import BY_NAME
>>> q = np.array([0, 1, 1, -2, 0], dtype=np.int64)
>>> enc = encode_symbols("demo", {}, q, q * 0.5, BY_NAME["float32"], chunk_elements=3)
>>> [c.count for c in enc.chunks], enc.reconstruction.tolist()
([3, 2], [0.0, 0.5, 0.5, -1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from onnxz.codecs import ans
from onnxz.codecs.base import (
    Chunk,
    ChunkDecoder,
    EncodedTensor,
    batches,
    split_counts,
)
from onnxz.codecs.deadzone import from_float64
from onnxz.dtypes import ElementType
from onnxz.errors import FormatError

FORMAT_MINOR = 1
"""The codecs built on this module are format 1.1 additions (SPEC.md §3)."""

Reconstruct = Callable[[np.ndarray], np.ndarray]
"""Integer symbols (int64) -> binary64 values, exactly as the codec's SPEC section says."""


def encode_symbols(codec_id: str, params: dict[str, Any], symbols: np.ndarray,
                   values: np.ndarray, etype: ElementType, chunk_elements: int
                   ) -> EncodedTensor:
    """The :class:`EncodedTensor` of ``symbols`` (int64) whose reconstruction is ``values``
    (binary64, from the codec's own reconstruction rule). ``params`` gets the ``table``."""
    table = ans.FrequencyTable.fit(symbols)
    chunks = []
    start = 0
    for count in split_counts(symbols.size, chunk_elements):
        chunks.append(Chunk(count, (ans.encode(symbols[start:start + count], table),)))
        start += count
    return EncodedTensor(
        codec_id,
        {**params, "table": table.to_fields()},
        tuple(chunks),
        from_float64(values, etype),
        entropy_bits=ans.entropy_bits(symbols),
        table_bytes=table.stored_size,
        format_minor=FORMAT_MINOR,
    )


class SymbolDecoder(ChunkDecoder):
    """Part 0: the ANS stream of the chunk's symbols under ``table``; nothing else."""

    def __init__(self, codec_id: str, table: ans.FrequencyTable, reconstruct: Reconstruct,
                 etype: ElementType) -> None:
        self.codec_id, self.table, self.reconstruct, self.etype = (
            codec_id, table, reconstruct, etype)

    def decode_into(self, parts: Sequence[bytes], out: np.ndarray) -> None:
        if len(parts) != 1:
            raise FormatError(f"{self.codec_id} chunk: expected 1 part (symbols)")
        symbols = ans.AnsDecoder(parts[0], self.table, out.size)
        for batch in batches(out.size):
            q = symbols.take(batch.stop - batch.start)
            out[batch] = from_float64(self.reconstruct(q), self.etype)
        symbols.finish()


def symbol_bounds(table: ans.FrequencyTable) -> tuple[int, int]:
    """The smallest and largest symbol a table can decode to."""
    return table.offset, table.offset + table.size - 1
