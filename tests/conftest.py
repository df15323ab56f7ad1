"""Shared fixtures: small built models, and the real-model corpus (fetched, cached)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    """name -> path of every development-corpus model (downloaded once, then cached)."""
    import fetch_models

    return fetch_models.fetch_all()
