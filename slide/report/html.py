"""The self-contained HTML report (figures embedded as base64 PNG, no external resources).

The page and its sentences are Jinja2 templates in ``templates/`` (autoescaped); this module
decides what the report says and hands the templates the numbers and texts.
"""

from __future__ import annotations

import base64
import math
import time
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from slide.contention import DISTURBED_NOTE
from slide.pipeline.plan import run_dir

from .aggregate import POPULARITY_MARGIN, machine_label
from .figures import FIGURES
from .io import atomic_write_text, plan_path, tables_path
from .style import method_color, method_label, method_order

FULL_SOFTMAX = ("tf-full-cpu", "tf-full-gpu", "torch-full-cpu", "torch-full-gpu")
VERSIONED = ("numpy", "numba", "tensorflow", "pandas", "matplotlib", "snakemake", "jsonschema", "slide-repro")
MISSING = "\u2013"  # en dash: a value that is not there


def num(x, spec="{:.3f}", unit="", missing=MISSING, scale=1.0) -> str:
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
        return MISSING
    if not math.isfinite(v):
        return "not reached"
    if v >= 3600:
        return f"{v / 3600:.2f} h"
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.3g} s"


ENV = Environment(loader=PackageLoader("slide.report", "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True)
ENV.globals.update(method_color=method_color, method_label=method_label, seconds=seconds,
                   DISTURBED_NOTE=DISTURBED_NOTE)
# the templates' macros, called from here: each returns escaped HTML (Markup)
CELLS, SENTENCES, NOTES = (ENV.get_template(f"{name}.html.j2").module for name in ("macros", "verdict", "notes"))


def versions() -> dict:
    """Library versions of the reporting environment (the shared list plus plotting and workflow)."""
    from slide.runs import versions as run_versions

    return run_versions(VERSIONED)


def machine() -> dict:
    """The reporting machine (CPU, cores, memory, platform)."""
    from slide.runs import machine_info

    return machine_info()


def _ds(plan, did, key="label"):
    """A dataset's ``key`` in the plan (its display label by default), else its id."""
    return ((plan or {}).get("datasets", {}).get(did) or {}).get(key, did)


def _paper_speedup(paper, name, baseline):
    """The paper's speedup entry for a dataset name and baseline, or None."""
    for s in (paper or {}).get("speedups", []):
        if s.get("dataset") == name and s.get("baseline") == baseline:
            return s
    return None


def _run_name(r, plan) -> str:
    """A run as prose: method, dataset and seed."""
    return f"{method_label(r.method)} on {_ds(plan, r.dataset)}, seed {r.seed}"


def busy_sentence(sp, summary, plan) -> Markup | None:
    """The verdict's first sentence when a headline comparison has a disturbed run, else None."""
    hit = set(sp.loc[sp["disturbed"].astype(bool), "dataset"]) if len(sp) else set()
    if not hit:
        return None
    runs = summary[(summary["variant"] == "") & summary["dataset"].isin(hit) & summary["disturbed"].astype(bool)]
    return SENTENCES.busy([(_run_name(r, plan), r.disturbed) for r in runs.itertuples()])


def overall_verdict(sp, summary, plan) -> Markup:
    """One sentence: did SLIDE beat TensorFlow's full softmax here (the paper's main claim)?"""
    busy = busy_sentence(sp, summary, plan)
    if busy:
        return busy
    # the paper's claim is about one machine's CPU against its GPU or CPU: comparisons with runs made on
    # another machine are reported per baseline, but do not decide the verdict
    full = sp[sp["baseline"].isin(FULL_SOFTMAX) & (_other_machine(sp) == "")] if len(sp) else sp
    rows = full[full["speedup"] > 0] if len(full) else full
    lost = [r for r in full.itertuples() if _slide_did_not_learn(r)]
    if not len(rows) and not lost:
        return SENTENCES.undecided([(_ds(plan, r.dataset), method_label(r.baseline), r.reason)
                                    for r in full.itertuples() if r.reason])
    median = float(rows["speedup"].median()) if len(rows) else None
    return SENTENCES.overall(list(rows.itertuples()), lost, int((rows["speedup"] > 1).sum()), median)


def _other_machine(sp) -> pd.Series:
    """The speedup table's ``other_machine`` as text ("" for SLIDE's machine; read back from CSV it is NaN)."""
    col = sp["other_machine"] if "other_machine" in sp else pd.Series("", index=sp.index)
    return col.astype(object).where(col.notna(), "")


def _slide_did_not_learn(r) -> bool:
    """A quiet comparison that SLIDE lost outright: it stayed at label popularity, the baseline did not."""
    if r.speedup > 0 or (isinstance(r.disturbed, str) and r.disturbed):
        return False
    floor = r.popularity_p_at_1 + POPULARITY_MARGIN
    return r.slide_best_p_at_1 <= floor < r.baseline_best_p_at_1


def _comparison(r, plan, paper) -> Markup:
    """One dataset's clause of a baseline's verdict sentence."""
    where = _ds(plan, r.dataset)
    if not r.speedup > 0:
        return SENTENCES.no_comparison(r, where)
    ps = _paper_speedup(paper, _ds(plan, r.dataset, "name"), r.baseline)
    return SENTENCES.comparison(r, where, ps["speedup"] if ps else None)


def _final_p_at_1(head, plan) -> Markup | None:
    """Final P@1 per dataset and method; a method that did not learn says so."""
    per_dataset = []
    for did, g in head[head["status"] == "completed"].groupby("dataset"):
        items = []
        for m in method_order(g["method"]):
            runs = g[g["method"] == m]
            stuck = None if runs["learned"].all() else runs["popularity_p_at_1"].mean()
            items.append((method_label(m), runs["p_at_1"].mean(), stuck))
        per_dataset.append((_ds(plan, did), items))
    return SENTENCES.final_p_at_1(per_dataset) if per_dataset else None


def _caveat(summary, plan) -> Markup | None:
    """Why absolute numbers do not transfer to the paper: synthetic data, fewer cores."""
    srcs = {(plan or {}).get("datasets", {}).get(d, {}).get("source") for d in set(summary["dataset"])}
    cores = (plan or {}).get("cores")
    caveat = []
    if "synth" in srcs:
        caveat.append("synthetic stand-ins of the paper's datasets, much smaller than the real ones")
    if cores and cores < 44:
        caveat.append(f"{cores} core(s) instead of the paper's 44")
    return SENTENCES.caveat(caveat) if caveat else None


def verdict(tables, plan, paper) -> list[Markup]:
    """Plain sentences (HTML): SLIDE against each TensorFlow baseline, measured and in the paper."""
    sp, summary = tables["speedups"], tables["summary"]
    gpu = (plan or {}).get("gpu") or {}
    if not len(summary):
        return [SENTENCES.nothing_ran()]
    out = [overall_verdict(sp, summary, plan)]
    for baseline in method_order(set(sp["baseline"]) if len(sp) else []):
        rows = sp[sp["baseline"] == baseline]
        n_fast, n_cmp = int((rows["speedup"] > 1).sum()), int((rows["speedup"] > 0).sum())
        elsewhere = "; ".join(dict.fromkeys(m for m in _other_machine(rows) if m))
        out.append(SENTENCES.baseline(method_label(baseline), n_fast, n_cmp,
                                      [_comparison(r, plan, paper) for r in rows.itertuples()], elsewhere))
    measured = set(sp["baseline"]) if len(sp) else set()
    if not any(m.endswith("-gpu") for m in measured):
        claims = [s for s in (paper or {}).get("speedups", []) if s["baseline"] == "tf-full-gpu"]
        out.append(SENTENCES.gpu_not_measured(gpu.get("reason") or "no GPU run", claims))
    out.append(_final_p_at_1(summary[summary["variant"] == ""], plan))
    failed = summary[summary["status"] == "failed"]
    if len(failed):
        out.append(SENTENCES.failed(len(failed)))
    out.append(_caveat(summary, plan))
    return [s for s in out if s]


def _counterparts(method: str) -> tuple[str, ...]:
    """The paper's TF baseline and the same loss on the same device in any framework here."""
    role = method.split("-", 1)[1]
    return tuple(f"{framework}-{role}" for framework in ("tf", "torch"))


def _measured_speedup(r) -> str:
    """One measured comparison as plain text for the claims table."""
    if not r.speedup > 0:
        return f"n/a on {r.dataset}: {r.reason}"
    return (f"{r.speedup:.3g}x on {r.dataset} (target P@1 {r.target_p_at_1:.3f}: "
            f"{seconds(r.slide_seconds)} vs {seconds(r.baseline_seconds)})")


def _speedup_claim_rows(sp, plan, paper, name_to_ids) -> list[list]:
    """The paper's speedups, each beside what was measured on the same dataset and device here."""
    rows = []
    for s in (paper or {}).get("speedups", []):
        measured = []
        for did in name_to_ids.get(s["dataset"], []):
            m = sp[(sp["dataset"] == did) & sp["baseline"].isin(_counterparts(s["baseline"]))] if len(sp) else sp
            measured += [f"{_measured_speedup(r)}, {method_label(r.baseline)}" for r in m.itertuples()]
        if not measured:
            why = "not run here"
            if s["baseline"].endswith("-gpu"):
                why = f"not measured: {((plan or {}).get('gpu') or {}).get('reason', 'no GPU')}"
            elif not name_to_ids.get(s["dataset"]):
                why = "dataset not in this run"
            measured = [why]
        hours = f" ({s['slide_hours']:g} h vs {s['baseline_hours']:g} h)" if s.get("slide_hours") else ""
        rows.append([f"Speedup of SLIDE over {method_label(s['baseline'])}, {s['dataset']}",
                     f"{s['speedup']:g}x{hours}", CELLS.lines(measured), s["source"]])
    return rows


def _text_claim_rows(sp, paper) -> list[list]:
    """The paper's other claims; only the abstract's TF-CPU speedup is measured here."""
    rows = []
    for c in (paper or {}).get("claims", []):
        val = f"{c.get('speedup', c.get('factor', '')):g}x" if c.get("speedup") or c.get("factor") else ""
        measured = "not measured by this pipeline"
        if c["id"] == "abstract-tf-cpu":
            m = sp[sp["baseline"] == "tf-full-cpu"] if len(sp) else sp
            if len(m):
                measured = CELLS.lines([_measured_speedup(r) for r in m.itertuples()])
        rows.append([c["text"], val, measured, c["source"]])
    return rows


def _active_neuron_rows(summary, paper, name_to_ids) -> list[list]:
    """The paper's active output neurons per sample beside SLIDE's here."""
    head = summary[(summary["method"] == "slide") & (summary["variant"] == "")] if len(summary) else summary
    rows = []
    for name, a in ((paper or {}).get("active_neurons") or {}).items():
        measured = []
        for did in name_to_ids.get(name, []):
            g = head[head["dataset"] == did] if len(head) else head
            if len(g) and g["active_per_sample_mean"].notna().any():
                act = g["active_per_sample_mean"].astype(float).mean()
                frac = g["active_fraction"].astype(float).mean()
                measured.append(f"{act:,.0f} per sample = {100 * frac:.2f}% of {act / frac:,.0f} labels ({did})")
        rows.append([f"Active output neurons per sample, {name}",
                     f"~{a['per_sample']:,} ({100 * a['per_sample'] / a['labels']:.2f}% of {a['labels']:,})",
                     CELLS.lines(measured) if measured else "no SLIDE run on this dataset", a["source"]])
    return rows


def claims_table(tables, plan, paper) -> Markup:
    """The paper's claims, each beside what this run measured."""
    name_to_ids = {}
    for did, d in ((plan or {}).get("datasets") or {}).items():
        name_to_ids.setdefault(d.get("name"), []).append(did)
    rows = (_speedup_claim_rows(tables["speedups"], plan, paper, name_to_ids)
            + _text_claim_rows(tables["speedups"], paper)
            + _active_neuron_rows(tables["summary"], paper, name_to_ids)
            + [["Final P@1 of each method", "not recorded (not verified against the paper's text)",
                "see the table below", MISSING]])
    return CELLS.table(["Claim", "Paper", "Measured here", "Paper source"], rows)


def speedups_table(tables, plan) -> Markup | None:
    """Every SLIDE-against-baseline comparison (None without one); a row without a speedup says n/a and why."""
    sp = tables["speedups"]
    if not len(sp):
        return None
    rows = [[_ds(plan, r.dataset), CELLS.method_cell(r.baseline), num(r.seeds, "{:.0f}"),
             num(r.target_p_at_1), num(r.slide_seconds, "{:,.1f}", " s"), num(r.baseline_seconds, "{:,.1f}", " s"),
             num(r.speedup, "{:.2f}", "x", missing=f"n/a: {r.reason}"), num(r.popularity_p_at_1)]
            for r in sp.itertuples()]
    return CELLS.table(["Dataset", "Baseline", "Seeds", "Target P@1", "SLIDE time", "Baseline time", "Speedup",
                        "Label popularity P@1"], rows, numeric={2, 3, 4, 5, 7})


def results_table(tables, plan) -> Markup | None:
    """Speed, memory and accuracy per dataset and method (None without a headline run)."""
    t = tables["table"]
    if not len(t):
        return None
    rows = []
    for r in t.itertuples():
        best = [f"{num(r.best_p_at_1)} ({num(r.best_epoch, 'epoch {:.2f}', missing='epoch unknown')})"]
        if not r.learned:
            best.append("did not learn (stayed at label popularity)")
        rows.append([_ds(plan, r.dataset), CELLS.method_cell(r.method), f"{r.completed}/{r.runs}",
                     num(r.median_batch_seconds, "{:,.1f}", " ms", scale=1000), num(r.samples_per_second, "{:,.0f}"),
                     num(r.peak_rss_mb, "{:,.0f}", " MB"), num(r.p_at_1), num(r.p_at_3), num(r.p_at_5),
                     CELLS.lines(best), num(r.target_p_at_1),
                     num(r.time_to_target_seconds, "{:,.1f}", " s", missing="not reached") + f" ({r.reached_target})",
                     num(r.active_per_sample_mean, "{:,.0f}"), num(r.active_fraction, "{:.2%}"),
                     CELLS.disturbed_cell(r.disturbed)])
    return CELLS.table(["Dataset", "Method", "Completed", "Median time/batch", "Samples/s", "Peak memory",
                        "P@1", "P@3", "P@5", "Best P@1 (epoch)", "Target P@1", "Time to target (runs reaching it)",
                        "Active neurons/sample", "Active fraction", "Timing"], rows, numeric=set(range(3, 14)))


def runs_table(tables) -> Markup | None:
    """Every run, headline and variants, failed ones included (None without a run)."""
    s = tables["summary"]
    if not len(s):
        return None
    rows = [[r.dataset, CELLS.method_cell(r.method), r.variant or "headline", r.seed, CELLS.status_cell(r),
             num(r.p_at_1), num(r.best_p_at_1), num(r.best_epoch, "{:.2f}"),
             num(r.train_seconds, "{:,.1f}", " s"), num(r.compile_seconds, "{:,.1f}", " s"),
             num(r.steps, "{:,.0f}"), num(r.median_batch_seconds, "{:,.1f}", " ms", scale=1000),
             num(r.active_fraction, "{:.2%}"), num(r.cpu_utilisation, "{:.0%}"),
             num(r.other_cpu_share, "{:.0%}"), num(r.load_1m_start, "{:.2f}"), num(r.load_1m_end, "{:.2f}"),
             CELLS.disturbed_cell(r.disturbed), CELLS.code(f"{r.run_dir}/run.json")]
            for r in s.itertuples()]
    return CELLS.table(["Dataset", "Method", "Variant", "Seed", "Status", "Final P@1", "Best P@1", "Best epoch",
                        "Train time", "Compile time", "Steps", "Median time/batch", "Active fraction", "CPU use",
                        "Other processes' CPU share", "Load (1 min) start", "Load (1 min) end", "Timing", "Record"],
                       rows, numeric=set(range(5, 17)))


def _skipped_note(plan) -> Markup | None:
    """The runs the plan left out, grouped by reason."""
    skipped = (plan or {}).get("skipped") or []
    if not skipped:
        return None
    by_reason = {}
    for s in skipped:
        run = f"{s['dataset']}/{s['method']}" + (f"/{s['variant']}" if s.get("variant") else "") + f"/seed{s['seed']}"
        by_reason.setdefault(s["reason"], []).append(run)
    return NOTES.skipped(len(skipped), plan_path((plan or {}).get("preset", "?")), list(by_reason.items()))


def _imported_note(plan, summary) -> Markup | None:
    """The runs made on another machine and copied in (plan ``imported``), with that machine."""
    imported = (plan or {}).get("imported") or []
    if not imported:
        return None

    def key(r):
        return r["dataset"], r["method"], r["variant"] if isinstance(r["variant"], str) else "", int(r["seed"])

    where = {key(r): machine_label(r) for _, r in summary.iterrows()} if len(summary) else {}
    return NOTES.imported([(run_dir(**r), where.get(key(r), "not read: see the aggregate log")) for r in imported])


def notes(tables, plan, paper, experiments) -> list[Markup]:
    """What could not run, and why (HTML list items)."""
    out = []
    gpu = (plan or {}).get("gpu") or {}
    if not gpu.get("available"):
        reason = str(gpu.get("reason", "not available"))
        out.append(NOTES.no_gpu(reason.removeprefix("no GPU: ")))
    out.append(_skipped_note(plan))
    out.append(_imported_note(plan, tables["summary"]))
    if {d.get("source") for d in ((plan or {}).get("datasets") or {}).values()} == {"synth"}:
        out.append(NOTES.synthetic())
    summary = tables["summary"]
    failed = summary[summary["status"] == "failed"] if len(summary) else []
    if len(failed):
        out.append(NOTES.failed_runs(list(failed.itertuples())))
    out += _run_notes(summary)
    cores = int((plan or {}).get("cores") or 1)
    paper_counts = ((paper or {}).get("thread_scaling") or {}).get("core_counts", [])
    uncovered = [c for c in paper_counts if c > cores]
    if experiments.get("thread_scaling") and uncovered:
        out.append(NOTES.cores_not_covered(cores, paper_counts, uncovered))
    off = [FIGURES.get(_EXP_FIG.get(k, ""), k) for k, on in experiments.items() if not on]
    if off:
        out.append(NOTES.switched_off(off))
    return [n for n in out if n]


#: (summary column, whether a true value is the news) for :func:`_run_notes`.
RUN_NOTES = (("disturbed", True), ("learned", False), ("max_train_seconds_cut", True))


def _run_notes(summary) -> list[Markup]:
    """A note listing the runs that were disturbed, did not learn or were cut by the time cap."""
    out = []
    for col, news in RUN_NOTES:
        hit = summary[summary[col].astype(bool) == news] if len(summary) else summary
        if len(hit):
            out.append(NOTES.run_note(col, list(hit.itertuples())))
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
    "memory_floor": "SLIDE's benchmark at its most threads, phase by phase: the mean milliseconds per batch "
                    "(solid) beside the memory floor (hatched), the time the phase's distinct bytes take at the "
                    "machine's measured stream bandwidth, and their ratio. The tick on the gradient phase is the "
                    "time the batch's output rows take read and written back scattered with no arithmetic: "
                    "rows of a few cache lines move slower than a stream, so the stretch from the hatched bar "
                    "to the tick is the rows' access pattern and the rest arithmetic or latency; the note "
                    "below sets those rows' time beside the whole step's floor: a time no step that updates "
                    "them can beat on that machine. 'no counted "
                    "bytes' marks phases that work in per-thread scratch and hash buckets, which the count "
                    "leaves out.",
    "headline": "Left: speedup of SLIDE at equal P@1 (time for each method to reach the lower of the two "
                "methods' best P@1), measured (solid) and in the paper (hatched); a comparison without a "
                "value says n/a and why. Right: output neurons SLIDE computes per training sample, as a "
                "share of all labels.",
    # a fixed caption with markup, trusted as it stands
    "jobs": Markup("Wall-clock time and peak memory of every timed Snakemake job (its <code>benchmark:</code> "
                   "record, start-up, data loading and evaluation included)."),
}


def _figure(name, path) -> dict:
    """What the template needs to embed one figure."""
    return {"name": name, "alt": Path(path).stem, "title": FIGURES.get(name, name), "caption": CAPTIONS.get(name, ""),
            "png_base64": base64.b64encode(Path(path).read_bytes()).decode("ascii")}


def _machine_table(summary, plan, machine_info, version_info) -> Markup:
    """The machine and the library versions; run.json CPUs too where they differ from this one."""
    run_cpus = sorted({c for c in summary.get("cpu", pd.Series(dtype=str)).dropna() if c}) if len(summary) else []
    rows = [["CPU", machine_info.get("cpu", "?")], ["Cores usable", machine_info.get("cores", "?")],
            ["Memory", f"{machine_info.get('memory_gb', '?')} GB"], ["Platform", machine_info.get("platform", "")],
            ["GPU", ((plan or {}).get("gpu") or {}).get("reason", "?")],
            ["Cores given to the pipeline", (plan or {}).get("cores", "?")]]
    if run_cpus and run_cpus != [machine_info.get("cpu")]:
        rows.append(["CPUs recorded in run.json", "; ".join(run_cpus)])
    run_gpus = sorted({g for g in summary.get("gpu", pd.Series(dtype=str)).dropna() if g}) if len(summary) else []
    if run_gpus:
        rows.append(["GPUs recorded in run.json", "; ".join(run_gpus)])
    rows += [[f"{k} version", v] for k, v in version_info.items()]
    return CELLS.table(None, rows)


def build_report(tables, plan, paper, figures: dict, out, title: str, experiments: dict | None = None,
                 machine_info: dict | None = None, version_info: dict | None = None) -> str:
    """Write the self-contained HTML report to ``out`` and return its text.

    Parameters
    ----------
    tables : dict of pandas.DataFrame
        The aggregated tables (``summary``, ``speedups``, ``table``, ...) as
        :func:`slide.report.figures.load_tables` reads them.
    plan, paper : dict
        The preset's plan (``skipped.json``) and the paper's numbers (``paper_results.yaml``).
    figures : dict
        Figure name -> PNG path; each is embedded as base64.
    out : path
        Where the HTML goes (written atomically).
    title : str
        The page title.
    experiments : dict, optional
        Experiment name -> whether this preset runs it.
    machine_info, version_info : dict, optional
        The machine and the library versions; measured here when not given.
    """
    experiments = experiments or {}
    summary = tables["summary"]
    preset = (plan or {}).get("preset", "?")
    paper_info = (paper or {}).get("paper", {})
    text = ENV.get_template("report.html.j2").render(
        title=title, generated=time.strftime("%Y-%m-%d %H:%M %Z"), preset=preset,
        paper_title=paper_info.get("title", ""), paper_venue=paper_info.get("venue", ""),
        verdict=verdict(tables, plan, paper), claims=claims_table(tables, plan, paper),
        speedups=speedups_table(tables, plan),
        machine=_machine_table(summary, plan, machine_info or machine(), version_info or versions()),
        legend=method_order(set(summary["method"]) if len(summary) else []),
        figures=[_figure(name, path) for name, path in figures.items()],
        show_table=experiments.get("table", True), results=results_table(tables, plan),
        notes=notes(tables, plan, paper, experiments),
        n_runs=len(summary), summary_csv=tables_path(preset, "summary.csv"), runs=runs_table(tables))
    atomic_write_text(out, text)
    return text


__all__ = ["build_report", "verdict", "versions", "machine"]
