"""onnxz: a compressed container format and codec for ONNX models.

>>> import onnxz                                              # doctest: +SKIP
>>> onnxz.save("model.onnx", "model.onnxz")                   # lossy default
>>> onnxz.save("model.onnx", "exact.onnxz", lossless=True)    # bit-exact
>>> model = onnxz.load("model.onnxz")                         # onnx.ModelProto
>>> sess = onnxz.inference_session("model.onnxz")             # onnxruntime session
>>> with onnxz.open("model.onnxz") as reader:                 # random access
...     w = reader.tensor("fc.weight")                        # decodes only its chunks
>>> onnxz.info("model.onnxz").tensors[0].bits_per_weight
>>> onnxz.verify("model.onnx", "model.onnxz").passed          # outputs still close?
"""

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and editors; at run time each name loads on first use
    from onnxz.api import inference_session, info, load, open, save, unpack, verify
    from onnxz.container import ReadLimits
    from onnxz.errors import (
        CorruptDataError,
        FormatError,
        InputNotFoundError,
        InvalidArgumentError,
        InvalidModelError,
        LimitExceededError,
        OnnxzError,
        OutOfMemoryError,
        OutputExistsError,
        OutputPathError,
        TargetNotMetError,
        TargetSpecError,
        TensorNotFoundError,
        UnsupportedModelError,
        VerificationInputError,
        WorkerError,
    )
    from onnxz.fidelity import Criterion, Fidelity
    from onnxz.inputs import GeneratedInputs
    from onnxz.policy import DEFAULT_DEADZONE, DEFAULT_STEP_REL, PackOptions
    from onnxz.progress import ProgressListener, ProgressUpdate
    from onnxz.reader import Reader
    from onnxz.report import ContainerInfo, TensorInfo
    from onnxz.verifier import OutputMetrics, Thresholds, VerifyReport

_HOMES = {
    **dict.fromkeys(("inference_session", "info", "load", "open", "save", "unpack", "verify"),
                    "onnxz.api"),
    "ReadLimits": "onnxz.container",
    **dict.fromkeys(("CorruptDataError", "FormatError", "InputNotFoundError",
                     "InvalidArgumentError", "InvalidModelError", "LimitExceededError",
                     "OnnxzError", "OutOfMemoryError", "OutputExistsError", "OutputPathError",
                     "TargetNotMetError", "TargetSpecError", "TensorNotFoundError",
                     "UnsupportedModelError", "VerificationInputError", "WorkerError"),
                    "onnxz.errors"),
    "Criterion": "onnxz.fidelity",
    "Fidelity": "onnxz.fidelity",
    "GeneratedInputs": "onnxz.inputs",
    **dict.fromkeys(("DEFAULT_DEADZONE", "DEFAULT_STEP_REL", "PackOptions"), "onnxz.policy"),
    "ProgressListener": "onnxz.progress",
    "ProgressUpdate": "onnxz.progress",
    "Reader": "onnxz.reader",
    "ContainerInfo": "onnxz.report",
    "TensorInfo": "onnxz.report",
    **dict.fromkeys(("OutputMetrics", "Thresholds", "VerifyReport"), "onnxz.verifier"),
}
"""The module each public name lives in. ``import onnxz`` loads none of them (onnx,
onnxruntime and numpy take a second or more to import on a small device); a name loads its
module on first use, so that ``import onnxz.errors`` or the CLI's entry point
(:mod:`onnxz.console`) is quick."""


def __getattr__(name: str) -> object:
    """The public name ``name`` from its module (PEP 562), or a submodule of ``onnxz``
    (``onnxz.codecs``) as ``import onnxz`` gave them before they loaded lazily."""
    home = _HOMES.get(name)
    if home is None:
        if name.startswith("_"):  # dunder probes (inspect, doctest, pickle)
            raise AttributeError(f"module 'onnxz' has no attribute {name!r}")
        try:
            return import_module(f"onnxz.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"onnxz.{name}":
                raise
            raise AttributeError(f"module 'onnxz' has no attribute {name!r}") from None
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "DEFAULT_DEADZONE",
    "DEFAULT_STEP_REL",
    "ContainerInfo",
    "CorruptDataError",
    "Criterion",
    "Fidelity",
    "FormatError",
    "GeneratedInputs",
    "InputNotFoundError",
    "InvalidArgumentError",
    "InvalidModelError",
    "LimitExceededError",
    "OnnxzError",
    "OutOfMemoryError",
    "OutputExistsError",
    "OutputMetrics",
    "OutputPathError",
    "PackOptions",
    "ProgressListener",
    "ProgressUpdate",
    "ReadLimits",
    "Reader",
    "TargetNotMetError",
    "TargetSpecError",
    "TensorInfo",
    "TensorNotFoundError",
    "Thresholds",
    "UnsupportedModelError",
    "VerificationInputError",
    "VerifyReport",
    "WorkerError",
    "__version__",
    "inference_session",
    "info",
    "load",
    "open",
    "save",
    "unpack",
    "verify",
]
