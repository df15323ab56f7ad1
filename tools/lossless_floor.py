#!/usr/bin/env python3
"""The floor under lossless float32 weights: what an ideal entropy coder could reach.

    python tools/lossless_floor.py                          # the corpus models
    python tools/lossless_floor.py m.onnx --compare bench-compression.json
    python tools/lossless_floor.py --json

Per model, over its float32 weights (payloads of at least 1024 elements, initializers and
Constant nodes alike): the ideal code length in bits per weight of

* **order 0**: the sign, the exponent, the top 7 mantissa bits given the exponent (each
  tensor its own tables, the tables free) and the 16 low mantissa bits as they are (trained
  weights' low bits are uniform: they cost 16 bits under any model);
* **previous exponent**: the same with the exponent coded given the previous element's
  exponent (a context inside the tensor; the 65,536-entry tables free as well).

Both are lower bounds for a coder with those contexts, since real tables cost bytes. With
``--compare`` (a ``tools/bench_compression.py --json`` result) it also prints the
smallest file issue 13 allows, 0.97 × min(ZipNN, zstd -19), next to the weights' floor
alone (the graph and the other tensors come on top of it). Exit 0; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from onnxz.modelio import open_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_models import fetch_all

MIN_ELEMENTS = 1024
LOW_BITS = 16
"""Mantissa bits below the top 7: taken as incompressible."""
TARGET = 0.97


def entropy_bits(counts: np.ndarray) -> float:
    """Ideal code length (bits) of the symbols counted in ``counts`` under their own
    order-0 model."""
    total = counts.sum()
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum() * total)


def conditional_bits(context: np.ndarray, symbol: np.ndarray, contexts: int,
                     symbols: int) -> float:
    """Ideal code length of ``symbol`` with one order-0 model per ``context`` value."""
    joint = np.bincount(context.astype(np.int64) * symbols + symbol,
                        minlength=contexts * symbols).reshape(contexts, symbols)
    return sum(entropy_bits(row) for row in joint if row.any())


def weight_floor(words: np.ndarray) -> tuple[float, float]:
    """(order 0, previous exponent): ideal bits of one tensor's float32 ``words``."""
    sign = (words >> 31).astype(np.int64)
    exponent = ((words >> 23) & 0xFF).astype(np.int64)
    top = ((words >> 16) & 0x7F).astype(np.int64)
    rest = (entropy_bits(np.bincount(sign, minlength=2))
            + conditional_bits(exponent, top, 256, 128) + LOW_BITS * words.size)
    order0 = entropy_bits(np.bincount(exponent, minlength=256)) + rest
    previous = np.concatenate(([0], exponent[:-1]))
    return order0, conditional_bits(previous, exponent, 256, 256) + rest


def model_floor(path: Path) -> dict:
    """The floor of one model's float32 weights."""
    count, order0, previous = 0, 0.0, 0.0
    model = open_model(path)
    for tensor in model.tensors:
        if tensor.etype.name != "float32" or tensor.count < MIN_ELEMENTS:
            continue
        words = tensor.payload().read().reshape(-1).view(np.uint32)
        a, b = weight_floor(words)
        count, order0, previous = count + words.size, order0 + a, previous + b
    return {"model": path.stem, "weights": count,
            "order0_bits_per_weight": order0 / count if count else None,
            "previous_exponent_bits_per_weight": previous / count if count else None,
            "order0_bytes": round(order0 / 8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("models", nargs="*", type=Path, help="default: the corpus models")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="a tools/bench_compression.py --json result (ZipNN, zstd -19)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    paths = args.models or list(fetch_all().values())
    others = {}
    if args.compare:
        for m in json.loads(args.compare.read_text())["models"]:
            sizes = [m["methods"][k]["size"] for k in ("zipnn", "zstd19")
                     if m["methods"].get(k, {}).get("size")]
            others[m["name"]] = min(sizes) if sizes else None
    rows = []
    for path in paths:
        row = model_floor(path)
        best_other = others.get(row["model"])
        row["allowed_bytes"] = round(TARGET * best_other) if best_other else None
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| model | float32 weights | order 0 (bits/weight) | previous exponent | "
          "weights' floor (bytes) | 0.97 × min(ZipNN, zstd -19) |")
    print("|:---|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r["weights"]:
            print(f"| {r['model']} | 0 | — | — | — | — |")
            continue
        allowed = f"{r['allowed_bytes']:,}" if r["allowed_bytes"] else "—"
        print(f"| {r['model']} | {r['weights']:,} | {r['order0_bits_per_weight']:.3f} | "
              f"{r['previous_exponent_bits_per_weight']:.3f} | {r['order0_bytes']:,} | "
              f"{allowed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
