"""The ``onnxz`` command: a thin layer over the Python API.

Exit status: 0 success; 1 ``verify`` ran and the verification failed; 2 an error, printed
as one line on stderr (``onnxz: error: ...``); 128 + N when stopped by signal N (130 for
Ctrl-C, 143 SIGTERM, 129 SIGHUP), after removing the unfinished output; 141 when the
reader of stdout went away (as if by SIGPIPE).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import click

import onnxz
from onnxz.codecs.minifloat import LAYOUTS
from onnxz.console import EXIT_SIGNAL_BASE, exit_stopped
from onnxz.errors import OnnxzError, first_line
from onnxz.fidelity import CLASS_METRICS, Fidelity
from onnxz.inputs import DEFAULT_INT_RANGE, DEFAULT_SAMPLES, DefaultInputs
from onnxz.interrupts import stopping_runs
from onnxz.parallel import available_cores
from onnxz.policy import QUANTIZERS, quantizer
from onnxz.progress import ProgressListener, TerminalProgress
from onnxz.report import ContainerInfo, TensorInfo
from onnxz.verifier import Thresholds, turn_runtime_log_off

EXIT_ERROR = 2
EXIT_FAILED = 1


def _fail(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr gone (a hung-up terminal): the status says it
        click.echo(f"onnxz: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    try:
        yield
    except (OnnxzError, ValueError, OSError) as exc:
        _fail(first_line(exc))
    except MemoryError:
        _fail("out of memory")


def _echo(text: str) -> None:
    """Print ``text`` on stdout, flushed. A reader that went away ends the command quietly
    (status 141); a stdout that cannot take it (a full disk, /dev/full) is an error."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Nothing more may reach the broken stdout, not even Python's flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if exc.errno == errno.EPIPE:
            sys.exit(EXIT_SIGNAL_BASE + signal.SIGPIPE)
        _fail(f"cannot write to standard output: {exc.strerror or exc}")


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived (its name the message; :class:`_Arrived` keeps its number):
    unwinds like Ctrl-C (``finally`` blocks remove unfinished outputs) but, not being an
    Exception, is caught by nothing on the way."""


class _Arrived:
    """The first stop signal that arrived during a command (None: none did)."""

    signum: int | None = None


def _outermost_import_frame(frame: Any) -> Any:
    """The outermost frame of the import system among ``frame`` (where a signal handler
    interrupted the main thread) and the frames below it; None if none is."""
    outermost = None
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib."):
            outermost = frame
        frame = frame.f_back
    return outermost


def _send_after_import(signum: int, outermost: Any) -> None:
    """Send ``signum`` to this process again as soon as the import whose outermost frame
    is ``outermost`` has ended: at the first call or return after that frame returned (a
    profile function on the main thread, in place of any other until then; it costs the
    rest of the import some speed, and the command is stopping)."""
    ended = False

    def watch(frame: Any, event: str, arg: Any) -> None:
        nonlocal ended
        if frame is outermost and event == "return":
            ended = True
        elif ended:
            sys.setprofile(None)
            signal.raise_signal(signum)

    sys.setprofile(watch)


@contextmanager
def _signals_as_exceptions(arrived: _Arrived) -> Iterator[None]:
    """During the block SIGTERM and SIGHUP raise :class:`_Stopped` and Ctrl-C
    KeyboardInterrupt (unless it is ignored, as in a background job), each noted in
    ``arrived`` (main thread only: the only place Python runs signal handlers); and every
    stop signal ends the model run in progress (:func:`~onnxz.interrupts.stopping_runs`),
    so that the handler runs.

    Not inside an import (a library loaded during the command): an extension module's
    import turns the exception into an ImportError, which some libraries take for a
    missing optional module and go on, the signal lost (the command then finished, status
    0). There the signal is sent again as soon as the import has ended
    (:func:`_send_after_import`; a timer 50 ms later lost it when the command ended
    sooner)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        if arrived.signum is None:
            arrived.signum = signum
        if (importing := _outermost_import_frame(frame)) is not None:
            _send_after_import(signum, importing)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Stopped(signal.Signals(signum).name)

    stopping = [signal.SIGTERM, signal.SIGHUP]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        stopping.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, stop) for sig in stopping}
    try:
        with stopping_runs():  # and end a model run in progress
            yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Main(click.Group):
    """The command group: Ctrl-C, SIGTERM and SIGHUP end a command with 128 + N; a usage
    error (an unknown option, a bad value) is one line on stderr like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # no command: the help, as asked
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            where = f" (see '{context.command_path} --help')" if context else ""
            _fail(f"{exc.format_message()}{where}")
        except click.exceptions.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C while parsing
                exit_stopped(signal.SIGINT)
            _fail("aborted")
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        arrived = _Arrived()
        try:  # around the handlers' set-up too: a signal can arrive while they are set
            with _signals_as_exceptions(arrived):
                return super().invoke(ctx)
        except KeyboardInterrupt:  # ours, or Python's before the handlers were set
            exit_stopped(signal.SIGINT)
        except BaseException:
            # _Stopped, or an error a library made of the interrupt (numpy's and
            # onnxruntime's imports: an ImportError, the KeyboardInterrupt lost).
            if arrived.signum is not None:
                exit_stopped(arrived.signum)
            raise


@contextmanager
def _progress(enabled: bool, label: str, unit: str = "tensors"
              ) -> Iterator[ProgressListener | None]:
    """A status line on stderr (items done, bytes, rate, ETA), only when stderr is a
    terminal and ``enabled``."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    display = TerminalProgress(sys.stderr, label, unit)
    try:
        yield display
    finally:
        display.close()


_WORKERS = click.option(
    "--workers", type=click.IntRange(min=1), default=None, metavar="N",
    help="Worker processes coding tensors (pack: and pricing them for rate control) in "
         f"parallel [default: the available cores, here {available_cores()}]; the output is "
         "the same for any N.")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _compared(ratio: float) -> str:
    """``original / this`` in words: ``3.91x smaller`` or ``1.25x larger``."""
    return f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger"


def _summary(info: ContainerInfo) -> str:
    ratio = f", {_compared(info.ratio)} than the original" if info.ratio else ""
    codecs = [t.codec if t.copy_of is None else info.tensors[t.copy_of].codec  # a copy's is
              for t in info.tensors]                                            # its source's
    coded = sum(codec != "lossless" for codec in codecs)
    rounded = sum(t.codec == "lossless" and t.rounded_bits is not None for t in info.tensors)
    kinds = []
    if coded:
        kinds.append(f"{coded} tensors quantized")
    if rounded:
        kinds.append(f"{rounded} rounded to fewer mantissa bits")
    lossy = f"; {', '.join(kinds)}" if kinds else "; all tensors exact"
    return (f"{info.path}: {_human(info.file_bytes)} ({info.file_bytes} bytes){ratio}; "
            f"{len(info.tensors)} tensors{lossy}")


class _ByteSize(click.ParamType):
    """A size in bytes: an integer, optionally with K, M, G or T (powers of 1024)."""

    name = "size"
    _UNITS: ClassVar[dict[str, int]] = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", str(value).strip(), re.IGNORECASE)
        if not match:
            self.fail(f"{value!r} is not a size (e.g. 4096, 512M, 8G)", param, ctx)
        return int(match.group(1)) << self._UNITS[match.group(2).upper()]


class _PositiveNumber(click.ParamType):
    """A positive finite number, as a decimal or a fraction: 0.03125 or 1/32."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            number = value
        else:
            numerator, slash, denominator = str(value).strip().partition("/")
            try:
                number = float(numerator) / (float(denominator) if slash else 1.0)
            except (ValueError, ZeroDivisionError):
                number = math.nan
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{value!r} is not a positive finite number (e.g. 0.05 or 1/32)",
                      param, ctx)
        return number


def _not_nan(ctx: click.Context, param: click.Parameter, value: float | None
             ) -> float | None:
    if value is not None and math.isnan(value):
        raise click.BadParameter("NaN is not a number here", ctx, param)
    return value


def _output_path(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> Path | None:
    """An output file's path: not standard output, not empty."""
    if value == "-":
        raise click.BadParameter("writing to standard output is not supported: give a file "
                                 "name (./- for a file named -)", ctx, param)
    if value == "":
        raise click.BadParameter("an empty path: give a file name", ctx, param)
    return None if value is None else Path(value)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(onnxz.__version__, prog_name="onnxz")
def main() -> None:
    """Pack ONNX models into compact .onnxz files and unpack them again.

    \b
    Examples:
      onnxz pack model.onnx -o model.onnxz                 lossy default (safe)
      onnxz pack model.onnx -o model.onnxz --lossless      bit-exact weights
      onnxz pack model.onnx --step-rel 0.05 --deadzone 0.4 explicit quantizer
      onnxz unpack model.onnxz -o model.onnx               runnable ONNX again
      onnxz info model.onnxz                               per-tensor table
      onnxz verify model.onnx model.onnxz                  outputs still close?
      onnxz analyze model.onnx --plot figures/             weight statistics and fits
      onnxz sweep model.onnx --eval my_eval.py --plot rd.png   compare quantizers

    \b
    Exit status: 0 done (verify: passed); 1 verify: failed; 2 error (one
    line on stderr); 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM).
    An output appears only complete, an existing one is replaced only with
    --force (and keeps its permissions), and nothing is left behind: see
    "Errors and guarantees" in the README.
    """


def _parse_dims(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                ) -> dict[str, int]:
    dims = {}
    for value in values:
        name, _, size = value.rpartition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise click.BadParameter(f"{value!r} is not NAME=SIZE with SIZE ≥ 1", ctx, param)
        dims[name] = int(size)
    return dims


def _parse_int_range(ctx: click.Context, param: click.Parameter, value: str | None
                     ) -> tuple[int, int] | None:
    if value is None:
        return None
    low, _, high = value.partition(":")
    try:
        bounds = int(low), int(high)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW:HIGH (integers)", ctx, param) from None
    if bounds[0] >= bounds[1]:
        raise click.BadParameter(f"{value!r} is empty: LOW must be below HIGH", ctx, param)
    return bounds


def _generated_input_options(command: Callable) -> Callable:
    """The options that shape generated inputs (verify, and pack with a target)."""
    for option in reversed((
        click.option("--samples", type=click.IntRange(min=1), default=None,
                     help=f"Generated inputs: how many samples [default: {DEFAULT_SAMPLES}]."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Generated inputs: random seed [default: 0]."),
        click.option("--dim", "dims", multiple=True, callback=_parse_dims,
                     metavar="NAME=SIZE",
                     help="Generated inputs: size of a dynamic dim, by its name, or INPUT:AXIS "
                          "for one axis, named or not (repeatable)."),
        click.option("--int-range", callback=_parse_int_range, metavar="LOW:HIGH",
                     help="Generated inputs: integer inputs are drawn from LOW..HIGH-1 "
                          f"[default: {DEFAULT_INT_RANGE[0]}:{DEFAULT_INT_RANGE[1]}]."),
    )):
        command = option(command)
    return command


def _inputs_source(inputs: Path | None, samples: int | None, seed: int | None,
                   dims: dict[str, int], int_range: tuple[int, int] | None):
    """``--inputs``, or the generated inputs the model runs on (None: see
    :func:`onnxz.inputs.runnable_inputs`) with the changes the other options give."""
    generator = samples is not None or seed is not None or dims or int_range
    if inputs is not None and generator:
        _fail("--samples, --seed, --dim and --int-range apply to generated inputs only, "
              "not with --inputs")
    if inputs is not None or not generator:
        return inputs
    return DefaultInputs(samples=samples or DEFAULT_SAMPLES, seed=seed or 0, dims=dims,
                         int_range=int_range)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              callback=_output_path, help="Output .onnxz file [default: MODEL with suffix .onnxz].")
@click.option("--lossless", is_flag=True,
              help="Bit-exact: every tensor keeps its exact bits (float bit planes + ANS, "
                   "or zstd).")
@click.option("--step-rel", type=_PositiveNumber(), default=None,
              help="Quantization step Δ as a fraction of each weight tensor's spread, a "
                   "decimal or a ratio (0.05, 1/32): "
                   "1.4826 × its median absolute deviation (the standard deviation of normal "
                   "data, unaffected by a few outliers) [default: "
                   f"{onnxz.DEFAULT_STEP_REL:.4g} = 1/{1 / onnxz.DEFAULT_STEP_REL:.0f}]. "
                   "Smaller is more accurate and larger.")
@click.option("--deadzone", type=click.FloatRange(0, 1), default=None, callback=_not_nan,
              help="Dead zone δ: values with |x| < δ·step become 0; 0 = midrise, "
                   f"0.5 = midtread [default: {onnxz.DEFAULT_DEADZONE:g}].")
@click.option("--fidelity", metavar="SPEC",
              help="Rate control: the smallest file whose outputs keep SPEC on the inputs, "
                   "e.g. \"top1>=0.995\", \"cosine>=0.999,snr>=25\", \"exact>=0.99\", "
                   "\"top1[logits]>=0.99\", \"ctc>=0.99\" (metrics: snr dB, cosine (worst "
                   "sample), top1, top1_sample, ctc (a recognizer's greedy CTC strings), "
                   "top5, exact (whole samples), max_abs with <=).")
@click.option("--max-size", metavar="SIZE",
              help="Rate control: the best fidelity whose whole file fits SIZE (2000000, "
                   "500KB, 2MB, 1.5GiB; KB = 1000, KiB = 1024).")
@click.option("--target-snr", type=float, metavar="DB",
              help="Rate control: every quantized tensor keeps at least DB dB of weight SNR.")
@click.option("--inputs", type=click.Path(path_type=Path), metavar="NPZ|DIR",
              help="Rate control's samples (the verify layouts: an .npz of N stacked samples "
                   "per input, or an ONNX test-data folder) [default: generated]. Without "
                   "--fidelity the default also meets on them what verify judges there.")
@_generated_input_options
@click.option("--class-output", "class_outputs", multiple=True, metavar="NAME",
              help="Treat output NAME as class scores (repeatable; see verify --help).")
@click.option("--best-effort", is_flag=True,
              help="If the target cannot be met, write the closest file and warn, instead of "
                   "failing.")
@click.option("--bias-correction", is_flag=True,
              help="With --fidelity and --inputs: each layer's bias (or the BatchNormalization "
                   "mean after it) absorbs the mean shift its quantized weights cause on the "
                   "inputs. Smaller files on convolutional detectors, mixed on classifiers "
                   "(docs/measurements.md: Bias correction).")
@click.option("--calibrated-rounding", is_flag=True,
              help="With --fidelity and --inputs (no --max-size): round the weights of "
                   "Conv, Gemm, MatMul and LSTM/GRU/RNN layers (also inside an If branch "
                   "every sample takes) with error feedback through their inputs on those "
                   "samples (GPTQ-style), and a classifier head (a layer read through "
                   "elementwise ops by one linear classifier) through its outputs: the same "
                   "bytes per step, a smaller output error, "
                   "so coarser steps meet the target; packing takes longer (docs/measurements.md: "
                   "Calibrated rounding).")
@click.option("--codec", type=click.Choice(QUANTIZERS), default=None,
              help="Quantizer of the weight tensors [default: deadzone]: deadzone (uniform, "
                   "--step-rel, --deadzone), mulaw (μ-law companding: --bits, --mu, --grid), "
                   "minifloat (small floats: --bits, or --exponent-bits and "
                   "--mantissa-bits) or trellis (trellis-coded quantization as in MPEG NNR, "
                   "--step-rel: 3–10% fewer bits than deadzone at equal weight SNR on the "
                   "development corpus). Each is followed by entropy coding.")
@click.option("--bits", type=click.IntRange(1, 16), default=None,
              help="mulaw: 2^BITS levels [8]; minifloat: the format's width, one of "
                   f"{', '.join(map(str, sorted(LAYOUTS)))} [8]; deadzone with --global-range: "
                   "2^BITS steps over [-1, 1] [8].")
@click.option("--mu", type=click.FloatRange(min=0, min_open=True), default=None,
              callback=_not_nan,
              help="mulaw: the compander's μ [255].")
@click.option("--grid", type=click.Choice(["midrise", "midtread"]), default=None,
              help="mulaw: levels between (midrise) or on (midtread, has 0) the companded "
                   "grid points [midrise].")
@click.option("--exponent-bits", type=click.IntRange(1, 10), default=None,
              help="minifloat: exponent bits p (with --mantissa-bits; instead of --bits).")
@click.option("--mantissa-bits", type=click.IntRange(0, 14), default=None,
              help="minifloat: mantissa bits q (p + q ≤ 15).")
@click.option("--global-range", is_flag=True,
              help="The research's baseline: one range [-1, 1] for every tensor (weights "
                   "clipped to it) instead of per-tensor ranges; with --codec deadzone "
                   "use --bits instead of --step-rel.")
@click.option("--force", is_flag=True,
              help="Replace OUTPUT if it is an existing regular file (it keeps its permissions; "
                   "devices, FIFOs, directories and symbolic links are never replaced).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing on success (and no progress line).")
@_WORKERS
def pack(model: Path, output: Path | None, lossless: bool, step_rel: float | None,
         deadzone: float | None, fidelity: str | None, max_size: str | None,
         target_snr: float | None, inputs: Path | None, samples: int | None, seed: int | None,
         dims: dict[str, int], int_range: tuple[int, int] | None,
         class_outputs: tuple[str, ...], best_effort: bool, bias_correction: bool,
         calibrated_rounding: bool,
         codec: str | None, bits: int | None, mu: float | None, grid: str | None,
         exponent_bits: int | None, mantissa_bits: int | None, global_range: bool,
         force: bool, as_json: bool, quiet: bool, workers: int | None) -> None:
    """Pack the ONNX file MODEL into an .onnxz file.

    By default weight tensors (Conv/Gemm/MatMul/RNN weights, embedding tables) are
    quantized with a dead-zone uniform quantizer and entropy-coded; everything else
    (biases, normalization parameters, shapes, small tensors) is stored losslessly.

    \b
    Without --lossless, --step-rel or --codec, rate control chooses every
    weight tensor's step: it measures how much each tensor moves the outputs on
    the inputs (--inputs, or generated ones), gives the bits to the tensors
    that matter, searches the smallest file that keeps the target, and runs
    the packed model on the inputs before writing it. The default target keeps
    40 dB of SNR on every output (class scores: their logits) on the inputs,
    and on your --inputs also what onnxz verify judges on them (top-1, a text
    recognizer's strings); --fidelity, --max-size and --target-snr set others.
    An unreachable target is an error (exit 2, nothing written) unless
    --best-effort.

    \b
    Examples:
      onnxz pack m.onnx -o m.onnxz --fidelity "top1>=0.995" --inputs calib.npz
      onnxz pack m.onnx -o m.onnxz --fidelity "snr>=30"      (generated inputs)
      onnxz pack m.onnx -o m.onnxz --max-size 2MB
      onnxz pack m.onnx -o m.onnxz --target-snr 40

    \b
    Specs that kept real tasks on held-out inputs (README "Which spec to ask for"):
      a class per input, a yes/no per chunk    top1>=0.995
      a CTC string                             top1>=0.995 (per position)
      boxes                                    snr>=25 (more when boxes are few)
      embeddings (nearest neighbours)          cosine>=0.9999

    \b
    Other quantizers (format 1.1 files, except deadzone --global-range; trellis at
    fine steps writes 1.4):
      onnxz pack model.onnx --codec mulaw --bits 8 --mu 255
      onnxz pack model.onnx --codec minifloat --bits 8      (E4M3)
      onnxz pack model.onnx --codec minifloat --exponent-bits 5 --mantissa-bits 10
      onnxz pack model.onnx --codec deadzone --global-range --bits 6 --deadzone 0
      onnxz pack model.onnx --codec trellis --step-rel 0.0625

    A model with external data (weights in files beside the .onnx) is read one tensor at a
    time. On a terminal a progress line shows tensors and bytes done, rate and time left.
    """
    quantizer_settings = dict(bits=bits, mu=mu, grid=grid, exponent_bits=exponent_bits,
                              mantissa_bits=mantissa_bits)
    custom = codec is not None or global_range or any(
        v is not None for v in quantizer_settings.values())
    if lossless and (step_rel is not None or deadzone is not None or custom):
        _fail("--lossless cannot be combined with quantizer options")
    targets = fidelity is not None or max_size is not None or target_snr is not None
    fixed = lossless or step_rel is not None or deadzone is not None or custom
    if targets and fixed:
        _fail("--fidelity, --max-size and --target-snr choose the steps: they cannot be "
              "combined with --lossless, --step-rel, --deadzone or --codec options")
    if fixed and (inputs is not None or samples is not None or seed is not None or dims
                  or int_range or class_outputs or best_effort or bias_correction
                  or calibrated_rounding):
        _fail("--inputs, --samples, --seed, --dim, --int-range, --class-output, "
              "--best-effort, --bias-correction and --calibrated-rounding apply to rate "
              "control, not with --lossless, --step-rel, --deadzone or --codec options")
    if target_snr is not None and (inputs is not None or samples is not None or seed
                                   is not None or dims or int_range or class_outputs
                                   or bias_correction or calibrated_rounding):
        _fail("--target-snr runs no model: --inputs, --samples, --seed, --dim, --int-range, "
              "--class-output, --bias-correction and --calibrated-rounding do not apply")
    if (bias_correction or calibrated_rounding) and (fidelity is None or inputs is None):
        _fail("--bias-correction and --calibrated-rounding need --fidelity and --inputs "
              "(they are measured on your samples)")
    if calibrated_rounding and max_size is not None:
        _fail("--calibrated-rounding does not apply with --max-size")
    output = output or model.with_suffix(".onnxz")
    source = _inputs_source(inputs, samples, seed, dims, int_range)
    if not fixed:  # rate control runs the model
        turn_runtime_log_off()
    with _errors_as_one_line(), _progress(not (quiet or as_json), "packing") as progress:
        options = onnxz.PackOptions(quantizer=quantizer(
            codec or "deadzone", step_rel=step_rel, deadzone=deadzone,
            global_range=global_range, **quantizer_settings)) if custom else None
        info = onnxz.save(model, output, lossless=lossless, step_rel=step_rel,
                          deadzone=deadzone, force=force, options=options, progress=progress,
                          fidelity=fidelity, max_size=max_size, target_snr=target_snr,
                          inputs=source, best_effort=best_effort, class_outputs=class_outputs,
                          correct_biases=bias_correction,
                          calibrated_rounding=calibrated_rounding, workers=workers)
    rate = info.rate_control
    if rate is not None and not rate.get("met", True):
        click.echo(f"onnxz: warning: {rate.get('target')} not met; wrote the closest file "
                   "(--best-effort)", err=True)
    for output, figures in ((rate or {}).get("achieved") or {}).items():
        for c, rows in figures.get("lost_classes", ()):
            click.echo(f"onnxz: warning: {output}: the file decides class {c} on none of the "
                       f"{rows} sample rows where the original does ({rate.get('target')} "
                       "counts every row alike); to keep a rare class, ask snr of its scores",
                       err=True)
    if unjudged := (rate or {}).get("unjudged"):
        achieved = rate.get("achieved") or {}
        shown = ", ".join(f"{name} ({achieved[name]['snr']:.1f} dB)"
                          if "snr" in achieved.get(name, {}) else name for name in unjudged)
        click.echo(f"onnxz: warning: no criterion of {rate.get('target')} judges {shown}: the "
                   f"file may change {'it' if len(unjudged) == 1 else 'them'} freely; to hold "
                   f"one, add a criterion such as snr[{unjudged[0]}]>=30", err=True)
    decided = sorted({c.metric for c in Fidelity.parse(fidelity).criteria
                      if c.metric in CLASS_METRICS}) if fidelity and inputs is None else []
    if decided:
        click.echo(f"onnxz: warning: {', '.join(decided)} judged on generated inputs, whose "
                   "class decisions say little about real ones (the file may change many of "
                   "yours): give real samples with --inputs", err=True)
    if as_json:
        _echo(_json(info.to_dict()))
    elif not quiet:
        _echo(_summary(info))
        if rate is not None:
            _echo(_rate_summary(rate))


def _rate_summary(rate: dict[str, Any]) -> str:
    """The achieved figures rate control recorded, a line per output."""
    where = f" on {rate['inputs']}" if rate.get("inputs") else ""
    runs = (f" ({rate['evaluations']} model runs in the search)"
            if rate.get("evaluations") is not None else "")
    note = f" ({rate['note']})" if rate.get("note") else ""
    lines = [f"rate control: {rate.get('target')}{where}: "
             + ("met" if rate.get("met") else "NOT met") + runs + note]
    for output, figures in (rate.get("achieved") or {}).items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items()
                          if isinstance(v, int | float))
        if "picked_by" in figures:
            shown += f" (rows picked by {figures['picked_by']}: judged before the pick)"
        elif "pinned_by" in figures:
            shown += f" (on the original's {figures['pinned_by']} picks)"
        elif "stands_for" in figures:
            shown += f" (read by the pick of {', '.join(figures['stands_for'])})"
        if output in (rate.get("unjudged") or ()):
            shown += " (no criterion judges it: reported only)"
        lines.append(f"  {output}: {shown}")
    for check, value in (rate.get("predicted") or {}).items():
        lines.append(f"  predicted agreement for {check}: {value:.4f}")
    if rate.get("corrected_biases"):
        lines.append(f"  biases corrected for their layer's mean shift: "
                     f"{rate['corrected_biases']}")
    if rate.get("calibrated_rounding"):
        lines.append(f"  weights rounded with error feedback through their inputs (a "
                     f"classifier head: its outputs): {rate['calibrated_rounding']}")
    if rate.get("folded_normalizations"):
        lines.append(f"  batch normalizations stored without their statistics: "
                     f"{rate['folded_normalizations']}")
    return "\n".join(lines)


@main.command()
@click.argument("packed", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              callback=_output_path, help="Output .onnx file [default: PACKED with suffix .onnx].")
@click.option("--force", is_flag=True,
              help="Replace OUTPUT if it is an existing regular file (it keeps its permissions).")
@click.option("--external-data", "external_data", is_flag=False, flag_value="", default=None,
              metavar="[FILE]",
              help="Write the weights (tensors of 1 KiB or more) to an external data file beside "
                   "the model: FILE, relative to OUTPUT's folder [default: OUTPUT.data]. "
                   "Automatic when the model would pass protobuf's 2 GiB limit. Give FILE as "
                   "--external-data=FILE.")
@click.option("--max-output-size", type=_ByteSize(), default=None, metavar="SIZE",
              help="Refuse a file that would decode to more than SIZE bytes (K, M, G, T: "
                   "powers of 1024) [default: the larger of this machine's memory and 1000 × "
                   "the file's size]. A guard against tiny files that claim huge tensors.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing on success (and no progress line).")
@click.option("--json", "as_json", is_flag=True,
              help="Print what was written as one JSON object: output, bytes, external_data "
                   "(its path, or null), external_data_bytes, seconds.")
@_WORKERS
def unpack(packed: Path, output: Path | None, force: bool, external_data: str | None,
           max_output_size: int | None, quiet: bool, as_json: bool,
           workers: int | None) -> None:
    """Decode the .onnxz file PACKED back into a runnable ONNX model.

    Tensors are decoded and written one at a time, so memory holds about one tensor per
    worker plus the graph; on a terminal a progress line shows tensors and bytes done,
    rate and time left.
    """
    output = output or packed.with_suffix(".onnx")
    limits = None if max_output_size is None else onnxz.ReadLimits(
        max_output_size=max_output_size)
    named = external_data or None  # "" when --external-data has no FILE
    data = output.parent / named if named else output.with_name(output.name + ".data")
    before = _identity(data)
    started = time.time()
    with _errors_as_one_line(), _progress(not quiet, "unpacking") as progress:
        out = onnxz.unpack(packed, output, force=force,
                           external_data=True if external_data is not None else None,
                           external_data_file=named, limits=limits, workers=workers,
                           progress=progress)
    seconds = time.time() - started
    written = (after := _identity(data)) is not None and after != before
    data_bytes = data.stat().st_size if written else None  # not a stale one of another run
    if as_json:
        _echo(_json({"output": str(out), "bytes": out.stat().st_size,
                     "external_data": str(data) if written else None,
                     "external_data_bytes": data_bytes, "seconds": round(seconds, 3)}))
    elif not quiet:
        extra = f" + {data}: {_human(data_bytes)}" if data_bytes is not None else ""
        _echo(f"{out}: {_human(out.stat().st_size)}{extra}")


def _identity(path: Path) -> tuple[int, int, int] | None:
    """``path``'s device, inode and modification time (ns), None if it is not there (or
    cannot be): an output moved into place is a new file, a file left alone keeps these."""
    try:
        st = path.stat()
    except (OSError, ValueError):  # e.g. a name too long
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


@main.command()
@click.argument("packed", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.option("--sort", type=click.Choice(["file", "size", "name"]), default="file",
              show_default=True, help="Order of the tensor table.")
def info(packed: Path, as_json: bool, sort: str) -> None:
    """Show what PACKED holds: per tensor shape, dtype, codec, step, dead zone,
    bits/weight and ratio; then totals. Reads the index only (fast)."""
    with _errors_as_one_line():
        result = onnxz.info(packed)
    if as_json:
        _echo(_json(result.to_dict()))
        return
    _echo(_info_table(result, sort))


def _json(data: dict[str, Any]) -> str:
    """Strict JSON (the to_dict methods hold no inf or NaN; this makes sure)."""
    return json.dumps(data, indent=2, allow_nan=False)


def _step_text(t: TensorInfo) -> str:
    """The info table's step column: the quantizer's step, ``mN`` for values rounded to N
    mantissa bits before lossless coding, or ``-``."""
    if t.step is not None:
        return f"{t.step:.3g}"
    return f"m{t.rounded_bits}" if t.rounded_bits is not None else "-"


def _info_table(info: ContainerInfo, sort: str) -> str:
    tensors = list(info.tensors)
    if sort == "size":
        tensors.sort(key=lambda t: -t.coded_bytes)
    elif sort == "name":
        tensors.sort(key=lambda t: t.name)
    header = ("tensor", "shape", "dtype", "codec", "step", "δ", "bits/w", "ratio",
              "coded B", "entropy B", "table B", "sens dB")
    rows = [header]
    for t in tensors:
        rows.append((
            t.name if len(t.name) <= 40 else "…" + t.name[-39:],
            "x".join(map(str, t.shape)) or "scalar",
            t.dtype,
            t.codec if t.codec != "lossless" else f"lossless/{t.mode}",
            _step_text(t),
            f"{t.deadzone:g}" if t.deadzone is not None else "-",
            f"{t.bits_per_weight:.2f}",
            f"{t.ratio:.2f}",
            str(t.coded_bytes),
            f"{t.entropy_bytes:.0f}" if t.entropy_bytes is not None else "-",
            str(t.table_bytes) if t.table_bytes else "-",
            f"{10 * math.log10(t.sensitivity):.1f}" if t.sensitivity else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    raw, coded = info.raw_tensor_bytes, info.coded_tensor_bytes
    lines += [
        "",
        f"format {info.version}, written by {info.writer or 'unknown'}",
        f"tensors: {len(info.tensors)}, {_human(raw)} raw -> {_human(coded)} coded"
        + (f" ({raw / coded:.2f}x)" if coded else ""),
        f"graph section: {_human(info.graph_raw_bytes)} -> {_human(info.graph_bytes)} (zstd)",
        f"file: {_human(info.file_bytes)}"
        + (f", original {_human(info.source_bytes)} ({_compared(info.ratio)})"
           if info.source_bytes and info.ratio else ""),
    ]
    if any(t.rounded_bits is not None for t in tensors):
        lines.append("step mN: the values rounded to N mantissa bits, then coded losslessly")
    if info.rate_control is not None:
        lines.append(_rate_summary(info.rate_control))
        lines.append("sens dB: 10·log10 of the output distortion (1 = the target's limit) if the "
                     "tensor's error were as large as the tensor itself")
    return "\n".join(lines)


@main.command()
@click.argument("original", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("packed", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), metavar="NPZ|DIR",
              help="The inputs to compare on, instead of generated ones: an .npz or an ONNX "
                   "test-data folder (see above).")
@_generated_input_options
@click.option("--min-snr", type=float, default=Thresholds.min_snr_db, show_default=True,
              callback=_not_nan, help="Minimum output SNR in dB, over all samples, per output.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=Thresholds.min_cosine,
              show_default=True, callback=_not_nan,
              help="Minimum cosine similarity of the worst sample, per output.")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=Thresholds.min_top1,
              show_default=True, callback=_not_nan,
              help="Minimum top-1 agreement on class-score outputs (see below); on generated "
                   "inputs judged only when given (their scores are near ties).")
@click.option("--fidelity", metavar="SPEC",
              help="Criteria instead of the three minimums above, e.g. "
                   "\"top1>=0.995,snr>=25\" or \"exact[labels]>=0.99\" (metrics: snr, "
                   "cosine, top1, top1_sample, ctc, top5, max_abs (<=), exact).")
@click.option("--class-output", "class_outputs", multiple=True, metavar="NAME",
              help="Treat output NAME as class scores (top-1/top-5) even without a Softmax, "
                   "ArgMax or rows summing to 1 (repeatable).")
@click.option("--noise-floor", type=click.FloatRange(0, 1), default=Thresholds.noise_floor,
              show_default=True, callback=_not_nan,
              help="Differences up to this × max(1, the sample's largest |original|) count as "
                   "none in SNR, cosine and top-1 (an output of ~0 is not failed on noise); "
                   "0 = exact.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify(original: Path, packed: Path, inputs: Path | None, samples: int | None,
           seed: int | None, dims: dict[str, int], int_range: tuple[int, int] | None,
           min_snr: float, min_cosine: float, min_top1: float, fidelity: str | None,
           class_outputs: tuple[str, ...], noise_floor: float, as_json: bool) -> None:
    """Check that PACKED (.onnxz) still computes what ORIGINAL (.onnx) does: run both with
    onnxruntime (CPU) on the same inputs and compare every output. Exit status 0 if all
    outputs are within the thresholds, 1 if not (or if a model fails to load or run), 2 on
    usage or input errors, 130 when interrupted.

    \b
    Metrics per output: max and mean absolute error, SNR (dB, all samples),
    cosine similarity (mean and worst sample), the fraction of samples whose
    output is exactly the original's, and for class scores top-1 agreement
    and top-5 overlap. Class scores: outputs made by Softmax/LogSoftmax or fed
    to ArgMax/TopK in the graph, outputs whose rows sum to 1 on every sample,
    and outputs named with --class-output. Rows a TopK, NonMaxSuppression or
    thresholding NonZero picks (an NMS-free detector's boxes) are reported, not
    judged: any change reorders near ties; the boxes and scores the pick reads
    are judged instead. Where weights act on the picked rows (a DETR decoder's
    queries), the packed model runs with the original's picks ("pinned"). An
    output a Concat joins (a detector's boxes and class probabilities) has each
    part judged by its SNR too; an in-graph ArgMax's class numbers are judged by
    top-1 (each one a decision), not by SNR or cosine. Class scores with several
    rows per sample (a recognizer's positions [N, T, C]) are judged on --inputs
    by their rows' top-1 and SNR, not by a sample's cosine (it moves with the
    timing of confident rows); a text recognizer's (an image in, that its only
    output) also by each sample's greedy CTC string (ctc, at --min-top1);
    --fidelity "ctc>=0.99" judges any output's strings.

    \b
    Inputs, without --inputs: N(0,1) floats, integers from --int-range, random
    bools, seeded. Dynamic dims: --dim NAME=SIZE (or INPUT:AXIS=SIZE), else
    the sizes pack's default ran the model on: 1 for axis 0 (and a named dim
    that is axis 0 of some input), 224 for an image's height and width, 32
    for the others; then 32-px images, then 512; where none of these runs,
    the first sizes found one dim at a time that do (every size to 256, the
    model's weights' sizes, powers of two; then with axis 0 at 32).

    \b
    --inputs FILE.npz: one array per model input, keyed by input name, holding
      N samples stacked on a new leading axis: sample i of input x is arr[i]
      with exactly the model's input shape and dtype (a scalar input is an
      array of shape (N,)); every array has the same N.
    --inputs DIR: the ONNX test-data layout DIR/test_data_set_*/input_*.pb,
      one folder per sample, one TensorProto per input; the tensor's name, or
      else K of input_K.pb, says which input. Shapes may vary by sample.

    \b
    Examples:
      onnxz verify model.onnx model.onnxz
      onnxz verify model.onnx model.onnxz --inputs calib.npz
      onnxz verify model.onnx model.onnxz --dim batch=1 --dim seq=128
      onnxz verify model.onnx model.onnxz --min-snr 30 --json
      onnxz verify model.onnx model.onnxz --fidelity "exact>=0.99" --inputs calib.npz
    """
    ctx = click.get_current_context()
    minimums = [f"--{p.replace('_', '-')}" for p in ("min_snr", "min_cosine", "min_top1")
                if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT]
    if fidelity is not None and minimums:
        _fail(f"--fidelity replaces {', '.join(minimums)}: give the criteria in one of them")
    turn_runtime_log_off()
    with _errors_as_one_line(), _progress(True, "verifying", "samples") as progress:
        criteria = onnxz.Fidelity.parse(fidelity) if fidelity is not None else Thresholds(
            min_snr_db=min_snr, min_cosine=min_cosine, min_top1=min_top1,
            noise_floor=noise_floor, top1_on_generated="--min-top1" in minimums)
        source = _inputs_source(inputs, samples, seed, dims, int_range)
        report = onnxz.verify(original, packed, source, criteria, class_outputs=class_outputs,
                              noise_floor=noise_floor, progress=progress)
    _echo(_json(report.to_dict()) if as_json else report.table())
    if not report.passed:
        if fidelity is None and (target := _packed_for(packed)):
            click.echo(f"onnxz: note: {packed} was packed for {target} (these criteria are "
                       f"verify's defaults); check that with --fidelity \"{target}\"", err=True)
        sys.exit(EXIT_FAILED)


def _packed_for(packed: Path) -> str | None:
    """The fidelity target a file was packed for (its rate-control summary), if any."""
    with contextlib.suppress(OnnxzError):
        summary = onnxz.info(packed).rate_control or {}
        if summary.get("mode") == "fidelity" and isinstance(summary.get("target"), str):
            return summary["target"]
    return None


def _require(module: str, extra: str, what: str) -> None:
    """Fail with a one-line hint when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        _fail(f"{what} needs {module}: pip install 'onnxz[{extra}]'")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write figures into this folder (created if needed): a histogram with the "
                   "fitted densities (linear and log scale) per tensor and for the whole "
                   "model, the autocorrelation, the layer correlation matrix.")
@click.option("--svg", is_flag=True, help="With --plot: SVG files beside the PNG files.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.option("--max-lag", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Autocorrelation at lags 1..K inside each tensor.")
@click.option("--min-elements", type=click.IntRange(min=2), default=1024, show_default=True,
              help="Analyze tensors of at least this many elements.")
@click.option("--all-tensors", is_flag=True,
              help="Every float tensor, not only the weights that pack quantizes.")
def analyze(model: Path, plot_dir: Path | None, svg: bool, as_json: bool, max_lag: int,
            min_elements: int, all_tensors: bool) -> None:
    """Study the weights of the ONNX file MODEL as the research behind onnxz did.

    \b
    Per weight tensor and for all weights together: count, mean, std, excess
    kurtosis, share near zero, and the empirical entropy of the float32
    values (bits/weight). Eight laws are fitted (Laplace, Gaussian, Cauchy,
    logistic, uniform, gamma, exponential, alpha-stable; maximum likelihood
    with scipy) and ranked by the squared error of the histogram (SSE) and
    by Kullback-Leibler divergence. Then the Pearson correlation between
    layers (equal-length samples) and the autocorrelation at lags 1..K
    inside tensors, with the share of |rho| >= 0.5: low values are the
    evidence that a scalar quantizer loses little.

    \b
    Needs pip install 'onnxz[analysis]' (scipy), and 'onnxz[plot]' for --plot.
    Examples:
      onnxz analyze model.onnx
      onnxz analyze model.onnx --plot figures/ --svg
      onnxz analyze model.onnx --json > analysis.json
    """
    _require("scipy", "analysis", "onnxz analyze")
    if plot_dir is not None:
        _require("matplotlib", "plot", "--plot")
    from onnxz.analysis.analyze import analyze as run_analysis

    with _errors_as_one_line(), _progress(not as_json, "analyzing") as progress:
        result = run_analysis(model, max_lag=max_lag, min_elements=min_elements,
                              weights_only=not all_tensors, progress=progress)
        figures = []
        if plot_dir is not None:
            from onnxz.analysis.plots import plot_analysis

            figures = plot_analysis(result, plot_dir, svg=svg)
    _echo(_json(result.to_dict()) if as_json else result.table())
    if figures:
        click.echo(f"wrote {len(figures)} figures to {plot_dir}", err=as_json)


def _point_line(done: int, total: int, point: dict[str, Any]) -> str:
    """One progress line of a sweep."""
    head = f"[{done:>{len(str(total))}}/{total}] {point['label']}: "
    if "error" in point:
        return head + "FAILED: " + point["error"]
    s = point["scores"]
    judged = (f"score {s['score']:.4f} (loss {point['loss']:+.4f})" if "score" in s else
              f"SNR {s['snr_db'] if s['snr_db'] is not None else float('inf'):.1f} dB, "
              f"{s['verdict']}")
    return head + f"{point['file_bytes']:,} B, {point['bits_per_weight']:.3f} bits/w, {judged}"


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--eval", "evaluate", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.py",
              help="Judge each packed model with your own evaluation: a Python file defining "
                   "evaluate(session) -> float (an onnxruntime session; higher is better, "
                   "e.g. accuracy on your labelled data).")
@click.option("--inputs", type=click.Path(path_type=Path), metavar="NPZ|DIR",
              help="Without --eval: the inputs onnxz verify compares outputs on (see "
                   "onnxz verify --help) [default: generated inputs].")
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="With --eval: the largest acceptable drop of the score below the "
                   "original's [default: 0.01]. Without --eval the bar is verify's pass.")
@click.option("--methods", default=None, metavar="NAME,...",
              help="Methods to sweep [default: the first eight]: midrise, midtread, "
                   "deadzone-0.1, deadzone-0.25, deadzone-0.4, deadzone-0.7 (steps 1/256..2 "
                   "of each tensor's spread), mulaw (2..10 bits), minifloat (4..16 bits); "
                   "and the research's global-range baselines global-midrise, "
                   "global-midtread, global-deadzone-0.25, global-mulaw (2..10 bits), "
                   "global-minifloat.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rate-fidelity plot here (.png, .svg or .pdf).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"points": [...], "pareto": [...], "best": {...}}.')
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: the number of CPUs].")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the points on an existing Dask cluster (e.g. tcp://host:8786) "
                   "instead; its workers must see MODEL and FILE.py at the same paths. "
                   "Needs pip install 'onnxz[dask]'.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file, written after every point; a sweep started again with the "
                   "same file resumes [default: MODEL's name + .sweep.json, here].")
@click.option("--fresh", is_flag=True, help="Discard the results file's points first.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def sweep(model: Path, evaluate: Path | None, inputs: Path | None, tolerance: float | None,
          methods: str | None, plot_path: Path | None, as_json: bool, workers: int | None,
          scheduler: str | None, results: Path | None, fresh: bool, quiet: bool) -> None:
    """Compare quantizers on MODEL: pack it with every method over a range of steps or
    bits, measure each real file and its fidelity, and report the smallest file that is
    good enough, with the onnxz pack command that makes it.

    \b
    Prints per method its smallest good-enough point (bits/weight from the
    real file, size, ratio, score and loss, or SNR and top-1), the Pareto
    front's size and the best point; --plot draws rate against fidelity.

    \b
    Examples:
      onnxz sweep model.onnx --eval my_eval.py --plot rd.png
      onnxz sweep model.onnx --inputs calib.npz --methods midtread,mulaw --json
      onnxz sweep model.onnx --eval my_eval.py --scheduler tcp://10.0.0.5:8786
    """
    if evaluate is not None and inputs is not None:
        _fail("give --eval or --inputs, not both")
    if tolerance is not None and evaluate is None:
        _fail("--tolerance applies to --eval scores only")
    if plot_path is not None:
        _require("matplotlib", "plot", "--plot")
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if plot_path.suffix[1:].lower() not in formats:
            _fail(f"--plot {plot_path}: not a figure format (.png, .svg, .pdf; "
                  f"matplotlib writes {', '.join(sorted(formats))})")
    from onnxz.analysis import sweep as sweeping

    results = results or Path(model.name).with_suffix(".sweep.json")
    for option, path in (("--plot", plot_path), ("--results", results)):
        if path is not None and not path.absolute().parent.is_dir():
            _fail(f"{option} {path}: no folder {path.absolute().parent}")
    with _errors_as_one_line():
        chosen = (sweeping.methods_named([m.strip() for m in methods.split(",") if m.strip()])
                  if methods else sweeping.DEFAULT_METHODS)
        if fresh:
            results.unlink(missing_ok=True)

        def progress(done: int, total: int, point: dict[str, Any]) -> None:
            if not quiet:
                click.echo(_point_line(done, total, point), err=True)

        result = sweeping.sweep(
            model, evaluate=evaluate, inputs=inputs, methods=chosen,
            tolerance=sweeping.DEFAULT_TOLERANCE if tolerance is None else tolerance,
            workers=workers, scheduler=scheduler, results=results, progress=progress)
        if plot_path is not None:
            from onnxz.analysis.plots import plot_sweep

            plot_sweep(result, plot_path)
    _echo(_json(result.to_dict()) if as_json else result.table())
    if not quiet:
        click.echo(f"results: {results}" + (f"; plot: {plot_path}" if plot_path else ""),
                   err=True)


if __name__ == "__main__":
    main()
