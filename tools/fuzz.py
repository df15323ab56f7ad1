#!/usr/bin/env python3
"""Long fuzzing runs: the mutations and oracle of ``tests/fuzzing.py``, randomized.

CI runs a fixed 10,000 cases (``tests/test_fuzz.py``); this runs as many as asked, with a new
random seed each round. The first failure is shrunk by hypothesis, saved under ``--out`` as
``<seed vector>.<kind>.<sha256 prefix>.onnxz`` and reported; ``--replay`` checks saved files
again (after a fix, say). The address space can be capped so that a memory blow-up shows as
a MemoryError (a failure) instead of swapping.

Usage::

    python tools/fuzz.py --cases 200000 --seconds 3600
    python tools/fuzz.py --kinds index stream --seed 7
    python tools/fuzz.py --replay fuzz-failures/*.onnxz
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzzing

ROUND = 250
"""Cases per hypothesis run; the time limit is checked between runs."""


def save(case: fuzzing.Case, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(case.data).hexdigest()[:12]
    path = out / f"{case.seed.name}.{case.kind}.{digest}.onnxz"
    path.write_bytes(case.data)
    return path


class Failure(Exception):
    """A case failed the oracle; ``path`` is the shrunk case's file."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.path = path


def fuzz_round(kind: str, seeds: tuple[fuzzing.Seed, ...], seed: int, workdir: Path,
               out: Path) -> int:
    """Check :data:`ROUND` cases of one kind; the number checked (:class:`Failure` if one
    fails)."""
    checked = 0
    failed: list[Path] = []

    @hypothesis_seed(seed)
    @settings(max_examples=ROUND, database=None, deadline=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(fuzzing.CASES[kind](seeds))
    def run(case: fuzzing.Case) -> None:
        nonlocal checked
        checked += 1
        try:
            fuzzing.check(case, workdir)
        except Exception:
            failed.append(save(case, out))
            raise

    try:
        run()
    except Exception as exc:
        for path in set(failed[:-1]) - {failed[-1]}:  # hypothesis shrinks: keep the last
            path.unlink()
        raise Failure(failed[-1], exc) from exc
    return checked


def replay(paths: list[Path], seeds: tuple[fuzzing.Seed, ...], workdir: Path) -> int:
    by_name = {s.name: s for s in seeds}
    failed = 0
    for path in paths:
        seed_name, kind = path.name.split(".")[:2]
        case = fuzzing.Case(by_name[seed_name], kind, path.read_bytes())
        try:
            fuzzing.check(case, workdir)
            print(f"ok    {path}")
        except Exception as exc:
            failed += 1
            print(f"FAIL  {path}: {type(exc).__name__}: {exc}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="stop after this many")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long")
    parser.add_argument("--kinds", nargs="+", choices=sorted(fuzzing.CASES),
                        default=sorted(fuzzing.CASES))
    parser.add_argument("--seed", type=int, default=None, help="first round's seed")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--max-memory-gib", type=float, default=8.0,
                        help="address-space cap (0: none)")
    parser.add_argument("--replay", type=Path, nargs="+", help="check saved cases again")
    args = parser.parse_args(argv)
    seeds = fuzzing.load_seeds()
    if args.max_memory_gib:
        cap = int(args.max_memory_gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    with tempfile.TemporaryDirectory() as tmp:
        if args.replay:
            return replay(args.replay, seeds, Path(tmp))
        seed = random.randrange(1 << 32) if args.seed is None else args.seed
        print(f"seed {seed}, kinds {' '.join(args.kinds)}")
        start, checked, round_no = time.monotonic(), 0, 0
        while checked < args.cases and time.monotonic() - start < args.seconds:
            kind = args.kinds[round_no % len(args.kinds)]
            try:
                checked += fuzz_round(kind, seeds, seed + round_no, Path(tmp), args.out)
            except Failure as failure:
                print(f"FAILURE after {checked} cases ({kind}, seed {seed + round_no}): "
                      f"{failure}\nthe case: {failure.path}")
                return 1
            round_no += 1
        print(f"{checked} cases in {time.monotonic() - start:.0f} s: no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
