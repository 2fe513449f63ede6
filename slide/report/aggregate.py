"""Tidy tables from the runs: summary, curves, thread scaling, speedups, the table, job records.

Definitions (also stated in the report):

* **time to reach P@1 = t**: the training time (``train_seconds``: time inside training steps,
  evaluation excluded, as in the paper) of the first evaluation whose P@1 >= t, over every
  evaluation of the run (periodic sample evaluations and full-test evaluations alike, i.e. the
  points plotted in the P@1-against-time figure); NaN when the run never reaches t.
* **speedup of SLIDE over method M at equal P@1**: on one dataset and seed, take the lower of the
  two runs' best P@1 as the target; speedup = M's time to reach it / SLIDE's time to reach it
  (> 1: SLIDE is faster). Seeds are averaged over the comparable pairs. A pair gives no speedup
  (NaN, with the reason in ``reason``) when either run was disturbed (other processes took its
  cores, :func:`slide.contention.disturbed_reason`) or when either run did not learn: its best P@1
  is not above the P@1 of ranking the most frequent training labels first (``popularity`` in
  run.json, "label popularity") by more than ``POPULARITY_MARGIN``.
* **table target**: ``datasets.<name>.target_p_at_1`` when set, else the lowest best P@1 among
  the completed headline runs on the dataset that learned, so that every such method reaches it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from slide.contention import DISTURBED_NOTE, disturbed_reason
from slide.runs import CURVE_COLUMNS, load_run, read_curve

from .io import write_csv
from .style import method_label, method_order

#: The tables the aggregate writes to ``results/<preset>/<name>.csv``.
TABLE_NAMES = ("summary", "curves", "threads", "phases", "speedups", "table", "jobs")
#: Timing-contention figures of a run or benchmark (``slide.contention``); ``load_1m_*`` is the
#: 1-minute load average at the start and end, ``disturbed`` the reason ("" when quiet).
CONTENTION_COLUMNS = [
    "compile_seconds", "cpu_seconds", "cpu_utilisation", "other_cpu_share", "load_1m_start", "load_1m_end",
    "disturbed",
]
SUMMARY_COLUMNS = [
    "dataset", "dataset_name", "source", "method", "variant", "seed", "status", "reason",
    "p_at_1", "p_at_3", "p_at_5", "best_p_at_1", "final_eval_points", "train_seconds", "wall_seconds",
    "eval_seconds", "steps", "epochs", "samples", "batch_size", "threads", "median_batch_seconds",
    "samples_per_second", "peak_rss_mb", "active_per_sample_mean", "num_labels", "active_fraction",
    "target_p_at_1", "time_to_target_seconds", "popularity_p_at_1", "learned", "best_epoch", "best_step",
    "max_train_seconds_cut", "stopped_early", *CONTENTION_COLUMNS, "cpu", "cores", "memory_gb", "gpu", "run_dir",
]
CURVES_COLUMNS = ["dataset", "method", "variant", "seed", "status", "disturbed", *CURVE_COLUMNS, "full_eval"]
THREADS_COLUMNS = [
    "dataset", "method", "threads", "seed", "batch_size", "batches", "median_batch_seconds",
    "p10_batch_seconds", "p90_batch_seconds", "samples_per_second", "active_per_sample_mean",
    "peak_rss_mb", "scale", *CONTENTION_COLUMNS, "path",
]
#: One row per timed phase of a benchmark that set its phases beside their memory floor (SLIDE's
#: ``phase_floor``): mean seconds per batch, the phase's distinct bytes and the time they take at the
#: benchmark's ``stream_gbps``, and their ratio (empty where the phase moves no counted bytes); on the
#: row pass's gradient phase, the time the batch's output rows take read and written back scattered
#: with no arithmetic (the benchmark's ``rows_floor``; empty on other phases and older benchmarks); and
#: when the bandwidth figure was measured (``stream_measured``; empty for older benchmarks).
PHASES_COLUMNS = [
    "dataset", "method", "threads", "seed", "phase", "seconds", "floor_bytes", "floor_seconds", "x_of_floor",
    "rows_floor_seconds", "stream_gbps", "stream_measured", "load_1m_start", "disturbed", "path",
]
#: A common P@1 must beat label popularity by this much to count: curves are rounded to 6 digits and
#: periodic evaluations use a sample of test points (about 0.015 standard error at 1,000 points).
POPULARITY_MARGIN = 0.01
SPEEDUP_COLUMNS = [
    "dataset", "baseline", "seeds", "target_p_at_1", "slide_seconds", "baseline_seconds", "speedup",
    "slide_best_p_at_1", "baseline_best_p_at_1", "slide_final_p_at_1", "baseline_final_p_at_1",
    "popularity_p_at_1", "disturbed", "reason", "other_machine",
]
TABLE_COLUMNS = [
    "dataset", "method", "runs", "completed", "failed", "median_batch_seconds", "samples_per_second",
    "peak_rss_mb", "p_at_1", "p_at_3", "p_at_5", "target_p_at_1", "time_to_target_seconds",
    "reached_target", "best_p_at_1", "best_epoch", "active_per_sample_mean", "active_fraction", "train_seconds",
    "learned", "disturbed",
]
JOBS_COLUMNS = [
    "job", "kind", "dataset", "method", "variant", "seed", "seconds", "max_rss_mb", "mean_load",
    "cpu_time", "path",
]


def parse_run_path(path) -> dict:
    """``results/<dataset>/<method>/[<variant>/]seed<n>/<file>`` -> its parts."""
    parts = Path(path).parts
    if "results" in parts:
        parts = parts[parts.index("results") + 1:]
    parts = parts[:-1]  # drop the file name
    if len(parts) not in (3, 4) or not parts[-1].startswith("seed"):
        raise ValueError(f"{path}: not results/<dataset>/<method>/[<variant>/]seed<n>/...")
    variant = parts[2] if len(parts) == 4 else ""
    return dict(dataset=parts[0], method=parts[1], variant=variant, seed=int(parts[-1][4:]))


def time_to_reach(curve: pd.DataFrame, target: float) -> float:
    """Training seconds of the first evaluation with P@1 >= target (NaN if none)."""
    if curve is None or curve.empty or target is None or not np.isfinite(target):
        return math.nan
    hit = curve.loc[curve["p_at_1"] >= target - 1e-12, "train_seconds"]
    return float(hit.iloc[0]) if len(hit) else math.nan


def _note(notes, msg: str) -> None:
    """Say ``msg`` on stderr (the aggregate's log) and keep it for the console."""
    print(f"aggregate: {msg}", file=sys.stderr, flush=True)
    if notes is not None:
        notes.append(msg)


def monotonic_curve(curve: pd.DataFrame, path="curve.csv", notes=None) -> pd.DataFrame:
    """``curve`` with strictly increasing steps; repeated or backward steps are dropped, loudly.

    A run killed after its last checkpoint and resumed used to keep the rows written after the
    checkpoint, then write them again (steps ``... 153 160 180 200 220 160 180 ...``). The rows
    written later are the ones of the run that finished, so when a step is not above the one
    before it, the earlier rows at that step or beyond are dropped (and rows without a step).
    Each such curve is named on stderr and in ``notes``.
    """
    if curve is None or curve.empty:
        return curve
    steps = curve["step"].to_numpy(dtype=float)
    if not np.isnan(steps).any() and (len(steps) < 2 or (np.diff(steps) > 0).all()):
        return curve
    keep: list[int] = []
    backward = 0
    for i, step in enumerate(steps):
        if np.isnan(step):
            continue
        if keep and steps[keep[-1]] >= step:
            backward += 1
        while keep and steps[keep[-1]] >= step:
            keep.pop()
        keep.append(i)
    dropped = len(curve) - len(keep)
    nan = int(np.isnan(steps).sum())
    _note(notes, f"{path}: steps are not increasing ({backward} step(s) go back, e.g. a resume that "
                 f"repeated rows after its checkpoint{f'; {nan} row(s) without a step' if nan else ''}); "
                 f"kept the later rows of each repeated step, dropped {dropped} of {len(curve)} row(s)")
    return curve.iloc[keep].reset_index(drop=True)


def _read_curve_or_none(path: Path, notes=None):
    try:
        curve = read_curve(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    return monotonic_curve(curve, path, notes)


def _num(value) -> float:
    return math.nan if value is None else float(value)


def contention(rec: dict) -> dict:
    """The ``CONTENTION_COLUMNS`` of a run.json record or bench result; absent figures are NaN.

    ``disturbed`` comes from :func:`slide.contention.disturbed_reason`, so records written before
    the figures existed are judged by the same rule (and found quiet).
    """
    load = (lambda key: float(rec[key][0]) if rec.get(key) else math.nan)
    return dict(compile_seconds=_num(rec.get("compile_seconds")), cpu_seconds=_num(rec.get("cpu_seconds")),
                cpu_utilisation=_num(rec.get("cpu_utilisation")),
                other_cpu_share=_num(rec.get("other_cpu_share")),
                load_1m_start=load("load_average_start"), load_1m_end=load("load_average_end"),
                disturbed=disturbed_reason(rec) or "")


def best_point(rec: dict, curve) -> tuple[float, float, float]:
    """(best P@1, its epoch, its step): run.json's ``best``, else the curve's first maximum."""
    best = rec.get("best") or {}
    if best.get("p_at_1") is not None:
        return float(best["p_at_1"]), _num(best.get("epoch")), _num(best.get("step"))
    if curve is None or curve.empty:
        return math.nan, math.nan, math.nan
    row = curve.loc[curve["p_at_1"].idxmax()]
    return float(row["p_at_1"]), float(row["epoch"]), float(row["step"])


def learned(best_p_at_1: float, popularity_p_at_1: float) -> bool:
    """False when the best P@1 is not above label popularity by more than ``POPULARITY_MARGIN``."""
    return not (best_p_at_1 <= popularity_p_at_1 + POPULARITY_MARGIN)


def load_runs(run_paths, datasets: dict | None = None, notes=None):
    """(summary rows without targets, {run key: curve}) for every run.json.

    Curves whose steps are not increasing are de-duplicated (:func:`monotonic_curve`); what was
    dropped is said on stderr and appended to ``notes``.
    """
    datasets = datasets or {}
    rows, curves = [], {}
    for p in sorted(map(str, run_paths)):
        rec = load_run(p)
        key = parse_run_path(p)
        run_dir = Path(p).parent
        curve = _read_curve_or_none(run_dir / "curve.csv", notes)
        rows.append(_summary_row(rec, key, curve, datasets.get(key["dataset"], {}), run_dir))
        if curve is not None:
            curves[(key["dataset"], rec["method"], key["variant"], int(rec["seed"]))] = curve
    return rows, curves


def _summary_row(rec: dict, key: dict, curve, info: dict, run_dir: Path) -> dict:
    """One ``SUMMARY_COLUMNS`` row (targets still NaN) from a run.json record and its curve."""
    final = rec.get("final") or {}
    hp = rec.get("hyperparameters") or {}
    num_labels = info.get("labels")
    active = rec.get("active_per_sample_mean")
    fraction = rec.get("active_fraction")
    if fraction is None:
        fraction = (active / num_labels) if active is not None and num_labels else math.nan
    train_s = float(rec.get("train_seconds") or 0.0)
    samples = int(rec.get("samples") or 0)
    machine = rec.get("machine") or {}
    best, best_epoch, best_step = best_point(rec, curve)
    popularity = _num((rec.get("popularity") or {}).get("p_at_1"))
    return dict(
        dataset=key["dataset"], dataset_name=info.get("name", key["dataset"]),
        source=info.get("source", ""), method=rec["method"], variant=key["variant"],
        seed=int(rec["seed"]), status=rec["status"], reason=rec.get("reason") or "",
        p_at_1=final.get("p_at_1", math.nan), p_at_3=final.get("p_at_3", math.nan),
        p_at_5=final.get("p_at_5", math.nan), best_p_at_1=best,
        final_eval_points=final.get("eval_points", math.nan),
        train_seconds=train_s, wall_seconds=rec.get("wall_seconds", math.nan),
        eval_seconds=rec.get("eval_seconds", math.nan), steps=rec.get("steps"),
        epochs=rec.get("epochs"), samples=samples, batch_size=hp.get("batch_size", math.nan),
        threads=rec.get("threads"), median_batch_seconds=rec.get("median_batch_seconds"),
        samples_per_second=samples / train_s if train_s > 0 else math.nan,
        peak_rss_mb=rec.get("peak_rss_mb"), active_per_sample_mean=active, num_labels=num_labels,
        active_fraction=fraction, target_p_at_1=math.nan, time_to_target_seconds=math.nan,
        popularity_p_at_1=popularity, learned=learned(best, popularity), best_epoch=best_epoch,
        best_step=best_step, max_train_seconds_cut=bool(rec.get("max_train_seconds_cut")),
        stopped_early=bool(rec.get("stopped_early")), **contention(rec),
        cpu=machine.get("cpu", ""), cores=machine.get("cores"), memory_gb=machine.get("memory_gb"),
        gpu=str((rec.get("method_stats") or {}).get("device", "")) if rec["method"].endswith("-gpu") else "",
        run_dir=str(run_dir),
    )


def dataset_targets(summary: pd.DataFrame, datasets: dict) -> dict:
    """Per dataset id: the configured target, else the lowest best P@1 of the completed headline runs
    that learned (a run at label popularity would make any target trivial)."""
    out = {}
    head = summary[(summary["variant"] == "") & (summary["status"] == "completed") & summary["learned"]]
    for did in sorted(set(summary["dataset"])):
        configured = (datasets.get(did) or {}).get("target_p_at_1")
        if configured is not None:
            out[did] = float(configured)
            continue
        best = head[head["dataset"] == did].groupby("method")["best_p_at_1"].mean()
        best = best[np.isfinite(best)]
        out[did] = float(best.min()) if len(best) else math.nan
    return out


def curves_frame(rows, curves) -> pd.DataFrame:
    by_key = {(r["dataset"], r["method"], r["variant"], r["seed"]): r for r in rows}
    frames = []
    for key, curve in sorted(curves.items()):
        df = curve.copy()
        df.insert(0, "disturbed", by_key[key]["disturbed"] if key in by_key else "")
        df.insert(0, "status", by_key[key]["status"] if key in by_key else "")
        for i, (col, val) in enumerate(zip(("dataset", "method", "variant", "seed"), key)):
            df.insert(i, col, val)
        full = df.groupby(["dataset", "method", "variant", "seed"])["eval_points"].transform("max")
        df["full_eval"] = df["eval_points"] == full
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=CURVES_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CURVES_COLUMNS]


def speedups(summary: pd.DataFrame, curves: dict) -> pd.DataFrame:
    """SLIDE against every other headline method at equal P@1 (see the module docstring)."""
    head = summary[(summary["variant"] == "") & (summary["status"] == "completed")]
    out = []
    for did in sorted(set(head["dataset"])):
        ds = head[head["dataset"] == did]
        slide = ds[ds["method"] == "slide"].set_index("seed")
        for base in sorted(set(ds["method"]) - {"slide"}):
            other = ds[ds["method"] == base].set_index("seed")
            seeds = sorted(set(slide.index) & set(other.index))
            pairs = [_pair(base, s, slide.loc[s], other.loc[s], curves.get((did, "slide", "", s)),
                           curves.get((did, base, "", s))) for s in seeds]
            pairs = [p for p in pairs if p is not None]
            if pairs:
                out.append(_speedup_row(did, base, seeds, pairs, slide, other))
    return pd.DataFrame(out, columns=SPEEDUP_COLUMNS)


def _pair(base, seed, slide_row, other_row, cs, co):
    """One seed's (target, t_slide, t_base, speedup, floor), its disturbed runs and why no speedup.

    None when a curve is missing.
    """
    if cs is None or co is None or cs.empty or co.empty:
        return None
    target = float(min(cs["p_at_1"].max(), co["p_at_1"].max()))
    floor = float(np.nanmax([slide_row["popularity_p_at_1"], other_row["popularity_p_at_1"], 0.0]))
    runs = (("slide", slide_row), (base, other_row))
    disturbed = "; ".join(f"{method_label(m)} seed{seed}: {r['disturbed']}" for m, r in runs if r["disturbed"])
    stayed = [method_label(m) for m, r in runs if not r["learned"]]
    if disturbed:
        reason = f"{DISTURBED_NOTE} ({disturbed})"
    elif stayed:
        reason = f"{' and '.join(stayed)} did not learn (stayed at label popularity, P@1 {floor:.3f})"
    else:
        ts, to = time_to_reach(cs, target), time_to_reach(co, target)
        return (target, ts, to, to / ts if ts > 0 else math.nan, floor), "", ""
    return (target, math.nan, math.nan, math.nan, floor), disturbed, reason


def _speedup_row(did, base, seeds, pairs, slide, other) -> dict:
    """One row of the speedup table from the seeds' :func:`_pair` results."""
    arr = np.array([p[0] for p in pairs], dtype=float)
    with warnings.catch_warnings():  # a column of NaN (no comparable seed) averages to NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = [float(np.nanmean(arr[:, j])) for j in range(arr.shape[1])]
    reasons = list(dict.fromkeys(p[2] for p in pairs if p[2]))
    return dict(dataset=did, baseline=base, seeds=len(arr), target_p_at_1=mean[0], slide_seconds=mean[1],
                baseline_seconds=mean[2], speedup=mean[3],
                slide_best_p_at_1=float(slide.loc[seeds, "best_p_at_1"].mean()),
                baseline_best_p_at_1=float(other.loc[seeds, "best_p_at_1"].mean()),
                slide_final_p_at_1=float(slide.loc[seeds, "p_at_1"].mean()),
                baseline_final_p_at_1=float(other.loc[seeds, "p_at_1"].mean()),
                popularity_p_at_1=mean[4], disturbed="; ".join(p[1] for p in pairs if p[1]),
                reason="; ".join(reasons), other_machine=other_machine(slide.loc[seeds], other.loc[seeds]))


def machine_label(row) -> str:
    """A run's machine in words: its GPU (if it ran on one) and its CPU with the core count."""
    text = {k: row[k] if isinstance(row[k], str) else "" for k in ("cpu", "gpu")}  # read back from CSV: NaN
    cores = f"{int(row['cores'])} cores" if pd.notna(row["cores"]) else "cores unknown"
    cpu = f"{text['cpu'] or 'unknown CPU'}, {cores}"
    return f"{text['gpu']} (CPU {cpu})" if text["gpu"] else cpu


def other_machine(slide: pd.DataFrame, other: pd.DataFrame) -> str:
    """"" when the baseline's runs were made on SLIDE's machine (same CPU and cores), else the
    baseline's machine(s): a speedup across machines compares the machines as well as the methods."""
    here = {(r.cpu, r.cores) for r in slide.itertuples()}
    elsewhere = [machine_label(r) for _, r in other.iterrows() if (r["cpu"], r["cores"]) not in here]
    return "; ".join(dict.fromkeys(elsewhere))


def _reasons(values) -> str:
    return "; ".join(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def table(summary: pd.DataFrame) -> pd.DataFrame:
    """Experiment 6: per dataset and method (headline runs, seeds averaged over completed runs)."""
    head = summary[summary["variant"] == ""]
    out = []
    for (did, method), g in head.groupby(["dataset", "method"], sort=True):
        ok = g[g["status"] == "completed"]
        reached = ok["time_to_target_seconds"].notna().sum()
        mean = (lambda c: float(ok[c].astype(float).mean()) if len(ok) else math.nan)
        out.append(dict(
            dataset=did, method=method, runs=len(g), completed=len(ok), failed=int((g["status"] == "failed").sum()),
            median_batch_seconds=mean("median_batch_seconds"), samples_per_second=mean("samples_per_second"),
            peak_rss_mb=mean("peak_rss_mb"), p_at_1=mean("p_at_1"), p_at_3=mean("p_at_3"), p_at_5=mean("p_at_5"),
            target_p_at_1=float(g["target_p_at_1"].iloc[0]),
            time_to_target_seconds=(float(ok["time_to_target_seconds"].mean()) if reached else math.nan),
            reached_target=f"{reached}/{len(ok)}", best_p_at_1=mean("best_p_at_1"), best_epoch=mean("best_epoch"),
            active_per_sample_mean=mean("active_per_sample_mean"), active_fraction=mean("active_fraction"),
            train_seconds=mean("train_seconds"), learned=bool(ok["learned"].all()),
            disturbed=_reasons(g["disturbed"]),
        ))
    df = pd.DataFrame(out, columns=TABLE_COLUMNS)
    if len(df):
        order = {m: i for i, m in enumerate(method_order(df["method"]))}
        df = df.sort_values(["dataset", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    return df.reset_index(drop=True)


def _read_bench(paths):
    """(path, record, its dataset/method/threads/seed) of every bench.json, in path order."""
    for p in sorted(map(str, paths)):
        key = parse_run_path(p)
        rec = json.loads(Path(p).read_text())
        threads = int(key["variant"][len("threads"):]) if key["variant"].startswith("threads") else rec.get("threads")
        yield p, rec, dict(dataset=key["dataset"], method=rec.get("method", key["method"]), threads=threads,
                           seed=key["seed"])


def load_bench(paths) -> pd.DataFrame:
    rows = []
    for p, rec, key in _read_bench(paths):
        rows.append(dict(
            **key, batch_size=rec.get("batch_size"), batches=rec.get("batches"),
            median_batch_seconds=rec.get("median_batch_seconds"), p10_batch_seconds=rec.get("p10_batch_seconds"),
            p90_batch_seconds=rec.get("p90_batch_seconds"), samples_per_second=rec.get("samples_per_second"),
            active_per_sample_mean=rec.get("active_per_sample_mean"), peak_rss_mb=rec.get("peak_rss_mb"),
            scale=rec.get("scale"), **contention(rec), path=p,
        ))
    return pd.DataFrame(rows, columns=THREADS_COLUMNS)


def load_phases(paths) -> pd.DataFrame:
    """:data:`PHASES_COLUMNS` of every bench.json with a ``phase_floor``, its phases in the order timed."""
    rows = []
    for p, rec, key in _read_bench(paths):
        busy = contention(rec)
        scattered = (rec.get("rows_floor") or {}).get("seconds")
        for phase, f in (rec.get("phase_floor") or {}).items():
            rows.append(dict(**key, phase=phase, seconds=f["seconds"], floor_bytes=f["floor_bytes"],
                             floor_seconds=f["floor_seconds"], x_of_floor=_num(f["x_of_floor"]),
                             rows_floor_seconds=_num(scattered if phase == "row_grads" else None),
                             stream_gbps=rec.get("stream_gbps"), stream_measured=rec.get("stream_measured"),
                             load_1m_start=busy["load_1m_start"],
                             disturbed=busy["disturbed"], path=p))
    return pd.DataFrame(rows, columns=PHASES_COLUMNS)


def load_job_benchmarks(paths) -> pd.DataFrame:
    """Snakemake ``benchmark:`` records (one TSV per timed job): wall-clock seconds and max RSS."""
    rows = []
    for p in sorted(map(str, paths)):
        path = Path(p)
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        if df.empty:
            continue
        rec = df.iloc[-1]
        parts = path.with_suffix("").parts
        parts = parts[parts.index("benchmarks") + 1:] if "benchmarks" in parts else parts
        dataset, method = (parts + ("", ""))[:2]
        middle = parts[2:-1]
        variant = middle[0] if middle else ""
        kind = "bench" if variant.startswith("threads") else "train"
        num = (lambda c: float(rec[c]) if c in rec and pd.notna(rec[c]) and rec[c] != "-" else math.nan)
        rows.append(dict(
            job="/".join(parts), kind=kind, dataset=dataset, method=method, variant=variant,
            seed=int(parts[-1][4:]) if parts[-1].startswith("seed") else -1,
            seconds=num("s"), max_rss_mb=num("max_rss"), mean_load=num("mean_load"), cpu_time=num("cpu_time"),
            path=str(path),
        ))
    return pd.DataFrame(rows, columns=JOBS_COLUMNS)


def aggregate(run_paths, bench_paths, benchmark_paths, plan: dict, out: dict, notes=None) -> dict:
    """Write every table; ``out`` maps names of :data:`TABLE_NAMES` to paths (the others are not written).

    ``out["manifest"]``, when given, receives :func:`input_manifest` of the files read, so that
    :func:`manifest_is_stale` can tell later whether the tables still follow the run files.
    """
    datasets = plan.get("datasets", {})
    rows, curves = load_runs(run_paths, datasets, notes)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    targets = dataset_targets(summary, datasets) if len(summary) else {}
    if len(summary):
        summary["target_p_at_1"] = summary["dataset"].map(targets).astype(float)
        summary["time_to_target_seconds"] = [
            time_to_reach(curves.get((r.dataset, r.method, r.variant, r.seed)), r.target_p_at_1)
            for r in summary.itertuples()
        ]
    tables = dict(
        summary=summary, curves=curves_frame(rows, curves), threads=load_bench(bench_paths),
        phases=load_phases(bench_paths),
        speedups=speedups(summary, curves) if len(summary) else pd.DataFrame(columns=SPEEDUP_COLUMNS),
        table=table(summary) if len(summary) else pd.DataFrame(columns=TABLE_COLUMNS),
        jobs=load_job_benchmarks(benchmark_paths),
    )
    for name, df in tables.items():
        if name in out:
            write_csv(df, out[name])
    if "manifest" in out:
        write_manifest(out["manifest"], [*run_paths, *bench_paths, *benchmark_paths])
    return tables


# ----------------------------------------------------------------------------- manifest
# Snakemake does not rerun the aggregate when one of its inputs disappears while its outputs are
# present and newer (a run.json deleted by hand, or removed by a --forcerun that was killed): it
# says "Nothing to be done" and the tables keep the old run. The aggregate therefore records the
# state of every file it read; when the workflow is parsed and a recorded file is gone or changed,
# the record (an output of the aggregate) is removed, so Snakemake rebuilds the tables, and first
# the missing run.


def _file_state(path) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"mtime_ns": st.st_mtime_ns, "size": st.st_size}


def input_manifest(paths) -> dict:
    """{path: {mtime_ns, size} or None} of every input and of each run's curve.csv."""
    files = {}
    for p in map(str, paths):
        files[p] = _file_state(p)
        if Path(p).name == "run.json":
            curve = str(Path(p).with_name("curve.csv"))
            files[curve] = _file_state(curve)
    return files


def write_manifest(path, paths) -> None:
    """Write :func:`input_manifest` of ``paths`` to ``path`` as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"files": input_manifest(paths)}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def manifest_is_stale(path) -> str | None:
    """Why the tables recorded in manifest ``path`` no longer follow the files (None: they do)."""
    try:
        recorded = json.loads(Path(path).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no manifest (Snakemake sees a missing output) or unreadable: nothing to compare
    gone = [p for p, st in recorded.items() if st is not None and _file_state(p) is None]
    changed = [p for p, st in recorded.items() if st is not None and _file_state(p) not in (None, st)]
    appeared = [p for p, st in recorded.items() if st is None and _file_state(p) is not None]
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
             (("gone", gone), ("changed", changed), ("new", appeared)) if v]
    return "; ".join(parts) or None


def drop_stale_manifest(path) -> str | None:
    """Remove manifest ``path`` when :func:`manifest_is_stale`; return the reason (None: kept)."""
    why = manifest_is_stale(path)
    if why:
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass
    return why


def end_of_run_message(skipped, fetch_failed: dict, report: str, report_state: str) -> str:
    """What the console says when the pipeline ends: what was left out, why, and where the report is.

    Parameters
    ----------
    skipped : list of dict
        The runs left out of the DAG (``dataset``, ``method``, ``reason``; the plan's ``skipped``).
    fetch_failed : dict
        Dataset name -> the last line of its fetch job's error, for fetches that failed in this run.
    report : str
        The preset's report path.
    report_state : {"written", "stale", "missing"}
        Whether this run wrote the report, an earlier one did, or none has.
    """
    lines = []
    for name, why in sorted(fetch_failed.items()):
        lines.append(f"  - {name}: fetching the data failed ({why}); the jobs that need it did not run")
    by_reason = {}
    for s in skipped:
        by_reason.setdefault(s["reason"], []).append(s["dataset"])
    for reason, datasets in by_reason.items():
        lines.append(f"  - {len(datasets)} run(s) on {', '.join(dict.fromkeys(datasets))}: {reason}")
    head = ["[slide pipeline] Left out of this run:", *lines] if lines else ["[slide pipeline] Nothing was left out."]
    where = {"written": f"Report: {report}",
             "stale": f"Report: {report} was NOT rebuilt by this run (it is an earlier run's)",
             "missing": f"No report was written ({report} does not exist)"}[report_state]
    return "\n".join(head + [f"[slide pipeline] {where}"])


def end_of_run(skipped, fetch_names, report: str, since: float, data_root="data") -> str:
    """:func:`end_of_run_message` for a pipeline that started at ``since`` (``time.time()``).

    A fetch failed in this run when its ``<data_root>/raw/<name>/FETCH_FAILED`` marker (written by
    the ``fetch`` rule) is newer than ``since``; the report was written by it when it is too.
    """
    fetch_failed = {}
    for name in fetch_names:
        marker = Path(data_root, "raw", name, "FETCH_FAILED")
        if marker.is_file() and marker.stat().st_mtime >= since:
            fetch_failed[name] = (marker.read_text().strip().splitlines() or ["no message"])[-1]
    html = Path(report)
    state = "missing" if not html.is_file() else ("written" if html.stat().st_mtime >= since else "stale")
    return end_of_run_message(skipped, fetch_failed, report, state)
