"""Where the task models come from (fetch_models.py's pinned wheels, cached), and the
examples' modules the tasks reuse (Magika's file pick, Silero's streaming loop)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tools/, for fetch_models
import fetch_models


def corpus_model(name: str) -> Path:
    """The cached file of a fetch_models entry (corpus or unseen), fetched if absent."""
    return fetch_models.fetch_all([name])[name]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    """The module ``examples/<name>.py`` (imported once)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)
