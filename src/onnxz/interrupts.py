"""Model runs that a stop signal ends: Ctrl-C during a long onnxruntime run.

``Session.run`` holds the main thread in C++ for as long as a run takes, and Python runs
signal handlers only between bytecodes, so Ctrl-C (or SIGTERM) waited for the run to end:
35 s on SVTRv2's default pack (224×224 generated images), for ever on a model whose Loop
never ends. Every run onnxz makes goes through :func:`run`, with ``RunOptions`` of its own.
Within :func:`stopping_runs` (the CLI's commands) a stop signal also wakes a thread (by
``signal.set_wakeup_fd``, written by the C-level handler at once) that sets ``terminate`` on
every run in progress and on every later one: onnxruntime ends the run at its next node
(inside a Loop's body too), the call raises, and the Python handler runs as it returns.

>>> import numpy as np, onnxruntime
>>> from onnx import TensorProto, helper
>>> model = helper.make_model(helper.make_graph(
...     [helper.make_node("Neg", ["x"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]),
...     opset_imports=[helper.make_opsetid("", 17)])
>>> session = onnxruntime.InferenceSession(model.SerializeToString())
>>> run(session, {"x": np.ones(1, np.float32)})[0].tolist()
[-1.0]
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                     if s is not None)
"""Signals that stop a command (Ctrl-C first): they end the runs in progress (others that
wake the thread do not)."""

_QUIT = 0
"""The byte that ends the watching thread (no signal is numbered 0)."""

_lock = threading.Lock()
_running: set[Any] = set()  # the RunOptions of the runs in progress
_stopping = threading.Event()


def run(session: Any, feed: Mapping[str, Any]) -> list[Any]:
    """``session.run(None, feed)`` (an onnxruntime ``InferenceSession``), ended early by a
    stop signal within :func:`stopping_runs` (it then raises onnxruntime's error)."""
    import onnxruntime

    options = onnxruntime.RunOptions()
    with _lock:
        options.terminate = _stopping.is_set()
        _running.add(options)
    try:
        return session.run(None, feed, options)
    finally:
        with _lock:
            _running.discard(options)


@contextlib.contextmanager
def stopping_runs() -> Iterator[None]:
    """During the block, a stop signal (:data:`STOP_SIGNALS`, with a Python handler) ends
    the runs in progress and makes later ones end at once; its handler runs as the run
    returns. In the main thread only (elsewhere the block does nothing), and the wakeup fd
    another user of ``signal.set_wakeup_fd`` set comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not settable here (an embedding interpreter): plain runs
        os.close(read_end)
        os.close(write_end)
        yield
        return
    watcher = threading.Thread(target=_watch, args=(read_end,), name="onnxz-stop-runs",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.write(write_end, bytes([_QUIT]))
        watcher.join()
        os.close(read_end)
        os.close(write_end)
        _stopping.clear()


def stop_runs() -> None:
    """End every run in progress, and make the later ones end at once until the block of
    :func:`stopping_runs` ends (call it within one): what a stop signal does there, for a
    watchdog thread to do too."""
    with _lock:
        _stopping.set()
        for options in _running:
            options.terminate = True


def _watch(read_end: int) -> None:
    """Until the :data:`_QUIT` byte: on each stop signal's byte, stop every run."""
    while True:
        numbers = os.read(read_end, 512)  # the numbers of the signals caught, a byte each
        if not set(STOP_SIGNALS).isdisjoint(numbers):
            stop_runs()
        if _QUIT in numbers or not numbers:
            return


def forget_wakeup() -> None:
    """In a forked worker: signals must not write to its parent's wakeup fd."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
