"""Fuzzing pack in CI: 2,000 mutated models of ``tests/models.py`` packed, analyzed,
unpacked (the same cases every run). Only OnnxzError escapes, nothing hangs, a failed pack
leaves nothing, the model file is untouched, nothing else reaches stderr.
``tools/fuzz_pack.py`` runs longer; ``tests/pack_fuzzing.py`` says what a case is."""

from __future__ import annotations

import pack_fuzzing
import pytest

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
