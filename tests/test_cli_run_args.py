"""Command-line values of ``train``/``bench`` (issue 10 items 14, 15, 16 and the CLI side of 4-9).

The flags are shared by ``slide`` and ``python -m baselines.tf`` (:mod:`slide.runner_cli`); a tiny
NumPy method stands in for the real ones here, so every case runs in milliseconds. Bad input is one
line naming what is wrong, a non-zero exit, and no output folder or file touched.
"""

import argparse
import errno
import os
import warnings

import numpy as np
import pytest

from slide.adapter import Method
from slide.data.dataset import XCDataset
from slide.errors import ConfigError, ResourceError
from slide.runner_cli import add_train_arguments, main_wrapper, run_train
from slide.runs import load_run
from slide.settings import available_cores


class Counter(Method):
    DEFAULTS = {"batch_size": 10, "eval_every": 3}
    name = "slide-counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.counts = np.zeros(self.num_labels)

    def train_batch(self, data, rows):
        np.add.at(self.counts, data.subset(rows).y_indices, 1.0)
        return 0.5

    def predict_topk(self, data, rows, k=5):
        return np.tile(np.argsort(-self.counts, kind="stable")[:k], (len(rows), 1))

    def state_arrays(self):
        return {"counts": self.counts}

    def load_state_arrays(self, arrays):
        self.counts = np.array(arrays["counts"], dtype=np.float64)


def _make(num_features, num_labels, overrides, args):
    return Counter.from_config(num_features, num_labels, overrides=overrides, seed=args.seed, threads=args.threads)


def toy(argv):
    parser = argparse.ArgumentParser(prog="toy")
    sub = parser.add_subparsers()
    p = sub.add_parser("train")
    add_train_arguments(p)
    p.set_defaults(func=lambda a: run_train(a, _make))
    return main_wrapper(parser, [str(a) for a in argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from slide.data import write_xc

    d = tmp_path_factory.mktemp("toy-data")
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("train", 60), ("test", 20)):
        ys = np.concatenate([rng.choice(8, 2, replace=False) for _ in range(n)]).astype(np.int32)
        ds = XCDataset(np.arange(n + 1, dtype=np.int64), rng.integers(0, 5, n).astype(np.int32),
                       np.ones(n, np.float32), np.arange(0, 2 * n + 1, 2, dtype=np.int64), ys, 5, 8)
        out[name] = d / f"{name}.txt"
        write_xc(out[name], ds)
    return out


def args_for(files, out, *extra):
    return ["train", "--train", files["train"], "--test", files["test"], "--out", out, "--threads", "1",
            "--eval-points", "8", *extra]


def one_line_error(capsys, rc, *needles, alone=True):
    """The run failed with one error line (the last on stderr; ``alone``: the only one)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0, err
    assert "Traceback" not in err and lines, err
    if alone:
        assert len(lines) == 1, err
    else:  # the settings line and progress lines of the run may come first
        assert [ln for ln in lines if "error" in ln or "failed" in ln] == lines[-1:], err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "nan"], "--epochs"), (["--epochs", "inf"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--eval-points", "-5"], "--eval-points"), (["--seed", "-1"], "--seed"),
    (["--max-steps", "0"], "--max-steps"), (["--max-steps", "-1"], "--max-steps"),
    (["--max-train-seconds", "0"], "--max-train-seconds"), (["--patience", "-2"], "--patience"),
    (["--threads", "-5"], "--threads"),
])
def test_bad_values_are_one_line_and_touch_nothing(files, tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    argv = args_for(files, out, *flags)
    if "--threads" in flags:
        argv.remove("1")
        argv.remove("--threads")
    rc = toy(argv)
    one_line_error(capsys, rc, needle)
    assert not out.exists()


def test_eval_points_zero_is_refused_with_periodic_evaluation_only(files, tmp_path, capsys):
    rc = toy(args_for(files, tmp_path / "a", "--eval-points", "0"))
    one_line_error(capsys, rc, "--eval-points", "every 3 steps")
    assert not (tmp_path / "a" / "run.json").exists()
    rc = toy(args_for(files, tmp_path / "b", "--eval-points", "0", "--set", "eval_every=0"))
    assert rc == 0 and load_run(tmp_path / "b" / "run.json")["status"] == "completed"


def test_out_that_is_a_file_or_below_a_file(files, tmp_path, capsys):
    existing = tmp_path / "afile"
    existing.write_text("keep me")
    rc = toy(args_for(files, existing))
    one_line_error(capsys, rc, "--out", str(existing), "not a folder")
    rc = toy(args_for(files, existing / "sub" / "run"))
    one_line_error(capsys, rc, "--out", "is a file, not a folder")
    assert existing.read_text() == "keep me"


def test_out_in_a_read_only_folder(files, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real_access(p, mode))
    rc = toy(args_for(files, ro / "run"))
    one_line_error(capsys, rc, "--out", "read-only")
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a mode 0555 folder")
def test_out_in_a_chmod_read_only_folder(files, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = toy(args_for(files, ro / "run"))
        one_line_error(capsys, rc, "--out", "read-only")
    finally:
        ro.chmod(0o755)


def test_threads_zero_means_all_cores_and_too_many_are_lowered_with_a_warning(files, tmp_path, capsys):
    argv = args_for(files, tmp_path / "zero")
    argv[argv.index("--threads") + 1] = "0"
    assert toy(argv) == 0
    assert load_run(tmp_path / "zero" / "run.json")["threads"] == available_cores()
    capsys.readouterr()
    argv = args_for(files, tmp_path / "many")
    argv[argv.index("--threads") + 1] = "999"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert toy(argv) == 0
    err = capsys.readouterr().err
    assert f"--threads 999: this process may run on {available_cores()} cores; using {available_cores()}" in err
    assert load_run(tmp_path / "many" / "run.json")["threads"] == available_cores()


def test_resume_of_a_finished_run_says_so_and_exits_0(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert toy(args_for(files, out)) == 0
    first = (out / "run.json").read_bytes()
    capsys.readouterr()
    assert toy(args_for(files, out, "--resume")) == 0
    captured = capsys.readouterr()
    assert "finished run" in captured.err and '"status": "completed"' in captured.out
    assert (out / "run.json").read_bytes() == first


def test_resume_with_another_seed_is_one_line(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert toy(args_for(files, out, "--max-steps", "2")) == 0
    capsys.readouterr()
    rc = toy(args_for(files, out, "--resume", "--seed", "7"))
    one_line_error(capsys, rc, "toy: error:", "cannot resume", "seed 0 -> 7", alone=False)


def test_damaged_checkpoint_on_resume_is_one_line(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert toy(args_for(files, out, "--max-steps", "2")) == 0
    (out / "model.npz").write_bytes(b"")
    capsys.readouterr()
    rc = toy(args_for(files, out, "--resume"))
    one_line_error(capsys, rc, "toy: error:", str(out / "model.npz"), "damaged", alone=False)
    assert (out / "model.npz").read_bytes() == b""


def test_disk_full_is_one_line_and_recorded(files, tmp_path, capsys, monkeypatch):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("slide.io.np.savez", no_space)
    out = tmp_path / "run"
    rc = toy(args_for(files, out))
    line = one_line_error(capsys, rc, "run failed", str(out / "model.npz"), "no space left", alone=False)
    assert "run.json" in line and load_run(out / "run.json")["status"] == "failed"


# ----------------------------------------------------------------------------- SLIDE's own settings

def test_slide_cli_refuses_nan_epochs_before_reading_data(tmp_path, capsys):
    from slide.cli import main

    rc = main(["train", "--train", str(tmp_path / "missing.txt"), "--test", str(tmp_path / "missing.txt"),
               "--out", str(tmp_path / "run"), "--epochs", "nan"])
    one_line_error(capsys, rc, "slide: error: --epochs")
    assert not (tmp_path / "run").exists()


def test_threshold_sampling_above_L_is_refused():
    from slide.engine.presets import DEFAULTS, validate

    base = dict(DEFAULTS, sampling="threshold", output_sparsity=0.1, L=10)
    with pytest.raises(ConfigError, match=r"threshold must be <= L=10.*got 100"):
        validate(dict(base, threshold=100))
    assert validate(dict(base, threshold=10))["threshold"] == 10
    assert validate(dict(base, threshold=100, sampling="vanilla"))["threshold"] == 100


def test_memory_message_prints_plain_integers(monkeypatch):
    from slide.engine import SlideMethod

    monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", "1")
    with pytest.raises(ResourceError) as info:
        SlideMethod.from_config(100_000, 100_000, overrides={"hidden": [128, 64]}, threads=1)
    assert "hidden [128, 64]" in str(info.value) and "np.int64" not in str(info.value)


def test_slide_train_with_a_file_size_limit_records_the_failure(tmp_path):
    """Item 8 with a real process: writes beyond RLIMIT_FSIZE fail (EFBIG) as on a full disk.

    model.npz (130 kB here) cannot be written; curve.csv and run.json (a few kB) still can, so
    the run is recorded as failed, with one line on stderr and no temporary left behind.
    """
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from slide.data import write_xc

    rng = np.random.default_rng(0)
    for name, n in (("train", 300), ("test", 100)):
        xl, yl = rng.integers(1, 6, n), rng.integers(1, 3, n)
        ds = XCDataset(np.r_[0, np.cumsum(xl)].astype(np.int64),
                       np.concatenate([rng.choice(30, k, replace=False) for k in xl]).astype(np.int32),
                       np.ones(int(xl.sum()), np.float32), np.r_[0, np.cumsum(yl)].astype(np.int64),
                       np.concatenate([rng.choice(40, k, replace=False) for k in yl]).astype(np.int32), 30, 40)
        write_xc(tmp_path / f"{name}.txt", ds)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    def train(out, preexec_fn=None):
        return subprocess.run([sys.executable, "-m", "slide.cli", "train", "--train", str(tmp_path / "train.txt"),
                               "--test", str(tmp_path / "test.txt"), "--threads", "1", "--out", str(out)],
                              preexec_fn=preexec_fn, capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parents[1])

    # compile and cache the kernels first: under the limit Numba could not write its cache files
    # (on a fresh clone this test runs before any other engine test)
    assert train(tmp_path / "warm").returncode == 0
    out = tmp_path / "run"
    proc = train(out, limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out / 'model.npz'}: cannot write it: file too large" in proc.stderr.splitlines()[-1]
    record = load_run(out / "run.json")
    assert record["status"] == "failed" and "model.npz" in record["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "run.json"]
