"""Aggregation, figures and the HTML report on hand-made runs (no training, no Snakemake).

The fixture writes schema-valid run.json / curve.csv files with slide.runs.RunRecorder: SLIDE and
TF full softmax complete, TF sampled softmax diverges (status: failed), plus experiment variants,
thread-scaling benchmarks and Snakemake benchmark records. The last test opens the report in
headless Chromium and checks that every image decodes (skipped where Chromium is absent).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slide.report.aggregate import (CURVES_COLUMNS, SPEEDUP_COLUMNS, SUMMARY_COLUMNS, TABLE_COLUMNS,
                                    aggregate, parse_run_path, time_to_reach)
from slide.report.figures import FIGURES, load_tables, make_figure
from slide.report.html import build_report
from slide.runs import RunRecorder

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "workflow" / "resources" / "paper_results.yaml").read_text())
DID = "amazon-670k-synth0.01"
GPU_REASON = "no GPU: nvidia-smi not found"


def _write_run(root, method, points, *, variant="", status="completed", reason=None, batch=128,
               active=None, test_points=500, popularity=0.05):
    parts = ["results", DID, method] + ([variant] if variant else []) + ["seed0"]
    out = root.joinpath(*parts)
    rec = RunRecorder(out, method=method, dataset=DID, seed=0, threads=2,
                      hyperparameters={"batch_size": batch, "lr": 0.001})
    for i, (t, p1) in enumerate(points, start=1):
        full = i == len(points)
        rec.add_point(step=10 * i, epoch=round(i / len(points), 4), samples=10 * i * batch, train_seconds=float(t),
                      wall_seconds=float(t) * 1.3, loss=1.0 / i, p_at_1=p1, p_at_3=p1 * 0.8, p_at_5=p1 * 0.6,
                      eval_points=test_points if full else 100)
    last = points[-1][1] if points else 0.0
    final = None if status == "failed" else {"p_at_1": last, "p_at_3": last * 0.8, "p_at_5": last * 0.6,
                                             "eval_points": test_points}
    rec.finish(status=status, reason=reason, final=final, train_seconds=float(points[-1][0]),
               median_batch_seconds=0.05, extra=dict(steps=10 * len(points), epochs=1.0,
                                                     samples=10 * len(points) * batch, eval_seconds=0.5,
                                                     active_per_sample_mean=active, method_stats={},
                                                     popularity={"p_at_1": popularity}))
    return out / "run.json"


def _write_bench(root, method, threads, median):
    out = root / "results" / DID / method / f"threads{threads}" / "seed0" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "method": method, "batches": 5, "batch_size": 128, "threads": threads, "median_batch_seconds": median,
        "p10_batch_seconds": median * 0.9, "p90_batch_seconds": median * 1.1, "samples_per_second": 128 / median,
        "active_per_sample_mean": 50.0 if method == "slide" else None, "rehash_seconds": None,
        "peak_rss_mb": 150.0, "like": "amazon-670k", "scale": 0.01, "features": 1359, "labels": 6701}))
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
    bench = [_write_bench(tmp_path, m, t, med) for m, base in (("slide", 0.02), ("tf-full-cpu", 0.03))
             for t, med in ((1, base), (2, base / 1.7))]
    records = [_write_benchmark_record(tmp_path, "/".join(p.parent.relative_to(tmp_path / "results").parts), 7.5)
               for p in runs + bench]
    return tmp_path, runs, bench, records


def _aggregate(root, runs, bench, records):
    out = {k: root / "results" / f"{k}.csv" for k in ("summary", "curves", "threads", "speedups", "table", "jobs")}
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
    out = {k: tmp_path / f"{k}.csv" for k in ("summary", "curves", "threads", "speedups", "table", "jobs")}
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
