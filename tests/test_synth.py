"""Synthetic stand-ins: shapes, averages, power law, determinism, learnability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slide.data import dataset_stats, read_xc, synth_shape, synthesize, write_synth
from slide.data.stats import label_pair_log_lift
from slide.data.synth import synth_params
from slide.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_cache")

FIELDS = ("x_indptr", "x_indices", "x_data", "y_indptr", "y_indices")


def test_full_scale_shapes_match_the_published_table():
    d = synth_shape("delicious-200k", 1.0)
    assert (d.features, d.labels, d.train, d.test) == (782585, 205443, 196606, 100095)
    assert d.avg_labels_per_point == 75.54
    a = synth_shape("amazon-670k", 1.0)
    assert (a.features, a.labels, a.train, a.test) == (135909, 670091, 490449, 153025)
    assert a.avg_labels_per_point == 5.45


def test_scaled_shapes_and_minimums():
    s = synth_shape("amazon-670k", 0.01)
    assert (s.features, s.labels, s.train, s.test) == (1359, 6701, 4904, 1530)
    tiny = synth_shape("delicious-200k", 1e-4)
    assert tiny.features == 2 * math.ceil(300) and tiny.labels == 2 * math.ceil(75.54)
    assert (tiny.train, tiny.test) == (64, 32)
    for bad in (0, -1, float("nan"), 5):
        with pytest.raises(ConfigError):
            synth_shape("amazon-670k", bad)
    with pytest.raises(ConfigError, match="averages"):
        synth_shape("eurlex-4k", 0.1)


@pytest.mark.parametrize("like,scale", [("amazon-670k", 0.003), ("delicious-200k", 0.004)])
def test_small_scale_statistics_match_targets(like, scale):
    shape = synth_shape(like, scale)
    train, test = synthesize(like, scale, seed=3)
    for ds, n in ((train, shape.train), (test, shape.test)):
        st = dataset_stats(ds)
        assert (st["points"], st["features"], st["labels"]) == (n, shape.features, shape.labels)
        assert st["avg_labels_per_point"] == pytest.approx(shape.avg_labels_per_point, rel=0.01)
        assert st["avg_features_per_point"] == pytest.approx(shape.avg_features_per_point, rel=0.01)
        assert st["points_without_labels"] == 0 and st["points_without_features"] == 0
        # rows are sorted, distinct, in range; values are positive, 4-decimal, L2-normalised
        for indptr, idx, dim in ((ds.x_indptr, ds.x_indices, ds.num_features),
                                 (ds.y_indptr, ds.y_indices, ds.num_labels)):
            row = np.repeat(np.arange(len(ds)), np.diff(indptr))
            key = row.astype(np.int64) * dim + idx
            assert np.all(np.diff(key) > 0) and idx.min() >= 0 and idx.max() < dim
        assert ds.x_data.min() > 0
        assert np.allclose(np.round(ds.x_data.astype(np.float64), 4), ds.x_data, atol=1e-7)
        sq = np.add.reduceat(ds.x_data.astype(np.float64) ** 2, ds.x_indptr[:-1])
        assert np.allclose(sq, 1.0, atol=0.02)
    # avg points/label follows from the other figures
    st = dataset_stats(train)
    assert st["avg_points_per_label"] == pytest.approx(st["label_nnz"] / shape.labels)


def test_label_frequencies_follow_a_power_law():
    train, _ = synthesize("amazon-670k", 0.01, seed=0)
    counts = np.sort(np.bincount(train.y_indices, minlength=train.num_labels))[::-1].astype(float)
    ranks = np.arange(1, len(counts) + 1)
    head = slice(0, 1000)
    slope = np.polyfit(np.log(ranks[head]), np.log(counts[head] + 1e-9), 1)[0]
    exponent = synth_params("amazon-670k")["label_zipf"]
    assert -exponent - 0.3 < slope < -exponent + 0.25, (slope, exponent)  # flattened a little by sampling noise
    assert counts[0] > 20 * np.median(counts)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a_tr, a_te = synthesize("amazon-670k", 0.002, seed=5)
    b_tr, b_te = synthesize("amazon-670k", 0.002, seed=5)
    c_tr, _ = synthesize("amazon-670k", 0.002, seed=6)
    for f in FIELDS:
        assert np.array_equal(getattr(a_tr, f), getattr(b_tr, f))
        assert np.array_equal(getattr(a_te, f), getattr(b_te, f))
    assert not np.array_equal(a_tr.y_indices, c_tr.y_indices)
    assert not np.array_equal(a_tr.y_indices[:100], a_te.y_indices[:100])


def test_learnable_far_above_most_frequent_label():
    """A nearest-centroid classifier built on train beats the most frequent label on test by far."""
    train, test = synthesize("amazon-670k", 0.002, seed=0)
    X, Y = train.to_dense_features(), train.to_dense_labels()
    centroids = Y.T @ X
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-9
    scores = test.to_dense_features() @ centroids.T
    Yt = test.to_dense_labels()
    p_at_1 = Yt[np.arange(len(test)), scores.argmax(1)].mean()
    baseline = Yt[:, Y.sum(0).argmax()].mean()
    assert p_at_1 > baseline + 0.3 and p_at_1 > 0.4, (p_at_1, baseline)


def test_write_synth_files_read_back_identically(tmp_path):
    res = write_synth(tmp_path / "s", "delicious-200k", 0.001, seed=1)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["synth.json", "test.txt", "train.txt"]
    meta = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert meta["like"] == "delicious-200k" and meta["seed"] == 1 and meta["params"]["label_zipf"] == 0.6
    train, test = synthesize("delicious-200k", 0.001, seed=1)
    for ds, path in ((train, res["train"]), (test, res["test"])):
        back = read_xc(path)
        for f in FIELDS:
            assert np.array_equal(getattr(back, f), getattr(ds, f)), f
    line = (tmp_path / "s" / "train.txt").read_text().split("\n")[1]
    assert all(len(tok.split(":")[1]) <= 6 for tok in line.split()[1:])  # "0.0871"


def _pair_log_lift(ds):
    """Pair-weighted mean log(P(a, b) / (P(a) P(b))) over co-occurring label pairs."""
    Y = ds.to_dense_labels().astype(np.float64)
    co = Y.T @ Y
    np.fill_diagonal(co, 0)
    cnt = Y.sum(0)
    expected = np.outer(cnt, cnt) / len(ds)
    m = co > 0
    return float((co[m] * np.log(co[m] / expected[m])).sum() / co[m].sum())


def test_label_clusters_add_cooccurrence_and_keep_the_averages():
    base, _ = synthesize("bibtex", 1.0, seed=0)
    clustered, test = synthesize("bibtex", 1.0, seed=0, cluster_size=8, cooccurrence=0.8,
                                 cluster_features=0.5)
    again, _ = synthesize("bibtex", 1.0, seed=0, cluster_size=8, cooccurrence=0.8, cluster_features=0.5)
    for f in FIELDS:
        assert np.array_equal(getattr(clustered, f), getattr(again, f))
    assert _pair_log_lift(clustered) > _pair_log_lift(base) + 0.5
    shape = synth_shape("bibtex", 1.0)
    for ds in (clustered, test):
        st = dataset_stats(ds)
        assert st["avg_labels_per_point"] == pytest.approx(shape.avg_labels_per_point, rel=0.01)
        assert st["avg_features_per_point"] == pytest.approx(shape.avg_features_per_point, rel=0.01)
    for bad in ({"cluster_size": -1}, {"cooccurrence": 1.5}, {"cluster_features": -0.1}):
        with pytest.raises(ConfigError):
            synthesize("bibtex", 1.0, seed=0, **bad)


def test_label_pair_log_lift_matches_the_dense_twin():
    clustered, _ = synthesize("bibtex", 1.0, seed=0, cluster_size=8, cooccurrence=0.8, cluster_features=0.5)
    for ds in (clustered, synthesize("bibtex", 1.0, seed=0)[0]):
        got = label_pair_log_lift(ds, top_labels=ds.num_labels, max_points=len(ds))
        assert got == pytest.approx(_pair_log_lift(ds), rel=1e-9)
    assert math.isnan(label_pair_log_lift(ds, top_labels=1))  # one label: no pairs


def test_delicious_stand_in_has_co_occurring_tags():
    """The registry's Delicious generator clusters its tags (benchmarks.md, "Stand-ins"): co-occurrence
    well above independent labels, which left every method at popularity at 51,361 labels."""
    clustered, _ = synthesize("delicious-200k", 0.01, seed=0)
    independent, _ = synthesize("delicious-200k", 0.01, seed=0, cluster_size=0, cooccurrence=0.0,
                                cluster_features=0.0)
    assert label_pair_log_lift(clustered) > label_pair_log_lift(independent) + 0.1


def test_ensure_synth_regenerates_when_the_generator_changed(tmp_path, monkeypatch):
    import slide.data.synth as synth

    out = tmp_path / "d"
    assert synth.ensure_synth(out, "bibtex", 0.05) is not None
    assert synth.ensure_synth(out, "bibtex", 0.05) is None  # same parameters: reused
    params = synth.synth_params("bibtex")
    monkeypatch.setattr(synth, "synth_params", lambda like, **o: {**params, "signal": 0.9, **o})
    assert synth.ensure_synth(out, "bibtex", 0.05) is not None
    assert json.loads((out / "synth.json").read_text())["params"]["signal"] == 0.9
