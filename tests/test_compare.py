"""`slide compare`: several methods benched one after another, ratios to SLIDE from the same run."""

import json
import subprocess
import sys

import pytest


def _compare(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "slide.cli", "compare", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_compare_reports_ratios_to_slide(tmp_path):
    proc = _compare(tmp_path, "--like", "amazon-670k", "--scale", "0.005", "--batches", "3", "--threads", "1",
                    "--methods", "slide,tf-full-cpu,tf-full-gpu", "--json")
    report = json.loads(proc.stdout)
    by_method = {r["method"]: r for r in report["results"]}
    slide, tf = by_method["slide"], by_method["tf-full-cpu"]
    if slide["disturbed"] or tf["disturbed"]:
        # a busy machine (shared CI, other jobs): no ratio is computed from a disturbed benchmark
        assert "seconds_per_batch_vs_slide" not in tf
    else:
        assert slide["seconds_per_batch_vs_slide"] == 1.0
        assert tf["seconds_per_batch_vs_slide"] == tf["median_batch_seconds"] / slide["median_batch_seconds"]
        assert tf["mean_seconds_per_batch_vs_slide"] == tf["mean_batch_seconds"] / slide["mean_batch_seconds"]
    # a method that cannot run here is reported with its one-line reason, and the exit code says so
    gpu = by_method["tf-full-gpu"]
    if "error" in gpu:
        assert "\n" not in gpu["error"] and proc.returncode == 1
    assert (tmp_path / "data" / "bench").is_dir()


def test_compare_rejects_unknown_methods(tmp_path):
    proc = _compare(tmp_path, "--like", "amazon-670k", "--methods", "slide,tf-full-tpu")
    assert proc.returncode == 2 and "tf-full-tpu" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_a_disturbed_benchmark_gives_no_ratio(monkeypatch):
    from slide import compare

    fake = {"slide": dict(median_batch_seconds=0.02, mean_batch_seconds=0.03, other_cpu_share=0.01),
            "tf-full-cpu": dict(median_batch_seconds=1.0, mean_batch_seconds=1.0, other_cpu_share=0.5),
            "tf-sampled-cpu": dict(median_batch_seconds=0.5, mean_batch_seconds=0.5, other_cpu_share=0.0)}
    base = dict(samples_per_second=1.0, peak_rss_mb=1.0, load_average_end=[0.5, 0.5, 0.5], machine={"cores": 2})
    monkeypatch.setattr(compare, "bench_method", lambda m, *a, **k: dict(base, method=m, **fake[m]))
    report = compare.compare(list(fake), "amazon-670k")
    by = {r["method"]: r for r in report["results"]}
    assert "seconds_per_batch_vs_slide" not in by["tf-full-cpu"] and by["tf-full-cpu"]["disturbed"]
    assert by["tf-sampled-cpu"]["seconds_per_batch_vs_slide"] == 25.0
    text = compare.format_table(report)
    assert "n/a" in text and "rerun on a quiet machine" in text
