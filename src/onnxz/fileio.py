"""Files in and out: outputs appear complete or not at all, and never replace what they may not.

How an output is written (:func:`atomic_outputs`):

- First the checks, before any work: an output that exists must be a regular file (a
  directory, device, FIFO, socket or symbolic link is refused, even with ``force``), must not
  be one of the command's inputs (also under another name: a hard link, the model's external
  data), and without ``force`` must not exist at all.
- The bytes go to a temporary file in the output's directory, named ``.onnxz-XXXXXXXX.tmp``
  (:data:`TEMP_NAME`: 8 hex digits, so any legal output name works). It is created with mode
  ``0666 & ~umask``, like any new file, and locked (``flock``) while its writer lives.
- When complete it is flushed to disk (``fsync``) and moved into place. Without ``force`` the
  move is a hard link that fails if the name exists, so a file that appeared meanwhile (another
  process, another onnxz) is never replaced: "already exists". With ``force`` it is a rename
  over the old file, whose permission bits (and owner, where allowed) the new file takes. Then
  the directory is flushed, so the new name survives a power loss (git does the same for its
  packs, SQLite for its journals; the zstd CLI does neither).
- On any error or interruption (exceptions, Ctrl-C, and SIGTERM/SIGHUP where the CLI turns
  them into exceptions) the temporary files are removed; signals are held back while the
  files are moved and removed, so a signal cannot leave half of it done. A process killed
  outright (SIGKILL, power loss) leaves its temporary file: the next onnxz that writes into
  that directory removes every :data:`TEMP_NAME` file that is unlocked and older than
  :data:`STALE_AFTER` seconds.

POSIX only (``flock``, ``link``, ``fsync`` of a directory).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from onnxz.arguments import as_path
from onnxz.errors import InputNotFoundError, OnnxzError, OutputExistsError, OutputPathError

TEMP_NAME = re.compile(r"\.onnxz-[0-9a-f]{8}\.tmp")
"""Name of every temporary file onnxz writes (beside the output, in the same directory)."""
STALE_AFTER = 60.0
"""Seconds after which an unlocked temporary file counts as left behind by a dead process."""

_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def check_input(path: object, what: str = "input") -> Path:
    """``path`` as a Path if it names an existing regular file (through links); a typed
    error naming it otherwise."""
    p = as_path(path, what)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise InputNotFoundError(f"{p}: {exc.strerror or 'no such file'}") from exc
    if not stat.S_ISREG(mode):
        raise InputNotFoundError(f"{p}: is {_kind(mode)}, not a regular file")
    return p


def check_outputs(
    paths: Sequence[object], force: bool, inputs: Iterable[Path] = ()
) -> list[Path]:
    """The output paths, checked as the module docstring says, before any work is done."""
    finals = [as_path(p, "output") for p in paths]
    sources = _input_stats(inputs)
    for final in finals:
        _check_output(final, _lstat_or_none(final), force, sources)
        if not final.parent.is_dir():
            raise OutputPathError(f"{final}: no such directory {str(final.parent)!r}")
    return finals


def _input_stats(inputs: Iterable[Path]) -> list[os.stat_result]:
    """Identities (device, inode) of the input files that exist, through links."""
    found = []
    for path in inputs:
        with contextlib.suppress(OSError):
            found.append(os.stat(path))
    return found


def _lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a name too long, a file used as a directory, ...
        raise OutputPathError(f"{path}: {exc.strerror}") from exc


def _check_output(final: Path, st: os.stat_result | None, force: bool,
                  sources: list[os.stat_result]) -> None:
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputPathError(f"{final}: is a symbolic link; onnxz neither replaces links nor "
                              "writes through them (give the path it points to)")
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{final}: is {_kind(st.st_mode)}; onnxz writes regular files "
                              "only")
    if any((st.st_dev, st.st_ino) == (s.st_dev, s.st_ino) for s in sources):
        raise OutputPathError(f"{final}: is a file this command reads; it is never overwritten")
    if not force:
        raise OutputExistsError(f"{final}: already exists (use --force to replace it)")


@contextlib.contextmanager
def utf8_spelling(directory: Path) -> Iterator[str]:
    """``directory`` as a str UTF-8 can encode, for the libraries that accept nothing else
    (onnx's external data reader, onnxruntime): itself, or else a symbolic link to it in a
    private temporary directory, removed after the block."""
    name = str(directory)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="onnxz-") as private:
            link = os.path.join(private, "dir")
            os.symlink(os.path.abspath(directory), link)
            yield link
        return
    yield name


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back in this thread until the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass
class _Temp:
    """A locked temporary file beside ``final``."""

    final: Path
    path: Path
    fd: int

    @classmethod
    def create(cls, final: Path) -> _Temp:
        while True:
            path = final.parent / f".onnxz-{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputPathError(f"{final}: cannot create a file in "
                                      f"{str(final.parent)!r}: {exc.strerror}") from exc
            with contextlib.suppress(OSError):  # no locks here: then none is ever stale
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return cls(final, path, fd)

    def commit(self, force: bool, sources: list[os.stat_result]) -> None:
        """Move the temporary file to ``final`` (see the module docstring)."""
        st = _lstat_or_none(self.final)
        _check_output(self.final, st, force, sources)  # again: it may have changed meanwhile
        if not force:
            _link_without_replacing(self.path, self.final)
            return
        if st is not None:
            os.fchmod(self.fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != os.fstat(self.fd)[4:6]:
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(self.fd, st.st_uid, st.st_gid)
        os.replace(self.path, self.final)

    def discard(self) -> None:
        """Remove the temporary name (if still there), then release the lock."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)


def _link_without_replacing(source: Path, final: Path) -> None:
    """Give ``source`` the name ``final`` unless ``final`` exists (atomic, never replaces)."""
    try:
        os.link(source, final)
    except FileExistsError:
        raise OutputExistsError(f"{final}: already exists (it appeared while onnxz was "
                                "writing; use --force to replace it)") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this file system (FAT, some network file systems): claim the
        # name with O_EXCL, which fails if it exists, then rename over the empty claim.
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise OutputExistsError(f"{final}: already exists (it appeared while onnxz was "
                                    "writing; use --force to replace it)") from None
        os.replace(source, final)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync a directory: nothing to do there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the :data:`TEMP_NAME` files in ``directory`` that no live process holds and
    that are older than :data:`STALE_AFTER` seconds; return their paths."""
    now = time.time()
    removed: list[Path] = []
    try:
        names = [e.name for e in os.scandir(directory) if TEMP_NAME.fullmatch(e.name)]
    except OSError:
        return removed
    for name in names:
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_AFTER:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer lives
            if os.lstat(path).st_ino == st.st_ino:
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_outputs(
    paths: Sequence[object], force: bool, inputs: Iterable[Path] = ()
) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; move them onto ``paths`` if the block succeeds.

    The module docstring says what is checked and guaranteed. ``inputs`` are the files the
    command reads: never overwritten. The first path is moved last, so when it appears the
    others (e.g. its external data) are in place. An ``OSError`` writing a temporary file
    becomes an :class:`OutputPathError` naming the output.
    """
    inputs = list(inputs)
    finals = check_outputs(paths, force, inputs)
    sources = _input_stats(inputs)
    for directory in {f.parent for f in finals}:
        remove_stale_temps(directory)
    temps: list[_Temp] = []
    try:
        with deferred_signals():
            for final in finals:
                temps.append(_Temp.create(final))
        try:
            yield [t.path for t in temps]
            for t in temps:
                os.fsync(t.fd)
        except OSError as exc:
            if isinstance(exc, OnnxzError):
                raise  # already says which file (InputNotFoundError: an input)
            named = [t.final for t in temps if os.fsdecode(exc.filename or "") == str(t.path)]
            if exc.filename is not None and not named:
                raise  # about another file (an input): not ours to rename
            raise OutputPathError(f"{(named or finals)[0]}: cannot write: "
                                  f"{exc.strerror or exc}") from exc
        with deferred_signals():
            _commit(temps, force, sources)
    finally:
        with deferred_signals():
            for t in temps:
                t.discard()


def _commit(temps: list[_Temp], force: bool, sources: list[os.stat_result]) -> None:
    """Move every temporary file into place, the first one last; without ``force`` a
    failure takes back the ones already moved (they are new files, nobody else's)."""
    done: list[Path] = []
    try:
        for t in reversed(temps):
            try:
                t.commit(force, sources)
            except OSError as exc:
                raise OutputPathError(f"{t.final}: cannot write: {exc.strerror or exc}") from exc
            done.append(t.final)
    except BaseException:
        if not force:
            for final in done:
                with contextlib.suppress(OSError):
                    os.unlink(final)
        raise
    for directory in {t.final.parent for t in temps}:
        _sync_directory(directory)
