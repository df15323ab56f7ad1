"""Issue 11: onnxz against a hostile user. Each test reproduces one reported failure (the item
number is in its docstring): signals and races at points fixed by hooks, never by sleeping."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from models import big_conv, carried_weights_loop, mlp
from onnx import TensorProto, helper, numpy_helper

import onnxz
from onnxz import fileio
from onnxz.cli import main
from onnxz.container import physical_memory
from onnxz.inputs import GeneratedInputs

SUBPROCESS_TIMEOUT = 120  # seconds: far beyond any case here (a few seconds); only a hang


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, exit_code=2) -> str:
    """The message of a CLI result that must be one error line with ``exit_code``."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert result.output.startswith("onnxz: error: ") and result.output.count("\n") == 1, \
        result.output
    return result.output


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(big_conv().SerializeToString())
    return path


@pytest.fixture
def packed_file(tmp_path, model_file) -> Path:
    path = tmp_path / "m.onnxz"
    onnxz.save(model_file, path)
    return path


def external_model(folder: Path, location: str = "weights/w.bin") -> Path:
    """The MLP saved with every weight in one external data file at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(mlp(), path, save_as_external_data=True, location=location,
                    size_threshold=0)
    return path


# --- the CLI in a subprocess, with a hook at a chosen point -------------------------------

HOOKED_CLI = textwrap.dedent("""
    import importlib, os, signal, sys, time
    target, call, action, *args = sys.argv[1:]
    module_name, attribute = target.rsplit(":", 1)
    owner = importlib.import_module(module_name)
    for part in attribute.split(".")[:-1]:
        owner = getattr(owner, part)
    name = attribute.split(".")[-1]
    original, calls = getattr(owner, name), []

    def hooked(*a, **k):
        calls.append(1)
        if len(calls) == int(call):
            folder = os.path.dirname(os.path.abspath(args[args.index("-o") + 1])) \\
                if "-o" in args else "."
            temps = sorted(n for n in os.listdir(folder) if n.startswith(".onnxz-"))
            print("hooked", *temps, flush=True)
            if action == "wait":
                time.sleep(600)
            elif action != "go":
                os.kill(os.getpid(), getattr(signal, action))
        return original(*a, **k)

    setattr(owner, name, hooked)
    from onnxz.cli import main
    main(args, prog_name="onnxz")
""")


def hooked_cli(target: str, call: int, action: str, *args, wait: bool = True, **popen):
    """Run ``onnxz ARGS`` in a subprocess whose ``target`` (``module:attr``) sends ``action``
    (a signal name, or ``wait``: block, or ``go``: only report) to the process on its
    ``call``-th call. Returns the
    process, or its (returncode, stdout, stderr) when ``wait``. The process starts with
    SIGINT at its default, as a command run from a terminal does: a suite run in the
    background of a non-interactive shell inherits SIGINT ignored, and Python keeps it so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOOKED_CLI, target, str(call), action, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    return proc.returncode, out, err


def wait_for_hook(proc: subprocess.Popen) -> list[str]:
    """Block until the subprocess reports its hook; return the temporary files it saw."""
    ready, _, _ = select.select([proc.stdout], [], [], SUBPROCESS_TIMEOUT)
    assert ready, "the hook was never reached"
    line = proc.stdout.readline().split()
    assert line[:1] == ["hooked"], (line, proc.stderr.read() if proc.poll() is not None else "")
    return line[1:]


# --- 2. typed errors at the API border ------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda m, o: onnxz.save(m, o, step_rel=0),
    lambda m, o: onnxz.save(m, o, step_rel=-1),
    lambda m, o: onnxz.save(m, o, step_rel=math.nan),
    lambda m, o: onnxz.save(m, o, step_rel=math.inf),
    lambda m, o: onnxz.save(m, o, step_rel="0.1"),
    lambda m, o: onnxz.save(m, o, deadzone=2),
    lambda m, o: onnxz.save(m, o, deadzone=math.nan),
    lambda m, o: onnxz.save(m, o, force="no"),
    lambda m, o: onnxz.save(m, o, options={"lossless": True}),
    lambda m, o: onnxz.save(m, 42),
    lambda m, o: onnxz.save(None, o),
    lambda m, o: onnxz.save(m, o, progress="bar"),
    lambda m, o: onnxz.PackOptions(chunk_elements=0),
    lambda m, o: onnxz.PackOptions(chunk_elements=2.5),
    lambda m, o: onnxz.ReadLimits(max_output_size="1G"),
    lambda m, o: onnxz.load(o, limits=1 << 30),
    lambda m, o: onnxz.unpack(m, o, external_data="yes"),
    lambda m, o: onnxz.info(3.5),
    lambda m, o: onnxz.inference_session(o, sess_options={"threads": 1}),
    lambda m, o: onnxz.inference_session(o, providers="CPUExecutionProvider"),
    lambda m, o: onnxz.inference_session(o, providers=["NoSuchExecutionProvider"]),
    lambda m, o: onnxz.Thresholds(min_snr_db="30"),
    lambda m, o: onnxz.Thresholds(min_cosine=1.5),
    lambda m, o: onnxz.Thresholds(noise_floor=-1),
    lambda m, o: onnxz.save(m, o, fidelity=123),  # AttributeError: no 'criteria'
    lambda m, o: onnxz.save(m, o, fidelity=["snr>=30"]),
    lambda m, o: onnxz.save(m, o, class_outputs="y"),  # was "class output 'y'" by letter
    lambda m, o: onnxz.save(m, o, class_outputs=[3]),
    lambda m, o: onnxz.Reader(m, workers=0),  # was a plain ValueError
    lambda m, o: onnxz.Reader(m, limits=5),  # was an AttributeError
    # arguments are checked before the input file (o does not exist)
    lambda m, o: onnxz.unpack(o, o.with_suffix(".onnx"), workers=0),
    lambda m, o: onnxz.verify(m, o, progress="bar"),
])
def test_api_misuse_raises_typed_errors(model_file, tmp_path, call):
    """Item 2: ValueError/TypeError/AttributeError from inside became OnnxzError subclasses,
    InvalidArgumentError also a ValueError for callers that caught that."""
    with pytest.raises(onnxz.InvalidArgumentError) as caught:
        call(model_file, tmp_path / "out.onnxz")
    assert isinstance(caught.value, onnxz.OnnxzError | ValueError)
    assert not (tmp_path / "out.onnxz").exists()


@pytest.mark.parametrize("kwargs", [
    {"int_range": (1,)}, {"int_range": (0, 1.5)}, {"int_range": 7}, {"dims": ["seq", 3]},
    {"dims": {"seq": "3"}}, {"dims": {3: 3}}, {"samples": 2.5}, {"samples": True},
    {"seed": -1},
])
def test_generated_inputs_misuse_is_a_verification_input_error(kwargs):
    """Item 2: IndexError/AttributeError/TypeError before."""
    with pytest.raises(onnxz.VerificationInputError):
        GeneratedInputs(**kwargs)


def test_verify_checks_thresholds_and_inputs_arguments(model_file, packed_file):
    """Item 2: ``verify(..., thresholds=5)`` was accepted, then failed with AttributeError."""
    with pytest.raises(onnxz.InvalidArgumentError, match="thresholds must be a Thresholds"):
        onnxz.verify(model_file, packed_file, thresholds=5)
    with pytest.raises(onnxz.InvalidArgumentError, match="inputs must be a path"):
        onnxz.verify(model_file, packed_file, inputs=5)
    with pytest.raises(onnxz.InvalidArgumentError, match="class_outputs must be a list"):
        onnxz.verify(model_file, packed_file, class_outputs="logits")


def test_bytes_paths_work_everywhere(model_file, tmp_path):
    """Item 2: bytes paths raised TypeError; they are file names like any other."""
    out = os.fsencode(tmp_path / "b.onnxz")
    info = onnxz.save(os.fsencode(model_file), out)
    assert info.path == str(tmp_path / "b.onnxz")
    assert onnxz.info(out).file_bytes == info.file_bytes
    onnxz.unpack(out, os.fsencode(tmp_path / "b.onnx"))
    assert onnxz.verify(os.fsencode(model_file), out).passed


def test_a_huge_generated_sample_is_refused_before_allocating(tmp_path):
    """Item 2: ``verify --dim ...`` allocated 224 GiB and died with numpy's MemoryError."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp().SerializeToString())
    onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    rows = physical_memory() // (32 * 8) + 1  # one float64 sample just beyond the memory
    with pytest.raises(onnxz.VerificationInputError, match=r"GiB, more than this machine"):
        onnxz.verify(model, tmp_path / "m.onnxz", GeneratedInputs(dims={"N": rows}))
    message = one_line_error(run("verify", model, tmp_path / "m.onnxz", "--dim", f"N={rows}"))
    assert "--dim" in message


@pytest.mark.parametrize("megabytes", [40, 200])
def test_packing_out_of_memory_is_a_one_line_error(tmp_path, megabytes):
    """Item 2: packing under ``ulimit -v`` ended in a numpy MemoryError traceback (also when
    the limit strikes while protobuf parses the model)."""
    big = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], [big])
    model = tmp_path / "big.onnx"
    onnx.save_model(helper.make_model(graph), model)
    limited = textwrap.dedent("""
        import resource, sys
        import onnxz.cli
        with open("/proc/self/status") as f:
            size = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]) * 2**20, -1))
        onnxz.cli.main(sys.argv[2:], prog_name="onnxz")
    """)
    proc = subprocess.run([sys.executable, "-c", limited, str(megabytes), "pack", str(model), "-o",
                           str(tmp_path / "big.onnxz")], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("onnxz: error: ") and proc.stderr.count("\n") == 1
    assert "out of memory" in proc.stderr and "Traceback" not in proc.stderr
    assert names(tmp_path) == ["big.onnx"]


def test_test_data_with_external_data_is_read_beside_the_tensor(tmp_path, monkeypatch):
    """Item 2: ``input_0.pb`` with external data raised onnx's ValidationError, and its
    location was resolved against the current directory."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp().SerializeToString())
    onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    sample = tmp_path / "data" / "test_data_set_0"
    sample.mkdir(parents=True)
    x = numpy_helper.from_array(np.ones((1, 32), np.float32), "x")
    onnx.external_data_helper.set_external_data(x, "x.bin")
    (sample / "x.bin").write_bytes(x.raw_data)
    x.ClearField("raw_data")
    x.data_location = TensorProto.EXTERNAL
    (sample / "input_0.pb").write_bytes(x.SerializeToString())
    monkeypatch.chdir(tmp_path)  # not the folder of the tensor
    assert onnxz.verify(model, tmp_path / "m.onnxz", tmp_path / "data").passed
    data = (tmp_path / "data").rename(tmp_path / os.fsdecode(b"data\xff"))  # not UTF-8
    assert onnxz.verify(model, tmp_path / "m.onnxz", data).passed
    x.external_data[0].value = "../../outside.bin"
    (data / "test_data_set_0" / "input_0.pb").write_bytes(x.SerializeToString())
    with pytest.raises(onnxz.VerificationInputError, match=r"input_0\.pb: not a readable"):
        onnxz.verify(model, tmp_path / "m.onnxz", data)


def test_unwritable_stdout_is_an_error_and_a_closed_pipe_ends_quietly(packed_file):
    """Item 2: ``onnxz info X > /dev/full`` ended in an OSError traceback."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "onnxz", "info", str(packed_file)],
                              stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr == ("onnxz: error: cannot write to standard output: No space left on "
                           "device\n")
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "onnxz", "info", str(packed_file)],
                              stdout=writer, stderr=subprocess.PIPE, text=True,
                              timeout=SUBPROCESS_TIMEOUT)
    finally:
        os.close(writer)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")


# --- 3, 10. signals: exit 128 + N, nothing left behind ---------------------------------------

@pytest.mark.parametrize("action, status", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_signal_during_pack_removes_the_temporary_file(model_file, tmp_path, action, status):
    """Items 3 and 10: SIGTERM/SIGHUP left ``.m.onnxz.XXXX.part`` files; Ctrl-C exited 1."""
    code, _, err = hooked_cli("onnxz.container:ContainerWriter.add_chunk", 1, action,
                              "pack", model_file, "-o", tmp_path / "m.onnxz")
    assert (code, err) == (status, f"onnxz: stopped by {action}\n")
    assert names(tmp_path) == ["m.onnx"]


def test_sigterm_during_unpack_removes_both_temporary_files(packed_file, tmp_path):
    """Item 3: the model and its external data file are both unfinished at this point."""
    code, out, err = hooked_cli("onnxz.modelio:ExternalDataWriter.add", 1, "SIGTERM", "unpack",
                                packed_file, "-o", tmp_path / "out.onnx", "--external-data")
    hook, *temps = out.split()
    assert hook == "hooked" and len(temps) == 2
    assert (code, err) == (143, "onnxz: stopped by SIGTERM\n")
    assert names(tmp_path) == ["m.onnx", "m.onnxz"]


@pytest.mark.parametrize("command", ["verify", "info"])
def test_ctrl_c_exits_130_in_every_command(model_file, packed_file, command):
    """Item 10: Ctrl-C during verify exited 1, which means "verification failed"."""
    target = "onnxz.verifier:run_session" if command == "verify" else "onnxz.api:ContainerReader"
    args = (model_file, packed_file) if command == "verify" else (packed_file,)
    code, _, err = hooked_cli(target, 1, "SIGINT", command, *args)
    assert (code, err) == (130, "onnxz: stopped by SIGINT\n")


@pytest.mark.parametrize("action, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_the_command_sets_its_handlers_is_one_line(packed_file, action, status):
    """A SIGTERM while the stop-signal watcher thread started (randomly timed signals on
    every command) escaped the command's handler: a traceback ending in ``_Stopped: SIGTERM``
    and status 1."""
    code, _, err = hooked_cli("onnxz.cli:stopping_runs", 1, action, "info", packed_file)
    assert (code, err) == (status, f"onnxz: stopped by {action}\n")


INTERRUPT_TURNED_INTO_IMPORT_ERROR = textwrap.dedent("""
    import os, signal, sys
    import onnxz
    from onnxz.cli import main

    def info(path):  # as numpy's and onnxruntime's imports do with a KeyboardInterrupt
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    onnxz.info = info
    main(sys.argv[1:], prog_name="onnxz")
""")


def test_ctrl_c_that_a_library_turns_into_its_own_error_still_exits_130(packed_file):
    """Ctrl-C while verify imported onnxruntime (randomly timed signals): its C extension's
    import failed with ImportError("initialization failed"), which ended in a traceback
    and status 1. A stop signal that arrived decides the outcome, whatever error follows."""
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_TURNED_INTO_IMPORT_ERROR, "info",
                           str(packed_file)], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (proc.returncode, proc.stderr) == (130, "onnxz: stopped by SIGINT\n")


CTRL_C_WHILE_LOADING = textwrap.dedent("""
    import sys

    class CtrlC:  # the key pressed while the CLI's libraries load
        def find_spec(self, name, path=None, target=None):
            if name == "onnxz.cli":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    from onnxz.console import main
    main()
""")


def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(tmp_path):
    """Ctrl-C in the second or more that loading onnx, onnxruntime and numpy takes ended in
    a traceback from inside ml_dtypes' import (``timeout -s INT 0.8 onnxz pack ...``)."""
    proc = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_LOADING, "pack", "m.onnx"],
                          capture_output=True, text=True, cwd=tmp_path,
                          timeout=SUBPROCESS_TIMEOUT)
    assert (proc.returncode, proc.stderr) == (130, "onnxz: stopped by SIGINT\n")
    assert names(tmp_path) == []


def test_ctrl_c_that_a_library_swallows_while_the_cli_loads_still_exits_130(tmp_path):
    """Ctrl-C that a library's import caught (an extension's import makes it an ImportError,
    which some libraries take for a missing optional module): the command went on and
    finished, status 0, the Ctrl-C lost (tools/fuzz_signals.py, once in 60 cases)."""
    swallowed = CTRL_C_WHILE_LOADING.replace("raise KeyboardInterrupt", (
        "try:\n"
        "                signal.raise_signal(signal.SIGINT)\n"
        "            except KeyboardInterrupt:\n"
        "                pass")).replace("import sys", "import signal, sys")
    proc = subprocess.run([sys.executable, "-c", swallowed, "pack", "m.onnx"],
                          capture_output=True, text=True, cwd=tmp_path,
                          timeout=SUBPROCESS_TIMEOUT)
    assert (proc.returncode, proc.stderr) == (130, "onnxz: stopped by SIGINT\n")


CTRL_C_SWALLOWED_BY_A_LAZY_IMPORT = textwrap.dedent("""
    import signal, sys

    class SwallowingImport:  # onnxruntime, imported once pack runs the model
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime":
                sys.meta_path.remove(self)
                try:
                    signal.raise_signal(signal.%s)
                except BaseException:  # a library taking it for a failed import
                    pass
            return None

    sys.meta_path.insert(0, SwallowingImport())
    from onnxz.console import main
    main()
""")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_during_a_librarys_import_in_a_command_still_stops_it(model_file,
                                                                            tmp_path, stop):
    """A stop signal that reached a command while a library it loads lazily was being
    imported (onnxruntime in `pack`): the import took the exception for an error of its
    own and went on, and the command finished, status 0 (tools/fuzz_signals.py: 2 cases
    in 60). The handler now sends the signal again after the import."""
    script = CTRL_C_SWALLOWED_BY_A_LAZY_IMPORT % stop
    proc = subprocess.run([sys.executable, "-c", script, "pack", str(model_file), "-o",
                           "m.onnxz"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=SUBPROCESS_TIMEOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    code = 128 + getattr(signal, stop)
    assert (proc.returncode, proc.stderr) == (code, f"onnxz: stopped by {stop}\n")
    assert names(tmp_path) == ["m.onnx"]


def test_ctrl_c_inside_a_librarys_exec_still_exits_130_under_python_m(tmp_path):
    """Ctrl-C while a library's import ran an ``exec`` of a string (a dataclass's methods
    are made so): CPython marks the interrupt unhandled even though the command catches
    it, and ``python -m onnxz`` printed its line and then killed itself with SIGINT (status
    -2, one Ctrl-C in six while the CLI loaded, tools/fuzz_signals.py)."""
    (tmp_path / "ctrl_c_in_exec.py").write_text(CTRL_C_WHILE_LOADING.replace(
        "raise KeyboardInterrupt", 'exec("raise KeyboardInterrupt", {})'))
    proc = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec", "pack", "m.onnx"],
                          capture_output=True, text=True, cwd=tmp_path,
                          timeout=SUBPROCESS_TIMEOUT)
    assert (proc.returncode, proc.stderr) == (130, "onnxz: stopped by SIGINT\n")


@pytest.mark.parametrize("command", ["pack", "verify"])
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_model_run_in_progress(tmp_path, command, stop):
    """Ctrl-C or SIGTERM during a model run waited for the run to end (Python runs signal
    handlers between bytecodes, and onnxruntime's run is one call): 5–35 s in SVTRv2's
    default pack, for ever here (a Loop of 2^62 steps). The run now ends at once."""
    model = tmp_path / "m.onnx"
    onnx.save(carried_weights_loop(steps=2**62), model)
    packed = tmp_path / "m.onnxz"
    if command == "verify":
        onnxz.save(model, packed, lossless=True)
        args = ("verify", model, packed)
    else:
        args = ("pack", model, "-o", packed)
    proc = hooked_cli("onnxz.verifier:run_session", 1, "go", *args, wait=False)
    try:
        wait_for_hook(proc)
        time.sleep(0.5)  # well into the run
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (128 + getattr(signal, stop), f"onnxz: stopped by {stop}\n")
    assert names(tmp_path) == (["m.onnx", "m.onnxz"] if command == "verify" else ["m.onnx"])


def test_sigterm_from_another_process(model_file, tmp_path):
    """Item 3: a real external kill while the output is being written."""
    proc = hooked_cli("onnxz.container:ContainerWriter.add_chunk", 1, "wait",
                      "pack", model_file, "-o", tmp_path / "m.onnxz", wait=False)
    temps = wait_for_hook(proc)
    assert len(temps) == 1 and fileio.TEMP_NAME.fullmatch(temps[0])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert (proc.returncode, err) == (143, "onnxz: stopped by SIGTERM\n")
    assert names(tmp_path) == ["m.onnx"]


def test_leftover_of_a_killed_process_is_removed_once_stale(model_file, tmp_path):
    """Item 3: a SIGKILLed pack leaves its temporary file (nothing can run); the next onnxz
    writing there removes it once unlocked and older than STALE_AFTER, never before."""
    proc = hooked_cli("onnxz.container:ContainerWriter.add_chunk", 1, "wait",
                      "pack", model_file, "-o", tmp_path / "a.onnxz", wait=False)
    (temp,) = wait_for_hook(proc)
    leftover = tmp_path / temp
    old = time.time() - 2 * fileio.STALE_AFTER
    os.utime(leftover, (old, old))
    onnxz.save(model_file, tmp_path / "b.onnxz")
    assert leftover.exists()  # old, but its writer lives and holds the lock
    proc.kill()
    proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    os.utime(leftover, None)
    onnxz.save(model_file, tmp_path / "c.onnxz")
    assert leftover.exists()  # dead writer, but fresh: it may be a file just being created
    os.utime(leftover, (old, old))
    unrelated = tmp_path / ".onnxz-notmine.tmp"
    unrelated.write_bytes(b"")
    os.utime(unrelated, (old, old))
    onnxz.save(model_file, tmp_path / "d.onnxz")
    assert not leftover.exists() and unrelated.exists()
    assert names(tmp_path) == [".onnxz-notmine.tmp", "b.onnxz", "c.onnxz", "d.onnxz", "m.onnx"]


# --- 4. no replacement without --force, even in a race --------------------------------------

def test_file_created_during_pack_is_never_replaced(model_file, tmp_path):
    """Item 4: ``echo precious > big.onnxz`` during a pack: the pack replaced it, exit 0."""
    out = tmp_path / "big.onnxz"

    def someone_writes(done, total, name):
        out.write_text("precious")

    with pytest.raises(onnxz.OutputExistsError, match="already exists"):
        onnxz.save(model_file, out, progress=someone_writes)
    assert out.read_text() == "precious"
    assert names(tmp_path) == ["big.onnxz", "m.onnx"]


def test_two_packs_to_one_new_path_do_not_both_succeed(model_file, tmp_path):
    """Item 4: both exited 0 and one result vanished; now the second to finish fails."""
    out = tmp_path / "big.onnxz"
    inner: list[onnxz.ContainerInfo] = []

    def another_pack(done, total, name):
        if not inner:
            inner.append(onnxz.save(model_file, out, lossless=True))

    with pytest.raises(onnxz.OutputExistsError, match="already exists"):
        onnxz.save(model_file, out, progress=another_pack)
    assert onnxz.info(out).file_bytes == inner[0].file_bytes == out.stat().st_size
    assert names(tmp_path) == ["big.onnxz", "m.onnx"]


def test_no_replacement_also_where_hard_links_are_missing(model_file, tmp_path, monkeypatch):
    """Item 4: on a file system without hard links (FAT) the name is claimed with O_EXCL."""
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "link", no_links)
    out = tmp_path / "m.onnxz"
    onnxz.save(model_file, out)
    assert onnxz.load(out).graph.node

    def someone_writes(done, total, name):
        out.write_text("precious")

    out.unlink()
    with pytest.raises(onnxz.OutputExistsError):
        onnxz.save(model_file, out, progress=someone_writes)
    assert out.read_text() == "precious" and names(tmp_path) == ["m.onnx", "m.onnxz"]


# --- 5. --force never replaces what is not a regular file -----------------------------------

def test_force_refuses_fifos_links_and_devices(model_file, tmp_path):
    """Item 5: ``--force`` replaced a device node, a FIFO and a symlink with a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "target.onnxz"
    target.write_text("kept")
    link = tmp_path / "link.onnxz"
    link.symlink_to(target)
    to_stdout = tmp_path / "stdout.onnxz"
    to_stdout.symlink_to("/proc/self/fd/1")
    for out, kind in ((fifo, "a FIFO"), (link, "a symbolic link"),
                      (to_stdout, "a symbolic link")):
        message = one_line_error(run("pack", model_file, "-o", out, "--force"))
        assert kind in message
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    to_dash = run("pack", model_file, "-o", "-")  # no file named "-" appears by surprise
    assert to_dash.exit_code == 2 and "standard output is not supported" in to_dash.output
    assert target.read_text() == "kept"
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return  # not root: the device case cannot be built here
    assert "a character device" in one_line_error(
        run("pack", model_file, "-o", tmp_path / "null", "--force"))
    assert stat.S_ISCHR((tmp_path / "null").lstat().st_mode)


# --- 6, 18. inputs are never outputs; outputs are checked before the work -------------------

def test_external_data_of_the_input_is_never_overwritten(tmp_path):
    """Item 6: ``pack ext/model.onnx -o ext/weights/w.bin --force`` destroyed the weights."""
    model = external_model(tmp_path / "ext")
    weights = tmp_path / "ext" / "weights" / "w.bin"
    before = weights.read_bytes()
    message = one_line_error(run("pack", model, "-o", weights, "--force"))
    assert "a file this command reads" in message
    hard_link = tmp_path / "alias.onnxz"  # the model under another name
    os.link(model, hard_link)
    with pytest.raises(onnxz.OutputPathError, match="a file this command reads"):
        onnxz.save(model, hard_link, force=True)
    assert weights.read_bytes() == before


def test_unpack_checks_the_output_before_decoding(packed_file, tmp_path, monkeypatch):
    """Item 18: unpack decoded the whole model (60 s, 4.7 GB) before failing on the path."""
    decoded = []
    monkeypatch.setattr(onnxz.api, "load", lambda *a, **k: decoded.append(a))
    with pytest.raises(onnxz.OutputPathError, match="no such directory"):
        onnxz.unpack(packed_file, tmp_path / "missing" / "out.onnx")
    (tmp_path / "out.onnx").write_text("kept")
    with pytest.raises(onnxz.OutputExistsError):
        onnxz.unpack(packed_file, tmp_path / "out.onnx")
    assert decoded == []


# --- 7. what cannot be read back never appears ----------------------------------------------

def test_invalid_model_leaves_no_output(tmp_path):
    """Item 7: dims [-64, -32] with 8 KB of raw data: exit 2 but an unreadable file stayed,
    and the next run said "already exists"."""
    weight = numpy_helper.from_array(np.ones((64, 32), np.float32), "w")
    weight.dims[:] = [-64, -32]
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        "w", TensorProto.FLOAT, None)], [weight])
    model = tmp_path / "n3.onnx"
    model.write_bytes(helper.make_model(graph).SerializeToString())
    for _ in range(2):
        message = one_line_error(run("pack", model))
        assert "negative dimension" in message and message.startswith(f"onnxz: error: {model}")
    assert names(tmp_path) == ["n3.onnx"]


def test_output_is_read_back_before_it_appears(model_file, tmp_path, monkeypatch):
    """Item 7: the check ran after the rename; now a file that does not read back never
    gets its name."""
    class Unreadable:
        def __init__(self, *args):
            raise onnxz.FormatError("index: not valid msgpack")

    monkeypatch.setattr(onnxz.api, "ContainerReader", Unreadable)
    with pytest.raises(onnxz.FormatError):
        onnxz.save(model_file, tmp_path / "out.onnxz")
    assert names(tmp_path) == ["m.onnx"]


# --- 8. permissions ------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_outputs_follow_the_umask(model_file, tmp_path, umask, mode):
    """Item 8: outputs were always 0600 (mkstemp), unreadable to other users."""
    previous = os.umask(umask)
    try:
        onnxz.save(model_file, tmp_path / "m.onnxz")
        onnxz.unpack(tmp_path / "m.onnxz", tmp_path / "back.onnx", external_data=True)
    finally:
        os.umask(previous)
    for name in ("m.onnxz", "back.onnx", "back.onnx.data"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_replaced_outputs_keep_their_mode_and_owner(model_file, tmp_path):
    """Item 8: ``--force`` silently turned a 0664 file into 0600."""
    out = tmp_path / "m.onnxz"
    out.write_text("old")
    out.chmod(0o664)
    assert run("pack", model_file, "-o", out, "--force").exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o664 and onnxz.info(out).tensors
    if os.geteuid() != 0:
        return  # only root can make a file someone else's
    os.chown(out, 4321, 4321)
    out.chmod(0o640)
    onnxz.save(model_file, out, force=True, lossless=True)
    st = out.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4321, 0o640)


# --- 9. long names ---------------------------------------------------------------------------

def test_names_of_255_bytes_work(model_file, tmp_path):
    """Item 9: the temporary name added 15 bytes: names of 241–255 bytes failed."""
    out = tmp_path / ("x" * 249 + ".onnxz")
    assert len(out.name) == 255
    assert run("pack", model_file, "-o", out).exit_code == 0
    back = tmp_path / ("y" * 250 + ".onnx")
    assert run("unpack", out, "-o", back).exit_code == 0 and back.exists()
    message = one_line_error(run("pack", model_file, "-o", tmp_path / ("z" * 256)))
    assert "File name too long" in message


# --- 11, 12. verify: NaN, and outputs of ~0 --------------------------------------------------

@pytest.mark.parametrize("option", ["--min-snr", "--min-cosine", "--min-top1", "--noise-floor"])
def test_nan_thresholds_are_refused(model_file, packed_file, option):
    """Item 11: ``--min-snr nan --min-cosine nan --min-top1 nan`` passed a failing pack."""
    result = run("verify", model_file, packed_file, option, "nan")
    assert result.exit_code == 2 and "NaN" in result.output
    with pytest.raises(onnxz.InvalidArgumentError, match="nan"):
        onnxz.Thresholds(**{option[2:].replace("-", "_").replace("snr", "snr_db"): math.nan})


def _mlp_with(tmp_path: Path, name: str, change) -> Path:
    """The MLP with its first weight changed by ``change(array)``, packed losslessly."""
    model = mlp()
    w1 = numpy_helper.to_array(model.graph.initializer[0])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(change(w1.copy()), "w1"))
    path = tmp_path / f"{name}.onnxz"
    onnxz.save(model, path, lossless=True)
    return path


def test_nan_where_the_original_is_finite_fails(tmp_path):
    """Item 11: NaN outputs must fail against finite ones; NaN everywhere in both (nothing
    compared) must not pass either."""
    def poison(w):
        w[:] = np.nan
        return w

    nan_packed = _mlp_with(tmp_path, "nan", poison)
    report = onnxz.verify(mlp(), nan_packed)
    assert not report.passed
    assert {f.metric for f in report.failures} == {"snr_db", "cosine_min"}
    strict_json(json.dumps(report.to_dict(), allow_nan=False))
    nan_original = mlp()
    nan_original.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        poison(numpy_helper.to_array(nan_original.graph.initializer[0]).copy()), "w1"))
    both = onnxz.verify(nan_original, nan_packed)
    assert [f.metric for f in both.failures] == ["finite"]
    assert "no finite value" in both.table()


def _tiny_output_model(weight: float, scale: float) -> onnx.ModelProto:
    """y = scale · Relu(x·w − 3), w = ``weight`` everywhere: 0 unless x·w exceeds 3, like a
    detector's probability map with nothing found."""
    w = weight * np.random.default_rng(0).standard_normal((8, 16))
    initializers = [numpy_helper.from_array(w.astype(np.float32), "w"),
                    numpy_helper.from_array(np.float32(3), "c"),
                    numpy_helper.from_array(np.float32(scale), "s")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Sub", ["h", "c"], ["z"]),
         helper.make_node("Relu", ["z"], ["r"]), helper.make_node("Mul", ["r", "s"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_of_about_zero_are_not_failed_on_noise(tmp_path):
    """Item 12: original exactly 0, packed ~1e-9: "cosine 0, SNR -inf"; differences within
    the noise floor now count as none, while real damage still fails."""
    original = _tiny_output_model(0.1, 1e-9)  # x·w ~ N(0, 0.3²): never above 3
    packed = tmp_path / "tiny.onnxz"
    onnxz.save(_tiny_output_model(1.0, 1e-9), packed, lossless=True)  # sometimes above 3
    exact = onnxz.verify(original, packed, thresholds=onnxz.Thresholds(noise_floor=0))
    (y,) = exact.outputs
    assert y.original_max_abs == 0 and 0 < y.max_abs_error < 1e-8
    assert {"snr_db", "cosine_min"} <= {f.metric for f in exact.failures}  # the old verdict
    report = onnxz.verify(original, packed)
    assert report.passed and report.outputs[0].snr_db == math.inf
    assert report.outputs[0].max_abs_error == y.max_abs_error  # errors stay raw, as measured
    damaged = tmp_path / "damaged.onnxz"
    onnxz.save(_tiny_output_model(1.0, 1.0), damaged, lossless=True)  # the same, at scale 1
    assert {"snr_db", "cosine_min"} <= {f.metric for f in onnxz.verify(original,
                                                                        damaged).failures}


def test_noise_floor_rule_is_relative_above_scale_one():
    """Item 12: ε = noise_floor × max(1, the sample's peak |original|)."""
    from onnxz.inputs import TensorSpec
    from onnxz.verifier import _Accumulator

    acc = _Accumulator(TensorSpec("y", np.dtype(np.float32), (3,)), noise_floor=1e-5)
    acc.add(np.array([1000.0, 0.0, -1.0]), np.array([1000.009, 0.009, -1.0]))
    within = acc.result()
    assert within.snr_db == math.inf and within.max_abs_error == pytest.approx(0.009)
    acc.add(np.array([1000.0, 0.0, -1.0]), np.array([1000.0, 0.011, -1.0]))
    assert acc.result().snr_db < math.inf


@pytest.mark.slow
def test_near_lossless_detector_passes_verify(corpus, tmp_path):
    """Item 12 on the real model of the report: PP-OCRv4 det at step 1/512 on a generated
    input failed (max |original| 5e-7, max error 1.2e-7: SNR 11.5 dB, cosine 0)."""
    packed = tmp_path / "det.onnxz"
    onnxz.save(corpus["ppocr_det"], packed, step_rel=1 / 512)
    samples = GeneratedInputs(samples=1)
    exact = onnxz.verify(corpus["ppocr_det"], packed, samples, onnxz.Thresholds(noise_floor=0))
    assert not exact.passed and exact.outputs[0].original_max_abs < 1e-5
    assert onnxz.verify(corpus["ppocr_det"], packed, samples).passed


# --- 13. non-UTF-8 names ---------------------------------------------------------------------

@pytest.mark.parametrize("external", [False, True])
def test_verify_takes_a_model_path_that_is_not_utf8(tmp_path, external):
    """Item 13: verify failed with "incompatible constructor arguments" on such a name."""
    if external:
        source = external_model(tmp_path / "plain", "w.bin")
    else:
        (tmp_path / "plain").mkdir()
        source = tmp_path / "plain" / "model.onnx"
        source.write_bytes(mlp().SerializeToString())
    folder = tmp_path / os.fsdecode(b"d\xff")
    source.parent.rename(folder)  # onnx cannot even write external data there
    name = folder / os.fsdecode(b"m\xfe.onnx")
    (folder / "model.onnx").rename(name)
    onnxz.save(name, folder / "m.onnxz")
    assert onnxz.verify(name, folder / "m.onnxz").passed
    proc = subprocess.run([sys.executable, "-m", "onnxz", "verify", name, folder / "m.onnxz"],
                          capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0 and b"PASSED" in proc.stdout, proc.stderr


# --- 14, 15. JSON and ratios -----------------------------------------------------------------

def test_json_is_strict_for_a_tensor_coded_in_zero_bytes(tmp_path):
    """Item 14: a constant tensor codes to 0 bytes and ``"ratio": Infinity`` was printed."""
    zeros = numpy_helper.from_array(np.zeros(4096, np.float32), "zeros")
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        "zeros", TensorProto.FLOAT, [4096])], [zeros])
    model = tmp_path / "zeros.onnx"
    model.write_bytes(helper.make_model(graph).SerializeToString())
    packed = tmp_path / "zeros.onnxz"
    data = strict_json(run("pack", model, "-o", packed, "--json").output)
    (tensor,) = data["tensors"]
    assert tensor["coded_bytes"] == 0 and tensor["ratio"] is None
    assert strict_json(run("info", packed, "--json").output)["tensors"][0]["ratio"] is None


def test_ratio_says_larger_when_the_file_grew(tmp_path):
    """Item 15: a model with no weights said "0.21x smaller" when the file grew."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = tmp_path / "relu.onnx"
    model.write_bytes(helper.make_model(graph).SerializeToString())
    result = run("pack", model)
    info = onnxz.info(tmp_path / "relu.onnxz")
    assert info.ratio < 1 and f"{1 / info.ratio:.2f}x larger than the original" in result.output
    assert "smaller" not in result.output
    assert "x larger)" in run("info", tmp_path / "relu.onnxz").output


def test_ratio_counts_the_external_data_files(tmp_path):
    """Item 15: only the .onnx was counted ("0.36x smaller" for a pack 2.5× smaller)."""
    model = external_model(tmp_path)
    info = onnxz.save(model, tmp_path / "m.onnxz", lossless=True)
    total = model.stat().st_size + (tmp_path / "weights" / "w.bin").stat().st_size
    assert info.source_bytes == total and info.ratio == total / info.file_bytes > 1


# --- 16. limits ------------------------------------------------------------------------------

def test_unpack_limit_is_an_option_and_defaults_to_the_machine(tmp_path):
    """Item 16: a 1.1 GiB all-zero tensor packs to 475 B, then unpack refused it (limit 1 GiB)
    with no way to raise the limit from the CLI."""
    assert onnxz.ReadLimits().output_budget(475) == max(physical_memory(), 475_000)
    assert physical_memory() > 1153433600  # so that file unpacks on this machine
    ones = numpy_helper.from_array(np.ones(1 << 22, np.uint8), "ones")
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(
        "ones", TensorProto.UINT8, [1 << 22])], [ones])
    packed = tmp_path / "ones.onnxz"
    onnxz.save(helper.make_model(graph), packed, lossless=True)
    message = one_line_error(run("unpack", packed, "--max-output-size", "1M"))
    assert "--max-output-size" in message and message.startswith(f"onnxz: error: {packed}: ")
    assert run("unpack", packed, "--max-output-size", "4M").exit_code == 0
    assert "not a size" in run("unpack", packed, "--max-output-size", "lots").output


# --- 19. messages that name what the user gave ----------------------------------------------

def test_format_errors_name_the_file(packed_file, tmp_path):
    """Item 19: "onnxz: error: index: ..." did not say which file."""
    data = bytearray(packed_file.read_bytes())
    data[-45] ^= 0xFF  # in the footer
    damaged = tmp_path / "damaged.onnxz"
    damaged.write_bytes(data)
    for args in (("info", damaged), ("unpack", damaged, "-o", tmp_path / "x.onnx")):
        assert one_line_error(run(*args)).startswith(f"onnxz: error: {damaged}: index: ")
    short = tmp_path / "short.onnxz"
    short.write_bytes(packed_file.read_bytes()[:10])
    assert "truncated" in one_line_error(run("info", short))


def test_write_errors_name_the_users_path(model_file, tmp_path):
    """Item 19: ENOSPC/EFBIG named no path, and permission errors the hidden temporary file.
    A file size limit (``ulimit -f``) makes the kernel refuse the write, as a full disk."""
    out = tmp_path / "m.onnxz"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    proc = subprocess.run([sys.executable, "-m", "onnxz", "pack", str(model_file), "-o",
                           str(out)], capture_output=True, text=True, preexec_fn=limit_file_size,
                          timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr == f"onnxz: error: {out}: cannot write: File too large\n"
    assert names(tmp_path) == ["m.onnx"]


def test_permission_error_names_the_output_not_the_temporary_file(model_file, tmp_path,
                                                                  monkeypatch):
    """Item 19 (simulated: root may write anywhere)."""
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if flags & os.O_EXCL:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "open", denied)
    message = one_line_error(run("pack", model_file, "-o", tmp_path / "m.onnxz"))
    assert message.startswith(f"onnxz: error: {tmp_path / 'm.onnxz'}: cannot create")
    assert "Permission denied" in message and ".onnxz-" not in message


def test_other_messages_that_missed_the_point(model_file, packed_file, tmp_path):
    """Item 19: a FIFO given to --inputs was "no such file or folder"; a missing
    opset_import was "no graph or no IR version"; a string input was called "object"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    message = one_line_error(run("verify", model_file, packed_file, "--inputs", fifo))
    assert "not a regular file or a folder" in message
    no_opset = mlp()
    del no_opset.opset_import[:]
    (tmp_path / "no_opset.onnx").write_bytes(no_opset.SerializeToString())
    assert "no opset_import" in one_line_error(run("pack", tmp_path / "no_opset.onnx"))
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "g",
                              [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, [2])])
    strings = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnxz.save(strings, tmp_path / "s.onnxz")
    with pytest.raises(onnxz.VerificationInputError, match="'s' is string") as caught:
        onnxz.verify(strings, tmp_path / "s.onnxz")
    assert "object" not in str(caught.value)


# --- 20. no onnxruntime until a session is made ---------------------------------------------

def test_import_and_pack_do_not_load_onnxruntime(model_file, tmp_path):
    """Item 20: ``import onnxz`` loaded onnxruntime, whose telemetry warning then appeared
    before every ``pack`` of a user with an unwritable HOME. (The lossy default runs the
    model, so it loads onnxruntime; a lossless or fixed-step pack does not.)"""
    probe = textwrap.dedent("""
        import sys
        import onnxz.cli
        onnxz.cli.main(sys.argv[1:], prog_name="onnxz", standalone_mode=False)
        print("onnxruntime" in sys.modules)
    """)
    for args in (["pack", str(model_file), "-o", str(tmp_path / "m.onnxz"), "-q", "--lossless"],
                 ["unpack", str(tmp_path / "m.onnxz"), "-o", str(tmp_path / "u.onnx"), "-q"],
                 ["info", str(tmp_path / "m.onnxz")]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, timeout=SUBPROCESS_TIMEOUT)
        assert proc.stdout.splitlines()[-1] == "False", (args, proc.stderr)


# --- durability ------------------------------------------------------------------------------

def test_outputs_are_flushed_before_they_get_their_name(model_file, tmp_path, monkeypatch):
    """The temporary file is fsync'ed before the link, the directory after it (what git does
    for packs and SQLite for journals), so a power loss shows the old state or the new one."""
    events = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def link(src, dst, **kwargs):
        events.append("link")
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "link", link)
    onnxz.save(model_file, tmp_path / "m.onnxz")
    assert events == ["file", "link", "dir"]


MAIN_PROCESS_ENDS_UNDER_ITS_POOL = textwrap.dedent("""
    import os
    from onnxz import parallel

    pool = parallel.WorkerPool(2)
    list(pool.map(abs, [-1, -2, -3, -4]))  # both workers started
    print(*pool._executor._processes, flush=True)
    os._exit(0)  # ended without stopping them, as a stop signal mid-start could
""")


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (no reaper in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="prctl's parent-death signal: Linux")
def test_workers_end_with_their_main_process(tmp_path):
    """A stop signal that reached `pack` while its pool forked a worker ended the command
    before the pool knew of that worker, which then waited for tasks for ever, holding
    the command's stderr (tools/fuzz_signals.py: `pack` never ended for its caller)."""
    listed = tmp_path / "workers.txt"
    with listed.open("w") as out:
        subprocess.run([sys.executable, "-c", MAIN_PROCESS_ENDS_UNDER_ITS_POOL], stdout=out,
                       stderr=subprocess.DEVNULL, timeout=SUBPROCESS_TIMEOUT, check=True)
    workers = [int(pid) for pid in listed.read_text().split()]
    assert len(workers) == 2
    try:
        deadline = time.monotonic() + 10
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_running, workers))
    finally:
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)


WORKER_STOPPED_WHILE_STARTING = textwrap.dedent("""
    import os, signal, threading, time
    from onnxz import parallel

    class Stopped(Exception):
        pass

    def stop(signum, frame):  # as the CLI's handler does
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, stop)
    start = parallel._start_worker

    def slow_start(main_process):  # a worker still starting when the pool is stopped
        time.sleep(1.0)
        start(main_process)

    parallel._start_worker = slow_start
    with parallel.WorkerPool(2) as pool:
        def stop_workers():
            time.sleep(0.3)
            for process in list(pool._executor._processes.values()):
                os.kill(process.pid, signal.SIGTERM)

        threading.Thread(target=stop_workers).start()
        try:
            next(iter(pool.map(abs, [-1, -2, -3])))
        except Exception as exc:
            print(type(exc).__name__)
""")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask") or sys.platform != "linux",
                    reason="forked workers and signal masks: Linux")
def test_a_worker_stopped_while_starting_prints_no_traceback():
    """`pack --lossless` of a model with a bad tensor stopped its pool while a worker was
    still starting (sweep 12's pack fuzzer): the worker took the SIGTERM with the main
    process's handler, inherited by the fork, and printed a traceback ("_Stopped:
    SIGTERM"). Workers now fork with the stop signals blocked and unblock them once their
    own handlers are set."""
    proc = subprocess.run([sys.executable, "-c", WORKER_STOPPED_WHILE_STARTING],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "WorkerError" and proc.returncode == 0
