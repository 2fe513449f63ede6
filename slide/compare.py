"""Benchmark several methods at one paper shape in one run and report ratios to SLIDE.

Each method's ``bench`` command runs in its own process (so peak memory and thread settings are its
own), one after the other on the same machine, and the figures are compared as ratios measured in the
same run: on shared, noisy machines that is the only fair comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .contention import DISTURBED_NOTE, disturbed_reason
from .errors import SlideError
from .settings import child_env
from .pipeline.methods import GPU_METHODS, METHODS, TORCH_METHODS, method_argv

# each method's ``bench`` command, from the one table of methods (the pipeline builds its commands from it too)
METHOD_COMMANDS = {m: method_argv(m, "bench") for m in METHODS}


def default_methods() -> str:
    """SLIDE and the TF CPU baselines, plus the torch CPU baselines when PyTorch is installed."""
    import importlib.util

    torch = importlib.util.find_spec("torch") is not None
    return ",".join(m for m in METHODS if m not in GPU_METHODS and (torch or m not in TORCH_METHODS))


def bench_method(method: str, like: str, scale: float, batches: int, threads: int, seed: int = 0) -> dict:
    """Run one method's ``bench`` command in a subprocess and return its JSON."""
    cmd = [sys.executable, *METHOD_COMMANDS[method], "--like", like, "--scale", str(scale),
           "--batches", str(batches), "--threads", str(threads), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"method": method, "error": last}
    return json.loads(proc.stdout)


def compare(methods, like: str, scale: float = 1.0, batches: int = 10, threads: int = 0, seed: int = 0) -> dict:
    """Bench ``methods`` one after another; add each one's time-per-batch ratio to SLIDE's."""
    results = [bench_method(m, like, scale, batches, threads, seed) for m in methods]
    slide = next((r for r in results if r["method"] == "slide" and "error" not in r), None)
    for r in results:
        if "error" in r:
            continue
        r["disturbed"] = disturbed_reason(r)
        if slide is not None and not (r["disturbed"] or slide.get("disturbed")):
            r["seconds_per_batch_vs_slide"] = r["median_batch_seconds"] / slide["median_batch_seconds"]
            r["mean_seconds_per_batch_vs_slide"] = r["mean_batch_seconds"] / slide["mean_batch_seconds"]
    return {"like": like, "scale": scale, "batches": batches, "results": results}


def format_table(report: dict) -> str:
    """The comparison as text: one row per method; disturbed rows carry no ratio and say why."""
    rows = [f"{'method':17} {'median s/batch':>14} {'mean s/batch':>12} {'samples/s':>10} {'peak RSS MB':>11} "
            f"{'x SLIDE':>8} {'load':>5} {'others':>6}"]
    notes = []
    for r in report["results"]:
        if "error" in r:
            rows.append(f"{r['method']:17} not run: {r['error']}")
            continue
        ratio = r.get("seconds_per_batch_vs_slide")
        load = (r.get("load_average_end") or [float("nan")])[0]
        share = r.get("other_cpu_share")
        rows.append(f"{r['method']:17} {r['median_batch_seconds']:14.4f} {r['mean_batch_seconds']:12.4f} "
                    f"{r['samples_per_second']:10.1f} {r['peak_rss_mb']:11.0f} "
                    f"{'n/a' if ratio is None else f'{ratio:.2f}':>8} {load:5.2f} "
                    f"{'' if share is None else f'{share:.0%}':>6}")
        if r.get("disturbed"):
            notes.append(f"{r['method']}: {DISTURBED_NOTE} ({r['disturbed']})")
    return "\n".join(rows + notes)


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="bench several methods at one shape in one run; print ratios to SLIDE")
    p.add_argument("--like", required=True, choices=("delicious-200k", "amazon-670k"))
    p.add_argument("--methods", default=default_methods(),
                   help=f"comma-separated, from {', '.join(METHOD_COMMANDS)} (default: %(default)s; the torch "
                        "methods when PyTorch is installed)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHOD_COMMANDS))
    if unknown:
        raise SlideError(f"unknown method(s) {unknown}; choose from {sorted(METHOD_COMMANDS)}")
    report = compare(methods, args.like, args.scale, args.batches, args.threads, args.seed)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if all("error" not in r for r in report["results"]) else 1
