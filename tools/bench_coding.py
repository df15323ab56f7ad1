#!/usr/bin/env python3
"""Coding ablation (issue 10): what each coding technique buys, on the corpus models.

Three tables, one run:

* **weights** — at equal weight SNR, per corpus model: bits per weight of the dead-zone codec
  and the bits each technique saves, summed over the weight tensors (each tensor's
  rate–SNR curve over steps 2^(k/2) of its spread, interpolated at 20 … 40 dB). Built
  techniques are priced by their codec's own estimate (coded bits + tables + escapes);
  techniques that were measured and not built are priced by the ideal code length of their
  symbols plus their tables (``*`` in the table).
* **versus NNCodec** — the codecs against NNCodec 2.1.3 (the MPEG NNR reference), weight
  against weight: NNCodec codes the weight tensors at a QP; onnxz's bytes for the same
  tensors, each at the weight SNR NNCodec's decoding reached (interpolated on its rate–SNR
  curve), divided by NNCodec's bitstream bytes. Needs ``tools/comparators`` and NNCodec's
  venv (``make nncodec-venv``); skipped with a note otherwise.
* **task** — per corpus model, the file rate control writes for the model's fidelity spec on
  its calibration inputs (``onnxz.save(..., fidelity=, inputs=)``), with each technique added
  in turn to the settings rate control may choose from; its size, the task agreement on
  held-out real inputs, the encode time and the decode speed (``onnxz.load``, CPU time,
  relative to the first variant's file), next to NNCodec's smallest file at ≥ 99.5%
  agreement when a ``tools/bench_rate.py --json`` file is given. Because that agreement
  moves in steps of one decision and rate control's search in steps of ~10%, the same
  table also gives each codec at fixed steps: bytes at equal output SNR on the calibration
  inputs (interpolated on its size–SNR curve), relative to the dead-zone codec.

    python tools/bench_coding.py                           # both tables, every corpus model
    python tools/bench_coding.py --weights magika          # one table, one model
    python tools/bench_coding.py --versus-nncodec          # NNCodec at equal weight SNR
    python tools/bench_coding.py --task --nncodec rate.json --json coding.json

The task table needs the real task data of ``tools/tasks`` (``pip install -e .[ratebench]``).
Until rate control offers the trellis codec itself, a variant passes its grid of settings
to rate control's candidate search (:func:`rate_control_grid`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

import onnxz
from onnxz.codecs import DeadzoneCodec, TrellisCodec, ans
from onnxz.codecs import trellis as trellis_module
from onnxz.codecs.buckets import MAX_MAGNITUDE, BucketTable
from onnxz.codecs.deadzone import robust_spread, to_float64
from onnxz.ratecontrol import search, tensors
from onnxz.walker import iter_tensor_slots, payload_type, read_payload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import decode_cpu_seconds
from fetch_models import CORPUS, fetch_all

SNR_TARGETS = (20.0, 25.0, 30.0, 35.0, 40.0)
STEPS = tuple(2.0 ** (k / 2) for k in range(-16, 1))  # relative steps, 1/256 .. 1
MIN_ELEMENTS = 1024
TARGET = 0.995


def log(msg: str) -> None:
    print(f"bench_coding: {msg}", file=sys.stderr, flush=True)


# --- weight level ------------------------------------------------------------------------

Pricer = Callable[[np.ndarray, float], tuple[float, np.ndarray]]
"""(values float64, step) -> (bytes, reconstruction float64)."""


def table_bytes(symbols: np.ndarray) -> float:
    """Ideal code length of ``symbols`` plus the smaller of their explicit table and their
    bucket table (the codecs' two table forms)."""
    values, counts = np.unique(symbols, return_counts=True)
    ideal = float(-(counts * np.log2(counts / symbols.size)).sum()) / 8
    explicit = 1.5 * values.size
    if values[-1] - values[0] < ans.MAX_ALPHABET - 1:
        explicit = ans.FrequencyTable.fit(symbols).stored_size
    magnitudes = np.abs(symbols)
    if int(magnitudes.max()) <= MAX_MAGNITUDE:
        buckets = BucketTable.fit(symbols, max(int(magnitudes.max()), 1), escape=0)
        if buckets is not None:
            return min(ideal + explicit,
                       buckets.cost_bits(np.bincount(magnitudes), 0) / 8 + buckets.stored_size)
    return ideal + explicit


def plain(x: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    """The uniform quantizer priced like the techniques that were not built (the reference
    of their rows)."""
    k = np.rint(x / step).astype(np.int64)
    return table_bytes(k), k * step


def deadzone(x: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    q = DeadzoneCodec(1.0, 0.5).quantize(x, onnxz.dtypes.BY_NAME["float64"], step)
    return q.estimated_bytes(), q.reconstruction(onnxz.dtypes.BY_NAME["float64"])


def trellis(x: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    q = TrellisCodec(1.0).quantize(x, onnxz.dtypes.BY_NAME["float64"], step)
    return q.estimated_bytes(), q.reconstruction(onnxz.dtypes.BY_NAME["float64"])


def trellis_explicit_tables(x: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    with bucket_tables(False):
        return trellis(x, step)


def rdoq(x: np.ndarray, step: float, lam: float = 0.1) -> tuple[float, np.ndarray]:
    """Scalar rate–distortion optimized quantization (not built): each weight takes the
    level among round-down, round-up and 0 of least (x − x̂)² + λΔ²·bits, bits from the
    plain quantizer's histogram (two passes)."""
    k = np.rint(x / step).astype(np.int64)
    for _ in range(2):
        lo = int(k.min()) - 1
        counts = np.bincount(k - lo, minlength=int(k.max()) - lo + 3) + 0.1
        bits = -np.log2(counts / counts.sum())
        down = np.trunc(x / step).astype(np.int64)
        options = (np.zeros_like(down), down, down + np.sign(x).astype(np.int64))
        costs = [(x - c * step) ** 2 + lam * step**2 * bits[np.clip(c - lo, 0, bits.size - 1)]
                 for c in options]
        k = np.choose(np.argmin(costs, axis=0), options)
    return table_bytes(k), k * step


def centroids(x: np.ndarray, step: float, classes: int = 8) -> tuple[float, np.ndarray]:
    """Centroid reconstruction (not built): levels 1 … 8 reconstruct to the mean |x| of
    their interval (one byte each stored), larger ones to the midpoint."""
    k = np.rint(x / step).astype(np.int64)
    r = k * step
    mag = np.abs(k)
    for level in range(1, classes + 1):
        sel = mag == level
        if sel.any():
            r[sel] = np.sign(x[sel]) * np.abs(x[sel]).mean()
    return table_bytes(k) + classes, r


def row_classes(x: np.ndarray, step: float, shape: tuple[int, ...],
                classes: int = 8) -> tuple[float, np.ndarray]:
    """One table per class of rows (not built): output channels sorted into 8 classes by
    mean |x|, a table each, a class index per row (3 bits)."""
    k = np.rint(x / step).astype(np.int64)
    if len(shape) < 2 or shape[0] < 2 * classes:
        return table_bytes(k), k * step
    rows = np.abs(x.reshape(shape[0], -1)).mean(axis=1)
    edges = np.quantile(rows, np.linspace(0, 1, classes + 1)[1:-1])
    row_class = np.repeat(np.searchsorted(edges, rows), x.size // shape[0])
    size = sum(table_bytes(k[row_class == c]) for c in np.unique(row_class))
    return size + shape[0] * 3 / 8, k * step


def previous_magnitude(x: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    """Context from the previous symbol's magnitude (0, 1, ≥ 2; not built): three tables."""
    k = np.rint(x / step).astype(np.int64)
    context = np.minimum(np.abs(np.concatenate(([0], k[:-1]))), 2)
    return sum(table_bytes(k[context == c]) for c in range(3) if (context == c).any()), k * step


WEIGHT_METHODS: dict[str, Pricer] = {
    "deadzone": deadzone,
    "trellis": trellis,
    "trellis, explicit tables only": trellis_explicit_tables,
    "* scalar RDOQ": rdoq,
    "* centroid reconstruction": centroids,
    "* 8 row classes": row_classes,  # type: ignore[dict-item]
    "* previous-magnitude context": previous_magnitude,
    "plain": plain,
}
"""How each technique prices a tensor at a step; ``*``: not built (compared with ``plain``,
the uniform quantizer priced the same way, instead of with ``deadzone``)."""

SHOWN = [m for m in WEIGHT_METHODS if m != "plain"]


def weight_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, np.ndarray,
                                                              tuple[int, ...]]]:
    """Name, float64 values and shape of every weight tensor the lossy default quantizes."""
    for slot in iter_tensor_slots(model):
        etype = payload_type(slot.tensor)
        if etype is None or not etype.is_quantizable or not slot.is_weight:
            continue
        values = read_payload(slot.tensor, etype)
        x = to_float64(values, etype)
        if x.size >= MIN_ELEMENTS and np.isfinite(x).all() and robust_spread(x) > 0:
            yield slot.tensor.name, x, tuple(slot.tensor.dims)


def bits_at(curve: list[tuple[float, float]], snr: float) -> float:
    """Bytes at weight SNR ``snr`` on a (bytes, snr) curve (linear between its points)."""
    points = sorted(curve, key=lambda p: p[1])
    return float(np.interp(snr, [p[1] for p in points], [p[0] for p in points]))


@dataclass
class WeightResult:
    """One model: weights counted, and per method the bits/weight at each SNR target."""

    model: str
    weights: int
    tensors: int
    bits: dict[str, list[float]] = field(default_factory=dict)


def weight_ablation(name: str, model: onnx.ModelProto) -> WeightResult:
    found = list(weight_tensors(model))
    result = WeightResult(name, sum(x.size for _, x, _ in found), len(found))
    totals = {m: np.zeros(len(SNR_TARGETS)) for m in WEIGHT_METHODS}
    for tensor, x, shape in found:
        energy = float(np.dot(x, x))
        spread = robust_spread(x)
        for method, price in WEIGHT_METHODS.items():
            curve = []
            for rel in STEPS:
                if method == "* 8 row classes":
                    size, r = row_classes(x, rel * spread, shape)
                else:
                    size, r = price(x, rel * spread)
                sse = float(np.sum((x - r) ** 2))
                curve.append((size, 10 * math.log10(energy / sse) if sse else 300.0))
            totals[method] += [bits_at(curve, s) for s in SNR_TARGETS]
        log(f"  {name}/{tensor}: {x.size} weights")
    result.bits = {m: (8 * t / result.weights).tolist() for m, t in totals.items()}
    return result


def weight_table(results: list[WeightResult]) -> str:
    head = ("| model | weights | SNR dB | " + " | ".join(SHOWN) + " |")
    rows = [head, "|:---|---:|---:|" + "---:|" * len(SHOWN)]
    for r in results:
        for i, snr in enumerate(SNR_TARGETS):
            base = r.bits["deadzone"][i]
            cells = [f"{base:.3f} b/w"] + [
                f"{r.bits[m][i] / r.bits['plain' if m.startswith('*') else 'deadzone'][i] - 1:+.1%}"
                for m in SHOWN[1:]]
            rows.append(f"| {r.model if i == 0 else ''} | {r.weights if i == 0 else ''} | "
                        f"{snr:g} | " + " | ".join(cells) + " |")
    legend = ("Bits per weight of the dead-zone codec (tables and escapes included) and each "
              "technique's change at the same weight SNR of every tensor; * = measured, not "
              "built: ideal code lengths plus tables (explicit or bucket, the smaller), "
              "compared with the uniform quantizer priced the same way.")
    return "\n".join([*rows, "", legend])


# --- versus NNCodec, weight against weight -----------------------------------------------

NNCODEC_QPS = (-40, -36, -32, -28, -24, -20)
FINE_STEPS = tuple(2.0 ** (k / 8) for k in range(-80, 1))  # 1/1024 .. 1, an eighth octave
ONNXZ_CODECS: dict[str, Pricer] = {"deadzone": deadzone, "trellis": trellis}


@dataclass
class VersusRow:
    """NNCodec at one QP: its bitstream bytes, the tensors' weight SNR range, and the bytes
    of each onnxz codec at the same per-tensor SNR."""

    model: str
    use_dq: bool
    qp: int
    nncodec_bytes: int
    snr_min: float
    snr_max: float
    onnxz_bytes: dict[str, float]


def versus_nncodec(name: str, model: onnx.ModelProto, workdir: Path) -> list[VersusRow]:
    import comparators  # tools/comparators: NNCodec in its own venv

    weights = comparators.weight_tensors(model)
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, array in weights.items():
        x = array.astype(np.float64).ravel()
        energy, spread = float(np.dot(x, x)), robust_spread(x)
        for codec, price in ONNXZ_CODECS.items():
            curve = []
            for rel in FINE_STEPS:
                size, r = price(x, rel * spread)
                sse = float(np.sum((x - r) ** 2))
                curve.append((size, 10 * math.log10(energy / sse) if sse else 300.0))
            curves[key, codec] = curve
    rows = []
    for use_dq in (True, False):
        with comparators.NNCodec(model, use_dq, workdir / f"{name}_nnc") as nnc:
            for qp in NNCODEC_QPS:
                result = nnc.code(qp)
                decoded = comparators.weight_tensors(onnx.load(str(result.model_path)))
                snrs, totals = [], dict.fromkeys(ONNXZ_CODECS, 0.0)
                for key, array in weights.items():
                    x = array.astype(np.float64).ravel()
                    sse = float(np.sum((x - decoded[key].astype(np.float64).ravel()) ** 2))
                    snr = 10 * math.log10(float(np.dot(x, x)) / sse) if sse else 300.0
                    snrs.append(snr)
                    for codec in ONNXZ_CODECS:
                        totals[codec] += bits_at(curves[key, codec], snr)
                rows.append(VersusRow(name, use_dq, qp, result.bitstream_bytes, min(snrs),
                                      max(snrs), totals))
                log(f"  {name} NNCodec {'dq' if use_dq else 'no dq'} qp {qp}: "
                    f"{result.bitstream_bytes:,} B; onnxz trellis "
                    f"{totals['trellis'] / result.bitstream_bytes:.3f}×")
    return rows


def versus_table(rows: list[VersusRow]) -> str:
    out = ["| model | NNCodec | QP | weight SNR dB | NNCodec bytes | "
           + " | ".join(f"onnxz {c}" for c in ONNXZ_CODECS) + " |",
           "|:---|:---|---:|---:|---:|" + "---:|" * len(ONNXZ_CODECS)]
    for r in rows:
        cells = [f"{b:,.0f} ({b / r.nncodec_bytes:.3f}×)" for b in r.onnxz_bytes.values()]
        out.append(f"| {r.model} | {'dq' if r.use_dq else 'no dq'} | {r.qp} | "
                   f"{r.snr_min:.1f}–{r.snr_max:.1f} | {r.nncodec_bytes:,} | "
                   + " | ".join(cells) + " |")
    return "\n".join([*out, "", "NNCodec 2.1.3 codes the weight tensors (≥ 1024 elements) "
                       "at one QP, with (dq) or without dependent quantization; onnxz codes "
                       "each tensor at the weight SNR NNCodec's decoding reached (estimated "
                       "bytes: coded symbols, tables, escapes; no index or graph). (×) = "
                       "onnxz / NNCodec bitstream."])


# --- task level --------------------------------------------------------------------------

@contextlib.contextmanager
def bucket_tables(enabled: bool) -> Iterator[None]:
    """The trellis codec with (default) or without bucket tables (for the ablation)."""
    fit = trellis_module.BucketTable.fit_counts
    if not enabled:
        trellis_module.BucketTable.fit_counts = lambda *args: None  # type: ignore[assignment]
    try:
        yield
    finally:
        trellis_module.BucketTable.fit_counts = fit  # type: ignore[method-assign]


@contextlib.contextmanager
def rate_control_grid(methods: tuple[str, ...]) -> Iterator[None]:
    """Rate control prices every tensor at every step of its grid with each of ``methods``
    (today's rate control: the dead-zone codec only); each tensor's points are then put in
    order from finest to coarsest, as the search expects."""
    grid = tuple(tensors.Setting(m, s) for m in methods for s in tensors.STEP_GRID)
    find = search.find_candidates

    def find_with_grid(model: onnx.ModelProto, options: onnxz.PackOptions) -> list:
        found = tensors.find_candidates(model, options, settings=grid)
        for c in found:
            c.points = [c.points[0], *sorted(c.points[1:], key=lambda p: p.sse)]
        return found

    search.find_candidates = find_with_grid
    try:
        yield
    finally:
        search.find_candidates = find


@dataclass(frozen=True)
class Variant:
    """A column of the task table: the codecs rate control may choose, bucket tables on/off."""

    name: str
    methods: tuple[str, ...]
    buckets: bool = True


VARIANTS = (
    Variant("rate control, deadzone", ("deadzone",)),
    Variant("+ trellis", ("deadzone", "trellis"), buckets=False),
    Variant("+ bucket tables", ("deadzone", "trellis")),
)


@dataclass
class TaskCell:
    """One variant on one model."""

    bytes: int
    agreement: float
    encode_seconds: float
    decode_cpu_seconds: float
    codecs: dict[str, int]


@dataclass
class TaskResult:
    model: str
    original_bytes: int
    spec: str
    cells: dict[str, TaskCell] = field(default_factory=dict)
    nncodec: int | None = None
    sweeps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


OUTPUT_SNR_TARGETS = (25.0, 30.0, 35.0, 40.0)
SWEEP_STEPS = tuple(2.0 ** (k / 4) for k in range(-34, -3, 3))  # relative steps, 1/362 .. 1/2


def output_snr_sweeps(source: Path, calibration: Path, workdir: Path
                      ) -> dict[str, list[tuple[int, float]]]:
    """(file bytes, output SNR dB on the calibration inputs) of each codec at fixed steps:
    the dead-zone codec, trellis with explicit tables only, trellis."""
    codecs: dict[str, tuple[Callable[[float], onnxz.codecs.TensorCodec], bool]] = {
        "deadzone": (lambda rel: DeadzoneCodec(rel, 0.5), True),
        "+ trellis": (TrellisCodec, False),
        "+ bucket tables": (TrellisCodec, True),
    }
    sweeps: dict[str, list[tuple[int, float]]] = {}
    out = workdir / "sweep.onnxz"
    for name, (make, buckets) in codecs.items():
        for rel in SWEEP_STEPS:
            options = onnxz.PackOptions(quantizer=make(rel), step_rel=rel)
            with bucket_tables(buckets):
                info = onnxz.save(source, out, options=options, force=True)
            report = onnxz.verify(source, out, inputs=str(calibration))
            snr = min(m.snr_db for m in report.outputs if m.picked is None)
            sweeps.setdefault(name, []).append((info.file_bytes, snr))
    return sweeps


def bytes_at_output_snr(sweep: list[tuple[int, float]], snr: float) -> float | None:
    """Bytes at output SNR ``snr`` from a least-squares line bytes = a + b·SNR through the
    sweep's points between 15 and 60 dB (output SNR wobbles from step to step: saturated
    softmax outputs, a few samples; the line is what 6 dB per bit predicts); None if fewer
    than 3 points lie there or ``snr`` is outside them."""
    points = [(b, d) for b, d in sweep if 15.0 <= d <= 60.0]
    if len(points) < 3 or not min(d for _, d in points) <= snr <= max(d for _, d in points):
        return None
    slope, intercept = np.polyfit([d for _, d in points], [b for b, _ in points], 1)
    return float(intercept + slope * snr)


def task_ablation(task, workdir: Path, nncodec: dict[str, int]) -> TaskResult:
    source = task.model_path()
    calibration = task.write_calibration(workdir / f"{task.name}_calib.npz")
    result = TaskResult(task.name, source.stat().st_size, task.fidelity,
                        nncodec=nncodec.get(task.name))
    for variant in VARIANTS:
        out = workdir / f"{task.name}_{len(result.cells)}.onnxz"
        start = time.perf_counter()
        with rate_control_grid(variant.methods), bucket_tables(variant.buckets):
            info = onnxz.save(source, out, fidelity=task.fidelity, inputs=str(calibration),
                              force=True)
        seconds = time.perf_counter() - start
        agreement = task.evaluate(out)
        codecs: dict[str, int] = {}
        for t in info.tensors:
            codecs[t.codec] = codecs.get(t.codec, 0) + 1
        result.cells[variant.name] = TaskCell(info.file_bytes, agreement.fraction, seconds,
                                              decode_cpu_seconds(out), codecs)
        log(f"  {task.name} {variant.name}: {info.file_bytes:,} B, {agreement}, "
            f"{seconds:.0f} s")
    result.sweeps = output_snr_sweeps(source, calibration, workdir)
    return result


def task_table(results: list[TaskResult]) -> str:
    names = [v.name for v in VARIANTS]
    rows = ["| model | .onnx bytes | " + " | ".join(names) + " | NNCodec (best) | "
            "last / NNCodec |", "|:---|---:|" + "---:|" * (len(names) + 2)]
    for r in results:
        cells = []
        for n in names:
            c = r.cells[n]
            mark = "" if c.agreement >= TARGET else " ✗"
            cells.append(f"{c.bytes:,} ({r.original_bytes / c.bytes:.2f}×) "
                         f"{c.agreement:.2%}{mark}")
        last = r.cells[names[-1]].bytes
        nnc = f"{r.nncodec:,}" if r.nncodec else "n/a"
        ratio = f"{last / r.nncodec:.3f}" if r.nncodec else "n/a"
        rows.append(f"| {r.model} | {r.original_bytes:,} | " + " | ".join(cells)
                    + f" | {nnc} | {ratio} |")
    rows += ["", "| model | " + " | ".join(f"{n}: encode s / decode speed" for n in names)
             + " |", "|:---|" + "---:|" * len(names)]
    for r in results:
        base = r.cells[names[0]].decode_cpu_seconds
        rows.append(f"| {r.model} | " + " | ".join(
            f"{r.cells[n].encode_seconds:.0f} s / {base / r.cells[n].decode_cpu_seconds:.2f}×"
            for n in names) + " |")
    sweep_names = list(results[0].sweeps) if results else []
    rows += ["", "| model | output SNR dB | " + " | ".join(sweep_names) + " |",
             "|:---|---:|" + "---:|" * len(sweep_names)]
    for r in results:
        for i, snr in enumerate(OUTPUT_SNR_TARGETS):
            base = bytes_at_output_snr(r.sweeps["deadzone"], snr)
            if base is None:
                continue
            cells = [f"{base:,.0f} B"]
            for n in sweep_names[1:]:
                b = bytes_at_output_snr(r.sweeps[n], snr)
                cells.append("n/a" if b is None else f"{b / base - 1:+.1%}")
            rows.append(f"| {r.model if i == 0 else ''} | {snr:g} | " + " | ".join(cells) + " |")
    ratios = [r.original_bytes / r.cells[names[-1]].bytes for r in results]
    rows += ["", f"File sizes rate control writes for each model's fidelity spec (its "
             f"calibration inputs), task agreement on held-out real inputs (✗: below "
             f"{TARGET:.1%}); mean .onnx / file with every technique: "
             f"{np.mean(ratios):.2f}×. Decode speed: CPU time of onnxz.load relative to the "
             "first column's file (higher is faster). NNCodec: its smallest file at ≥ 99.5% "
             "held-out agreement (tools/bench_rate.py, best of with and without dependent "
             "quantization). Second table: one codec for every weight tensor at fixed steps "
             "(2^(k/4) of the spread); file bytes at the same output SNR (the worst output, "
             "on the calibration inputs) relative to the dead-zone codec."]
    return "\n".join(rows)


def nncodec_best(path: Path | None) -> dict[str, int]:
    """Per model, NNCodec's smallest passing file in a ``bench_rate.py --json`` result."""
    if path is None:
        return {}
    best: dict[str, int] = {}
    for model in json.loads(path.read_text()):
        sizes = [m["best"]["bytes"] for key, m in model["methods"].items()
                 if key.startswith("nncodec") and m.get("best")]
        if sizes:
            best[model["model"]] = min(sizes)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("models", nargs="*", help="corpus models (default: all)")
    parser.add_argument("--weights", action="store_true", help="only the weight-level table")
    parser.add_argument("--versus-nncodec", action="store_true",
                        help="only the table against NNCodec at equal weight SNR")
    parser.add_argument("--task", action="store_true", help="only the task-level table")
    parser.add_argument("--nncodec", type=Path, metavar="JSON",
                        help="a tools/bench_rate.py --json result with NNCodec's sizes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    names = args.models or [m.name for m in CORPUS]
    unknown = sorted(set(names) - {m.name for m in CORPUS})
    if unknown:
        parser.error(f"unknown corpus models: {', '.join(unknown)}")
    every = not (args.weights or args.versus_nncodec or args.task)
    paths = fetch_all(names)
    output: dict[str, list] = {}
    if args.weights or every:
        weights = []
        for name in names:
            log(f"{name}: weight-level curves")
            weights.append(weight_ablation(name, onnx.load(str(paths[name]))))
            if args.json:
                output["weights"] = [asdict(w) for w in weights]
                args.json.write_text(json.dumps(output, indent=1))
        print(weight_table(weights) + "\n")
    if args.versus_nncodec or every:
        rows: list[VersusRow] = []
        with tempfile.TemporaryDirectory(prefix="bench-coding-") as tmp:
            try:
                for name in names:
                    log(f"{name}: NNCodec against onnxz at equal weight SNR")
                    rows += versus_nncodec(name, onnx.load(str(paths[name])), Path(tmp))
                    if args.json:
                        output["versus_nncodec"] = [asdict(r) for r in rows]
                        args.json.write_text(json.dumps(output, indent=1))
            except (ImportError, RuntimeError) as exc:  # no tools/comparators or NNCodec
                log(f"versus NNCodec skipped: {exc}")
        print(versus_table(rows) + "\n")
    if args.task or every:
        import tasks  # tools/tasks: real task data (extra "ratebench")

        results = []
        nncodec = nncodec_best(args.nncodec)
        with tempfile.TemporaryDirectory(prefix="bench-coding-") as tmp:
            for name in names:
                log(f"{name}: rate control with each variant")
                results.append(task_ablation(tasks.get(name), Path(tmp), nncodec))
                if args.json:
                    output["task"] = [asdict(r) for r in results]
                    args.json.write_text(json.dumps(output, indent=1))
        print(task_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
