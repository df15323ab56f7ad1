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
