"""Mutations of small valid ONNX models, and the oracle every mutated model must satisfy.

Shared by ``tests/test_fuzz_pack.py`` (a fixed set of cases, in CI) and
``tools/fuzz_pack.py`` (long runs). A case is one of :data:`MODELS` changed by one to three
of :data:`MUTATIONS` (a tensor's dims, element type, payload, name, external data or
segment; a node's input; the opsets, outputs, attributes, initializers, input types, IR
version, sparse initializers), sometimes with its serialized bytes damaged or cut, then
given to one :data:`ACTIONS`: ``pack`` (the default, ``--lossless`` with one or two
workers, ``--step-rel``) or ``analyze``; a model that packs is unpacked and read by
``info``. Everything about a case follows from its number, so a failure is replayed by
number alone.

The oracle (:func:`check`): onnxz raises only :class:`onnxz.OnnxzError`, within
:data:`CASE_TIME_LIMIT`; a failed pack leaves no output; the model file is left as it was;
nothing reaches the process's stderr but Python's own warnings, with onnxruntime's log off
as the CLI turns it off (the CLI reports every error in one line).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import models
import numpy as np
import onnx
from fuzzing import time_limit
from onnx import AttributeProto, TensorProto, numpy_helper

import onnxz
from onnxz.analysis.analyze import analyze
from onnxz.verifier import turn_runtime_log_off
from onnxz.walker import iter_tensors

CASE_TIME_LIMIT = 60  # seconds: far beyond any case (these models pack in a second or two)

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": models.mlp,
    "constants_and_if": models.constants_and_if,
    "big_conv": lambda: models.big_conv(16),
    "mixed_dtypes": models.mixed_dtypes,
    "tiny_transformer": lambda: models.tiny_transformer(100, 32),
    "recurrent_cell": lambda: models.recurrent_cell(16),
    "classifier_heads": models.classifier_heads,
    "carried_weights_loop": models.carried_weights_loop,
    "qdq_mlp": lambda: models.qdq_mlp(32),
    "word_bag": models.word_bag,
}
"""Small models of ``tests/models.py`` that pack in a second: weights in initializers, in
Constant nodes and If branches, carried by a Loop, float16/bfloat16/int8, strings, QDQ."""


def _dims(t: TensorProto, rng: random.Random) -> None:
    value = rng.choice([-1, 0, 1, 3, 2**31, 2**62])
    index = rng.randrange(len(t.dims) + 1)
    if index < len(t.dims):
        t.dims[index] = value
    else:
        t.dims.append(value)


def _element_type(t: TensorProto, rng: random.Random) -> None:
    t.data_type = rng.choice([0, 3, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 23, 99])


def _payload(t: TensorProto, rng: random.Random) -> None:
    raw = bytes(t.raw_data)
    if raw and rng.random() < 0.7:
        t.raw_data = raw[: rng.randrange(len(raw))]
    elif rng.random() < 0.5:
        t.raw_data = raw + b"\0" * rng.randrange(1, 9)
    else:
        t.float_data.extend([1.0] * rng.randrange(1, 5))


def _name(t: TensorProto, rng: random.Random) -> None:
    t.name = rng.choice(["", "x", "w1", "y", "\u00fc" * 300, "\0", "a/b"])


def _external(t: TensorProto, rng: random.Random) -> None:
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for key, value in rng.choice([
            [("location", "../../etc/passwd")], [("location", "missing.bin")],
            [("location", "w.bin"), ("offset", "-5")], [("location", "w.bin"), ("offset", "x")],
            [("location", "w.bin"), ("length", "99999999")], [("location", "/etc/hostname")],
            [("location", "w.bin")], [("offset", "0")]]):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    if rng.random() < 0.5:
        t.ClearField("raw_data")


def _segment(t: TensorProto, rng: random.Random) -> None:
    t.segment.begin, t.segment.end = 0, rng.choice([0, 3, 2**40])


def _strings(t: TensorProto, rng: random.Random) -> None:
    t.data_type = TensorProto.STRING
    t.ClearField("raw_data")
    t.string_data.extend([b"a", b"\xff\xfe"][: rng.randrange(1, 3)])


TENSOR_MUTATIONS = {"dims": _dims, "element_type": _element_type, "payload": _payload,
                    "name": _name, "external": _external, "segment": _segment,
                    "strings": _strings}


def _node_input(m: onnx.ModelProto, rng: random.Random) -> None:
    node = rng.choice(m.graph.node) if m.graph.node else None
    if node is not None and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(
            ["missing", "", *node.output, *(o.name for o in m.graph.output)])


def _opsets(m: onnx.ModelProto, rng: random.Random) -> None:
    del m.opset_import[:]
    if rng.random() < 0.5:
        m.opset_import.add().version = rng.choice([1, 7, 99])


def _outputs(m: onnx.ModelProto, rng: random.Random) -> None:
    if rng.random() < 0.5:
        del m.graph.output[:]
    else:
        m.graph.output.add().name = rng.choice(["nowhere", *(i.name for i in m.graph.input)])


def _attribute(m: onnx.ModelProto, rng: random.Random) -> None:
    if not m.graph.node:
        return
    attr = rng.choice(m.graph.node).attribute.add()
    attr.name = "value"
    attr.type = rng.choice([AttributeProto.TENSOR, AttributeProto.TENSORS, AttributeProto.GRAPH])
    values = np.ones(rng.choice([1, 300, 2000]), np.float32)
    if attr.type == AttributeProto.TENSOR:
        attr.t.CopyFrom(numpy_helper.from_array(values))
    elif attr.type == AttributeProto.TENSORS:
        attr.tensors.add().CopyFrom(numpy_helper.from_array(values))


def _duplicate(m: onnx.ModelProto, rng: random.Random) -> None:
    if m.graph.initializer:
        m.graph.initializer.add().CopyFrom(rng.choice(m.graph.initializer))


def _input_type(m: onnx.ModelProto, rng: random.Random) -> None:
    if m.graph.input:
        rng.choice(m.graph.input).type.tensor_type.elem_type = rng.choice([0, 8, 16, 99])


def _ir_version(m: onnx.ModelProto, rng: random.Random) -> None:
    m.ir_version = rng.choice([0, 1, 3, 99])


def _sparse(m: onnx.ModelProto, rng: random.Random) -> None:
    sparse = m.graph.sparse_initializer.add()
    sparse.values.CopyFrom(numpy_helper.from_array(np.ones(3, np.float32), "sparse"))
    sparse.indices.CopyFrom(numpy_helper.from_array(np.array([0, 1, rng.choice([2, 99])]),
                                                    "sparse_indices"))
    sparse.dims.extend([10])


MODEL_MUTATIONS = {"node_input": _node_input, "opsets": _opsets, "outputs": _outputs,
                   "attribute": _attribute, "duplicate": _duplicate, "input_type": _input_type,
                   "ir_version": _ir_version, "sparse": _sparse}
MUTATIONS = (*TENSOR_MUTATIONS, *MODEL_MUTATIONS, "bytes", "cut")

ACTIONS = ("default", "lossless", "lossless_2_workers", "step_rel", "analyze")


@dataclass(frozen=True)
class Case:
    """Case ``number``: a model of :data:`MODELS`, its mutations, an action, all drawn
    from ``random.Random(number)``."""

    number: int
    model: str
    mutations: tuple[str, ...]
    action: str

    @classmethod
    def of(cls, number: int, actions: tuple[str, ...] = ACTIONS) -> Case:
        rng = random.Random(number)
        return cls(number, rng.choice(sorted(MODELS)),
                   tuple(rng.choice(MUTATIONS) for _ in range(rng.choice([1, 1, 2, 3]))),
                   rng.choice(actions))

    def model_bytes(self) -> bytes:
        """The mutated model, serialized (the same bytes for the same case)."""
        rng = random.Random(f"{self.number}:{self.mutations}")
        model = MODELS[self.model]()
        for mutation in self.mutations:
            if mutation in TENSOR_MUTATIONS and (found := [t for _, t in iter_tensors(model)]):
                TENSOR_MUTATIONS[mutation](rng.choice(found), rng)
            elif mutation in MODEL_MUTATIONS:
                MODEL_MUTATIONS[mutation](model, rng)
        data = bytearray(model.SerializeToString())
        if "cut" in self.mutations:
            data = data[: rng.randrange(len(data))]
        if "bytes" in self.mutations:
            for _ in range(rng.randrange(1, 6)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    def __str__(self) -> str:
        return f"case {self.number}: {self.model} + {', '.join(self.mutations)} -> {self.action}"


def check(case: Case, folder: Path) -> list[str]:
    """Run ``case`` in ``folder`` (emptied first) and return what broke the oracle (the
    module docstring): an empty list when nothing did."""
    for leftover in folder.iterdir():
        leftover.unlink()
    source = folder / "m.onnx"
    source.write_bytes(data := case.model_bytes())
    (folder / "w.bin").write_bytes(bytes(range(256)) * 64)  # an external data file to find
    packed = folder / "m.onnxz"
    problems: list[str] = []
    turn_runtime_log_off()  # as the CLI's pack and verify do
    with _stderr_of_process() as stderr, time_limit(CASE_TIME_LIMIT):
        done = _runs(problems, lambda: _act(case.action, source, packed))
        if done and packed.exists() and _runs(
                problems, lambda: onnxz.unpack(packed, folder / "back.onnx", workers=1)):
            _runs(problems, lambda: onnxz.info(packed))
    if not done and packed.exists():
        problems.append("a failed pack left its output")
    if list(folder.glob("*.tmp")):
        problems.append("a temporary file was left")
    if source.read_bytes() != data:
        problems.append("the model file was changed")
    noise = [line for line in stderr if line.strip() and not line.startswith(" ")
             and "Warning" not in line]
    if noise:
        problems.append(f"stderr: {noise[0][:200]}")
    return problems


def _act(action: str, source: Path, packed: Path) -> None:
    if action == "analyze":
        analyze(source)
    elif action == "default":
        onnxz.save(source, packed, workers=1)
    elif action == "step_rel":
        onnxz.save(source, packed, step_rel=0.25, workers=1)
    else:
        onnxz.save(source, packed, lossless=True, workers=2 if "2" in action else 1)


def _runs(problems: list[str], action: Callable[[], object]) -> bool:
    """Whether ``action`` ran; an exception other than an OnnxzError is a problem."""
    try:
        action()
    except onnxz.OnnxzError:
        return False
    except Exception as exc:  # the finding: anything else
        frames = traceback.extract_tb(exc.__traceback__)
        last = next((f for f in reversed(frames) if "/onnxz/" in f.filename), frames[-1])
        problems.append(f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}: "
                        f"{str(exc)[:200]}")
        return False
    return True


@contextlib.contextmanager
def _stderr_of_process() -> Iterator[list[str]]:
    """File descriptor 2 (where onnxruntime logs, not ``sys.stderr``) captured for the
    block; its lines are in the list given, once the block ends."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode(errors="replace").splitlines()


def digest(case: Case) -> str:
    """A short name for the case's model bytes (for saved failures)."""
    return hashlib.sha256(case.model_bytes()).hexdigest()[:12]
