#!/usr/bin/env python3
"""Where lossy decoding spends its time, stage by stage, on the corpus (one process).

For each corpus model packed with the lossy default, times (best of ``--repeat``):

* ``load``: ``onnxz.load`` with one worker, the whole file to a ModelProto;
* ``ans``: constriction's decode calls alone, over every dead-zone chunk (whole chunks);
* ``lookup``: reconstructed values gathered from the per-table lookup (the dequantization);
* ``crc``: CRC-32 of every decoded tensor;
* ``lossless``: decoding the tensors the lossy default keeps exact.

and the dead-zone share of the elements. MB/s are float32 MB of weights (4 bytes per
stored element). The rest of ``load`` is index, graph, checks and copies into protobuf.

Usage::

    python tools/decode_profile.py [NAME ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from pathlib import Path

import constriction
import numpy as np
from fetch_models import fetch_all

import onnxz
from onnxz.codecs import codec_class
from onnxz.container import ContainerReader, split_parts
from onnxz.dtypes import BY_NAME


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def profile(path: Path, repeat: int) -> dict[str, float]:
    with ContainerReader(path) as reader:
        entries = reader.index.tensors
        chunks = {id(e): [split_parts(reader.chunk_bytes(c, e.name), c.sizes)
                          for c in e.chunks] for e in entries}
    lossy = [e for e in entries if e.codec == "deadzone"]
    exact = [e for e in entries if e.codec != "deadzone"]
    decoders = {id(e): codec_class(e.codec).decoder(e.params, BY_NAME[e.dtype])
                for e in entries}  # by entry: names may repeat
    streams = [(np.frombuffer(parts[0], dtype="<u4").astype(np.uint32),
                decoders[id(e)].table._model(), c.count)
               for e in lossy for parts, c in zip(chunks[id(e)], e.chunks, strict=True)]

    def ans():
        for words, model, count in streams:
            constriction.stream.stack.AnsCoder(words).decode(model, count)

    indices = [constriction.stream.stack.AnsCoder(w).decode(m, n) for w, m, n in streams]
    lookups = [decoders[id(e)].lookup for e in lossy for _ in e.chunks]

    def lookup():
        for table, index in zip(lookups, indices, strict=True):
            np.take(table, index)

    decoded = []

    def decode(group):
        decoded.clear()
        for e in group:
            out = np.empty(e.element_count, dtype=BY_NAME[e.dtype].numpy)
            start = 0
            for parts, c in zip(chunks[id(e)], e.chunks, strict=True):
                decoders[id(e)].decode_into(parts, out[start : start + c.count])
                start += c.count
            decoded.append(out)

    decode(entries)
    everything = list(decoded)

    def crc():
        for values in everything:
            zlib.crc32(values.view(np.uint8))

    elements = sum(e.element_count for e in entries)
    return {
        "MB": 4 * elements / 1e6,
        "deadzone share": sum(e.element_count for e in lossy) / elements,
        "load": _best(lambda: onnxz.load(path, workers=1), repeat),
        "ans": _best(ans, repeat),
        "lookup": _best(lookup, repeat),
        "crc": _best(crc, repeat),
        "lossless": _best(lambda: decode(exact), repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    paths = fetch_all(args.names or None)
    print("model            MB  lossy%  load MB/s  | ms: load    ans  lookup   crc  lossless")
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in paths.items():
            packed = Path(tmp) / f"{name}.onnxz"
            onnxz.save(src, packed, workers=1)
            r = profile(packed, args.repeat)
            print(f"{name:15s} {r['MB']:4.1f}  {100 * r['deadzone share']:5.1f}  "
                  f"{r['MB'] / r['load']:9.1f}  | {1e3 * r['load']:8.1f} {1e3 * r['ans']:6.1f} "
                  f"{1e3 * r['lookup']:7.1f} {1e3 * r['crc']:5.1f} {1e3 * r['lossless']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
