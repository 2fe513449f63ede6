"""Precision@k and nDCG@k, and top-k selection from score blocks: one implementation for all methods."""

from __future__ import annotations

import numba
import numpy as np

from .settings import NJIT, NJIT_PARALLEL

KS = (1, 3, 5)


@numba.njit(**NJIT_PARALLEL)
def _topk_rows(scores, k, out):
    n, m = scores.shape
    for i in numba.prange(n):
        vals = np.full(k, -np.inf, dtype=np.float64)
        idx = np.full(k, -1, dtype=np.int64)
        row = scores[i]
        for j in range(m):
            v = row[j]
            if v > vals[k - 1]:
                p = k - 1
                while p > 0 and vals[p - 1] < v:
                    vals[p] = vals[p - 1]
                    idx[p] = idx[p - 1]
                    p -= 1
                vals[p] = v
                idx[p] = j
        for p in range(k):
            out[i, p] = idx[p] if idx[p] >= 0 else 0


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row, best first (ties: lowest index first).

    Parameters
    ----------
    scores : (n, m) float array
    k : int, 1 <= k <= m

    Returns
    -------
    (n, k) int64 array
    """
    scores = np.ascontiguousarray(scores)
    if scores.ndim != 2 or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"need a 2-d score array with at least k={k} columns, got {scores.shape}")
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    _topk_rows(scores, k, out)
    return out


@numba.njit(**NJIT)
def _hits(pred, y_indptr, y_indices, rows, hits, n_true):
    for i in range(pred.shape[0]):
        r = rows[i]
        a, b = y_indptr[r], y_indptr[r + 1]
        n_true[i] = b - a
        for p in range(pred.shape[1]):
            c = pred[i, p]
            for q in range(a, b):
                if y_indices[q] == c:
                    hits[i, p] = True
                    break


def evaluate_topk(pred: np.ndarray, data, rows=None) -> dict:
    """P@k and nDCG@k for k in (1, 3, 5) of top-k predictions against the true labels.

    Parameters
    ----------
    pred : (n, m) int array
        Predicted label ids per point, best first. ``m`` may be below 5 when the data set has
        fewer labels: the missing ranks count as misses, so P@k keeps its definition (hits in the
        top k over k) for every k, and a perfect ranking of a 3-label set scores P@5 <= 3/5.
    data : XCDataset
        Holds the true labels.
    rows : int array, optional
        The points of ``data`` that ``pred`` refers to (default: all, in order).

    Returns
    -------
    dict
        ``p_at_1, p_at_3, p_at_5, ndcg_at_1, ndcg_at_3, ndcg_at_5`` (means over points; a point
        without labels counts as zero, as in the XC repository's evaluation) and ``eval_points``.
    """
    pred = np.asarray(pred, dtype=np.int64)
    rows = np.arange(len(data), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    kmax = max(KS)
    if pred.ndim != 2 or pred.shape[0] != len(rows) or pred.shape[1] < min(kmax, max(int(data.num_labels), 1)):
        raise ValueError(f"pred must be ({len(rows)}, >={min(kmax, data.num_labels)}), got {pred.shape}")
    if pred.shape[1] < kmax:  # fewer labels than k: the ranks beyond the last label are misses
        pred = np.concatenate([pred, np.full((pred.shape[0], kmax - pred.shape[1]), -1, np.int64)], axis=1)
    hits = np.zeros((len(rows), kmax), dtype=np.bool_)
    n_true = np.zeros(len(rows), dtype=np.int64)
    _hits(pred[:, :kmax], data.y_indptr, data.y_indices, rows, hits, n_true)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    out = {}
    n = max(len(rows), 1)
    for k in KS:
        out[f"p_at_{k}"] = float(hits[:, :k].sum() / (k * n))
    for k in KS:
        dcg = hits[:, :k] @ discount[:k]
        ideal = np.concatenate([[0.0], np.cumsum(discount[:k])])[np.minimum(n_true, k)]
        with np.errstate(invalid="ignore", divide="ignore"):
            ndcg = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
        out[f"ndcg_at_{k}"] = float(ndcg.sum() / n)
    out["eval_points"] = int(len(rows))
    return out


def popularity_baseline(train, test, k: int = 5) -> dict:
    """Metrics of ranking the ``k`` most frequent training labels first for every test point.

    A learned model must beat this to have learned anything about the inputs; comparisons of
    methods at a P@1 this low say nothing about them. With fewer than ``k`` labels every label
    is ranked (see :func:`evaluate_topk` for the ranks beyond the last).
    """
    counts = np.bincount(train.y_indices, minlength=train.num_labels)
    best = np.argsort(-counts, kind="stable")[:k]
    return evaluate_topk(np.broadcast_to(best, (len(test), len(best))), test)


def scoring_chunk_rows(num_labels: int, budget_bytes: int = 256 << 20) -> int:
    """Rows per dense scoring block so that one float32 block stays within ``budget_bytes``."""
    return int(max(1, min(4096, budget_bytes // (4 * max(num_labels, 1)))))
