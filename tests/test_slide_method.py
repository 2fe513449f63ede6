"""``SlideMethod``: configuration, determinism, threads, schedules, state, learning on Bibtex, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slide.data.dataset import XCDataset
from slide.engine import PRESETS, SlideMethod
from slide.engine.model import memory_estimate_bytes
from slide.engine.presets import DEFAULTS, validate
from slide.engine.schedule import REBUILD, REHASH, Schedule
from slide.errors import ConfigError, ResourceError
from slide.metrics import topk
from slide.runs import CURVE_COLUMNS, load_run, read_curve, validate_run
from slide.training import train

REPO = Path(__file__).resolve().parents[1]
D, L = 300, 60


def synthetic(n, seed, protos_seed=7):
    """Learnable toy data: each label owns 6 prototype features; a point mixes its labels' prototypes."""
    protos = np.random.default_rng(protos_seed).integers(0, D, (L, 6))
    rng = np.random.default_rng(seed)
    xi, xv, yi = [], [], []
    for _ in range(n):
        y = np.unique(rng.integers(0, L, rng.integers(1, 4)))
        f = np.unique(np.concatenate([protos[y].ravel(), rng.integers(0, D, 4)]))
        xi.append(f)
        xv.append(rng.uniform(0.5, 1.0, f.size))
        yi.append(y)
    ptr = lambda parts: np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    return XCDataset(ptr(xi), np.concatenate(xi).astype(np.int32), np.concatenate(xv).astype(np.float32),
                     ptr(yi), np.concatenate(yi).astype(np.int32), D, L)


@pytest.fixture(scope="module")
def toy():
    return synthetic(640, 0), synthetic(200, 1)


SMALL = dict(hidden=[32], batch_size=32, lr=0.005, output_sparsity=0.3, K=4, L=8, bucket_size=16,
             rehash_every=96, rebuild_every=320)


def make(threads=1, seed=0, **over):
    return SlideMethod.from_config(D, L, overrides=dict(SMALL, **over), seed=seed, threads=threads)


def run_steps(model, data, steps, bs=32):
    losses = []
    for s in range(steps):
        rows = np.arange(s * bs, (s + 1) * bs) % len(data)
        losses.append(model.train_batch(data, rows))
    return np.array(losses)


# ---------------------------------------------------------------- configuration
def test_defaults_and_presets_are_complete_and_valid():
    from slide.engine.presets import validate

    validate(DEFAULTS)
    for name, preset in PRESETS.items():
        assert set(preset) <= set(DEFAULTS), name
        cfg = SlideMethod.resolve_config(name)
        validate(cfg)
    amazon = SlideMethod.resolve_config("amazon-670k")
    assert (amazon["hash"], amazon["K"], amazon["L"], amazon["batch_size"], amazon["lr"]) == ("dwta", 6, 50, 128, 1e-4)
    assert (amazon["rehash_every"], amazon["rebuild_every"]) == (6400, 128000)
    assert (amazon["precision"], SlideMethod.resolve_config("delicious-200k")["precision"]) == ("bf16", "fp32")
    delicious = SlideMethod.resolve_config("delicious-200k")
    assert (delicious["hash"], delicious["K"], delicious["L"], delicious["hidden"]) == ("simhash", 9, 50, [128])


@pytest.mark.parametrize("key, value", [
    ("hash", "md5"), ("insertion", "lifo"), ("sampling", "all"), ("optimizer", "sgd"), ("schedule", "never"),
    ("inference", "approx"), ("K", 0), ("L", -1), ("batch_size", 0), ("batch_size", 2.5), ("bucket_size", True),
    ("hidden", []), ("hidden", [0]), ("output_sparsity", 0.0), ("output_sparsity", 1.5), ("lr", -1.0),
    ("rehash_every", -5), ("min_active", -1),
])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        SlideMethod.from_config(D, L, overrides={key: value})


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="bogus"):
        SlideMethod.from_config(D, L, overrides={"bogus": 1})


def test_memory_limit(monkeypatch):
    monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", "1")
    with pytest.raises(ResourceError, match="SLIDE_MEMORY_LIMIT_MB"):
        SlideMethod.from_config(100_000, 50_000)
    monkeypatch.delenv("SLIDE_MEMORY_LIMIT_MB")
    est = SlideMethod.from_config(D, L, overrides=SMALL).estimate_memory_bytes()
    params = (D * 32 + 32 + L * 32 + L) * 4 * 4
    assert params < est < params + 64 * 2**20


def test_amazon_shape_estimate_fits_3_gb():
    cfg = validate(dict(SlideMethod.resolve_config("amazon-670k"), precision="fp32"))  # bf16: test_precision.py
    assert 1.5 * 2**30 < memory_estimate_bytes(135_909, 670_091, cfg, threads=2) < 2.6 * 2**30


# ---------------------------------------------------------------- schedules
def test_fixed_schedule():
    s = Schedule("fixed", rehash_every=100, rebuild_every=400)
    events = [s.after_step(i + 1, i * 50, (i + 1) * 50) for i in range(16)]
    assert [i + 1 for i, e in enumerate(events) if e == REHASH] == [2, 4, 6, 10, 12, 14]
    assert [i + 1 for i, e in enumerate(events) if e == REBUILD] == [8, 16]


def test_decay_schedule_gaps_grow_exponentially():
    s = Schedule("decay", rehash_every=0, rebuild_every=0, decay=0.5, decay_start=10)
    steps = [t for t in range(1, 200) if s.after_step(t, 0, 0) == REHASH]
    assert steps[0] == 10
    gaps = np.diff(steps)
    np.testing.assert_allclose(gaps, 10 * np.exp(0.5 * np.arange(1, len(gaps) + 1)), atol=1.0)
    restored = Schedule("decay", 0, 0, 0.5, 10)
    restored.load_state_arrays(s.state_arrays())
    assert (restored.updates, restored.next_step) == (s.updates, s.next_step)


# ---------------------------------------------------------------- training behaviour
def test_one_thread_runs_are_bit_identical(toy):
    data, _ = toy
    a, b = make(), make()
    la, lb = run_steps(a, data, 25), run_steps(b, data, 25)
    np.testing.assert_array_equal(la, lb)
    for k in ("W0", "b0", "W2", "b2", "mW2", "vW2"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    st = a.stats()
    assert st["rehash_count"] >= 5 and st["rebuild_count"] >= 2 and st["rehash_seconds"] > 0
    assert 0.3 * L <= st["active_per_sample_mean"] < L
    c = make(seed=1)
    assert not np.array_equal(run_steps(c, data, 2), la[:2])


def test_two_threads_follow_the_same_loss_curve(toy):
    data, _ = toy
    one, two = run_steps(make(threads=1), data, 60), run_steps(make(threads=2), data, 60)
    assert two[-1] < 0.6 * two[0]
    smooth = lambda x: np.convolve(x, np.ones(10) / 10, mode="valid")
    np.testing.assert_allclose(smooth(two), smooth(one), rtol=0.05)


def test_learns_and_both_optimizers_agree(toy):
    data, test = toy
    p1 = {}
    for opt in ("sparse", "dense"):
        m = make(optimizer=opt)
        m.fit(data, test, epochs=8)
        p1[opt] = m.last_run["final"]["p_at_1"]
    assert p1["sparse"] > 0.6 and abs(p1["sparse"] - p1["dense"]) < 0.1, p1


def test_dense_prediction_is_exact_and_sparse_inference_ranks_retrieved_labels(toy):
    data, test = toy
    m = make()
    run_steps(m, data, 20)
    rows = np.arange(len(test))
    h = m.hidden(test, rows)
    X = test.to_dense_features()
    np.testing.assert_allclose(h, np.maximum(X @ m.W0 + m.b0, 0), rtol=1e-4, atol=1e-5)
    expected = topk(h @ m.W2.T + m.b2, 5)
    np.testing.assert_array_equal(m.predict_topk(test, rows, 5), expected)
    np.testing.assert_array_equal(m.predict_topk(test, rows[::-1][:7], 3), expected[::-1][:7, :3])
    m.config["inference"] = "sparse"
    pred = m.predict_topk(test, rows, 5)
    assert pred.shape == (len(rows), 5) and pred.dtype == np.int64
    assert all(len(set(p)) == 5 for p in pred) and pred.min() >= 0 and pred.max() < L
    assert (pred[:, 0] == expected[:, 0]).mean() > 0.5


def test_divergence_returns_nan(toy):
    data, _ = toy
    m = make(lr=1e-3)
    m.W2[:] = np.nan
    assert np.isnan(m.train_batch(data, np.arange(32)))


@pytest.mark.parametrize("correction", ["none", "logq"])
def test_state_round_trip_and_exact_resume(toy, tmp_path, correction):
    data, test = toy
    straight = make(correction=correction)
    run_steps(straight, data, 14)
    first = make(correction=correction)
    run_steps(first, data, 9)
    first.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert not any(z[k].dtype == object for k in z.files)
        assert any(k.startswith("lsh__") for k in z.files)
    resumed = SlideMethod.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(resumed.predict_topk(test, np.arange(50)), first.predict_topk(test, np.arange(50)))
    for s in range(9, 14):  # the same batches run_steps would have used
        resumed.train_batch(data, np.arange(s * 32, (s + 1) * 32) % len(data))
    for k in ("W0", "W2", "b2", "mW2", "vW0", "logq"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(straight, k))
    assert resumed.stats()["rehash_count"] == straight.stats()["rehash_count"]


def test_kernel_tuples_hold_the_models_own_arrays(toy, monkeypatch):
    """The named tuples the training kernels take are built once, so every later update must be in
    place: after steps with log q re-estimates, rehashes and rebuilds, and a state load, they still
    hold the model's arrays (a rebound attribute would leave the kernels training a stale copy)."""
    import slide.engine.model as model_mod

    data, _ = toy
    monkeypatch.setattr(model_mod, "LOGQ_EVERY", 2)
    over = dict(correction="logq", hidden=[32, 16], hidden_sparsity=[0.5, 1.0])
    m = make(**over)
    run_steps(m, data, 12)
    assert m.stats()["rehash_count"] and m.stats()["rebuild_count"]
    m.load_state_arrays(make(seed=1, **over).state_arrays())
    W0, b0, Wh, bh, W2, b2 = m._params
    expected = [(W0, ("W0", "mW0", "vW0", "gW0", "flag0", "rows0")), (W2, ("W2", "mW2", "vW2", "gW2", "flag2", "rows2")),
                (m._selection[4:], ("logq", "qcount")), (m._scratch, m._scratch._fields),
                (m._hs, ("hslot", "hk", "hstamp", "hcounts", "hact", "hn", "hsv")),
                (m._lsh, m.index.arrays), (m._hlsh[0], m.hidden_indices[0][1].arrays)]
    for name, param in zip(("b0", "Wh", "bh", "b2"), (b0, Wh, bh, b2)):
        expected.append((param, (name, "m" + name, "v" + name, "g" + name, f"g{name}_t")))
    for group, attrs in expected:
        assert len(group) == len(attrs)
        for got, want in zip(group, attrs):
            assert got is (getattr(m, want) if isinstance(want, str) else want)


def test_logq_estimate_follows_the_sampling_frequencies(toy, monkeypatch):
    """``correction: logq`` re-estimates log q every LOGQ_EVERY steps: the fraction of samples in which
    each label was a sampled negative (old counts halved), smoothed towards min_active / labels by one
    batch; without the correction nothing is counted."""
    import slide.engine.model as model_mod

    data, _ = toy
    monkeypatch.setattr(model_mod, "LOGQ_EVERY", 4)
    m = make(correction="logq")
    assert np.allclose(m.logq, np.log(m.min_active / L))
    run_steps(m, data, 3)
    counts, n = m.qcount.astype(np.float64).copy(), m.q_samples
    assert n == 96 and counts.sum() > 0
    run_steps(m, data, 1)  # step 4: counts of steps 1-4 go into the estimate, then halve
    counts_4 = m.qcount * 2.0
    q = (counts_4 + 32 * m.q_prior) / (128 + 32)
    np.testing.assert_allclose(m.logq, np.log(np.minimum(q, 1.0)), rtol=1e-5)
    assert m.q_samples == 64
    assert (counts_4 >= counts).all()
    plain = make()
    run_steps(plain, data, 4)
    assert plain.qcount.shape == (0,)


def test_training_loop_outputs_and_resume(toy, tmp_path):
    data, test = toy
    whole = train(make(), data, test, tmp_path / "whole", dataset="toy", epochs=2, eval_points=64)
    validate_run(whole)
    assert whole["status"] == "completed" and whole["active_per_sample_mean"] > 0
    part = tmp_path / "part"
    train(make(), data, test, part, dataset="toy", epochs=1, eval_points=64)
    resumed = train(make(), data, test, part, dataset="toy", epochs=2, eval_points=64, resume=True)
    assert resumed["steps"] == whole["steps"]
    assert resumed["final"]["p_at_1"] == whole["final"]["p_at_1"]
    assert tuple(read_curve(part / "curve.csv").columns) == CURVE_COLUMNS


# ---------------------------------------------------------------- real data and CLI
BIBTEX = {}  # the defaults: hidden [128], batch 128, lr 1e-3 (shared by every method), output_sparsity 0.3


def test_bibtex_sampled_output_reaches_p1(bibtex_dir, tmp_path):
    from slide.data import load_split

    tr = load_split(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "bibtex_trSplit.txt", 1)
    te = load_split(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "bibtex_tstSplit.txt", 1)
    m = SlideMethod.from_config(tr.num_features, tr.num_labels, overrides=BIBTEX, seed=0, threads=2)
    m.fit(tr, te, epochs=20, out_dir=tmp_path)
    curve = read_curve(tmp_path / "curve.csv")
    full = curve[curve["eval_points"] == len(te)]
    assert m.stats()["active_per_sample_mean"] <= 0.35 * tr.num_labels
    assert full["p_at_1"].max() >= 0.58, full[["epoch", "p_at_1"]].to_string()
    assert m.last_run["final"]["p_at_1"] >= 0.56


def slide_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "slide.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=240, env=dict(os.environ, **(env or {})))


def test_cli_train_resume_and_errors(bibtex_dir, tmp_path):
    data = bibtex_dir / "Bibtex_data.txt"
    base = ["train", "--train", data, "--test", data, "--train-split", bibtex_dir / "bibtex_trSplit.txt",
            "--test-split", bibtex_dir / "bibtex_tstSplit.txt", "--out", tmp_path / "run", "--threads", "2",
            "--eval-points", 500, "--set", "batch_size=256", "--set", "eval_every=5"]
    proc = slide_cli(*base, "--epochs", 1)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "completed" and 0.0 < out["p_at_1"] <= 1.0
    run = load_run(tmp_path / "run" / "run.json")
    validate_run(run)
    assert run["method"] == "slide" and run["hyperparameters"]["batch_size"] == 256 and run["steps"] == 20
    assert run["active_per_sample_mean"] <= 0.35 * 159
    curve = read_curve(tmp_path / "run" / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS and curve["step"].tolist() == [5, 10, 15, 20]
    assert (tmp_path / "run" / "model.npz").exists()
    proc = slide_cli(*base, "--epochs", 2, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resuming slide at step 20" in proc.stderr
    run = load_run(tmp_path / "run" / "run.json")
    assert run["steps"] == 40 and read_curve(tmp_path / "run" / "curve.csv")["step"].tolist()[:4] == [5, 10, 15, 20]
    proc = slide_cli(*base, "--epochs", 1, "--set", "bogus=3")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "bogus" in lines[0] and "Traceback" not in proc.stderr
    proc = slide_cli(*base, "--epochs", 1, "--set", "hash=md5")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "hash" in lines[0]
    proc = slide_cli(*base, "--epochs", 1, env={"SLIDE_MEMORY_LIMIT_MB": "1"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "SLIDE_MEMORY_LIMIT_MB" in lines[0]


def test_padding_is_capped_so_small_label_sets_stay_sampled():
    """The paper presets pad to 1,000 neurons; on 983 labels that used to mean all of them."""
    from slide.data.synth import synthesize
    from slide.errors import ConfigWarning

    tr, _ = synthesize("delicious-200k", scale=0.004, seed=0)  # ~820 labels
    L = tr.num_labels
    with pytest.warns(ConfigWarning, match="padding capped"):
        paper = SlideMethod.from_config(tr.num_features, L, preset="delicious-200k", threads=1)
    wider = SlideMethod.from_config(tr.num_features, L, preset="delicious-200k", overrides={"output_sparsity": 0.3},
                                    threads=1)
    free = SlideMethod.from_config(tr.num_features, L, preset="delicious-200k", overrides={"pad_cap": 1.0}, threads=1)
    rows = np.arange(128, dtype=np.int64)
    for m in (paper, wider, free):
        m.train_batch(tr, rows)
    active = {name: m.stats()["active_per_sample_mean"] for name, m in
              (("paper", paper), ("wider", wider), ("free", free))}
    assert paper.min_active == int(np.ceil(0.005 * L)) and wider.min_active == int(np.ceil(0.3 * L))
    assert active["paper"] < active["wider"] < active["free"] == L, active  # output_sparsity matters again
