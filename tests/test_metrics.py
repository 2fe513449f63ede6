"""P@k, nDCG@k and top-k against plain float64 NumPy twins."""

import numpy as np
import pytest

from slide.data.dataset import XCDataset
from slide.metrics import evaluate_topk, popularity_baseline, scoring_chunk_rows, topk


def _labels_dataset(label_lists, num_labels):
    indptr = np.zeros(len(label_lists) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in label_lists])
    ids = np.array([i for x in label_lists for i in x], dtype=np.int32)
    empty_x = np.zeros(len(label_lists) + 1, dtype=np.int64)
    return XCDataset(empty_x, np.zeros(0, np.int32), np.zeros(0, np.float32), indptr, ids, 1, num_labels)


def _reference(pred, label_lists, k):
    """Textbook definitions, one point at a time, in float64."""
    p, nd = [], []
    for row, labels in zip(pred, label_lists):
        rel = [1.0 if c in labels else 0.0 for c in row[:k]]
        p.append(sum(rel) / k)
        dcg = sum(r / np.log2(i + 2) for i, r in enumerate(rel))
        idcg = sum(1 / np.log2(i + 2) for i in range(min(k, len(labels))))
        nd.append(dcg / idcg if idcg > 0 else 0.0)
    return np.mean(p), np.mean(nd)


def test_topk_matches_argsort():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((257, 1000)).astype(np.float32)
    got = topk(scores, 5)
    want = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got, want)


def test_topk_ties_take_lowest_index_and_rejects_bad_k():
    scores = np.zeros((2, 6), dtype=np.float32)
    scores[1, 4] = 1.0
    np.testing.assert_array_equal(topk(scores, 3), [[0, 1, 2], [4, 0, 1]])
    with pytest.raises(ValueError):
        topk(scores, 7)


def test_evaluate_matches_reference():
    rng = np.random.default_rng(1)
    num_labels = 40
    label_lists = [list(rng.choice(num_labels, size=rng.integers(0, 7), replace=False)) for _ in range(300)]
    pred = np.stack([rng.permutation(num_labels)[:5] for _ in range(300)])
    data = _labels_dataset(label_lists, num_labels)
    got = evaluate_topk(pred, data)
    for k in (1, 3, 5):
        p, nd = _reference(pred, label_lists, k)
        assert got[f"p_at_{k}"] == pytest.approx(p, rel=1e-12)
        assert got[f"ndcg_at_{k}"] == pytest.approx(nd, rel=1e-12)
    assert got["eval_points"] == 300


def test_evaluate_on_row_subset_and_perfect_prediction():
    label_lists = [[3], [1, 2], [0, 4, 5, 6, 7, 8]]
    data = _labels_dataset(label_lists, 10)
    pred = np.array([[1, 2, 9, 9, 9], [0, 4, 5, 6, 7]])
    got = evaluate_topk(pred, data, rows=[1, 2])
    assert got["p_at_1"] == 1.0 and got["ndcg_at_5"] == pytest.approx(1.0)
    assert got["p_at_5"] == pytest.approx((2 / 5 + 5 / 5) / 2)
    with pytest.raises(ValueError):
        evaluate_topk(pred[:, :3], data, rows=[1, 2])


def test_scoring_chunk_rows_respects_budget():
    assert scoring_chunk_rows(670_091, budget_bytes=256 << 20) * 670_091 * 4 <= 256 << 20
    assert scoring_chunk_rows(10) == 4096
    assert scoring_chunk_rows(10**12) == 1


def test_popularity_baseline_ranks_most_frequent_training_labels():
    train = _labels_dataset([[2], [2, 5], [5, 2], [1]], 6)
    test = _labels_dataset([[2], [5], [0]], 6)
    got = popularity_baseline(train, test)
    want = evaluate_topk(np.tile([2, 5, 1, 0, 3], (3, 1)), test)
    assert got == want and got["p_at_1"] == pytest.approx(1 / 3)


def test_metrics_with_fewer_labels_than_k():
    """Issue 10 item 7: P@k and nDCG@k stay defined (missing ranks are misses) when L < 5."""
    labels = [[0], [1, 2], [2], [0, 1, 2]]
    test = _labels_dataset(labels, 3)
    pred = np.array([[0, 1, 2], [1, 2, 0], [0, 2, 1], [2, 1, 0]])
    got = evaluate_topk(pred, test)
    for k in (1, 3, 5):
        padded = [list(r) + [-1] * (5 - len(r)) for r in pred]
        p, nd = _reference(np.array(padded), labels, k)
        assert got[f"p_at_{k}"] == pytest.approx(p) and got[f"ndcg_at_{k}"] == pytest.approx(nd)
    assert got["p_at_5"] <= 3 / 5
    with pytest.raises(ValueError):
        evaluate_topk(pred[:, :2], test)  # fewer ranks than labels is still an error


def test_popularity_baseline_with_fewer_labels_than_k():
    train = _labels_dataset([[2], [2, 1], [1]], 3)
    test = _labels_dataset([[2], [1], [0]], 3)
    got = popularity_baseline(train, test)
    assert got["p_at_1"] == pytest.approx(1 / 3) and got["p_at_5"] == pytest.approx(3 / 15)
