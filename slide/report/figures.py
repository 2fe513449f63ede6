"""The report's figures (matplotlib, Agg backend); each is saved as PNG and SVG, atomically.

``make_figure(name, tables, plan, paper, png, svg)`` draws one of :data:`FIGURES` from the
aggregated tables (``results/<preset>/*.csv`` as DataFrames), the plan
(``results/<preset>/skipped.json``) and the paper's numbers (``workflow/resources/paper_results.yaml``).
A figure without data still renders, with a panel that says why.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.ticker  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from slide.contention import DISTURBED_NOTE  # noqa: E402

from .io import save_figure  # noqa: E402
from .style import VARIANT_STYLES, method_color, method_label, method_order  # noqa: E402

FIGURES = {
    "p1_vs_time": "P@1 against training time (paper Fig. 5)",
    "p1_vs_iterations": "P@1 against iterations (paper Fig. 6)",
    "sampled_softmax": "Sampled softmax at several sample fractions beside SLIDE (paper Fig. 7)",
    "batch_size": "Batch size 64/128/256 (paper Fig. 8)",
    "thread_scaling": "Time per batch against threads (paper Fig. 9)",
    "memory_floor": "Where SLIDE's time per batch goes: each phase beside its memory floor",
    "headline": "Speedup at equal P@1 and active neurons: measured beside the paper",
    "jobs": "Snakemake benchmark records of the timed jobs (secondary)",
}


def dataset_label(plan: dict, did: str) -> str:
    return ((plan or {}).get("datasets", {}).get(did) or {}).get("label", did)


def _datasets(*frames) -> list[str]:
    seen = []
    for df in frames:
        if df is not None and len(df):
            seen += list(df["dataset"])
    return sorted(set(seen))


def _panels(n, width=5.2, height=3.8):
    n = max(n, 1)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _why_empty(plan, what):
    skipped = (plan or {}).get("skipped", [])
    if skipped:
        reasons = sorted({s["reason"] for s in skipped})
        return f"no {what}\n(left out: " + "; ".join(r[:80] for r in reasons[:2]) + ")"
    return f"no {what}"


POPULARITY_LABEL = "label popularity (most frequent labels first)"


def _popularity_line(ax, summary, did) -> None:
    """The P@1 of ranking the most frequent training labels first, as a labelled horizontal line."""
    if summary is None or not len(summary):
        return
    pop = summary.loc[summary["dataset"] == did, "popularity_p_at_1"].astype(float).dropna()
    if len(pop):
        value = pop.mean()
        ax.axhline(value, color="#555555", linestyle="--", linewidth=1.1, zorder=1, label=POPULARITY_LABEL)
        ax.annotate(f"label popularity: P@1 {value:.3f}", xy=(0.01, value), xycoords=("axes fraction", "data"),
                    xytext=(0, 2), textcoords="offset points", fontsize=7, color="#555555", va="bottom")


def _legend(fig, axes) -> None:
    """One legend for every panel, right of them, so that it never hides a curve."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper left", bbox_to_anchor=(1.0, 0.88),
                   fontsize=7.5, frameon=False)


def _run_notes(summary) -> dict:
    """{(dataset, method, variant, seed): legend suffixes} for disturbed runs and runs that did not learn."""
    out = {}
    if summary is None or not len(summary):
        return out
    for r in summary.itertuples():
        notes = []
        if r.disturbed:
            notes.append("disturbed")
        if not r.learned:
            notes.append("did not learn")
        out[(r.dataset, r.method, r.variant, r.seed)] = notes
    return out


def _plot_curves(ax, curves, x, group_style=None, label_fn=None, notes=None):
    """One line per run; runs of one (method, variant) share colour, style and legend entry.

    A disturbed run is drawn with hollow markers; ``notes`` (from :func:`_run_notes`) add
    "(disturbed)" or "(did not learn)" to the legend.
    """
    notes = notes or {}
    labelled = set()
    keys = ["method", "variant", "seed"]
    order = {m: i for i, m in enumerate(method_order(curves["method"]))}
    groups = sorted(curves.groupby(keys), key=lambda kv: (order[kv[0][0]], str(kv[0][1]), kv[0][2]))
    for (method, variant, seed), g in groups:
        g = g.sort_values("step")
        style = group_style(method, variant) if group_style else "-"
        label = label_fn(method, variant) if label_fn else method_label(method)
        failed = (g["status"] == "failed").any()
        extra = (["failed"] if failed else []) + notes.get((g["dataset"].iloc[0], method, variant, seed), [])
        if extra:
            label += f" ({', '.join(extra)})"
        show = label if label not in labelled else None
        labelled.add(label)
        disturbed = "disturbed" in extra
        ax.plot(g[x], g["p_at_1"], color=method_color(method), linestyle=style, marker="o",
                markersize=4 if disturbed else 2.5, markerfacecolor="white" if disturbed else None,
                linewidth=1.4, alpha=0.9 if seed == g["seed"].min() else 0.6, label=show)
        if failed and len(g):
            ax.plot(g[x].iloc[-1], g["p_at_1"].iloc[-1], marker="x", color="black", markersize=8)


def _time_axis(ax, values):
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if len(vals) and vals.max() / max(vals.min(), 1e-9) > 100:
        ax.set_xscale("log")


def _paper_note(paper: dict, dataset_name: str) -> str:
    lines = []
    for s in (paper or {}).get("speedups", []):
        if s.get("dataset") == dataset_name:
            extra = ""
            if s.get("slide_hours") and s.get("baseline_hours"):
                extra = f" ({s['slide_hours']:g} h vs {s['baseline_hours']:g} h)"
            lines.append(f"SLIDE {s['speedup']:g}x faster than {method_label(s['baseline'])}{extra}")
    if not lines:
        return ""
    return "Paper (44-core CPU, V100 GPU, full data):\n" + "\n".join(lines)


def fig_p1_vs_time(tables, plan, paper, x="train_seconds", xlabel="training time (s, evaluation excluded)"):
    curves = tables["curves"]
    head = curves[curves["variant"].fillna("") == ""] if len(curves) else curves
    dids = _datasets(head) or [None]
    fig, axes = _panels(len(dids))
    for ax, did in zip(axes, dids):
        if did is None:
            _empty(ax, _why_empty(plan, "completed headline runs"))
            continue
        g = head[head["dataset"] == did]
        _plot_curves(ax, g, x, notes=_run_notes(tables.get("summary")))
        _popularity_line(ax, tables.get("summary"), did)
        if x == "train_seconds":
            _time_axis(ax, g[x])
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("P@1 (fraction of test points)")
        ax.grid(alpha=0.3)
        name = ((plan or {}).get("datasets", {}).get(did) or {}).get("name", did)
        note = _paper_note(paper, name) if x == "train_seconds" else ""
        if note:  # below the axes, so it never hides a curve
            ax.text(0.0, -0.2, note, transform=ax.transAxes, fontsize=7, va="top",
                    bbox=dict(boxstyle="round", facecolor="#f7f7f7", edgecolor="#bbbbbb"))
    _legend(fig, axes)
    fig.suptitle(FIGURES["p1_vs_time" if x == "train_seconds" else "p1_vs_iterations"], fontsize=11)
    return fig


def fig_p1_vs_iterations(tables, plan, paper):
    return fig_p1_vs_time(tables, plan, paper, x="step", xlabel="iterations (training batches)")


def _variant_figure(tables, plan, prefix, title, what, with_slide_headline):
    curves = tables["curves"]
    if len(curves):
        var = curves[curves["variant"].fillna("").str.startswith(prefix)]
        if with_slide_headline:
            slide = curves[(curves["method"] == "slide") & (curves["variant"].fillna("") == "")]
            var = pd.concat([var, slide[slide["dataset"].isin(var["dataset"])]])
    else:
        var = curves
    dids = _datasets(var) or [None]
    fig, axes = _panels(len(dids))
    for ax, did in zip(axes, dids):
        if did is None:
            _empty(ax, _why_empty(plan, what))
            continue
        g = var[var["dataset"] == did]
        variants = sorted({v for v in g["variant"].fillna("") if v},
                          key=lambda v: float(v[len(prefix):]))
        style = {v: VARIANT_STYLES[i % len(VARIANT_STYLES)] for i, v in enumerate(variants)}

        def label(method, variant):
            if not variant:
                return method_label(method)
            value = variant[len(prefix):]
            if prefix == "frac":
                return f"{method_label(method)}, {float(value) * 100:g}% of labels sampled"
            return f"{method_label(method)}, batch {value}"

        _plot_curves(ax, g, "train_seconds", group_style=lambda m, v: style.get(v, "-"), label_fn=label,
                     notes=_run_notes(tables.get("summary")))
        _popularity_line(ax, tables.get("summary"), did)
        _time_axis(ax, g["train_seconds"])
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel("training time (s, evaluation excluded)")
        ax.set_ylabel("P@1 (fraction of test points)")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(title, fontsize=11)
    return fig


def fig_sampled_softmax(tables, plan, paper):
    return _variant_figure(tables, plan, "frac", FIGURES["sampled_softmax"], "sampled-softmax runs", True)


def fig_batch_size(tables, plan, paper):
    return _variant_figure(tables, plan, "bs", FIGURES["batch_size"], "batch-size runs", False)


def fig_thread_scaling(tables, plan, paper):
    th = tables["threads"]
    dids = _datasets(th) or [None]
    fig, axes = _panels(len(dids), height=4.2)
    cores = int((plan or {}).get("cores") or 1)
    paper_counts = ((paper or {}).get("thread_scaling") or {}).get("core_counts", [])
    for ax, did in zip(axes, dids):
        if did is None:
            _empty(ax, _why_empty(plan, "thread-scaling benchmarks"))
            continue
        g = th[th["dataset"] == did]
        for method in method_order(g["method"]):
            _thread_line(ax, g[g["method"] == method].sort_values("threads"), method)
        counts = sorted(set(g["threads"].astype(int)))
        ax.set_xticks(counts)
        ax.set_xticklabels([str(t) for t in counts])
        ax.set_xlim(counts[0] - 0.5, counts[-1] + 0.5)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel("threads (cores)")
        ax.set_ylabel("median time per batch (ms, log scale)")
        ax.grid(alpha=0.3, which="both")
        if paper_counts:
            ax.text(0.0, -0.2, f"The paper goes to {max(paper_counts)} cores; this machine gave the pipeline "
                    f"{cores}.\nNumbers by the points: 1-minute load average when the benchmark started.",
                    transform=ax.transAxes, fontsize=7, va="top", color="#555555")
    _legend(fig, axes)
    fig.suptitle(FIGURES["thread_scaling"], fontsize=11)
    return fig


#: Colour of the floor's bars.
FLOOR_COLOR = "#555555"


def fig_memory_floor(tables, plan, paper):
    """Per dataset, SLIDE's benchmark at its most threads: each phase's mean milliseconds per batch
    beside the time its distinct bytes take at the measured stream bandwidth, and their ratio; on the
    gradient phase a tick where the batch's rows alone, read and written back scattered, take, and
    that time beside the whole step's floor in the note."""
    ph = tables.get("phases")
    ph = ph[ph["method"] == "slide"] if ph is not None and len(ph) else None
    dids = _datasets(ph) or [None]
    fig, axes = _panels(len(dids), width=6.0, height=4.4)
    for ax, did in zip(axes, dids):
        if did is None:
            _empty(ax, _why_empty(plan, "SLIDE benchmark with its phases beside the memory floor")
                   + "\n(benchmarks from before 2026-12-05 have none: snakemake --forcerun bench_threads)")
            continue
        g = ph[ph["dataset"] == did]
        threads = int(g["threads"].max())
        g = g[(g["threads"] == threads) & (g["seed"] == g["seed"].min())]
        y = np.arange(len(g))
        ms, floor = 1000 * g["seconds"].to_numpy(float), 1000 * g["floor_seconds"].to_numpy(float)
        ax.barh(y - 0.2, ms, height=0.4, color=method_color("slide"), label="measured (mean ms per batch)")
        ax.barh(y + 0.2, floor, height=0.4, color="white", edgecolor=FLOOR_COLOR, hatch="///",
                label="memory floor (its distinct bytes at stream bandwidth)")
        scattered = 1000 * g["rows_floor_seconds"].to_numpy(float)
        if np.isfinite(scattered).any():
            ax.plot(scattered, y - 0.2, linestyle="none", marker="|", markersize=14, markeredgewidth=2,
                    color=FLOOR_COLOR, label="its rows read and written back scattered, no arithmetic")
        for yi, m, x, sc in zip(y, ms, g["x_of_floor"].to_numpy(float), scattered):
            text = f"{x:.1f}x its floor" if np.isfinite(x) else "no counted bytes"
            text += f",\n{m / sc:.1f}x its rows' own time" if np.isfinite(sc) else ""
            ax.annotate(text, (m, yi - 0.2), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels([p.removeprefix("row_") for p in g["phase"]])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.45 * max(ms.max(), floor.max(), 1e-3))
        ax.set_xlabel("milliseconds per batch")
        ax.set_title(f"{dataset_label(plan, did)}: SLIDE, {threads} thread{'s' * (threads > 1)}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        first = g.iloc[0]
        rows = np.nansum(scattered) if np.isfinite(scattered).any() else None
        note = (f"Mean step, table refreshes included: {ms.sum():.1f} ms against a floor of {floor.sum():.1f} ms "
                f"({ms.sum() / floor.sum():.1f}x); "
                + (f"the batch's output rows alone, scattered, take {rows:.1f} ms ({rows / floor.sum():.1f}x the "
                   "floor), which a step that updates them cannot beat on this machine; " if rows else "")
                + f"stream bandwidth {first['stream_gbps']:.1f} GB/s"
                + (f" (measured {first['stream_measured']})" if isinstance(first["stream_measured"], str) else "")
                + f", 1-minute load {first['load_1m_start']:.1f} at the start.")
        lines = [note] + ([f"{DISTURBED_NOTE}: {first['disturbed']}"] if first["disturbed"] else [])
        ax.text(0.0, -0.16, "\n".join(textwrap.fill(t, 85, break_on_hyphens=False) for t in lines),
                transform=ax.transAxes, fontsize=7, va="top", color="#555555")
    _legend(fig, axes)
    fig.suptitle(FIGURES["memory_floor"], fontsize=11)
    return fig


def _thread_line(ax, m, method) -> None:
    """One method's ms per batch against threads: 10th-90th percentile band, load by each point,
    disturbed points ringed in black."""
    color = method_color(method)
    ax.plot(m["threads"], 1000 * m["median_batch_seconds"], marker="o", color=color, label=method_label(method))
    if m["p10_batch_seconds"].notna().all() and m["p90_batch_seconds"].notna().all():
        ax.fill_between(m["threads"], 1000 * m["p10_batch_seconds"], 1000 * m["p90_batch_seconds"],
                        color=color, alpha=0.15, linewidth=0)
    for r in m.itertuples():
        if np.isfinite(r.load_1m_start):
            ax.annotate(f"{r.load_1m_start:.1f}", (r.threads, 1000 * r.median_batch_seconds), fontsize=6.5,
                        color=color, xytext=(5, 4), textcoords="offset points")
    bad = m[m["disturbed"].astype(bool)]
    if len(bad):
        ax.scatter(bad["threads"], 1000 * bad["median_batch_seconds"], s=110, facecolors="none",
                   edgecolors="black", linewidths=1.4, zorder=5, label=DISTURBED_NOTE)


def _speedup_bars(sp, plan, paper) -> list[tuple]:
    """(label, value, kind, baseline, dataset name, n/a reason) per measured and paper speedup."""
    bars = []
    for r in sp.itertuples():
        name = ((plan or {}).get("datasets", {}).get(r.dataset) or {}).get("name", r.dataset)
        why = "" if np.isfinite(r.speedup) else (r.reason or "no common P@1 level")
        bars.append((f"{r.dataset}\nvs {method_label(r.baseline)}", r.speedup, "measured", r.baseline, name, why))
    for s in (paper or {}).get("speedups", []):
        bars.append((f"{s['dataset']} (paper)\nvs {method_label(s['baseline'])}", s["speedup"], "paper",
                     s["baseline"], s["dataset"], ""))
    return sorted(bars, key=lambda b: (b[4], b[3], b[2] != "measured"))


def _speedup_panel(ax, bars) -> None:
    """Horizontal log-scale bars; rows without a value say "n/a: <reason>" inside the frame."""
    vals = [b[1] for b in bars if np.isfinite(b[1]) and b[1] > 0] or [1.0]
    lo, hi = min(min(vals), 1.0) / 2.0, max(max(vals), 1.0) * 3.0  # room for the value labels
    for i, (_, value, kind, baseline, _, why) in enumerate(bars):
        if np.isfinite(value) and value > 0:
            ax.barh(i, value - lo, left=lo, color=method_color(baseline), alpha=1.0 if kind == "measured" else 0.35,
                    hatch=None if kind == "measured" else "//", edgecolor="black", linewidth=0.5)
            ax.text(value * 1.05, i, f"{value:.2f}x", va="center", fontsize=7)
        else:
            # two lines at most, so a row never runs into its neighbours; the tables hold the details
            ax.text(lo * 1.1, i, textwrap.fill(textwrap.shorten(f"n/a: {why}", 120, placeholder=" ..."), 70),
                    va="center", fontsize=6.5, color="#7a0000",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.9, pad=1))
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.01, 0.03, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 100) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("speedup of SLIDE at equal P@1 (log scale; >1 = SLIDE faster)")
    ax.set_ylim(len(bars) - 0.5, -0.5)
    ax.set_title("solid: measured here; hatched: paper", fontsize=8)
    ax.grid(alpha=0.3, axis="x", which="both")


def _active_bars(summary, paper) -> list[tuple]:
    """(label, % of labels active, measured?) for SLIDE's headline runs and the paper's figures."""
    bars = []
    head = summary[(summary["method"] == "slide") & (summary["variant"].fillna("") == "")] if len(summary) else summary
    for did, g in (head.groupby("dataset") if len(head) else []):
        frac = g["active_fraction"].astype(float).mean()
        if np.isfinite(frac):
            act = g["active_per_sample_mean"].astype(float).mean()
            bars.append((f"{did}\n(measured: {act:,.0f} of {act / frac:,.0f})", 100 * frac, True))
    for name, a in ((paper or {}).get("active_neurons") or {}).items():
        bars.append((f"{name} (paper)\n(~{a['per_sample']:,} of {a['labels']:,})",
                     100 * a["per_sample"] / a["labels"], False))
    return bars


def _active_panel(ax, bars) -> None:
    for i, (_, v, measured) in enumerate(bars):
        ax.barh(i, v, color=method_color("slide"), alpha=1.0 if measured else 0.35,
                hatch=None if measured else "//", edgecolor="black", linewidth=0.5)
        ax.text(v, i, f" {v:.2f}%", va="center", fontsize=7)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.set_xlim(0, max(b[1] for b in bars) * 1.25)  # room for the value labels
    ax.set_ylim(len(bars) - 0.5, -0.5)
    ax.set_xlabel("active output neurons per training sample (% of labels)")
    ax.grid(alpha=0.3, axis="x")


def fig_headline(tables, plan, paper):
    bars, active = _speedup_bars(tables["speedups"], plan, paper), _active_bars(tables["summary"], paper)
    height = max(4.2, 0.42 * max(len(bars), len(active)) + 1.6)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1.5, 1]})
    if bars:
        _speedup_panel(ax1, bars)
    else:
        _empty(ax1, "no speedup could be computed\n(SLIDE and a baseline must both complete)")
    if active:
        _active_panel(ax2, active)
    else:
        _empty(ax2, "no SLIDE run reported active neurons")
    fig.suptitle(FIGURES["headline"], fontsize=11)
    fig.tight_layout()
    return fig


def fig_jobs(tables, plan, paper):
    jobs = tables["jobs"]
    if not len(jobs):
        fig, axes = _panels(1)
        _empty(axes[0], "no benchmark records (no timed job ran)")
        return fig
    jobs = jobs.sort_values(["kind", "dataset", "method", "variant", "seed"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.3 * len(jobs) + 1.2)))
    y = np.arange(len(jobs))
    ax.barh(y, jobs["seconds"], color=[method_color(m) for m in jobs["method"]])
    for i, r in enumerate(jobs.itertuples()):
        ax.text(r.seconds, i, f" {r.seconds:,.0f} s, {r.max_rss_mb:,.0f} MB", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(jobs["job"], fontsize=8)
    ax.set_ylim(len(jobs) - 0.5, -0.5)
    ax.set_xlim(0, float(np.nanmax(jobs["seconds"])) * 1.35 if jobs["seconds"].notna().any() else 1)
    ax.set_xlabel("job wall-clock time (s; start-up, data loading and evaluation included); "
                  "label: time, peak memory", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(FIGURES["jobs"], fontsize=11)
    fig.tight_layout()
    return fig


#: Columns whose empty value ("" in the tables, NaN once read back) means "none".
TEXT_COLUMNS = {"variant", "reason", "disturbed"}

_DRAW = {
    "p1_vs_time": fig_p1_vs_time, "p1_vs_iterations": fig_p1_vs_iterations,
    "sampled_softmax": fig_sampled_softmax, "batch_size": fig_batch_size,
    "thread_scaling": fig_thread_scaling, "memory_floor": fig_memory_floor, "headline": fig_headline,
    "jobs": fig_jobs,
}
#: The aggregated tables the figures read (``table`` is the report's alone).
TABLES_DRAWN = ("summary", "curves", "threads", "phases", "speedups", "jobs")


def make_figure(name, tables, plan, paper, png, svg=None) -> None:
    if name not in _DRAW:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(_DRAW)}")
    fig = _DRAW[name](tables, plan, paper)
    try:
        save_figure(fig, png, svg)
    finally:
        plt.close(fig)


def load_tables(paths: dict) -> dict:
    """Read the aggregated CSV tables (``summary``, ``curves``, ...) into DataFrames."""
    out = {}
    for name, path in paths.items():
        df = pd.read_csv(path)
        for col in TEXT_COLUMNS & set(df.columns):
            df[col] = df[col].astype(object).fillna("").astype(str)
        out[name] = df
    return out


__all__ = ["FIGURES", "TABLES_DRAWN", "make_figure", "load_tables"]
