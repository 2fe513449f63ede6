"""``python -m baselines.torch``, ``slide compare`` with torch methods, and workflow/scripts/gpu_bench.sh
on the CPU path: one-line errors, no half-written outputs, end-to-end runs. Skipped without PyTorch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e \".[torch]\")")

from slide.data.dataset import XCDataset  # noqa: E402
from slide.runs import CURVE_COLUMNS, load_run, read_curve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from slide.data.xc_format import write_xc

    rng = np.random.default_rng(0)
    out = {}
    d = tmp_path_factory.mktemp("xc")
    for name, n in (("train", 120), ("test", 40)):
        xl, yl = rng.integers(1, 6, n), rng.integers(1, 3, n)
        ds = XCDataset(np.r_[0, np.cumsum(xl)].astype(np.int64),
                       np.concatenate([rng.choice(30, k, replace=False) for k in xl]).astype(np.int32),
                       np.ones(int(xl.sum()), np.float32), np.r_[0, np.cumsum(yl)].astype(np.int64),
                       np.concatenate([rng.choice(12, k, replace=False) for k in yl]).astype(np.int32), 30, 12)
        out[name] = d / f"{name}.txt"
        write_xc(out[name], ds)
    return out


def cli(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "baselines.torch", *map(str, args)], cwd=REPO,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles, prog="python -m baselines.torch"):
    assert proc.returncode != 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith(prog)
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def base_args(files, out, loss="full", device="cpu"):
    return ["train", "--loss", loss, "--device", device, "--train", files["train"], "--test", files["test"],
            "--out", out, "--threads", "1"]


@pytest.mark.parametrize("extra, needles", [
    (["--set", "num_sampled=5"], ["unknown key 'num_sampled'"]),
    (["--set", "input=csr"], ["input must be one of"]),
    (["--preset", "wiki"], ["unknown preset 'wiki'"]),
])
def test_config_errors_are_one_line(files, tmp_path, extra, needles):
    out = tmp_path / "run"
    assert_one_line_error(cli(*base_args(files, out), *extra), *needles)
    assert not out.exists()


def test_bad_loss_missing_file_and_memory_limit(files, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(cli("train", "--loss", "nce", "--train", files["train"], "--test", files["test"],
                              "--out", out), "--loss", "invalid choice")
    assert_one_line_error(cli(*base_args(files, out, loss="sampled"), "--train", tmp_path / "nope.txt"), "nope.txt")
    assert_one_line_error(cli(*base_args(files, out), env={"SLIDE_MEMORY_LIMIT_MB": "50"}),
                          "needs about", "SLIDE_MEMORY_LIMIT_MB=50")
    assert not out.exists()


def test_gpu_without_gpu(files, tmp_path):
    from baselines.torch import gpu_available

    if gpu_available():
        pytest.skip("a GPU is visible to PyTorch here")
    out = tmp_path / "run"
    assert_one_line_error(cli(*base_args(files, out, device="gpu")), "sees no GPU")
    assert not out.exists()


@pytest.mark.slow
def test_train_end_to_end_and_resume(files, tmp_path):
    out = tmp_path / "run"
    args = [*base_args(files, out, loss="sampled"), "--seed", "3", "--set", "lr=1e-2", "--set", "batch_size=32",
            "--set", "eval_every=2", "--set", "num_sampled=2", "--preset", "amazon-670k"]
    proc = cli(*args, "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and 0 <= summary["p_at_1"] <= 1
    assert "Traceback" not in proc.stderr and proc.stderr.splitlines()[0].startswith("torch-sampled-cpu: threads=1")
    run = load_run(out / "run.json")
    assert run["method"] == "torch-sampled-cpu" and run["seed"] == 3 and run["threads"] == 1
    assert run["hyperparameters"]["lr"] == 1e-2 and run["hyperparameters"]["num_true"] == 8
    assert run["steps"] == 8 and run["active_per_sample_mean"] == 2 + 8
    curve = read_curve(out / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS and curve["step"].tolist() == [2, 4, 6, 8]
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "model.npz", "run.json"]
    proc = cli(*args, "--epochs", "3", "--resume")
    assert proc.returncode == 0 and "resuming torch-sampled-cpu at step 8" in proc.stderr, proc.stderr
    assert load_run(out / "run.json")["steps"] == 12


def test_bench_prints_shared_keys(tmp_path):
    proc = cli("bench", "--loss", "full", "--like", "delicious-200k", "--scale", "0.005", "--batches", "2",
               "--warmup", "1", "--threads", "1", "--data-root", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("method", "batches", "batch_size", "threads", "median_batch_seconds", "p10_batch_seconds",
                "p90_batch_seconds", "samples_per_second", "active_per_sample_mean", "peak_rss_mb", "like",
                "labels", "features", "compile_seconds"):
        assert key in result, key
    assert result["method"] == "torch-full-cpu" and result["active_per_sample_mean"] == result["labels"]


def test_compare_includes_torch_methods(tmp_path):
    from slide.compare import METHOD_COMMANDS, default_methods

    assert {"torch-full-cpu", "torch-sampled-cpu", "torch-full-gpu", "torch-sampled-gpu"} <= METHOD_COMMANDS.keys()
    assert default_methods().split(",")[-2:] == ["torch-full-cpu", "torch-sampled-cpu"]
    proc = subprocess.run([sys.executable, "-m", "slide.cli", "compare", "--like", "amazon-670k", "--scale", "0.005",
                           "--batches", "2", "--threads", "1", "--methods", "torch-sampled-cpu,torch-full-gpu",
                           "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    by_method = {r["method"]: r for r in json.loads(proc.stdout)["results"]}
    assert by_method["torch-sampled-cpu"]["median_batch_seconds"] > 0
    gpu = by_method["torch-full-gpu"]
    if "error" in gpu:
        assert "\n" not in gpu["error"] and "sees no GPU" in gpu["error"] and proc.returncode == 1


@pytest.mark.slow
def test_gpu_bench_script_cpu_path(tmp_path):
    """The GPU machine's script, run with --device cpu at a tiny scale: the report's layout, bench JSON."""
    script = REPO / "workflow" / "scripts" / "gpu_bench.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    common = ["--scale", "0.002", "--data-root", tmp_path / "data", "--results", tmp_path / "results"]
    from baselines.torch import gpu_available

    if not gpu_available():
        proc = subprocess.run([script, "--device", "gpu", *map(str, common)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
            proc.stderr.strip().splitlines()[0]] and "sees no GPU" in proc.stderr
        assert not (tmp_path / "data").exists()
    proc = subprocess.run([script, "--device", "cpu", "--datasets", "delicious-200k", "--losses", "full sampled",
                           "--epochs", "0.2", "--batches", "2", "--threads", "1", *map(str, common)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("torch-full-cpu", "torch-sampled-cpu"):
        run = load_run(tmp_path / "results" / "delicious-200k-synth0.002" / method / "seed0" / "run.json")
        assert run["method"] == method and run["status"] == "completed"
        assert run["dataset"] == "delicious-200k-synth0.002" and run["hyperparameters"]["lr"] == 1e-4
        bench = json.loads((tmp_path / "results" / "gpu-bench" / "delicious-200k-s0.002" / f"{method}.json").read_text())
        assert bench["method"] == method and bench["batches"] >= 2
    assert "torch:" in (tmp_path / "results" / "gpu-bench" / "machine.txt").read_text()


def test_without_pytorch_one_line_names_the_extra(tmp_path):
    """What a machine without the extra sees (simulated by blocking the import)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from baselines.torch.__main__ import main\n"
            f"sys.exit(main(['train', '--loss', 'full', '--train', 'x', '--test', 'y', '--out', {str(tmp_path / 'run')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "PyTorch is not installed", 'pip install -e ".[torch]"')
    assert not (tmp_path / "run").exists()
