"""Order-0 entropy coding of small integer symbols with constriction's ANS coder.

A :class:`FrequencyTable` is the integer model itself, stored in the file: the decoder
never re-derives it from floats, so any decoder that implements the ANS arithmetic of
SPEC.md (§ "ANS stream") decodes bit-identically.

>>> import numpy as np
>>> symbols = np.array([0, 0, 0, 1, -1, 0, 2, 0], dtype=np.int64)
>>> table = FrequencyTable.fit(symbols)
>>> table.offset, table.size
(-1, 4)
>>> stream = encode(symbols, table)
>>> len(stream) % 4
0
>>> decode(stream, table, symbols.size).tolist()
[0, 0, 0, 1, -1, 0, 2, 0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np

from onnxz.codecs.base import field
from onnxz.codecs.varint import decode_uvarints, encode_uvarints
from onnxz.errors import CorruptDataError, FormatError

CODER_PRECISION = 24
"""Bits of constriction's default categorical model: frequencies sum to 2**24."""

MAX_ALPHABET = 1 << 16
"""Largest alphabet a table may have (a reader limit; writers clip or escape above it)."""

MIN_TABLE_PRECISION = 8

SMALL_TABLE = 64
"""Tables of at most this many frequencies are checked as Python ints: numpy's reductions
cost more than the work on so few (a table of 2 symbols read from the index: 4.8 -> 2.8 µs,
measured 2026-12-02; the tables of small lossless planes are mostly this small)."""


@dataclass(frozen=True)
class FrequencyTable:
    """Integer frequencies of the symbols ``offset .. offset + size - 1``.

    Invariants: every frequency >= 1, ``sum(freqs) == 2**precision``, ``size >= 2``,
    ``precision <= 24``. The coder uses ``freqs << (24 - precision)``.
    """

    offset: int
    precision: int
    freqs: np.ndarray

    @property
    def size(self) -> int:
        return int(self.freqs.size)

    def __post_init__(self) -> None:
        f = self.freqs
        if not 2 <= f.size <= MAX_ALPHABET:
            raise FormatError(f"frequency table: {f.size} symbols (allowed 2..{MAX_ALPHABET})")
        if not MIN_TABLE_PRECISION <= self.precision <= CODER_PRECISION:
            raise FormatError(f"frequency table: precision {self.precision} out of range")
        small = f.size <= SMALL_TABLE  # checked as Python ints (see SMALL_TABLE)
        low, total = ((min(values := f.tolist()), sum(values)) if small
                      else (int(f.min()), int(f.sum(dtype=np.uint64))))
        if low < 1 or total != 1 << self.precision:
            raise FormatError("frequency table: frequencies must be >= 1 and sum to 2**precision")
        if self.offset < -(1 << 63) or self.offset + f.size - 1 >= 1 << 63:
            raise FormatError(f"frequency table: offset {self.offset} out of range")

    @classmethod
    def fit(cls, symbols: np.ndarray, offset: int | None = None, size: int | None = None):
        """The table of least total cost (coded bits + stored table) for ``symbols``.

        ``offset``/``size`` widen the alphabet beyond the symbols' own range if given.
        """
        lo = int(symbols.min()) if offset is None else offset
        hi = int(symbols.max()) if size is None else lo + size - 1
        return cls.fit_counts(dense_histogram(symbols, lo, max(hi - lo + 1, 2)), lo)

    @classmethod
    def fit_counts(cls, counts: np.ndarray, offset: int) -> FrequencyTable:
        """Best table for a histogram (``counts[i]`` = occurrences of ``offset + i``): of
        the precisions from the least that fits the alphabet to 24, the one of least
        coded bits + stored table bits (the lowest such precision).

        The walk stops early where no higher precision can win: the coded bits are never
        below the histogram's entropy (Gibbs), and the stored table never shrinks as the
        precision grows (each frequency at least keeps its size), so once the entropy plus
        this precision's table reaches the best total, every later total does too. The
        table chosen is the one the whole walk would choose.
        """
        counts = np.asarray(counts, dtype=np.int64)
        if counts.size < 2:
            counts = np.concatenate((counts, np.zeros(2 - counts.size, dtype=np.int64)))
        least = max(MIN_TABLE_PRECISION, int(np.ceil(np.log2(counts.size))) + 1)
        used = counts > 0
        used_counts = counts[used]
        floor_bits = _entropy_bits(used_counts) * (1 - BOUND_SLACK)
        best: tuple[int, np.ndarray] | None = None
        best_bits = np.inf
        for precision in range(least, CODER_PRECISION + 1):
            freqs = _quantize_counts(counts, precision)
            table_bits = 8 * _stored_size(freqs)
            if floor_bits + table_bits >= best_bits:
                break
            bits = _cost_bits(used_counts, freqs[used], precision) + table_bits
            if bits < best_bits:
                best, best_bits = (precision, freqs), bits
        assert best is not None
        return cls(offset, *best)

    def within(self, low: int, high: int) -> bool:
        """Whether every symbol of the table lies in ``low`` … ``high − 1``."""
        return low <= self.offset and self.offset + self.size <= high

    def cost_bits(self, counts: np.ndarray) -> float:
        """Ideal coded size in bits of a histogram under this table (excluding the table)."""
        used = counts > 0
        return _cost_bits(counts[used], self.freqs[used], self.precision)

    @property
    def stored_size(self) -> int:
        """Bytes of :meth:`to_bytes` (computed without encoding)."""
        return _stored_size(self.freqs)

    def to_bytes(self) -> bytes:
        """The frequencies as unsigned LEB128 varints (the table's stored form)."""
        return encode_uvarints(self.freqs)

    @classmethod
    def from_bytes(cls, data: bytes, offset: int, precision: int, size: int) -> FrequencyTable:
        if not 2 <= size <= MAX_ALPHABET:
            raise FormatError(f"frequency table: {size} symbols (allowed 2..{MAX_ALPHABET})")
        freqs = decode_uvarints(data, size)
        high = max(freqs.tolist()) if freqs.size <= SMALL_TABLE else int(freqs.max())
        if high > 1 << CODER_PRECISION:
            raise FormatError("frequency table: a frequency exceeds 2**24")
        return cls(offset, precision, freqs.astype(np.uint32))

    def to_fields(self) -> dict[str, Any]:
        """The table as index fields: ``offset``, ``precision``, ``size``, ``freqs``."""
        return {
            "offset": self.offset,
            "precision": self.precision,
            "size": self.size,
            "freqs": self.to_bytes(),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> FrequencyTable:
        return cls.from_bytes(
            field(fields, "freqs", bytes),
            field(fields, "offset", int),
            field(fields, "precision", int),
            field(fields, "size", int),
        )

    def _model(self):
        # constriction's fast quantizer gives each symbol 1 + floor(prefix-sum scaling); with
        # weights freq-1 summing to 2**24 - size the scale is exactly 1.0, so the coder's
        # table is exactly freqs << (24 - precision).
        weights = self.freqs * 2.0 ** (CODER_PRECISION - self.precision) - 1.0  # float64, exact
        return constriction.stream.model.Categorical(weights, perfect=False)


HISTOGRAM_BATCH = 1 << 22
"""Symbols counted at a time, so a histogram needs little memory beyond its counts."""


def dense_histogram(symbols: np.ndarray, lo: int, size: int) -> np.ndarray:
    """Counts of the values lo … lo + size − 1 in ``symbols`` (all within that range), a
    batch at a time.

    >>> dense_histogram(np.array([3, 5, 5], dtype=np.uint8), 3, 4).tolist()
    [1, 0, 2, 0]
    """
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, symbols.size, HISTOGRAM_BATCH):
        batch = symbols[start : start + HISTOGRAM_BATCH]
        counts += np.bincount((batch - lo).astype(np.intp), minlength=size)
    return counts


def histogram(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a non-empty integer array, ascending, and their counts.

    Counts by bincount when the values span a modest range (linear time, a batch at a
    time), else by sorting.
    """
    lo, hi = int(symbols.min()), int(symbols.max())
    if hi - lo < max(1 << 20, symbols.size):
        counts = dense_histogram(symbols, lo, hi - lo + 1)
        present = np.flatnonzero(counts)
        return present.astype(np.int64) + lo, counts[present]
    return np.unique(symbols, return_counts=True)


def entropy_bits(symbols: np.ndarray) -> float:
    """Zeroth-order empirical entropy of ``symbols``, in bits for the whole array."""
    if symbols.size == 0:
        return 0.0
    return entropy_bits_of_counts(histogram(symbols)[1])


def entropy_bits_of_counts(counts: np.ndarray) -> float:
    """Zeroth-order entropy, in bits for all symbols, of a histogram (zeros are skipped)."""
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def encode(symbols: np.ndarray, table: FrequencyTable) -> bytes:
    """ANS-code ``symbols`` (all within the table's alphabet) into little-endian u32 words."""
    if symbols.size == 0:
        return b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((symbols - table.offset).astype(np.int32), table._model())
    return coder.get_compressed().astype("<u4").tobytes()


class AnsDecoder:
    """Decodes one ANS stream of ``count`` symbols (SPEC.md §8), a batch at a time.

    The stream's layout is checked on construction; :meth:`finish` checks that the stream
    held exactly these symbols (:class:`CorruptDataError` otherwise).
    """

    def __init__(self, data: bytes | memoryview, table: FrequencyTable, count: int) -> None:
        if count == 0 and len(data):
            raise CorruptDataError("ANS stream: bytes present for zero symbols")
        if len(data) % 4:
            raise CorruptDataError(f"ANS stream: {len(data)} bytes is not a multiple of 4")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        if words.size and words[-1] == 0:
            raise CorruptDataError("ANS stream: last word is zero")
        self._coder = constriction.stream.stack.AnsCoder(words)
        self._model = table._model()
        self.offset = table.offset

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` symbols (int64)."""
        return self.take_indices(n).astype(np.int64) + self.offset

    def take_indices(self, n: int) -> np.ndarray:
        """The next ``n`` symbols as int32 positions in the table (symbol − offset)."""
        try:
            return self._coder.decode(self._model, n)
        except (ValueError, RuntimeError) as exc:
            raise CorruptDataError(f"ANS stream: {exc}") from exc

    def finish(self) -> None:
        if not self._coder.is_empty():
            raise CorruptDataError("ANS stream: data left over after the last symbol")


def decode(data: bytes | memoryview, table: FrequencyTable, count: int) -> np.ndarray:
    """Decode a whole stream of ``count`` symbols made by :func:`encode`; returns int64."""
    decoder = AnsDecoder(data, table, count)
    symbols = decoder.take(count) if count else np.zeros(0, dtype=np.int64)
    decoder.finish()
    return symbols


BOUND_SLACK = 1e-9
"""Relative slack on the entropy bound of :meth:`FrequencyTable.fit_counts`: far above the
rounding of a float64 sum of up to 2**16 terms, far below a bit."""


def _entropy_bits(used: np.ndarray) -> float:
    """Σ c·log2(mass / c) over a histogram's nonzero counts ``used``: no table codes the
    histogram in fewer bits."""
    mass = int(used.sum())
    return float((used * np.log2(mass / used)).sum()) if mass else 0.0


def _cost_bits(used_counts: np.ndarray, used_freqs: np.ndarray, precision: int) -> float:
    """Ideal coded bits of a histogram's nonzero counts under their frequencies at
    ``precision``."""
    return float(-(used_counts * np.log2(used_freqs / 2.0**precision)).sum())


def _stored_size(freqs: np.ndarray) -> int:
    """Bytes of the frequencies as LEB128 varints."""
    return int(freqs.size + (freqs >= 1 << 7).sum() + (freqs >= 1 << 14).sum()
               + (freqs >= 1 << 21).sum())


def _quantize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Frequencies >= 1 summing to 2**precision, close to proportional to ``counts``."""
    total = 1 << precision
    n = counts.size
    free = total - n
    mass = int(counts.sum())
    share = np.full(n, free / n) if mass == 0 else counts * (free / mass)
    freqs = 1 + np.floor(share).astype(np.int64)
    remainder = total - int(freqs.sum())
    if remainder:
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        freqs[order[:remainder]] += 1
    return freqs.astype(np.uint32)
