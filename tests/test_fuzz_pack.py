"""Fuzzing pack in CI: 2,000 mutated models of ``tests/models.py`` packed, analyzed,
unpacked (the same cases every run). Only OnnxzError escapes, nothing hangs, a failed pack
leaves nothing, the model file is untouched, nothing else reaches stderr.
``tools/fuzz_pack.py`` runs longer; ``tests/pack_fuzzing.py`` says what a case is."""

from __future__ import annotations

import time

import models
import numpy as np
import onnxruntime
import pack_fuzzing
import pytest
from fuzzing import WATCHDOG_GRACE, Hang, time_limit

from onnxz import interrupts

pytestmark = pytest.mark.fuzz

CASES = 2000
BLOCKS = 4


@pytest.mark.parametrize("block", range(BLOCKS))
def test_mutated_models(block, tmp_path):
    found = []
    for number in range(block * CASES // BLOCKS, (block + 1) * CASES // BLOCKS):
        case = pack_fuzzing.Case.of(number)
        if problems := pack_fuzzing.check(case, tmp_path):
            found.append(f"{case}: {'; '.join(problems)}")
    assert not found, "\n".join(found)


def test_the_oracle_sees_a_foreign_exception(tmp_path, monkeypatch):
    """A model whose names are not UTF-8 once ended pack in an AttributeError: without the
    check that refuses such a model, some of the fixed cases find it (the oracle works)."""
    monkeypatch.setattr("onnxz.modelio.check_model", lambda model: None)
    problems = [p for n in (491, 1045, 1416) for p in pack_fuzzing.check(
        pack_fuzzing.Case.of(n), tmp_path)]
    assert problems and all("AttributeError" in p for p in problems)


def test_the_time_limit_ends_a_model_run_that_never_returns():
    """Case 92787 (a Loop whose trip count the mutation read from an external file:
    5.06e17 steps) held the pack fuzzer in onnxruntime for an hour: the limit's alarm waits
    for the run to return, so its watchdog ends the run."""
    model = models.carried_weights_loop(steps=2**62)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    feed = {"x": np.ones((1, 32), np.float32)}
    start = time.monotonic()
    with pytest.raises(Hang), time_limit(1):
        interrupts.run(session, feed)
    assert time.monotonic() - start < 1 + WATCHDOG_GRACE + 5
    short = onnxruntime.InferenceSession(models.carried_weights_loop().SerializeToString())
    assert interrupts.run(short, feed)[0].shape == (1, 32)  # later runs are not stopped
