#!/usr/bin/env python3
"""Stop signals at random moments: every CLI command must end as README's guarantees say.

Each case runs one command (``pack``, ``pack --lossless``, ``unpack``, ``info``, ``verify``)
on ``--model`` in a fresh folder, as a terminal starts it (SIGINT at its default), sends it
SIGINT, SIGTERM or SIGHUP after a random delay within the command's own duration (timed
once at the start; not before onnxz's entry point is loaded: in the interpreter's own
start-up, site's ``.pth`` files and runpy, Ctrl-C is Python's, a traceback onnxz cannot
catch), and checks what it left:

* no traceback on stderr;
* status 0 (it finished first: the output complete), 130/143/129 with exactly
  ``onnxz: stopped by SIGNAME`` on stderr and no file in the folder, or killed by the
  signal itself with nothing on stderr (SIGTERM or SIGHUP before the command has set its
  handlers, or any signal while Python shuts down): the folder empty or the output
  complete.

Random delays find the short windows deterministic tests miss: the first run found a
SIGTERM while a command started its watcher thread (a traceback, status 1) and Ctrl-C
inside onnxruntime's import (``ImportError: initialization failed``, status 1).

Usage::

    python tools/fuzz_signals.py [--model M.onnx] [--cases 100] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TIMEOUT = 300  # seconds a command may take after its signal: only a hang comes near it


def commands(model: Path, packed: Path) -> dict[str, Callable[[Path], tuple[list[str], str]]]:
    """Command name -> (folder -> the arguments after ``onnxz``, and the output it writes
    there, "" for none)."""
    return {
        "pack": lambda d: (["pack", str(model), "-o", str(d / "o.onnxz")], "o.onnxz"),
        "pack --lossless": lambda d: (["pack", str(model), "-o", str(d / "o.onnxz"),
                                       "--lossless"], "o.onnxz"),
        "unpack": lambda d: (["unpack", str(packed), "-o", str(d / "o.onnx")], "o.onnx"),
        "info": lambda d: (["info", str(packed)], ""),
        "verify": lambda d: (["verify", str(model), str(packed)], ""),
    }


def _run(args: list[str], folder: Path, signum: int | None = None, delay: float = 0.0
         ) -> tuple[int | None, str]:
    """The command's status (None: it or a process it started still held its stderr after
    :data:`TIMEOUT` seconds, and all were killed) and stderr. It runs in a session of its
    own, so that what it leaves behind can be found and killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxz", *args], cwd=folder, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if signum is not None:
        time.sleep(delay)
        proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, ""
    return proc.returncode, err


def _seconds(argv: list[str], folder: Path) -> float:
    """Wall time of one run of ``argv`` in ``folder``."""
    start = time.monotonic()
    subprocess.run(argv, cwd=folder, capture_output=True, timeout=TIMEOUT)
    return time.monotonic() - start


@dataclass
class Case:
    command: str
    signal: str
    delay: float
    status: int | None  # None: it did not end
    problem: str  # "" when the command ended as it must


def judge(status: int | None, stderr: str, left: list[str], output: str, signum: int
          ) -> str:
    """What is wrong with how a command ended ("" if nothing); ``status`` None: it did not
    end (see :func:`_run`)."""
    name = signal.Signals(signum).name
    if status is None:
        return f"no end within {TIMEOUT} s (the command, or a process it left, held stderr)"
    if "Traceback" in stderr:
        return "traceback: " + stderr.strip().splitlines()[-1]
    if status == 0:
        return "" if left == ([output] if output else []) else f"finished, left {left}"
    if status == 128 + signum:
        if stderr != f"onnxz: stopped by {name}\n":
            return f"stderr {stderr!r}"
        return "" if not left else f"stopped, left {left}"
    if status == -signum:
        if stderr:
            return f"killed by {name}, stderr {stderr!r}"
        return "" if left in ([], [output] if output else []) else f"killed, left {left}"
    return f"status {status}, stderr {stderr[-300:]!r}"


def fuzz(model: Path, cases: int, seed: int, work: Path,
         report: Callable[[Case], None] = lambda case: None) -> list[Case]:
    """Run ``cases`` cases on ``model`` (packed once by the lossy default) in ``work``."""
    packed = work / "m.onnxz"
    status, err = _run(["pack", str(model), "-o", str(packed)], work)
    if status != 0:
        raise SystemExit(f"fuzz_signals: cannot pack {model}: {err.strip()}")
    plan = commands(model, packed)
    loaded = min(_seconds([sys.executable, "-c", "import onnxz.console"], work)
                 for _ in range(3))
    durations = {}
    for name, make in plan.items():  # how long each takes here: the delays' range
        folder = work / "timing"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        durations[name] = _seconds([sys.executable, "-m", "onnxz", *make(folder)[0]], folder)
    rng = random.Random(seed)
    done = []
    for number in range(cases):
        name = rng.choice(sorted(plan))
        signum = rng.choice(SIGNALS)
        delay = rng.uniform(1.5 * loaded, 1.1 * durations[name])  # margin: a slower start
        folder = work / f"case-{number}"
        folder.mkdir()
        args, output = plan[name](folder)
        status, err = _run(args, folder, signum, delay)
        left = sorted(p.name for p in folder.iterdir())
        case = Case(name, signal.Signals(signum).name, round(delay, 3), status,
                    judge(status, err, left, output, signum))
        shutil.rmtree(folder)
        report(case)
        done.append(case)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        help="the .onnx to work on (default: the corpus's ppocr_cls)")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every case here")
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from fetch_models import fetch_all

        model = fetch_all(["ppocr_cls"])["ppocr_cls"]

    def report(case: Case) -> None:
        verdict = f"BAD {case.problem}" if case.problem else "ok"
        status = "none" if case.status is None else case.status
        print(f"{case.command:16} {case.signal:8} after {case.delay:6.3f} s: status "
              f"{status:>4}  {verdict}", flush=True)

    with tempfile.TemporaryDirectory() as work:
        done = fuzz(model.resolve(), args.cases, args.seed, Path(work), report)
    bad = [c for c in done if c.problem]
    stopped = sum(c.status not in (0, None) for c in done)
    print(f"{len(done)} cases, {stopped} stopped by their signal, {len(bad)} bad")
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in done], indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
