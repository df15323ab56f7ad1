"""tools/fuzz_signals.py: how it judges a command's end, and a short run of it."""

from __future__ import annotations

import signal

import fuzz_signals
import onnx
import pytest
from models import mlp

TERM = signal.SIGTERM


@pytest.mark.parametrize("status, stderr, left, problem", [
    (0, "", ["o.onnxz"], ""),
    (0, "", [], "finished, left []"),
    (143, "onnxz: stopped by SIGTERM\n", [], ""),
    (143, "onnxz: stopped by SIGTERM\n", [".onnxz-0123abcd.tmp"], "stopped, left"),
    (143, "\nonnxz: stopped by SIGTERM\n", [], "stderr"),
    (-15, "", [], ""),
    (-15, "", ["o.onnxz"], ""),
    (-15, "", [".onnxz-0123abcd.tmp"], "killed, left"),
    (1, "Traceback (most recent call last):\n  ...\nonnxz.cli._Stopped: SIGTERM\n", [],
     "traceback: onnxz.cli._Stopped: SIGTERM"),
    (2, "onnxz: error: aborted\n", [], "status 2"),
    (None, "", [], "no end within"),
])
def test_a_command_ends_as_the_guarantees_say_or_is_reported(status, stderr, left, problem):
    found = fuzz_signals.judge(status, stderr, left, "o.onnxz", TERM)
    assert found.startswith(problem) and bool(found) == bool(problem), found


def test_a_short_run_on_a_small_model_finds_nothing(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(), model)
    work = tmp_path / "work"
    work.mkdir()
    cases = fuzz_signals.fuzz(model, 3, seed=0, work=work)
    assert len(cases) == 3
    assert [c.problem for c in cases] == ["", "", ""], cases
