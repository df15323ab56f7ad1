"""The CLI contract: verbs, options, one-line errors, exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from models import big_conv

from onnxz.cli import main


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(big_conv().SerializeToString())
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_pack_unpack_info(model_file, tmp_path):
    out = tmp_path / "model.onnxz"
    result = run("pack", model_file, "-o", out)
    assert result.exit_code == 0, result.output
    assert "smaller than the original" in result.output
    assert run("pack", model_file, "-o", tmp_path / "l.onnxz", "--lossless").exit_code == 0
    assert run("pack", model_file, "-o", tmp_path / "s.onnxz", "--step-rel", "0.05",
               "--deadzone", "0.4").exit_code == 0
    info = run("info", tmp_path / "s.onnxz")
    assert info.exit_code == 0 and "deadzone" in info.output and "0.4" in info.output
    data = json.loads(run("info", out, "--json").output)
    assert {t["name"] for t in data["tensors"]} == {"conv_w"}  # conv_b's 256 B: in the graph
    assert "bits_per_weight" in data["tensors"][0]
    result = run("unpack", out, "-o", tmp_path / "back.onnx")
    assert result.exit_code == 0 and (tmp_path / "back.onnx").exists()


def test_unpack_json_says_what_was_written_and_not_a_stale_data_file(model_file, tmp_path):
    """`unpack --json` gives the output, its bytes and the external data file it wrote. A
    data file of an earlier run beside the output (seconds old) was once reported as
    written; now only one this run moved into place is."""
    packed = tmp_path / "m.onnxz"
    assert run("pack", model_file, "-o", packed, "--lossless").exit_code == 0
    back = tmp_path / "back.onnx"
    result = run("unpack", packed, "-o", back, "--json", "--external-data")
    split = json.loads(result.output)
    assert result.exit_code == 0 and split["output"] == str(back)
    assert split["external_data"] == str(back) + ".data"
    assert split["external_data_bytes"] == (tmp_path / "back.onnx.data").stat().st_size > 0
    assert split["bytes"] == back.stat().st_size and split["seconds"] >= 0
    whole = json.loads(run("unpack", packed, "-o", back, "--force", "--json").output)
    assert whole["external_data"] is None and whole["external_data_bytes"] is None
    assert whole["bytes"] == back.stat().st_size > split["bytes"]
    assert ".data" not in run("unpack", packed, "-o", back, "--force").output


def test_pack_json_output(model_file, tmp_path):
    result = run("pack", model_file, "-o", tmp_path / "m.onnxz", "--json")
    assert json.loads(result.output)["file_bytes"] > 0


@pytest.mark.parametrize("args", [
    ("unpack", "missing.onnxz", "-o", "x.onnx"),
    ("info", "missing.onnxz"),
    ("pack", "missing.onnx"),
    ("pack", "."),                          # usage errors too: a directory as MODEL,
    ("pack", "m.onnx", "-o", "-"),          # standard output as OUTPUT,
    ("unpack", "m.onnxz", "-o", ""),        # an empty OUTPUT,
    ("pack", "m.onnx", "--no-such-option"),  # an unknown option
])
def test_errors_are_one_line_with_nonzero_exit(tmp_path, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("onnxz: error: ")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_step_rel_takes_a_ratio_as_the_docs_write_it(model_file, tmp_path):
    """`--step-rel 1/32` (the README's notation) is the step 0.03125; what is not a positive
    finite number is a one-line error."""
    ratio, decimal = tmp_path / "r.onnxz", tmp_path / "d.onnxz"
    assert run("pack", model_file, "-o", ratio, "--step-rel", "1/32").exit_code == 0
    assert run("pack", model_file, "-o", decimal, "--step-rel", "0.03125").exit_code == 0
    assert ratio.read_bytes() == decimal.read_bytes()
    for wrong in ("0", "-1/32", "1/0", "nan", "inf", "1/x", "1/2/3", "1/", "/32"):
        result = run("pack", model_file, "-o", tmp_path / "w.onnxz", "--step-rel", wrong)
        assert result.exit_code == 2 and result.output.count("\n") == 1, wrong
        assert "not a positive finite number" in result.output, wrong
    assert not (tmp_path / "w.onnxz").exists()


def test_existing_output_without_force(model_file, tmp_path):
    out = tmp_path / "m.onnxz"
    assert run("pack", model_file, "-o", out).exit_code == 0
    again = run("pack", model_file, "-o", out)
    assert again.exit_code == 2 and "--force" in again.output
    assert run("pack", model_file, "-o", out, "--force").exit_code == 0


def test_lossless_conflicts_with_step(model_file, tmp_path):
    result = run("pack", model_file, "-o", tmp_path / "m.onnxz", "--lossless",
                 "--step-rel", "0.1")
    assert result.exit_code == 2


def test_help_teaches(tmp_path):
    result = run("pack", "--help")
    assert "--step-rel" in result.output and "standard" in result.output
    assert "Examples" in run("--help").output


def test_damaged_inputs_are_one_line_errors(model_file, tmp_path):
    packed = tmp_path / "m.onnxz"
    assert run("pack", model_file, "-o", packed).exit_code == 0
    data = bytearray(packed.read_bytes())
    data[70] ^= 0x10
    corrupt = tmp_path / "corrupt.onnxz"
    corrupt.write_bytes(data)
    truncated = tmp_path / "truncated.onnxz"
    truncated.write_bytes(data[: len(data) // 2])
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("just some text\n")
    for args in (("unpack", corrupt, "-o", tmp_path / "a.onnx"),
                 ("unpack", truncated, "-o", tmp_path / "b.onnx"),
                 ("unpack", model_file, "-o", tmp_path / "c.onnx"),
                 ("pack", not_onnx, "-o", tmp_path / "d.onnxz")):
        result = run(*args)
        assert result.exit_code == 2, args
        assert result.output.startswith("onnxz: error: ") and result.output.count("\n") == 1
    assert not any((tmp_path / n).exists() for n in ("a.onnx", "b.onnx", "c.onnx", "d.onnxz"))
