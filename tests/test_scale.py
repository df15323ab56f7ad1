"""Scale: external data in and out, workers, random access, sessions past 2 GiB, progress.

The models come from tools/make_large_model.py (transformer-like, weights in external data)
at small sizes; memory is measured in a subprocess (peak RSS), never time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import container_edit
import make_large_model
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from models import constants_and_if, mixed_dtypes, mlp

import onnxz
import onnxz.api
import onnxz.parallel
import onnxz.reader
from onnxz.container import ContainerReader
from onnxz.parallel import BLOCK_MIN_BYTES, SharedBlocks
from onnxz.progress import ProgressListener, ProgressUpdate, TerminalProgress

ROOT = Path(__file__).resolve().parent.parent
SMALL = make_large_model.Shape(hidden=64, ffn=128, layers=2, vocab=300)


@pytest.fixture(scope="module")
def ext_model(tmp_path_factory) -> Path:
    """A transformer-like model whose weights are in ``m.onnx.data``."""
    folder = tmp_path_factory.mktemp("ext")
    return make_large_model.generate(folder / "m.onnx", SMALL, seed=3)


def run_model(model: str | bytes | ort.InferenceSession, seq: int = 7) -> np.ndarray:
    session = model if isinstance(model, ort.InferenceSession) else ort.InferenceSession(
        model, providers=["CPUExecutionProvider"])
    ids = (np.arange(seq, dtype=np.int64) * 37 % SMALL.vocab).reshape(1, seq)
    return session.run(None, {"input_ids": ids})[0]


def external_payloads(model_path: Path) -> dict[str, bytes]:
    model = onnx.load(str(model_path))  # loads the external data too
    return {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


def test_external_data_model_packs_and_unpacks_bit_exactly(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    info = onnxz.save(ext_model, packed, lossless=True)
    data = ext_model.with_name("m.onnx.data")
    assert info.source_bytes == ext_model.stat().st_size + data.stat().st_size
    out = onnxz.unpack(packed, tmp_path / "u.onnx", external_data=True)
    assert (tmp_path / "u.onnx.data").stat().st_size > 0.9 * data.stat().st_size
    assert external_payloads(out) == external_payloads(ext_model)
    assert np.array_equal(run_model(str(out)), run_model(str(ext_model)))
    assert ext_model.stat().st_size < 20_000  # the input was not rewritten with its data


def test_unpack_names_the_external_data_file(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed)
    onnxz.unpack(packed, tmp_path / "u.onnx", external_data_file="weights.bin")
    locations = {e.value for t in onnx.load(str(tmp_path / "u.onnx"), load_external_data=False)
                 .graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"weights.bin"}
    with pytest.raises(onnxz.OutputPathError, match="output's folder"):
        onnxz.unpack(packed, tmp_path / "v.onnx", external_data_file=tmp_path.parent / "w.bin")


def test_unpack_goes_external_automatically_past_the_protobuf_limit(ext_model, tmp_path,
                                                                     monkeypatch):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed, lossless=True)
    onnxz.unpack(packed, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(onnxz.api, "PROTOBUF_LIMIT", 100_000)
    onnxz.unpack(packed, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    assert np.array_equal(run_model(str(tmp_path / "big.onnx")), run_model(str(ext_model)))


def test_forcing_one_protobuf_past_the_limit_is_a_typed_error(ext_model, tmp_path, monkeypatch):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed)

    monkeypatch.setattr(onnxz.api, "PROTOBUF_LIMIT", 100_000)
    with pytest.raises(onnxz.LimitExceededError, match="2 GiB limit"):
        onnxz.unpack(packed, tmp_path / "u.onnx", external_data=False)
    assert not (tmp_path / "u.onnx").exists()


@pytest.mark.parametrize("location, message", [
    ("../elsewhere.bin", "outside the model's folder"),
    ("m.onnx.data\0junk", "holds a NUL byte"),  # os.stat's ValueError before
])
def test_external_data_outside_the_model_folder_is_refused(ext_model, tmp_path, location,
                                                            message):
    model = onnx.load(str(ext_model), load_external_data=False)
    for entry in model.graph.initializer[1].external_data:
        if entry.key == "location":
            entry.value = location
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(onnxz.InvalidModelError, match=message):
        onnxz.save(bad, tmp_path / "bad.onnxz")


def test_external_data_file_too_short_is_an_invalid_model(ext_model, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(ext_model.read_bytes())
    data = ext_model.with_name("m.onnx.data").read_bytes()
    (folder / "m.onnx.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(onnxz.InvalidModelError, match="needs bytes"):
        onnxz.save(folder / "m.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()


@pytest.fixture
def parallel_always(monkeypatch):
    """Start workers however little there is to do (the thresholds are for speed only)."""
    monkeypatch.setattr(onnxz.api, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(onnxz.reader, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(onnxz.reader, "TASK_ELEMENTS", 5000)


@pytest.mark.parametrize("lossless", [False, True])
def test_two_workers_write_and_read_exactly_what_one_does(ext_model, tmp_path, lossless,
                                                          parallel_always):
    options = onnxz.PackOptions(chunk_elements=4096)
    one, two = tmp_path / "one.onnxz", tmp_path / "two.onnxz"
    onnxz.save(ext_model, one, lossless=lossless, options=options, workers=1)
    onnxz.save(ext_model, two, lossless=lossless, options=options, workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert onnxz.load(one, workers=1) == onnxz.load(one, workers=2)


def test_a_corrupt_chunk_is_reported_from_a_worker(ext_model, tmp_path, parallel_always):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed, lossless=True)
    with ContainerReader(packed) as reader:
        entry = max(reader.index.tensors, key=lambda e: e.coded_bytes)
    data = bytearray(packed.read_bytes())
    data[entry.chunks[0].offset + 5] ^= 0xFF
    packed.write_bytes(bytes(data))
    with pytest.raises(onnxz.CorruptDataError, match=entry.name):
        onnxz.load(packed, workers=2)


@pytest.mark.parametrize("build", [mixed_dtypes, constants_and_if])
def test_workers_decode_every_kind_of_tensor_as_one_does(tmp_path, build, parallel_always):
    """Tasks that mix element widths, empty and one-element tensors, subgraph tensors."""
    onnxz.save(build(), tmp_path / "m.onnxz", lossless=True,
               options=onnxz.PackOptions(inline_max_bytes=128))
    assert onnxz.load(tmp_path / "m.onnxz", workers=2) == onnxz.load(tmp_path / "m.onnxz",
                                                                     workers=1)


def test_spawned_workers_open_the_file_again_and_decode_the_same(chunked, monkeypatch,
                                                                parallel_always):
    """Where workers are spawned (not Linux), they inherit no descriptor: they open the file
    by its path, checked to be the one the reader opened."""
    expected = onnxz.load(chunked, workers=1)
    monkeypatch.setattr(onnxz.parallel, "_context",
                        lambda: multiprocessing.get_context("spawn"))
    assert onnxz.load(chunked, workers=2) == expected


def our_blocks() -> set[str]:
    """This process's shared-memory blocks in /dev/shm (SharedBlocks names them
    ``onnxz-<pid>-...``; other processes' files there are not ours to judge)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"onnxz-{os.getpid()}-")}


needs_dev_shm = pytest.mark.skipif(not Path("/dev/shm").is_dir(),
                                   reason="shared memory is not in /dev/shm here")


@pytest.fixture
def chunked(ext_model, tmp_path) -> Path:
    """The lossy ext_model in chunks of 4096 elements: its large tensors span several tasks
    (with parallel_always)."""
    packed = tmp_path / "chunked.onnxz"
    onnxz.save(ext_model, packed, options=onnxz.PackOptions(chunk_elements=4096))
    return packed


def _largest_entry(packed: Path) -> tuple[int, object]:
    with ContainerReader(packed) as reader:
        return max(enumerate(reader.index.tensors), key=lambda e: e[1].coded_bytes)


@needs_dev_shm
def test_parallel_decode_uses_shared_blocks_and_unlinks_them(chunked, parallel_always):
    assert our_blocks() == set()
    seen = set()
    with onnxz.open(chunked, workers=2) as reader:
        for _ in reader.decode():
            seen |= our_blocks()
    assert seen and len(seen) <= 4  # at most the tasks in flight: two per worker
    assert our_blocks() == set()
    assert multiprocessing.active_children() == []


def _damaged(packed: Path, damage: str) -> None:
    index, entry = _largest_entry(packed)
    data = packed.read_bytes()
    chunk = entry.chunks[len(entry.chunks) // 2]
    stored = bytearray(data[chunk.offset : chunk.offset + chunk.length])
    if damage == "chunk checksum":  # the chunk's CRC no longer matches
        stored[len(stored) // 2] ^= 0xFF
        packed.write_bytes(data[:chunk.offset] + bytes(stored) + data[chunk.offset
                                                                       + chunk.length:])
    else:  # a damaged stream whose chunk CRC was fixed up: the decoder meets it
        stored[-chunk.sizes[-1]:] = bytes(chunk.sizes[-1])
        packed.write_bytes(container_edit.with_chunk_bytes(
            data, index, len(entry.chunks) // 2, bytes(stored)))


@needs_dev_shm
@pytest.mark.parametrize("damage", ["chunk checksum", "stream"])
def test_a_damaged_chunk_fails_in_a_worker_as_in_this_process(chunked, damage,
                                                               parallel_always):
    """The same typed error and one-line message as one worker gives; no shared memory or
    worker is left behind."""
    _damaged(chunked, damage)
    errors = []
    for workers in (1, 2):
        with pytest.raises(onnxz.OnnxzError) as caught:
            onnxz.load(chunked, workers=workers)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] in (onnxz.CorruptDataError, onnxz.FormatError)
    assert "\n" not in errors[0][1] and errors[0][1].startswith("tensor ")
    assert our_blocks() == set()
    assert multiprocessing.active_children() == []


@needs_dev_shm
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_parallel_decode_leaves_no_shared_memory(chunked, tmp_path, error,
                                                                parallel_always):
    def progress(done, total, name):
        if done == 3:
            assert our_blocks()  # blocks in use now...
            raise error("stop")

    with pytest.raises(error):
        onnxz.unpack(chunked, tmp_path / "u.onnx", workers=2, progress=progress)
    assert our_blocks() == set()  # ...and none afterwards
    assert not (tmp_path / "u.onnx").exists()
    assert multiprocessing.active_children() == []
    with onnxz.open(chunked, workers=2) as reader:  # the caller stops reading: the same
        decoded = reader.decode()
        next(decoded)
        decoded.close()
    assert our_blocks() == set()
    assert multiprocessing.active_children() == []


@needs_dev_shm
def test_shared_blocks_are_reused_grown_and_unlinked():
    with SharedBlocks() as blocks:
        a = blocks.take(10)
        assert a.size >= BLOCK_MIN_BYTES and our_blocks() == {a.name}
        blocks.give(a)
        assert blocks.take(BLOCK_MIN_BYTES) is a  # reused
        blocks.give(a)
        b = blocks.take(3 * BLOCK_MIN_BYTES)  # too small: replaced by one of 4 MiB
        assert b.size >= 4 * BLOCK_MIN_BYTES and our_blocks() == {b.name}
        c = blocks.take(1)  # b is in use
        assert our_blocks() == {b.name, c.name}
    assert our_blocks() == set()


@needs_dev_shm
def test_a_full_dev_shm_is_an_error_before_any_worker_writes(chunked, monkeypatch,
                                                             parallel_always):
    """A container's small /dev/shm: a typed error, not a worker killed by SIGBUS."""
    real = os.statvfs

    def small(path):
        got = real(path)
        return os.statvfs_result((*got[:4], 1, *got[5:])) if path == "/dev/shm" else got

    monkeypatch.setattr(os, "statvfs", small)
    with pytest.raises(onnxz.OutOfMemoryError, match=r"/dev/shm has \d+ free"):
        onnxz.load(chunked, workers=2)
    assert our_blocks() == set()
    assert multiprocessing.active_children() == []


def test_workers_must_be_a_positive_whole_number(ext_model, tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            onnxz.save(ext_model, tmp_path / "x.onnxz", workers=bad)


def test_reader_lists_tensors_and_decodes_one(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed, lossless=True)
    original = external_payloads(ext_model)
    with onnxz.open(packed) as reader:
        names = [t.name for t in reader.tensors]
        assert set(names) <= set(original) and "layers.1.up.weight" in names
        info = next(t for t in reader.tensors if t.name == "layers.1.up.weight")
        assert (info.shape, info.dtype) == ((SMALL.hidden, SMALL.ffn), "float32")
        w = reader.tensor("layers.1.up.weight")
        assert w.shape == (SMALL.hidden, SMALL.ffn)
        assert w.tobytes() == original["layers.1.up.weight"]
        with pytest.raises(onnxz.TensorNotFoundError, match="no stored tensor"):
            reader.tensor("nope")


def test_reader_touches_only_the_chunks_of_the_tensor_asked_for(ext_model, tmp_path):
    """Corrupt every other tensor's chunks: the one asked for still decodes."""
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed)
    with ContainerReader(packed) as reader:
        entries = reader.index.tensors
    keep = "layers.0.v.weight"
    expected = onnxz.open(packed).tensor(keep)
    data = bytearray(packed.read_bytes())
    for entry in entries:
        if entry.name != keep:
            for chunk in entry.chunks:
                data[chunk.offset] ^= 0xFF
    packed.write_bytes(bytes(data))
    with onnxz.open(packed) as reader:
        assert np.array_equal(reader.tensor(keep), expected)
        with pytest.raises(onnxz.CorruptDataError, match="checksum"):
            reader.tensor("layers.0.q.weight")
    with pytest.raises(onnxz.CorruptDataError):
        onnxz.load(packed)


def test_reader_on_a_file_truncated_while_open_raises_corrupt_data(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed)
    with onnxz.open(packed) as reader:
        with open(packed, "r+b") as f:
            f.truncate(4096)
        with pytest.raises(onnxz.CorruptDataError, match="truncated"):
            reader.tensor("layers.1.down.weight")


def test_inference_session_passes_initializers_as_ortvalues(ext_model, tmp_path, monkeypatch):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed, lossless=True)
    serialized = []
    real = onnxz.api._serialized
    monkeypatch.setattr(onnxz.api, "_serialized",
                        lambda m: serialized.append(real(m)) or serialized[-1])
    session = onnxz.inference_session(packed)
    assert len(serialized[0]) < 50_000  # the weights did not go through the protobuf
    assert np.array_equal(run_model(session), run_model(str(ext_model)))


@pytest.mark.parametrize("build", [mixed_dtypes, constants_and_if])
def test_inference_session_matches_onnxruntime_on_every_kind_of_tensor(tmp_path, build):
    """Initializers of every numpy-readable type go as OrtValues; bfloat16, Constant-node,
    subgraph and small tensors stay in the graph; the outputs are the original's."""
    model = build()
    onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    session = onnxz.inference_session(tmp_path / "m.onnxz")
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones([d if isinstance(d, int) else 2 for d in i.shape],
                             dtype=np.bool_ if i.type == "tensor(bool)" else np.float32)
             for i in reference.get_inputs()}
    names = [o.name for o in reference.get_outputs() if "bfloat16" not in o.type]
    for a, b in zip(session.run(names, feeds), reference.run(names, feeds), strict=True):
        assert np.array_equal(a, b)


def test_an_initializer_no_node_reads_stays_in_the_model_for_onnxruntime(tmp_path):
    """onnxruntime drops an initializer that no node reads before it takes the OrtValues,
    then refuses the OrtValue for it (a torch export's leftover constant, in silero-vad's
    op18 model): the session and verify must still load the file."""
    model = mlp()
    unused = np.arange(1024, dtype=np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(unused, "unused"))
    onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    x = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    session = onnxz.inference_session(tmp_path / "m.onnxz")
    assert np.array_equal(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])
    assert onnxz.verify(model, tmp_path / "m.onnxz").passed
    with onnxz.open(tmp_path / "m.onnxz") as reader:
        assert np.array_equal(reader.tensor("unused"), unused)


class Recorder(ProgressListener):
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def update(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def test_progress_reports_tensors_and_bytes(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    pack, unpack = Recorder(), Recorder()
    onnxz.save(ext_model, packed, progress=pack, lossless=True)  # no rate-control stages
    onnxz.unpack(packed, tmp_path / "u.onnx", progress=unpack)
    for updates in (pack.updates, unpack.updates):
        last = updates[-1]
        assert last.tensors_done == last.tensors_total == len(updates)
        assert last.bytes_done == last.bytes_total > 0
        assert [u.bytes_done for u in updates] == sorted(u.bytes_done for u in updates)
    plain = []
    onnxz.save(ext_model, packed, force=True, progress=lambda *a: plain.append(a),
               lossless=True)
    assert plain[-1][:2] == (len(plain), len(plain))


def test_terminal_progress_line_shows_rate_and_time_left():
    class Stream:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    times = iter([0.0, 10.0, 20.0])
    stream = Stream()
    bar = TerminalProgress(stream, "packing", clock=lambda: next(times))
    bar.update(ProgressUpdate(1, 4, 100 << 20, 400 << 20, "a"))
    bar.update(ProgressUpdate(4, 4, 400 << 20, 400 << 20, "d"))
    bar.close()
    assert "packing  1/4 tensors  100.0 MB/400.0 MB  10.0 MB/s  ETA 0:30" in stream.text
    assert "4/4 tensors" in stream.text and stream.text.endswith("\n")


def test_cli_unpack_external_data_and_workers(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    cli = [sys.executable, "-m", "onnxz"]
    subprocess.run([*cli, "pack", str(ext_model), "-o", str(packed), "--workers", "2"],
                   check=True, capture_output=True)
    done = subprocess.run([*cli, "unpack", str(packed), "-o", str(tmp_path / "u.onnx"),
                           "--external-data", "--workers", "1"],
                          check=True, capture_output=True, text=True)
    assert "u.onnx.data" in done.stdout and done.stderr == ""  # no progress line off a tty
    bad = subprocess.run([*cli, "pack", str(ext_model), "--workers", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--workers" in bad.stderr


MEMORY_SCRIPT = """
import json, resource, sys
import onnxz
workers = int(sys.argv[1])
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] == "pack":
    onnxz.save(sys.argv[3], sys.argv[4], lossless=sys.argv[5] == "lossless", workers=workers)
else:
    onnxz.unpack(sys.argv[3], sys.argv[4], workers=workers,
                 external_data=sys.argv[2] == "unpack")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"grew": (peak - baseline) * 1024, "worker_grew": (worker - baseline) * 1024}))
"""


def _memory(*args: str, workers: int = 1) -> dict[str, int]:
    """Peak RSS growth beyond the imports, in bytes, of a pack or unpack in a new process
    (``grew``) and of its largest worker, which starts as a fork of it (``worker_grew``)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(workers), *args],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def _growth(*args: str) -> int:
    return _memory(*args)["grew"]


@pytest.fixture(scope="module")
def model_400mb(tmp_path_factory):
    """A 400 MB external-data model whose largest tensor is 16 MB."""
    shape = make_large_model.Shape(hidden=1024, ffn=4096, layers=8, vocab=4096)
    folder = tmp_path_factory.mktemp("400mb")
    return make_large_model.generate(folder / "m.onnx", shape, seed=1), shape


@pytest.mark.slow
def test_lossy_pack_and_unpack_hold_about_one_tensor_not_the_model(model_400mb, tmp_path):
    """Bounded memory: packing and unpacking (to external data, or to one .onnx: the
    payloads go from the decoder to the file) grow by less than half the
    model (peak RSS beyond the imports; the codec's working memory and zstd's contexts are a
    few times one tensor). The default packs it by the streamed data-free rule: it has more
    weights than rate control holds in memory by default."""
    from onnxz.policy import DEFAULT_MAX_WEIGHT_BYTES

    model, shape = model_400mb
    assert shape.weight_bytes > 24 * 4 * shape.hidden * shape.ffn  # the largest tensor
    assert shape.weight_bytes > DEFAULT_MAX_WEIGHT_BYTES
    packed = tmp_path / "lossy.onnxz"
    grew = _growth("pack", str(model), str(packed), "lossy")
    assert grew < shape.weight_bytes / 2, ("pack", grew)
    grew = _growth("unpack", str(packed), str(tmp_path / "unpacked.onnx"))
    assert grew < shape.weight_bytes / 2, ("unpack", grew)
    grew = _growth("unpack-inline", str(packed), str(tmp_path / "inline.onnx"))
    assert grew < shape.weight_bytes / 2, ("unpack to one .onnx", grew)


@pytest.mark.slow
def test_a_parallel_unpack_holds_about_one_tensor_per_process_not_the_model(model_400mb,
                                                                            tmp_path):
    """Two workers: this process holds the tensor handed out, the one being filled and the
    shared blocks of the tasks in flight; a worker one task's chunks and block."""
    model, shape = model_400mb
    packed = tmp_path / "lossy.onnxz"
    onnxz.save(model, packed, step_rel=1 / 64, workers=2)
    grown = _memory("unpack", str(packed), str(tmp_path / "unpacked.onnx"), workers=2)
    assert max(grown.values()) < shape.weight_bytes / 4, grown


@pytest.mark.slow
def test_lossless_pack_holds_about_one_tensor_not_the_model(model_400mb, tmp_path):
    """A few times the largest tensor, not the model: the tensor, its planes (one or two
    bytes a symbol, split a batch at a time) and the coded candidates of one plane."""
    model, shape = model_400mb
    largest = 4 * shape.hidden * shape.ffn  # float32 bytes of an FFN matrix
    grew = _growth("pack", str(model), str(tmp_path / "lossless.onnxz"), "lossless")
    assert grew < 6 * largest, grew


@pytest.mark.slow
def test_a_large_constant_tensor_packs_in_a_few_times_its_size(tmp_path):
    """Issue 11 item 17: an all-zero 256 MiB MatMul weight (the lossy codec declines it, the
    lossless one codes it) used to need ~20x its size; the default does not run a model in
    which it has nothing to choose."""
    from onnx import TensorProto, helper

    n = 64 << 20
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[n // 1024, 1024])
    weights.data_location = TensorProto.EXTERNAL
    (tmp_path / "w.bin").write_bytes(b"")
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(4 * n)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(4 * n))):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "zeros",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n // 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], [weights])
    model = tmp_path / "zeros.onnx"
    model.write_bytes(helper.make_model(graph).SerializeToString())
    grew = _growth("pack", str(model), str(tmp_path / "z.onnxz"), "lossy")
    assert grew < 6 * 4 * n, grew
    assert (tmp_path / "z.onnxz").stat().st_size < 100_000


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_parallel_pack_leaves_nothing_and_stops_its_workers(
        ext_model, tmp_path, parallel_always, error):
    import multiprocessing

    def progress(done, total, name):
        if done == 2:
            raise error("stop")

    with pytest.raises(error):
        onnxz.save(ext_model, tmp_path / "m.onnxz", workers=2, progress=progress)
    assert list(tmp_path.iterdir()) == []
    assert multiprocessing.active_children() == []


def test_verify_an_external_data_model(ext_model, tmp_path):
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed, lossless=True)
    report = onnxz.verify(ext_model, packed, onnxz.GeneratedInputs(samples=2))
    assert report.passed and report.error is None
    assert all(o.snr_db == float("inf") for o in report.outputs)


def test_info_and_the_tensor_list_read_no_chunk(ext_model, tmp_path, monkeypatch):
    """`onnxz info` stays fast on a multi-GB file: it reads the index, no chunk."""
    packed = tmp_path / "m.onnxz"
    onnxz.save(ext_model, packed)

    def no_chunks(*args):
        raise AssertionError("a chunk was read")

    monkeypatch.setattr(ContainerReader, "chunk_bytes", no_chunks)
    assert len(onnxz.info(packed).tensors) == len(onnxz.open(packed).tensors) > 10


def test_every_valid_vector_decodes_the_same_with_workers(parallel_always):
    """Chunks of 0 elements, tables, escapes: split across workers, the same values."""
    manifest = json.loads((ROOT / "tests" / "vectors" / "manifest.json").read_text())
    valid = [v["file"] for v in manifest["vectors"].values() if "error" not in v]
    assert len(valid) > 20
    for name in valid:
        path = ROOT / "tests" / "vectors" / name
        assert onnxz.load(path, workers=2) == onnxz.load(path, workers=1), name
