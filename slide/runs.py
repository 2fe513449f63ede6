"""The outputs every method writes: ``curve.csv`` and ``run.json``, their schema, and run metadata."""

from __future__ import annotations

import csv
import io
import json
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

import jsonschema

from .errors import SlideError
from .settings import available_cores

CURVE_COLUMNS = ("step", "epoch", "samples", "train_seconds", "wall_seconds", "cpu_seconds", "loss",
                 "p_at_1", "p_at_3", "p_at_5", "eval_points")
#: Columns added after the first release: a curve written without them reads with NaN there.
_LATER_COLUMNS = ("cpu_seconds",)
SCHEMA_PATH = Path(__file__).with_name("schemas") / "run.schema.json"
_VERSIONED = ("numpy", "numba", "tensorflow", "pandas", "slide-repro")


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` atomically; a failed write is one :class:`~slide.io.OutputWriteError` naming ``path``."""
    from .io import OutputWriteError, atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise OutputWriteError(path, err) from None


class DamagedRunFile(SlideError):
    """A run's ``model.npz``, ``run.json`` or ``curve.csv`` cannot be read back (``--resume``)."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}; move it away (or run without --resume) to start over")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_run_for_resume(path) -> dict:
    """``run.json`` as a dict, or :class:`DamagedRunFile` saying what is wrong with it."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedRunFile(path, "damaged: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise DamagedRunFile(path, f"damaged: not valid JSON ({err.msg} at line {err.lineno})") from None
    except OSError as err:
        raise DamagedRunFile(path, f"cannot be read ({err.strerror or err})") from None
    if not isinstance(record, dict):
        raise DamagedRunFile(path, "damaged: not a JSON object")
    try:
        validate_run(record, path)
    except ValueError as err:
        raise DamagedRunFile(path, f"damaged: {str(err).split(': ', 1)[-1]}") from None
    return record


def read_curve_for_resume(path) -> list[dict]:
    """The rows of ``curve.csv``, or :class:`DamagedRunFile` saying what is wrong with it."""
    import pandas as pd

    path = Path(path)
    try:
        df = read_curve(path)
    except pd.errors.EmptyDataError:
        raise DamagedRunFile(path, "damaged: empty (no header line)") from None
    except UnicodeDecodeError:
        raise DamagedRunFile(path, "damaged: not UTF-8 text") from None
    except OSError as err:
        raise DamagedRunFile(path, f"cannot be read ({err.strerror or err})") from None
    except (ValueError, pd.errors.ParserError) as err:
        msg = str(err)
        msg = msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg
        raise DamagedRunFile(path, f"damaged: {_one_line(msg)}") from None
    bad = [c for c in df.columns if c != "loss" and not pd.api.types.is_numeric_dtype(df[c])]
    if bad or not pd.api.types.is_numeric_dtype(df["loss"]):
        raise DamagedRunFile(path, f"damaged: non-numeric values in {bad or ['loss']}")
    # a run that stops early scores its last step twice (sample, then the whole test set)
    if df["step"].isna().any() or (len(df) > 1 and (df["step"].diff().iloc[1:] < 0).any()):
        raise DamagedRunFile(path, "damaged: steps missing or going backwards")
    return df.to_dict("records")


def run_schema() -> dict:
    """The JSON Schema of ``run.json`` shared by every method."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_run(record: dict, source="run.json") -> None:
    """Raise ``ValueError`` naming ``source`` when ``record`` breaks the shared schema."""
    try:
        jsonschema.validate(record, run_schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "<root>"
        raise ValueError(f"{source}: {where}: {err.message}") from None


def read_curve(path):
    """Read ``curve.csv`` as a pandas DataFrame, checking its columns."""
    import pandas as pd

    df = pd.read_csv(path)
    for col in _LATER_COLUMNS:
        if col not in df.columns and set(df.columns) == set(CURVE_COLUMNS) - {col}:
            df.insert(CURVE_COLUMNS.index(col), col, float("nan"))
    if tuple(df.columns) != CURVE_COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)} != {list(CURVE_COLUMNS)}")
    return df


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _size_bytes(text: str) -> int:
    """Bytes of a sysfs cache size such as ``32K`` or ``1024K``."""
    text = text.strip().upper()
    unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:])
    return int(text[:-1]) * unit if unit else int(text)


def cpu_caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, int]:
    """The first core's caches in bytes by name (``L1d``, ``L1i``, ``L2``, ``L3``), from Linux sysfs;
    caches it cannot read are left out (``{}`` off Linux)."""
    out = {}
    for d in sorted(root.glob("index*")):
        try:
            kind = {"Data": "d", "Instruction": "i"}.get((d / "type").read_text().strip(), "")
            out[f"L{int((d / 'level').read_text())}{kind}"] = _size_bytes((d / "size").read_text())
        except (OSError, ValueError, KeyError):
            continue
    return out


def _binary(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n / 2**10:g} KiB"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo"), caches: dict | None = None) -> str:
    """The CPU in words: its model name and, where Linux tells them, its family, model and stepping
    numbers and data cache sizes (``caches``: :func:`cpu_caches` by default). Virtual machines often
    show one name, such as "AMD EPYC", for CPU generations whose speed differs by 2x."""
    fields = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    ids = " ".join(f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model", "stepping") if fields.get(k))
    caches = cpu_caches() if caches is None else caches
    sizes = ", ".join(f"{k} {_binary(v)}" for k, v in caches.items() if not k.endswith("i"))
    detail = "; ".join(x for x in (ids, sizes) if x)
    return f"{name} ({detail})" if detail else name


def machine_info() -> dict:
    """CPU model, usable cores and total memory of this machine."""
    import psutil

    return {"cpu": cpu_model(), "cores": available_cores(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform()}


def versions(names=_VERSIONED) -> dict:
    """Versions of Python and of the libraries ``names`` (installed ones only)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class RunRecorder:
    """Collects a run's learning curve and writes ``curve.csv`` / ``run.json`` atomically.

    ``curve.csv`` is rewritten whole (temporary file, then rename) after every evaluation, so a
    reader never sees a torn file; ``run.json`` is written once, when the run ends, and marks the
    run complete (or failed).
    """

    def __init__(self, out_dir, *, method, dataset, seed, threads, hyperparameters):
        from .io import OutputWriteError

        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputWriteError(self.out_dir, err) from None
        self.rows: list[dict] = []
        self.header = dict(method=method, dataset=dataset, seed=int(seed), threads=int(threads),
                           hyperparameters=hyperparameters)
        self.started = time.time()

    @property
    def curve_path(self) -> Path:
        return self.out_dir / "curve.csv"

    @property
    def run_path(self) -> Path:
        return self.out_dir / "run.json"

    def add_point(self, **row) -> None:
        missing = set(CURVE_COLUMNS) - set(row)
        if missing:
            raise ValueError(f"curve row lacks {sorted(missing)}")
        self.rows.append({c: row[c] for c in CURVE_COLUMNS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        _atomic_text(self.curve_path, buf.getvalue())

    def finish(self, *, status, reason=None, final=None, train_seconds=0.0, median_batch_seconds=None,
               extra=None) -> dict:
        """Write ``run.json`` (validated against the schema) and return the record."""
        record = dict(self.header)
        record.update(status=status, reason=reason, final=final, train_seconds=float(train_seconds),
                      median_batch_seconds=median_batch_seconds, peak_rss_mb=round(peak_rss_mb(), 1),
                      versions=versions(), machine=machine_info(),
                      started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                      wall_seconds=round(time.time() - self.started, 3))
        record.update(extra or {})
        validate_run(record, self.run_path)
        _atomic_text(self.run_path, json.dumps(record, indent=2, sort_keys=False) + "\n")
        return record


def load_run(path) -> dict:
    """Read and validate a ``run.json``."""
    path = Path(path)
    record = json.loads(path.read_text())
    validate_run(record, path)
    return record
