"""Binary cache of parsed XC files.

``load_xc(path)`` keeps the parsed CSR arrays in an uncompressed ``.npz`` so a second
load costs a read of the arrays instead of a parse:

* beside the source: ``<path>.cache.npz`` (e.g. ``amazon_train.txt.cache.npz``);
* when that directory is read-only (the shared real-data folders are): under
  ``$SLIDE_CACHE_DIR`` (default ``~/.cache/slide-repro``) as
  ``xc/<sha1(absolute path)[:16]>-<file name>.cache.npz``;
* when neither can be written the file is simply parsed each time.

A cache stores the source size, its ``st_mtime_ns``, its absolute path and
:data:`FORMAT_VERSION`; it is ignored (and rewritten) when any of them changes or the
arrays are inconsistent. Caches are written atomically and read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from slide.data.dataset import XCDataset
from slide.data.xc_format import read_xc
from slide.errors import DatasetFormatError
from slide.io import save_npz_atomic

__all__ = ["FORMAT_VERSION", "load_xc", "write_cache", "read_cache", "cache_paths",
           "user_cache_dir"]

log = logging.getLogger(__name__)

#: Bump when the parser's output or the cache layout changes.
FORMAT_VERSION = 1

_ARRAYS = ("x_indptr", "x_indices", "x_data", "y_indptr", "y_indices")
_DTYPES = {"x_indptr": np.int64, "x_indices": np.int32, "x_data": np.float32,
           "y_indptr": np.int64, "y_indices": np.int32}


def user_cache_dir() -> Path:
    """Root of the per-user cache (``$SLIDE_CACHE_DIR`` or ``~/.cache/slide-repro``)."""
    env = os.environ.get("SLIDE_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "slide-repro"


def cache_paths(path) -> list[Path]:
    """Candidate cache files for ``path``, in the order they are tried."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    key = hashlib.sha1(str(absolute).encode("utf-8")).hexdigest()[:16]
    return [path.with_name(path.name + ".cache.npz"),
            user_cache_dir() / "xc" / f"{key}-{path.name}.cache.npz"]


def _source_meta(path) -> tuple[int, int, str]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns), os.path.abspath(path)


def read_cache(cache_file, source) -> XCDataset | None:
    """The cached dataset if ``cache_file`` is valid for ``source``, else None."""
    cache_file = Path(cache_file)
    if not cache_file.is_file():
        return None
    try:
        size, mtime_ns, _ = _source_meta(source)
        with np.load(cache_file, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION:
                return None
            if int(z["source_size"]) != size or int(z["source_mtime_ns"]) != mtime_ns:
                return None
            arrays = {}
            for name in _ARRAYS:
                a = z[name]
                if a.dtype != _DTYPES[name] or a.ndim != 1:
                    return None
                arrays[name] = a
            nf = int(z["num_features"])
            nl = int(z["num_labels"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        log.debug("ignoring unreadable cache %s: %s", cache_file, exc)
        return None
    xp, yp = arrays["x_indptr"], arrays["y_indptr"]
    if (len(xp) != len(yp) or len(xp) < 1 or xp[0] != 0 or yp[0] != 0
            or xp[-1] != len(arrays["x_indices"]) or xp[-1] != len(arrays["x_data"])
            or yp[-1] != len(arrays["y_indices"])):
        return None
    return XCDataset(xp, arrays["x_indices"], arrays["x_data"], yp, arrays["y_indices"],
                     nf, nl)


def _save(cache_file: Path, source, ds: XCDataset) -> None:
    size, mtime_ns, absolute = _source_meta(source)
    save_npz_atomic(
        cache_file,
        format_version=np.int64(FORMAT_VERSION),
        source_size=np.int64(size),
        source_mtime_ns=np.int64(mtime_ns),
        source_path=np.array(absolute),
        num_features=np.int64(ds.num_features),
        num_labels=np.int64(ds.num_labels),
        **{name: np.ascontiguousarray(getattr(ds, name), dtype=_DTYPES[name])
           for name in _ARRAYS},
    )


def _dir_writable(directory: Path) -> bool:
    """Whether we may write in ``directory``, honouring its mode bits even as root.

    Root passes ``os.access`` everywhere, so a folder marked read-only (``r-x``) is
    treated as read-only for root too: the shared real-data folders must stay clean.
    """
    try:
        st = os.stat(directory)
    except OSError:
        return False
    if not os.access(directory, os.W_OK):
        return False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return bool(st.st_mode & 0o222)
    return True


def write_cache(source, ds: XCDataset) -> Path | None:
    """Store ``ds`` as the cache of ``source``: beside it, else in the user cache.

    Returns the cache file written, or None when no location is writable.
    """
    for candidate in cache_paths(source):
        try:
            parent = candidate.parent
            probe = parent
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            if not _dir_writable(probe):
                continue
            _save(candidate, source, ds)
            return candidate
        except OSError as exc:
            log.debug("cannot write cache %s: %s", candidate, exc)
    return None


def load_xc(path, cache: bool = True) -> XCDataset:
    """Load an XC file through the binary cache (see module docstring).

    With ``cache=False`` this is :func:`read_xc`. Parse errors are raised as
    :class:`DatasetFormatError` whatever the cache state.
    """
    path = Path(path)
    if not cache:
        return read_xc(path)
    if not path.is_file():
        raise DatasetFormatError(path, None, "no such file")
    for candidate in cache_paths(path):
        ds = read_cache(candidate, path)
        if ds is not None:
            return ds
    ds = read_xc(path)
    write_cache(path, ds)
    return ds
