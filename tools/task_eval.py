#!/usr/bin/env python3
"""What task agreement does a packed model reach on the held-out real inputs of its model?

    python tools/task_eval.py magika /tmp/magika.onnxz            # 99.67% (299/300 decisions)
    python tools/task_eval.py ppocr_rec a.onnxz b.onnxz --json    # several files, JSON lines
    python tools/task_eval.py magika --calibration calib.npz      # write the calibration .npz
    python tools/task_eval.py --list                              # models, data and rules

FILE is a .onnxz (decoded in memory) or a .onnx. The original model's decisions are cached
(~/.cache/onnxz/tasks), so only the packed model runs. Exit 0; 2 on usage errors. Needs
``pip install -e '.[ratebench]'`` (and espeak-ng for the voice activity models).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("model", nargs="?", help="model name (see --list)")
    parser.add_argument("files", nargs="*", type=Path, help=".onnxz or .onnx files to judge")
    parser.add_argument("--calibration", type=Path, metavar="NPZ",
                        help="write the calibration inputs (verifier .npz layout) here")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    parser.add_argument("--list", action="store_true", help="list the models and their tasks")
    args = parser.parse_args(argv)
    if args.list:
        for t in tasks.TASKS.values():
            kind = "corpus" if t in tasks.CORPUS_TASKS else "unseen"
            print(f"{t.name} ({kind}, {t.family}; fidelity {t.fidelity!r})\n"
                  f"  data: {t.data}\n  rule: {t.rule}")
        return 0
    if not args.model or not (args.files or args.calibration):
        parser.error("give a model name and files to judge (or --calibration NPZ)")
    try:
        task = tasks.get(args.model)
    except KeyError as e:
        parser.error(str(e.args[0]))
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if args.calibration:
        task.write_calibration(args.calibration)
        print(f"{args.calibration}: {len(task.split.calibration)} calibration items of "
              f"{task.name}", file=sys.stderr)
    for path in args.files:
        start = time.perf_counter()
        result = task.evaluate(path)
        seconds = time.perf_counter() - start
        if args.json:
            print(json.dumps({"model": task.name, "file": str(path), "bytes": path.stat().st_size,
                              "agreement": result.fraction, "agreeing": result.agreeing,
                              "total": result.total, "unit": result.unit,
                              "seconds": round(seconds, 2)}))
        else:
            print(f"{path}: {result}  [{path.stat().st_size:,} bytes, {seconds:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
