"""The shared training loop: evaluation schedule, timing, outputs, divergence and resume.

A tiny NumPy method stands in for SLIDE and TensorFlow here, so the loop is tested on its own.
"""

import json

import numpy as np
import pytest

from slide.adapter import Method, PersistentMixin, parse_overrides
from slide.data.dataset import XCDataset
from slide.errors import ConfigError
from slide.runs import CURVE_COLUMNS, load_run, read_curve
from slide.training import bench, eval_sample, train


class Popularity(PersistentMixin, Method):
    """Ranks labels by how often they were seen in training; can be told to diverge at a step."""

    DEFAULTS = {"batch_size": 10, "eval_every": 3, "nan_at": -1}
    PRESETS = {"big": {"batch_size": 20}}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.counts = np.zeros(self.num_labels)
        self.step = 0

    name = "slide"

    def train_batch(self, data, rows):
        sub = data.subset(rows)
        np.add.at(self.counts, sub.y_indices, 1.0)
        self.step += 1
        return float("nan") if self.step == self.config["nan_at"] else 1.0 / self.step

    def predict_topk(self, data, rows, k=5):
        return np.tile(np.argsort(-self.counts, kind="stable")[:k], (len(rows), 1))

    def state_arrays(self):
        return {"counts": self.counts, "step": np.array(self.step)}

    def load_state_arrays(self, arrays):
        self.counts, self.step = arrays["counts"].copy(), int(arrays["step"])


def _data(n, seed):
    rng = np.random.default_rng(seed)
    labels = [rng.choice(8, size=2, replace=False, p=np.r_[0.5, 0.2, [0.3 / 6] * 6]) for _ in range(n)]
    y_indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    x_indptr = np.arange(n + 1, dtype=np.int64)
    return XCDataset(x_indptr, rng.integers(0, 5, n).astype(np.int32), np.ones(n, np.float32), y_indptr,
                     np.concatenate(labels).astype(np.int32), 5, 8)


def test_schedule_outputs_and_schema(tmp_path):
    train_data, test_data = _data(95, 0), _data(40, 1)
    method = Popularity.from_config(5, 8, seed=3, threads=1)
    record = train(method, train_data, test_data, tmp_path, dataset="toy", epochs=2, eval_points=16, seed=3)
    curve = read_curve(tmp_path / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS
    # 10 steps per epoch: sample evaluations at every 3rd global step, full ones at epoch ends (10, 20)
    assert curve["step"].tolist() == [3, 6, 9, 10, 12, 15, 18, 20]
    full = curve["eval_points"] == 40
    assert curve.loc[full, "step"].tolist() == [10, 20]
    assert set(curve.loc[~full, "eval_points"]) == {16}
    assert curve["samples"].iloc[-1] == 190
    assert (np.diff(curve["train_seconds"]) >= 0).all() and (curve["wall_seconds"] >= curve["train_seconds"]).all()
    assert load_run(tmp_path / "run.json") == record
    assert record["status"] == "completed" and record["steps"] == 20 and record["epochs"] == 2
    assert record["final"]["eval_points"] == 40 and record["final"]["p_at_1"] == curve["p_at_1"].iloc[-1]
    assert (tmp_path / "model.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_divergence_is_recorded_as_failed(tmp_path):
    method = Popularity.from_config(5, 8, overrides={"nan_at": 4})
    record = train(method, _data(95, 0), _data(40, 1), tmp_path, dataset="toy", epochs=1, eval_points=16)
    assert record["status"] == "failed" and "step 4" in record["reason"]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_resume_continues_where_the_checkpoint_stopped(tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    train_data, test_data = _data(95, 0), _data(40, 1)
    whole = train(Popularity.from_config(5, 8), train_data, test_data, full_dir, dataset="t", epochs=2, eval_points=16)
    train(Popularity.from_config(5, 8), train_data, test_data, part_dir, dataset="t", epochs=2, eval_points=16,
          max_steps=10)
    resumed = train(Popularity.from_config(5, 8), train_data, test_data, part_dir, dataset="t", epochs=2,
                    eval_points=16, resume=True)
    assert resumed["steps"] == whole["steps"] == 20
    a, b = read_curve(full_dir / "curve.csv"), read_curve(part_dir / "curve.csv")
    assert a["step"].tolist() == b["step"].tolist()
    np.testing.assert_allclose(a["p_at_1"], b["p_at_1"])


def test_save_load_roundtrip_and_bench(tmp_path):
    method = Popularity.from_config(5, 8, preset="big", seed=7)
    method.fit(_data(95, 0), epochs=1)
    method.save(tmp_path / "m.npz")
    again = Popularity.load(tmp_path / "m.npz")
    assert again.config == method.config and again.seed == 7
    np.testing.assert_array_equal(again.counts, method.counts)
    result = bench(Popularity.from_config(5, 8), _data(95, 0), batches=12, warmup=1)
    assert result["batches"] == 12 and result["p10_batch_seconds"] <= result["median_batch_seconds"]
    assert result["samples_per_second"] > 0


class Refreshing(Popularity):
    """Refreshes a table after every 4th step, as SLIDE rehashes."""

    def table_refreshes(self):
        return self.step // 4

    def stats(self):
        return {"rehash_seconds": 0.5, "adam_seconds": 0.25 * self.step}


def test_bench_reports_refreshes_only_for_a_method_that_has_them():
    data = _data(95, 0)
    plain = bench(Popularity.from_config(5, 8), data, batches=3, warmup=1)
    assert plain["batches"] == 3 and "rehashes_in_window" not in plain and "rehash_seconds" not in plain
    # the warm-up restores step 0, one untimed step, then timing goes on until 2 refreshes (step 8)
    refreshing = bench(Refreshing.from_config(5, 8), data, batches=3, warmup=1)
    assert refreshing["batches"] == 7 and refreshing["rehashes_in_window"] == 2
    assert refreshing["rehash_seconds"] == 0.5
    # phases: the running totals' growth over the timed window, per timed batch
    assert refreshing["phase_seconds_per_batch"] == {"adam": 0.25, "rehash": 0.0}
    assert "phase_seconds_per_batch" not in plain


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="lrr"):
        Popularity.resolve_config(overrides={"lrr": 1})
    with pytest.raises(ConfigError, match="nope"):
        Popularity.resolve_config(preset="nope")
    assert parse_overrides(["hidden=[64, 32]", "lr=1e-4"]) == {"hidden": [64, 32], "lr": 1e-4}
    with pytest.raises(ConfigError):
        parse_overrides(["lr"])


def test_eval_sample_is_fixed_sorted_and_spread():
    a, b = eval_sample(10_000, 500, seed=1), eval_sample(10_000, 500, seed=1)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 500 and (np.diff(a) > 0).all()
    assert a.max() > 9_000  # not a prefix of a label-sorted test file
    assert len(eval_sample(100, 500, seed=1)) == 100


class _Recorder(Popularity):
    """Popularity that records the rows of every batch it is given."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches = []

    def warm_up(self, data, rows):
        pass

    def train_batch(self, data, rows):
        self.batches.append(np.array(rows, copy=True))
        return super().train_batch(data, rows)


def test_each_epoch_visits_every_point_once_in_a_new_order(tmp_path):
    train_data, test_data = _data(100, 0), _data(20, 1)
    method = _Recorder.from_config(5, 8, seed=3, threads=1)
    train(method, train_data, test_data, tmp_path, dataset="toy", epochs=3, eval_points=16, seed=3)
    assert len(method.batches) == 30
    epochs = [np.concatenate(method.batches[e * 10:(e + 1) * 10]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(100))
    # a fresh shuffle per epoch: no two epochs share an order (a reused shuffle would repeat epoch 0)
    assert len({tuple(order.tolist()) for order in epochs}) == 3
    assert epochs[0].tolist() != list(range(100))
