"""The exceptions onnxz raises: every one is an :class:`OnnxzError`."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxzError(Exception):
    """Base class of every error onnxz raises on purpose."""


class FormatError(OnnxzError):
    """Not an onnxz file, an unsupported version, or a malformed structure."""


class CorruptDataError(OnnxzError):
    """A checksum mismatch or truncation: the bytes are not the ones that were written."""


class UnsupportedModelError(OnnxzError):
    """The model uses a feature onnxz cannot pack (the message names it)."""


class InvalidModelError(OnnxzError):
    """The input is not a readable ONNX model."""


class LimitExceededError(FormatError):
    """A declared size exceeds a reader limit (see :class:`onnxz.ReadLimits`)."""


class OutputExistsError(OnnxzError):
    """The output path exists and overwriting was not asked for (``force=True``)."""


class InputNotFoundError(OnnxzError, FileNotFoundError):
    """The input file does not exist."""


class OutputPathError(OnnxzError):
    """The output cannot be written there (missing folder, a directory, or the input itself)."""


class VerificationInputError(OnnxzError):
    """The inputs given to ``verify`` do not fit the model: missing or extra input names,
    mismatched sample counts, wrong dtypes or shapes, a bad test-data folder, or a dynamic
    dimension that cannot be resolved (the message names it and the fix)."""


class TargetSpecError(OnnxzError):
    """A fidelity or size target is malformed, names an unknown metric or output, or
    applies to no output of the model."""


class TargetNotMetError(OnnxzError):
    """No file meets the requested target (pass ``best_effort=True`` / ``--best-effort``
    to write the closest one instead)."""
