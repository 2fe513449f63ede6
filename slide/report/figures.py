"""The report's figures (matplotlib, Agg backend); each is saved as PNG and SVG, atomically.

``make_figure(name, tables, plan, paper, png, svg)`` draws one of :data:`FIGURES` from the
aggregated tables (``results/*.csv`` as DataFrames), the plan (``results/skipped.json``) and the
paper's numbers (``workflow/resources/paper_results.yaml``). A figure without data still renders,
with a panel that says why.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.ticker  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import save_figure  # noqa: E402
from .style import VARIANT_STYLES, method_color, method_label, method_order  # noqa: E402

FIGURES = {
    "p1_vs_time": "P@1 against training time (paper Fig. 5)",
    "p1_vs_iterations": "P@1 against iterations (paper Fig. 6)",
    "sampled_softmax": "Sampled softmax at several sample fractions beside SLIDE (paper Fig. 7)",
    "batch_size": "Batch size 64/128/256 (paper Fig. 8)",
    "thread_scaling": "Time per batch against threads (paper Fig. 9)",
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


def _plot_curves(ax, curves, x, group_style=None, label_fn=None):
    """One line per run; runs of one (method, variant) share colour, style and legend entry."""
    labelled = set()
    keys = ["method", "variant", "seed"]
    order = {m: i for i, m in enumerate(method_order(curves["method"]))}
    groups = sorted(curves.groupby(keys), key=lambda kv: (order[kv[0][0]], str(kv[0][1]), kv[0][2]))
    for (method, variant, seed), g in groups:
        g = g.sort_values("step")
        style = group_style(method, variant) if group_style else "-"
        label = label_fn(method, variant) if label_fn else method_label(method)
        failed = (g["status"] == "failed").any()
        if failed:
            label += " (failed)"
        show = label if label not in labelled else None
        labelled.add(label)
        ax.plot(g[x], g["p_at_1"], color=method_color(method), linestyle=style, marker="o", markersize=2.5,
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
        _plot_curves(ax, g, x)
        if x == "train_seconds":
            _time_axis(ax, g[x])
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("P@1 (fraction of test points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        name = ((plan or {}).get("datasets", {}).get(did) or {}).get("name", did)
        note = _paper_note(paper, name) if x == "train_seconds" else ""
        if note:  # below the axes, so it never hides a curve
            ax.text(0.0, -0.2, note, transform=ax.transAxes, fontsize=7, va="top",
                    bbox=dict(boxstyle="round", facecolor="#f7f7f7", edgecolor="#bbbbbb"))
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

        _plot_curves(ax, g, "train_seconds", group_style=lambda m, v: style.get(v, "-"), label_fn=label)
        _time_axis(ax, g["train_seconds"])
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel("training time (s, evaluation excluded)")
        ax.set_ylabel("P@1 (fraction of test points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.suptitle(title, fontsize=11)
    return fig


def fig_sampled_softmax(tables, plan, paper):
    return _variant_figure(tables, plan, "frac", FIGURES["sampled_softmax"], "sampled-softmax runs", True)


def fig_batch_size(tables, plan, paper):
    return _variant_figure(tables, plan, "bs", FIGURES["batch_size"], "batch-size runs", False)


def fig_thread_scaling(tables, plan, paper):
    th = tables["threads"]
    dids = _datasets(th) or [None]
    fig, axes = _panels(len(dids))
    cores = int((plan or {}).get("cores") or 1)
    paper_counts = ((paper or {}).get("thread_scaling") or {}).get("core_counts", [])
    uncovered = [c for c in paper_counts if c > cores]
    for ax, did in zip(axes, dids):
        if did is None:
            _empty(ax, _why_empty(plan, "thread-scaling benchmarks"))
            continue
        g = th[th["dataset"] == did]
        for method in method_order(g["method"]):
            m = g[g["method"] == method].sort_values("threads")
            ax.plot(m["threads"], m["median_batch_seconds"], marker="o", color=method_color(method),
                    label=method_label(method))
            if m["p10_batch_seconds"].notna().all() and m["p90_batch_seconds"].notna().all():
                ax.fill_between(m["threads"], m["p10_batch_seconds"], m["p90_batch_seconds"],
                                color=method_color(method), alpha=0.15, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted(set(g["threads"].astype(int)) | set(uncovered))
        for c in uncovered:
            ax.axvline(c, color="#999999", linestyle=":", linewidth=1)
        if uncovered:
            ax.text(0.98, 0.02, f"paper's {', '.join(map(str, uncovered))} cores:\nnot covered "
                    f"(this machine has {cores})", transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=7, color="#555555")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_title(dataset_label(plan, did), fontsize=10)
        ax.set_xlabel("threads (cores)")
        ax.set_ylabel("median time per batch (s)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(FIGURES["thread_scaling"], fontsize=11)
    return fig


def fig_headline(tables, plan, paper):
    sp = tables["speedups"]
    summary = tables["summary"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    # (a) speedups: measured bars, paper values as hatched bars
    bars = []
    for r in sp.itertuples():
        name = ((plan or {}).get("datasets", {}).get(r.dataset) or {}).get("name", r.dataset)
        bars.append((f"{r.dataset}\nvs {method_label(r.baseline)}", r.speedup, "measured", r.baseline, name))
    measured_pairs = {(b[4], b[3]) for b in bars}
    for s in (paper or {}).get("speedups", []):
        bars.append((f"{s['dataset']} (paper)\nvs {method_label(s['baseline'])}", s["speedup"], "paper",
                     s["baseline"], s["dataset"]))
    bars.sort(key=lambda b: (b[4], b[3], b[2] != "measured"))
    if bars:
        y = np.arange(len(bars))
        for i, (label, value, kind, baseline, _) in enumerate(bars):
            v = value if value and np.isfinite(value) else 0
            ax1.barh(i, v, color=method_color(baseline), alpha=1.0 if kind == "measured" else 0.35,
                     hatch=None if kind == "measured" else "//", edgecolor="black", linewidth=0.5)
            ax1.text(v, i, f" {value:.2f}x" if value and np.isfinite(value) else " n/a", va="center", fontsize=7)
        ax1.set_yticks(y)
        ax1.set_yticklabels([b[0] for b in bars], fontsize=6.5)
        ax1.axvline(1, color="black", linewidth=0.8)
        ax1.set_xscale("log")
        vals = [b[1] for b in bars if b[1] and np.isfinite(b[1]) and b[1] > 0] or [1.0]
        lo, hi = min(min(vals), 1.0) / 1.6, max(max(vals), 1.0) * 1.6
        ticks = [t for t in (0.01, 0.03, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 100) if lo <= t <= hi]
        ax1.set_xlim(lo, hi)
        ax1.set_xticks(ticks)
        ax1.set_xticklabels([f"{t:g}x" for t in ticks])
        ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax1.set_xlabel("speedup of SLIDE at equal P@1 (x, log scale; >1 = SLIDE faster)")
        ax1.invert_yaxis()
        missing = [b for b in bars if b[2] == "paper" and (b[4], b[3]) not in measured_pairs]
        if missing:
            ax1.set_title("hatched: paper; solid: measured here", fontsize=8)
    else:
        _empty(ax1, "no speedup could be computed\n(SLIDE and a baseline must both complete)")
    ax1.grid(alpha=0.3, axis="x", which="both")
    # (b) active output neurons per sample, as % of the labels
    labels, values, colors, alphas = [], [], [], []
    head = summary[(summary["method"] == "slide") & (summary["variant"].fillna("") == "")] if len(summary) else summary
    for did, g in (head.groupby("dataset") if len(head) else []):
        frac = g["active_fraction"].astype(float).mean()
        act = g["active_per_sample_mean"].astype(float).mean()
        if np.isfinite(frac):
            labels.append(f"{did}\n(measured: {act:.0f} of {g['num_labels'].iloc[0]:.0f})")
            values.append(100 * frac)
            colors.append(method_color("slide"))
            alphas.append(1.0)
    for name, a in ((paper or {}).get("active_neurons") or {}).items():
        labels.append(f"{name} (paper)\n(~{a['per_sample']:,} of {a['labels']:,})")
        values.append(100 * a["per_sample"] / a["labels"])
        colors.append(method_color("slide"))
        alphas.append(0.35)
    if labels:
        for i, (v, c, a) in enumerate(zip(values, colors, alphas)):
            ax2.barh(i, v, color=c, alpha=a, hatch=None if a == 1.0 else "//", edgecolor="black", linewidth=0.5)
            ax2.text(v, i, f" {v:.2f}%", va="center", fontsize=7)
        ax2.set_yticks(range(len(labels)))
        ax2.set_yticklabels(labels, fontsize=6.5)
        ax2.invert_yaxis()
        ax2.set_xlabel("active output neurons per training sample (% of labels)")
    else:
        _empty(ax2, "no SLIDE run reported active neurons")
    ax2.grid(alpha=0.3, axis="x")
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
    h = max(3.0, 0.22 * len(jobs) + 1.2)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, h), sharey=True)
    y = np.arange(len(jobs))
    colors = [method_color(m) for m in jobs["method"]]
    ax1.barh(y, jobs["seconds"], color=colors)
    ax2.barh(y, jobs["max_rss_mb"], color=colors)
    ax1.set_yticks(y)
    ax1.set_yticklabels(jobs["job"], fontsize=6)
    ax1.invert_yaxis()
    ax1.set_xlabel("job wall-clock time (s, start-up and evaluation included)")
    ax2.set_xlabel("job peak resident memory (MB)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(FIGURES["jobs"], fontsize=11)
    fig.tight_layout()
    return fig


_DRAW = {
    "p1_vs_time": fig_p1_vs_time, "p1_vs_iterations": fig_p1_vs_iterations,
    "sampled_softmax": fig_sampled_softmax, "batch_size": fig_batch_size,
    "thread_scaling": fig_thread_scaling, "headline": fig_headline, "jobs": fig_jobs,
}


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
        if "variant" in df.columns:
            df["variant"] = df["variant"].fillna("").astype(str)
        out[name] = df
    return out


__all__ = ["FIGURES", "make_figure", "load_tables"]
