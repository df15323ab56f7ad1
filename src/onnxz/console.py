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
    _forget_caught_interrupt()
    sys.exit(EXIT_SIGNAL_BASE + signum)


def _forget_caught_interrupt() -> None:
    """Clear CPython's mark of a KeyboardInterrupt that ended an ``exec`` of a string.

    CPython (3.11 here) marks such an interrupt as unhandled even when a caller catches it,
    and ``python -m onnxz`` then ends by killing itself with SIGINT, after the command's
    own line, instead of exiting with its status (one Ctrl-C in six while the CLI loaded,
    before :func:`main` noted it instead; a library imported during a command can still
    take it there: dataclasses get their methods from ``exec``). Each ``exec`` of a string
    clears the mark as it starts; this one runs a constant."""
    exec("None", {})


def main() -> None:
    """Load the CLI (:mod:`onnxz.cli`) and run it on ``sys.argv``. Ctrl-C while it loads is
    noted, not raised: raised inside a library's import, an extension module made it an
    ImportError that some library took for a missing module and went on (the command then
    finished, status 0). The command stops once the CLI has loaded."""
    arrived: list[int] = []
    handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not ignored
    if handled:
        signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        try:
            from onnxz.cli import main as command
        finally:
            if handled:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if arrived:
            exit_stopped(signal.SIGINT)
    except KeyboardInterrupt:  # after the handler's restore, or raised by an import itself
        exit_stopped(signal.SIGINT)
    command()
