"""Round-trip verification: run the original and the packed model on the same samples and
compare every output (``onnxz verify``, :func:`onnxz.verify`).

Both models run in onnxruntime on the CPU; the .onnxz is decoded in memory. Samples are fed
one at a time and the metrics are running sums, so no more than one sample's outputs are
held. A model that fails to load or run gives a failed report naming the reason; inputs that
do not fit the model raise :class:`onnxz.VerificationInputError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model

from onnxz.api import Progress, inference_session
from onnxz.arguments import real_number
from onnxz.container import MAGIC
from onnxz.errors import InvalidArgumentError, OutOfMemoryError, first_line
from onnxz.fileio import check_input, utf8_spelling
from onnxz.inputs import InputsArg, Samples, TensorSpec, graph_specs, samples_for

if TYPE_CHECKING:  # onnxruntime is imported where a session is made, not on `import onnxz`
    import onnxruntime as ort

TOP_K = 5


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria, applied to every output; all must hold. Measured on real inputs
    (examples/), the lossy default (step 1/64) gives 45–59 dB and changes ≤ 0.5% of decisions;
    step 1 (about 2 bits/weight) gives 10–25 dB and changes 1.6–15%.

    - ``min_snr_db`` (dB, default 20): output SNR = 10·log10(Σref² / Σ(ref − packed)²) over
      all samples: at 20 dB the error carries 1% of the output's energy, the region where
      the examples' decisions start to move.
    - ``min_cosine`` (default 0.99): the worst sample's cosine similarity (an angle of 8°,
      about 17 dB for that sample), so a few ruined samples cannot hide behind a good SNR
      (Silero VAD at step 1: state SNR 23 dB, worst sample 0.87).
    - ``min_top1`` (fraction, default 0.99): top-1 agreement on class-score outputs (see
      :class:`OutputMetrics`): at most 1 prediction in 100 may change (Magika at step 1/4:
      SNR 23 dB, top-1 0.96).
    - ``noise_floor`` (default 1e-5): differences of at most ε = noise_floor × max(1, the
      sample's largest |original|) count as no difference (SNR, cosine, top-k), so an output
      that is ~0 everywhere (a detector's probability map on an input with nothing to find:
      original 0, packed 3e-8) is not judged by the ratio of two noises. Below scale 1
      the floor is absolute (probabilities, normalized features), above it relative
      (−100 dB of the peak); 0 compares exactly. Max and mean errors stay raw.

    NaN is refused for every threshold; ``min_snr_db`` may be −inf (no SNR criterion).
    """

    min_snr_db: float = 20.0
    min_cosine: float = 0.99
    min_top1: float = 0.99
    noise_floor: float = 1e-5

    def __post_init__(self) -> None:
        real_number(self.min_snr_db, "min_snr_db")
        for name, low, high in (("min_cosine", -1, 1), ("min_top1", 0, 1),
                                ("noise_floor", 0, 1)):
            if not low <= real_number(getattr(self, name), name) <= high:
                raise InvalidArgumentError(
                    f"{name} must be in [{low}, {high}], not {getattr(self, name)}")

    def to_dict(self) -> dict[str, float | None]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class OutputMetrics:
    """How one output of the packed model differs from the original's, over all samples.

    Errors are absolute, in the output's units (compared as float64); ``original_max_abs``,
    the original's largest magnitude, puts them in scale. ``snr_db``, the cosines and top-k
    count differences within the noise floor (:class:`Thresholds`) as none; ``snr_db`` is +inf
    when no difference is left, −inf when the original is all zeros and the packed is not.
    A NaN or inf where the original has a finite value is an infinite error (SNR −inf,
    cosine 0); where both are NaN they agree. ``finite`` counts the original's finite
    values: with none there is nothing to compare, and the output fails.
    ``top1``/``top5`` exist for outputs that look like class scores: float, declared rank 1–3
    with a fixed last axis of ≥ 2 classes (``[C]``, ``[N, C]``, ``[N, T, C]``); each row
    along the last axis is one prediction. ``top1`` = fraction of rows with the same argmax;
    ``top5`` = mean share of the original's 5 best classes among the packed's 5 best (more
    than 5 classes only).
    """

    name: str
    dtype: str
    samples: int
    elements: int
    original_max_abs: float
    max_abs_error: float
    mean_abs_error: float
    snr_db: float
    cosine_mean: float
    cosine_min: float
    top1: float | None
    top5: float | None
    finite: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite number is null (``snr_db`` +inf: no difference beyond the
        noise floor; an infinite error: NaN or inf against a number)."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Failure:
    """One output's metric on the wrong side of its threshold."""

    output: str
    metric: str
    value: float
    threshold: float

    def __str__(self) -> str:
        if self.metric == "finite":
            return (f"output {self.output!r}: the original has no finite value on these "
                    "inputs (nothing to compare)")
        label, unit = _METRIC_LABELS[self.metric]
        return (f"output {self.output!r}: {label} {self.value:.4g}{unit} < "
                f"{self.threshold:g}{unit}")

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


_METRIC_LABELS = {"snr_db": ("SNR", " dB"), "cosine_min": ("worst-sample cosine", ""),
                  "top1": ("top-1 agreement", "")}


def _json_number(value: Any) -> Any:
    """``value``, or None for a float that strict JSON cannot hold (inf, NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class VerifyReport:
    """The result of :func:`verify`: per-output metrics, thresholds, and the verdict.

    ``error`` is the reason when a model failed to load or run (then ``outputs`` holds the
    metrics of the ``samples`` compared before it); ``passed`` means no error and no
    :attr:`failures`.
    """

    original: str
    packed: str
    inputs: str
    samples: int
    thresholds: Thresholds
    outputs: tuple[OutputMetrics, ...]
    error: str | None = None

    @property
    def failures(self) -> tuple[Failure, ...]:
        t = self.thresholds
        found = []
        for m in self.outputs:
            for metric, value, threshold in (("snr_db", m.snr_db, t.min_snr_db),
                                             ("cosine_min", m.cosine_min, t.min_cosine),
                                             ("top1", m.top1, t.min_top1)):
                if value is not None and value < threshold:
                    found.append(Failure(m.name, metric, value, threshold))
            if m.finite == 0 and m.elements:
                found.append(Failure(m.name, "finite", 0, 1))
        return tuple(found)

    @property
    def passed(self) -> bool:
        return self.error is None and self.samples > 0 and not self.failures

    @property
    def verdict(self) -> str:
        """``passed``, or ``FAILED:`` and the failing metrics (for one table cell)."""
        return "passed" if self.passed else "FAILED: " + ", ".join(
            f.metric for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "packed": self.packed,
            "inputs": self.inputs,
            "samples": self.samples,
            "thresholds": self.thresholds.to_dict(),
            "outputs": [m.to_dict() for m in self.outputs],
            "failures": [f.to_dict() for f in self.failures],
            "error": self.error,
            "passed": self.passed,
        }

    def table(self) -> str:
        """The report for people: a line per output, the thresholds, the verdict."""
        header = ("output", "dtype", "max |orig|", "max abs err", "mean abs err", "SNR dB",
                  "cos mean", "cos worst", "top-1", "top-5")
        rows = [header] + [(
            m.name if len(m.name) <= 32 else "…" + m.name[-31:],
            m.dtype,
            f"{m.original_max_abs:.3g}",
            f"{m.max_abs_error:.3g}",
            f"{m.mean_abs_error:.3g}",
            f"{m.snr_db:.1f}",
            f"{m.cosine_mean:.6f}",
            f"{m.cosine_min:.6f}",
            "-" if m.top1 is None else f"{m.top1:.4f}",
            "-" if m.top5 is None else f"{m.top5:.4f}",
        ) for m in self.outputs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [f"original  {self.original}", f"packed    {self.packed}",
                 f"inputs    {self.inputs}", ""]
        if self.outputs:
            lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                      for r in rows]
            lines.insert(5, "  ".join("-" * w for w in widths))
            lines.append("")
        t = self.thresholds
        lines.append(f"thresholds: SNR ≥ {t.min_snr_db:g} dB, worst-sample cosine ≥ "
                     f"{t.min_cosine:g}, top-1 agreement ≥ {t.min_top1:g} (class scores)")
        if self.passed:
            lines.append(f"PASSED: {_count(len(self.outputs), 'output')} within the thresholds "
                         f"on {_count(self.samples, 'sample')}")
        else:
            reasons = [self.error] if self.error else [str(f) for f in self.failures]
            lines.append("FAILED: " + ("; ".join(reasons) or "no samples compared"))
        return "\n".join(lines)


def verify(
    original: onnx.ModelProto | str | os.PathLike,
    packed: str | os.PathLike,
    inputs: InputsArg = None,
    thresholds: Thresholds | None = None,
    *,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run ``original`` (.onnx path or ModelProto) and ``packed`` (.onnxz) on the same samples
    and compare their outputs against ``thresholds``.

    ``inputs``: None or :class:`onnxz.GeneratedInputs` for seeded generated samples, a mapping
    input name -> array of N stacked samples, an ``.npz`` path of the same, or an ONNX
    test-data folder (``test_data_set_*/input_*.pb``). Raises
    :class:`onnxz.VerificationInputError` if the inputs do not fit the model and
    :class:`onnxz.InputNotFoundError` for a missing file; a model that fails to load or run
    gives a report with ``passed`` False and ``error`` naming why. ``progress(done, total,
    name)`` is called after each sample.
    """
    packed_path = check_input(packed, "packed")
    if not isinstance(original, onnx.ModelProto):
        original = check_input(original, "original")
    thresholds = Thresholds() if thresholds is None else thresholds
    if not isinstance(thresholds, Thresholds):
        raise InvalidArgumentError(
            f"thresholds must be a Thresholds, not {type(thresholds).__name__}")
    if progress is not None and not callable(progress):
        raise InvalidArgumentError(f"progress must be callable or None, not {progress!r}")
    described = "(not read)"
    accumulators: list[_Accumulator] = []
    error: str | None = None
    try:
        reference, model = _load_original(original)
        input_specs, output_specs = graph_specs(model)
        samples = samples_for(input_specs, inputs)
        described = samples.description
        candidate = _session(lambda: inference_session(packed_path, _quiet()), "packed")
        _check_interfaces(reference, candidate)
        accumulators = [_Accumulator(s, thresholds.noise_floor) for s in output_specs]
        _compare(reference, candidate, samples, accumulators, progress)
    except _ModelFailed as exc:
        error = str(exc)
    return VerifyReport(
        original=str(original) if isinstance(original, Path) else "<ModelProto>",
        packed=str(packed_path),
        inputs=described,
        samples=min((a.samples for a in accumulators), default=0),
        thresholds=thresholds,
        outputs=tuple(a.result() for a in accumulators if a.samples),
        error=error,
    )


class _ModelFailed(Exception):
    """A model failed to load or run: the verification fails with this reason."""


def _quiet() -> ort.SessionOptions:
    """Session options that keep onnxruntime's own error log off stderr (we report)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return opts


def _session(make: Callable[[], ort.InferenceSession], which: str) -> ort.InferenceSession:
    """``make()``, any failure becoming the verification's reason."""
    # onnxruntime's exceptions derive from Exception only; onnxz's from OnnxzError.
    try:
        return make()
    except Exception as exc:
        raise _ModelFailed(f"{which} model failed to load: {first_line(exc)}") from exc


def _load_original(
    original: onnx.ModelProto | Path,
) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    """A session of the original and its graph (weights not loaded when it is a path)."""
    import onnxruntime as ort

    if isinstance(original, onnx.ModelProto):
        data = original.SerializeToString()
        return _session(lambda: ort.InferenceSession(data, _quiet(), ["CPUExecutionProvider"]),
                        "original"), original
    with open(original, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            raise _ModelFailed(f"original model failed to load: {original} is an .onnxz file "
                               "(give the .onnx first, then the .onnxz)")
    try:
        model = onnx.load(str(original), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise _ModelFailed(f"original model failed to load: {first_line(exc)}") from exc
    session = _session(
        lambda: ort.InferenceSession(_model_for_onnxruntime(original), _quiet(),
                                     ["CPUExecutionProvider"]),
        "original")
    return session, model


def _model_for_onnxruntime(path: Path) -> str | bytes:
    """What onnxruntime can open: the path if UTF-8 can spell it (its external data is then
    found beside it), else the model with its external data, serialized (< 2 GiB)."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        model = onnx.load(path, load_external_data=False)
        with utf8_spelling(path.parent) as folder:
            load_external_data_for_model(model, folder)
        return model.SerializeToString()


def _check_interfaces(reference: ort.InferenceSession, candidate: ort.InferenceSession) -> None:
    for kind, ref, cand in (("inputs", reference.get_inputs(), candidate.get_inputs()),
                            ("outputs", reference.get_outputs(), candidate.get_outputs())):
        a, b = [(x.name, x.type) for x in ref], [(x.name, x.type) for x in cand]
        if a != b:
            raise _ModelFailed(f"the packed model's {kind} {b} differ from the original's {a}")


def _compare(reference: ort.InferenceSession, candidate: ort.InferenceSession, samples: Samples,
             accumulators: list[_Accumulator], progress: Progress | None) -> None:
    """Feed every sample to both sessions and accumulate the metrics, one sample at a time."""
    for i in range(samples.count):
        try:
            feed = samples.feed(i)
        except MemoryError as exc:
            raise OutOfMemoryError(f"out of memory while building sample {i} of the inputs "
                                   f"({samples.description})") from exc
        ref = _run(reference, feed, "original", i, samples.hint)
        out = _run(candidate, feed, "packed", i)
        for acc, r, o in zip(accumulators, ref, out, strict=True):
            if r.shape != o.shape or r.dtype != o.dtype:
                raise _ModelFailed(
                    f"sample {i}: output {acc.spec.name!r} of the packed model is {o.dtype} "
                    f"{o.shape}, the original's is {r.dtype} {r.shape}"
                )
        for acc, r, o in zip(accumulators, ref, out, strict=True):
            acc.add(r, o)
        if progress:
            progress(i + 1, samples.count, f"sample {i}")


def _run(session: ort.InferenceSession, feed: dict[str, np.ndarray], which: str, index: int,
         hint: str = "") -> list[np.ndarray]:
    """The session's outputs on one sample; ``hint`` is added to a failure's reason."""
    # onnxruntime's exceptions derive from Exception only.
    try:
        return [np.asarray(o) for o in session.run(None, feed)]
    except Exception as exc:
        raise _ModelFailed(f"{which} model failed to run on sample {index}: {first_line(exc)}"
                           + (f" ({hint})" if hint else "")) from exc


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass
class _Accumulator:
    """Running sums for one output, updated one sample at a time by :meth:`add`."""

    spec: TensorSpec
    noise_floor: float = 0.0
    samples: int = 0
    elements: int = 0
    finite: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    ref_max: float = 0.0
    signal: float = 0.0
    noise: float = 0.0
    cos_sum: float = 0.0
    cos_min: float = 1.0
    rows: int = 0
    top1_hits: int = 0
    top5_sum: float = 0.0

    @property
    def classes(self) -> int | None:
        """The class count if the output looks like class scores (see OutputMetrics)."""
        shape = self.spec.shape
        if (self.spec.dtype.kind == "f" and shape and len(shape) <= 3
                and isinstance(shape[-1], int) and shape[-1] >= 2):
            return shape[-1]
        return None

    def add(self, reference: np.ndarray, packed: np.ndarray) -> None:
        ref = reference.astype(np.float64).ravel()
        out = packed.astype(np.float64).ravel()
        same = (ref == out) | (np.isnan(ref) & np.isnan(out))
        finite = np.isfinite(ref) & np.isfinite(out)
        with np.errstate(invalid="ignore"):  # inf − inf, NaN − x
            err = np.where(same, 0.0, np.abs(ref - out))
        err[np.isnan(err)] = np.inf  # NaN against a number
        self.samples += 1
        self.elements += err.size
        if err.size:
            self.abs_sum += float(err.sum())
            self.abs_max = max(self.abs_max, float(err.max()))
        finite_ref = ref[np.isfinite(ref)]
        peak = float(np.abs(finite_ref).max()) if finite_ref.size else 0.0
        self.finite += finite_ref.size
        self.ref_max = max(self.ref_max, peak)
        within_floor = err <= self.noise_floor * max(1.0, peak)  # no difference (Thresholds)
        out = np.where(within_floor & finite, ref, out)
        packed = out.reshape(packed.shape)
        err = np.where(within_floor, 0.0, err)
        self.signal += float(np.sum(np.square(finite_ref)))
        self.noise += float(np.sum(np.square(err)))
        cosine = _cosine(ref[finite], out[finite]) if (same | finite).all() else 0.0
        self.cos_sum += cosine
        self.cos_min = min(self.cos_min, cosine)
        classes = self.classes
        if classes and reference.size and reference.shape[-1] == classes:
            self._add_rankings(reference.reshape(-1, classes), packed.reshape(-1, classes))

    def _add_rankings(self, ref: np.ndarray, out: np.ndarray) -> None:
        self.rows += ref.shape[0]
        self.top1_hits += int(np.sum(ref.argmax(-1) == out.argmax(-1)))
        if ref.shape[1] > TOP_K:
            top_ref = np.argpartition(-ref, TOP_K, axis=-1)[:, :TOP_K]
            top_out = np.argpartition(-out, TOP_K, axis=-1)[:, :TOP_K]
            shared = (top_ref[:, :, None] == top_out[:, None, :]).any(-1).sum(-1)
            self.top5_sum += float(shared.sum()) / TOP_K

    def result(self) -> OutputMetrics:
        if self.noise == 0:
            snr = math.inf
        elif self.signal == 0 or math.isinf(self.noise):
            snr = -math.inf
        else:
            snr = 10 * math.log10(self.signal / self.noise)
        classes = self.classes if self.rows else None
        return OutputMetrics(
            name=self.spec.name,
            dtype=str(self.spec.dtype),
            samples=self.samples,
            elements=self.elements,
            original_max_abs=self.ref_max,
            max_abs_error=self.abs_max,
            mean_abs_error=self.abs_sum / self.elements if self.elements else 0.0,
            snr_db=snr,
            cosine_mean=self.cos_sum / self.samples,
            cosine_min=self.cos_min,
            top1=self.top1_hits / self.rows if classes else None,
            top5=self.top5_sum / self.rows if classes and classes > TOP_K else None,
            finite=self.finite,
        )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; 1 if both are zero, 0 if only one is."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))
