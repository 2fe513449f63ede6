"""Bucket tables: parallel build against a pure-Python twin, FIFO / reservoir, memory, state, validation."""

import numba
import numpy as np
import pytest

from slide.engine.hashing import M_DIRECT
from slide.engine.tables import LSHIndex
from slide.errors import ConfigError

from splitmix_twin import GOLDEN, M64, _mix64  # noqa: E402


def _twin_buckets(index, weights):
    """Per table, {key: set of ids}: items inserted in id order into buckets of ``bucket_size``.

    fifo: a full bucket overwrites its oldest entry. reservoir: the r-th arrival (r >= cap) draws
    j = mix64(state += golden) % (r + 1) from one stream per table, state0 = mix64(seed ^ (t+1)*golden),
    and replaces entry j when j < cap.
    """
    cap, keys = index.bucket_size, np.array([index.codes(w)[1] for w in weights])
    tables = []
    for t in range(index.L):
        buckets, arrivals = {}, {}
        state = _mix64(index.seed ^ (((t + 1) * GOLDEN) & M64))
        for i, key in enumerate(keys[:, t]):
            b = buckets.setdefault(key, [])
            r = arrivals[key] = arrivals.get(key, -1) + 1
            if r < cap:
                b.append(i)
            elif index.insertion == "fifo":
                b[r % cap] = i
            else:
                state = (state + GOLDEN) & M64
                j = _mix64(state) % (r + 1)
                if j < cap:
                    b[j] = i
        tables.append({k: set(v) for k, v in buckets.items()})
    return tables


def _bucket(index, t, key):
    """Ids stored under ``key`` in table ``t``, read from the arrays with NumPy."""
    meta, keys, ptr, items = (index.arrays[i] for i in (0, 6, 7, 8))
    occupied = np.flatnonzero(ptr[t, 1:] > ptr[t, :-1])
    if meta[M_DIRECT]:
        slots = [s for s in occupied if s == key]
    else:
        slots = [s for s in occupied if keys[t, s] == key]
    assert len(slots) <= 1
    return set(items[t, ptr[t, slots[0]]:ptr[t, slots[0] + 1]].tolist()) if slots else set()


CASES = [  # kind, dim, n, K, L, bucket: direct addressing and hash-map tables, overflowing buckets
    ("simhash", 16, 500, 3, 4, 16),
    ("simhash", 16, 300, 20, 3, 4),
    ("dwta", 24, 2000, 3, 3, 8),
    ("dwta", 24, 100, 3, 3, 2),
    ("wta", 24, 400, 4, 3, 5),
    ("minhash", 24, 400, 2, 3, 5),
]


@pytest.mark.parametrize("kind,dim,n,K,L,bucket", CASES)
@pytest.mark.parametrize("insertion", ["fifo", "reservoir"])
def test_build_matches_python_twin(kind, dim, n, K, L, bucket, insertion):
    rng = np.random.default_rng(n)
    weights = rng.standard_normal((n, dim)).astype(np.float32)
    weights[::2] = weights[rng.integers(0, 10, n)[::2]]  # half the rows repeat 10 rows: full buckets
    index = LSHIndex(kind, dim, n, K, L, bucket_size=bucket, insertion=insertion, seed=11, topk_minhash=5)
    index.build(weights)
    twin = _twin_buckets(index, weights)
    ptr = index.arrays[7]
    for t in range(L):
        assert all(_bucket(index, t, key) == ids for key, ids in twin[t].items())
        assert ptr[t, -1] == sum(len(ids) for ids in twin[t].values())  # no bucket beyond the twin's
    assert any(len(ids) == bucket for tb in twin for ids in tb.values())  # some bucket overflowed


def test_direct_and_hashed_modes_are_both_covered():
    modes = {bool(LSHIndex(k, d, n, K, L).arrays[0][M_DIRECT]) for k, d, n, K, L, _ in CASES}
    assert modes == {True, False}


def test_fifo_keeps_the_newest_items():
    weights = np.ones((23, 8), np.float32)  # one bucket per table
    index = LSHIndex("simhash", 8, 23, 4, 3, bucket_size=5)
    index.build(weights)
    assert list(index.query(weights[0])) == [18, 19, 20, 21, 22]


def test_reservoir_keeps_a_uniform_sample():
    """20 items into one bucket of 5, 60 seeds x 50 tables = 3,000 reservoirs: each item is kept with
    probability 5/20; binomial standard error sqrt(.25 * .75 / 3000) = 0.0079, tolerance 4 se = 0.032."""
    weights = np.ones((20, 4), np.float32)
    kept = np.zeros(20)
    for seed in range(60):
        index = LSHIndex("simhash", 4, 20, 2, 50, bucket_size=5, insertion="reservoir", seed=seed)
        index.build(weights)
        ptr, items = index.arrays[7], index.arrays[8]
        assert (ptr[:, -1] == 5).all()
        for t in range(50):
            ids = items[t, :5]
            assert len(set(ids)) == 5
            kept[ids] += 1
    assert np.abs(kept / 3000 - 0.25).max() < 0.032, kept / 3000


def test_memory_grows_linearly_in_tables_times_items():
    """Hash-map tables (SimHash K=40): bytes / (L * num_items) stays within 24..40 whatever the shape;
    direct tables hold min(2**(K*bits), hash-map size) slots, never 2**(K*bits) for a big K."""
    per_item = []
    for L, n in ((4, 1000), (8, 1000), (4, 8000), (8, 8000), (16, 3000)):
        per_item.append(LSHIndex("simhash", 16, n, 40, L).memory_bytes() / (L * n))
    assert all(24 < r < 40 for r in per_item), per_item
    assert LSHIndex("simhash", 16, 1000, 60, 4).memory_bytes() < 200_000
    assert LSHIndex("dwta", 16, 10**6, 6, 2).arrays[7].shape == (2, 2**18 + 1)


@pytest.mark.parametrize("K, direct", [(3, True), (6, False)])
def test_a_build_keeps_its_slot_map_and_key_buffer_for_the_next(K, direct):
    """The first build adds its slot map (L x n int32) and, where keys need a hash map, its key buffer
    (L x chunk_rows int64) to the memory held; later builds allocate nothing more."""
    from slide.engine.tables import chunk_rows

    n, L = 3000, 4
    index = LSHIndex("dwta", 16, n, K, L)
    assert bool(index.arrays[0][M_DIRECT]) == direct
    tables = index.memory_bytes()
    weights = np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
    kept = 4 * L * n + 8 * L * chunk_rows(n, L, direct)
    assert chunk_rows(n, L, direct) == (0 if direct else n)
    index.build(weights)
    assert index.memory_bytes() == tables + kept
    index.build(weights)
    assert index.memory_bytes() == tables + kept


def test_build_bytes_count_each_pass_over_the_builds_own_arrays():
    """Direct addressing (K=3: 512 slots): the slot map written, counted and filled from (3 passes),
    the slot counts zeroed, counted and turned into bucket ends (5), the cursors (3), the items once.
    Hashed keys (K=6): the key buffer written and read, the key map zeroed and probed, the slot map
    written by the inserts and read by the fill instead of the hashing's three passes."""
    n, L = 3000, 4
    functions = lambda index: sum(a.nbytes for a in index.arrays[1:6])  # noqa: E731
    direct = LSHIndex("dwta", 16, n, 3, L)
    assert direct.arrays[7].shape == (L, 513)
    assert direct.build_bytes() == functions(direct) + 3 * 4 * L * n + 5 * 4 * L * 513 + 3 * 4 * L * 512 + 4 * L * n
    hashed = LSHIndex("dwta", 16, n, 6, L)
    slots = hashed.arrays[7].shape[1] - 1
    assert not hashed.arrays[0][M_DIRECT] and hashed.arrays[6].shape == (L, slots)
    assert hashed.build_bytes() == (functions(hashed) + 2 * 8 * L * n + 3 * 8 * L * slots + 2 * 4 * L * n
                                    + 5 * 4 * L * (slots + 1) + 3 * 4 * L * slots + 4 * L * n)


def test_same_seed_same_tables_and_thread_count_does_not_matter():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((3000, 32)).astype(np.float32)
    states = []
    threads = numba.get_num_threads()
    try:
        for nt in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(nt)
            index = LSHIndex("dwta", 32, 3000, 3, 7, bucket_size=4, insertion="reservoir", seed=5)
            index.build(weights)
            states.append(index.state_arrays())
    finally:
        numba.set_num_threads(threads)
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])


def test_rebuild_equals_a_fresh_index_and_build_is_repeatable():
    rng = np.random.default_rng(1)
    w1, w2 = rng.standard_normal((2, 500, 16)).astype(np.float32)
    index = LSHIndex("simhash", 16, 500, 12, 5, bucket_size=8, insertion="reservoir", seed=1)
    index.build(w1)
    index.rebuild(w2, seed=9)
    fresh = LSHIndex("simhash", 16, 500, 12, 5, bucket_size=8, insertion="reservoir", seed=9)
    fresh.build(w2)
    assert index.seed == 9
    a, b = index.state_arrays(), fresh.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    arrays = index.arrays
    index.build(w2)  # in place: a tuple fetched earlier stays valid
    assert index.arrays is arrays and all(np.array_equal(x, a[k]) for x, k in zip(arrays, a))


def test_state_round_trip_and_mismatch():
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((400, 16)).astype(np.float32)
    a = LSHIndex("wta", 16, 400, 3, 6, seed=3)
    a.build(weights)
    b = LSHIndex("wta", 16, 400, 3, 6, seed=4)
    b.load_state_arrays(a.state_arrays())
    assert b.seed == 3
    for q in rng.standard_normal((5, 16)).astype(np.float32):
        np.testing.assert_array_equal(a.query(q), b.query(q))
    with pytest.raises(ConfigError):
        LSHIndex("wta", 16, 400, 3, 6, bucket_size=64).load_state_arrays(a.state_arrays())
    with pytest.raises(ConfigError):
        LSHIndex("wta", 16, 400, 3, 7).load_state_arrays(a.state_arrays())
    with pytest.raises(ConfigError):
        b.load_state_arrays({"meta": a.state_arrays()["meta"]})


def test_query_is_the_sorted_union_of_buckets():
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((1000, 16)).astype(np.float32)
    index = LSHIndex("simhash", 16, 1000, 6, 5, bucket_size=32)
    index.build(weights)
    q = weights[7]
    want = set().union(*(_bucket(index, t, k) for t, k in enumerate(index.codes(q)[1])))
    assert index.query(q).tolist() == sorted(want) and 7 in want


@pytest.mark.parametrize("kind, K", [("simhash", 20), ("dwta", 12)])
def test_query_through_the_hash_map_layout_matches_the_numpy_twin(kind, K):
    """Large K: keys do not fit a direct table, so ``find_slot`` probes a hash map (linear probing).

    One table, so that a bucket the probe misses shows (with several tables another one still holds
    the query's own id)."""
    rng = np.random.default_rng(4)
    n, dim = 3000, 32
    weights = rng.standard_normal((n, dim)).astype(np.float32)
    index = LSHIndex(kind, dim, n, K, 1, bucket_size=8, seed=2)
    assert not index.arrays[0][M_DIRECT]
    index.build(weights)
    ptr, occupied = index.arrays[7], 0
    for t in range(index.L):
        occupied += int((ptr[t, 1:] > ptr[t, :-1]).sum())
    assert occupied > 500  # many keys, so probe chains longer than one slot occur
    queries = np.concatenate([weights[:300], rng.standard_normal((50, dim)).astype(np.float32)])
    for i, q in enumerate(queries):
        want = set().union(*(_bucket(index, t, k) for t, k in enumerate(index.codes(q)[1])))
        assert index.query(q).tolist() == sorted(want)
        assert i >= 300 or i in want


@pytest.mark.parametrize("kwargs", [
    dict(kind="cosine"), dict(K=65), dict(kind="dwta", K=22), dict(kind="dwta", bin_size=6),
    dict(kind="wta", bin_size=128), dict(kind="wta", dim=4, bin_size=8), dict(insertion="lru"),
    dict(seed=-1), dict(L=0), dict(num_items=0), dict(bucket_size=0), dict(K=2.5),
])
def test_invalid_settings_raise_config_error(kwargs):
    args = dict(kind="simhash", dim=16, num_items=10, K=4, L=2) | kwargs
    with pytest.raises(ConfigError):
        LSHIndex(**args)


def test_bad_arrays_raise_value_error():
    index = LSHIndex("simhash", 16, 10, 4, 2)
    with pytest.raises(ValueError):
        index.build(np.zeros((10, 15), np.float32))
    with pytest.raises(ValueError):
        index.query(np.zeros(17, np.float32))
    with pytest.raises(ValueError):
        index.codes((np.array([3, 16]), np.ones(2)))
