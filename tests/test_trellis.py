"""The trellis codec and bucket tables: the state machine, round trips, what they save."""

from __future__ import annotations

import numpy as np
import pytest
from models import mlp
from test_codecs import decode, roundtrip

import onnxz
from onnxz.codecs import DeadzoneCodec, TrellisCodec
from onnxz.codecs.buckets import BucketTable, bucket_of
from onnxz.codecs.trellis import (
    TRANSITIONS,
    dequantize,
    quantize_tensor,
    quantizer_sequence,
    viterbi_levels,
)
from onnxz.dtypes import BY_NAME
from onnxz.errors import FormatError


def quantizers_by_state_machine(levels: np.ndarray, segment: int) -> list[int]:
    """SPEC.md's definition, one element at a time."""
    out, state = [], 0
    for i, k in enumerate(levels.tolist()):
        if i % segment == 0:
            state = 0
        out.append(state & 1)
        state = TRANSITIONS[state][abs(k) & 1]
    return out


@pytest.mark.parametrize("segment", [1, 2, 4, 8, 64, 256, 4096])
@pytest.mark.parametrize("n", [1, 3, 7, 100, 1000])
def test_quantizer_sequence_follows_the_state_machine(segment, n):
    levels = np.random.default_rng(n + segment).integers(-6, 7, n)
    assert quantizer_sequence(levels, segment).tolist() == quantizers_by_state_machine(
        levels, segment)


def test_reconstruction_is_on_the_two_quantizers():
    levels = np.random.default_rng(0).integers(-9, 10, 5000)
    q = np.array(quantizers_by_state_machine(levels, 256))
    expected = np.where(levels == 0, 0.0, np.sign(levels) * 0.25 * (2 * np.abs(levels) - q))
    assert np.array_equal(dequantize(levels, 0.25, 256), expected)


def test_viterbi_without_rate_beats_any_single_quantizer():
    x = np.random.default_rng(1).laplace(0, 1.0, 20_000)
    levels = viterbi_levels(x, 0.25, 256, 0.0, np.zeros(2))
    trellis_mse = np.mean((dequantize(levels, 0.25, 256) - x) ** 2)
    q0_mse = np.mean((np.rint(x / 0.5) * 0.5 - x) ** 2)  # Q0 alone: step 2Δ
    assert trellis_mse < 0.75 * q0_mse


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("chunk_elements", [1 << 20, 1000, 300])
def test_roundtrip_every_float_dtype_and_chunking(dtype, chunk_elements):
    x = np.random.default_rng(2).laplace(0, 0.05, 7000)
    values = x.astype(np.float32).view(np.uint32) >> 16 if dtype == "bfloat16" else x
    values = values.astype(BY_NAME[dtype].numpy)
    enc, decoded = roundtrip(TrellisCodec(1 / 16), values, dtype, chunk_elements)
    assert enc.format_minor == 1
    assert all(c.count % enc.params["segment"] == 0 for c in enc.chunks[:-1])
    if dtype != "bfloat16":
        rel = np.abs(decoded.astype(np.float64) - x).max() / (0.05 * np.sqrt(2))
        assert rel < 0.3


def test_the_written_levels_do_not_depend_on_chunking():
    x = np.random.default_rng(3).laplace(0, 1.0, 5000)
    one = TrellisCodec(1 / 8).encode(x, BY_NAME["float64"], 1 << 20)
    many = TrellisCodec(1 / 8).encode(x, BY_NAME["float64"], 700)
    assert np.array_equal(one.reconstruction, many.reconstruction)
    assert [c.count for c in many.chunks] == [512] * 9 + [392]


def weight_snr_db(x: np.ndarray, r: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(x**2) / np.sum((x - r) ** 2)))


@pytest.mark.parametrize("step_rel", [1 / 4, 1 / 16])
def test_fewer_bytes_than_deadzone_at_equal_weight_snr(step_rel):
    """At the trellis file's weight SNR, the dead-zone codec needs ≥ 2% more bytes
    (interpolated on its rate–SNR curve; a Laplacian tensor)."""
    x = np.random.default_rng(4).laplace(0, 0.05, 200_000)
    f64 = BY_NAME["float64"]
    enc = TrellisCodec(step_rel).encode(x, f64, 1 << 20)
    target = weight_snr_db(x, enc.reconstruction)
    curve = []
    for s in np.geomspace(step_rel / 4, step_rel * 4, 17):
        d = DeadzoneCodec(float(s), 0.5).encode(x, f64, 1 << 20)
        curve.append((weight_snr_db(x, d.reconstruction), d.coded_bytes))
    snrs, sizes = zip(*sorted(curve), strict=True)
    deadzone_bytes = np.interp(target, snrs, sizes)
    assert enc.coded_bytes < 0.98 * deadzone_bytes


def test_outliers_are_escaped():
    x = np.random.default_rng(5).laplace(0, 0.01, 10_000)
    x[[10, 5000, 9999]] = [50.0, -80.0, 1e6]
    enc, decoded = roundtrip(TrellisCodec(1 / 512), x, "float64", 4096)
    assert enc.params["escape"] is True
    assert np.abs(decoded[[10, 5000, 9999]] - x[[10, 5000, 9999]]).max() < 1e-3


def test_constant_and_non_finite_tensors_are_not_quantizable():
    codec = TrellisCodec(1 / 8)
    with pytest.raises(onnxz.codecs.NotQuantizable):
        codec.quantize(np.zeros(1000), BY_NAME["float64"])
    with pytest.raises(onnxz.codecs.NotQuantizable):
        codec.quantize(np.array([1.0, np.nan] * 500), BY_NAME["float64"])


def test_estimated_bytes_track_the_coded_bytes():
    x = np.random.default_rng(6).laplace(0, 1.0, 50_000)
    quantized = TrellisCodec(1 / 8).quantize(x, BY_NAME["float64"])
    enc = TrellisCodec(1 / 8).encode_quantized(quantized, BY_NAME["float64"], 1 << 20)
    assert abs(quantized.estimated_bytes() - enc.coded_bytes - enc.table_bytes) < 0.002 * (
        enc.coded_bytes)


# --- decoder parameter checks ------------------------------------------------------------

def params_of(x: np.ndarray, step_rel: float = 1 / 8) -> dict:
    return dict(TrellisCodec(step_rel).encode(x, BY_NAME["float32"], 1 << 20).params)


@pytest.mark.parametrize("change, match", [
    ({"segment": 3}, "power of two"),
    ({"segment": 1 << 17}, "power of two"),
    ({"segment": 0}, "power of two"),
    ({"step": -1.0}, "step"),
    ({"step": float("inf")}, "step"),
    ({"escape": 1}, "escape"),
    ({"table": {}}, "exactly one"),
])
def test_invalid_parameters_are_format_errors(change, match):
    params = params_of(np.random.default_rng(7).laplace(0, 1.0, 3000).astype(np.float32))
    params.update(change)
    with pytest.raises(FormatError, match=match):
        TrellisCodec.decoder(params, BY_NAME["float32"])


def test_integer_dtypes_are_refused():
    params = params_of(np.random.default_rng(8).laplace(0, 1.0, 3000).astype(np.float32))
    with pytest.raises(FormatError, match="int32"):
        TrellisCodec.decoder(params, BY_NAME["int32"])


def test_a_chunk_needs_two_parts():
    x = np.random.default_rng(9).laplace(0, 1.0, 3000).astype(np.float32)
    enc = TrellisCodec(1 / 8).encode(x, BY_NAME["float32"], 1 << 20)
    with pytest.raises(FormatError, match="2 parts"):
        decode(TrellisCodec, enc.params, [(enc.chunks[0].parts[:1], 3000)], "float32")


# --- bucket tables -----------------------------------------------------------------------

def bucket_widths(magnitude: int, resolution: int) -> np.ndarray:
    """Number of magnitudes 1 … ``magnitude`` in each bucket 1 … B (B = bucket of the
    largest magnitude; the last bucket may be cut short)."""
    buckets = bucket_of(np.arange(1, magnitude + 1), resolution)
    return np.bincount(buckets, minlength=int(buckets[-1]) + 1)[1:]


def test_buckets_are_exact_below_two_to_the_resolution_plus_one_then_log_spaced():
    assert bucket_of(np.arange(1, 8), 2).tolist() == [1, 2, 3, 4, 5, 6, 7]
    m = np.arange(1, 1 << 12)
    for r in range(5):
        widths = bucket_widths(m[-1], r)
        assert widths.sum() == m[-1]
        assert (widths[: (1 << (r + 1)) - 1] == 1).all()
        assert set(np.unique(widths).tolist()) <= {1 << k for k in range(12)}
        assert (np.diff(bucket_of(m, r)) >= 0).all()  # monotone, contiguous
        assert set(np.diff(bucket_of(m, r)).tolist()) <= {0, 1}


def test_bucket_table_expands_to_a_valid_symmetric_table():
    q = np.random.default_rng(10).laplace(0, 200, 20_000).round().astype(np.int64)
    table = BucketTable.fit(q, int(np.abs(q).max()), escape=3)
    assert table is not None
    expanded = table.expand()
    f = expanded.freqs.astype(np.int64)
    assert int(f.sum()) == 1 << table.precision and expanded.offset == -table.magnitude
    assert np.array_equal(f[:table.magnitude], f[table.magnitude + 1:-1][::-1])
    assert f[-1] == table.escape
    again = BucketTable.from_fields(table.to_fields(), escape=True)
    assert np.array_equal(again.expand().freqs, expanded.freqs)


def test_bucket_tables_are_smaller_than_explicit_ones_at_fine_steps():
    x = np.random.default_rng(11).laplace(0, 1.0, 5000)
    q = quantize_tensor(x, 1 / 200)
    assert q.buckets is not None
    explicit = onnxz.codecs.ans.FrequencyTable.fit(q.levels)
    assert q.buckets.stored_size < explicit.stored_size / 10
    assert q.estimated_bytes() < 0.8 * (explicit.cost_bits(np.bincount(
        q.levels - explicit.offset)) / 8 + explicit.stored_size)


@pytest.mark.parametrize("fields, match", [
    ({"magnitude": 0}, "magnitude"),
    ({"magnitude": 40000}, "magnitude"),
    ({"resolution": 9}, "resolution"),
    ({"precision": 30}, "precision"),
    ({"freqs": b"\x01"}, "varint|frequencies"),
])
def test_invalid_bucket_tables_are_format_errors(fields, match):
    q = np.random.default_rng(12).laplace(0, 30, 3000).round().astype(np.int64)
    good = BucketTable.fit(q, int(np.abs(q).max()), escape=0).to_fields()
    with pytest.raises(FormatError, match=match):
        BucketTable.from_fields({**good, **fields}, escape=False)


def test_bucket_frequencies_leaving_nothing_for_zero_are_refused():
    with pytest.raises(FormatError, match="zero symbol"):
        BucketTable(magnitude=3, resolution=2, precision=8, freqs=np.array([40, 40, 48]))


def test_save_with_the_trellis_quantizer_writes_format_1_1_and_verifies(tmp_path):
    model = mlp()
    info = onnxz.save(model, tmp_path / "m.onnxz", options=onnxz.PackOptions(
        min_quantized_elements=16, quantizer=TrellisCodec(1 / 16)))
    assert info.version == "1.1"
    assert any(t.codec == "trellis" for t in info.tensors)
    report = onnxz.verify(model, tmp_path / "m.onnxz")
    assert report.passed
