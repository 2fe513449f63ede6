"""Every method writes the same outputs: ``run.json`` valid against the shared schema, ``curve.csv``
with the shared columns. Parametrised over the methods; one the machine cannot run is skipped
with the reason (SLIDE before its engine exists, the TF GPU variants where TensorFlow sees no GPU).
"""

import json

import numpy as np
import pytest

from slide.data.dataset import XCDataset
from slide.runs import CURVE_COLUMNS, load_run, read_curve, run_schema, validate_run
from slide.training import train

METHODS = ["slide", "tf-full-cpu", "tf-sampled-cpu", "tf-full-gpu", "tf-sampled-gpu"]


def make_method(name, num_features, num_labels, overrides):
    if name == "slide":
        try:
            from slide.engine import SlideMethod
        except ImportError as err:
            pytest.skip(f"SLIDE engine not importable: {err}")
        from slide.settings import set_threads

        return SlideMethod.from_config(num_features, num_labels, overrides=overrides, seed=0,
                                       threads=set_threads(1))
    from baselines.tf import gpu_available, method_class

    _, loss, device = name.split("-")
    if device == "gpu" and not gpu_available():
        pytest.skip("TensorFlow sees no GPU on this machine")
    return method_class(loss, device).from_config(num_features, num_labels, overrides=overrides, seed=0, threads=1)


def toy(n, seed, num_features=40, num_labels=16):
    rng = np.random.default_rng(seed)
    xl, yl = rng.integers(2, 7, n), rng.integers(1, 4, n)
    return XCDataset(np.r_[0, np.cumsum(xl)].astype(np.int64),
                     np.concatenate([rng.choice(num_features, k, replace=False) for k in xl]).astype(np.int32),
                     rng.uniform(0.5, 1.0, int(xl.sum())).astype(np.float32),
                     np.r_[0, np.cumsum(yl)].astype(np.int64),
                     np.concatenate([rng.choice(num_labels, k, replace=False) for k in yl]).astype(np.int32),
                     num_features, num_labels)


@pytest.mark.parametrize("name", METHODS)
def test_outputs_follow_shared_schema(name, tmp_path):
    train_data, test_data = toy(150, 0), toy(50, 1)
    method = make_method(name, 40, 16, {"batch_size": 32, "eval_every": 2})
    assert method.name == name
    record = train(method, train_data, test_data, tmp_path, dataset="toy", epochs=2, eval_points=20, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.csv", "model.npz", "run.json"]
    on_disk = json.loads((tmp_path / "run.json").read_text())
    validate_run(on_disk)
    assert load_run(tmp_path / "run.json") == record
    assert set(run_schema()["required"]) <= on_disk.keys()
    assert on_disk["method"] == name and on_disk["status"] == "completed" and on_disk["threads"] >= 1
    assert on_disk["steps"] == 10 and on_disk["samples"] == 300 and on_disk["epochs"] == 2
    assert on_disk["active_per_sample_mean"] is not None and on_disk["active_per_sample_mean"] > 0
    curve = read_curve(tmp_path / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS
    assert curve["step"].tolist() == [2, 4, 5, 6, 8, 10]  # sample every 2 steps, full test at epoch ends
    assert set(curve["eval_points"]) == {20, 50}
    assert curve[["p_at_1", "p_at_3", "p_at_5"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (np.diff(curve["train_seconds"]) >= 0).all() and (np.diff(curve["samples"]) > 0).all()
    assert on_disk["final"]["p_at_1"] == pytest.approx(curve["p_at_1"].iloc[-1], abs=1e-6)


def test_schema_rejects_a_broken_record(tmp_path):
    train_data = toy(64, 2)
    method = make_method("tf-full-cpu", 40, 16, {"batch_size": 32})
    record = train(method, train_data, train_data, tmp_path, dataset="toy", epochs=1)
    for key, bad in (("method", "tf-full-tpu"), ("threads", 0), ("status", "done")):
        broken = dict(record, **{key: bad})
        with pytest.raises(ValueError, match=key if key != "status" else "status"):
            validate_run(broken)
