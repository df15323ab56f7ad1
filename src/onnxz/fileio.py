"""Atomic output files: written under a temporary name, renamed into place on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from onnxz.errors import InputNotFoundError, OutputExistsError, OutputPathError


def check_input(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is an existing regular file; a typed error otherwise."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise InputNotFoundError(f"{p}: not a regular file")
    return p


@contextlib.contextmanager
def atomic_outputs(
    paths: Sequence[str | os.PathLike], force: bool, inputs: Sequence[Path] = ()
) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths``; rename them onto ``paths`` if the block succeeds.

    Nothing is left behind on failure. An existing output is an error unless ``force``;
    an output that is one of ``inputs`` is always an error.
    """
    finals = [Path(p) for p in paths]
    for final in finals:
        if final.is_dir():
            raise OutputPathError(f"{final}: is a directory")
        if any(final.exists() and i.exists() and final.samefile(i) for i in inputs):
            raise OutputPathError(f"{final}: output would overwrite the input")
        if final.exists() and not force:
            raise OutputExistsError(f"{final}: already exists (use --force to replace it)")
        if not final.parent.is_dir():
            raise OutputPathError(f"{final.parent}: no such directory")
    temps: list[Path] = []
    try:
        for final in finals:
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
