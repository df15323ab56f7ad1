"""What ``onnxz info`` shows: per-tensor and total figures of a container, as dataclasses."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from onnxz.container import Index, TensorEntry
from onnxz.dtypes import BY_NAME


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor. Sizes in bytes; ``bits_per_weight`` = 8 × coded / elements.
    ``copy_of`` is, for a tensor stored as a lossless ``copy`` (SPEC.md §6.7, coded in 0
    bytes), the position of its source among the file's tensors."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    mode: str
    step: float | None
    step_rel: float | None
    deadzone: float | None
    raw_bytes: int
    coded_bytes: int
    table_bytes: int
    entropy_bytes: float | None
    chunks: int
    sensitivity: float | None = None
    rounded_bits: int | None = None
    copy_of: int | None = None

    @property
    def elements(self) -> int:
        """Elements of the tensor (the product of its shape)."""
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        """Coded bits per element (chunks and parameters); 0.0 for an empty tensor."""
        return 8 * self.coded_bytes / self.elements if self.elements else 0.0

    @property
    def ratio(self) -> float:
        """raw / coded bytes; inf for a tensor coded in 0 bytes (a constant)."""
        return self.raw_bytes / self.coded_bytes if self.coded_bytes else float("inf")

    @classmethod
    def from_entry(cls, t: TensorEntry) -> TensorInfo:
        """The summary of one index entry (SPEC.md §4.3)."""
        p = t.params
        etype = BY_NAME.get(t.dtype)
        width = etype.width if etype else 0

        def num(key: str) -> float | None:
            v = p.get(key)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        mode = str(p.get("mode", "" if t.codec == "lossless" else "quantized"))
        of = p.get("of")

        return cls(
            name=t.name,
            dtype=t.dtype,
            shape=t.shape,
            codec=t.codec,
            mode=mode,
            step=num("step"),
            step_rel=num("step_rel"),
            deadzone=num("deadzone"),
            raw_bytes=t.element_count * width,
            coded_bytes=t.coded_bytes,
            table_bytes=t.table_bytes,
            entropy_bytes=None if t.entropy_bits is None else t.entropy_bits / 8,
            chunks=len(t.chunks),
            sensitivity=t.sensitivity,
            rounded_bits=t.rounded_bits,
            copy_of=of if t.codec == "lossless" and mode == "copy" and type(of) is int else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields and derived figures as strict JSON values (``info --json``)."""
        d = asdict(self)
        d.update(shape=list(self.shape), elements=self.elements,
                 bits_per_weight=self.bits_per_weight,
                 ratio=self.ratio if math.isfinite(self.ratio) else None)  # strict JSON
        return d


@dataclass(frozen=True)
class ContainerInfo:
    """A whole container: format version, section sizes and every tensor."""

    path: str
    file_bytes: int
    version: str
    writer: str
    graph_bytes: int
    graph_raw_bytes: int
    source_bytes: int | None
    tensors: tuple[TensorInfo, ...]
    rate_control: dict[str, Any] | None = None

    @property
    def raw_tensor_bytes(self) -> int:
        """Bytes of the stored tensors' decoded payloads."""
        return sum(t.raw_bytes for t in self.tensors)

    @property
    def coded_tensor_bytes(self) -> int:
        """Bytes the stored tensors take in the file."""
        return sum(t.coded_bytes for t in self.tensors)

    @property
    def quantized_bits_per_weight(self) -> float | None:
        """Coded bits per element over the quantized (lossy) tensors; None if none was."""
        coded = [t for t in self.tensors if t.codec != "lossless"]
        elements = sum(t.elements for t in coded)
        return 8 * sum(t.coded_bytes for t in coded) / elements if elements else None

    @property
    def ratio(self) -> float | None:
        """Size of the original model's files (the .onnx and its external data) / this
        file's size, when the writer recorded the former; below 1 the file grew."""
        return self.source_bytes / self.file_bytes if self.source_bytes else None

    @classmethod
    def from_index(cls, path: str, file_bytes: int, index: Index) -> ContainerInfo:
        """The summary of a file ``file_bytes`` long whose index is ``index``."""
        source = index.extra.get("source_bytes")
        rate = index.extra.get("rate_control")
        return cls(
            path=path,
            file_bytes=file_bytes,
            version=f"{index.version[0]}.{index.version[1]}",
            writer=index.writer,
            graph_bytes=index.graph.length,
            graph_raw_bytes=index.graph.raw_length,
            source_bytes=source if isinstance(source, int) else None,
            tensors=tuple(TensorInfo.from_entry(t) for t in index.tensors),
            rate_control=rate if isinstance(rate, dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as strict JSON values, tensors included (``info --json``)."""
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "version": self.version,
            "writer": self.writer,
            "graph_bytes": self.graph_bytes,
            "graph_raw_bytes": self.graph_raw_bytes,
            "source_bytes": self.source_bytes,
            "ratio": self.ratio,
            "raw_tensor_bytes": self.raw_tensor_bytes,
            "coded_tensor_bytes": self.coded_tensor_bytes,
            "rate_control": self.rate_control,
            "tensors": [t.to_dict() for t in self.tensors],
        }
