"""The vectors added with SPEC revision 2 (issue 14) catch the decoder mistakes they were made
for: the reference decoder with one function replaced by a plausible wrong version fails
each vector aimed at that mistake (decodes other bytes, or reports another outcome), yet
still passes every vector of the first published set, which could not tell the two apart.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import onnx
import pytest
import reference_decoder as ref
import zstandard

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())["vectors"]

FIRST_PUBLISHED = (
    "deadzone_chunked_escapes", "deadzone_delta_0_3", "deadzone_f16_bf16_f64",
    "deadzone_midrise", "deadzone_midtread", "external_data", "future_minor_1_3",
    "invalid_absurd_shape", "invalid_chunk_crc", "invalid_major_2", "invalid_truncated",
    "invalid_unknown_codec", "invalid_unknown_dtype", "lossless_chunked", "lossless_float8",
    "lossless_float_planes", "lossless_integers", "lossless_zstd", "lossy_default_cnn",
    "paths_tensors_graphs", "spec_example_deadzone", "spec_example_lossless", "subgraphs",
)
"""The vectors of format 1.0 as first published (before issue 14)."""

REVISION_2 = (
    "deadzone_float16_direct_rounding", "deadzone_bfloat16_double_rounding",
    "deadzone_float64_operation_order", "deadzone_overflow_rounding", "deadzone_int_params",
    "lossless_packed_5_11_bits", "tables_high_precision", "zstd_no_content_size",
    "unused_gap_graph_key", "lossless_bool_bytes", "zero_count_chunks",
    "invalid_zstd_trailing_bytes", "invalid_zstd_skippable_frame", "invalid_zstd_empty_part",
    "invalid_zstd_window", "invalid_element_count_2_64", "invalid_path_mistyped_attribute",
    "invalid_ignored_key_not_str", "invalid_ignored_ext", "invalid_nesting_65",
    "invalid_plane_order",
)
"""The vectors added with SPEC revision 2 (issue 14)."""

FORMAT_1_2 = ("predictive_rows", "predictive_f16_bf16_f64", "predictive_extremes",
              "invalid_predictive_coefficients", "invalid_predictive_level")
"""The vectors of format 1.2 (codec predictive, SPEC §16)."""


@dataclass(frozen=True)
class Mistake:
    """Replace ``ref.<function>`` by ``wrong(original)``; ``catches`` must then fail, and of
    the first published vectors exactly ``caught_before``."""

    function: str
    wrong: Callable[[Callable], Callable]
    catches: tuple[str, ...]
    caught_before: tuple[str, ...] = ()


def outcome(name: str) -> str:
    """``ok`` if the reference decodes the vector to its recorded tensors, ``different`` if
    to others, else the class of the error it reports."""
    try:
        decoded = ref.decode((VECTORS / MANIFEST[name]["file"]).read_bytes())
    except ref.DecodeError as exc:
        return exc.kind
    if "error" in MANIFEST[name]:
        return "decoded"
    recorded = {tuple(t["path"]): t["sha256"] for t in MANIFEST[name]["tensors"]}
    got = {path: hashlib.sha256(data).hexdigest() for path, data in decoded.tensors.items()}
    return "ok" if got == recorded else "different"


def recorded(name: str) -> str:
    return MANIFEST[name]["error"]["kind"] if "error" in MANIFEST[name] else "ok"


# --- the mistakes ----------------------------------------------------------------------------

def _float32(r: float) -> float:
    return struct.unpack("<f", ref.round_binary64(r, 8, 23).to_bytes(4, "little"))[0]


def float16_through_binary32(original):
    def to_dtype(r, dtype):
        return original(_float32(r) if dtype.name == "float16" else r, dtype)
    return to_dtype


def bfloat16_rounded_once(original):
    def to_dtype(r, dtype):
        if dtype.name == "bfloat16":
            return ref.round_binary64(r, 8, 7).to_bytes(2, "little")
        return original(r, dtype)
    return to_dtype


LARGEST = {"float16": 65504.0, "float32": (2 - 2.0**-23) * 2.0**127,
           "bfloat16": (2 - 2.0**-7) * 2.0**127}


def beyond_largest_is_infinite(original):
    def to_dtype(r, dtype):
        if abs(r) > LARGEST.get(dtype.name, math.inf):
            r = math.copysign(math.inf, r)
        return original(r, dtype)
    return to_dtype


def overflow_saturates(original):
    def to_dtype(r, dtype):
        return original(max(-LARGEST.get(dtype.name, math.inf),
                            min(r, LARGEST.get(dtype.name, math.inf))), dtype)
    return to_dtype


def distributive(original):
    def midpoint(q, step, deadzone):
        r = step * abs(q) + step * (deadzone - 0.5) if q else 0.0
        return -r if q < 0 else r
    return midpoint


def associated(original):
    def midpoint(q, step, deadzone):
        r = step * ((abs(q) + deadzone) - 0.5) if q else 0.0
        return -r if q < 0 else r
    return midpoint


def ints_truncated(original):
    def number(params, key):
        value = params.get(key)
        if ref._is_int(value) and abs(value) >= 1 << 53:  # keep the top 53 bits only
            drop = abs(value).bit_length() - 53
            return float(value >> drop << drop)
        return original(params, key)
    return number


def ints_refused(original):
    def number(params, key):
        return ref._typed(params, key, float)
    return number


def sixteen_bit_window(original):
    """Reads each symbol from the two bytes its first bit is in."""
    def unpack_bits(part, bits, count):
        padded, out = part + b"\0", []
        for j in range(count):
            k = j * bits
            window = int.from_bytes(padded[k // 8:k // 8 + 2], "big")
            out.append((window >> max(16 - bits - k % 8, 0)) & ((1 << bits) - 1))
        return out
    return unpack_bits


def padding_forgotten(original):
    """Reads the part as one big integer, symbols from its low end: right if no padding."""
    def unpack_bits(part, bits, count):
        whole = int.from_bytes(part, "big")
        return [(whole >> (bits * (count - 1 - j))) & ((1 << bits) - 1) for j in range(count)]
    return unpack_bits


def needs_content_size(original):
    """One-shot decompression: sized by the frame header's content size."""
    def zstd_exact(frame, size, what):
        try:
            out = zstandard.ZstdDecompressor().decompress(frame)
        except zstandard.ZstdError as exc:
            raise ref.CorruptDataError(f"{what}: {exc}") from exc
        if len(out) != size:
            raise ref.CorruptDataError(f"{what}: not {size} bytes")
        return out
    return zstd_exact


def reader_of_revision_1(original):
    """SPEC 1.0 as first written: bytes after the frame ignored (a part that is only a
    skippable frame then passes as empty content), any window libzstd accepts."""
    def zstd_exact(frame, size, what):
        try:
            declared = zstandard.frame_content_size(frame)
            if declared not in (-1, size):
                raise ref.CorruptDataError(f"{what}: declares {declared}")
            stream = zstandard.ZstdDecompressor().decompressobj()
            out = stream.decompress(frame)
        except zstandard.ZstdError as exc:
            raise ref.CorruptDataError(f"{what}: {exc}") from exc
        if not stream.eof or len(out) != size:
            raise ref.CorruptDataError(f"{what}: incomplete or not {size} bytes")
        return out
    return zstd_exact


def empty_part_is_empty_content(original):
    def zstd_exact(frame, size, what):
        return b"" if not frame and size == 0 else original(frame, size, what)
    return zstd_exact


def no_frame_for_nothing(original):
    """Reads SPEC 1.0's "a part may be empty" as: a 0-element zstd part holds no frame."""
    def zstd_exact(frame, size, what):
        if size == 0 and frame:
            raise ref.CorruptDataError(f"{what}: bytes for 0 elements")
        return original(frame, size, what)
    return zstd_exact


def any_window(original):
    def zstd_exact(frame, size, what):
        try:
            out = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompress(
                frame, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ref.CorruptDataError(f"{what}: {exc}") from exc
        if len(out) != size:
            raise ref.CorruptDataError(f"{what}: not {size} bytes")
        return out
    return zstd_exact


def varints_of_two_bytes(original):
    def read_uvarints(data):
        values = original(data)
        if any(v >= 1 << 14 for v in values):
            raise ref.FormatError("varint: longer than this reader supports")
        return values
    return read_uvarints


def sixteen_bit_frequencies(original):
    def read_uvarints(data):
        return [v & 0xFFFF for v in original(data)]
    return read_uvarints


def table_within_plane(original):
    def parse_plane(p, bits):
        plane = original(p, bits)
        table = plane.table
        if table is not None and not (table.offset >= 0 and
                                      table.offset + len(table.F) <= 1 << bits):
            raise ref.FormatError("lossless: table beyond the plane's values")
        return plane
    return parse_plane


def final_state_plane_by_plane(original):
    def plane_symbols(plane, part, count):
        values, ended = original(plane, part, count)
        if not ended:
            raise ref.CorruptDataError("lossless: ANS stream does not end in the initial state")
        return values, ended
    return plane_symbols


def footer_right_after_index(original):
    def open_index(data, *limits):
        opened = original(data, *limits)
        offset, length = struct.unpack_from("<QQ", data, len(data) - ref.FOOTER_SIZE)
        if offset + length != len(data) - ref.FOOTER_SIZE:
            raise ref.FormatError("footer: does not follow the index section")
        return opened
    return open_index


def graph_map_closed(original):
    def parse_index(fields):
        if isinstance(fields, dict) and isinstance(fields.get("graph"), dict) and set(
                fields["graph"]) - {"offset", "length", "raw_length", "crc32"}:
            raise ref.FormatError("index: unknown key in the graph map")
        return original(fields)
    return parse_index


def bools_checked(original):
    def decode_tensor(data, t, earlier):
        out = original(data, t, earlier)
        if t.dtype == "bool" and any(b > 1 for b in out):
            raise ref.FormatError(f"tensor {t.name!r}: a bool is not 0 or 1")
        return out
    return decode_tensor


def counts_without_limit(original):
    def check_counts(t):
        if sum(c.count for c in t.chunks) != t.count:
            raise ref.FormatError(f"tensor {t.name!r}: chunk counts")
    return check_counts


def path_by_field(original):
    """Steps into the field a path names, whatever the attribute's type (SPEC 1.0's text)."""
    def resolve(model, path):
        obj: Any = model
        for step in path:
            if isinstance(step, str) and step in ("graph", "initializer", "node", "attribute",
                                                   "t", "tensors", "g", "graphs", "functions"):
                obj = getattr(obj, step, None)
            elif ref._is_int(step) and hasattr(obj, "__len__") and 0 <= step < len(obj):
                obj = obj[step]
            else:
                obj = None
            if obj is None:
                raise ref.FormatError(f"path {list(path)}: bad step {step!r}")
        if not isinstance(obj, onnx.TensorProto):
            raise ref.FormatError(f"path {list(path)}: not a tensor")
        return obj
    return resolve


def prediction_truncated(original):
    """(a·q1 + b·q2 + 2048) / 4096 rounded toward zero (C's integer division), not floored."""
    def prediction(a, b, q1, q2):
        n = a * q1 + b * q2 + 2048
        return n // 4096 if n >= 0 else -(-n // 4096)
    return prediction


def prediction_ties_away(original):
    """(a·q1 + b·q2) / 4096 rounded to nearest, ties away from zero (not toward +∞)."""
    def prediction(a, b, q1, q2):
        n = a * q1 + b * q2
        return (n + 2048) >> 12 if n >= 0 else -((-n + 2048) >> 12)
    return prediction


def any_map_keys(original):
    return lambda pairs: dict(pairs)


def ext_kept(original):
    return lambda code, data: msgpack.ExtType(code, data)


def any_depth(original):
    return lambda value, depth: None


MISTAKES = {
    "float16 rounded through binary32": Mistake(
        "to_dtype", float16_through_binary32, ("deadzone_float16_direct_rounding",)),
    "bfloat16 rounded once, from binary64": Mistake(
        "to_dtype", bfloat16_rounded_once,
        ("deadzone_bfloat16_double_rounding", "deadzone_overflow_rounding")),
    "distributive form Δ·|q| + Δ·t": Mistake(  # the float64 tensor at δ = 0.75 caught it
        "midpoint", distributive, ("deadzone_float64_operation_order",),
        caught_before=("deadzone_f16_bf16_f64",)),
    "association (|q| + δ) − 0.5": Mistake(
        "midpoint", associated, ("deadzone_float64_operation_order",)),
    "beyond the largest finite value is infinity": Mistake(
        "to_dtype", beyond_largest_is_infinite, ("deadzone_overflow_rounding",)),
    "overflow saturates to the largest finite value": Mistake(
        "to_dtype", overflow_saturates, ("deadzone_overflow_rounding",)),
    "int parameters refused": Mistake("_number", ints_refused, ("deadzone_int_params",)),
    "int parameters truncated": Mistake("_number", ints_truncated, ("deadzone_int_params",)),
    "packed symbols read from a 16-bit window": Mistake(
        "unpack_bits", sixteen_bit_window, ("lossless_packed_5_11_bits",)),
    "packed padding forgotten": Mistake(
        "unpack_bits", padding_forgotten, ("lossless_packed_5_11_bits",)),
    "zstd frames need a content size": Mistake(
        "_zstd_exact", needs_content_size, ("zstd_no_content_size",)),
    "frequency varints of at most 2 bytes": Mistake(
        "read_uvarints", varints_of_two_bytes, ("tables_high_precision",)),
    "frequencies kept in 16 bits": Mistake(
        "read_uvarints", sixteen_bit_frequencies, ("tables_high_precision",)),
    "ANS table within the plane's range": Mistake(
        "_parse_plane", table_within_plane, ("tables_high_precision",)),
    "zstd as first specified (trailing bytes ignored)": Mistake(
        "_zstd_exact", reader_of_revision_1,
        ("invalid_zstd_trailing_bytes", "invalid_zstd_skippable_frame")),
    "empty zstd part as empty content": Mistake(
        "_zstd_exact", empty_part_is_empty_content, ("invalid_zstd_empty_part",)),
    "no zstd frame for 0 elements": Mistake(
        "_zstd_exact", no_frame_for_nothing, ("zero_count_chunks",)),
    "zstd window unbounded": Mistake("_zstd_exact", any_window, ("invalid_zstd_window",)),
    "ANS final state checked plane by plane": Mistake(
        "plane_symbols", final_state_plane_by_plane, ("invalid_plane_order",)),
    "footer right after the index": Mistake(
        "open_index", footer_right_after_index, ("unused_gap_graph_key",)),
    "graph map without unknown keys": Mistake(
        "_parse_index", graph_map_closed, ("unused_gap_graph_key",)),
    "bool bytes 0 or 1 only": Mistake("_decode_tensor", bools_checked, ("lossless_bool_bytes",)),
    "no element-count limit": Mistake(
        "check_counts", counts_without_limit, ("invalid_element_count_2_64",)),
    "path by field, not by attribute type": Mistake(
        "resolve", path_by_field, ("invalid_path_mistyped_attribute",)),
    "ignored maps unchecked": Mistake(
        "_str_keyed_map", any_map_keys, ("invalid_ignored_key_not_str",)),
    "ext values ignored": Mistake("_no_ext", ext_kept, ("invalid_ignored_ext",)),
    "nesting unbounded": Mistake("_check_depth", any_depth, ("invalid_nesting_65",)),
    # format 1.2: codec predictive (§16.3)
    "prediction rounded toward zero": Mistake(
        "prediction", prediction_truncated, ("predictive_rows", "predictive_extremes")),
    "prediction ties away from zero": Mistake(
        "prediction", prediction_ties_away, ("predictive_rows", "predictive_extremes")),
}


@functools.cache
def _first_published_outcomes_are_recorded() -> bool:
    return all(outcome(n) == recorded(n) for n in FIRST_PUBLISHED)


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistake_fails_its_vectors_and_passes_the_first_ones(mistake, monkeypatch):
    assert _first_published_outcomes_are_recorded()  # the correct decoder, as a baseline
    m = MISTAKES[mistake]
    monkeypatch.setattr(ref, m.function, m.wrong(getattr(ref, m.function)))
    for name in m.catches:
        assert outcome(name) != recorded(name), f"{name} does not catch: {mistake}"
    assert {n for n in FIRST_PUBLISHED if outcome(n) != recorded(n)} == set(m.caught_before)


def test_every_vector_of_revision_2_catches_a_mistake():
    caught = {name for m in MISTAKES.values() for name in m.catches}
    assert set(REVISION_2) <= caught <= set(REVISION_2) | set(FORMAT_1_2)
    assert set(REVISION_2) | set(FORMAT_1_2) <= set(MANIFEST)
