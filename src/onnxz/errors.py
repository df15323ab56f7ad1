"""The exceptions onnxz raises: every one is an :class:`OnnxzError`."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), preceded
    by the file it is about when an :class:`OnnxzError` knows it (``exc.path``)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    path = getattr(exc, "path", None) if isinstance(exc, OnnxzError) else None
    return f"{path}: {line}" if path and not line.startswith(f"{path}:") else line


class OnnxzError(Exception):
    """Base class of every error onnxz raises on purpose.

    ``path`` is the file the error is about when the message does not say it (a format
    error's message starts with the section: ``index: ...``); :func:`first_line` adds it.
    """

    path: str | None = None


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


class InvalidArgumentError(OnnxzError, ValueError):
    """An argument of the API has the wrong type or a value outside its range (the message
    names the argument and what it accepts)."""


class OutOfMemoryError(OnnxzError, MemoryError):
    """The work did not fit in memory (the message says which step and how much it needed)."""


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


class WorkerError(OnnxzError):
    """A worker process of a parallel pack or unpack died (e.g. killed when out of memory)."""


class TensorNotFoundError(OnnxzError, KeyError):
    """:meth:`onnxz.open(...).tensor(name) <onnxz.Reader.tensor>` names no stored tensor, or
    one of several that share the name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
