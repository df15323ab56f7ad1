"""Conformance vectors: published files that onnxz and the independent reference decoder
must decode to the recorded tensors, forever (tests/vectors/manifest.json)."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import shutil
from pathlib import Path

import container_edit
import make_vectors
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import reference_decoder
import zstandard

import onnxz
from onnxz.walker import resolve

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())["vectors"]
VALID = sorted(n for n, v in MANIFEST.items() if "error" not in v)
INVALID = sorted(n for n, v in MANIFEST.items() if "error" in v)
RUNNABLE = sorted(n for n in VALID if "run" in MANIFEST[n])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def vector_bytes(name: str) -> bytes:
    return (VECTORS / MANIFEST[name]["file"]).read_bytes()


@functools.cache
def reference(name: str) -> reference_decoder.Decoded:
    return reference_decoder.decode(vector_bytes(name))


@functools.cache
def library(name: str) -> bytes:
    """The onnxz-decoded model, serialized (cached: several tests compare against it)."""
    return onnxz.load(VECTORS / MANIFEST[name]["file"]).SerializeToString()


def array(record: dict) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(record["hex"]), record["dtype"]).reshape(record["shape"])


def run(model: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, inputs), strict=True))


def test_manifest_lists_every_vector_file():
    assert sorted(p.name for p in VECTORS.glob("*.onnxz")) == sorted(
        v["file"] for v in MANIFEST.values())
    assert sum(v["bytes"] for v in MANIFEST.values()) < 125_000


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_published_vector_is_unchanged(name):
    assert sha256(vector_bytes(name)) == MANIFEST[name]["sha256"]


@pytest.mark.parametrize("name", VALID)
def test_onnxz_decodes_vector_to_the_recorded_tensors(name):
    model = onnx.ModelProto.FromString(library(name))
    recorded = MANIFEST[name]["tensors"]
    stored = onnxz.info(VECTORS / MANIFEST[name]["file"]).tensors
    assert [t.name for t in stored] == [t["name"] for t in recorded]
    for t in recorded:
        assert sha256(resolve(model, t["path"]).raw_data) == t["sha256"], t["name"]


@pytest.mark.parametrize("name", VALID)
def test_reference_decoder_decodes_vector_identically(name):
    decoded = reference(name)
    assert {tuple(t["path"]): t["sha256"] for t in MANIFEST[name]["tensors"]} == {
        path: sha256(data) for path, data in decoded.tensors.items()}
    assert decoded.model.SerializeToString() == library(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_is_refused_by_both_decoders(name):
    expected = MANIFEST[name]["error"]
    with pytest.raises(onnxz.OnnxzError, match=expected["match"]) as caught:
        onnxz.load(VECTORS / MANIFEST[name]["file"])
    assert make_vectors.error_kind(caught.value) == expected["kind"]
    with pytest.raises(reference_decoder.DecodeError) as ref_caught:
        reference_decoder.decode(vector_bytes(name))
    assert ref_caught.value.kind == expected["kind"]


@pytest.mark.parametrize("name", RUNNABLE)
def test_onnxruntime_outputs_of_decoded_vector(name):
    recorded = MANIFEST[name]["run"]
    inputs = {k: array(v) for k, v in recorded["inputs"].items()}
    outputs = run(library(name), inputs)
    again = run(reference(name).model.SerializeToString(), inputs)
    assert sorted(outputs) == sorted(recorded["outputs"])
    for key, expected in recorded["outputs"].items():
        assert outputs[key].tobytes() == again[key].tobytes()  # same run: bit-identical
        np.testing.assert_allclose(outputs[key], array(expected), rtol=recorded["rtol"],
                                   atol=recorded["atol"])


def test_vectors_cover_every_feature():
    """What the valid vectors exercise, read back through the reference decoder's parser."""
    seen: set[tuple] = set()
    for name in VALID:
        data = vector_bytes(name)
        seen.add(("minor", int.from_bytes(data[10:12], "little") > 0))
        _, tensors = reference_decoder.open_index(data)
        for t in tensors:
            p = t.params
            seen.update({("dtype", t.dtype), ("codec", t.codec, t.dtype),
                         ("chunked", t.codec, len(t.chunks) > 1)})
            seen.update(("path", step) for step in t.path if isinstance(step, str))
            if t.codec == "lossless":
                seen.add(("mode", p["mode"]))
                if p["mode"] == "palette":
                    n = len(p["values"]) // reference_decoder.DTYPES[t.dtype].width
                    seen.update({("palette index", p["index"]["method"]),
                                 ("palette", t.dtype), ("palette 2-byte zstd index",
                                                        p["index"]["method"] == "zstd"
                                                        and n > 256),
                                 ("palette size a power of two", n & (n - 1) == 0),
                                 ("palette of one value", n == 1)})
                if p["mode"] == "copy":
                    source = tensors[p["of"]]
                    seen.update({("copy of", source.codec), ("copy", t.dtype),
                                 ("copy in another shape", source.shape != t.shape),
                                 ("copy of a chunked tensor", len(source.chunks) > 1)})
                dtype = reference_decoder.DTYPES[t.dtype]
                if p["mode"] == "magnitude":
                    widths = reference_decoder.magnitude_widths(dtype)
                    seen.add(("magnitude", t.dtype))
                    seen.update(("magnitude method", plane["method"]) for plane in p["planes"])
                    seen.update(("magnitude chunk of 0", c.count == 0) for c in t.chunks)
                else:
                    widths = reference_decoder.plane_widths(dtype)
                for k, plane in enumerate(p.get("planes", [])):
                    seen.add(("method", plane["method"]))
                    if plane["method"] == "ans":
                        seen.update(("empty ans stream", c.sizes[k] == 0) for c in t.chunks)
                    if plane["method"] == "zstd":
                        seen.add(("zstd plane bytes", -(-widths[k] // 8)))
            elif t.codec == "mulaw":
                seen.add(("mulaw grid", p["grid"]))
            elif t.codec == "minifloat":
                seen.add(("minifloat", p["exponent_bits"], p["mantissa_bits"]))
            elif t.codec == "trellis":
                seen.add(("trellis table", "buckets" if "buckets" in p else "table",
                          p["escape"]))
            elif t.codec == "predictive":
                starts = [sum(c.count for c in t.chunks[:k]) for k in range(len(t.chunks))]
                seen.add(("predictive deadzone", p["deadzone"]))
                seen.update(("predictive short row", c.count % p["row"] > 0) for c in t.chunks)
                seen.update(("predictive chunk starts inside a row", s % p["row"] > 0)
                            for s in starts)
                seen.update(("predictive escapes", p["escape"], c.sizes[1] > 0)
                            for c in t.chunks)
            elif t.codec in ("deadzone_zstd", "trellis_zstd"):
                seen.add((f"{t.codec} low bits", p["low_bits"]))
                seen.update((f"{t.codec} escapes", p["escape"], c.sizes[1] > 0)
                            for c in t.chunks)
            else:
                seen.add(("deadzone", p["deadzone"]))
                seen.update(("escapes", p["escape"], c.sizes[1] > 0) for c in t.chunks)
    dtypes = set(reference_decoder.DTYPES)
    assert {("dtype", d) for d in dtypes} <= seen
    assert {("codec", "lossless", d) for d in dtypes} <= seen
    assert {("codec", c, d) for d in reference_decoder.QUANTIZABLE
            for c in ("deadzone", "mulaw", "minifloat")} <= seen
    assert {("mulaw grid", "midrise"), ("mulaw grid", "midtread"), ("minifloat", 2, 1),
            ("minifloat", 4, 3), ("minifloat", 5, 10), ("chunked", "mulaw", True),
            ("chunked", "minifloat", True)} <= seen
    assert {("mode", "planes"), ("mode", "zstd"), ("method", "ans"), ("method", "packed"),
            ("method", "constant"), ("empty ans stream", True), ("method", "zstd"),
            ("zstd plane bytes", 1), ("zstd plane bytes", 2)} <= seen
    assert {("mode", "palette"), ("palette 2-byte zstd index", True),
            ("palette size a power of two", True), ("palette size a power of two", False),
            ("palette of one value", True)} <= seen
    assert {("palette index", m) for m in ("ans", "packed", "constant", "zstd")} <= seen
    assert {("palette", d) for d in ("float32", "float16", "bfloat16", "float64", "int64",
                                     "int32", "int16", "uint8")} <= seen
    assert {("mode", "copy"), ("copy of", "lossless"), ("copy of", "deadzone"),
            ("copy", "float32"), ("copy", "uint8"), ("copy in another shape", True),
            ("copy of a chunked tensor", True)} <= seen
    assert {("magnitude", d) for d in ("float16", "bfloat16", "float32", "float64")} <= seen
    assert {("magnitude method", m) for m in ("ans", "packed", "constant", "zstd")} <= seen
    assert ("magnitude chunk of 0", True) in seen
    assert {("deadzone", 0.0), ("deadzone", 0.5), ("deadzone", 0.3), ("deadzone", 0.75)} <= seen
    assert {("escapes", True, True), ("escapes", True, False), ("escapes", False, False)} <= seen
    assert {("chunked", "lossless", True), ("chunked", "deadzone", True)} <= seen
    assert {("codec", "trellis", d) for d in reference_decoder.QUANTIZABLE} <= seen
    assert {("trellis table", "buckets", True), ("trellis table", "table", False),
            ("chunked", "trellis", True)} <= seen
    assert {("codec", "predictive", d) for d in reference_decoder.QUANTIZABLE} <= seen
    assert {("chunked", "predictive", True), ("predictive short row", True),
            ("predictive chunk starts inside a row", True), ("predictive escapes", True, True),
            ("predictive escapes", True, False), ("predictive deadzone", 0.0),
            ("predictive deadzone", 0.3), ("predictive deadzone", 0.5)} <= seen
    assert {("codec", "deadzone_zstd", d) for d in reference_decoder.QUANTIZABLE} <= seen
    assert {("chunked", "deadzone_zstd", True), ("deadzone_zstd low bits", 0),
            ("deadzone_zstd low bits", 3), ("deadzone_zstd low bits", 8),
            ("deadzone_zstd escapes", True, True), ("deadzone_zstd escapes", True, False),
            ("deadzone_zstd escapes", False, False)} <= seen
    assert {("codec", "trellis_zstd", d) for d in ("float32", "float16")} <= seen
    assert {("chunked", "trellis_zstd", True), ("trellis_zstd low bits", 1),
            ("trellis_zstd low bits", 4), ("trellis_zstd escapes", True, True),
            ("trellis_zstd escapes", True, False),
            ("trellis_zstd escapes", False, False)} <= seen
    assert {("path", s) for s in ("graph", "initializer", "node", "attribute", "t", "tensors",
                                  "g", "graphs", "functions")} <= seen
    assert ("minor", True) in seen
    assert {MANIFEST[n]["error"]["kind"] for n in INVALID} == {"format", "corrupt", "limit"}


def test_reference_decoder_imports_nothing_from_onnxz():
    tree = ast.parse((Path(reference_decoder.__file__)).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {m.split(".")[0] for m in imported} <= {
        "__future__", "collections", "dataclasses", "math", "struct", "typing", "zlib",
        "msgpack", "onnx", "zstandard"}


def test_make_vectors_keeps_published_vectors(tmp_path):
    out = tmp_path / "vectors"
    shutil.copytree(VECTORS, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert make_vectors.main(["--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    victim = out / MANIFEST[VALID[0]]["file"]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(SystemExit, match="immutable"):
        make_vectors.main(["--out", str(out)])


def test_vectors_cover_the_points_of_revision_2():
    """Read back from the files: packed planes of every width with padding, tables above
    precision 13, zstd frames without content size in every place, 0-element chunks."""
    seen: set[tuple] = set()
    for name in VALID:
        data = vector_bytes(name)
        graph, tensors = reference_decoder.open_index(data)
        footer = container_edit.Footer.of(data)
        frames = [("graph", data[graph.offset:graph.offset + graph.length]),
                  ("index", data[footer.index_offset:footer.index_offset + footer.index_length])]
        for t in tensors:
            p = t.params
            if t.codec == "lossless" and p["mode"] == "planes":
                widths = reference_decoder.plane_widths(reference_decoder.DTYPES[t.dtype])
                for plane, bits in zip(p["planes"], widths, strict=True):
                    if plane["method"] == "packed":
                        seen.update(("packed", bits, c.count * bits % 8 != 0) for c in t.chunks)
            tables = [p["table"]] if "table" in p else [
                q["table"] for q in p.get("planes", []) if "table" in q]
            seen.update(("precision above 13", tb["precision"] > 13) for tb in tables)
            seen.update(("0-element chunk", t.codec, p.get("mode")) for c in t.chunks
                        if c.count == 0)
            seen.update(("int parameter", k) for k in ("step", "deadzone")
                        if isinstance(p.get(k), int))
            if p.get("mode") == "zstd":
                frames += [("chunk", data[c.offset:c.end]) for c in t.chunks]
        seen.update(("no content size", where) for where, frame in frames
                    if zstandard.get_frame_parameters(frame).content_size
                    == zstandard.CONTENTSIZE_UNKNOWN)
    assert {("packed", 3, True), ("packed", 5, True), ("packed", 8, False),
            ("packed", 11, True)} <= seen
    assert ("precision above 13", True) in seen
    assert {("0-element chunk", "lossless", "zstd"), ("0-element chunk", "lossless", "planes"),
            ("0-element chunk", "deadzone", None)} <= seen
    assert {("int parameter", "step"), ("int parameter", "deadzone")} <= seen
    assert {("no content size", w) for w in ("graph", "index", "chunk")} <= seen
