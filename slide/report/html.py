"""The self-contained HTML report (figures embedded as base64 PNG, no external resources)."""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import pandas as pd

from slide.contention import DISTURBED_NOTE

from .aggregate import POPULARITY_MARGIN
from .figures import FIGURES
from .io import atomic_write_text, plan_path, tables_path
from .style import method_color, method_label, method_order

FULL_SOFTMAX = ("tf-full-cpu", "tf-full-gpu", "torch-full-cpu", "torch-full-gpu")
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


def num(x, spec="{:.3f}", unit="", missing="&ndash;", scale=1.0) -> str:
    """``x`` times ``scale`` in a column's one format (``spec``, then ``unit``), or ``missing``."""
    try:
        v = float(x) * scale
    except (TypeError, ValueError):
        return missing
    return spec.format(v) + unit if math.isfinite(v) else missing


def seconds(x) -> str:
    """A duration for prose (s, min or h, whichever reads best)."""
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
    """An HTML table; without ``headers`` the first cell of each row is its header."""
    out = ["<table>"] + (["<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"] if headers else [])
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            if not headers and i == 0:
                cells.append(f"<th scope='row'>{c}</th>")
                continue
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def disturbed_cell(reason) -> str:
    """"quiet", or the disturbed note with its reason."""
    if not reason:
        return "quiet"
    return f'<span class="failed">{esc(DISTURBED_NOTE)}</span> ({esc(reason)})'


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


def _run_name(r, plan) -> str:
    return f"{method_label(r.method)} on {_ds(plan, r.dataset)}, seed {r.seed}"


def busy_sentence(sp, summary, plan) -> str | None:
    """The verdict's first sentence when a headline comparison has a disturbed run, else None."""
    hit = set(sp.loc[sp["disturbed"].astype(bool), "dataset"]) if len(sp) else set()
    if not hit:
        return None
    runs = summary[(summary["variant"] == "") & summary["dataset"].isin(hit) & summary["disturbed"].astype(bool)]
    which = "; ".join(f"{esc(_run_name(r, plan))} ({esc(r.disturbed)})" for r in runs.itertuples())
    return (f"<strong>Verdict: none, the machine was busy</strong>: other processes took the cores while these "
            f"runs were timed: {which}. {esc(DISTURBED_NOTE)}; no speedup is computed from a pair with a "
            "disturbed run, so this report declares no winner.")


def overall_verdict(sp, summary, plan) -> str:
    """One sentence: did SLIDE beat TensorFlow's full softmax here (the paper's main claim)?"""
    busy = busy_sentence(sp, summary, plan)
    if busy:
        return busy
    full = sp[sp["baseline"].isin(FULL_SOFTMAX)] if len(sp) else sp
    rows = full[full["speedup"] > 0] if len(full) else full
    lost = [r for r in full.itertuples() if _slide_did_not_learn(r)]
    if not len(rows) and not lost:
        why = "; ".join(f"on {esc(_ds(plan, r.dataset))} against {esc(method_label(r.baseline))}: "
                        f"n/a: {esc(r.reason)}" for r in full.itertuples() if r.reason)
        return ("<strong>Verdict: undecided.</strong> " + (
            f"No speedup at equal P@1 over TensorFlow's full softmax: {why}." if why else
            "No SLIDE run and TF full-softmax run completed on a common dataset, so the paper's claim could "
            "not be checked here."))
    fast = rows[rows["speedup"] > 1]
    where = ", ".join([f"{r.speedup:.3g}x on {esc(r.dataset)} vs {esc(method_label(r.baseline))}"
                       for r in rows.itertuples()]
                      + [f"on {esc(r.dataset)} SLIDE did not learn while {esc(method_label(r.baseline))} reached "
                         f"P@1 {r.baseline_best_p_at_1:.3f}" for r in lost])
    if len(fast) == len(rows) and not lost:
        head = ("<strong>Verdict: SLIDE beat TensorFlow's full softmax</strong> in every comparison here, "
                "as the paper claims")
    elif not len(fast):
        head = ("<strong>Verdict: SLIDE did not beat TensorFlow's full softmax</strong> in any comparison here; "
                "the paper's speedup is not reproduced in this setting")
    else:
        head = (f"<strong>Verdict: mixed</strong> &mdash; SLIDE beat TensorFlow's full softmax in {len(fast)} of "
                f"{len(rows) + len(lost)} comparisons")
    median = f"; median {float(rows['speedup'].median()):.3g}x" if len(rows) else ""
    return f"{head} (speedup at equal P@1: {where}{median}; &gt;1 = SLIDE faster)."


def _slide_did_not_learn(r) -> bool:
    """A quiet comparison that SLIDE lost outright: it stayed at label popularity, the baseline did not."""
    if r.speedup > 0 or (isinstance(r.disturbed, str) and r.disturbed):
        return False
    floor = r.popularity_p_at_1 + POPULARITY_MARGIN
    return r.slide_best_p_at_1 <= floor < r.baseline_best_p_at_1


def _comparison(r, plan, paper) -> str:
    """One dataset's clause of a baseline's verdict sentence."""
    where = esc(_ds(plan, r.dataset))
    if not r.speedup > 0:
        return (f"on {where} n/a: {esc(r.reason)} (best P@1: SLIDE {r.slide_best_p_at_1:.3f}, "
                f"{esc(method_label(r.baseline))} {r.baseline_best_p_at_1:.3f})")
    ps = _paper_speedup(paper, _ds(plan, r.dataset, "name"), r.baseline)
    faster = "faster" if r.speedup > 1 else "slower"
    factor = r.speedup if r.speedup >= 1 else 1 / r.speedup
    paper_txt = f"; paper: {ps['speedup']:g}x faster" if ps else ""
    return (f"on {where} SLIDE reached P@1 {r.target_p_at_1:.3f} in {seconds(r.slide_seconds)} against "
            f"{seconds(r.baseline_seconds)}, i.e. <strong>{factor:.3g}x {faster}</strong>{paper_txt}")


def _final_p_at_1(head, plan) -> str | None:
    """Final P@1 per dataset and method; a method that did not learn says so."""
    acc = []
    for did, g in head[head["status"] == "completed"].groupby("dataset"):
        items = []
        for m in method_order(g["method"]):
            runs = g[g["method"] == m]
            txt = f"{esc(method_label(m))} {runs['p_at_1'].mean():.3f}"
            if not runs["learned"].all():
                txt += f" (did not learn: stayed at label popularity, P@1 {runs['popularity_p_at_1'].mean():.3f})"
            items.append(txt)
        acc.append(f"{esc(_ds(plan, did))}: {', '.join(items)}")
    if not acc:
        return None
    return "<strong>Final P@1</strong> (full test set, mean over seeds) &mdash; " + "; ".join(acc) + "."


def verdict(tables, plan, paper) -> list[str]:
    """Plain sentences: SLIDE against each TensorFlow baseline, measured and in the paper."""
    sp, summary = tables["speedups"], tables["summary"]
    gpu = (plan or {}).get("gpu") or {}
    if not len(summary):
        return ["No training run completed, so nothing was measured; see <em>What could not run</em> below."]
    head = summary[summary["variant"] == ""]
    out = [overall_verdict(sp, summary, plan)]
    for baseline in method_order(set(sp["baseline"]) if len(sp) else []):
        rows = sp[sp["baseline"] == baseline]
        n_fast, n_cmp = int((rows["speedup"] > 1).sum()), int((rows["speedup"] > 0).sum())
        count = (f"SLIDE was faster at equal P@1 on {n_fast} of {n_cmp} comparable dataset(s)" if n_cmp
                 else "no speedup at equal P@1")
        out.append(f"<strong>SLIDE vs {esc(method_label(baseline))}</strong>: {count}: "
                   + "; ".join(_comparison(r, plan, paper) for r in rows.itertuples()) + ".")
    measured = set(sp["baseline"]) if len(sp) else set()
    if not any(m.endswith("-gpu") for m in measured):
        reason = gpu.get("reason") or "no GPU run"
        claims = [s for s in (paper or {}).get("speedups", []) if s["baseline"] == "tf-full-gpu"]
        claim_txt = ", ".join(f"{s['speedup']:g}x on {s['dataset']}" for s in claims)
        out.append(f"<strong>SLIDE vs a GPU baseline</strong> (TensorFlow or PyTorch): not measured here ({esc(reason)}). "
                   f"The paper reports SLIDE on 44 cores faster than TF-GPU on a V100: {claim_txt}.")
    acc = _final_p_at_1(head, plan)
    if acc:
        out.append(acc)
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


def _counterparts(method: str) -> tuple[str, ...]:
    """The paper's TF baseline and the same loss on the same device in any framework here."""
    role = method.split("-", 1)[1]
    return tuple(f"{framework}-{role}" for framework in ("tf", "torch"))


def _measured_speedup(r) -> str:
    if not r.speedup > 0:
        return f"n/a on {esc(r.dataset)}: {esc(r.reason)}"
    return (f"{r.speedup:.3g}x on {esc(r.dataset)} (target P@1 {r.target_p_at_1:.3f}: "
            f"{seconds(r.slide_seconds)} vs {seconds(r.baseline_seconds)})")


def claims_table(tables, plan, paper) -> str:
    sp, summary = tables["speedups"], tables["summary"]
    rows = []
    name_to_ids = {}
    for did, d in ((plan or {}).get("datasets") or {}).items():
        name_to_ids.setdefault(d.get("name"), []).append(did)
    for s in (paper or {}).get("speedups", []):
        measured = []
        for did in name_to_ids.get(s["dataset"], []):
            m = sp[(sp["dataset"] == did) & sp["baseline"].isin(_counterparts(s["baseline"]))] if len(sp) else sp
            measured += [f"{_measured_speedup(r)}, {esc(method_label(r.baseline))}" for r in m.itertuples()]
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
            if len(m):
                measured = "<br>".join(_measured_speedup(r) for r in m.itertuples())
        rows.append([esc(c["text"]), val, measured, esc(c["source"])])
    head = summary[(summary["method"] == "slide") & (summary["variant"] == "")] if len(summary) else summary
    for name, a in ((paper or {}).get("active_neurons") or {}).items():
        measured = []
        for did in name_to_ids.get(name, []):
            g = head[head["dataset"] == did] if len(head) else head
            if len(g) and g["active_per_sample_mean"].notna().any():
                act = g["active_per_sample_mean"].astype(float).mean()
                frac = g["active_fraction"].astype(float).mean()
                measured.append(f"{act:,.0f} per sample = {100 * frac:.2f}% of {act / frac:,.0f} "
                                f"labels ({esc(did)})")
        rows.append([f"Active output neurons per sample, {esc(name)}",
                     f"~{a['per_sample']:,} ({100 * a['per_sample'] / a['labels']:.2f}% of {a['labels']:,})",
                     "<br>".join(measured) or "no SLIDE run on this dataset", esc(a["source"])])
    rows.append(["Final P@1 of each method", "not recorded (not verified against the paper's text)",
                 "see the table below", "&ndash;"])
    return _table(["Claim", "Paper", "Measured here", "Paper source"], rows)


def speedups_table(tables, plan) -> str:
    """Every SLIDE-against-baseline comparison; a row without a speedup says n/a and why."""
    sp = tables["speedups"]
    if not len(sp):
        return "<p>No SLIDE run and baseline run completed on a common dataset.</p>"
    rows = [[esc(_ds(plan, r.dataset)), _method_cell(r.baseline), num(r.seeds, "{:.0f}"),
             num(r.target_p_at_1), num(r.slide_seconds, "{:,.1f}", " s"), num(r.baseline_seconds, "{:,.1f}", " s"),
             num(r.speedup, "{:.2f}", "x", missing=f"n/a: {esc(r.reason)}"), num(r.popularity_p_at_1)]
            for r in sp.itertuples()]
    return _table(["Dataset", "Baseline", "Seeds", "Target P@1", "SLIDE time", "Baseline time", "Speedup",
                   "Label popularity P@1"], rows, numeric={2, 3, 4, 5, 7})


def results_table(tables, plan) -> str:
    t = tables["table"]
    if not len(t):
        return "<p>No headline run completed.</p>"
    rows = []
    for r in t.itertuples():
        best = f"{num(r.best_p_at_1)} ({num(r.best_epoch, 'epoch {:.2f}', missing='epoch unknown')})"
        if not r.learned:
            best += "<br>did not learn (stayed at label popularity)"
        rows.append([esc(_ds(plan, r.dataset)), _method_cell(r.method), f"{r.completed}/{r.runs}",
                     num(r.median_batch_seconds, "{:,.1f}", " ms", scale=1000), num(r.samples_per_second, "{:,.0f}"),
                     num(r.peak_rss_mb, "{:,.0f}", " MB"), num(r.p_at_1), num(r.p_at_3), num(r.p_at_5), best,
                     num(r.target_p_at_1),
                     num(r.time_to_target_seconds, "{:,.1f}", " s", missing="not reached")
                     + f" ({esc(r.reached_target)})",
                     num(r.active_per_sample_mean, "{:,.0f}"), num(r.active_fraction, "{:.2%}"),
                     disturbed_cell(r.disturbed)])
    return _table(["Dataset", "Method", "Completed", "Median time/batch", "Samples/s", "Peak memory",
                   "P@1", "P@3", "P@5", "Best P@1 (epoch)", "Target P@1", "Time to target (runs reaching it)",
                   "Active neurons/sample", "Active fraction", "Timing"], rows, numeric=set(range(3, 14)))


def _status_cell(r) -> str:
    status = esc(r.status) if r.status == "completed" else f'<span class="failed">{esc(r.status)}</span>'
    if r.max_train_seconds_cut:
        status += "<br>cut by the time cap (max_train_seconds)"
    if r.stopped_early:
        status += "<br>stopped early (patience)"
    return status


def runs_table(tables, plan) -> str:
    s = tables["summary"]
    if not len(s):
        return "<p>No run.</p>"
    rows = []
    for r in s.itertuples():
        rows.append([esc(r.dataset), _method_cell(r.method), esc(r.variant or "headline"), esc(r.seed),
                     _status_cell(r), num(r.p_at_1), num(r.best_p_at_1), num(r.best_epoch, "{:.2f}"),
                     num(r.train_seconds, "{:,.1f}", " s"), num(r.compile_seconds, "{:,.1f}", " s"),
                     num(r.steps, "{:,.0f}"), num(r.median_batch_seconds, "{:,.1f}", " ms", scale=1000),
                     num(r.active_fraction, "{:.2%}"), num(r.cpu_utilisation, "{:.0%}"),
                     num(r.other_cpu_share, "{:.0%}"), num(r.load_1m_start, "{:.2f}"), num(r.load_1m_end, "{:.2f}"),
                     disturbed_cell(r.disturbed), f"<code>{esc(r.run_dir)}/run.json</code>"])
    return _table(["Dataset", "Method", "Variant", "Seed", "Status", "Final P@1", "Best P@1", "Best epoch",
                   "Train time", "Compile time", "Steps", "Median time/batch", "Active fraction", "CPU use",
                   "Other processes' CPU share", "Load (1 min) start", "Load (1 min) end", "Timing", "Record"],
                  rows, numeric=set(range(5, 17)))


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
                   f"(<code>{esc(plan_path((plan or {}).get('preset', '?')))}</code>):<ul>{items}</ul>")
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
    out += _run_notes(tables["summary"])
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


#: (summary column, whether a true value is the news, what the note says) for :func:`_run_notes`.
RUN_NOTES = (
    ("disturbed", True, f'<span class="failed">{esc(DISTURBED_NOTE)}</span>: other processes took the cores '
                        "while these runs were timed; no speedup is computed from them"),
    ("learned", False, "<strong>Did not learn</strong> (stayed at label popularity: best P@1 not above the "
                       "most-frequent-labels P@1 by more than 0.01)"),
    ("max_train_seconds_cut", True, "<strong>Cut by the time cap</strong>: the safety cap "
                                    "<code>max_train_seconds</code> ended these runs before their schedule"),
)


def _run_notes(summary) -> list[str]:
    """A note listing the runs that were disturbed, did not learn or were cut by the time cap."""
    out = []
    for col, news, text in RUN_NOTES:
        hit = summary[summary[col].astype(bool) == news] if len(summary) else summary
        if not len(hit):
            continue
        items = "".join(f"<li><code>{esc(r.run_dir)}</code>" + (f": {esc(r.disturbed)}" if col == "disturbed" else "")
                        + "</li>" for r in hit.itertuples())
        out.append(f"{text}:<ul>{items}</ul>")
    return out


_EXP_FIG = {"time_curves": "p1_vs_time", "iteration_curves": "p1_vs_iterations",
            "sampled_softmax": "sampled_softmax", "batch_size": "batch_size",
            "thread_scaling": "thread_scaling", "table": "table"}

CAPTIONS = {
    "p1_vs_time": "P@1 on the test set against training time (time inside training steps; evaluation "
                  "excluded, as in the paper). Sample evaluations use a fixed random subset of the test "
                  "points; evaluations at epoch ends and the last one use the full test set. Dashed grey "
                  "line: label popularity, the P@1 of ranking the most frequent training labels first. "
                  "Hollow markers: a disturbed run. The box under each panel quotes the paper.",
    "p1_vs_iterations": "The same runs against iterations (training batches): how much each method learns "
                        "per step, independent of its speed.",
    "sampled_softmax": "TF sampled softmax with several fractions of the labels sampled per batch, beside the "
                       "SLIDE headline run.",
    "batch_size": "Each method at several batch sizes (line style); colour = method.",
    "thread_scaling": "Median time per training batch, in milliseconds, against the thread counts measured "
                      "here, on data of the dataset's shape (band: 10th-90th percentile). The number by each "
                      "point is the 1-minute load average when that benchmark started; a black ring marks a "
                      "disturbed benchmark.",
    "headline": "Left: speedup of SLIDE at equal P@1 (time for each method to reach the lower of the two "
                "methods' best P@1), measured (solid) and in the paper (hatched); a comparison without a "
                "value says n/a and why. Right: output neurons SLIDE computes per training sample, as a "
                "share of all labels.",
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
    parts.append("<p class='muted'><strong>Speedup at equal P@1</strong>: for SLIDE and a baseline (a TensorFlow "
                 "method) on one dataset and seed, the target is the lower of the two runs' best P@1; the speedup "
                 "is the baseline's training time to first reach it divided by SLIDE's (&gt;1: SLIDE faster). "
                 "Training time excludes evaluation and compilation. Seeds are averaged. A pair gives no speedup "
                 "(n/a, with the reason) when either run was disturbed (other processes took its cores) or did "
                 "not learn: its best P@1 is not above label popularity (the P@1 of ranking the most frequent "
                 "training labels first) by more than 0.01.</p>")
    parts.append(claims_table(tables, plan, paper))
    parts.append("<h3>Every comparison</h3>")
    parts.append(speedups_table(tables, plan))
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
    parts.append(_table(None, rows))
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
        parts.append("<p class='muted'>Headline runs, mean over completed seeds. Median time/batch: median time "
                     "of one training step. Samples/s: training samples over training time. Peak memory: peak "
                     "resident set of the training process. P@k: final, full test set. Best P@1: the best "
                     "evaluation and its epoch. Time to target: training time to first reach the target P@1 "
                     "(the dataset's configured target, else the lowest best P@1 among the methods). Active "
                     "neurons: output neurons computed per training sample, and their share of the labels. "
                     "Timing: whether other processes took the cores while the runs were timed.</p>")
        parts.append(results_table(tables, plan))
    parts.append("<h2>What could not run, and why</h2>")
    items = notes(tables, plan, paper, experiments)
    parts.append("<ul>" + "".join(f"<li>{n}</li>" for n in items) + "</ul>" if items else "<p>Everything ran.</p>")
    parts.append("<h2>Every run</h2><details><summary>"
                 f"{len(summary)} run(s) (<code>{esc(tables_path((plan or {}).get('preset', '?'), 'summary.csv'))}"
                 "</code>)</summary>")
    parts.append(runs_table(tables, plan) + "</details>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    atomic_write_text(out, text)
    return text


__all__ = ["build_report", "verdict", "versions", "machine"]
