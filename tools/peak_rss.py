#!/usr/bin/env python3
"""Run a command and report its wall time and peak memory, worker processes included.

Two figures: ``peak_rss`` is the largest sum of the resident set sizes of the process and
all its descendants, sampled every ``interval`` seconds from /proc (Linux); ``max_rss`` is
the kernel's peak of the main process alone (``wait4``), which on Linux starts from the
parent's size at the fork, so it says little when the parent is large. Both in bytes.

Usage::

    python tools/peak_rss.py -- onnxz pack big.onnx -o big.onnxz
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Measured:
    """One command's exit status, wall time (s) and memory (bytes)."""

    returncode: int
    seconds: float
    peak_rss: int
    max_rss: int


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(c) for c in text.split()]
    except OSError:
        pass
    return found


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss(p)
        stack += _children(p)
    return total


def measure(argv: list[str], interval: float = 0.01, **popen: object) -> Measured:
    """Run ``argv`` to completion and measure it."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **popen)  # type: ignore[call-overload]
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(interval)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    max_rss = usage.ru_maxrss * 1024  # kilobytes on Linux
    return Measured(proc.returncode, seconds, peak, max_rss)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    result = measure(args)
    print(json.dumps(asdict(result)))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
