#!/usr/bin/env python3
"""Compression benchmark on the real-model corpus: onnxz against zstd -19 and ZipNN.

For every corpus model (see ``fetch_models.py``), in one run:

* sizes and ratios (original / compressed) of
  ``zstd -19`` of the whole .onnx file, ZipNN 0.5.4 lossless of the whole .onnx file,
  ``onnxz --lossless`` and the onnxz lossy default;
* the output SNR of the lossy onnxz model against the original (onnxruntime, CPU,
  seeded generated inputs, see INPUT_OVERRIDES);
* compression and decompression times, reported only relative to zstd -19.

Every lossless method is checked to round-trip bit-exactly; a failure is an error.

Usage::

    python tools/bench_compression.py [NAME ...] [--json PATH] [--markdown]
                                      [--repeat N] [--seed S] [--snr-samples N]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import zstandard
from corpus_inputs import INPUT_OVERRIDES, snr_db
from fetch_models import BY_NAME, CORPUS, CorpusModel, FetchError, fetch_all
from onnx import numpy_helper

T = TypeVar("T")

ZSTD_LEVEL = 19
ZIPNN_VERSION = "0.5.4"

# The ZipNN configuration, chosen by a grid search on this corpus (see ZIPNN_NOTES).
ZIPNN_CONFIG: dict[str, Any] = {
    "method": "huffman",
    "input_format": "byte",
    "bytearray_dtype": "float32",
    "compression_chunk": 16 * 1024,
    "compression_threshold": 1.0,
    "check_th_after_percent": 100,
}
ZIPNN_ALIGN = 4  # bytes per element of bytearray_dtype; the input is zero-padded to this
ZIPNN_NOTES = (
    "whole .onnx file as bytes, zero-padded to a multiple of 4 (padding counted); in byte mode "
    "`method` does not change the output; float32 byte grouping beat bfloat16/float16 grouping "
    "on every model, and 16 KiB chunks beat the 256 KiB default (chunks above 128 KiB lose the "
    "Huffman stage); threshold 1.0 / check-after 100% keep every chunk that shrinks at all"
)

METHODS = ("zstd19", "zipnn", "onnxz_lossless", "onnxz_lossy")
LABELS = {
    "zstd19": "zstd -19",
    "zipnn": "ZipNN 0.5.4",
    "onnxz_lossless": "onnxz --lossless",
    "onnxz_lossy": "onnxz lossy",
}


# --------------------------------------------------------------------------- results


@dataclass
class MethodResult:
    """One method on one model. Times are the fastest of several runs, in seconds."""

    size: int | None = None
    compress_s: float | None = None
    decompress_s: float | None = None
    exact: bool | None = None
    snr_db: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the method ran (it may be unavailable)."""
        return self.size is not None


@dataclass
class ModelResult:
    """All methods on one corpus model."""

    name: str
    original: int
    methods: dict[str, MethodResult] = field(default_factory=dict)


MIN_TIMING_S = 0.25  # keep re-running fast operations until this much time has been spent
MAX_RUNS = 200


def _best_time(fn: Callable[[], T], repeat: int) -> tuple[T, float]:
    """Run ``fn`` at least ``repeat`` times (more while under MIN_TIMING_S in total, up to
    MAX_RUNS); return its last result and the fastest wall time."""
    best, spent, runs = math.inf, 0.0, 0
    result: Any = None
    while runs < max(1, repeat) or (spent < MIN_TIMING_S and runs < MAX_RUNS):
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return result, best


# --------------------------------------------------------------------------- baselines


def bench_zstd(raw: bytes, repeat: int) -> MethodResult:
    """zstd level 19 (single-threaded) of the whole file."""
    comp, tc = _best_time(lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw), repeat)
    back, td = _best_time(lambda: zstandard.ZstdDecompressor().decompress(comp), repeat)
    if back != raw:
        raise RuntimeError("zstd round trip is not bit-exact")
    return MethodResult(size=len(comp), compress_s=tc, decompress_s=td, exact=True)


def zipnn_class() -> tuple[Any, str]:
    """``(ZipNN, version)`` if zipnn is importable, else ``(None, reason)``."""
    try:
        import warnings

        with warnings.catch_warnings():  # importing zipnn imports torch, which is noisy
            warnings.simplefilter("ignore")
            from zipnn import ZipNN  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or torch failing to load
        return None, f"zipnn not importable ({type(exc).__name__}: {exc})"
    try:
        from importlib.metadata import version

        return ZipNN, version("zipnn")
    except Exception:
        return ZipNN, "unknown"


def bench_zipnn(zipnn: Any, raw: bytes, repeat: int) -> MethodResult:
    """ZipNN lossless of the whole file, configured by ZIPNN_CONFIG.

    ZipNN byte-groups the buffer it is given in place, so each call gets a private
    bytearray copy; the input is zero-padded to a whole number of elements (a ragged
    tail can corrupt the heap) and the padding counts as part of the compressed size.
    """
    pad = -len(raw) % ZIPNN_ALIGN
    padded = raw + b"\0" * pad

    def compress() -> bytes:
        return bytes(zipnn(**ZIPNN_CONFIG).compress(bytearray(padded)))

    comp, tc = _best_time(compress, repeat)
    back, td = _best_time(lambda: bytes(zipnn(**ZIPNN_CONFIG).decompress(bytearray(comp))), repeat)
    if back[: len(raw)] != raw or back[len(raw):] != b"\0" * pad or len(back) != len(padded):
        raise RuntimeError("ZipNN round trip is not bit-exact")
    note = f"{pad} padding byte(s)" if pad else ""
    return MethodResult(size=len(comp), compress_s=tc, decompress_s=td, exact=True, note=note)


# --------------------------------------------------------------------------- SNR inputs

DEFAULT_BATCH = 1
DEFAULT_DIM = 16

ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def resolve_shape(shape: list[Any]) -> tuple[int, ...]:
    """Concrete dims: fixed dims kept, dynamic ones get DEFAULT_BATCH (axis 0) or DEFAULT_DIM."""
    return tuple(
        d if isinstance(d, int) and d > 0 else (DEFAULT_BATCH if i == 0 else DEFAULT_DIM)
        for i, d in enumerate(shape)
    )


def generate(dtype: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A default input of ``dtype`` and ``shape``: N(0, 1) floats, small ints, coin-flip bools."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 16, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise ValueError(f"no default generator for dtype {dt}")


def make_inputs(
    model: str, sess: ort.InferenceSession, seed: int, sample: int = 0
) -> dict[str, np.ndarray]:
    """Seeded inputs for every input of ``sess`` (per-model overrides first).

    The stream depends on (seed, model name, sample) only, not on which models run.
    """
    rng = np.random.default_rng([seed, zlib.crc32(model.encode()), sample])
    overrides = INPUT_OVERRIDES.get(model, {})
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name in overrides:
            feeds[inp.name] = overrides[inp.name](rng)
        else:
            if inp.type not in ORT_DTYPES:
                raise ValueError(f"{model}: input {inp.name!r} has unsupported type {inp.type}")
            feeds[inp.name] = generate(ORT_DTYPES[inp.type], resolve_shape(inp.shape), rng)
    return feeds


def run_session(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``sess`` on ``feeds``."""
    return sess.run(None, feeds)


def cpu_session(model: str | bytes) -> ort.InferenceSession:
    """An onnxruntime CPU session of a model path or serialized model."""
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- exactness


def _tensors(graph: onnx.GraphProto, prefix: str = "") -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every TensorProto in a graph and its subgraphs, keyed by a stable path."""
    for i, t in enumerate(graph.initializer):
        yield f"{prefix}init[{i}]", t
    for n, node in enumerate(graph.node):
        for attr in node.attribute:
            key = f"{prefix}node[{n}].{attr.name}"
            if attr.HasField("t"):
                yield key, attr.t
            for j, t in enumerate(attr.tensors):
                yield f"{key}[{j}]", t
            if attr.HasField("g"):
                yield from _tensors(attr.g, f"{key}/")
            for j, g in enumerate(attr.graphs):
                yield from _tensors(g, f"{key}[{j}]/")


def same_weights(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Whether two models hold bit-identical tensors (dtype, shape, bytes) in the same slots."""
    if a.SerializeToString() == b.SerializeToString():
        return True
    ta, tb = dict(_tensors(a.graph)), dict(_tensors(b.graph))
    if ta.keys() != tb.keys():
        return False
    for key, x in ta.items():
        y = tb[key]
        xa, ya = numpy_helper.to_array(x), numpy_helper.to_array(y)
        if xa.dtype != ya.dtype or xa.shape != ya.shape or xa.tobytes() != ya.tobytes():
            return False
    return True


# --------------------------------------------------------------------------- onnxz
# Everything that touches onnxz is in this section; it calls only onnxz.save, onnxz.load
# and onnxz.inference_session.


def onnxz_module() -> tuple[Any, str]:
    """``(onnxz, version)`` if onnxz with ``save`` is importable, else ``(None, reason)``."""
    try:
        import onnxz
    except Exception as exc:
        return None, f"onnxz not importable ({type(exc).__name__}: {exc})"
    if not hasattr(onnxz, "save"):
        return None, "onnxz has no save() yet"
    return onnxz, getattr(onnxz, "__version__", "unknown")


def bench_onnxz(
    onnxz: Any, name: str, src: Path, workdir: Path, repeat: int, seed: int, samples: int
) -> dict[str, MethodResult]:
    """onnxz lossless and lossy default on one model; the lossy one also gets its SNR."""
    reference = onnx.load(str(src))
    ref_sess = cpu_session(str(src))
    feeds = [make_inputs(name, ref_sess, seed, s) for s in range(samples)]
    ref_out = [y for f in feeds for y in run_session(ref_sess, f)]
    results = {}
    for key, lossless in (("onnxz_lossless", True), ("onnxz_lossy", False)):
        out = workdir / f"{name}.{'lossless' if lossless else 'lossy'}.onnxz"
        _, tc = _best_time(lambda out=out, lossless=lossless: onnxz.save(
            str(src), str(out), lossless=lossless, force=True), repeat)
        decoded, td = _best_time(lambda out=out: onnxz.load(str(out)), repeat)
        exact = same_weights(reference, decoded)
        if lossless and not exact:
            raise RuntimeError(f"{name}: onnxz --lossless did not restore the weights bit-exactly")
        sess = onnxz.inference_session(str(out))
        snr = snr_db(ref_out, [y for f in feeds for y in run_session(sess, f)])
        if lossless and snr != math.inf:
            raise RuntimeError(f"{name}: onnxz --lossless outputs differ (SNR {snr:.1f} dB)")
        results[key] = MethodResult(
            size=out.stat().st_size, compress_s=tc, decompress_s=td, exact=exact, snr_db=snr
        )
    return results


# --------------------------------------------------------------------------- driver


def bench_model(
    model: CorpusModel, src: Path, workdir: Path, repeat: int, seed: int, samples: int,
    zipnn: Any, onnxz: Any, unavailable: dict[str, str],
) -> ModelResult:
    """Every method on one model."""
    raw = src.read_bytes()
    res = ModelResult(name=model.name, original=len(raw))
    _log(f"{model.name}: zstd -{ZSTD_LEVEL}")
    res.methods["zstd19"] = bench_zstd(raw, repeat)
    if zipnn is not None:
        _log(f"{model.name}: ZipNN")
        res.methods["zipnn"] = bench_zipnn(zipnn, raw, repeat)
    else:
        res.methods["zipnn"] = MethodResult(note=unavailable["zipnn"])
    if onnxz is not None:
        _log(f"{model.name}: onnxz")
        res.methods.update(bench_onnxz(onnxz, model.name, src, workdir, repeat, seed, samples))
    else:
        for key in ("onnxz_lossless", "onnxz_lossy"):
            res.methods[key] = MethodResult(note=unavailable["onnxz"])
    return res


def totals(results: list[ModelResult]) -> ModelResult:
    """A pseudo-model summing sizes and times over the models (SNR left out)."""
    tot = ModelResult(name="total", original=sum(r.original for r in results))
    for key in METHODS:
        rows = [r.methods[key] for r in results]
        if rows and all(m.ok for m in rows):
            tot.methods[key] = MethodResult(
                size=sum(m.size or 0 for m in rows),
                compress_s=sum(m.compress_s or 0.0 for m in rows),
                decompress_s=sum(m.decompress_s or 0.0 for m in rows),
                exact=all(bool(m.exact) for m in rows),
            )
        else:
            tot.methods[key] = MethodResult(note="n/a")
    return tot


def _rel(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _fmt_size(r: MethodResult, original: int) -> str:
    if not r.ok or r.size is None:
        return "n/a"
    return f"{r.size:,} ({original / r.size:.2f}×)"


def _fmt_rel(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def _fmt_snr(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "inf" if math.isinf(x) and x > 0 else f"{x:.1f}"


def size_table(rows: list[ModelResult]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the size table: bytes (original / size ratio) and lossy SNR."""
    header = ["model", "original", *(LABELS[k] for k in METHODS), "lossy SNR dB"]
    cells = []
    for r in rows:
        cells.append([
            r.name, f"{r.original:,}",
            *(_fmt_size(r.methods[k], r.original) for k in METHODS),
            _fmt_snr(r.methods["onnxz_lossy"].snr_db),
        ])
    return header, cells


def time_table(rows: list[ModelResult]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the time table: compress / decompress time ÷ zstd -19's."""
    header = ["model"]
    for k in METHODS:
        header += [f"{LABELS[k]} comp", f"{LABELS[k]} decomp"]
    cells = []
    for r in rows:
        base = r.methods["zstd19"]
        row = [r.name]
        for k in METHODS:
            m = r.methods[k]
            row += [_fmt_rel(_rel(m.compress_s, base.compress_s)),
                    _fmt_rel(_rel(m.decompress_s, base.decompress_s))]
        cells.append(row)
    return header, cells


def render_text(header: list[str], cells: list[list[str]]) -> str:
    """A plain aligned table (first column left, others right)."""
    widths = [max(len(c) for c in col) for col in zip(header, *cells, strict=True)]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def render_markdown(header: list[str], cells: list[list[str]]) -> str:
    """A GitHub Markdown table (first column left, others right)."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(out)


def to_json(results: list[ModelResult], meta: dict[str, Any]) -> dict[str, Any]:
    """Machine-readable results; SNR +inf is written as the string "inf"."""

    def method(m: MethodResult, r: ModelResult, base: MethodResult) -> dict[str, Any]:
        d = asdict(m)
        if m.snr_db is not None and math.isinf(m.snr_db):
            d["snr_db"] = "inf" if m.snr_db > 0 else "-inf"
        d["ratio"] = r.original / m.size if m.size else None
        d["compress_rel_zstd19"] = _rel(m.compress_s, base.compress_s)
        d["decompress_rel_zstd19"] = _rel(m.decompress_s, base.decompress_s)
        return d

    def model(r: ModelResult) -> dict[str, Any]:
        base = r.methods["zstd19"]
        pinned = BY_NAME.get(r.name)
        source = ({"package": pinned.requirement, "member": pinned.member,
                   "sha256": pinned.sha256} if pinned else {})
        return {"name": r.name, **source, "original_bytes": r.original,
                "methods": {k: method(r.methods[k], r, base) for k in METHODS}}

    return {**meta, "models": [model(r) for r in results], "total": model(totals(results))}


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _versions(zipnn_version: str | None, onnxz_version: str | None) -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "zstandard": zstandard.__version__,
        "zipnn": zipnn_version,
        "onnxz": onnxz_version,
    }


def footnotes(samples: int) -> str:
    """The explanation printed under the Markdown tables."""
    return (
        "Sizes in bytes, (×) = original / compressed. zstd and ZipNN compress the whole .onnx "
        "file; onnxz sizes are whole .onnxz files. Lossy SNR: output SNR of the decoded model vs "
        f"the original (onnxruntime CPU; all float outputs of {samples} seeded generated inputs "
        "pooled). Times are relative to zstd -19 on the same model (lower = faster): zstd and "
        "ZipNN are timed bytes→bytes in memory, onnxz file→file (save) and file→ModelProto "
        "(load). ZipNN uses its own thread pool; zstd is single-threaded."
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="corpus models (default: all)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--repeat", type=_positive, default=3, metavar="N",
                        help="timing runs per method, fastest kept (3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SNR inputs (0)")
    parser.add_argument("--snr-samples", type=_positive, default=16, metavar="N",
                        help="seeded inputs per model, outputs pooled into one SNR (16)")
    args = parser.parse_args(argv)

    try:
        paths = fetch_all(args.names or None)
    except FetchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    zipnn, zipnn_info = zipnn_class()
    onnxz, onnxz_info = onnxz_module()
    unavailable: dict[str, str] = {}
    if zipnn is None:
        unavailable["zipnn"] = f"{zipnn_info}; pip install zipnn=={ZIPNN_VERSION}"
    elif zipnn_info != ZIPNN_VERSION:
        _log(f"warning: zipnn {zipnn_info} installed, the configuration was tuned on "
             f"{ZIPNN_VERSION}")
    LABELS["zipnn"] = f"ZipNN {zipnn_info if zipnn else ZIPNN_VERSION}"
    if onnxz is None:
        unavailable["onnxz"] = onnxz_info
    for key, why in unavailable.items():
        _log(f"{key} columns are n/a: {why}")

    models = [m for m in CORPUS if m.name in paths]
    with tempfile.TemporaryDirectory(prefix="onnxz-bench-") as tmp:
        results = [bench_model(m, paths[m.name], Path(tmp), args.repeat, args.seed,
                               args.snr_samples, zipnn, onnxz, unavailable) for m in models]
    rows = [*results, totals(results)]
    sizes, times = size_table(rows), time_table(rows)

    if args.markdown:
        print("Compressed size in bytes (ratio original / size):\n")
        print(render_markdown(*sizes))
        print("\nCompression and decompression time relative to zstd -19 (lower = faster):\n")
        print(render_markdown(*times))
        print(f"\n{footnotes(args.snr_samples)}")
        if zipnn is not None:
            config = ", ".join(f"{k}={v!r}" for k, v in ZIPNN_CONFIG.items())
            print(f"ZipNN configuration: {config}.")
        print("\nRegenerate with `make bench`.")
    else:
        print(render_text(*sizes))
        print("\ntime relative to zstd -19 (lower = faster):")
        print(render_text(*times))
    for key, why in unavailable.items():
        print(f"note: {key} is n/a: {why}")

    if args.json:
        meta = {
            "tool": "tools/bench_compression.py",
            "repeat": args.repeat,
            "seed": args.seed,
            "snr_samples": args.snr_samples,
            "zstd_level": ZSTD_LEVEL,
            "zipnn_config": ZIPNN_CONFIG if zipnn is not None else None,
            "zipnn_notes": ZIPNN_NOTES,
            "versions": _versions(zipnn_info if zipnn else None, onnxz_info if onnxz else None),
            "unavailable": unavailable,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, meta), indent=2) + "\n")
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
