"""The progress callback that long operations (pack, verify, rate control) accept."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, what)``: ``done`` of ``total`` steps, ``what`` names the
step just finished (a tensor, a sample, a search step)."""
