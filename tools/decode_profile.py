#!/usr/bin/env python3
"""Where lossy decoding spends its time, stage by stage, on the corpus (one process).

For each corpus model packed with the lossy default (``onnxz.save``, one worker; with
``--lossless``, packed ``--lossless``: every tensor then counts under ``lossless``), times
(CPU time of this process, best of ``--repeat``; milliseconds):

* ``load``: ``onnxz.load`` with one worker, the whole file to a ModelProto;
* ``quant``: decoding the quantized tensors (every codec whose decoder reads escaped
  symbols: ``deadzone``, ``deadzone_zstd``, ``predictive``, ``trellis``…) chunk by chunk
  into arrays, from chunk bytes already read; of which
* ``symbols``: the entropy decoding of their symbols alone, each chunk's symbol positions
  in one call (the ANS stream of ``deadzone``, SPEC.md §8; the zstd high bytes and packed
  low bits of ``deadzone_zstd``, §17), range checks included;
* ``lookup``: the positions made values by the decoder's ``fill`` (the dequantization
  table lookup of §7.3), for the codecs whose values come from it (``predictive``'s levels
  are rebuilt row by row: in ``quant`` only);
* ``crc``: CRC-32 of every decoded tensor;
* ``lossless``: decoding the tensors the default keeps exact, from chunk bytes read;
* ``rest``: ``load`` less ``quant``, ``crc`` and ``lossless``: reading the file, the index
  and graph, decoder set-up, the slots in the graph, the copies into protobuf.

``quant%`` is the quantized tensors' share of the elements, ``codecs`` how many tensors
each codec has. MB/s are float32 MB of weights (4 bytes per stored element) per CPU second.

Usage::

    python tools/decode_profile.py [NAME ...] [--repeat N] [--lossless]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fetch_models import fetch_all

import onnxz
from onnxz.codecs import codec_class
from onnxz.codecs.base import ChunkDecoder, batches
from onnxz.codecs.deadzone import EscapedSymbolDecoder
from onnxz.codecs.predictive import PredictiveDecoder
from onnxz.container import ContainerReader, TensorEntry, split_parts
from onnxz.dtypes import BY_NAME


def _best(fn: Callable[[], object], repeat: int) -> float:
    """The least CPU seconds of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


@dataclass
class Tensor:
    """One stored tensor, ready to decode: its entry, decoder and chunks' parts."""

    entry: TensorEntry
    decoder: ChunkDecoder
    chunks: list[tuple[int, list[memoryview]]]  # (count, parts) per chunk

    @property
    def quantized(self) -> bool:
        return isinstance(self.decoder, EscapedSymbolDecoder)

    def decode(self) -> np.ndarray:
        out = np.empty(self.entry.element_count, dtype=BY_NAME[self.entry.dtype].numpy)
        start = 0
        for count, parts in self.chunks:
            self.decoder.decode_into(parts, out[start : start + count])
            start += count
        return out

    def symbols(self) -> list[np.ndarray]:
        """Each chunk's symbol positions (the entropy decoding alone)."""
        assert isinstance(self.decoder, EscapedSymbolDecoder)
        return [self.decoder.symbol_indexes(parts, count).take_indices(count)
                for count, parts in self.chunks]


def _tensors(path: Path) -> list[Tensor]:
    with ContainerReader(path) as reader:
        return [Tensor(e, codec_class(e.codec).decoder(e.params, BY_NAME[e.dtype]),
                       [(c.count, split_parts(reader.chunk_bytes(c, e.name), c.sizes))
                        for c in e.chunks])
                for e in reader.index.tensors]


def profile(path: Path, repeat: int) -> dict[str, float]:
    tensors = _tensors(path)
    quantized = [t for t in tensors if t.quantized]
    exact = [t for t in tensors if not t.quantized]
    looked_up = [t for t in quantized if not isinstance(t.decoder, PredictiveDecoder)]
    indexes = [(t, t.symbols()) for t in looked_up]
    none = np.zeros(0, dtype=np.intp)
    escaped = np.zeros(0, dtype=np.int64)

    def lookup() -> None:
        for t, chunks in indexes:
            decoder = t.decoder
            assert isinstance(decoder, EscapedSymbolDecoder)
            for index in chunks:
                out = np.empty(index.size, dtype=BY_NAME[t.entry.dtype].numpy)
                for batch in batches(index.size, decoder.batch):
                    decoder.fill(out[batch], index[batch], none, escaped, batch.start)

    decoded = [t.decode() for t in tensors]

    def crc() -> None:
        for values in decoded:
            zlib.crc32(values.view(np.uint8))

    elements = sum(t.entry.element_count for t in tensors)
    r = {
        "MB": 4 * elements / 1e6,
        "quant share": sum(t.entry.element_count for t in quantized) / elements,
        "load": _best(lambda: onnxz.load(path, workers=1), repeat),
        "quant": _best(lambda: [t.decode() for t in quantized], repeat),
        "symbols": _best(lambda: [t.symbols() for t in quantized], repeat),
        "lookup": _best(lookup, repeat),
        "crc": _best(crc, repeat),
        "lossless": _best(lambda: [t.decode() for t in exact], repeat),
    }
    r["rest"] = r["load"] - r["quant"] - r["crc"] - r["lossless"]
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lossless", action="store_true",
                        help="profile the --lossless files instead of the lossy default's")
    args = parser.parse_args(argv)
    paths = fetch_all(args.names or None)
    stages = ("load", "quant", "symbols", "lookup", "crc", "lossless", "rest")
    print(f"{'model':15s}   MB  quant%  load MB/s | ms: "
          + " ".join(f"{s:>8s}" for s in stages) + "  codecs")
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in paths.items():
            packed = Path(tmp) / f"{name}.onnxz"
            onnxz.save(src, packed, workers=1, lossless=args.lossless)
            r = profile(packed, args.repeat)
            with ContainerReader(packed) as reader:
                codecs = collections.Counter(e.codec for e in reader.index.tensors)
            print(f"{name:15s} {r['MB']:4.1f}  {100 * r['quant share']:5.1f}  "
                  f"{r['MB'] / r['load']:9.1f} |     "
                  + " ".join(f"{1e3 * r[s]:8.1f}" for s in stages) + "  "
                  + ", ".join(f"{c} {n}" for c, n in codecs.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
