"""Atomic file writing helpers used across the suite.

Every file the suite produces is written to a temporary file in the destination
directory and renamed over the destination only once it is complete, so a crash,
a full disk or an exception never leaves a truncated file that looks finished.

    atomic_write_bytes(path, data)
    atomic_write_text(path, text)
    with atomic_path(path) as tmp: ...write tmp...   # renamed over path on success
    save_npz_atomic(path, **arrays)                   # uncompressed .npz

A failed write is one :class:`OutputWriteError` line naming the file
(``describe_write_error`` says why: disk full, read-only, permission), and the
temporaries a killed writer left behind (``.NAME.*.tmp.SUFFIX``) are removed by
``remove_stale_temporaries`` when the next run starts.

It also reads input files without surprises:

    read_regular_file(path, what="data file")         # whole file as a uint8 array
    not_a_regular_file(path, what)                    # why path cannot be read, or None

A folder, FIFO, socket or device given as an input file is reported as such (a FIFO
is never opened in blocking mode, so it cannot hang the reader); an unreadable file
is one :class:`~slide.errors.DatasetFormatError` line naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "save_npz_atomic",
           "fsync_dir", "read_regular_file", "not_a_regular_file", "describe_os_error",
           "OutputWriteError", "describe_write_error", "remove_stale_temporaries", "writable_dir_problem"]


def fsync_dir(directory) -> None:
    """Flush a directory entry (after a rename) where the platform allows it."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None, fsync: bool = False):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file is created empty (so its name is reserved) in the same
    directory as ``path``; the caller writes it by name. On an exception inside the
    ``with`` block the temporary file is removed and ``path`` is left untouched.
    ``suffix`` defaults to the suffix of ``path`` so tools that look at the file
    extension (``np.savez`` adds ``.npz`` when it is missing) behave.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                    dir=str(directory))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result ordinary permissions.
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        except OSError:
            pass
        os.replace(tmp, path)
        if fsync:
            fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data, fsync: bool = False) -> Path:
    """Write ``data`` (bytes-like, numpy arrays included) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as fh:
            if isinstance(data, np.ndarray):
                np.ascontiguousarray(data).tofile(fh)
            else:
                fh.write(data)
    return path


def atomic_write_text(path, text: str, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def save_npz_atomic(path, **arrays) -> Path:
    """Save ``arrays`` as an uncompressed ``.npz`` at exactly ``path``, atomically.

    Load it back with ``np.load(path, allow_pickle=False)``; object arrays are refused.
    """
    path = Path(path)
    for key, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"save_npz_atomic: array {key!r} has dtype object")
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:  # a file object stops numpy appending ".npz"
            np.savez(fh, **arrays)
    return path


# ----------------------------------------------------------------------------- reading inputs

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _kind_problem(mode: int, what: str) -> str | None:
    if stat.S_ISREG(mode):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return f"is {kind}, not a {what}"
    return f"is not a regular file, not a {what}"


def describe_os_error(path, exc: OSError) -> str:
    """A short phrase for why ``path`` could not be opened or read."""
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)})"
        return "no such file"
    if exc.errno == errno.ENOTDIR:
        return "no such file (a parent of it is not a folder)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (cannot read it)"
    return f"cannot read: {exc.strerror or exc}"


def not_a_regular_file(path, what: str = "data file") -> str | None:
    """Why ``path`` cannot be read as an input file ("no such file", "is a FIFO ..."), or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return describe_os_error(path, exc)
    return _kind_problem(st.st_mode, what)


def read_regular_file(path, what: str = "data file") -> np.ndarray:
    """The bytes of regular file ``path`` as a uint8 array.

    Raises :class:`~slide.errors.DatasetFormatError` (no line) saying what ``path`` is
    when it is missing, a folder, a FIFO, a device or unreadable. The file is opened
    non-blocking and checked with ``fstat`` before any read, so a FIFO cannot hang.
    """
    from slide.errors import DatasetFormatError

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise DatasetFormatError(path, None, f"is a directory, not a {what}") from None
        raise DatasetFormatError(path, None, describe_os_error(path, exc)) from None
    try:
        st = os.fstat(fd)
        problem = _kind_problem(st.st_mode, what)
        if problem:
            raise DatasetFormatError(path, None, problem)
        out = np.empty(st.st_size, dtype=np.uint8)
        view = memoryview(out)
        got = 0
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            while got < st.st_size:
                k = fh.readinto(view[got:])
                if not k:
                    break
                got += k
        if got < st.st_size:
            raise DatasetFormatError(path, None, f"shrank while being read ({got} of {st.st_size} bytes)")
        return out
    except OSError as exc:
        raise DatasetFormatError(path, None, describe_os_error(path, exc)) from None
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- writing outputs

def describe_write_error(exc: OSError) -> str:
    """A short phrase for why a file could not be written (disk full, read-only, ...)."""
    phrases = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EFBIG: "file too large for this file system or limit",
               errno.ENOTDIR: "a parent of it is not a folder", errno.EISDIR: "it is a folder"}
    if getattr(errno, "EDQUOT", None) is not None:
        phrases[errno.EDQUOT] = "disk quota exceeded"
    return phrases.get(exc.errno, f"cannot write: {exc.strerror or exc}")


def _slide_error():
    from slide.errors import SlideError

    return SlideError


class OutputWriteError(_slide_error()):
    """An output file could not be written; the message names it and says why."""

    def __init__(self, path, exc: OSError):
        self.path = str(path)
        self.reason = describe_write_error(exc)
        super().__init__(f"{self.path}: cannot write it: {self.reason}")


def writable_dir_problem(path) -> str | None:
    """Why ``path`` cannot be (created and) used as an output folder, or None.

    Checks, without creating anything: ``path`` is a folder or can be created below its nearest
    existing ancestor, that ancestor is a folder (not a file), and it is writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        return "exists and is not a folder"
    probe = p
    while not probe.exists():
        if probe.is_symlink():
            return f"is a broken symbolic link ({probe})"
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        return f"cannot be created: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot be written: the folder {probe} is read-only for this user"
    if _read_only_fs(probe):
        return f"cannot be written: {probe} is on a read-only file system"
    return None


def _read_only_fs(path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


def remove_stale_temporaries(directory, names) -> tuple[int, int]:
    """Delete the temporaries :func:`atomic_path` made for ``names`` in ``directory``.

    A writer killed between creating its temporary (``.NAME.XXXX.tmp.SUFFIX``) and the rename
    leaves it behind; only files of exactly that naming are removed. Call this before the run
    that owns ``directory`` starts writing (two runs must not share a folder). Returns (files,
    bytes) removed.
    """
    directory = Path(directory)
    count = size = 0
    if not directory.is_dir():
        return 0, 0
    for name in names:
        suffix = Path(name).suffix
        for tmp in directory.glob(f".{name}.*.tmp{suffix}"):
            try:
                st = tmp.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                tmp.unlink()
            except OSError:
                continue
            count += 1
            size += st.st_size
    return count, size
