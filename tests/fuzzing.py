"""Mutations of small valid onnxz files, and the oracle every mutated file must satisfy.

Shared by ``tests/test_fuzz.py`` (bounded, in CI) and ``tools/fuzz.py`` (long runs). A case
is a seed vector damaged one way:

- ``raw``: bytes flipped, truncated, inserted, deleted or overwritten anywhere;
- ``index``: one index field changed (value, type, removal, addition, copy of another
  field) or the index's msgpack bytes damaged, then re-compressed and re-checksummed;
- ``stream``: a chunk's bytes damaged and its CRC fixed, so the codec sees the damage;
- ``graph``: the graph section's protobuf bytes damaged, then re-checksummed;
- ``envelope``: a header or footer field changed, CRCs fixed.

The oracle: onnxz raises only :class:`onnxz.OnnxzError` (its message naming the section),
within :data:`CASE_TIME_LIMIT`, leaves the file as it was, agrees with the independent
reference decoder on success or on the error class, ``onnxz.unpack`` gives the same class
or exactly the bytes of the model ``onnxz.load`` gives (its writer streams payloads to the
file in another order than the index's), and, unless the graph itself was changed, a file
that decodes gives exactly the seed's model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import container_edit
import reference_decoder
from hypothesis import strategies as st

import onnxz
from onnxz import interrupts

VECTORS = Path(__file__).resolve().parent / "vectors"
SEED_NAMES = (
    "spec_example_lossless", "spec_example_deadzone", "lossless_zstd", "deadzone_delta_0_3",
    "deadzone_chunked_escapes", "lossless_chunked", "lossless_float_planes",
    "deadzone_f16_bf16_f64", "paths_tensors_graphs", "subgraphs", "lossless_zstd_planes",
    "lossless_palette", "lossless_copy", "lossless_magnitude",
)
SECTION_NAMED = re.compile(r"^(not an onnxz file|header|footer|index|graph|tensor)")
CASE_TIME_LIMIT = 60  # seconds: far beyond any case (milliseconds); only a hang gets there

INTERESTING_INTS = (0, 1, 2, 3, 4, 7, 8, 16, 24, 25, 63, 64, 65, 127, 128, 255, 256, 65535,
                    65536, 65537, 2**24, 2**31, 2**32 - 1, 2**32, 2**53, 2**53 + 1, 2**63 - 1,
                    2**63, 2**64 - 1, -1, -2, -(2**31), -(2**53) - 1, -(2**63))
INTERESTING = (*INTERESTING_INTS, True, False, None, 0.0, -0.0, 0.5, 1.0, 1e-300, 1e308,
               float("inf"), float("nan"), "", "x", "lossless", "deadzone", "zstd", "planes",
               "ans", "packed", "constant", "magnitude", "midpoint", "float32", "float16",
               "bfloat16", "int8", "graph", "initializer", "node", "functions", b"", b"\x00",
               b"\xff" * 9, [], [0], {}, {"x": 1})


@dataclass(frozen=True)
class Seed:
    """A valid vector and what onnxz decodes it to."""

    name: str
    data: bytes
    model: bytes

    def __repr__(self) -> str:
        return f"Seed({self.name!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer
        printer.text(repr(self))

    @property
    def index(self) -> Any:
        return container_edit.read_index(self.data)


@dataclass(frozen=True)
class Case:
    """A mutated file: ``kind`` of mutation (a key of :data:`CASES`) of ``seed``."""

    seed: Seed
    kind: str
    data: bytes

    @property
    def same_graph(self) -> bool:
        """Whether the graph is the seed's (only ``graph`` cases rewrite it)."""
        return self.kind != "graph"

    def __repr__(self) -> str:
        return (f"Case(seed={self.seed.name!r}, kind={self.kind!r}, "
                f"data=bytes.fromhex({self.data.hex()!r}))")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def load_seeds() -> tuple[Seed, ...]:
    seeds = []
    for name in SEED_NAMES:
        path = VECTORS / f"{name}.onnxz"
        seeds.append(Seed(name, path.read_bytes(), onnxz.load(path).SerializeToString()))
    return tuple(seeds)


# --- the oracle ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """A decoder's result: ``kind`` ``ok`` (with the model) or the §10.2 error class."""

    kind: str
    model: bytes = b""
    message: str = ""


REFERENCE_LIMITS = onnxz.ReadLimits(min_output_size=1 << 30)
"""The reference decoder's limits (SPEC.md §10.1); onnxz's default follows the machine."""


def onnxz_outcome(path: Path) -> Outcome:
    """Decode with onnxz; anything but an OnnxzError propagates (a foreign exception)."""
    def decoded() -> bytes:
        onnxz.info(path, limits=REFERENCE_LIMITS)
        return onnxz.load(path, limits=REFERENCE_LIMITS).SerializeToString()
    return _outcome(decoded)


def unpack_outcome(path: Path) -> Outcome:
    """``onnxz.unpack`` to a file beside ``path`` (its own writer: payloads streamed to the
    file, a faulty file's tensors taken again in index order); the unpacked bytes as the
    model."""
    out = path.with_name(path.stem + ".unpacked.onnx")

    def unpacked() -> bytes:
        return onnxz.unpack(path, out, force=True, limits=REFERENCE_LIMITS).read_bytes()
    try:
        return _outcome(unpacked)
    finally:
        out.unlink(missing_ok=True)


def _outcome(decode: Callable[[], bytes]) -> Outcome:
    """``decode()``'s model, or the §10.2 class of the OnnxzError it raised."""
    try:
        return Outcome("ok", decode())
    except onnxz.LimitExceededError as exc:
        return Outcome("limit", message=str(exc))
    except onnxz.FormatError as exc:
        return Outcome("format", message=str(exc))
    except onnxz.CorruptDataError as exc:
        return Outcome("corrupt", message=str(exc))


def reference_outcome(data: bytes) -> Outcome:
    try:
        return Outcome("ok", reference_decoder.decode(data).model.SerializeToString())
    except reference_decoder.DecodeError as exc:
        return Outcome(exc.kind, message=str(exc))


class Hang(AssertionError):
    """A block ran past its time limit: a hang."""


WATCHDOG_GRACE = 0.5
"""Seconds after a time limit's alarm at which a run still in onnxruntime is ended."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`Hang` in this (main) thread if the block runs longer than ``seconds``.
    An onnxruntime run (through :func:`onnxz.interrupts.run`) holds the thread in C++,
    where the alarm's handler waits: a watchdog ends it :data:`WATCHDOG_GRACE` later, and
    the handler raises as the run returns (a model whose Loop never ends hung the pack
    fuzzer for an hour on case 92787)."""
    def expire(*_: object) -> None:
        raise Hang(f"ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    watchdog = threading.Timer(seconds + WATCHDOG_GRACE, interrupts.stop_runs)
    with interrupts.stopping_runs():
        signal.alarm(seconds)
        watchdog.start()
        try:
            yield
        finally:
            signal.alarm(0)
            watchdog.cancel()
            signal.signal(signal.SIGALRM, previous)


def check(case: Case, workdir: Path) -> None:
    """Assert the oracle for one mutated file (see the module docstring)."""
    path = workdir / "case.onnxz"
    path.write_bytes(case.data)
    with time_limit(CASE_TIME_LIMIT):
        mine = onnxz_outcome(path)
        unpacked = unpack_outcome(path)
        theirs = reference_outcome(case.data)
    assert path.read_bytes() == case.data, "reading modified the file"
    assert mine.kind == theirs.kind, (
        f"onnxz: {mine.kind} {mine.message!r}; reference: {theirs.kind} {theirs.message!r}")
    assert (unpacked.kind, unpacked.model) == (mine.kind, mine.model), (
        f"unpack: {unpacked.kind} {unpacked.message!r}; load: {mine.kind} {mine.message!r}")
    if mine.kind != "ok":
        assert SECTION_NAMED.match(mine.message), f"message names no section: {mine.message!r}"
        return
    assert mine.model == theirs.model, "onnxz and the reference decoded different models"
    if case.same_graph:
        assert mine.model == case.seed.model, "a damaged file decoded to a different model"


# --- mutations -------------------------------------------------------------------------------

def _positions(data: bytes) -> st.SearchStrategy[int]:
    return st.integers(0, len(data) - 1)


@st.composite
def damaged_bytes(draw: st.DrawFn, data: bytes, keep_length: bool = False) -> bytes:
    """``data`` with bits flipped, or (unless ``keep_length``) truncated, with bytes
    inserted or deleted; or a range overwritten."""
    ops = ["flip", "overwrite"] if keep_length else ["flip", "overwrite", "truncate",
                                                     "insert", "delete"]
    op = draw(st.sampled_from(ops))
    out = bytearray(data)
    if op == "flip":
        for pos, mask in draw(st.lists(st.tuples(_positions(data), st.integers(1, 255)),
                                       min_size=1, max_size=4)):
            out[pos] ^= mask
    elif op == "overwrite":
        pos = draw(_positions(data))
        new = draw(st.binary(min_size=1, max_size=min(16, len(data) - pos)))
        out[pos:pos + len(new)] = new
    elif op == "truncate":
        del out[draw(st.integers(0, len(data) - 1)):]
    elif op == "insert":
        pos = draw(st.integers(0, len(data)))
        out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    else:
        pos = draw(_positions(data))
        del out[pos:pos + draw(st.integers(1, 16))]
    return bytes(out)


def _locations(value: Any, where: tuple = ()) -> Iterator[tuple]:
    """Every place inside a msgpack value, as a tuple of keys/indices."""
    yield where
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _locations(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _locations(v, (*where, i))


def _get(value: Any, where: tuple) -> Any:
    for step in where:
        value = value[step]
    return value


@st.composite
def mutated_index(draw: st.DrawFn, fields: Any) -> Any:
    """``fields`` with one place changed."""
    places = list(_locations(fields))[1:]
    where = draw(st.sampled_from(places))
    parent, key = _get(fields, where[:-1]), where[-1]
    current = parent[key]
    op = draw(st.sampled_from(["replace", "nudge", "remove", "grow", "copy"]))
    if op == "replace":
        parent[key] = draw(st.sampled_from(INTERESTING))
    elif op == "nudge" and isinstance(current, int) and not isinstance(current, bool):
        parent[key] = current + draw(st.sampled_from((-64, -4, -1, 1, 4, 64, 2**32)))
    elif op == "remove":
        del parent[key]
    elif op == "grow" and isinstance(current, dict):
        current[draw(st.sampled_from(("x", "offset", "count", "mode")))] = draw(
            st.sampled_from(INTERESTING))
    elif op == "grow" and isinstance(current, list):
        current.append(draw(st.sampled_from(INTERESTING)))
    else:
        parent[key] = copy.deepcopy(_get(fields, draw(st.sampled_from(places))))
    return fields


@st.composite
def raw_cases(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Case:
    seed = draw(st.sampled_from(seeds))
    return Case(seed, "raw", draw(damaged_bytes(seed.data)))


@st.composite
def index_cases(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Case:
    seed = draw(st.sampled_from(seeds))
    if draw(st.integers(0, 4)) == 0:  # damage the msgpack bytes themselves
        raw = draw(damaged_bytes(container_edit.index_bytes(seed.data)))
        return Case(seed, "index", container_edit.with_index(seed.data, raw=raw))
    fields = draw(mutated_index(seed.index))
    return Case(seed, "index", container_edit.with_index(seed.data, fields))


@st.composite
def stream_cases(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Case:
    seed = draw(st.sampled_from(seeds))
    chunks = [(t, c, entry) for t, tensor in enumerate(seed.index["tensors"])
              for c, entry in enumerate(tensor["chunks"]) if sum(entry[1])]
    t, c, (offset, sizes, *_) = draw(st.sampled_from(chunks))
    stored = seed.data[offset:offset + sum(sizes)]
    damaged = draw(damaged_bytes(stored, keep_length=True))
    return Case(seed, "stream", container_edit.with_chunk_bytes(seed.data, t, c, damaged))


@st.composite
def graph_cases(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Case:
    seed = draw(st.sampled_from(seeds))
    raw = draw(damaged_bytes(container_edit.read_graph(seed.data)))
    return Case(seed, "graph", container_edit.with_graph(seed.data, raw))


@st.composite
def envelope_cases(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> Case:
    seed = draw(st.sampled_from(seeds))
    name = draw(st.sampled_from(("major", "minor", "index_offset", "index_length",
                                 "index_raw_length", "index_crc32")))
    value = draw(st.sampled_from([v for v in INTERESTING_INTS if v >= 0]))
    footer = container_edit.Footer.of(seed.data)
    if name in ("major", "minor"):
        v = dataclasses.replace(footer, **{name: value % 2**16})
        return Case(seed, "envelope", container_edit.with_version(seed.data, v.major, v.minor))
    bits = 32 if name == "index_crc32" else 64
    changed = dataclasses.replace(footer, **{name: value % 2**bits})
    return Case(seed, "envelope", container_edit.with_footer(seed.data, changed))


CASES = {
    "raw": raw_cases,
    "index": index_cases,
    "stream": stream_cases,
    "graph": graph_cases,
    "envelope": envelope_cases,
}
"""Case strategies by kind; each takes the seeds."""
