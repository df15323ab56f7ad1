"""The embedded example behind ``make demo`` keeps working."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_runs_and_lossless_is_exact(capsys):
    demo = runpy.run_path(str(EXAMPLES / "demo.py"))
    assert demo["main"]() == 0
    out = capsys.readouterr().out
    assert "onnxz lossy" in out and "onnxz lossless" in out
