"""Checks of API arguments at the border: each failure is an :class:`InvalidArgumentError`
naming the argument and what it accepts, never a TypeError from deep inside."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

from onnxz.errors import InvalidArgumentError


def real_number(value: object, name: str) -> float:
    """``value`` as a float if it is a real number, not NaN (bools and strings are not).

    >>> real_number(0.5, "deadzone")
    0.5
    >>> real_number(float("nan"), "deadzone")
    Traceback (most recent call last):
    onnxz.errors.InvalidArgumentError: deadzone must be a number, not nan
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, not {value!r}")
    number = float(value)
    if math.isnan(number):
        raise InvalidArgumentError(f"{name} must be a number, not nan")
    return number


def integer(value: object, name: str, least: int) -> int:
    """``value`` as an int if it is an integer ≥ ``least`` (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise InvalidArgumentError(f"{name} must be an integer ≥ {least}, not {value!r}")
    return int(value)


def boolean(value: object, name: str) -> bool:
    """``value`` if it is True or False (a truthy string is not a yes)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, not {value!r}")
    return value


def as_path(value: object, name: str) -> Path:
    """``value`` (str, bytes or os.PathLike) as a Path. Bytes are file-system encoded
    names (``os.fsdecode``), so names that are not UTF-8 work."""
    if not isinstance(value, str | bytes | os.PathLike):
        raise InvalidArgumentError(
            f"{name} must be a path (str, bytes or os.PathLike), not {type(value).__name__}")
    text = os.fsdecode(value)
    if not text or "\0" in text:
        raise InvalidArgumentError(f"{name} must be a file name, not {text!r}")
    return Path(text)


def names(value: object, name: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings if it is a sequence of them; a string alone is not
    one (it would be read a character at a time).

    >>> names(["logits"], "class_outputs")
    ('logits',)
    >>> names("logits", "class_outputs")
    Traceback (most recent call last):
    onnxz.errors.InvalidArgumentError: class_outputs must be a list of names, not 'logits'
    """
    if (isinstance(value, str | bytes) or not isinstance(value, Sequence)
            or not all(isinstance(v, str) for v in value)):
        raise InvalidArgumentError(f"{name} must be a list of names, not {value!r}")
    return tuple(value)
