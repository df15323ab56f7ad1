"""Bucket tables: a symmetric frequency table stored as one frequency per magnitude bucket.

An explicit frequency table (:class:`onnxz.codecs.ans.FrequencyTable`) stores one varint per
symbol; at fine steps a tensor of a few thousand weights can have a thousand distinct
symbols, and its table outweighs its data. A bucket table stores one frequency per bucket of
magnitudes instead: magnitudes below ``2**(resolution + 1)`` each have their own bucket,
larger ones share a bucket per ``2**resolution``-th of an octave (the buckets of a float with
``resolution`` mantissa bits). Every symbol of a bucket, of either sign, gets the bucket's
frequency; the zero symbol gets what is left of ``2**precision``. The coder's table is
rebuilt from these integers alone (SPEC.md § "Bucket table"), so any decoder rebuilds it
bit-exactly.

>>> import numpy as np
>>> bucket_of(np.arange(1, 17), 1).tolist()
[1, 2, 3, 4, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8]
>>> q = np.random.default_rng(0).laplace(0, 300, 5000).round().astype(np.int64)
>>> table = BucketTable.fit(q, magnitude=int(np.abs(q).max()), escape=0)
>>> freqs = table.expand()                     # the coder's table over -max .. max
>>> freqs.size == 2 * table.magnitude + 1 and table.stored_size < 80
True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxz.codecs.ans import CODER_PRECISION, MAX_ALPHABET, MIN_TABLE_PRECISION, FrequencyTable
from onnxz.codecs.base import field
from onnxz.codecs.varint import decode_uvarints, encode_uvarints
from onnxz.errors import FormatError

MAX_RESOLUTION = 8
"""Largest ``resolution`` a reader accepts (2**8 buckets per octave)."""

MAX_MAGNITUDE = (MAX_ALPHABET - 2) // 2
"""Largest ``magnitude``: the alphabet −M … M plus an escape symbol fits an ANS table."""

FIT_RESOLUTIONS = range(0, 6)
"""Resolutions the encoder tries."""


def bucket_of(m: np.ndarray, resolution: int) -> np.ndarray:
    """Bucket index (1, 2, ...) of each magnitude m ≥ 1: m itself below 2**(r + 1), else
    ``2**r · s + (m >> s)`` with ``s = bit_length(m) − 1 − r``."""
    m = np.asarray(m, dtype=np.int64)
    bits = np.frexp(m.astype(np.float64))[1].astype(np.int64)  # bit_length, exact below 2**53
    shift = np.maximum(bits - 1 - resolution, 0)
    return np.where(shift == 0, m, (shift << resolution) + (m >> shift))


@dataclass(frozen=True)
class BucketTable:
    """Frequencies of the symbols −M … M (M = ``magnitude``), and of an escape symbol
    M + 1 when ``escape`` > 0, summing to 2**``precision``.

    ``freqs[b − 1]`` is the frequency of every symbol whose magnitude is in bucket b;
    ``escape`` is the escape symbol's frequency (0: no escape symbol). The zero symbol gets
    the rest, which must be ≥ 1.
    """

    magnitude: int
    resolution: int
    precision: int
    freqs: np.ndarray
    escape: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.magnitude <= MAX_MAGNITUDE:
            raise FormatError(f"bucket table: magnitude {self.magnitude} out of 1..{MAX_MAGNITUDE}")
        if not 0 <= self.resolution <= MAX_RESOLUTION:
            raise FormatError(f"bucket table: resolution {self.resolution} out of range")
        if not MIN_TABLE_PRECISION <= self.precision <= CODER_PRECISION:
            raise FormatError(f"bucket table: precision {self.precision} out of range")
        if self.freqs.size != int(self._buckets[-1]):
            raise FormatError(f"bucket table: {self.freqs.size} frequencies for "
                              f"{int(self._buckets[-1])} buckets")
        if self.freqs.size and int(self.freqs.min()) < 1:
            raise FormatError("bucket table: a frequency is 0")
        if self.zero_frequency() < 1:
            raise FormatError("bucket table: frequencies leave nothing for the zero symbol")

    @functools.cached_property
    def _buckets(self) -> np.ndarray:
        """The bucket of every magnitude 1 … M."""
        return bucket_of(np.arange(1, self.magnitude + 1), self.resolution)

    def zero_frequency(self) -> int:
        """2**precision minus the frequencies of every other symbol (Python ints: exact)."""
        used = 2 * int(self.freqs.astype(np.int64)[self._buckets - 1].sum())
        return (1 << self.precision) - used - self.escape

    def expand(self) -> FrequencyTable:
        """The coder's table: offset −M, one frequency per symbol (escape last)."""
        per_magnitude = self.freqs[self._buckets - 1].astype(np.uint32)
        parts = [per_magnitude[::-1], np.array([self.zero_frequency()], np.uint32),
                 per_magnitude]
        if self.escape:
            parts.append(np.array([self.escape], np.uint32))
        return FrequencyTable(-self.magnitude, self.precision, np.concatenate(parts))

    @property
    def stored_size(self) -> int:
        """Bytes of the stored varints (frequencies and escape)."""
        f = np.append(self.freqs, self.escape) if self.escape else self.freqs
        return int(f.size + (f >= 1 << 7).sum() + (f >= 1 << 14).sum() + (f >= 1 << 21).sum())

    def to_fields(self) -> dict[str, Any]:
        """The table as index fields: ``magnitude``, ``resolution``, ``precision``, ``freqs``
        (varints: the buckets' frequencies, then the escape symbol's if it has one)."""
        f = np.append(self.freqs, self.escape) if self.escape else self.freqs
        return {"magnitude": self.magnitude, "resolution": self.resolution,
                "precision": self.precision, "freqs": encode_uvarints(f)}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], escape: bool) -> BucketTable:
        magnitude = field(fields, "magnitude", int)
        resolution = field(fields, "resolution", int)
        precision = field(fields, "precision", int)
        if not (1 <= magnitude <= MAX_MAGNITUDE and 0 <= resolution <= MAX_RESOLUTION):
            raise FormatError("bucket table: magnitude or resolution out of range")
        buckets = int(bucket_of(np.array([magnitude]), resolution)[0])
        values = decode_uvarints(field(fields, "freqs", bytes), buckets + escape)
        if values.size and int(values.max()) > 1 << CODER_PRECISION:
            raise FormatError("bucket table: a frequency exceeds 2**24")
        values = values.astype(np.int64)
        if escape and values[-1] < 1:
            raise FormatError("bucket table: escape frequency 0")
        return cls(magnitude, resolution, precision, values[:buckets],
                   int(values[-1]) if escape else 0)

    @classmethod
    def fit(cls, symbols: np.ndarray, magnitude: int, escape: int) -> BucketTable | None:
        """The bucket table of least total cost (coded bits + stored bytes) for ``symbols``
        within −``magnitude`` … ``magnitude`` and ``escape`` escaped ones, or None if no
        table fits (too many buckets for the coder's precision)."""
        magnitude = max(int(magnitude), 1)
        mags = np.bincount(np.abs(symbols), minlength=magnitude + 1)[:magnitude + 1]
        return cls.fit_counts(mags, escape)

    def cost_bits(self, magnitudes: np.ndarray, escape: int) -> float:
        """Ideal code length in bits of symbols whose magnitudes have the histogram
        ``magnitudes`` (``magnitudes[m]`` = how many have |symbol| = m, m ≤ M) and of
        ``escape`` escape symbols, under this table."""
        buckets = bucket_of(np.arange(1, magnitudes.size), self.resolution)
        counts = np.bincount(buckets, weights=magnitudes[1:], minlength=self.freqs.size + 1)
        bits = float(np.dot(counts[1:], self.precision - np.log2(self.freqs)))
        bits += int(magnitudes[0]) * (self.precision - np.log2(self.zero_frequency()))
        return bits + (escape * (self.precision - np.log2(self.escape)) if escape else 0.0)

    @classmethod
    def fit_counts(cls, magnitudes: np.ndarray, escape: int) -> BucketTable | None:
        """As :meth:`fit`, from ``magnitudes[m]`` = how many symbols have |symbol| = m."""
        magnitude = max(magnitudes.size - 1, 1)
        magnitudes = np.pad(magnitudes, (0, magnitude + 1 - magnitudes.size))
        total = int(magnitudes.sum()) + escape
        least = int(np.ceil(np.log2(2 * magnitude + 2 + (escape > 0))))
        precisions = np.arange(max(MIN_TABLE_PRECISION, least), CODER_PRECISION + 1)
        scale = np.exp2(precisions.astype(np.float64))[:, None] / max(total, 1)
        best, best_bits = None, np.inf
        for resolution in FIT_RESOLUTIONS:  # all precisions at once for each resolution
            buckets = bucket_of(np.arange(1, magnitude + 1), resolution)
            widths = np.bincount(buckets)[1:]
            counts = np.bincount(buckets, weights=magnitudes[1:])[1:]
            freqs = np.maximum(1, np.rint(counts / (2 * widths) * scale)).astype(np.int64)
            esc = np.maximum(1, np.rint(escape * scale[:, 0])).astype(np.int64) * (escape > 0)
            zero = (np.int64(1) << precisions) - 2 * (freqs @ widths) - esc
            ok = zero >= 1
            if not ok.any():
                continue
            bits = (counts * (precisions[:, None] - np.log2(freqs))).sum(axis=1)
            bits += magnitudes[0] * (precisions - np.log2(np.maximum(zero, 1)))
            if escape:
                bits += escape * (precisions - np.log2(esc))
            bits += 8 * (_varint_bytes(freqs).sum(axis=1) + _varint_bytes(esc) * (escape > 0))
            bits = np.where(ok, bits, np.inf)
            i = int(np.argmin(bits))
            if bits[i] < best_bits:
                best_bits = bits[i]
                best = cls(magnitude, resolution, int(precisions[i]), freqs[i], int(esc[i]))
        return best


def _varint_bytes(values: np.ndarray) -> np.ndarray:
    """LEB128 length of each value (< 2**28)."""
    return 1 + (values >= 1 << 7) + (values >= 1 << 14) + (values >= 1 << 21)
