"""Download, extract and verify registry datasets: ``slide data fetch NAME``.

Layout under ``root`` (default ``data``)::

    <root>/raw/<name>/<folder>/<files>          the XC files (+ <file>.cache.npz caches)
    <root>/raw/<name>/.verified                 JSON marker, written last
    <root>/<name>/test_order.npy                int64 permutation of the test points, seed 0

Procedure: if the marker is valid nothing is done. Otherwise, if all files are
already present in ``<root>/raw/<name>/<folder>/`` (placed by hand) they are verified
in place and no download is attempted; if the archive was placed by hand at
``<root>/raw/<name>/<archive>`` it is used. Else the archive is downloaded (gdown
for Google Drive, which handles the confirmation page; plain HTTP when a URL
template is given through ``url_template=`` or ``$SLIDE_DOWNLOAD_URL``, e.g.
``http://127.0.0.1:8000/{id}``) into a temporary file, falling back from the original
id to the mirror; its md5 is checked when the registry knows it; it is extracted
into a staging folder refusing absolute paths, ``..`` components, links and devices;
points/features/labels are checked exactly against the registry; caches are built;
then the folder is renamed into place, the test order is written and the marker
last. On any failure the temporary and staging files are removed, a folder moved
into place by this run is removed again, and files placed by hand are left alone.

Each download attempt is bounded (see :class:`DownloadLimits`): an overall deadline
(default 2 h), a minimum throughput over a sliding window (default 10 KiB/s over 60 s)
and a per-read timeout (60 s); each is set by an argument of :func:`fetch` / ``slide
data fetch`` or an environment variable, and 0 disables the first two. A server that
trickles bytes is thus cut off with a line saying which rule it broke.

Temporaries carry the process id (``.download-<pid>-*.part``, ``.extract-<pid>-*``);
a fetch that was killed leaves them behind, and the next fetch of the same dataset
removes those whose process is gone (and those of the older, pid-less naming) and
says so on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from slide.data.cache import write_cache
from slide.data.registry import DatasetSpec, get_dataset
from slide.data.splits import TEST_ORDER_FILE, TEST_ORDER_SEED, read_split, write_test_order
from slide.data.stats import dataset_stats
from slide.data.xc_format import read_xc
from slide.errors import ConfigError, FetchError, SlideError
from slide.io import atomic_write_text

__all__ = ["fetch", "dataset_paths", "DownloadLimits", "MARKER_FILE", "URL_ENV"]

MARKER_FILE = ".verified"
URL_ENV = "SLIDE_DOWNLOAD_URL"
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on one download attempt (a source: the original id or the mirror).

    deadline : seconds for the whole attempt (0 = none); env ``SLIDE_FETCH_DEADLINE``
    min_rate : bytes/s the attempt must average over every ``rate_window`` seconds once
        that long has passed (0 = no minimum); env ``SLIDE_FETCH_MIN_RATE``
    rate_window : seconds of the throughput window; env ``SLIDE_FETCH_RATE_WINDOW``
    read_timeout : seconds a single read may wait for data; env ``SLIDE_FETCH_READ_TIMEOUT``

    The rules are checked whenever data arrives and, at the latest, when a read times
    out, so a breach is noticed within ``read_timeout`` (the socket timeout is also
    capped at the deadline).
    """

    deadline: float = 7200.0
    min_rate: float = 10240.0
    rate_window: float = 60.0
    read_timeout: float = 60.0

    ENV = {"deadline": "SLIDE_FETCH_DEADLINE", "min_rate": "SLIDE_FETCH_MIN_RATE",
           "rate_window": "SLIDE_FETCH_RATE_WINDOW", "read_timeout": "SLIDE_FETCH_READ_TIMEOUT"}
    FLAG = {"deadline": "--deadline", "min_rate": "--min-rate", "rate_window": "--rate-window",
            "read_timeout": "--read-timeout"}

    def __post_init__(self):
        for name in ("deadline", "min_rate", "rate_window", "read_timeout"):
            v = getattr(self, name)
            positive = name in ("rate_window", "read_timeout")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (positive and v == 0):
                need = "> 0" if positive else ">= 0 (0 = none)"
                raise ConfigError(f"download limit {name} must be a finite number {need}, got {v!r}")

    @classmethod
    def resolve(cls, **given) -> "DownloadLimits":
        """Limits from the arguments given (not None), else the environment, else the defaults."""
        values = {}
        for name, env in cls.ENV.items():
            v = given.get(name)
            if v is None and os.environ.get(env, "").strip():
                text = os.environ[env].strip()
                try:
                    v = float(text)
                except ValueError:
                    raise ConfigError(f"${env} must be a number of {'bytes/s' if name == 'min_rate' else 'seconds'}, "
                                      f"got {text!r}") from None
            if v is not None:
                values[name] = v
        return cls(**values)

    def socket_timeout(self) -> float:
        return min(self.read_timeout, self.deadline) if self.deadline else self.read_timeout


class _Progress:
    """Checks the deadline and the minimum throughput as bytes arrive."""

    def __init__(self, limits: DownloadLimits):
        self.limits = limits
        self.start = time.monotonic()
        self.samples = deque([(self.start, 0)])

    def update(self, total: int) -> None:
        lim = self.limits
        now = time.monotonic()
        elapsed = now - self.start
        if lim.deadline and elapsed > lim.deadline:
            raise _SourceFailed(
                f"download exceeded its deadline of {lim.deadline:g} s ({total} bytes received; "
                f"raise it with {lim.FLAG['deadline']} or ${lim.ENV['deadline']}, 0 for none)")
        self.samples.append((now, total))
        # keep one sample at or before the start of the window
        while len(self.samples) > 1 and self.samples[1][0] <= now - lim.rate_window:
            self.samples.popleft()
        if lim.min_rate and elapsed >= lim.rate_window:
            t0, b0 = self.samples[0]
            rate = (total - b0) / max(now - t0, 1e-9)
            if rate < lim.min_rate:
                raise _SourceFailed(
                    f"download too slow: {rate:.0f} B/s over the last {now - t0:.0f} s, below the "
                    f"minimum of {lim.min_rate:g} B/s (lower it with {lim.FLAG['min_rate']} or "
                    f"${lim.ENV['min_rate']}, 0 for none)")


# ----------------------------------------------------------------------------- stale temporaries

_TEMP_PATTERN = re.compile(r"^\.(download|extract)-(?:(\d+)-)?[a-z0-9_]+(\.part)?$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous process with our id (containers reuse small ids): nothing of ours yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _size_of(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def remove_stale_temporaries(raw_dir: Path) -> list[Path]:
    """Remove ``.download-*.part`` files and ``.extract-*`` folders left by killed fetches.

    Only names of our own making are touched, and only when the process named in them
    is gone (names without a process id come from older versions and are always stale).
    Says what it removed in one line on stderr; returns the removed paths.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        return []
    removed, freed = [], 0
    for entry in sorted(raw_dir.iterdir()):
        m = _TEMP_PATTERN.match(entry.name)
        if not m or (m.group(1) == "download") != bool(m.group(3)):
            continue
        if m.group(2) is not None and _pid_alive(int(m.group(2))):
            continue
        try:
            size = _size_of(entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
        freed += size
    if removed:
        sys.stderr.write(f"slide: removed {len(removed)} stale temporary "
                         f"{'file' if len(removed) == 1 else 'files'} of an interrupted fetch from "
                         f"{raw_dir} ({freed / 1e6:.1f} MB)\n")
        sys.stderr.flush()
    return removed


class _SourceFailed(Exception):
    """One download source failed; the next one is tried."""


# ----------------------------------------------------------------------------- paths


def dataset_paths(spec: DatasetSpec, root="data") -> dict:
    """Where ``fetch`` puts the files of ``spec`` under ``root`` (whether present or not)."""
    root = Path(root)
    raw_dir = root / "raw" / spec.name
    folder = raw_dir / spec.folder
    out = {"raw_dir": raw_dir, "folder": folder, "marker": raw_dir / MARKER_FILE,
           "archive": raw_dir / spec.archive_name,
           "test_order": root / spec.name / TEST_ORDER_FILE}
    for key, fname in spec.files.items():
        out[key] = folder / fname
    return out


def _result(spec: DatasetSpec, paths: dict) -> dict:
    res = {"name": spec.name, "dir": str(paths["folder"]), "test_order": str(paths["test_order"]),
           "marker": str(paths["marker"])}
    if spec.layout == "split":
        res.update(train=str(paths["data"]), test=str(paths["data"]), data=str(paths["data"]),
                   train_split=str(paths["train_split"]), test_split=str(paths["test_split"]),
                   split_column=spec.split_column)
    else:
        res.update(train=str(paths["train"]), test=str(paths["test"]))
    return res


def _manual_hint(spec: DatasetSpec, paths: dict) -> str:
    names = ", ".join(spec.file_names)
    return (f"place the files by hand in {paths['folder']}/ ({names}) or the archive at "
            f"{paths['archive']}, then rerun `slide data fetch {spec.name}`")


# ----------------------------------------------------------------------------- marker


def _file_sig(path: Path) -> dict:
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _marker_valid(spec: DatasetSpec, paths: dict) -> bool:
    try:
        data = json.loads(paths["marker"].read_text(encoding="utf-8"))
        files = data["files"]
        for fname in spec.file_names:
            if files.get(fname) != _file_sig(paths["folder"] / fname):
                return False
        return data.get("name") == spec.name
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


# ----------------------------------------------------------------------------- verification


def _check(spec: DatasetSpec, what: str, got, expected) -> None:
    if expected is not None and got != expected:
        raise FetchError(f"{spec.name}: {what} is {got} but the registry says {expected}")


def _verify(spec: DatasetSpec, files: dict, build_cache: bool = True) -> dict:
    """Parse the files, compare with the registry, build caches. Returns stats."""
    st = spec.stats
    summary = {}
    if spec.layout == "train_test":
        for key, expected_points in (("train", st["train_points"]), ("test", st["test_points"])):
            ds = read_xc(files[key])
            _check(spec, f"{files[key].name}: number of points", len(ds), expected_points)
            _check(spec, f"{files[key].name}: number of features", ds.num_features, st["features"])
            _check(spec, f"{files[key].name}: number of labels", ds.num_labels, st["labels"])
            summary[key] = dataset_stats(ds)
            if build_cache:
                write_cache(files[key], ds)
            del ds
    else:
        ds = read_xc(files["data"])
        _check(spec, f"{files['data'].name}: number of features", ds.num_features, st["features"])
        _check(spec, f"{files['data'].name}: number of labels", ds.num_labels, st["labels"])
        _check(spec, f"{files['data'].name}: number of points", len(ds),
               st["train_points"] + st["test_points"])
        col = spec.split_column
        tr = read_split(files["train_split"], col, num_records=len(ds))
        te = read_split(files["test_split"], col, num_records=len(ds))
        _check(spec, f"{files['train_split'].name} column {col}: number of points", len(tr), st["train_points"])
        _check(spec, f"{files['test_split'].name} column {col}: number of points", len(te), st["test_points"])
        if np.intersect1d(tr, te).size:
            raise FetchError(f"{spec.name}: train and test splits (column {col}) overlap")
        summary["data"] = dataset_stats(ds)
        summary["train"] = dataset_stats(ds.subset(tr))
        summary["test"] = dataset_stats(ds.subset(te))
        if build_cache:
            write_cache(files["data"], ds)
    return summary


# ----------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _http_download(url: str, dest: Path, progress: bool, desc: str,
                   limits: DownloadLimits | None = None) -> None:
    from tqdm import tqdm

    limits = limits or DownloadLimits()
    watch = _Progress(limits)
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=limits.socket_timeout()) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with open(dest, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=desc, disable=not progress,
                                               leave=False) as bar:
                while True:
                    watch.update(got)
                    # read1 returns as soon as some data is there, so the rules are
                    # checked even when a server trickles bytes
                    block = resp.read1(_CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    bar.update(len(block))
            watch.update(got)
            if total is not None and dest.stat().st_size != total:
                raise _SourceFailed(f"download truncated ({dest.stat().st_size} of {total} bytes)")
    except urllib.error.HTTPError as exc:
        raise _SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
    except TimeoutError:
        watch.update(got)  # past the deadline: say so
        raise _SourceFailed(f"no data received for {limits.socket_timeout():g} s ({got} bytes so far; "
                            f"{limits.FLAG['read_timeout']} or ${limits.ENV['read_timeout']})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise _SourceFailed(f"no answer within {limits.socket_timeout():g} s") from None
        raise _SourceFailed(f"download failed: {reason}") from None


def _gdown_download(file_id: str, dest: Path, progress: bool,
                    limits: DownloadLimits | None = None) -> None:
    try:
        import gdown
    except ImportError:  # pragma: no cover - gdown is a dependency
        raise _SourceFailed("gdown is not installed") from None
    import inspect

    limits = limits or DownloadLimits()
    kwargs = {}
    accepted = inspect.signature(gdown.download).parameters
    if "timeout" in accepted:
        kwargs["timeout"] = limits.socket_timeout()
    cancel = threading.Event()
    if "cancel" in accepted:
        kwargs["cancel"] = cancel
    outcome = {}

    def work(fh):
        try:
            outcome["out"] = gdown.download(id=file_id, output=fh, quiet=not progress, **kwargs)
        except BaseException as exc:  # handed to the waiting thread
            outcome["exc"] = exc

    watch = _Progress(limits)
    try:
        # an open file as output: gdown then writes no partial file of its own. gdown
        # runs in a thread so the deadline and throughput rules can stop the wait.
        with open(dest, "wb") as fh:
            worker = threading.Thread(target=work, args=(fh,), daemon=True, name="gdown")
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.25)
                    with contextlib.suppress(OSError):
                        watch.update(os.fstat(fh.fileno()).st_size)
            except _SourceFailed:
                cancel.set()
                worker.join(2.0)
                raise
        if "exc" in outcome:
            raise outcome["exc"]
        out = outcome.get("out")
    except _SourceFailed:
        raise
    except Exception as exc:  # gdown raises a variety of errors (FileURLRetrievalError, ...)
        try:
            import requests

            if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
                raise _SourceFailed("cannot reach Google Drive (no network, or it is blocked)") from None
        except ImportError:  # pragma: no cover
            pass
        msg = " ".join(str(exc).split())
        raise _SourceFailed(f"Google Drive download failed: {msg[:200]}") from None
    if out is None or not dest.exists() or dest.stat().st_size == 0:
        raise _SourceFailed("Google Drive download failed (no file received)")


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html")


# ----------------------------------------------------------------------------- extraction


def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return True
    return any(part == ".." for part in PurePosixPath(norm).parts)


def _safe_target(base: Path, name: str) -> Path:
    if _unsafe_name(name):
        raise _SourceFailed(f"unsafe archive member {name!r} (absolute path or '..')")
    target = (base / name.replace("\\", "/")).resolve()
    base_resolved = base.resolve()
    if target != base_resolved and base_resolved not in target.parents:
        raise _SourceFailed(f"unsafe archive member {name!r} (escapes the extraction folder)")
    return target


def _extract(archive: Path, dest: Path, progress: bool) -> None:
    """Extract a zip or tar archive into ``dest`` safely (members checked first)."""
    from tqdm import tqdm

    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:  # check everything before writing anything
                    _safe_target(dest, info.filename)
                    mode = (info.external_attr >> 16) & 0o170000
                    if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
                        raise _SourceFailed(f"archive member {info.filename!r} is not a regular file")
                total = sum(i.file_size for i in infos)
                with tqdm(total=total, unit="B", unit_scale=True, desc="extract", disable=not progress,
                          leave=False) as bar:
                    for info in infos:
                        target = _safe_target(dest, info.filename)
                        if info.is_dir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, _CHUNK)
                        bar.update(info.file_size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError) as exc:
            raise _SourceFailed(f"corrupt zip archive: {exc}") from None
        return
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError:
        is_tar = False
    if not is_tar:
        raise _SourceFailed("not a zip or tar archive")
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                _safe_target(dest, m.name)
                if not (m.isfile() or m.isdir()):
                    raise _SourceFailed(f"archive member {m.name!r} is a link or special file")
            for m in members:
                target = _safe_target(dest, m.name)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                if src is None:
                    raise _SourceFailed(f"cannot read archive member {m.name!r}")
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _SourceFailed(f"corrupt tar archive: {exc}") from None


def _locate(spec: DatasetSpec, extracted: Path) -> dict:
    """Find each expected file in the extracted tree (preferably under ``folder``)."""
    found = {}
    for key, fname in spec.files.items():
        preferred = extracted / spec.folder / fname
        if preferred.is_file():
            found[key] = preferred
            continue
        hits = [p for p in extracted.rglob(fname) if p.is_file()]
        if len(hits) != 1:
            what = "not found" if not hits else f"found {len(hits)} times"
            raise _SourceFailed(f"archive does not hold {spec.folder}/{fname} ({what})")
        found[key] = hits[0]
    return found


# ----------------------------------------------------------------------------- main entry


def _finish(spec: DatasetSpec, paths: dict, summary: dict, origin: str, md5: str | None) -> None:
    test_points = spec.stats["test_points"]
    write_test_order(paths["test_order"], test_points, TEST_ORDER_SEED)
    marker = {
        "name": spec.name,
        "folder": spec.folder,
        "origin": origin,
        "archive_md5": md5,
        "files": {f: _file_sig(paths["folder"] / f) for f in spec.file_names},
        "split_column": spec.split_column if spec.layout == "split" else None,
        "stats": summary,
        "test_order": {"path": str(paths["test_order"]), "seed": TEST_ORDER_SEED, "n": test_points},
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(paths["marker"], json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _install_from_archive(spec: DatasetSpec, paths: dict, archive: Path, progress: bool) -> dict:
    """Extract ``archive``, verify in staging, move the folder into place. Returns stats."""
    raw_dir = paths["raw_dir"]
    staging = Path(tempfile.mkdtemp(prefix=f".extract-{os.getpid()}-", dir=raw_dir))
    try:
        _extract(archive, staging / "x", progress)
        located = _locate(spec, staging / "x")
        stage_folder = staging / "stage" / spec.folder
        stage_folder.mkdir(parents=True)
        for key, src in located.items():
            os.replace(src, stage_folder / spec.files[key])
        staged = {key: stage_folder / fname for key, fname in spec.files.items()}
        try:
            summary = _verify(spec, staged, build_cache=True)
        except FetchError as exc:
            raise _SourceFailed(_unstage(str(exc).removeprefix(f"{spec.name}: "), stage_folder, paths)) from None
        except SlideError as exc:
            # name where the file was going, not the staging copy deleted on the way out
            raise _SourceFailed(f"verification failed: {_unstage(str(exc), stage_folder, paths)} "
                                "(file from the archive, not installed)") from None
        os.replace(stage_folder, paths["folder"])
        return summary
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unstage(message: str, stage_folder: Path, paths: dict) -> str:
    return message.replace(str(stage_folder), str(paths["folder"]))


def _checked_md5(spec: DatasetSpec, archive: Path) -> str:
    """The md5 of ``archive``; a mismatch with the registry's (when known) fails the source."""
    archive_md5 = _md5(archive)
    if spec.md5 and archive_md5 != spec.md5:
        raise _SourceFailed(f"md5 {archive_md5} differs from the registry's {spec.md5}")
    return archive_md5


class _Rollback:
    """What a failed fetch undoes: the marker, a folder this run moved into place (with
    its test order), and the folders it created while empty. Files placed by hand stay."""

    def __init__(self, root, paths: dict):
        self.paths = paths
        self.created = [p for p in (Path(root), Path(root) / "raw", paths["raw_dir"],
                                    paths["test_order"].parent) if not p.exists()]
        self.placed_by_us = False

    def undo(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths["marker"].unlink()
        if self.placed_by_us:
            shutil.rmtree(self.paths["folder"], ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.paths["test_order"].unlink()
        for p in sorted(self.created, key=lambda q: len(q.parts), reverse=True):
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty


def _from_placed_files(spec: DatasetSpec, paths: dict, files: dict) -> bool:
    """Verify files placed by hand in the folder; False when there are none."""
    folder = paths["folder"]
    present = [f for f in files.values() if f.is_file()]
    if present and len(present) == len(files):
        try:
            summary = _verify(spec, files, build_cache=True)
        except FetchError as exc:
            raise FetchError(f"{exc} (files placed by hand in {folder}/)") from None
        _finish(spec, paths, summary, origin="placed by hand", md5=None)
        return True
    if present:
        missing = [f.name for f in files.values() if not f.is_file()]
        raise FetchError(f"{spec.name}: {folder}/ holds only part of the dataset "
                         f"(missing {', '.join(missing)}); add the missing files or remove the folder")
    if folder.exists():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        else:
            raise FetchError(f"{spec.name}: {folder} exists but holds none of {', '.join(spec.file_names)}; "
                             "remove it and rerun")
    return False


def _from_placed_archive(spec: DatasetSpec, paths: dict, progress: bool, rollback: _Rollback) -> None:
    """Install from the archive placed by hand at ``paths["archive"]``."""
    try:
        archive_md5 = _checked_md5(spec, paths["archive"])
        summary = _install_from_archive(spec, paths, paths["archive"], progress)
        rollback.placed_by_us = True
        _finish(spec, paths, summary, origin=f"archive placed by hand: {paths['archive'].name}",
                md5=archive_md5)
    except _SourceFailed as exc:
        raise FetchError(f"{spec.name}: archive {paths['archive']}: {exc}") from None


def _from_download(spec: DatasetSpec, paths: dict, progress: bool, url_template: str | None,
                   keep_archive: bool, limits: DownloadLimits, rollback: _Rollback) -> None:
    """Download the archive (the original id, then the mirror) and install it."""
    template = url_template if url_template is not None else os.environ.get(URL_ENV) or None
    ids = [("original", spec.drive_id), ("mirror", spec.mirror_id)]
    ids = [(label, i) for label, i in ids if i]
    if not ids:
        raise FetchError(f"{spec.name}: no download id is known; {_manual_hint(spec, paths)}")
    failures = []
    for label, file_id in ids:
        fd, tmp_name = tempfile.mkstemp(prefix=f".download-{os.getpid()}-", suffix=".part",
                                        dir=paths["raw_dir"])
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if template:
                _http_download(template.format(id=file_id), tmp, progress, f"{spec.name} ({label})", limits)
            else:
                _gdown_download(file_id, tmp, progress, limits)
            if _looks_like_html(tmp):
                raise _SourceFailed("received an HTML page instead of the archive "
                                    "(download quota exceeded or file not shared)")
            archive_md5 = _checked_md5(spec, tmp)
            summary = _install_from_archive(spec, paths, tmp, progress)
            rollback.placed_by_us = True
            if keep_archive:
                os.replace(tmp, paths["archive"])
            _finish(spec, paths, summary, origin=f"download ({label} id {file_id})", md5=archive_md5)
            return
        except _SourceFailed as exc:
            failures.append(f"{label} {file_id}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    raise FetchError(f"could not fetch {spec.name} ({'; '.join(failures)}); {_manual_hint(spec, paths)}")


def fetch(name: str, root="data", progress: bool = True, registry=None,
          url_template: str | None = None, keep_archive: bool = False,
          limits: DownloadLimits | None = None) -> dict:
    """Make dataset ``name`` available under ``root`` and return its paths.

    Returns ``{"name", "dir", "train", "test", "test_order", "marker"}`` (plus
    ``"data"``, ``"train_split"``, ``"test_split"``, ``"split_column"`` for split-layout
    datasets such as Bibtex, whose ``train`` and ``test`` are the one data file).
    Raises :class:`FetchError` with a one-line message on failure. ``limits`` bound
    each download attempt (default: :meth:`DownloadLimits.resolve`, i.e. the
    environment, then the defaults).

    Sources, in order: a valid marker (nothing to do), files placed by hand in the
    folder, an archive placed by hand, a download.
    """
    spec = get_dataset(name, registry)
    limits = limits if limits is not None else DownloadLimits.resolve()
    paths = dataset_paths(spec, root)
    files = {key: paths["folder"] / fname for key, fname in spec.files.items()}
    remove_stale_temporaries(paths["raw_dir"])

    if _marker_valid(spec, paths):
        if not paths["test_order"].exists():
            write_test_order(paths["test_order"], spec.stats["test_points"], TEST_ORDER_SEED)
        return _result(spec, paths)

    rollback = _Rollback(root, paths)
    ok = False
    try:
        with contextlib.suppress(FileNotFoundError):
            paths["marker"].unlink()
        if not _from_placed_files(spec, paths, files):
            paths["raw_dir"].mkdir(parents=True, exist_ok=True)
            # an archive placed by hand is used before any download
            if paths["archive"].is_file():
                _from_placed_archive(spec, paths, progress, rollback)
            else:
                _from_download(spec, paths, progress, url_template, keep_archive, limits, rollback)
        ok = True
        return _result(spec, paths)
    finally:
        if not ok:
            rollback.undo()
