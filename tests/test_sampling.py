"""Active-neuron selection against a pure-Python twin; padding, labels, top-k, threshold, use from prange."""

import numba
import numpy as np
import pytest

from slide.engine.hashing import M_DIRECT
from slide.engine.sampling import (
    MODE_THRESHOLD,
    MODE_TOPK,
    MODE_VANILLA,
    mode_code,
    select_active,
    select_active_sparse,
)
from slide.engine.tables import LSHIndex
from slide.errors import ConfigError

N, DIM = 3000, 24
NO_LABELS = np.empty(0, np.int32)


@pytest.fixture(scope="module")
def index():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((N, DIM)).astype(np.float32)
    index = LSHIndex("simhash", DIM, N, 6, 8, bucket_size=40, seed=2)
    index.build(weights)
    return index


def _twin_retrieve(index, vec):
    """Candidates in retrieval order (table 0 first, bucket order) and their collision counts."""
    meta, keys, ptr, items = (index.arrays[i] for i in (0, 6, 7, 8))
    order, count = [], {}
    for t, key in enumerate(index.codes(vec)[1]):
        occupied = np.flatnonzero(ptr[t, 1:] > ptr[t, :-1])
        slot = [s for s in occupied if (s == key if meta[M_DIRECT] else keys[t, s] == key)]
        for c in (items[t, ptr[t, slot[0]]:ptr[t, slot[0] + 1]] if slot else []):
            if c not in count:
                order.append(int(c))
            count[int(c)] = count.get(int(c), 0) + 1
    return order, count


def _select(index, vec, labels=NO_LABELS, mode=MODE_VANILLA, k_or_t=0, min_active=0, trigger=0, seed=0,
            scratch=None, stamp_value=1):
    stamp, counts, out = scratch or (np.zeros(N, np.int32), np.zeros(N, np.int32), np.empty(N, np.int32))
    n = select_active(index.arrays, vec, np.asarray(labels, np.int32), mode, k_or_t, min_active, trigger, N,
                      stamp, counts, stamp_value, seed, out)
    return out[:n].tolist()


def _queries(m=20, seed=1):
    return np.random.default_rng(seed).standard_normal((m, DIM)).astype(np.float32)


def test_vanilla_is_labels_then_union_in_retrieval_order(index):
    for q in _queries():
        order, _ = _twin_retrieve(index, q)
        labels = [5, 17, 5, order[0] if order else 1]  # a duplicate and a retrieved label
        want = list(dict.fromkeys(labels)) + [c for c in order if c not in labels]
        assert _select(index, q, labels) == want


def test_vanilla_padding_rule(index):
    """Fewer than ``trigger`` ids after labels + union: random distinct ids up to ``min_active``."""
    q = _queries(1)[0]
    order, _ = _twin_retrieve(index, q)
    assert 0 < len(order) < 1500
    got = _select(index, q, [9], min_active=1000, trigger=1500, seed=7)
    assert len(got) == 1000 == len(set(got)) and got[: 1 + len(order)] == list(dict.fromkeys([9] + order))
    assert min(got) >= 0 and max(got) < N
    assert _select(index, q, [9], min_active=1000, trigger=1500, seed=7) == got
    assert _select(index, q, [9], min_active=1000, trigger=1500, seed=8) != got
    padded = got[1 + len(order):]
    assert 0.4 < np.mean(padded) / N < 0.6  # spread over the whole id range
    # no padding at or above the trigger, none beyond the union when it already reaches min_active
    assert len(_select(index, q, min_active=1000, trigger=len(order))) == len(order)
    assert len(_select(index, q, min_active=len(order) - 1, trigger=1500)) == len(order)
    assert sorted(_select(index, q, min_active=N + 5, trigger=N + 5)) == list(range(N))


def test_labels_always_included_even_when_never_retrieved():
    rng = np.random.default_rng(3)
    index = LSHIndex("simhash", DIM, N, 30, 2, bucket_size=4)  # 2**30 buckets: almost nothing retrieved
    index.build(rng.standard_normal((N, DIM)).astype(np.float32))
    for mode in (MODE_VANILLA, MODE_TOPK, MODE_THRESHOLD):
        got = _select(index, _queries(1)[0], [2999, 0, 1234], mode=mode, k_or_t=1)
        assert got[:3] == [2999, 0, 1234] and len(got) == len(set(got))


@pytest.mark.parametrize("k", [0, 1, 10, 50, 10**6])
def test_topk_returns_the_k_highest_counts(index, k):
    for q in _queries(10):
        order, count = _twin_retrieve(index, q)
        best = sorted(order, key=lambda c: (-count[c], order.index(c)))[:k]  # ties: retrieval order
        got = _select(index, q, [3], mode=MODE_TOPK, k_or_t=k)
        assert got == [3] + [c for c in order if c in set(best) and c != 3]
        if 0 < k < len(order):
            chosen = set(got[1:])
            assert min(count[c] for c in chosen) >= max(count[c] for c in order if c not in chosen)


@pytest.mark.parametrize("t", [1, 2, 3, 8])
def test_threshold_returns_exactly_ids_with_enough_collisions(index, t):
    for q in _queries(10):
        order, count = _twin_retrieve(index, q)
        got = _select(index, q, [3, 4], mode=MODE_THRESHOLD, k_or_t=t)
        assert got == [3, 4] + [c for c in order if count[c] >= t and c not in (3, 4)]


def test_stamp_reuse_across_queries_matches_fresh_scratch(index):
    scratch = (np.zeros(N, np.int32), np.zeros(N, np.int32), np.empty(N, np.int32))
    for i, q in enumerate(_queries(30)):
        mode = (MODE_VANILLA, MODE_TOPK, MODE_THRESHOLD)[i % 3]
        args = dict(labels=[i], mode=mode, k_or_t=2, min_active=100, trigger=150, seed=i)
        assert _select(index, q, scratch=scratch, stamp_value=i + 1, **args) == _select(index, q, **args)


def test_sparse_variant_equals_dense(index):
    for q in _queries(10) * (np.random.default_rng(5).random((10, DIM)) < 0.4):
        idx = np.flatnonzero(q).astype(np.int32)
        for mode in (MODE_VANILLA, MODE_TOPK):
            stamp, counts, out = np.zeros(N, np.int32), np.zeros(N, np.int32), np.empty(N, np.int32)
            n = select_active_sparse(index.arrays, idx, q[idx], np.array([1], np.int32), mode, 20, 100, 150, N,
                                     stamp, counts, 1, 4, out)
            assert out[:n].tolist() == _select(index, q, [1], mode=mode, k_or_t=20, min_active=100, trigger=150,
                                               seed=4)


@numba.njit(parallel=True, cache=True)
def _batch(arrays, X, label_ptr, labels, mode, stamps, counts, outs, active, sizes):
    num_items = stamps.shape[1]
    for i in numba.prange(X.shape[0]):
        tid = numba.get_thread_id()
        n = select_active(arrays, X[i], labels[label_ptr[i]:label_ptr[i + 1]], mode, 5, 200, 300, num_items,
                          stamps[tid], counts[tid], i + 1, i, outs[tid])
        sizes[i] = n
        active[i, :n] = outs[tid, :n]


def test_callable_from_a_prange_kernel_with_per_thread_scratch(index):
    X = _queries(64, seed=9)
    label_ptr = np.arange(0, 129, 2)
    labels = np.random.default_rng(0).integers(0, N, 128).astype(np.int32)
    threads = numba.config.NUMBA_NUM_THREADS
    for mode in (MODE_VANILLA, MODE_TOPK):
        stamps, counts, outs = (np.zeros((threads, N), np.int32) for _ in range(3))
        active, sizes = np.empty((64, N), np.int32), np.empty(64, np.int64)
        _batch(index.arrays, X, label_ptr, labels, mode, stamps, counts, outs, active, sizes)
        for i in range(64):
            want = _select(index, X[i], labels[2 * i:2 * i + 2], mode=mode, k_or_t=5, min_active=200, trigger=300,
                           seed=i)
            assert active[i, :sizes[i]].tolist() == want


def test_mode_code():
    assert [mode_code(m) for m in ("vanilla", "topk", "threshold")] == [MODE_VANILLA, MODE_TOPK, MODE_THRESHOLD]
    with pytest.raises(ConfigError):
        mode_code("sample")


def test_byte_stamps_select_what_int32_stamps_select_across_their_wrap(index):
    """Lookups on one scratch row, each with the next stamp value, from 1 and then from just below the
    byte's wrap (so that the first lookup's stamps are still there when the value 1 comes round again):
    the engine's byte stamps, cleared at the wrap, select what int32 stamps, which never wrap, select."""
    from slide.engine.network import STAMP, _next_stamp

    got = {}
    for dtype in (STAMP, np.int32):
        stamp, counts, out = np.zeros(N, dtype), np.zeros(N, np.int32), np.empty(N, np.int32)
        running = np.zeros(1, np.int64)
        got[dtype] = []
        for i, q in enumerate(_queries(12, seed=3)):
            if i == 1:
                running[0] = np.iinfo(STAMP).max - 6
            got[dtype].append(_select(index, q, [q.argmax()], min_active=600, trigger=900, seed=i,
                                      scratch=(stamp, counts, out), stamp_value=_next_stamp(stamp, running)))
        assert running[0] == (6 if dtype == STAMP else np.iinfo(STAMP).max + 5)  # wrapped at the 7th lookup
    assert got[STAMP] == got[np.int32]


def test_only_the_modes_that_rank_by_collisions_write_the_counts(index):
    q = _queries(1, seed=5)[0]
    for mode, k_or_t, written in ((MODE_VANILLA, 0, False), (MODE_TOPK, 5, True), (MODE_THRESHOLD, 2, True)):
        stamp, counts, out = np.zeros(N, np.uint8), np.full(N, -7, np.int32), np.empty(N, np.int32)
        got = _select(index, q, [3], mode=mode, k_or_t=k_or_t, scratch=(stamp, counts, out))
        assert got and (counts != -7).any() == written, mode
