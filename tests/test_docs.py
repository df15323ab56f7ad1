"""The small runnable examples in the package's docstrings still run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import onnxz

MODULES = sorted(m.name for m in pkgutil.walk_packages(onnxz.__path__, "onnxz.")
                 if m.name != "onnxz.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
