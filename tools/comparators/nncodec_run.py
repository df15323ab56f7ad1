#!/usr/bin/env python3
"""Code a set of weight tensors with NNCodec 2.1.3 (the MPEG NNR reference codec) at several
QPs; runs in NNCodec's own venv (``make nncodec-venv``), not in onnxz's.

    .venv-nncodec/bin/python tools/comparators/nncodec_run.py WEIGHTS.npz OUTDIR \\
        --qp -38 --qp -30 [--no-dq]
    ... nncodec_run.py WEIGHTS.npz OUTDIR --serve [--no-dq]   # QPs read from stdin, one a line

WEIGHTS.npz holds float32 arrays by name. For each QP it writes OUTDIR/qp<QP>.npz (the
decoded arrays, same names) and prints one JSON line: {"qp", "use_dq", "bitstream_bytes",
"seconds"}. ``--serve`` keeps one process (torch imported once) for a sweep that picks the
next QP from the last result. ``use_dq`` is NNCodec's dependent (trellis-coded)
quantization, on by default as in NNCodec; ``--no-dq`` turns it off.

nncodec imports torchvision (for its dataset helpers) at import time, and the torchvision
wheels reachable here fail to load beside the local torch build; the codec never uses it,
so a placeholder stands in for every ``torchvision`` module.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import sys
import tempfile
import time
import types
import typing
from pathlib import Path


class _PlaceholderType(type):
    """Classes whose attributes are more such classes: enough for nncodec's module-level
    uses of torchvision (transform tables, dataset subclasses); the codec never runs them."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(name)


def _placeholder(name: str) -> type:
    return _PlaceholderType(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _Placeholder(types.ModuleType):
    """A torchvision module: every attribute is a placeholder class."""

    __path__: typing.ClassVar[list[str]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(name)


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Placeholder(spec.name)

    def exec_module(self, module):
        pass


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--qp", type=int, action="append", default=[])
    parser.add_argument("--serve", action="store_true", help="read QPs from stdin")
    parser.add_argument("--no-dq", action="store_true", help="without dependent quantization")
    args = parser.parse_args(argv)

    sys.meta_path.insert(0, _TorchvisionStandIn())
    import numpy as np
    from nncodec import nnc

    with np.load(args.weights) as z:
        params = {k: np.ascontiguousarray(z[k], np.float32) for k in z.files}
    args.outdir.mkdir(parents=True, exist_ok=True)
    qps = (int(line) for line in sys.stdin if line.strip()) if args.serve else args.qp
    for qp in qps:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            bitstream = nnc.compress(params, bitstream_path=os.path.join(tmp, "b.nnc"), qp=qp,
                                     use_dq=not args.no_dq, return_bitstream=True,
                                     verbose=False)
            decoded = nnc.decompress(bitstream, verbose=False)
        np.savez(args.outdir / f"qp{qp}.npz",
                 **{k: np.asarray(decoded[k], np.float32).reshape(params[k].shape)
                    for k in params})
        print(json.dumps({"qp": qp, "use_dq": not args.no_dq,
                          "bitstream_bytes": len(bitstream),
                          "seconds": round(time.perf_counter() - start, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
