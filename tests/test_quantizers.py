"""The research's other quantizers as codecs: μ-law and minifloat (format 1.1), and the
global-range baseline of the dead-zone codec (format 1.0)."""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from test_codecs import decode, roundtrip

import onnxz
from onnxz.cli import main
from onnxz.codecs import DeadzoneCodec, MinifloatCodec, MulawCodec
from onnxz.codecs.minifloat import LAYOUTS
from onnxz.codecs.minifloat import reconstruct as minifloat_value
from onnxz.codecs.mulaw import power_table
from onnxz.dtypes import BY_NAME
from onnxz.errors import FormatError
from onnxz.policy import PackOptions, quantizer

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn.onnx"
FLOATS = ("float32", "float16", "bfloat16", "float64")


def laplace(n: int, scale: float = 0.05, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0, scale, n)


def as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return x.astype(ml_dtypes.bfloat16).view(np.uint16)
    return x.astype(BY_NAME[dtype].numpy)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("codec", [MulawCodec(bits=7), MulawCodec(bits=5, grid="midtread"),
                                   MinifloatCodec(4, 3), MinifloatCodec(2, 1)])
def test_roundtrip_in_chunks_for_every_float_dtype(codec, dtype):
    x = as_dtype(laplace(70_000), dtype)
    enc, _ = roundtrip(codec, x, dtype, chunk_elements=30_000)
    assert enc.format_minor == 1 and len(enc.chunks) == 3


def test_mulaw_power_table_is_a_left_to_right_product():
    base = MulawCodec(bits=8).base
    expected = [1.0]
    for _ in range(600):
        expected.append(expected[-1] * base)
    assert power_table(base, 601).tolist() == expected  # bit-identical, not approximately


@pytest.mark.parametrize("grid", ["midrise", "midtread"])
def test_mulaw_is_the_research_compander(grid):
    """Values are the μ-law expansion of the companded cells' centres: (X/μ)((1+μ)^y − 1)."""
    mu, bits = 255.0, 6
    codec = MulawCodec(mu=mu, bits=bits, grid=grid)
    x = laplace(20_000)
    enc, decoded = roundtrip(codec, x, "float64")
    levels, x_max = 1 << (bits - 1), float(np.abs(x).max())
    y = np.log1p(mu * np.abs(x) / x_max) / math.log1p(mu)
    j = np.clip(np.floor(y * levels) + 1, 1, levels) if grid == "midrise" else np.rint(
        y * levels)
    centre = (j - 0.5) / levels if grid == "midrise" else j / levels
    expected = np.sign(x) * x_max / mu * np.expm1(centre * math.log1p(mu))
    np.testing.assert_allclose(decoded, expected, rtol=1e-12, atol=1e-15)
    # companded-domain error at most half a level
    y_hat = np.log1p(mu * np.abs(decoded) / x_max) / math.log1p(mu)
    assert np.abs(y_hat - y).max() <= 0.5 / levels + 1e-12
    assert (decoded == 0).any() == (grid == "midtread")
    assert enc.params["x_max"] == x_max


def test_mulaw_puts_more_levels_near_zero_than_a_uniform_quantizer():
    x = laplace(50_000)
    _, mulaw = roundtrip(MulawCodec(bits=6, grid="midtread"), x, "float64")
    small = np.abs(x) < 0.02
    uniform_step = 2 * np.abs(x).max() / (1 << 6)
    assert np.abs(mulaw - x)[small].max() < uniform_step / 4


def test_minifloat_e4m3_rounds_like_float8_e4m3fn():
    """With bias 7 the E4M3 format is float8e4m3fn (ml_dtypes, an independent rounding)."""
    x = np.random.default_rng(3).laplace(0, 30, 50_000).clip(-448, 448)
    x[:4] = [0.0, 2.0**-9, 2.0**-10 * 3, -448.0]  # subnormals, a tie, the largest value
    codec = MinifloatCodec(4, 3)
    ours = minifloat_value(codec.symbols(x, bias=7), 3, 7)
    theirs = x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert ours.tolist() == theirs.tolist()


def test_minifloat_e5m10_rounds_like_ieee_half():
    x = np.random.default_rng(4).laplace(0, 0.01, 50_000)
    x[:3] = [2.0**-24, 3 * 2.0**-25, 60000.0]  # smallest subnormal, a tie, near the top
    ours = minifloat_value(MinifloatCodec(5, 10).symbols(x, bias=15), 10, 15)
    assert ours.tolist() == x.astype(np.float16).astype(np.float64).tolist()


@pytest.mark.parametrize("bits", sorted(LAYOUTS))
def test_minifloat_bias_fits_the_tensor_and_error_is_half_an_ulp(bits):
    codec = MinifloatCodec.of_width(bits)
    assert 1 + codec.exponent_bits + codec.mantissa_bits == bits
    x = laplace(20_000, scale=3.0)
    _, decoded = roundtrip(codec, x, "float64")
    top = np.abs(x).max()
    assert np.abs(decoded).max() <= 2 * top
    big = np.abs(x) >= top / 2 ** ((1 << codec.exponent_bits) - 2)  # the normal range
    rel = np.abs(decoded - x)[big] / np.abs(x)[big]
    assert rel.max() <= 2.0 ** -(codec.mantissa_bits + 1) * 1.0000001


def test_global_range_clips_to_one_and_keeps_one_step():
    x = np.concatenate([laplace(5000, 0.3), [1.7, -2.5]])
    _, deadzone = roundtrip(DeadzoneCodec.global_range(6, 0.0), x, "float64")
    assert set(np.round(np.abs(deadzone) * 64).astype(int) % 2) == {1}  # midrise: odd·Δ/2
    assert np.abs(deadzone).max() == 1 - 1 / 64 and len(np.unique(deadzone)) <= 64
    _, mulaw = roundtrip(MulawCodec(bits=5, x_max=1.0), x, "float64")
    assert np.abs(mulaw).max() <= 1.0 and len(np.unique(mulaw)) <= 32
    enc, mini = roundtrip(MinifloatCodec(3, 2, global_range=True), x, "float64")
    assert enc.params["bias"] == 7 and np.abs(mini).max() == 1.0


@pytest.mark.parametrize("codec_id, params", [
    ("mulaw", {"scale": 0.0, "base": 1.1, "grid": "midrise"}),
    ("mulaw", {"scale": 1.0, "base": 1.0, "grid": "midrise"}),
    ("mulaw", {"scale": 1.0, "base": 1.1, "grid": "sideways"}),
    ("mulaw", {"scale": 1.0, "base": True, "grid": "midrise"}),
    ("minifloat", {"exponent_bits": 0, "mantissa_bits": 3, "bias": 7}),
    ("minifloat", {"exponent_bits": 8, "mantissa_bits": 8, "bias": 7}),
    ("minifloat", {"exponent_bits": 4, "mantissa_bits": 3, "bias": 2000}),
    ("minifloat", {"exponent_bits": 4, "mantissa_bits": 3, "bias": 7.0}),
])
def test_invalid_parameters_are_format_errors(codec_id, params):
    table = {"offset": -2, "precision": 8, "size": 5, "freqs": bytes([51, 51, 52, 51, 51])}
    with pytest.raises(FormatError):
        onnxz.codecs.codec_class(codec_id).decoder({**params, "table": table},
                                                    BY_NAME["float32"])


def test_symbols_beyond_the_format_are_format_errors():
    enc = MinifloatCodec(2, 1).encode(laplace(100), BY_NAME["float32"], 1 << 20)
    table = dict(enc.params["table"], offset=-9)  # codes reach beyond ±7
    with pytest.raises(FormatError, match="beyond"):
        MinifloatCodec.decoder({**enc.params, "table": table}, BY_NAME["float32"])
    with pytest.raises(FormatError, match="int8"):
        MulawCodec.decoder(MulawCodec().encode(laplace(100), BY_NAME["float32"], 100).params,
                           BY_NAME["int8"])


def test_a_chunk_has_one_part():
    enc = MulawCodec().encode(laplace(100), BY_NAME["float32"], 1 << 20)
    with pytest.raises(FormatError, match="1 part"):
        decode(MulawCodec, enc.params, [((*enc.chunks[0].parts, b""), 100)], "float32")


def test_quantizer_settings_are_checked():
    assert isinstance(quantizer("mulaw", bits=6, mu=100.0), MulawCodec)
    assert quantizer("minifloat", exponent_bits=5, mantissa_bits=2).mantissa_bits == 2
    assert quantizer("deadzone", global_range=True, bits=4).step == 2 / 16
    with pytest.raises(ValueError, match="step_rel"):
        quantizer("mulaw", step_rel=0.1)
    with pytest.raises(ValueError, match="step_rel"):
        quantizer("deadzone", global_range=True, step_rel=0.1)
    with pytest.raises(ValueError, match="layout of 9 bits"):
        quantizer("minifloat", bits=9)
    with pytest.raises(ValueError, match="both"):
        quantizer("minifloat", exponent_bits=3)


def test_files_declare_1_1_only_when_they_use_the_new_codecs(tmp_path):
    one = onnxz.save(DIGITS, tmp_path / "m.onnxz",
                     options=PackOptions(quantizer=MinifloatCodec(4, 3)))
    assert one.version == "1.1" and {t.codec for t in one.tensors} == {"minifloat", "lossless"}
    assert one.quantized_bits_per_weight is not None
    weights = np.random.default_rng(0).laplace(0, 0.1, 4096).astype(np.float32)
    zero = DeadzoneCodec.global_range(8, 0.5).encode(weights, BY_NAME["float32"], 1 << 20)
    assert zero.format_minor == 0  # the research's baseline is a 1.0 encoding


def test_cli_packs_with_the_new_codecs(tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.onnxz"
    result = runner.invoke(main, ["pack", str(DIGITS), "-o", str(out), "--codec", "mulaw",
                                  "--bits", "6", "--mu", "100", "--grid", "midtread"])
    assert result.exit_code == 0, result.output
    info = onnxz.info(out)
    mulaw = [t for t in info.tensors if t.codec == "mulaw"]
    assert mulaw and info.version == "1.1"
    assert onnxz.verify(DIGITS, out).samples > 0
    for args, message in (
        (["--codec", "mulaw", "--step-rel", "0.1"], "step_rel"),
        (["--codec", "minifloat", "--bits", "9"], "9 bits"),
        (["--lossless", "--codec", "mulaw"], "--lossless"),
    ):
        result = runner.invoke(main, ["pack", str(DIGITS), "-o", str(tmp_path / "x.onnxz"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnxz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("codec", [MulawCodec(bits=10), MinifloatCodec.of_width(12)],
                         ids=["mulaw10", "minifloat12"])
def test_corpus_models_pack_unpack_and_run(corpus, tmp_path, codec):
    """Every corpus model packs, unpacks to a runnable ONNX file and stays close to the
    original on the corpus inputs (the same bar as the lossy default's corpus test)."""
    from corpus_inputs import RUNNERS, snr_db
    from test_corpus import MAX_LOSSY_ABS_ERROR, MIN_LOSSY_SNR_DB, reference_outputs

    for name in sorted(RUNNERS):
        packed = tmp_path / f"{name}.onnxz"
        info = onnxz.save(corpus[name], packed, options=PackOptions(quantizer=codec))
        assert info.version == "1.1" and any(t.codec == codec.codec_id for t in info.tensors)
        unpacked = onnxz.unpack(packed, tmp_path / f"{name}.onnx")
        outputs = RUNNERS[name](ort.InferenceSession(str(unpacked),
                                                     providers=["CPUExecutionProvider"]))
        reference = reference_outputs(corpus[name])
        snr = snr_db(reference, outputs)
        max_abs = max(float(np.abs(r - o).max()) for r, o in zip(reference, outputs,
                                                                strict=True))
        print(f"\n{name} {codec.codec_id}: {info.file_bytes} bytes, "
              f"{info.quantized_bits_per_weight:.2f} bits/weight, SNR {snr:.1f} dB")
        assert snr >= MIN_LOSSY_SNR_DB or max_abs <= MAX_LOSSY_ABS_ERROR
