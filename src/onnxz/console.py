"""The ``onnxz`` command's entry point (and ``python -m onnxz``'s).

Loading the CLI imports onnx, onnxruntime and numpy: a second or more on a small device.
Ctrl-C in that time ends the command as it does during one, with one line on stderr and
status 130, not with a traceback from inside some library's import. This module imports
nothing of onnxz's but the package (whose names load lazily) until the CLI is asked for.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import NoReturn

EXIT_SIGNAL_BASE = 128
"""A command stopped by signal N exits with 128 + N, as a shell reports a killed command."""


def exit_stopped(signum: int) -> NoReturn:
    """End the command stopped by signal ``signum``: ``onnxz: stopped by SIGINT`` (its name)
    on stderr, status 128 + ``signum``."""
    with contextlib.suppress(OSError, ValueError):  # stderr gone: the status says it
        sys.stderr.write(f"onnxz: stopped by {signal.Signals(signum).name}\n")
        sys.stderr.flush()
    sys.exit(EXIT_SIGNAL_BASE + signum)


def main() -> None:
    """Load the CLI (:mod:`onnxz.cli`) and run it on ``sys.argv``."""
    try:
        from onnxz.cli import main as command
    except KeyboardInterrupt:
        exit_stopped(signal.SIGINT)
    command()
