#!/usr/bin/env python3
"""Speed and memory benchmark: onnxz against zstd, ZipNN and onnxruntime int8, in one run.

For every corpus model (``fetch_models.py``) and, with ``--large``, a generated ≥ 3 GB
transformer-like model with external data (``make_large_model.py``), each method encodes
the model (its .onnx and external data files) to a file and decodes that file back to
model files on disk. Reported per method:

* size of the encoded file(s), and original / size;
* encode and decode speed in MB/s of *float32 weights*: 4 bytes × the number of elements
  of the tensors onnxz stores, whatever their type (the same figure for every method of a
  model, so speeds compare as times do); decode also as a ratio to ``zstd -3`` decode,
  and to ``zstd -3`` decode whose outputs are then flushed to disk as onnxz flushes its
  own (``fsync`` of the files and their folder: "durable");
* peak RSS of the encode and of the decode: the largest sum over the process and its
  worker processes (sampled, see ``peak_rss.py``), imports included.

Methods: onnxz lossless and lossy default with 1 and 2 workers; zstd -19 and -3 of the
model files (single-threaded, streamed; -3 also decoded durably); ZipNN 0.5.4 of the model
files (if importable; its own threads); onnxruntime ``quantize_dynamic`` to int8 (decode =
loading the int8 model back from disk; it is lossy and larger, shown for scale).

Every method runs in its own subprocess (so its peak RSS is its own); times are measured
inside it around the operation only (best of ``--repeat`` runs for models under 64 MB).

Usage::

    python tools/bench_speed.py [NAME ...] [--large] [--large-dir DIR] [--markdown]
                                [--json PATH] [--repeat N] [--skip METHOD ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from fetch_models import CORPUS, FetchError, fetch_all  # noqa: E402
from peak_rss import measure  # noqa: E402

METHODS = ("onnxz_lossless_1", "onnxz_lossless_2", "onnxz_lossy_1", "onnxz_lossy_2",
           "zstd19", "zstd3", "zstd3_durable", "zipnn", "ort_int8")
LABELS = {
    "onnxz_lossless_1": "onnxz --lossless, 1 worker",
    "onnxz_lossless_2": "onnxz --lossless, 2 workers",
    "onnxz_lossy_1": "onnxz lossy, 1 worker",
    "onnxz_lossy_2": "onnxz lossy, 2 workers",
    "zstd19": "zstd -19",
    "zstd3": "zstd -3",
    "zstd3_durable": "zstd -3, durable",
    "zipnn": "ZipNN 0.5.4",
    "ort_int8": "onnxruntime int8",
}
REPEAT_BELOW = 64 << 20  # bytes of model files; smaller models are timed best of --repeat
STREAM = 1 << 24
LARGE_SHAPE = {"hidden": 4096, "ffn": 8192, "layers": 6, "vocab": 8192}


# --------------------------------------------------------------------------- the methods
# Each runs in a child process: ``bench_speed.py --child METHOD encode|decode SRC DST``,
# printing {"seconds": ...}. SRC/DST are the model (.onnx, data files beside it) or the
# encoded file.

def model_files(onnx_path: Path) -> list[Path]:
    """The .onnx and the external data files it refers to."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    names = set()
    for tensor in _all_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return [onnx_path, *(onnx_path.parent / n for n in sorted(names))]


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _zstd_encode(level: int, src: Path, dst: Path) -> None:
    """All model files into one stream: for each, its name length, name, size, bytes."""
    import zstandard

    with open(dst, "wb") as out, zstandard.ZstdCompressor(level=level).stream_writer(
            out) as writer:
        for path in model_files(src):
            name = path.name.encode()
            size = path.stat().st_size
            writer.write(len(name).to_bytes(2, "little") + name + size.to_bytes(8, "little"))
            with open(path, "rb") as f:
                while block := f.read(STREAM):
                    writer.write(block)


def _zstd_decode(src: Path, dst: Path) -> list[Path]:
    """The model files back from :func:`_zstd_encode`'s stream; returns their paths."""
    import zstandard

    written = []
    with open(src, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        while header := reader.read(2):
            name = reader.read(int.from_bytes(header, "little")).decode()
            size = int.from_bytes(reader.read(8), "little")
            target = dst if name.endswith(".onnx") else dst.parent / name
            written.append(target)
            with open(target, "wb") as out:
                while size:
                    block = reader.read(min(size, STREAM))
                    out.write(block)
                    size -= len(block)
    return written


def _sync(paths: list[Path]) -> None:
    """Flush ``paths`` and their folders to disk (``fsync``): the guarantee onnxz gives its
    outputs ("Durability" in the README), so that a decode can be timed with it."""
    for path in [*paths, *{p.parent for p in paths}]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _zipnn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from zipnn import ZipNN  # type: ignore[import-not-found]

    from bench_compression import ZIPNN_CONFIG

    return ZipNN(**ZIPNN_CONFIG)


def _zipnn_encode(src: Path, dst: Path) -> None:
    """Each model file compressed whole (zero-padded to 4 bytes, see bench_compression)."""
    with open(dst, "wb") as out:
        for path in model_files(src):
            raw = bytearray(path.read_bytes())
            raw += b"\0" * (-len(raw) % 4)
            packed = bytes(_zipnn().compress(raw))
            name = path.name.encode()
            out.write(len(name).to_bytes(2, "little") + name
                      + path.stat().st_size.to_bytes(8, "little")
                      + len(packed).to_bytes(8, "little") + packed)


def _zipnn_decode(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        while header := f.read(2):
            name = f.read(int.from_bytes(header, "little")).decode()
            size = int.from_bytes(f.read(8), "little")
            packed = f.read(int.from_bytes(f.read(8), "little"))
            raw = bytes(_zipnn().decompress(bytearray(packed)))[:size]
            target = dst if name.endswith(".onnx") else dst.parent / name
            target.write_bytes(raw)


def _int8_encode(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     use_external_data_format=len(model_files(src)) > 1)


def _int8_decode(src: Path, dst: Path) -> None:
    import onnx

    onnx.load(str(src))  # the int8 model is used as it is: decoding = reading it


def child(method: str, step: str, src: Path, dst: Path, repeat: int) -> dict[str, Any]:
    """Run one method's encode or decode; the best time of ``repeat`` runs."""

    def action():
        if method.startswith("onnxz_"):
            import onnxz

            _, mode, workers = method.split("_")
            if step == "encode":
                onnxz.save(src, dst, lossless=mode == "lossless", force=True,
                           workers=int(workers))
            else:
                onnxz.unpack(src, dst, force=True, workers=int(workers))
        elif method.startswith("zstd"):
            if step == "encode":
                _zstd_encode(19 if method == "zstd19" else 3, src, dst)
            elif method == "zstd3_durable":
                _sync(_zstd_decode(src, dst))
            else:
                _zstd_decode(src, dst)
        elif method == "zipnn":
            (_zipnn_encode if step == "encode" else _zipnn_decode)(src, dst)
        elif method == "ort_int8":
            (_int8_encode if step == "encode" else _int8_decode)(src, dst)
        else:
            raise ValueError(method)

    best, best_cpu = math.inf, math.inf
    for _ in range(repeat):
        start, cpu = time.perf_counter(), _cpu_seconds()
        action()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, _cpu_seconds() - cpu)
    return {"seconds": best, "cpu_seconds": best_cpu}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished worker processes."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


# --------------------------------------------------------------------------- driver

@dataclass
class Run:
    """One method on one model."""

    size: int | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    encode_cpu_s: float | None = None
    decode_cpu_s: float | None = None
    encode_rss: int | None = None
    decode_rss: int | None = None
    note: str = ""


@dataclass
class ModelRuns:
    name: str
    original: int
    weight_mb: float  # float32 MB of weights: 4 bytes x stored tensor elements / 1e6
    runs: dict[str, Run] = field(default_factory=dict)


def _run_child(method: str, step: str, src: Path, dst: Path, repeat: int
               ) -> tuple[float, float, int] | str:
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as report:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", method, step,
                str(src), str(dst), "--repeat", str(repeat), "--child-report", report.name]
        done = measure(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            return f"{step} failed (exit {done.returncode})"
        timing = json.loads(Path(report.name).read_text())
    return timing["seconds"], timing["cpu_seconds"], done.peak_rss


def decode_cpu_seconds(path: Path, repeat: int = 3) -> float:
    """Least CPU time of ``onnxz.load(path, workers=1)`` over ``repeat`` runs: decoding on
    one core, in this process."""
    import onnxz

    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        onnxz.load(path, workers=1)
        best = min(best, time.process_time() - start)
    return best


def weight_elements(src: Path) -> int:
    """Elements of every tensor payload onnxz would store (read from the graph only)."""
    from onnxz.modelio import open_model

    return sum(t.count for t in open_model(src).tensors if t.nbytes >= 128)


def bench_model(name: str, src: Path, work: Path, repeat: int, skip: set[str],
                zipnn_ok: str | None) -> ModelRuns:
    files = model_files(src)
    original = sum(f.stat().st_size for f in files)
    reps = repeat if original < REPEAT_BELOW else 1
    result = ModelRuns(name, original, 4 * weight_elements(src) / 1e6)
    for method in METHODS:
        run = result.runs[method] = Run()
        if method in skip:
            run.note = "skipped"
            continue
        if method == "zipnn" and zipnn_ok:
            run.note = zipnn_ok
            continue
        _log(f"{name}: {LABELS[method]}")
        folder = work / method
        folder.mkdir()
        encoded = folder / "encoded.bin"
        got = _run_child(method, "encode", src, encoded, reps)
        if isinstance(got, str):
            run.note = got
            shutil.rmtree(folder)
            continue
        run.encode_s, run.encode_cpu_s, run.encode_rss = got
        run.size = sum(p.stat().st_size for p in folder.iterdir())
        restored = folder / "restored" / "model.onnx"
        restored.parent.mkdir()
        got = _run_child(method, "decode", encoded, restored, reps)
        if isinstance(got, str):
            run.note = got
            run.decode_s = None
        else:
            run.decode_s, run.decode_cpu_s, run.decode_rss = got
            if method.startswith("onnxz_lossless") or method.startswith("zstd") or (
                    method == "zipnn"):
                _check_exact(src, restored, method)
        shutil.rmtree(folder)
    return result


def _check_exact(src: Path, restored: Path, method: str) -> None:
    """Lossless methods must give back the same weights (zstd/ZipNN the same files)."""
    if method.startswith("onnxz"):
        from onnxz.modelio import open_model

        original, back = open_model(src), open_model(restored)
        if [t.slot.tensor.name for t in original.tensors] != [
                t.slot.tensor.name for t in back.tensors]:
            raise RuntimeError(f"{method}: not the same tensors")
        for a, b in zip(original.tensors, back.tensors, strict=True):  # one at a time
            if a.payload().read().tobytes() != b.payload().read().tobytes():
                raise RuntimeError(f"{method}: {a.slot.tensor.name} not restored bit-exactly")
    elif restored.read_bytes() != src.read_bytes():
        raise RuntimeError(f"{method}: the .onnx was not restored exactly")


def _mbps(mb: float, seconds: float | None) -> str:
    if not seconds:
        return "n/a"
    rate = mb / seconds
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def table(results: list[ModelRuns], markdown: bool) -> str:
    header = ["model", "method", "size (×)", "encode MB/s", "decode MB/s", "decode ÷ zstd -3",
              "÷ zstd -3 durable", "decode MB/CPU-s", "2 workers ÷ 1 (enc / dec)",
              "enc peak RSS MB", "dec peak RSS MB"]
    rows = []
    for r in results:
        for method in METHODS:
            run = r.runs[method]
            if run.size is None:
                rows.append([r.name, LABELS[method], run.note or "n/a", *[""] * 8])
                continue
            rows.append([
                r.name, LABELS[method], f"{run.size:,} ({r.original / run.size:.2f}×)",
                _mbps(r.weight_mb, run.encode_s),
                _mbps(r.weight_mb, run.decode_s) if run.decode_s else run.note or "n/a",
                _decode_ratio(r, "zstd3", run), _decode_ratio(r, "zstd3_durable", run),
                _mbps(r.weight_mb, run.decode_cpu_s), _speedup(r, method),
                f"{run.encode_rss / 2**20:.0f}" if run.encode_rss else "n/a",
                f"{run.decode_rss / 2**20:.0f}" if run.decode_rss else "n/a",
            ])
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join([":---", ":---", *["---:"] * (len(header) - 2)]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                     for row in [header, *rows])


def _decode_ratio(runs: ModelRuns, base: str, run: Run) -> str:
    """``run``'s decode speed over method ``base``'s (wall clock)."""
    base_s = runs.runs[base].decode_s
    return f"{base_s / run.decode_s:.3f}×" if base_s and run.decode_s else "n/a"


def _speedup(runs: ModelRuns, method: str) -> str:
    """For a 2-worker method, its wall-clock encode and decode speed over the 1-worker
    method's (blank for other methods)."""
    if not method.endswith("_2"):
        return ""
    one, two = runs.runs[method[:-1] + "1"], runs.runs[method]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a and b else "n/a"
    return f"{ratio(one.encode_s, two.encode_s)} / {ratio(one.decode_s, two.decode_s)}"


def _zipnn_unavailable() -> str | None:
    try:
        _zipnn()
    except Exception as exc:
        return f"n/a: zipnn not importable ({type(exc).__name__})"
    return None


def _log(msg: str) -> None:
    print(f"bench_speed: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="corpus models (default: all)")
    parser.add_argument("--large", action="store_true",
                        help="also the generated ≥ 3 GB model (made once in --large-dir)")
    parser.add_argument("--large-dir", type=Path,
                        default=Path.home() / ".cache" / "onnxz" / "large")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS, metavar="METHOD")
    parser.add_argument("--skip-large", nargs="*", default=["zstd19"], choices=METHODS,
                        metavar="METHOD",
                        help="methods left out on the large model (default: zstd19, which "
                             "takes about half an hour on it)")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "STEP", "SRC", "DST"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        method, step, src, dst = args.child
        result = child(method, step, Path(src), Path(dst), args.repeat)
        args.child_report.write_text(json.dumps(result))
        return 0

    try:
        paths = fetch_all(args.names or None)
    except FetchError as exc:
        print(f"bench_speed: error: {exc}", file=sys.stderr)
        return 1
    models = [(m.name, paths[m.name], set(args.skip)) for m in CORPUS if m.name in paths]
    if args.large:
        import make_large_model

        large = args.large_dir / "large.onnx"
        if not large.exists():
            args.large_dir.mkdir(parents=True, exist_ok=True)
            _log(f"generating {large} (seeded, {LARGE_SHAPE})")
            make_large_model.generate(large, make_large_model.Shape(**LARGE_SHAPE), seed=0)
        models.append(("large (generated)", large, set(args.skip) | set(args.skip_large)))
    zipnn_ok = _zipnn_unavailable()
    results = []
    with tempfile.TemporaryDirectory(prefix="onnxz-bench-speed-") as tmp:
        for name, src, skip in models:
            work = Path(tmp) / name.split()[0]
            work.mkdir()
            results.append(bench_model(name, src, work, args.repeat, skip, zipnn_ok))
    print("Encode and decode speed (MB/s of float32 weights), size and peak memory:\n")
    print(table(results, args.markdown))
    print("\nDecode = encoded file back to model files on disk (onnxruntime int8: reading the "
          "int8 model, which needs no decoding); MB/s count 4 bytes per stored tensor element "
          "for every method; 'durable' flushes the outputs to disk (fsync of the files and "
          "their folder), as onnxz does before it gives the output its name. MB/CPU-s divides "
          "by the CPU time of the process and its workers "
          "(user + system): the speed per core, little affected by other load. Peak RSS is "
          "the largest sum over the process and its workers, sampled every 10 ms, imports "
          "included. Small models (< 16 MB of tensors) are coded by onnxz in one process "
          "whatever --workers says. On a shared machine (Linux autogroups give each session "
          "a share of the CPU however many processes it runs) 2 workers cannot show their "
          "speedup in wall time: compare within one run, and MB/CPU-s.")
    if args.json:
        args.json.write_text(json.dumps(
            {"models": [asdict(r) for r in results], "labels": LABELS}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
