"""The self-contained HTML report (figures embedded as base64 PNG, no external resources)."""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import pandas as pd

from .figures import FIGURES
from .io import atomic_write_text
from .style import method_color, method_label, method_order

VERSIONED = ("numpy", "numba", "tensorflow", "pandas", "matplotlib", "snakemake", "jsonschema", "slide-repro")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{background:#fff8e6;border:1px solid #e0b84c;border-radius:6px;padding:.6em 1em}
.verdict p{margin:.4em 0}.muted{color:#666;font-size:.88em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.swatch{display:inline-block;width:.9em;height:.9em;
border-radius:2px;margin-right:.3em;vertical-align:middle}
.failed{color:#b00020;font-weight:bold}code{background:#f4f4f4;padding:0 .2em}
"""


def esc(x) -> str:
    return html.escape(str(x))


def fmt(x, digits=3, unit="") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return esc(x) if x not in (None, "") else "&ndash;"
    if not math.isfinite(v):
        return "&ndash;"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.1f}"
    else:
        s = f"{v:.{digits}g}"
    return s + unit


def seconds(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "&ndash;"
    if not math.isfinite(v):
        return "not reached"
    if v >= 3600:
        return f"{v / 3600:.2f} h"
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.3g} s"


def _method_cell(m) -> str:
    return f'<span class="swatch" style="background:{method_color(m)}"></span>{esc(method_label(m))}'


def _table(headers, rows, numeric=()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"]
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def versions() -> dict:
    """Library versions of the reporting environment (the shared list plus plotting and workflow)."""
    from slide.runs import versions as run_versions

    return run_versions(VERSIONED)


def machine() -> dict:
    from slide.runs import machine_info

    return machine_info()


def _ds(plan, did, key="label"):
    return ((plan or {}).get("datasets", {}).get(did) or {}).get(key, did)


def _paper_speedup(paper, name, baseline):
    for s in (paper or {}).get("speedups", []):
        if s.get("dataset") == name and s.get("baseline") == baseline:
            return s
    return None


def overall_verdict(sp, plan) -> str:
    """One sentence: did SLIDE beat TensorFlow's full softmax here (the paper's main claim)?"""
    rows = sp[(sp["baseline"].isin(["tf-full-cpu", "tf-full-gpu"])) & (sp["speedup"] > 0)] if len(sp) else sp
    if not len(rows):
        return ("<strong>Verdict: undecided.</strong> No SLIDE run and TF full-softmax run completed on a common "
                "dataset with a common P@1 level, so the paper's claim could not be checked here.")
    fast = rows[rows["speedup"] > 1]
    med = float(rows["speedup"].median())
    where = ", ".join(f"{fmt(r.speedup, 3)}x on {esc(r.dataset)} vs {esc(method_label(r.baseline))}"
                      for r in rows.itertuples())
    if len(fast) == len(rows):
        head = ("<strong>Verdict: SLIDE beat TensorFlow's full softmax</strong> in every comparison here, "
                "as the paper claims")
    elif not len(fast):
        head = ("<strong>Verdict: SLIDE did not beat TensorFlow's full softmax</strong> in any comparison here; "
                "the paper's speedup is not reproduced in this setting")
    else:
        head = (f"<strong>Verdict: mixed</strong> &mdash; SLIDE beat TensorFlow's full softmax in {len(fast)} of "
                f"{len(rows)} comparisons")
    return f"{head} (speedup at equal P@1: {where}; median {fmt(med, 3)}x; &gt;1 = SLIDE faster)."


def verdict(tables, plan, paper) -> list[str]:
    """Plain sentences: SLIDE against each TensorFlow baseline, measured and in the paper."""
    sp, summary = tables["speedups"], tables["summary"]
    gpu = (plan or {}).get("gpu") or {}
    out = []
    if not len(summary):
        return ["No training run completed, so nothing was measured; see <em>What could not run</em> below."]
    head = summary[summary["variant"] == ""]
    out.append(overall_verdict(sp, plan))
    for baseline in method_order(set(sp["baseline"]) if len(sp) else []):
        rows = sp[sp["baseline"] == baseline]
        parts = []
        for r in rows.itertuples():
            name = _ds(plan, r.dataset, "name")
            ps = _paper_speedup(paper, name, baseline)
            if not (r.speedup > 0):
                pop = getattr(r, "popularity_p_at_1", math.nan)
                floor = f" {pop:.3f}" if pop == pop else ""
                parts.append(f"on {esc(_ds(plan, r.dataset))} the two never shared a P@1 level above the "
                             f"most-frequent-labels baseline{floor} (best P@1: SLIDE {r.slide_best_p_at_1:.3f}, "
                             f"baseline {r.baseline_best_p_at_1:.3f}), so this dataset gives no speedup")
                continue
            faster = "faster" if r.speedup > 1 else "slower"
            factor = r.speedup if r.speedup >= 1 else (1 / r.speedup if r.speedup > 0 else math.nan)
            paper_txt = f"; paper: {ps['speedup']:g}x faster" if ps else ""
            parts.append(
                f"on {esc(_ds(plan, r.dataset))} SLIDE reached P@1 {r.target_p_at_1:.3f} in "
                f"{seconds(r.slide_seconds)} against {seconds(r.baseline_seconds)}, i.e. "
                f"<strong>{fmt(factor, 3)}x {faster}</strong>{paper_txt}")
        n_fast = int((rows["speedup"] > 1).sum())
        n_cmp = int((rows["speedup"] > 0).sum())
        out.append(f"<strong>SLIDE vs {esc(method_label(baseline))}</strong>: SLIDE was faster at equal P@1 on "
                   f"{n_fast} of {n_cmp} comparable dataset(s): " + "; ".join(parts) + ".")
    measured = set(sp["baseline"]) if len(sp) else set()
    if not any(m.endswith("-gpu") for m in measured):
        reason = gpu.get("reason") or "no GPU run"
        claims = [s for s in (paper or {}).get("speedups", []) if s["baseline"] == "tf-full-gpu"]
        claim_txt = ", ".join(f"{s['speedup']:g}x on {s['dataset']}" for s in claims)
        out.append(f"<strong>SLIDE vs TF on a GPU</strong>: not measured here ({esc(reason)}). "
                   f"The paper reports SLIDE on 44 cores faster than TF-GPU on a V100: {claim_txt}.")
    # accuracy
    acc = []
    for did, g in head[head["status"] == "completed"].groupby("dataset"):
        best = g.groupby("method")["p_at_1"].mean()
        items = ", ".join(f"{esc(method_label(m))} {best[m]:.3f}" for m in method_order(best.index))
        acc.append(f"{esc(_ds(plan, did))}: {items}")
    if acc:
        out.append("<strong>Final P@1</strong> (full test set, mean over seeds) &mdash; " + "; ".join(acc) + ".")
    failed = summary[summary["status"] == "failed"]
    if len(failed):
        out.append(f'<span class="failed">{len(failed)} run(s) failed</span> (diverged or stopped); '
                   "they are listed below and drawn with a cross in the figures.")
    srcs = {(plan or {}).get("datasets", {}).get(d, {}).get("source") for d in set(summary["dataset"])}
    cores = (plan or {}).get("cores")
    caveat = []
    if "synth" in srcs:
        caveat.append("synthetic stand-ins of the paper's datasets, much smaller than the real ones")
    if cores and cores < 44:
        caveat.append(f"{cores} core(s) instead of the paper's 44")
    if caveat:
        out.append("<em>Caveat:</em> measured with " + " and ".join(caveat)
                   + "; absolute times and the size of the speedup do not transfer to the paper's setting, "
                     "the direction of the comparison is what this run can check.")
    return out


def claims_table(tables, plan, paper) -> str:
    sp, summary = tables["speedups"], tables["summary"]
    rows = []
    name_to_ids = {}
    for did, d in ((plan or {}).get("datasets") or {}).items():
        name_to_ids.setdefault(d.get("name"), []).append(did)
    for s in (paper or {}).get("speedups", []):
        measured = []
        for did in name_to_ids.get(s["dataset"], []):
            m = sp[(sp["dataset"] == did) & (sp["baseline"] == s["baseline"])] if len(sp) else sp
            if len(m) and not m.iloc[0].speedup > 0:
                measured.append(f"no comparison on {esc(did)}: no common P@1 above the most-frequent-labels "
                                "baseline")
            elif len(m):
                r = m.iloc[0]
                measured.append(f"{fmt(r.speedup, 3)}x on {esc(did)} (target P@1 {r.target_p_at_1:.3f}: "
                                f"{seconds(r.slide_seconds)} vs {seconds(r.baseline_seconds)})")
        if not measured:
            why = "not run here"
            if s["baseline"].endswith("-gpu"):
                why = f"not measured: {esc(((plan or {}).get('gpu') or {}).get('reason', 'no GPU'))}"
            elif not name_to_ids.get(s["dataset"]):
                why = "dataset not in this run"
            measured = [why]
        hours = ""
        if s.get("slide_hours"):
            hours = f" ({s['slide_hours']:g} h vs {s['baseline_hours']:g} h)"
        rows.append([f"Speedup of SLIDE over {esc(method_label(s['baseline']))}, {esc(s['dataset'])}",
                     f"{s['speedup']:g}x{hours}", "<br>".join(measured), esc(s["source"])])
    for c in (paper or {}).get("claims", []):
        val = f"{c.get('speedup', c.get('factor', '')):g}x" if c.get("speedup") or c.get("factor") else ""
        measured = "not measured by this pipeline"
        if c["id"] == "abstract-tf-cpu":
            m = sp[sp["baseline"] == "tf-full-cpu"] if len(sp) else sp
            m = m[m["speedup"] > 0] if len(m) else m
            if len(m):
                measured = ", ".join(f"{fmt(r.speedup, 3)}x ({esc(r.dataset)})" for r in m.itertuples())
        rows.append([esc(c["text"]), val, measured, esc(c["source"])])
    head = summary[(summary["method"] == "slide") & (summary["variant"] == "")] if len(summary) else summary
    for name, a in ((paper or {}).get("active_neurons") or {}).items():
        measured = []
        for did in name_to_ids.get(name, []):
            g = head[head["dataset"] == did] if len(head) else head
            if len(g) and g["active_per_sample_mean"].notna().any():
                act = g["active_per_sample_mean"].astype(float).mean()
                frac = g["active_fraction"].astype(float).mean()
                measured.append(f"{act:,.0f} per sample = {100 * frac:.2f}% of {g['num_labels'].iloc[0]:,.0f} "
                                f"labels ({esc(did)})")
        rows.append([f"Active output neurons per sample, {esc(name)}",
                     f"~{a['per_sample']:,} ({100 * a['per_sample'] / a['labels']:.2f}% of {a['labels']:,})",
                     "<br>".join(measured) or "no SLIDE run on this dataset", esc(a["source"])])
    rows.append(["Final P@1 of each method", "not recorded (not verified against the paper's text)",
                 "see the table below", "&ndash;"])
    return _table(["Claim", "Paper", "Measured here", "Paper source"], rows)


def results_table(tables, plan) -> str:
    t = tables["table"]
    if not len(t):
        return "<p>No headline run completed.</p>"
    rows = []
    for r in t.itertuples():
        rows.append([esc(_ds(plan, r.dataset)), _method_cell(r.method), f"{r.completed}/{r.runs}",
                     fmt(r.median_batch_seconds, 3, " s"), fmt(r.samples_per_second, 3),
                     fmt(r.peak_rss_mb, 3, " MB"), fmt(r.p_at_1), fmt(r.p_at_3), fmt(r.p_at_5),
                     fmt(r.target_p_at_1), seconds(r.time_to_target_seconds) + f" ({esc(r.reached_target)})",
                     fmt(r.active_per_sample_mean, 4)])
    return _table(["Dataset", "Method", "Completed", "Median s/batch", "Samples/s", "Peak memory",
                   "P@1", "P@3", "P@5", "Target P@1", "Time to target (runs reaching it)",
                   "Active neurons/sample"], rows, numeric=set(range(3, 12)))


def runs_table(tables, plan) -> str:
    s = tables["summary"]
    if not len(s):
        return "<p>No run.</p>"
    rows = []
    for r in s.itertuples():
        status = esc(r.status) if r.status == "completed" else f'<span class="failed">{esc(r.status)}</span>'
        rows.append([esc(r.dataset), _method_cell(r.method), esc(r.variant or "headline"), esc(r.seed), status,
                     fmt(r.p_at_1), fmt(r.best_p_at_1), seconds(r.train_seconds), esc(r.steps),
                     fmt(r.median_batch_seconds, 3, " s"), fmt(r.peak_rss_mb, 3, " MB"), esc(r.threads),
                     f"<code>{esc(r.run_dir)}/run.json</code>"])
    return _table(["Dataset", "Method", "Variant", "Seed", "Status", "Final P@1", "Best P@1", "Train time",
                   "Steps", "Median s/batch", "Peak memory", "Threads", "Record"], rows,
                  numeric={5, 6, 7, 8, 9, 10, 11})


def notes(tables, plan, paper, experiments) -> list[str]:
    out = []
    gpu = (plan or {}).get("gpu") or {}
    if not gpu.get("available"):
        reason = str(gpu.get("reason", "not available"))
        reason = reason[len("no GPU: "):] if reason.startswith("no GPU: ") else reason
        out.append(f"<strong>No GPU</strong> ({esc(reason)}): TF-GPU runs were left out; the paper's GPU "
                   "numbers are shown for reference only.")
    skipped = (plan or {}).get("skipped") or []
    if skipped:
        by_reason = {}
        for s in skipped:
            run = f"{s['dataset']}/{s['method']}" + (f"/{s['variant']}" if s.get("variant") else "") + f"/seed{s['seed']}"
            by_reason.setdefault(s["reason"], []).append(run)
        items = "".join(f"<li>{esc(reason)}: <code>{esc(', '.join(runs[:12]))}</code>"
                        + (f" and {len(runs) - 12} more" if len(runs) > 12 else "") + "</li>"
                        for reason, runs in by_reason.items())
        out.append(f"<strong>{len(skipped)} run(s) left out of the pipeline</strong> "
                   f"(<code>results/skipped.json</code>):<ul>{items}</ul>")
    srcs = {d.get("source") for d in ((plan or {}).get("datasets") or {}).values()}
    if srcs == {"synth"}:
        out.append("<strong>Real data not used</strong>: this preset trains on synthetic stand-ins (same "
                   "per-point statistics, scaled-down sizes) so it runs offline; the <code>paper</code> preset "
                   "uses the real Delicious-200K and Amazon-670K (<code>slide data fetch</code>, or files placed "
                   "by hand under <code>data/raw/</code>).")
    failed = tables["summary"][tables["summary"]["status"] == "failed"] if len(tables["summary"]) else []
    if len(failed):
        items = "".join(f"<li><code>{esc(r.run_dir)}</code>: {esc(r.reason)}</li>" for r in failed.itertuples())
        out.append(f'<span class="failed">Failed runs</span> (recorded with <code>status: failed</code>, '
                   f"kept in every table and figure):<ul>{items}</ul>")
    cores = int((plan or {}).get("cores") or 1)
    paper_counts = ((paper or {}).get("thread_scaling") or {}).get("core_counts", [])
    uncovered = [c for c in paper_counts if c > cores]
    if experiments.get("thread_scaling") and uncovered:
        out.append(f"<strong>Core counts not covered</strong>: this machine gave the pipeline {cores} core(s); "
                   f"the paper's thread-scaling figure goes to {max(paper_counts)} cores "
                   f"({', '.join(map(str, uncovered))} could not be run here).")
    off = [FIGURES.get(_EXP_FIG.get(k, ""), k) for k, on in experiments.items() if not on]
    if off:
        out.append("Switched off in this preset: " + "; ".join(esc(o) for o in off) + ".")
    return out


_EXP_FIG = {"time_curves": "p1_vs_time", "iteration_curves": "p1_vs_iterations",
            "sampled_softmax": "sampled_softmax", "batch_size": "batch_size",
            "thread_scaling": "thread_scaling", "table": "table"}

CAPTIONS = {
    "p1_vs_time": "P@1 on the test set against training time (time inside training steps; evaluation "
                  "excluded, as in the paper). Sample evaluations use a fixed random subset of the test "
                  "points; evaluations at epoch ends and the last one use the full test set. The box under "
                  "each panel quotes the paper.",
    "p1_vs_iterations": "The same runs against iterations (training batches): how much each method learns "
                        "per step, independent of its speed.",
    "sampled_softmax": "TF sampled softmax with several fractions of the labels sampled per batch, beside the "
                       "SLIDE headline run.",
    "batch_size": "Each method at several batch sizes (line style); colour = method.",
    "thread_scaling": "Median time per training batch against threads on data of the dataset's shape (band: "
                      "10th-90th percentile). Dotted lines: the paper's core counts this machine could not "
                      "cover.",
    "headline": "Left: speedup of SLIDE at equal P@1 (time for each method to reach the lower of the two "
                "methods' best P@1), measured (solid) and in the paper (hatched). Right: output neurons SLIDE "
                "computes per training sample, as a share of all labels.",
    "jobs": "Wall-clock time and peak memory of every timed Snakemake job (its <code>benchmark:</code> record, "
            "start-up, data loading and evaluation included).",
}


def _img(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(Path(path).stem)}" src="data:image/png;base64,{data}">'


def build_report(tables, plan, paper, figures: dict, out, title: str, experiments: dict | None = None,
                 machine_info: dict | None = None, version_info: dict | None = None) -> str:
    """Write ``out`` (HTML) and return its text. ``figures`` maps figure names to PNG paths."""
    experiments = experiments or {}
    machine_info = machine_info or machine()
    version_info = version_info or versions()
    summary = tables["summary"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    parts.append(f"<h1>{esc(title)}</h1>")
    parts.append(f"<p class='muted'>Generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))} by the Snakemake "
                 f"pipeline, preset <code>{esc((plan or {}).get('preset', '?'))}</code>. Paper: "
                 f"{esc((paper or {}).get('paper', {}).get('title', ''))} ({esc((paper or {}).get('paper', {}).get('venue', ''))}).</p>")
    parts.append("<h2>Verdict</h2><div class='verdict'>" + "".join(f"<p>{v}</p>" for v in verdict(tables, plan, paper))
                 + "</div>")
    parts.append("<h2>The paper's claims beside our measurements</h2>")
    parts.append("<p class='muted'><strong>Speedup at equal P@1</strong>: for SLIDE and a baseline on one dataset "
                 "and seed, the target is the lower of the two runs' best P@1; the speedup is the baseline's "
                 "training time to first reach it divided by SLIDE's (&gt;1: SLIDE faster). Training time excludes "
                 "evaluation. Seeds are averaged. A target that does not beat ranking the most frequent "
                 "training labels first by at least 0.01 P@1 gives no comparison: both runs would only "
                 "have learned label popularity.</p>")
    parts.append(claims_table(tables, plan, paper))
    # machine
    parts.append("<h2>Machine and software</h2>")
    run_cpus = sorted({c for c in summary.get("cpu", pd.Series(dtype=str)).dropna() if c}) if len(summary) else []
    rows = [["CPU", esc(machine_info.get("cpu", "?"))], ["Cores usable", esc(machine_info.get("cores", "?"))],
            ["Memory", f"{esc(machine_info.get('memory_gb', '?'))} GB"],
            ["Platform", esc(machine_info.get("platform", ""))],
            ["GPU", esc(((plan or {}).get("gpu") or {}).get("reason", "?"))],
            ["Cores given to the pipeline", esc((plan or {}).get("cores", "?"))]]
    if run_cpus and run_cpus != [machine_info.get("cpu")]:
        rows.append(["CPUs recorded in run.json", esc("; ".join(run_cpus))])
    rows += [[f"{esc(k)} version", esc(v)] for k, v in version_info.items()]
    parts.append(_table(["", ""], rows))
    # figures
    parts.append("<h2>Figures</h2>")
    legend = " ".join(_method_cell(m) for m in method_order(set(summary["method"]) if len(summary) else []))
    if legend:
        parts.append(f"<p class='muted'>One colour per method in every figure: {legend}</p>")
    for name, path in figures.items():
        parts.append(f"<figure id='{esc(name)}'>{_img(path)}<figcaption><strong>{esc(FIGURES.get(name, name))}."
                     f"</strong> {CAPTIONS.get(name, '')}</figcaption></figure>")
    if experiments.get("table", True):
        parts.append("<h2>Table: speed, memory and accuracy per dataset and method</h2>")
        parts.append("<p class='muted'>Headline runs, mean over completed seeds. Median s/batch: median time of "
                     "one training step. Samples/s: training samples over training time. Peak memory: peak "
                     "resident set of the training process. P@k: final, full test set. Time to target: "
                     "training time to first reach the target P@1 (the dataset's configured target, else the "
                     "lowest best P@1 among the methods).</p>")
        parts.append(results_table(tables, plan))
    parts.append("<h2>What could not run, and why</h2>")
    items = notes(tables, plan, paper, experiments)
    parts.append("<ul>" + "".join(f"<li>{n}</li>" for n in items) + "</ul>" if items else "<p>Everything ran.</p>")
    parts.append("<h2>Every run</h2><details><summary>"
                 f"{len(summary)} run(s) (<code>results/summary.csv</code>)</summary>")
    parts.append(runs_table(tables, plan) + "</details>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    atomic_write_text(out, text)
    return text


__all__ = ["build_report", "verdict", "versions", "machine"]
