"""Aggregation, figures and the HTML report on hand-made runs (no training, no Snakemake).

The fixture writes schema-valid run.json / curve.csv files with slide.runs.RunRecorder: SLIDE and
TF full softmax complete, TF sampled softmax diverges (status: failed), plus experiment variants,
thread-scaling benchmarks and Snakemake benchmark records. The last test opens the report in
headless Chromium and checks that every image decodes (skipped where Chromium is absent).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

from slide.report.aggregate import (CURVES_COLUMNS, PHASES_COLUMNS, SPEEDUP_COLUMNS, SUMMARY_COLUMNS,
                                    TABLE_COLUMNS, TABLE_NAMES, aggregate, end_of_run, machine_label, parse_run_path, time_to_reach)
from slide.contention import DISTURBED_NOTE
from slide.report import figures as figures_mod
from slide.report.figures import FIGURES, load_tables, make_figure
from slide.report.html import MISSING, build_report, claims_table
from slide.report.io import final_outputs, plan_path, report_path, tables_path
from slide.runs import RunRecorder

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "workflow" / "resources" / "paper_results.yaml").read_text())
DID = "amazon-670k-synth0.01"
GPU_REASON = "no GPU: nvidia-smi not found"


def _write_run(root, method, points, *, variant="", status="completed", reason=None, batch=128,
               active=None, test_points=500, popularity=0.05, **record):
    """A run.json and curve.csv; ``record`` adds run.json keys (contention figures, ``best``, ...)."""
    parts = ["results", DID, method] + ([variant] if variant else []) + ["seed0"]
    out = root.joinpath(*parts)
    rec = RunRecorder(out, method=method, dataset=DID, seed=0, threads=2,
                      hyperparameters={"batch_size": batch, "lr": 0.001})
    for i, (t, p1) in enumerate(points, start=1):
        full = i == len(points)
        rec.add_point(step=10 * i, epoch=round(i / len(points), 4), samples=10 * i * batch, train_seconds=float(t),
                      wall_seconds=float(t) * 1.3, cpu_seconds=float(t) * 1.9, loss=1.0 / i, p_at_1=p1,
                      p_at_3=p1 * 0.8, p_at_5=p1 * 0.6, eval_points=test_points if full else 100)
    last = points[-1][1] if points else 0.0
    final = None if status == "failed" else {"p_at_1": last, "p_at_3": last * 0.8, "p_at_5": last * 0.6,
                                             "eval_points": test_points}
    rec.finish(status=status, reason=reason, final=final, train_seconds=float(points[-1][0]),
               median_batch_seconds=0.05, extra=dict(steps=10 * len(points), epochs=1.0,
                                                     samples=10 * len(points) * batch, eval_seconds=0.5,
                                                     active_per_sample_mean=active, method_stats={},
                                                     popularity={"p_at_1": popularity}, **record))
    return out / "run.json"


def _write_bench(root, method, threads, median, **record):
    out = root / "results" / DID / method / f"threads{threads}" / "seed0" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "method": method, "batches": 5, "batch_size": 128, "threads": threads, "median_batch_seconds": median,
        "p10_batch_seconds": median * 0.9, "p90_batch_seconds": median * 1.1, "samples_per_second": 128 / median,
        "active_per_sample_mean": 50.0 if method == "slide" else None, "rehash_seconds": None,
        "peak_rss_mb": 150.0, "like": "amazon-670k", "scale": 0.01, "features": 1359, "labels": 6701, **record}))
    return out


def _write_benchmark_record(root, key, seconds):
    out = root / "benchmarks" / f"{key}.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                   f"{seconds}\t0:00:{int(seconds):02d}\t321.5\t900.1\t300.0\t310.0\t1.0\t2.0\t150.0\t{seconds * 1.8}\n")
    return out


PLAN = {
    "preset": "tiny", "cores": 2, "thread_counts": [1, 2],
    "gpu": {"available": False, "reason": GPU_REASON},
    "datasets": {DID: {"name": "amazon-670k", "label": "Amazon-670K (synthetic, scale 0.01)", "source": "synth",
                       "scale": 0.01, "target_p_at_1": None, "labels": 1000}},
    "skipped": [{"dataset": DID, "method": "tf-full-gpu", "variant": None, "seed": 0, "reason": GPU_REASON}],
}


def _phase_floor(median, gbps=20.0):
    """A bench's ``stream_gbps`` and ``phase_floor``: three phases of a SLIDE step, one without counted bytes."""
    split = {"row_select": (0.2, 0.0), "row_grads": (0.7, 4e6), "rehash": (0.1, 2e5)}
    floor = {}
    for phase, (share, nbytes) in split.items():
        s, f = share * median, nbytes / (gbps * 1e9)
        floor[phase] = {"seconds": s, "floor_bytes": nbytes, "floor_seconds": f, "x_of_floor": s / f if nbytes else None}
    # the batch's output rows rewritten scattered in half the gradient phase's time
    return {"stream_gbps": gbps, "stream_measured": "2026-12-05T06:38:23Z", "phase_floor": floor,
            "rows_floor": {"rows": 100, "seconds": 0.35 * median}}


@pytest.fixture()
def fixture_runs(tmp_path):
    runs = [
        # SLIDE reaches 0.55 at 4 s, TF full softmax at 8 s: speedup 2 at the target min(0.6, 0.55)
        _write_run(tmp_path, "slide", [(1, 0.1), (2, 0.3), (3, 0.5), (4, 0.6)], active=50.0),
        _write_run(tmp_path, "tf-full-cpu", [(2, 0.1), (4, 0.2), (6, 0.4), (8, 0.55)], active=1000.0),
        _write_run(tmp_path, "tf-sampled-cpu", [(1, 0.05), (2, 0.1)], status="failed",
                   reason="loss became nan at step 21"),
        _write_run(tmp_path, "slide", [(1, 0.2), (2, 0.4)], variant="bs64", batch=64, active=50.0),
        _write_run(tmp_path, "slide", [(1, 0.1), (2, 0.2)], variant="bs256", batch=256, active=50.0),
        _write_run(tmp_path, "tf-sampled-cpu", [(1, 0.1), (2, 0.15)], variant="frac0.01"),
    ]
    bench = [_write_bench(tmp_path, m, t, med, **(_phase_floor(med) if m == "slide" else {}))
             for m, base in (("slide", 0.02), ("tf-full-cpu", 0.03)) for t, med in ((1, base), (2, base / 1.7))]
    records = [_write_benchmark_record(tmp_path, "/".join(p.parent.relative_to(tmp_path / "results").parts), 7.5)
               for p in runs + bench]
    return tmp_path, runs, bench, records


def _aggregate(root, runs, bench, records):
    out = {k: root / "results" / f"{k}.csv" for k in TABLE_NAMES}
    tables = aggregate(runs, bench, records, PLAN, out)
    return tables, out


def test_parse_run_path_and_time_to_reach():
    assert parse_run_path("results/d/slide/seed3/run.json") == dict(dataset="d", method="slide", variant="",
                                                                    seed=3)
    assert parse_run_path("x/results/d/tf-full-cpu/bs64/seed0/run.json")["variant"] == "bs64"
    with pytest.raises(ValueError):
        parse_run_path("results/d/run.json")
    curve = pd.DataFrame({"train_seconds": [1.0, 2.0, 3.0], "p_at_1": [0.1, 0.5, 0.4]})
    assert time_to_reach(curve, 0.5) == 2.0
    assert time_to_reach(curve, 0.05) == 1.0
    assert math.isnan(time_to_reach(curve, 0.6))


def test_aggregate_tables(fixture_runs):
    root, runs, bench, records = fixture_runs
    tables, out = _aggregate(root, runs, bench, records)
    summary = pd.read_csv(out["summary"])
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(runs)
    assert list(pd.read_csv(out["curves"]).columns) == CURVES_COLUMNS
    assert list(pd.read_csv(out["table"]).columns) == TABLE_COLUMNS
    failed = summary[summary["status"] == "failed"]
    assert failed["method"].tolist() == ["tf-sampled-cpu"] and "nan" in failed["reason"].iloc[0]
    # speedups: SLIDE against the completed headline baseline only (the failed one is left out)
    sp = pd.read_csv(out["speedups"])
    assert list(sp.columns) == SPEEDUP_COLUMNS
    assert sp["baseline"].tolist() == ["tf-full-cpu"]
    row = sp.iloc[0]
    assert row["target_p_at_1"] == pytest.approx(0.55)
    assert row["slide_seconds"] == 4 and row["baseline_seconds"] == 8 and row["speedup"] == pytest.approx(2.0)
    # table: target = lowest best P@1 of the completed headline runs = 0.55
    table = pd.read_csv(out["table"])
    slide = table[table["method"] == "slide"].iloc[0]
    assert slide["target_p_at_1"] == pytest.approx(0.55) and slide["time_to_target_seconds"] == 4
    assert slide["active_fraction"] == pytest.approx(0.05)
    sampled = table[table["method"] == "tf-sampled-cpu"].iloc[0]
    assert sampled["failed"] == 1 and sampled["completed"] == 0
    threads = pd.read_csv(out["threads"])
    assert sorted(threads["threads"].unique()) == [1, 2] and len(threads) == 4
    phases = pd.read_csv(out["phases"])
    assert list(phases.columns) == PHASES_COLUMNS
    # SLIDE's two benchmarks, three phases each in the order timed; TF's have none
    assert len(phases) == 6 and set(phases["method"]) == {"slide"}
    two = phases[phases["threads"] == 2]
    assert two["phase"].tolist() == ["row_select", "row_grads", "rehash"]
    assert two["seconds"].tolist() == pytest.approx([0.2 * 0.02 / 1.7, 0.7 * 0.02 / 1.7, 0.1 * 0.02 / 1.7])
    assert math.isnan(two["x_of_floor"].iloc[0]) and two["x_of_floor"].iloc[1] == pytest.approx(0.7 * 0.02 / 1.7 / 2e-4)
    # the scattered rows' time on the gradient phase alone
    assert two["rows_floor_seconds"].isna().tolist() == [True, False, True]
    assert two["rows_floor_seconds"].iloc[1] == pytest.approx(0.35 * 0.02 / 1.7)
    jobs = pd.read_csv(out["jobs"])
    assert len(jobs) == len(records) and set(jobs["kind"]) == {"train", "bench"}
    assert (jobs["max_rss_mb"] == 321.5).all()
    # atomic writes leave no temporary files behind
    assert not [p for p in (root / "results").iterdir() if ".tmp" in p.name]


def test_no_speedup_below_the_popularity_baseline(tmp_path):
    """Reaching a P@1 that ranking the most frequent labels first also gets is no comparison."""
    runs = [_write_run(tmp_path, "slide", [(1, 0.6), (2, 0.675)], popularity=0.67),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.66), (4, 0.75)], popularity=0.67)]
    tables, out = _aggregate(tmp_path, runs, [], [])
    row = pd.read_csv(out["speedups"]).iloc[0]
    assert math.isnan(row["speedup"]) and row["popularity_p_at_1"] == pytest.approx(0.67)
    assert pd.read_csv(out["summary"])["popularity_p_at_1"].tolist() == [0.67, 0.67]


def test_no_runs_still_writes_every_table(tmp_path):
    out = {k: tmp_path / f"{k}.csv" for k in TABLE_NAMES}
    aggregate([], [], [], {"skipped": [], "datasets": {}}, out)
    assert list(pd.read_csv(out["summary"]).columns) == SUMMARY_COLUMNS
    tables = load_tables(out)
    for name in FIGURES:
        make_figure(name, tables, {"skipped": [{"reason": "no GPU"}], "cores": 2}, PAPER,
                    tmp_path / f"{name}.png", tmp_path / f"{name}.svg")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def _build_all(root, runs, bench, records):
    _, out = _aggregate(root, runs, bench, records)
    tables = load_tables(out)
    figdir = root / "reports" / "figures"
    figures = {}
    for name in FIGURES:
        png, svg = figdir / f"{name}.png", figdir / f"{name}.svg"
        make_figure(name, tables, PLAN, PAPER, png, svg)
        figures[name] = png
    html_path = root / "reports" / "report.html"
    experiments = {k: True for k in ("time_curves", "iteration_curves", "sampled_softmax", "batch_size",
                                     "thread_scaling", "table")}
    build_report(tables, PLAN, PAPER, figures, html_path, "Test report", experiments=experiments)
    return figures, html_path


def test_figures_and_report(fixture_runs):
    figures, html_path = _build_all(*fixture_runs)
    for name, png in figures.items():
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        svg = png.with_suffix(".svg")
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg"), name
    text = html_path.read_text()
    # self-contained: every figure embedded, nothing loaded from elsewhere
    for name in FIGURES:
        assert f'alt="{name}"' in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(FIGURES)
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)
    # verdict, claims beside measurements, machine, notes on what could not run
    assert "Verdict: SLIDE beat TensorFlow" in text and "2x faster" in text
    assert "2.7x" in text and "Amazon" in text  # the paper's TF-GPU claim
    assert GPU_REASON in text
    assert "loss became nan at step 21" in text and "failed" in text
    assert "Core counts not covered" in text and "8, 16, 32, 44" in text
    assert "CPU" in text and "numpy version" in text


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)
CHECK_JS = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt; });
  var d = document.createElement('pre'); d.id = 'imgcheck';
  d.textContent = JSON.stringify({images: imgs.length, bad: bad});
  document.body.appendChild(d);
});
</script>"""


def chromium_image_check(html_path: Path, workdir: Path) -> dict:
    """Open ``html_path`` in headless Chromium; return {images, bad} as seen by the page."""
    probe = workdir / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", CHECK_JS + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={workdir / 'profile'}", "--run-all-compositor-stages-before-draw",
           "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.S)
    assert m, f"no image check in Chromium's DOM (rc {res.returncode}): {res.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install -y chromium)")
def test_report_opens_in_headless_chromium(fixture_runs, tmp_path):
    _, html_path = _build_all(*fixture_runs)
    check = chromium_image_check(html_path, tmp_path)
    assert check["images"] == len(FIGURES)
    assert check["bad"] == []


BUSY = {"other_cpu_share": 0.45, "load_average_start": [2.9, 2.1, 1.4], "load_average_end": [3.1, 2.5, 1.6],
        "cpu_seconds": 5.0, "cpu_utilisation": 0.55, "compile_seconds": 3.2}
QUIET = {"other_cpu_share": 0.02, "load_average_start": [0.3, 0.2, 0.1], "load_average_end": [1.9, 1.0, 0.5],
         "cpu_seconds": 7.5, "cpu_utilisation": 0.94, "compile_seconds": 3.0}


def _first_sentence(html_text: str) -> str:
    verdict = re.search(r"<div class='verdict'><p>(.*?)</p>", html_text, re.S).group(1)
    return re.sub(r"<[^>]+>", "", verdict).split(". ")[0]


def _report_text(root, runs, bench=()):
    _, out = _aggregate(root, runs, list(bench), [])
    tables = load_tables(out)
    return tables, build_report(tables, PLAN, PAPER, {}, root / "report.html", "t")


def test_contention_figures_reach_the_tables(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **QUIET),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)])]  # an old record: no figures
    bench = [_write_bench(tmp_path, "slide", 2, 0.02, **BUSY)]
    tables, _ = _aggregate(tmp_path, runs, bench, [])
    slide, tf = (tables["summary"].set_index("method").loc[m] for m in ("slide", "tf-full-cpu"))
    assert slide["compile_seconds"] == 3.0 and slide["other_cpu_share"] == 0.02
    assert slide["load_1m_start"] == 0.3 and slide["load_1m_end"] == 1.9 and slide["disturbed"] == ""
    assert math.isnan(tf["cpu_utilisation"]) and tf["disturbed"] == ""  # unknown reads as quiet
    th = tables["threads"].iloc[0]
    assert th["cpu_utilisation"] == 0.55 and "45%" in th["disturbed"]
    assert tables["curves"]["cpu_seconds"].notna().all()


def test_disturbed_pair_gives_no_speedup_and_the_verdict_says_busy(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **BUSY),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)], **QUIET)]
    tables, text = _report_text(tmp_path, runs)
    row = tables["speedups"].iloc[0]
    assert math.isnan(row["speedup"]) and math.isnan(row["slide_seconds"])
    assert row["reason"].startswith(DISTURBED_NOTE) and "45%" in row["reason"]
    first = _first_sentence(text)
    assert "machine was busy" in first and "SLIDE (CPU)" in first and "45%" in first
    assert "beat" not in first
    assert f"n/a: {html.escape(DISTURBED_NOTE)}" in text
    assert "Verdict: SLIDE beat" not in text and "Verdict: SLIDE did not beat" not in text


def test_quiet_pair_declares_a_winner(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **QUIET),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)], **QUIET)]
    tables, text = _report_text(tmp_path, runs)
    assert tables["speedups"].iloc[0]["speedup"] == pytest.approx(2.0)
    assert _first_sentence(text).startswith("Verdict: SLIDE beat TensorFlow's full softmax")


def test_run_at_popularity_did_not_learn(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.05), (2, 0.055)], popularity=0.05),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)], popularity=0.05)]
    tables, text = _report_text(tmp_path, runs)
    row = tables["speedups"].iloc[0]
    assert math.isnan(row["speedup"])
    assert row["reason"] == "SLIDE (CPU) did not learn (stayed at label popularity, P@1 0.050)"
    assert not tables["summary"].set_index("method").loc["slide", "learned"]
    assert tables["table"]["target_p_at_1"].tolist() == [0.55, 0.55]  # set by the run that learned
    assert "did not learn (stayed at label popularity" in text
    assert "no comparison" not in text and "most-frequent-labels baseline" not in text
    assert "n/a: SLIDE (CPU) did not learn" in text
    # SLIDE never reached the accuracy TensorFlow reached: a comparison it lost, not an undecided one
    first = _first_sentence(text)
    assert first.startswith("Verdict: SLIDE did not beat TensorFlow's full softmax"), first
    assert "SLIDE did not learn while TF full softmax (CPU) reached P@1 0.550" in text


def test_nobody_learned_is_undecided(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.05), (2, 0.055)], popularity=0.05),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.05), (4, 0.052)], popularity=0.05)]
    _, text = _report_text(tmp_path, runs)
    assert _first_sentence(text).startswith("Verdict: undecided")


def _texts_inside(fig, ax) -> bool:
    fig.canvas.draw()
    frame = ax.get_window_extent()
    return all(frame.x0 - 1 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= frame.x1 + 1
               for t in ax.texts)


def test_headline_figure_gives_na_rows_a_reason_inside_the_frame(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)]),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)], **BUSY),
            _write_run(tmp_path, "tf-sampled-cpu", [(2, 0.05), (4, 0.052)])]
    _, out = _aggregate(tmp_path, runs, [], [])
    fig = figures_mod.fig_headline(load_tables(out), PLAN, PAPER)
    ax = fig.axes[0]
    na = {t.get_text().replace("\n", " ") for t in ax.texts if t.get_text().startswith("n/a")}
    assert "n/a: TF sampled softmax (CPU) did not learn (stayed at label popularity, P@1 0.050)" in na
    busy = na - {"n/a: TF sampled softmax (CPU) did not learn (stayed at label popularity, P@1 0.050)"}
    assert len(busy) == 1
    assert busy.pop().startswith(f"n/a: {DISTURBED_NOTE} (TF full softmax (CPU) seed0: other processes used 45%")
    assert _texts_inside(fig, ax) and _texts_inside(fig, fig.axes[1])
    assert any(t.get_text() == "2.70x" for t in ax.texts)  # the paper's bars keep their values
    assert {round(p.get_x() + p.get_width(), 6) for p in ax.patches} == {1.8, 2.7, 8.0}  # bars end at the value
    plt.close(fig)


def test_every_p1_plot_draws_the_popularity_line(fixture_runs):
    root, runs, bench, records = fixture_runs
    _, out = _aggregate(root, runs, bench, records)
    tables = load_tables(out)
    for name in ("p1_vs_time", "p1_vs_iterations", "sampled_softmax", "batch_size"):
        fig = figures_mod._DRAW[name](tables, PLAN, PAPER)
        lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("label popularity")]
        assert len(lines) == 1, name
        assert list(lines[0].get_ydata()) == pytest.approx([0.05, 0.05]), name
        assert "label popularity (most frequent labels first)" in [t.get_text() for t in fig.legends[0].get_texts()]
        plt.close(fig)
    svg = root / "t.svg"
    make_figure("p1_vs_time", tables, PLAN, PAPER, root / "t.png", svg)
    assert "label popularity: P@1 0.050" in svg.read_text()


def test_thread_scaling_in_ms_over_measured_counts_with_load_and_disturbed_marks(tmp_path):
    bench = [_write_bench(tmp_path, "slide", 1, 0.02, **QUIET), _write_bench(tmp_path, "slide", 2, 0.03, **BUSY)]
    _, out = _aggregate(tmp_path, [], bench, [])
    fig = figures_mod.fig_thread_scaling(load_tables(out), PLAN, PAPER)
    ax = fig.axes[0]
    assert "(ms" in ax.get_ylabel()
    assert list(ax.get_xticks()) == [1, 2] and ax.get_xlim()[1] < 3
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([20, 30])
    assert {t.get_text() for t in ax.texts} >= {"0.3", "2.9"}  # 1-minute load by each point
    assert any("44 cores" in t.get_text() for t in ax.texts)
    ringed = [c for c in ax.collections if DISTURBED_NOTE in str(c.get_label())]
    assert len(ringed) == 1 and ringed[0].get_offsets().tolist() == [[2, 30]]
    plt.close(fig)


def test_memory_floor_figure_sets_each_phase_beside_its_floor(tmp_path):
    bench = [_write_bench(tmp_path, "slide", 1, 0.02, **QUIET, **_phase_floor(0.02)),
             _write_bench(tmp_path, "slide", 2, 0.01, **BUSY, **_phase_floor(0.01))]
    _, out = _aggregate(tmp_path, [], bench, [])
    fig = figures_mod.fig_memory_floor(load_tables(out), PLAN, PAPER)
    ax = fig.axes[0]
    assert "2 threads" in ax.get_title()  # the benchmark at the most threads
    assert [t.get_text() for t in ax.get_yticklabels()] == ["select", "grads", "rehash"]
    measured, floor = ax.containers
    assert [b.get_width() for b in measured] == pytest.approx([2.0, 7.0, 1.0])
    assert [b.get_width() for b in floor] == pytest.approx([0.0, 0.2, 0.01])
    labels = {t.get_text() for t in ax.texts}
    assert {"no counted bytes", "35.0x its floor,\n2.0x its rows' own time", "100.0x its floor"} <= labels
    labels = {" ".join(t.split()) for t in labels}  # the note, unwrapped
    tick, = ax.lines  # on the gradient phase only
    xs = list(tick.get_xdata())
    assert math.isnan(xs[0]) and math.isnan(xs[2]) and xs[1] == pytest.approx(3.5)
    assert any(DISTURBED_NOTE in t and "1-minute load 2.9" in t for t in labels)  # the benchmark's contention
    assert any("20.0 GB/s (measured 2026-12-05T06:38:23Z)" in t for t in labels)  # which figure the floor took
    # the rows alone (3.5 ms) against the whole step's floor (0.21 ms)
    assert any("rows alone, scattered, take 3.5 ms (16.7x the floor" in t for t in labels)
    plt.close(fig)
    empty = figures_mod.fig_memory_floor(load_tables(_aggregate(tmp_path / "none", [], [], [])[1]), PLAN, PAPER)
    assert any("no SLIDE benchmark" in t.get_text() for t in empty.axes[0].texts)
    plt.close(empty)


def test_tables_show_best_epoch_active_fraction_and_the_time_cap(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6), (3, 0.5)], active=50.0, active_fraction=0.05,
                       best={"p_at_1": 0.6, "epoch": 0.6667, "step": 20}, max_train_seconds_cut=True),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)])]  # no `best`: from the curve
    tables, text = _report_text(tmp_path, runs)
    s = tables["summary"].set_index("method")
    assert s.loc["slide", "best_epoch"] == pytest.approx(0.6667) and s.loc["slide", "max_train_seconds_cut"]
    assert s.loc["tf-full-cpu", "best_p_at_1"] == 0.55 and s.loc["tf-full-cpu", "best_step"] == 20
    assert "0.600 (epoch 0.67)" in text and "5.00%" in text
    assert "cut by the time cap" in text and "Cut by the time cap" in text


def test_machine_table_has_no_empty_header_and_one_format_per_column(fixture_runs):
    _, html_path = _build_all(*fixture_runs)
    text = html_path.read_text()
    assert "<th></th>" not in text and "<th scope='row'>CPU</th>" in text
    table = text[text.index("<h2>Table:"):]
    table = table[:table.index("</table>")]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]
    memory = [c[5] for c in cells if c[5] != MISSING]
    assert memory and all(re.fullmatch(r"[\d,]+ MB", m) for m in memory)
    assert all(re.fullmatch(r"\d\.\d{3}", c[6]) for c in cells if c[6] != MISSING)  # P@1


EVIL = "<script>alert(1)</script> & co"


def test_data_text_is_escaped_and_the_report_markup_is_not(tmp_path):
    plan = dict(PLAN, preset="p&q", gpu={"available": False, "reason": f"no GPU: {EVIL}"},
                datasets={DID: dict(PLAN["datasets"][DID], label=f"Amazon {EVIL}")},
                skipped=[dict(PLAN["skipped"][0], reason=f"left out: {EVIL}")])
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)]),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)]),
            _write_run(tmp_path, "tf-sampled-cpu", [(1, 0.05)], status="failed", reason=f"diverged: {EVIL}")]
    _, out = _aggregate(tmp_path, runs, [], [])
    text = build_report(load_tables(out), plan, PAPER, {}, tmp_path / "report.html", f"Report {EVIL}",
                        machine_info={"cpu": EVIL, "cores": 2, "memory_gb": 8, "platform": "x"}, version_info={})
    assert "<script>" not in text and "& co" not in text
    safe = html.escape(EVIL, quote=False)
    for shown in (f"<title>Report {safe}</title>", f"Amazon {safe}", f"no GPU: {safe}", f"left out: {safe}",
                  f"diverged: {safe}", f"<th scope='row'>CPU</th><td>{safe}</td>", "<code>p&amp;q</code>"):
        assert shown in text, shown
    assert "<strong>No GPU</strong>" in text and '<span class="failed">Failed runs</span>' in text


VOID = {"meta", "img", "br"}


class _TagBalance(HTMLParser):
    """Open elements while parsing; a closing tag that does not close the innermost one is recorded."""

    def __init__(self):
        super().__init__()
        self.open, self.errors, self.seen = [], [], []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append((tag, self.getpos()))


def test_report_html_is_well_formed(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **BUSY),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)]),
            _write_run(tmp_path, "tf-sampled-cpu", [(1, 0.05)], status="failed", reason="loss became nan")]
    _, out = _aggregate(tmp_path, runs, [], [])
    png = tmp_path / "headline.png"
    plt.imsave(png, [[0.0, 1.0]])
    text = build_report(load_tables(out), PLAN, PAPER, {"headline": png}, tmp_path / "report.html", "t",
                        experiments={"table": True, "thread_scaling": True})
    assert text.startswith("<!DOCTYPE html>")
    parser = _TagBalance()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.open == []
    tags = [t for t, _ in parser.seen]
    assert tags.count("html") == tags.count("body") == tags.count("h1") == 1
    assert tags.count("table") == 5  # claims, comparisons, machine, per-method results, every run
    assert [a["id"] for t, a in parser.seen if t == "figure"] == ["headline"]
    assert [a["alt"] for t, a in parser.seen if t == "img"] == ["headline"]


def test_per_preset_paths():
    assert tables_path("paper", "summary.csv") == "results/paper/summary.csv"
    assert plan_path("paper") == "results/paper/skipped.json"
    assert report_path("paper") == "reports/paper/report.html"
    assert final_outputs("tiny", ["jobs"]) == ["reports/tiny/report.html", "results/tiny/summary.csv",
                                               "reports/tiny/figures/jobs.png", "reports/tiny/figures/jobs.svg"]


def test_paper_preset_without_data_leaves_the_default_report_alone(tmp_path):
    res = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-n",
                          "--cores", "2", "--directory", str(tmp_path), "--config", "preset=paper", "gpu=no"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    outputs = set(re.findall(r"output: (.+)", res.stdout))
    assert "reports/paper/report.html" in outputs and "results/paper/skipped.json" in outputs
    assert "reports/paper/figures/p1_vs_time.png, reports/paper/figures/p1_vs_time.svg" in outputs
    assert not re.search(r"reports/(report\.html|figures/|default/)|results/(summary|skipped)", res.stdout)


def test_end_of_run_names_failed_fetches_left_out_runs_and_the_report(tmp_path):
    raw = tmp_path / "data" / "raw"
    for name in ("amazon-670k", "delicious-200k"):
        (raw / name).mkdir(parents=True)
        (raw / name / "FETCH_FAILED").write_text("downloading\nslide: error: download failed: offline\n")
    os.utime(raw / "delicious-200k" / "FETCH_FAILED", (1, 1))  # an earlier run's failure
    since = (raw / "amazon-670k" / "FETCH_FAILED").stat().st_mtime - 1
    report = tmp_path / "reports" / "paper" / "report.html"

    def message():
        return end_of_run(PLAN["skipped"], {"amazon-670k", "delicious-200k"}, str(report), since,
                          data_root=tmp_path / "data")

    lines = message().splitlines()
    assert lines[:3] == [
        "[slide pipeline] Left out of this run:",
        "  - amazon-670k: fetching the data failed (slide: error: download failed: offline); "
        "the jobs that need it did not run",
        f"  - 1 run(s) on {DID}: {GPU_REASON}"]
    assert lines[-1] == f"[slide pipeline] No report was written ({report} does not exist)"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    assert message().splitlines()[-1] == f"[slide pipeline] Report: {report}"
    os.utime(report, (1, 1))
    assert "NOT rebuilt by this run" in message().splitlines()[-1]
    assert end_of_run([], set(), str(report), since).startswith("[slide pipeline] Nothing was left out.")


def test_a_pytorch_gpu_run_fills_the_papers_gpu_claim_and_says_which_framework(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **QUIET),
            _write_run(tmp_path, "torch-full-gpu", [(2, 0.3), (4, 0.55)], **QUIET)]
    tables, text = _report_text(tmp_path, runs)
    assert tables["speedups"].iloc[0]["baseline"] == "torch-full-gpu"
    assert tables["speedups"].iloc[0]["speedup"] == pytest.approx(2.0)
    claims = claims_table(tables, PLAN, PAPER)
    gpu_row = next(row for row in claims.split("<tr>") if "Speedup of SLIDE over TF full softmax (GPU), amazon-670k"
                   in row)
    assert "2x on" in gpu_row and "PyTorch full softmax (GPU)" in gpu_row
    assert "not measured" not in gpu_row
    assert _first_sentence(text).startswith("Verdict: SLIDE beat")


def _made_elsewhere(run_json, device="cuda:0 Test GPU 80 GiB, torch 9.9", cpu="Other CPU", cores=64):
    """Rewrite a run.json as if made on another machine (a GPU box) and copied in."""
    rec = json.loads(run_json.read_text())
    rec["machine"] = dict(rec["machine"], cpu=cpu, cores=cores)
    rec["method_stats"] = {"device": device}
    run_json.write_text(json.dumps(rec))
    return run_json


def test_a_gpu_run_from_another_machine_is_named_and_does_not_decide_the_verdict(tmp_path):
    runs = [_write_run(tmp_path, "slide", [(1, 0.3), (2, 0.6)], **QUIET),
            _write_run(tmp_path, "tf-full-cpu", [(2, 0.3), (4, 0.55)], **QUIET),  # SLIDE 2x faster here
            _made_elsewhere(_write_run(tmp_path, "torch-full-gpu", [(0.5, 0.3), (1, 0.55)], **QUIET))]
    plan = dict(PLAN, imported=[{"dataset": DID, "method": "torch-full-gpu", "variant": None, "seed": 0,
                                 "reason": GPU_REASON}])
    _, out = _aggregate(tmp_path, runs, [], [])
    tables = load_tables(out)
    text = build_report(tables, plan, PAPER, {}, tmp_path / "report.html", "t")
    summary = tables["summary"].set_index("method")
    assert summary.loc["torch-full-gpu", "gpu"] == "cuda:0 Test GPU 80 GiB, torch 9.9"
    assert pd.isna(summary.loc["tf-full-cpu", "gpu"])  # a CPU run names no GPU ("" in the CSV)
    sp = tables["speedups"].set_index("baseline")
    elsewhere = "cuda:0 Test GPU 80 GiB, torch 9.9 (CPU Other CPU, 64 cores)"
    assert sp.loc["torch-full-gpu", "other_machine"] == elsewhere and pd.isna(sp.loc["tf-full-cpu", "other_machine"])
    assert sp.loc["torch-full-gpu", "speedup"] == pytest.approx(0.5)  # the GPU box reached 0.55 in 1 s, SLIDE in 2
    # the verdict is decided on SLIDE's machine only; the GPU comparison is reported, with its machine
    assert _first_sentence(text).startswith("Verdict: SLIDE beat TensorFlow's full softmax in every comparison")
    plain = re.sub(r"<[^>]+>", "", text)
    assert f"SLIDE vs PyTorch full softmax (GPU) (its runs were made on another machine, {elsewhere}" in plain
    assert "GPUs recorded in run.json" in plain and "CPUs recorded in run.json" in plain
    assert "1 run(s) made on another machine" in plain
    assert f"results/{DID}/torch-full-gpu/seed0: {elsewhere}" in plain
    cpu_run = tables["summary"].set_index("method").loc["tf-full-cpu"]  # as read back from the CSV
    assert machine_label(cpu_run) == f"{cpu_run['cpu']}, {int(cpu_run['cores'])} cores"
