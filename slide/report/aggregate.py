"""Tidy tables from the runs: summary, curves, thread scaling, speedups, the table, job records.

Definitions (also stated in the report):

* **time to reach P@1 = t**: the training time (``train_seconds``: time inside training steps,
  evaluation excluded, as in the paper) of the first evaluation whose P@1 >= t, over every
  evaluation of the run (periodic sample evaluations and full-test evaluations alike, i.e. the
  points plotted in the P@1-against-time figure); NaN when the run never reaches t.
* **speedup of SLIDE over method M at equal P@1**: on one dataset and seed, take the lower of the
  two runs' best P@1 as the target; speedup = M's time to reach it / SLIDE's time to reach it
  (> 1: SLIDE is faster). Seeds are averaged. When the target is not above the P@1 of ranking
  the most frequent training labels first (``popularity`` in run.json) by at least
  ``POPULARITY_MARGIN``, the two runs never
  learned beyond label popularity in common and the speedup is NaN: no comparison.
* **table target**: ``datasets.<name>.target_p_at_1`` when set, else the lowest best P@1 among
  the completed headline runs on the dataset, so that every method reaches it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from slide.runs import CURVE_COLUMNS, load_run, read_curve

from .io import write_csv

SUMMARY_COLUMNS = [
    "dataset", "dataset_name", "source", "method", "variant", "seed", "status", "reason",
    "p_at_1", "p_at_3", "p_at_5", "best_p_at_1", "final_eval_points", "train_seconds", "wall_seconds",
    "eval_seconds", "steps", "epochs", "samples", "batch_size", "threads", "median_batch_seconds",
    "samples_per_second", "peak_rss_mb", "active_per_sample_mean", "num_labels", "active_fraction",
    "target_p_at_1", "time_to_target_seconds", "popularity_p_at_1", "cpu", "cores", "memory_gb", "run_dir",
]
CURVES_COLUMNS = ["dataset", "method", "variant", "seed", "status", *CURVE_COLUMNS, "full_eval"]
THREADS_COLUMNS = [
    "dataset", "method", "threads", "seed", "batch_size", "batches", "median_batch_seconds",
    "p10_batch_seconds", "p90_batch_seconds", "samples_per_second", "active_per_sample_mean",
    "peak_rss_mb", "scale", "path",
]
#: A common P@1 must beat label popularity by this much to count: curves are rounded to 6 digits and
#: periodic evaluations use a sample of test points (about 0.015 standard error at 1,000 points).
POPULARITY_MARGIN = 0.01
SPEEDUP_COLUMNS = [
    "dataset", "baseline", "seeds", "target_p_at_1", "slide_seconds", "baseline_seconds", "speedup",
    "slide_best_p_at_1", "baseline_best_p_at_1", "slide_final_p_at_1", "baseline_final_p_at_1",
    "popularity_p_at_1",
]
TABLE_COLUMNS = [
    "dataset", "method", "runs", "completed", "failed", "median_batch_seconds", "samples_per_second",
    "peak_rss_mb", "p_at_1", "p_at_3", "p_at_5", "target_p_at_1", "time_to_target_seconds",
    "reached_target", "active_per_sample_mean", "active_fraction", "train_seconds",
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


def _read_curve_or_none(path: Path):
    try:
        return read_curve(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None


def load_runs(run_paths, datasets: dict | None = None):
    """(summary rows without targets, {run key: curve}) for every run.json."""
    datasets = datasets or {}
    rows, curves = [], {}
    for p in sorted(map(str, run_paths)):
        rec = load_run(p)
        key = parse_run_path(p)
        run_dir = Path(p).parent
        curve = _read_curve_or_none(run_dir / "curve.csv")
        final = rec.get("final") or {}
        hp = rec.get("hyperparameters") or {}
        info = datasets.get(key["dataset"], {})
        num_labels = info.get("labels")
        active = rec.get("active_per_sample_mean")
        train_s = float(rec.get("train_seconds") or 0.0)
        samples = int(rec.get("samples") or 0)
        machine = rec.get("machine") or {}
        row = dict(
            dataset=key["dataset"], dataset_name=info.get("name", key["dataset"]),
            source=info.get("source", ""), method=rec["method"], variant=key["variant"],
            seed=int(rec["seed"]), status=rec["status"], reason=rec.get("reason") or "",
            p_at_1=final.get("p_at_1", math.nan), p_at_3=final.get("p_at_3", math.nan),
            p_at_5=final.get("p_at_5", math.nan),
            best_p_at_1=float(curve["p_at_1"].max()) if curve is not None and len(curve) else math.nan,
            final_eval_points=final.get("eval_points", math.nan),
            train_seconds=train_s, wall_seconds=rec.get("wall_seconds", math.nan),
            eval_seconds=rec.get("eval_seconds", math.nan), steps=rec.get("steps"),
            epochs=rec.get("epochs"), samples=samples, batch_size=hp.get("batch_size", math.nan),
            threads=rec.get("threads"), median_batch_seconds=rec.get("median_batch_seconds"),
            samples_per_second=samples / train_s if train_s > 0 else math.nan,
            peak_rss_mb=rec.get("peak_rss_mb"), active_per_sample_mean=active,
            num_labels=num_labels,
            active_fraction=(active / num_labels) if active is not None and num_labels else math.nan,
            target_p_at_1=math.nan, time_to_target_seconds=math.nan,
            popularity_p_at_1=(rec.get("popularity") or {}).get("p_at_1", math.nan),
            cpu=machine.get("cpu", ""), cores=machine.get("cores"), memory_gb=machine.get("memory_gb"),
            run_dir=str(run_dir),
        )
        rows.append(row)
        if curve is not None:
            curves[(key["dataset"], rec["method"], key["variant"], int(rec["seed"]))] = curve
    return rows, curves


def dataset_targets(summary: pd.DataFrame, datasets: dict) -> dict:
    """Per dataset id: the configured target, else the lowest best P@1 of the completed headline runs."""
    out = {}
    head = summary[(summary["variant"] == "") & (summary["status"] == "completed")]
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
    status = {(r["dataset"], r["method"], r["variant"], r["seed"]): r["status"] for r in rows}
    frames = []
    for key, curve in sorted(curves.items()):
        df = curve.copy()
        df.insert(0, "status", status.get(key, ""))
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
            per = []
            for s in seeds:
                cs, co = curves.get((did, "slide", "", s)), curves.get((did, base, "", s))
                if cs is None or co is None or cs.empty or co.empty:
                    continue
                target = float(min(cs["p_at_1"].max(), co["p_at_1"].max()))
                floor = float(np.nanmax([slide.loc[s, "popularity_p_at_1"], other.loc[s, "popularity_p_at_1"], 0.0]))
                if not target > floor + POPULARITY_MARGIN:
                    # no common level above ranking the most frequent labels first: not a comparison
                    per.append((target, math.nan, math.nan, math.nan, floor))
                    continue
                ts, to = time_to_reach(cs, target), time_to_reach(co, target)
                per.append((target, ts, to, to / ts if ts > 0 else math.nan, floor))
            if not per:
                continue
            arr = np.array(per, dtype=float)
            with warnings.catch_warnings():  # all-NaN columns (no comparison) average to NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(_speedup_row(did, base, seeds, arr, slide, other))
    return pd.DataFrame(out, columns=SPEEDUP_COLUMNS)


def _speedup_row(did, base, seeds, arr, slide, other) -> dict:
    """One row of the speedup table from the per-seed (target, t_slide, t_base, speedup, floor) rows."""
    mean = [float(np.nanmean(arr[:, j])) for j in range(arr.shape[1])]
    return dict(dataset=did, baseline=base, seeds=len(arr), target_p_at_1=mean[0], slide_seconds=mean[1],
                baseline_seconds=mean[2], speedup=mean[3],
                slide_best_p_at_1=float(slide.loc[seeds, "best_p_at_1"].mean()),
                baseline_best_p_at_1=float(other.loc[seeds, "best_p_at_1"].mean()),
                slide_final_p_at_1=float(slide.loc[seeds, "p_at_1"].mean()),
                baseline_final_p_at_1=float(other.loc[seeds, "p_at_1"].mean()),
                popularity_p_at_1=mean[4])


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
            reached_target=f"{reached}/{len(ok)}", active_per_sample_mean=mean("active_per_sample_mean"),
            active_fraction=mean("active_fraction"), train_seconds=mean("train_seconds"),
        ))
    from .style import method_order

    df = pd.DataFrame(out, columns=TABLE_COLUMNS)
    if len(df):
        order = {m: i for i, m in enumerate(method_order(df["method"]))}
        df = df.sort_values(["dataset", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    return df.reset_index(drop=True)


def load_bench(paths) -> pd.DataFrame:
    rows = []
    for p in sorted(map(str, paths)):
        key = parse_run_path(p)
        rec = json.loads(Path(p).read_text())
        threads = int(key["variant"][len("threads"):]) if key["variant"].startswith("threads") else rec.get("threads")
        rows.append(dict(
            dataset=key["dataset"], method=rec.get("method", key["method"]), threads=threads, seed=key["seed"],
            batch_size=rec.get("batch_size"), batches=rec.get("batches"),
            median_batch_seconds=rec.get("median_batch_seconds"), p10_batch_seconds=rec.get("p10_batch_seconds"),
            p90_batch_seconds=rec.get("p90_batch_seconds"), samples_per_second=rec.get("samples_per_second"),
            active_per_sample_mean=rec.get("active_per_sample_mean"), peak_rss_mb=rec.get("peak_rss_mb"),
            scale=rec.get("scale"), path=p,
        ))
    return pd.DataFrame(rows, columns=THREADS_COLUMNS)


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


def aggregate(run_paths, bench_paths, benchmark_paths, plan: dict, out: dict) -> dict:
    """Write every table; ``out`` maps summary/curves/threads/speedups/table/jobs to paths."""
    datasets = plan.get("datasets", {})
    rows, curves = load_runs(run_paths, datasets)
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
        speedups=speedups(summary, curves) if len(summary) else pd.DataFrame(columns=SPEEDUP_COLUMNS),
        table=table(summary) if len(summary) else pd.DataFrame(columns=TABLE_COLUMNS),
        jobs=load_job_benchmarks(benchmark_paths),
    )
    for name, df in tables.items():
        if name in out:
            write_csv(df, out[name])
    return tables
