"""Exact dense top-k (slide.engine.scoring) against a float64 NumPy twin."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from slide.engine.scoring import LABEL_BLOCK, TILE_ROWS, exact_topk, task_rows


def twin_topk(h, W, b, k):
    """Readable reference: float64 scores, stable sort (ties: lowest label first)."""
    scores = h.astype(np.float64) @ W.astype(np.float64).T + b.astype(np.float64)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], scores


def random_layer(rng, n, L, H, integer=False):
    if integer:  # small integers: float32 sums are exact, so ties are real and ids must match exactly
        h = np.maximum(rng.integers(-1, 3, (n, H)), 0).astype(np.float32)
        W = rng.integers(-2, 3, (L, H)).astype(np.float32)
        b = rng.integers(-1, 2, L).astype(np.float32)
    else:
        h = np.maximum(rng.standard_normal((n, H)), 0).astype(np.float32)
        W = (rng.standard_normal((L, H)) * 0.1).astype(np.float32)
        b = (rng.standard_normal(L) * 0.01).astype(np.float32)
    return h, W, b


# shapes straddle the tile (2 x lanes rows), the 4-label group, the label block and a task
@pytest.mark.parametrize("n,L,H", [(1, 5, 3), (TILE_ROWS + 1, 7, 16), (70, LABEL_BLOCK + 6, 32),
                                   (600, 301, 128), (5, 4099, 9)])
def test_integer_scores_match_twin_exactly_with_ties(n, L, H):
    rng = np.random.default_rng(n + L)
    h, W, b = random_layer(rng, n, L, H, integer=True)
    ref, _ = twin_topk(h, W, b, 5 if L >= 5 else L)
    np.testing.assert_array_equal(exact_topk(h, W, b, ref.shape[1]), ref)


@pytest.mark.parametrize("n,L,H,k", [(33, 1000, 128, 5), (300, 2500, 64, 1), (40, 9, 128, 9)])
def test_real_scores_match_twin_to_float32_rounding(n, L, H, k):
    rng = np.random.default_rng(k)
    h, W, b = random_layer(rng, n, L, H)
    ref, scores = twin_topk(h, W, b, k)
    got = exact_topk(h, W, b, k)
    rows = np.arange(n)[:, None]
    # same ranked scores to float32 rounding (ids may swap only between near-equal scores) ...
    np.testing.assert_allclose(scores[rows, got], scores[rows, ref], rtol=0, atol=1e-5)
    # ... and, at these sizes, the very same ids nearly everywhere
    assert (got == ref).mean() > 0.99
    assert all(len(set(r)) == k for r in got.tolist())


def test_same_result_on_one_and_two_threads():
    rng = np.random.default_rng(3)
    h, W, b = random_layer(rng, 700, 3000, 128)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = exact_topk(h, W, b, 5)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = exact_topk(h, W, b, 5)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_no_rows_and_bad_arguments():
    rng = np.random.default_rng(0)
    h, W, b = random_layer(rng, 4, 10, 8)
    assert exact_topk(h[:0], W, b, 3).shape == (0, 3)
    with pytest.raises(ValueError, match="k must be between 1"):
        exact_topk(h, W, b, 11)
    with pytest.raises(ValueError, match="k must be between 1"):
        exact_topk(h, W, b, 0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        exact_topk(h[:, :5], W, b, 3)
    with pytest.raises(ValueError, match="float32"):
        exact_topk(h, W.astype(np.float64), b, 3)


def test_task_rows_are_whole_tiles_and_spread_over_threads():
    assert task_rows(10, 2) == TILE_ROWS
    assert task_rows(10**6, 2) == 512
    assert task_rows(3 * TILE_ROWS, 2) == 2 * TILE_ROWS


@pytest.mark.parametrize("features,lanes", [("+avx512f,+avx2,+avx", 16), ("-avx512f,+avx2,+avx", 8),
                                            ("+sse4.2,-avx", 4)])
def test_vector_width_follows_the_compile_target(monkeypatch, features, lanes):
    from numba.core import config

    from slide.settings import _simd_lanes

    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert _simd_lanes() == lanes
