"""``python -m baselines.tf``: one-line errors, no half-written outputs, and an end-to-end run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slide.data.dataset import XCDataset
from slide.runs import CURVE_COLUMNS, load_run, read_curve

REPO = Path(__file__).resolve().parents[1]


def _write_xc(path, ds):
    try:
        from slide.data import write_xc
    except ImportError:
        from slide.data.xc_format import write_xc
    write_xc(path, ds)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
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
        _write_xc(out[name], ds)
    return out


def cli(*args, env=None, timeout=180):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "baselines.tf", *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith("python -m baselines.tf")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def base_args(files, out, loss="full", device="cpu"):
    return ["train", "--loss", loss, "--device", device, "--train", files["train"], "--test", files["test"],
            "--out", out, "--threads", "1"]


def test_bad_loss(files, tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "--loss", "softmax", "--train", files["train"], "--test", files["test"], "--out", out)
    assert_one_line_error(proc, "--loss", "invalid choice")
    assert not out.exists()


def test_unknown_set_key(files, tmp_path):
    out = tmp_path / "run"
    proc = cli(*base_args(files, out), "--set", "num_sampled=5")
    assert_one_line_error(proc, "unknown key 'num_sampled'")
    assert not out.exists()


def test_missing_file(files, tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "--loss", "sampled", "--train", tmp_path / "nope.txt", "--test", files["test"], "--out", out)
    assert_one_line_error(proc, "nope.txt")
    assert not out.exists()


@pytest.mark.slow
def test_bad_value_and_memory_limit(files, tmp_path):
    out = tmp_path / "run"
    proc = cli(*base_args(files, out, loss="sampled"), "--set", "sampler=zipf")
    assert_one_line_error(proc, "sampler")
    assert not out.exists()
    proc = cli(*base_args(files, out), env={"SLIDE_MEMORY_LIMIT_MB": "50"})
    assert_one_line_error(proc, "needs about", "SLIDE_MEMORY_LIMIT_MB=50")
    assert not out.exists()


def test_negative_seed_and_threads_are_one_line(files, tmp_path):
    """Issue 10 item 14/15: the shared flags are checked for the TF baselines too, before any file is written."""
    out = tmp_path / "run"
    proc = cli(*base_args(files, out), "--seed", "-1")
    assert_one_line_error(proc, "--seed")
    args = base_args(files, out)
    args[args.index("--threads") + 1] = "-5"
    proc = cli(*args)
    assert_one_line_error(proc, "--threads")
    assert not out.exists()


def test_gpu_without_gpu(files, tmp_path):
    from baselines.tf import gpu_available

    if gpu_available():
        pytest.skip("a GPU is visible to TensorFlow here")
    out = tmp_path / "run"
    proc = cli(*base_args(files, out, device="gpu"))
    assert_one_line_error(proc, "sees no GPU")
    assert not out.exists()


def test_train_end_to_end(files, tmp_path):
    out = tmp_path / "run"
    proc = cli(*base_args(files, out, loss="sampled"), "--epochs", "2", "--seed", "3", "--set", "lr=1e-2",
               "--set", "batch_size=32", "--set", "eval_every=2", "--preset", "amazon-670k")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and 0 <= summary["p_at_1"] <= 1
    assert "Traceback" not in proc.stderr and "oneDNN" not in proc.stderr and "cuda" not in proc.stderr.lower()
    run = load_run(out / "run.json")
    assert run["method"] == "tf-sampled-cpu" and run["seed"] == 3 and run["threads"] == 1
    assert run["hyperparameters"]["lr"] == 1e-2 and run["hyperparameters"]["batch_size"] == 32
    assert run["steps"] == 8 and run["active_per_sample_mean"] == 1 + 1  # 10% of 12 classes, + 1 true
    curve = read_curve(out / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS and curve["step"].tolist() == [2, 4, 6, 8]
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "model.npz", "run.json"]


def test_bench_prints_shared_keys(tmp_path):
    try:
        from slide.data import synthesize  # noqa: F401
    except ImportError:
        pytest.skip("slide.data.synthesize is not available yet")
    proc = cli("bench", "--loss", "full", "--like", "delicious-200k", "--scale", "0.005", "--batches", "2",
               "--warmup", "1", "--threads", "1", "--data-root", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("method", "batches", "batch_size", "threads", "median_batch_seconds", "p10_batch_seconds",
                "p90_batch_seconds", "samples_per_second", "active_per_sample_mean", "peak_rss_mb", "like",
                "labels", "features"):
        assert key in result, key
    assert result["method"] == "tf-full-cpu" and result["active_per_sample_mean"] == result["labels"]
