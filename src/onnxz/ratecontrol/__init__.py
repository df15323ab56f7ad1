"""Rate control: choose every weight tensor's quantizer so that the packed model keeps a
target (a fidelity on the outputs, a byte budget, or a weight SNR floor) at the least size.

It sits above the codecs and the verifier and below the API: :func:`choose` returns the
setting of every weight tensor; the API writes the file with them and verifies it.

Pipeline (a fidelity target):

1. run the original on the samples once (:class:`onnxz.verifier.ReferenceRun`);
2. price every weight tensor on a grid of steps (:mod:`.tensors`: estimated bytes and
   squared weight error per step);
3. measure each tensor's sensitivity: quantize it alone at a probe step, run, measure the
   target's output distortion (:mod:`.objective`; margins for class scores);
4. allocate with one slope λ for all tensors (:mod:`.allocation`) and search λ by running
   the candidates until the target just holds (:mod:`.search`).
"""

from __future__ import annotations

import gc
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx

from onnxz.errors import TargetNotMetError, TargetSpecError, VerificationInputError, first_line
from onnxz.fidelity import Criterion, Fidelity
from onnxz.inputs import (
    GENERATED_SIZES,
    SEARCH_MAX_TRIES,
    DefaultInputs,
    GeneratedInputs,
    InputsArg,
    graph_specs,
    runnable_generated,
    runnable_inputs,
)
from onnxz.policy import DEFAULT_MAX_WEIGHT_BYTES, FALLBACK_WEIGHT_SNR_DB, PackOptions
from onnxz.progress import Progress
from onnxz.ratecontrol import defaults
from onnxz.ratecontrol.objective import Objective, extra_outputs_for, objective_for
from onnxz.ratecontrol.search import (
    RateResult,
    SizeOf,
    Workbench,
    choose_for_fidelity,
    choose_for_size,
    summary_template,
)
from onnxz.ratecontrol.statistics import fold_statistics
from onnxz.ratecontrol.tensors import Setting, may_choose, tied, weight_bytes
from onnxz.verifier import SampleFailed, original_runs, session_from_proto
from onnxz.walker import Path

SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
              "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}

@dataclass(frozen=True)
class RateTarget:
    """What the packed model must keep. ``fidelity``: criteria on the outputs (see
    :mod:`onnxz.fidelity`); ``max_bytes``: the whole file's size at most (alone: the best
    fidelity that fits; with ``fidelity``: must also fit); ``target_snr_db``: every
    quantized tensor's weight SNR at least this (dB)."""

    fidelity: Fidelity | None = None
    max_bytes: int | None = None
    target_snr_db: float | None = None

    def __post_init__(self) -> None:
        if self.fidelity is None and self.max_bytes is None and self.target_snr_db is None:
            raise TargetSpecError("a rate target needs a fidelity, a size or a weight SNR")
        if self.target_snr_db is not None and (self.fidelity or self.max_bytes):
            raise TargetSpecError("a weight-SNR target cannot be combined with a fidelity or "
                                  "size target")
        if self.max_bytes is not None and (isinstance(self.max_bytes, bool)
                                           or not isinstance(self.max_bytes, int)
                                           or self.max_bytes <= 0):
            raise TargetSpecError(f"max size must be a positive number of bytes, not "
                                  f"{self.max_bytes!r}")
        snr = self.target_snr_db
        if snr is not None and (isinstance(snr, bool) or not isinstance(snr, int | float)
                                or not 0 < snr < 1e3):
            raise TargetSpecError(f"target SNR must be a positive number of dB (below 1000), "
                                  f"not {snr!r}")

    def __str__(self) -> str:
        parts = []
        if self.fidelity is not None:
            parts.append(str(self.fidelity))
        if self.max_bytes is not None:
            parts.append(f"size<={self.max_bytes}")
        if self.target_snr_db is not None:
            parts.append(f"weight snr>={self.target_snr_db:g}")
        return ",".join(parts)


def parse_size(text: str | int) -> int:
    """Bytes from ``2000000``, ``500KB``, ``2MB``, ``1.5GiB`` (KB/MB/GB = 1000^n,
    KiB/MiB/GiB = 1024^n, case-insensitive).

    >>> parse_size("1.5GiB"), parse_size("500KB"), parse_size(2000)
    (1610612736, 500000, 2000)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*",
                         str(text))
        if m is None or m[2].upper() not in SIZE_UNITS:
            raise TargetSpecError(f"{text!r} is not a size (e.g. 2000000, 500KB, 2MB, 1.5GiB)")
        number = float(m[1]) * SIZE_UNITS[m[2].upper()]
        if not math.isfinite(number):
            raise TargetSpecError(f"{text!r} is not a size: too large for a number")
        value = int(number)
    if value <= 0:
        raise TargetSpecError(f"{text!r}: a size must be positive")
    return value


def choose(model: onnx.ModelProto, target: RateTarget | None, inputs: InputsArg, *,
           size_of: SizeOf, options: PackOptions, class_outputs: Sequence[str] = (),
           progress: Progress | None = None,
           folded: Mapping[Path, np.ndarray] | None = None, workers: int = 1) -> RateResult:
    """The settings that meet ``target`` at the least size (see the module docstring);
    ``target`` None is the lossy default (:mod:`onnxz.ratecontrol.defaults`).

    ``inputs`` are the samples (None: :func:`~onnxz.inputs.runnable_inputs`);
    ``size_of(plan, summary)`` gives the
    exact size of a plan's file, whose tensors at ``folded``'s paths hold its values (the
    batch normalizations without their statistics, :func:`fold_statistics`): the search
    judges the model with them. Raises :class:`onnxz.TargetSpecError` for criteria that
    fit no output; returns a result with ``met`` False when the target cannot be met.
    ``workers`` processes price the tensors' settings; the result is the same for any
    number.
    """
    if target is None:
        return _default(model, inputs, options, class_outputs, progress, folded, workers)
    users_inputs = not _generated(inputs)
    correct_biases = options.correct_biases and users_inputs  # not generated inputs' means
    calibrated_rounding = options.calibrated_rounding and users_inputs
    if target.fidelity is not None:
        bench = _on_runnable_inputs(model, inputs, lambda samples: Workbench(
            model, samples, options, target.fidelity, class_outputs, progress,
            correct_biases=correct_biases,
            calibrated_rounding=calibrated_rounding and target.max_bytes is None,
            folded=folded, workers=workers), progress)
        objective = objective_for(target.fidelity, bench.reference, bench.model)
        result = choose_for_fidelity(bench, objective)
        if target.max_bytes is not None:
            size = size_of(tied(result.plan, result.candidates),
                           summary_template(bench, "fidelity", str(target),
                                            objective.fidelity))
            if size > target.max_bytes:
                result.met = False
                result.note = f"the smallest file that meets it is {size:,} bytes"
        bench.restore()
        return result
    assert target.max_bytes is not None
    bench = _on_runnable_inputs(model, inputs, lambda samples: Workbench(
        model, samples, options, None, class_outputs, progress,
        extra_outputs_for(BUDGET_WEIGHTING, model), folded=folded, workers=workers), progress)
    bench.reference.check_finite(str(target))
    weighting = _budget_weighting(bench)
    objective = objective_for(weighting, bench.reference, bench.model)
    result = choose_for_size(bench, objective, target.max_bytes, size_of)
    bench.restore()
    return result


T = TypeVar("T")


def _generated(inputs: InputsArg) -> bool:
    """Whether rate control runs on generated samples (None, :class:`DefaultInputs` or
    :class:`GeneratedInputs`), not the user's."""
    return inputs is None or isinstance(inputs, GeneratedInputs | DefaultInputs)


def _on_runnable_inputs(model: onnx.ModelProto, inputs: InputsArg,
                        make: Callable[[InputsArg], T], progress: Progress | None = None) -> T:
    """``make(inputs)``; on generated inputs (None, or :class:`DefaultInputs`), on the sizes
    of :data:`GENERATED_SIZES` in turn until the model runs on them, then on the sizes
    :func:`~onnxz.inputs.searched_inputs` finds, as verify chooses them (openWakeWord's
    melspectrogram runs on 512 samples, not 32; madmom's [time, bins] on 138 bins), raising
    the last size's failure if it runs on none. Sizes the caller set that fit no input fail
    at once."""
    if inputs is not None and not isinstance(inputs, DefaultInputs):
        return make(inputs)
    tried = []
    for sizes in GENERATED_SIZES:
        tried.append(runnable_inputs(model, *sizes, changes=inputs))
        try:
            return make(tried[-1])
        except (TargetNotMetError, VerificationInputError) as exc:
            if inputs is not None and isinstance(exc, VerificationInputError):
                raise
            failure = _without_frames(exc)
        gc.collect()  # the failed try's copy of the model, kept by its traceback's cycles
    if not isinstance(failure.__cause__, SampleFailed):
        raise failure  # the model does not load, or no size explains its failure
    try:
        session = session_from_proto(model)
    except Exception:  # onnxruntime's errors derive from Exception only
        raise failure from None
    runs, tries = original_runs(session, graph_specs(model)[0]), itertools.count(1)
    most = len(GENERATED_SIZES) + SEARCH_MAX_TRIES  # the usual sizes again, then the search

    def reported(generated: GeneratedInputs) -> bool:
        if progress:
            progress(next(tries), most, "input sizes: " + ", ".join(
                f"{k}={n}" for k, n in sorted(generated.dims.items())))
        return runs(generated)

    found = runnable_generated(model, reported, inputs)
    del session
    if found is None or found in tried:
        raise failure
    return make(found)


def _without_frames(exc: BaseException) -> BaseException:
    """``exc`` with its chain's tracebacks dropped: their frames hold what the failed call
    built (a copy of the model) while the next one runs."""
    link: BaseException | None = exc
    while link is not None:
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return exc


def runs_default(model: onnx.ModelProto) -> bool:
    """Whether the default runs the model (its weights are small enough to run many times);
    otherwise the data-free rule of :meth:`onnxz.PackOptions.codec_for` applies."""
    return weight_bytes(model) <= DEFAULT_MAX_WEIGHT_BYTES


def fallback(why: str) -> RateResult:
    """The default's result when it does not run the model: no settings (the data-free rule
    of :meth:`onnxz.PackOptions.codec_for` applies to every tensor), ``why`` noted."""
    return RateResult("default", f"weight snr>={FALLBACK_WEIGHT_SNR_DB:g}", None, [], {}, (),
                      note=f"fallback: {why}")


def _default(model: onnx.ModelProto, inputs: InputsArg, options: PackOptions,
             class_outputs: Sequence[str], progress: Progress | None,
             folded: Mapping[Path, np.ndarray] | None, workers: int) -> RateResult:
    """The lossy default (:mod:`onnxz.ratecontrol.defaults`) on the given or generated
    inputs; the data-free fallback when the model cannot run on them."""
    if not may_choose(model):
        return fallback("no tensor to quantize or round")

    def prepared(samples: InputsArg) -> tuple[Workbench, Objective]:
        bench = Workbench(model, samples, options, None, class_outputs, progress,
                          defaults.default_extra_outputs(model), defaults.GRID,
                          folded=folded, workers=workers)
        return bench, defaults.default_objective(bench.reference, bench.model)

    try:
        bench, objective = _on_runnable_inputs(model, inputs, prepared, progress)
    except (TargetNotMetError, VerificationInputError) as exc:
        if inputs is not None and (not isinstance(inputs, DefaultInputs)
                                   or isinstance(exc, VerificationInputError)):
            raise  # the caller's inputs, or the sizes the caller asked for, do not fit
        return fallback(first_line(exc))
    defaults.apply_floor(bench.candidates, defaults.WEIGHT_FLOOR_DB)
    target, padding = f"snr>={defaults.DEFAULT_SNR_DB:g}", []
    if not _generated(inputs):  # the user's samples: also what verify judges on them
        if criteria := defaults.verify_criteria(bench.reference, bench.model):
            objective = defaults.on_users_inputs(objective, criteria)
            target += f"; verify's {criteria}"
    elif padded := defaults.padded_axes(model):  # a text recognizer on generated samples
        padding = defaults.padding_sensitive(bench, objective, padded)
        defaults.keep_exact(padding)
    result = choose_for_fidelity(bench, objective, defaults.SENSITIVITY_SPREAD_DB)
    bench.restore()
    result.mode, result.target = "default", f"default ({target})"
    if padding:
        result.note = "; ".join(filter(None, [result.note, (
            f"{len(padding)} tensor{'s' * (len(padding) != 1)} kept exact: on zero-padded "
            f"lines their error moves the outputs {defaults.PADDING_GAP_DB:g} dB more or "
            "beyond")]))
    return result


BUDGET_WEIGHTING = Fidelity((Criterion("snr", 30.0), Criterion("top1", 0.99)))
"""What ``--max-size`` weighs the outputs' errors by: their SNR (each part of a Concat
too: YOLOv8's class probabilities beside its boxes in pixels, whose SNR alone the output's
is; without them its files kept 68 dB on the output and 0 dB on the probabilities, and
detected nothing) and, for class scores, their top-1 margins."""


def _budget_weighting(bench: Workbench) -> Fidelity:
    """:data:`BUDGET_WEIGHTING`, without ``top1`` for a model without class scores."""
    if any(not s.ids for s in bench.reference.class_scores.values()):
        return BUDGET_WEIGHTING
    return Fidelity(BUDGET_WEIGHTING.criteria[:1])


__all__ = ["DEFAULT_MAX_WEIGHT_BYTES", "RateResult", "RateTarget", "Setting", "choose",
           "fallback", "fold_statistics", "parse_size", "runs_default"]
