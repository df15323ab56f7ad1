"""The verify examples in examples/ run and print their tables (magika and silero: slow, and
skipped without their extra packages)."""

from __future__ import annotations

import importlib.util
import runpy
import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def rows(out: str) -> dict[str, str]:
    """Table rows by their first column (setting names may contain one space)."""
    return {line[:21].strip(): line for line in out.splitlines()}


def test_digits_rate_accuracy(capsys):
    example = runpy.run_path(str(EXAMPLES / "digits_rate_accuracy.py"))
    assert example["main"]() == 0
    table = rows(capsys.readouterr().out)
    assert table["lossless"].endswith("passed") and "inf" in table["lossless"]
    assert table["step 1/64 (default)"].endswith("passed")
    assert "FAILED: snr_db" in table["step 4"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("magika") is None,
                    reason="needs magika (pip install 'onnxz[examples]')")
def test_magika_files(capsys):
    example = runpy.run_path(str(EXAMPLES / "magika_files.py"))
    assert example["main"]() == 0
    out = capsys.readouterr().out
    lossless = rows(out)["lossless"]
    assert " 200/200 " in lossless and lossless.endswith("passed")
    assert "step 1" in rows(out)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_silero_speech(capsys):
    example = runpy.run_path(str(EXAMPLES / "silero_speech.py"))
    assert example["main"]() == 0
    lossless = [line for line in capsys.readouterr().out.splitlines() if "lossless" in line]
    assert len(lossless) == 2
    assert all("100.00%" in line and line.endswith("passed") for line in lossless)
