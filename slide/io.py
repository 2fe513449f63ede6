"""Atomic file writing helpers used across the suite.

Every file the suite produces is written to a temporary file in the destination
directory and renamed over the destination only once it is complete, so a crash,
a full disk or an exception never leaves a truncated file that looks finished.

    atomic_write_bytes(path, data)
    atomic_write_text(path, text)
    with atomic_path(path) as tmp: ...write tmp...   # renamed over path on success
    save_npz_atomic(path, **arrays)                   # uncompressed .npz
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "save_npz_atomic",
           "fsync_dir"]


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
