"""Progress of long work (pack, unpack, verify): what is reported, and a terminal display.

A ``progress`` argument of the API is either a plain function, called as
``progress(done, total, name)`` after each tensor (tensor counts, as in onnxz 0.1; verify
calls it after each sample), or a
:class:`ProgressListener`, whose :meth:`~ProgressListener.update` gets the full
:class:`ProgressUpdate` (tensors and bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class ProgressUpdate:
    """After one tensor: tensors and bytes (of decoded tensor data) done and in total."""

    tensors_done: int
    tensors_total: int
    bytes_done: int
    bytes_total: int
    name: str


class ProgressListener:
    """Receives every :class:`ProgressUpdate`; subclass and override :meth:`update`."""

    def update(self, update: ProgressUpdate) -> None:
        """Called after each tensor (each sample for verify)."""

    def __call__(self, done: int, total: int, name: str) -> None:
        """The plain-function form (tensor counts only): forwarded without bytes."""
        self.update(ProgressUpdate(done, total, 0, 0, name))


Progress = Callable[[int, int, str], None] | ProgressListener
"""What the API's ``progress`` arguments accept."""


def notify(progress: Progress | None, update: ProgressUpdate) -> None:
    """Deliver ``update`` to ``progress`` in the form it takes."""
    if progress is None:
        return
    if isinstance(progress, ProgressListener):
        progress.update(update)
    else:
        progress(update.tensors_done, update.tensors_total, update.name)


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KB'`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class TerminalProgress(ProgressListener):
    """One status line, rewritten in place: label, items (``unit``), bytes, rate, time left.

    ``packing  12/24 tensors  1.5 GB/3.0 GB  85.3 MB/s  ETA 0:18``; redrawn at most
    ``per_second`` times a second; :meth:`close` ends the line.
    """

    def __init__(self, stream: IO[str], label: str, unit: str = "tensors",
                 per_second: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.label, self.unit, self.clock = stream, label, unit, clock
        self.interval = 1.0 / per_second
        self.started = clock()
        self.last_draw = -float("inf")
        self.width = 0
        self.drawn = False

    def update(self, update: ProgressUpdate) -> None:
        now = self.clock()
        final = update.tensors_done == update.tensors_total
        if now - self.last_draw < self.interval and not final:
            return
        self.last_draw = now
        line = self.line(update, now - self.started)
        self._write("\r" + line.ljust(self.width))
        self.width = max(self.width, len(line))
        self.drawn = True

    def _write(self, text: str) -> None:
        """Progress is a courtesy: a terminal that went away must not stop the work."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.interval = float("inf")

    def line(self, u: ProgressUpdate, elapsed: float) -> str:
        """The status text for ``u`` after ``elapsed`` seconds."""
        parts = [self.label, f"{u.tensors_done}/{u.tensors_total} {self.unit}"]
        if u.bytes_total:
            parts.append(f"{human_bytes(u.bytes_done)}/{human_bytes(u.bytes_total)}")
            if elapsed > 0 and u.bytes_done:
                rate = u.bytes_done / elapsed
                parts.append(f"{human_bytes(rate)}/s")
                left = (u.bytes_total - u.bytes_done) / rate
                parts.append(f"ETA {_clock(left)}" if u.bytes_done < u.bytes_total
                             else f"in {_clock(elapsed)}")
        return "  ".join(parts)

    def close(self) -> None:
        if self.drawn:
            self._write("\n")


def _clock(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"
