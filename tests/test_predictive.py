"""The predictive codec: dead-zone levels coded as residuals of a per-row predictor."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import onnx.numpy_helper as nh
import pytest
from models import DEADZONE_LEVELS
from test_codecs import decode

import onnxz
from onnxz.codecs import DeadzoneCodec, PredictiveCodec, codec_class, predictive
from onnxz.codecs.predictive import (
    MAX_LEVEL,
    fit_coefficients,
    predicted_levels,
    residuals,
)
from onnxz.dtypes import BY_NAME
from onnxz.errors import CorruptDataError, FormatError


def stft_basis(rows: int = 48, width: int = 128) -> np.ndarray:
    """Windowed cosines and sines, as an STFT stored as a convolution kernel holds them."""
    n = np.arange(width)
    window = np.sin(np.pi * (n + 0.5) / width) ** 2
    k = np.arange(rows // 2)[:, None]
    return np.concatenate([np.cos(2 * np.pi * k * n / width) * window,
                           np.sin(2 * np.pi * k * n / width) * window]).astype(np.float32)


def levels_by_definition(errors: np.ndarray, coefficients: np.ndarray, row: int) -> list[int]:
    """SPEC.md's recurrence, one element at a time, in Python integers."""
    out: list[int] = []
    for i, e in enumerate(errors.tolist()):
        r, j = divmod(i, row)
        a, b = coefficients[r].tolist()
        q1 = out[i - 1] if j >= 1 else 0
        q2 = out[i - 2] if j >= 2 else 0
        out.append(e + ((a * q1 + b * q2 + 2048) >> 12))
    return out


def encode(values: np.ndarray, dtype: str, chunk_elements: int = 1 << 20, row: int = 128,
           step_rel: float = 1 / 64):
    return PredictiveCodec(step_rel, 0.5, row=row).encode(values, BY_NAME[dtype],
                                                          chunk_elements)


def decoded(enc, dtype: str) -> np.ndarray:
    return decode(codec_class(enc.codec_id), enc.params,
                  [(c.parts, c.count) for c in enc.chunks], dtype)


def test_levels_follow_the_recurrence_rounding_toward_minus_infinity():
    rng = np.random.default_rng(0)
    errors = rng.integers(-40, 41, (6, 50))
    coefficients = rng.integers(-2000, 2000, (6, 2))  # stable: levels stay small
    levels = predicted_levels(errors, coefficients)
    assert levels.reshape(-1).tolist() == levels_by_definition(errors.reshape(-1),
                                                               coefficients, 50)
    assert np.array_equal(residuals(levels, coefficients), errors)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("chunk_elements", [1 << 20, 1000, 128])
def test_roundtrip_equals_the_dead_zone_levels(dtype, chunk_elements):
    x = stft_basis()
    values = (x.view(np.uint32) >> 16).astype(np.uint16) if dtype == "bfloat16" else x
    values = values.astype(BY_NAME[dtype].numpy).ravel()
    enc = encode(values, dtype, chunk_elements)
    assert enc.codec_id == "predictive" and enc.format_minor == 2
    assert all(c.count % 128 == 0 for c in enc.chunks)  # whole rows
    plain = DeadzoneCodec(1 / 64, 0.5).encode(values, BY_NAME[dtype], chunk_elements)
    assert decoded(enc, dtype).tobytes() == plain.reconstruction.tobytes()
    assert enc.coded_bytes < 0.6 * plain.coded_bytes


def test_a_short_last_row_and_escapes_decode():
    x = stft_basis(8, 100).ravel()[:-30].astype(np.float64)  # the last row is 70 long
    x[[5, 400]] = [40.0, -60.0]  # far outside: escaped residuals
    enc = encode(x, "float64", chunk_elements=300, row=100)
    assert enc.codec_id == "predictive" and enc.params["escape"] is True
    assert [c.count for c in enc.chunks] == [300, 300, 170]
    assert np.array_equal(decoded(enc, "float64"), enc.reconstruction)
    assert np.abs(enc.reconstruction[[5, 400]] - x[[5, 400]]).max() < 0.05


def test_noise_like_tensors_stay_deadzone():
    x = np.random.default_rng(1).laplace(0, 0.1, (64, 128)).astype(np.float32).ravel()
    enc = encode(x, "float32")
    assert enc.codec_id in DEADZONE_LEVELS
    assert np.array_equal(decoded(enc, "float32"), enc.reconstruction)


@pytest.mark.parametrize("row", [1, 4096, 100_000])
def test_rows_too_short_or_long_for_the_encoder_are_not_predicted(row):
    x = np.tile(stft_basis().ravel(), 2)[: 2 * row if row > 1 else 64]
    assert encode(x, "float32", row=row).codec_id in DEADZONE_LEVELS


def test_prediction_never_makes_a_row_costlier():
    rng = np.random.default_rng(2)
    smooth = np.round(50 * np.sin(np.arange(64) / 5)).astype(np.int64)
    levels = np.concatenate([smooth[None], rng.integers(-30, 31, (40, 64))])
    coefficients = fit_coefficients(levels)
    cost = np.abs(residuals(levels, coefficients)).sum(1)
    assert (cost <= np.abs(levels).sum(1)).all()
    assert cost[0] < 0.2 * np.abs(smooth).sum()
    unchanged = cost == np.abs(levels).sum(1)
    assert (coefficients[unchanged & (cost > 0)] == 0).all()


def test_estimated_bytes_track_the_coded_bytes():
    x = stft_basis(64, 256).ravel()
    quantized = PredictiveCodec(1 / 64, 0.5, row=256).quantize(x, BY_NAME["float32"])
    enc = PredictiveCodec(1 / 64, 0.5, row=256).encode_quantized(quantized,
                                                                 BY_NAME["float32"], 1 << 20)
    assert abs(quantized.estimated_bytes() - enc.coded_bytes - enc.table_bytes) < (
        0.01 * enc.coded_bytes + 16)


# --- decoder checks -----------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    ({"row": 0}, "row 0"),
    ({"row": 1 << 17}, "row"),
    ({"row": 2.0}, "row"),
    ({"step": -1.0}, "step"),
    ({"reconstruction": "centroid"}, "centroid"),
])
def test_invalid_parameters_are_format_errors(change, match):
    params = dict(encode(stft_basis().ravel(), "float32").params) | change
    with pytest.raises(FormatError, match=match):
        PredictiveCodec.decoder(params, BY_NAME["float32"])


def test_a_chunk_needs_three_parts_and_its_rows_coefficients():
    enc = encode(stft_basis().ravel(), "float32")
    (chunk,) = enc.chunks
    with pytest.raises(FormatError, match="3 parts"):
        decode(PredictiveCodec, enc.params, [(chunk.parts[:2], chunk.count)], "float32")
    short = (*chunk.parts[:2], chunk.parts[2][:-4])
    with pytest.raises(CorruptDataError, match="coefficients"):
        decode(PredictiveCodec, enc.params, [(short, chunk.count)], "float32")


def test_levels_beyond_two_to_the_31_are_format_errors():
    errors = np.zeros((1, 80), dtype=np.int64)
    errors[0, 0] = 1 << 20
    growing = np.array([[2 * 4096, 0]])  # doubles at every step
    with pytest.raises(FormatError, match="2\\*\\*31"):
        predicted_levels(errors, growing)
    assert int(np.abs(predicted_levels(errors[:, :12], growing)).max()) <= MAX_LEVEL


# --- through rate control -----------------------------------------------------------------

def test_rate_control_predicts_a_filterbank_and_the_file_verifies(tmp_path):
    basis = stft_basis(64, 128)[:, None, :]  # Conv weight [out, in, width]
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "basis"], ["y"], strides=[64])], "stft",
        [oh.make_tensor_value_info("x", 1, [1, 1, 1024])],
        [oh.make_tensor_value_info("y", 1, [1, 64, 15])],
        [nh.from_array(basis, "basis")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    info = onnxz.save(model, tmp_path / "m.onnxz", fidelity="snr>=40")
    (tensor,) = info.tensors
    assert tensor.codec == "predictive" and info.version == "1.2"
    assert onnxz.verify(model, tmp_path / "m.onnxz").passed


def test_prediction_in_batches_of_rows_gives_the_same_file(monkeypatch):
    x = stft_basis(300, 128).ravel()  # more rows than the trial: tried on a sample first
    whole = encode(x, "float32")
    monkeypatch.setattr(predictive, "PREDICT_BATCH", 1000)  # 7 rows at a time
    batched = encode(x, "float32")
    assert whole.codec_id == batched.codec_id == "predictive"
    assert [c.parts for c in whole.chunks] == [c.parts for c in batched.chunks]


def test_a_tensor_prediction_does_not_help_is_judged_on_a_sample(monkeypatch):
    calls = []
    monkeypatch.setattr(predictive, "predict", lambda q, row: calls.append(q.q.size))
    x = np.random.default_rng(3).laplace(0, 0.1, (2000, 64)).astype(np.float32).ravel()
    assert encode(x, "float32", row=64).codec_id in DEADZONE_LEVELS
    assert calls == [predictive.TRIAL_ROWS * 64]  # the sample only, never the whole
