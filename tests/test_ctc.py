"""The ``ctc`` fidelity metric: greedy CTC strings, the flips that keep them, and what rate
control's margins make of them."""

from __future__ import annotations

import numpy as np
import pytest

from onnxz.ctc import blank_class, greedy_string, harmless_alternatives
from onnxz.fidelity import Fidelity
from onnxz.ratecontrol.objective import Margins
from onnxz.verifier import ClassScores, TensorSpec, _Accumulator

LOGITS = ClassScores("named by the caller")


def test_harmless_alternatives_are_exactly_the_substitutions_that_keep_the_string():
    rng = np.random.default_rng(3)
    for _ in range(3000):
        blank = int(rng.integers(0, 4))
        path = rng.integers(0, 4, int(rng.integers(1, 9)))
        string = greedy_string(path, blank)
        found = harmless_alternatives(path, blank)
        for t in range(path.size):
            keep = {c for c in range(4) if c != path[t] and greedy_string(
                np.where(np.arange(path.size) == t, c, path), blank) == string}
            assert {int(c) for c in found[t] if c >= 0} == keep, (path.tolist(), blank, t)


def test_the_blank_is_the_most_frequent_class():
    assert blank_class([np.array([5, 5, 2]), np.array([5, 1])]) == 5
    assert blank_class([np.array([1, 2])]) == 1 and blank_class([]) == 0


def one_hot(path, classes=6, scale=4.0):
    return (np.eye(classes)[np.asarray(path)] * scale).astype(np.float32)[None]  # [1, T, C]


def test_ctc_counts_strings_not_positions():
    acc = _Accumulator(TensorSpec("out", np.dtype(np.float32), (1, "T", 6)), LOGITS)
    acc.add(one_hot([0, 3, 3, 0, 5, 0]), one_hot([0, 3, 0, 0, 5, 5]))  # "35" kept
    acc.add(one_hot([0, 2, 0, 4, 0, 0]), one_hot([0, 2, 0, 2, 0, 0]))  # "24" -> "22"
    m = acc.result()
    assert m.ctc == 0.5 and m.top1_sample == 0 and m.top1 == pytest.approx(9 / 12)
    criterion = Fidelity.parse("ctc>=0.5").criteria[0]
    assert m.value(criterion) == 0.5 and criterion.holds(m.value(criterion))


def test_long_samples_get_no_ctc(monkeypatch):
    monkeypatch.setattr("onnxz.verifier.CTC_MAX_ROWS", 4)
    acc = _Accumulator(TensorSpec("out", np.dtype(np.float32), (1, "T", 6)), LOGITS)
    acc.add(one_hot([0, 1, 0]), one_hot([0, 1, 0]))
    acc.add(one_hot([0, 1, 0, 2, 0]), one_hot([0, 1, 0, 2, 0]))
    assert acc.result().ctc is None and acc.result().top1 == 1


def test_ctc_margins_skip_the_runner_up_that_keeps_the_string():
    # position 2 (a repeat of 3) has blank as runner-up by 0.5: harmless, so its margin
    # is to the best other class (4.0 below); position 4 (blank between letters 3 and 5)
    # has 5 as runner-up: harmless too
    scores = one_hot([0, 3, 3, 0, 0, 5, 0])[0]
    scores[2, 0] = 3.5
    scores[4, 5] = 3.0
    plain = Margins.of(LOGITS, [scores])
    strings = Margins.of(LOGITS, [scores], ctc=True)
    assert plain.margin[2] == pytest.approx(0.5) and strings.margin[2] == pytest.approx(4.0)
    assert plain.margin[4] == pytest.approx(1.0) and strings.margin[4] == pytest.approx(4.0)
    assert np.all(strings.margin >= plain.margin)
    # the change of a margin is measured against the same classes
    moved = scores.copy()
    moved[2, 0] = 4.5  # the repeat turns blank: the string is kept, its margin unmoved
    assert strings.change(LOGITS, [moved])[2] == pytest.approx(0.0)
    assert plain.change(LOGITS, [moved])[2] == pytest.approx(-1.0)
