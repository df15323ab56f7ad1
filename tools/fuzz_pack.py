#!/usr/bin/env python3
"""Long fuzzing runs of pack: the mutated models and oracle of ``tests/pack_fuzzing.py``.

CI runs cases 0–1999 (``tests/test_fuzz_pack.py``); this runs as many as asked from
``--start``, or replays cases by number. A case that breaks the oracle is printed with
what broke it, and its model saved under ``--out`` as ``case-<number>-<sha256 prefix>.onnx``.
The number of the case running is kept in ``--out``/running: the time limit interrupts
Python only, so a model that onnxruntime runs for ever stops the run there. Cases 9844 and
511484 (``--actions default``) are such models: the Loop of ``carried_weights_loop`` reads
its trip count from an external file whose first 8 bytes make it about 5 × 10^17, and the
default's first run of the original never ends (nor would it anywhere else).

Usage::

    python tools/fuzz_pack.py --start 2000 --cases 100000 --seconds 3600
    python tools/fuzz_pack.py --actions default --seconds 600
    python tools/fuzz_pack.py --replay 491 1045
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pack_fuzzing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=2000, help="first case number")
    parser.add_argument("--cases", type=int, default=10_000, help="cases to run at most")
    parser.add_argument("--seconds", type=float, default=600, help="time to run at most")
    parser.add_argument("--actions", nargs="+", choices=pack_fuzzing.ACTIONS,
                        default=list(pack_fuzzing.ACTIONS), help="what cases may do")
    parser.add_argument("--replay", nargs="+", type=int, metavar="NUMBER",
                        help="run these cases (with every action allowed) and nothing else")
    parser.add_argument("--out", type=Path, default=Path("fuzz-pack-failures"))
    args = parser.parse_args(argv)
    numbers = args.replay or range(args.start, args.start + args.cases)
    actions = pack_fuzzing.ACTIONS if args.replay else tuple(args.actions)
    started, ran, failed = time.monotonic(), 0, 0
    with tempfile.TemporaryDirectory() as work:
        for number in numbers:
            if not args.replay and time.monotonic() - started > args.seconds:
                break
            case = pack_fuzzing.Case.of(number, actions)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "running").write_text(f"{number}\n")
            problems = pack_fuzzing.check(case, Path(work))
            ran += 1
            if problems:
                failed += 1
                saved = args.out / f"case-{number}-{pack_fuzzing.digest(case)}.onnx"
                saved.write_bytes(case.model_bytes())
                print(f"{case}: {'; '.join(problems)} (model: {saved})", flush=True)
    print(f"{ran} cases in {time.monotonic() - started:.0f} s: "
          + (f"{failed} broke the oracle" if failed else "no failure"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
