"""`slide compare`: several methods benched one after another, ratios to SLIDE from the same run."""

import json
import subprocess
import sys


def _compare(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "slide.cli", "compare", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def test_compare_reports_ratios_to_slide(tmp_path):
    proc = _compare(tmp_path, "--like", "amazon-670k", "--scale", "0.005", "--batches", "3", "--threads", "1",
                    "--methods", "slide,tf-full-cpu,tf-full-gpu", "--json")
    report = json.loads(proc.stdout)
    by_method = {r["method"]: r for r in report["results"]}
    assert by_method["slide"]["seconds_per_batch_vs_slide"] == 1.0
    tf = by_method["tf-full-cpu"]
    assert tf["seconds_per_batch_vs_slide"] == tf["median_batch_seconds"] / by_method["slide"]["median_batch_seconds"]
    # a method that cannot run here is reported with its one-line reason, and the exit code says so
    gpu = by_method["tf-full-gpu"]
    if "error" in gpu:
        assert "\n" not in gpu["error"] and proc.returncode == 1
    assert (tmp_path / "data" / "bench").is_dir()


def test_compare_rejects_unknown_methods(tmp_path):
    proc = _compare(tmp_path, "--like", "amazon-670k", "--methods", "slide,tf-full-tpu")
    assert proc.returncode == 2 and "tf-full-tpu" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()
