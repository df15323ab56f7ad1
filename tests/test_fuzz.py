"""Fuzzing in CI: 10,000 mutations of small valid vectors (derandomized: every run tests the
same cases). Only OnnxzError escapes, onnxz agrees with the reference decoder, and a damaged
file never decodes to a different model. ``tools/fuzz.py`` runs longer."""

from __future__ import annotations

import fuzzing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

BUDGET = {"raw": 2400, "index": 3600, "stream": 2400, "graph": 1000, "envelope": 600}
"""Mutated files checked per kind of mutation."""

PER_EXAMPLE = 4
"""Mutated files per hypothesis example (amortizes hypothesis' own work per example)."""


@pytest.fixture(scope="module")
def seeds() -> tuple[fuzzing.Seed, ...]:
    return fuzzing.load_seeds()


def test_budget_is_ten_thousand_cases():
    assert sum(BUDGET.values()) >= 10_000
    assert set(BUDGET) == set(fuzzing.CASES)


@pytest.mark.parametrize("kind", sorted(BUDGET))
def test_mutated_files(kind, seeds, tmp_path):
    checked = 0

    @settings(max_examples=BUDGET[kind] // PER_EXAMPLE, derandomize=True, deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(fuzzing.CASES[kind](seeds), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def cases(batch: list[fuzzing.Case]) -> None:
        nonlocal checked
        for case in batch:
            fuzzing.check(case, tmp_path)
            checked += 1

    cases()
    assert checked >= BUDGET[kind]
