"""``slide bench``'s distance to the memory floor: the byte accounting of a SLIDE step (a hand count
and a NumPy twin of the formula), the cached STREAM-like bandwidth, and bench's new keys."""

import json
import math
import time

import numpy as np
import pytest

from slide import bandwidth
from slide.data.dataset import XCDataset
from slide.engine import SlideMethod, grouped
from slide.settings import numba_threads
from slide.training import bench


def _dataset(features, labels, num_features, num_labels):
    """An XCDataset from per-point lists of feature ids and label ids (feature values 0.5)."""
    xi = np.concatenate([np.asarray(f, dtype=np.int32) for f in features])
    yi = np.concatenate([np.asarray(y, dtype=np.int32) for y in labels])
    x_indptr = np.r_[0, np.cumsum([len(f) for f in features])].astype(np.int64)
    y_indptr = np.r_[0, np.cumsum([len(y) for y in labels])].astype(np.int64)
    return XCDataset(x_indptr, xi, np.full(xi.shape[0], 0.5, np.float32), y_indptr, yi, num_features, num_labels)


def _window(model, data, batches):
    """Train ``batches`` (lists of rows) and return the byte parts of the whole window."""
    before = model.traffic()
    for rows in batches:
        model.train_batch(data, np.asarray(rows, dtype=np.int64))
    counts = {k: v - before[k] for k, v in model.traffic().items()}
    return counts, model.bytes_moved(data, counts)


def test_bytes_of_one_tiny_step_match_a_hand_count():
    # 6 features x 5 labels, hidden [4], every output neuron active, float32 rows of 16 bytes
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    model = SlideMethod.from_config(6, 5, overrides=dict(hidden=[4], output_sparsity=1.0, batch_size=2), threads=1)
    counts, parts = _window(model, data, [[0, 1]])
    assert counts == dict(batches=1, samples=2, features=4, labels=2, active=10, rows0=3, rows2=5, refreshes=0,
                          row_batches=0, row_active=0, row_rows2=0, row_features=0, row_rows0=0)
    # per sample: 4 W0 rows, 10 (W2 row + b2) read; their gradients read and written
    assert parts["forward"] == 4 * 16 + 10 * (16 + 4)
    assert parts["backward"] == 2 * (4 * 16 + 10 * (16 + 4))
    # flags: 14 checked per sample; per batch 11 scanned, 8 set and cleared, 8 row ids written and read
    assert parts["flags"] == 14 + 11 + 2 * 8 + 2 * 8 * 8
    # x indices and values, y indices, and per point its row id and two entries of each indptr
    assert parts["input"] == 4 * 8 + 2 * 4 + 2 * (8 + 16 + 16)
    # Adam per touched row: W, m, v, g read and written; output rows also b2, m, v, g and 1 thread's gb2
    assert parts["adam"] == 3 * 2 * 4 * 16 + 5 * (2 * 4 * (16 + 4) + 2 * 4)
    # b0 read, its Adam (4 arrays of 16 bytes, read and written), 1 thread's gb0 summed and cleared
    assert parts["dense_parts"] == 16 + 2 * 4 * 16 + 2 * 16
    assert parts["refresh"] == parts["by_row"] == 0
    assert parts["total"] == 2481 == sum(v for k, v in parts.items() if k not in ("total", "distinct_total", "by_phase"))
    # distinct rows: the 3 W0 rows and 5 output rows once each (read, gradient read and written, flag)
    # instead of the per-sample gathers (forward 264, backward 528, per-sample flags 14)
    assert parts["distinct_total"] == 2481 - 264 - 528 - 14 + 3 * (16 + 2 * 16 + 1) + 5 * (20 + 2 * 20 + 1) == 2127


def test_bytes_of_one_tiny_row_pass_step_match_a_hand_count():
    """The same step with the output layer run by row (every label active by padding): each output
    row is read twice and updated by the row pass's own Adam, once, whatever the samples sharing it;
    so is each input feature's row (the sparse optimizer), with no gradient row or flag."""
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    over = dict(hidden=[4], batch_size=2, output_sparsity=0.5, pad_cap=1.0, min_active=5, min_active_trigger=5,
                output_pass="row", correction="none", rehash_every=0, rebuild_every=0)
    model = SlideMethod.from_config(6, 5, overrides=over, threads=1)
    counts, parts = _window(model, data, [[0, 1]])
    assert counts == dict(batches=1, samples=2, features=4, labels=2, active=10, rows0=3, rows2=5, refreshes=0,
                          row_batches=1, row_active=10, row_rows2=5, row_features=4, row_rows0=3)
    assert parts["forward"] == 4 * 16 and parts["backward"] == 0  # W0 rows read per sample, no gradient rows
    # output rows: W2 read twice, b2 read; their 10 pairs grouped by the counting sort (5 labels <= 10
    # pairs): 5 cursors zeroed, read, read and written; per pair its id read twice, its cursor read and
    # written twice, its entry written; the 5 rows' ids and offsets written and read by 2 phases with
    # the 10 entries. Input rows: the 4 pairs by the radix sort (6 features > 4 pairs, 56 bytes a pair),
    # the 3 rows' ids and offsets written and read by 1 phase with the 4 entries and their 4 values.
    outputs = 5 * (16 + 16 + 4) + 5 * 16 + 10 * (8 + 16 + 8) + 5 * 12 * 3 + 10 * 8 * 2
    inputs = 4 * 56 + 3 * 12 * 2 + 4 * 8 + 4 * 4
    assert parts["by_row"] == outputs + inputs
    # each W0 row: W, m, v read and written; each output row: m, v read, W, m, v written, b2 with m, v
    # read and written, gb2 x 3
    assert parts["adam"] == 3 * 2 * 3 * 16 + 5 * (5 * 16 + 2 * 3 * 4 + 3 * 4)
    # no row flagged: only the per-batch scan of the 11 flags
    assert parts["flags"] == 11
    assert parts["distinct_total"] == parts["total"] - 4 * 16 + 3 * 16


def test_the_floor_by_phase_of_a_row_pass_step_matches_a_hand_count():
    """The tiny row-pass step above, its floor's bytes split by the phase that moves them."""
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    over = dict(hidden=[4], batch_size=2, output_sparsity=0.5, pad_cap=1.0, min_active=5, min_active_trigger=5,
                output_pass="row", correction="none", rehash_every=0, rebuild_every=0)
    model = SlideMethod.from_config(6, 5, overrides=over, threads=1)
    _, parts = _window(model, data, [[0, 1]])
    by_phase = parts["by_phase"]
    assert tuple(by_phase) == bandwidth.ROW_PHASES
    assert {p[len("row_"):] for p in bandwidth.ROW_PHASES if p.startswith("row_")} == set(grouped.ROW_PHASES)
    # select: the 3 distinct W0 rows and the points' CSR entries
    assert by_phase["row_select"] == 3 * 16 + 4 * 8 + 2 * 4 + 2 * (8 + 16 + 16)
    # sort: 5 cursors zeroed, read, read and written; per pair its id twice, cursor 4 times, entry; rows' ids
    assert by_phase["row_sort"] == 5 * 16 + 10 * (8 + 16 + 8) + 5 * 12
    sweep = 5 * 12 + 10 * 8  # the rows' ids and offsets and the pairs' entries, read by each row phase
    assert by_phase["row_logits"] == 5 * (16 + 4) + sweep
    # grads: W2 read again, then Adam: m, v read, W, m, v written, b2, m, v read and written, gb2 x 3
    assert by_phase["row_grads"] == 5 * 16 + sweep + 5 * (5 * 16 + 2 * 3 * 4 + 3 * 4)
    # input: the radix sort of 4 pairs and the 3 rows' ids, its sweep, 4 feature values, Adam of 3 W0 rows
    assert by_phase["row_input"] == 4 * 56 + 3 * 12 + 3 * 12 + 4 * 8 + 4 * 4 + 3 * 2 * 3 * 16
    # the optimizer: only the small dense parts and the flag scan; nothing counted in the other phases
    assert by_phase["adam"] == parts["dense_parts"] + 11
    assert by_phase["row_softmax"] == by_phase["row_backward"] == by_phase["rehash"] == 0
    assert sum(by_phase.values()) == parts["distinct_total"]


def test_the_floor_by_phase_of_a_sample_pass_step_and_of_a_mixed_window():
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    model = SlideMethod.from_config(6, 5, overrides=dict(hidden=[4], output_sparsity=1.0, batch_size=2), threads=1)
    counts, parts = _window(model, data, [[0, 1]])
    by_phase = parts["by_phase"]
    assert tuple(by_phase) == bandwidth.SAMPLE_PHASES
    assert by_phase["forward_backward"] == 3 * (16 + 2 * 16 + 1) + 5 * (20 + 2 * 20 + 1) + parts["input"]
    assert by_phase["adam"] == parts["adam"] + parts["dense_parts"] + 11 + 2 * 8 + 2 * 8 * 8
    assert by_phase["rehash"] == 0 and sum(by_phase.values()) == parts["distinct_total"]
    # a window with a step by row and one by sample: their per-sample bytes cannot be told apart
    mixed = dict(counts, batches=2, row_batches=1, samples=4, features=8, active=20, row_active=10, row_rows2=5,
                 labels=4)
    assert bandwidth.phase_bytes(model, data, mixed) is None


def test_the_dense_optimizers_floor_by_phase_sums_to_its_total():
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    model = SlideMethod.from_config(6, 5, overrides=dict(hidden=[4], output_sparsity=1.0, batch_size=2,
                                                         optimizer="dense"), threads=1)
    _, parts = _window(model, data, [[0, 1], [1, 0]])
    assert sum(parts["by_phase"].values()) == parts["distinct_total"] == parts["total"]


def test_phase_floor_and_its_table():
    got = bandwidth.phase_floor({"a": 4e9, "b": 0, "c": 0}, {"a": 0.5, "b": 0.25}, 2, 10.0)
    assert got == {"a": {"seconds": 0.5, "floor_bytes": 2e9, "floor_seconds": 0.2, "x_of_floor": 2.5},
                   "b": {"seconds": 0.25, "floor_bytes": 0.0, "floor_seconds": 0.0, "x_of_floor": None}}
    lines = bandwidth.phase_table("slide", got, 10.0).splitlines()
    assert lines[0].startswith("slide by phase") and "10.0 GB/s" in lines[0]
    assert lines[2].split() == ["a", "500.00", "2000.0", "200.00", "2.50"]
    assert lines[3].split() == ["b", "250.00", "0.0", "0.00", "-"]
    assert lines[4].split() == ["all", "phases", "750.00", "2000.0", "200.00", "3.75"]


def test_row_pass_of_the_dense_optimizer_leaves_the_input_rows_to_adam():
    """Under the dense optimizer the row pass takes no Adam step: the W0 gradient rows are written by
    each sample, flagged, and updated (with every other row) by Adam."""
    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    over = dict(hidden=[4], batch_size=2, output_sparsity=0.5, pad_cap=1.0, min_active=5, min_active_trigger=5,
                output_pass="row", correction="none", rehash_every=0, rebuild_every=0, optimizer="dense")
    model = SlideMethod.from_config(6, 5, overrides=over, threads=1)
    counts, parts = _window(model, data, [[0, 1]])
    assert counts["row_batches"] == 1 and counts["row_features"] == counts["row_rows0"] == 0
    assert parts["backward"] == 2 * 4 * 16
    outputs = 5 * (16 + 16 + 4 + 2 * 20 + 2) + 5 * 16 + 10 * (8 + 16 + 8) + 5 * 12 * 3 + 10 * 8 * 2
    assert parts["by_row"] == outputs


def _twin_bytes(model, data, batches, distinct=False):
    """The formula of :func:`slide.bandwidth.slide_bytes` from the data alone, sample by sample in
    plain Python (every output neuron active, so no LSH), for the dense or sparse optimizer;
    ``distinct``: the gathers and gradient updates once per distinct row of a batch (sparse only)."""
    D, L = model.num_features, model.num_labels
    H0, H = int(model.dims[0]), int(model.dims[-1])
    T, f4 = model.threads, 4
    small = model.b0.size + model.Wh.size + model.bh.size
    total = 0
    for rows in batches:
        feats, labels = set(), 0
        for r in rows:
            f = data.x_indices[data.x_indptr[r]:data.x_indptr[r + 1]]
            nlab = data.y_indptr[r + 1] - data.y_indptr[r]
            if not distinct:
                total += len(f) * H0 * f4 + L * (H * f4 + f4)             # forward
                total += 2 * (len(f) * H0 * f4 + L * (H * f4 + f4))       # backward
                total += len(f) + L                                       # flags checked
            total += len(f) * 8 + nlab * 4 + 8 + 2 * 8 + 2 * 8           # input
            feats.update(int(v) for v in f)
            labels += nlab
        n0, n2 = len(feats), L  # rows touched: every label is active
        if distinct:
            total += len(feats) * (3 * H0 * f4 + 1) + L * (3 * (H * f4 + f4) + 1)
        total += n0 * 8 * H0 * f4 + n2 * (8 * (H * f4 + f4) + 2 * T * f4)  # Adam
        total += small * f4 * (1 + 8 + 2 * T)                              # b0, Wh, bh
        if model.config["optimizer"] == "dense":
            total += (D - n0) * 6 * H0 * f4                                # untouched: W, m, v only
            total += D + L + 2 * (n0 + n2)                                 # flags read, set, cleared
        else:
            total += D + L + 2 * (n0 + n2) + 16 * (n0 + n2)
    return total


@pytest.mark.parametrize("optimizer", ["sparse", "dense"])
def test_bytes_match_a_numpy_twin_over_several_batches(optimizer):
    rng = np.random.default_rng(5)
    n, D, L = 24, 40, 9
    features = [np.sort(rng.choice(D, size=rng.integers(1, 6), replace=False)) for _ in range(n)]
    labels = [np.sort(rng.choice(L, size=rng.integers(1, 3), replace=False)) for _ in range(n)]
    data = _dataset(features, labels, D, L)
    model = SlideMethod.from_config(D, L, overrides=dict(hidden=[8, 4], output_sparsity=1.0, batch_size=8,
                                                         optimizer=optimizer), threads=2)
    batches = [rng.choice(n, size=8, replace=False) for _ in range(3)]
    counts, parts = _window(model, data, batches)
    assert counts["batches"] == 3 and counts["active"] == 3 * 8 * L
    assert parts["total"] == _twin_bytes(model, data, batches)
    if optimizer == "sparse":
        assert parts["distinct_total"] == _twin_bytes(model, data, batches, distinct=True) < parts["total"]
    else:
        assert parts["distinct_total"] == parts["total"]


@pytest.mark.slow
def test_sampled_output_counts_the_kernels_active_sets_and_the_rehash():
    rng = np.random.default_rng(1)
    n, D, L = 40, 30, 64
    features = [np.sort(rng.choice(D, size=4, replace=False)) for _ in range(n)]
    labels = [np.sort(rng.choice(L, size=2, replace=False)) for _ in range(n)]
    data = _dataset(features, labels, D, L)
    model = SlideMethod.from_config(D, L, overrides=dict(hidden=[8], output_sparsity=0.25, min_active=16, K=2, L=4,
                                                         batch_size=10, rehash_every=20, rebuild_every=0), threads=1)
    active0 = model.active_sum
    counts, parts = _window(model, data, [np.arange(10 * i, 10 * i + 10) for i in range(4)])
    assert counts["active"] == model.active_sum - active0            # the kernel's nactive, summed
    assert counts["labels"] <= counts["active"] and counts["rows2"] <= min(counts["active"], 4 * L)
    assert counts["refreshes"] == 2                                  # after 20 and 40 samples
    assert parts["refresh"] == 2 * (model.W2.nbytes + model.index.build_bytes())


# ---------------------------------------------------------------------- bandwidth
@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "bw" / "bandwidth.json"
    monkeypatch.setenv(bandwidth.CACHE_ENV, str(path))
    monkeypatch.delenv(bandwidth.REMEASURE_ENV, raising=False)
    return path


def _count_measurements(monkeypatch, value=12.5):
    calls = []

    def fake(threads, array_bytes, repeats):
        calls.append(threads)
        return value

    monkeypatch.setattr(bandwidth, "measure_stream_gbps", fake)
    return calls


def test_measurement_is_positive_and_read_back_from_the_cache(cache, monkeypatch):
    gbps = bandwidth.stream_gbps(1, array_bytes=2**20, repeats=2)
    assert math.isfinite(gbps) and gbps > 0
    entry = json.loads(cache.read_text())[bandwidth.machine_key(1, 2**20)]
    assert entry["gbps"] == gbps
    assert bandwidth.stream_entry(1, array_bytes=2**20) == {"gbps": gbps, "measured": entry["measured"]}
    assert time.strptime(entry["measured"], "%Y-%m-%dT%H:%M:%SZ")
    calls = _count_measurements(monkeypatch)
    assert bandwidth.stream_gbps(1, array_bytes=2**20) == gbps and calls == []
    assert bandwidth.stream_gbps(1, array_bytes=2**20, remeasure=True) == 12.5 and calls == [1]
    monkeypatch.setenv(bandwidth.REMEASURE_ENV, "1")
    assert bandwidth.stream_gbps(1, array_bytes=2**20) == 12.5 and calls == [1, 1]


@pytest.mark.parametrize("old", ["triad=1", "triad=2"])
def test_an_older_kernels_figure_is_not_read_back(cache, monkeypatch, old):
    old_key = bandwidth.machine_key(1, 2**20).replace(bandwidth.KERNEL, old)
    assert old_key != bandwidth.machine_key(1, 2**20)
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({old_key: {"gbps": 3.0}}))
    calls = _count_measurements(monkeypatch)
    assert bandwidth.stream_gbps(1, array_bytes=2**20) == 12.5 and calls == [1]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_update_kernel_matches_numpy_on_every_block(threads):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(1001), rng.standard_normal(1001)
    expected = a.astype(np.float64) + 0.5 * b.astype(np.float64)
    bandwidth._update(a, b, 0.5, threads)
    np.testing.assert_allclose(a, expected, rtol=0, atol=1e-15)


def test_the_measurement_counts_the_bytes_an_update_moves(monkeypatch):
    # every element: a read, a written back, b read; 3 x 8 bytes (a triad's uncounted write-allocate
    # read is what the update avoids). A clock that advances 1 ms per reading times each update at 1 ms.
    ticks = iter(range(10**6))
    monkeypatch.setattr(bandwidth.time, "perf_counter", lambda: next(ticks) * 1e-3)
    n = 2**20 // 8
    assert math.isclose(bandwidth.measure_stream_gbps(1, array_bytes=2**20, repeats=3), 3 * 8 * n / 1e-3 / 1e9)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"KEY": {"gbps": -3}}', '{"KEY": {"gbps": "fast"}}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(cache, monkeypatch, text):
    key = bandwidth.machine_key(1, 2**20)
    cache.parent.mkdir(parents=True)
    cache.write_text(text.replace("KEY", key))
    calls = _count_measurements(monkeypatch)
    assert bandwidth.stream_gbps(1, array_bytes=2**20) == 12.5 and calls == [1]
    assert json.loads(cache.read_text())[key]["gbps"] == 12.5
    assert bandwidth.stream_gbps(1, array_bytes=2**20) == 12.5 and calls == [1]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_row_kernel_touches_exactly_the_listed_rows(threads):
    # with a non-zero addend the kernel's work shows: each listed row of each array, every column,
    # once (more rows than one task holds, so several tasks run)
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 1000, (700, 5)).astype(dt) for dt in (np.uint16, np.uint32, np.uint32)]
    rows = np.sort(rng.choice(700, 300, replace=False)).astype(np.int64)
    expected = [a.astype(np.int64) for a in arrays]
    for e in expected:
        e[rows] += 3
    with numba_threads(threads):
        bandwidth._rewrite_rows(*arrays, rows, np.uint32(3))
    for a, e in zip(arrays, expected):
        np.testing.assert_array_equal(a, e)


def test_measure_rows_leaves_the_arrays_as_they_were_and_counts_their_bytes():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((400, 6)).astype(np.float32)
    w[0, 0] = -0.0  # x + 0.0 would turn it into +0.0; the kernel adds an integer zero to the bits
    m, v = rng.integers(0, 2**16, (400, 6)).astype(np.uint16), rng.integers(0, 2**16, (400, 6)).astype(np.uint16)
    before = [a.copy() for a in (w, m, v)]
    got = bandwidth.measure_rows((w, m, v), 50, 1, repeats=2)
    for a, b in zip((w, m, v), before):
        assert a.tobytes() == b.tobytes()
    assert got["rows"] == 50 and got["bytes"] == 2 * 50 * (6 * 4 + 6 * 2 + 6 * 2)
    assert got["seconds"] > 0 and got["gbps"] == got["bytes"] / got["seconds"] / 1e9


@pytest.mark.parametrize("arrays, rows, error", [
    ((np.zeros((4, 2), np.float32),) * 2 + (np.zeros((5, 2), np.float32),), 2, ValueError),
    ((np.zeros((4, 4), np.float32)[:, ::2],) * 3, 2, ValueError),
    ((np.zeros((4, 2), np.float32), np.zeros(4, np.float32), np.zeros((4, 2), np.float32)), 2, ValueError),
    ((np.zeros((4, 2), np.float32),) * 3, 5, ValueError),
    ((np.zeros((4, 2), np.float32),) * 3, 0, ValueError),
    ((np.zeros((4, 2), np.float32),) * 3, 1.5, TypeError)])
def test_measure_rows_checks_its_arguments(arrays, rows, error):
    with pytest.raises(error):
        bandwidth.measure_rows(arrays, rows, 1, repeats=1)


@pytest.mark.parametrize("kwargs, error", [(dict(threads=0), ValueError), (dict(threads="2"), TypeError),
                                           (dict(array_bytes=100), ValueError), (dict(repeats=0), ValueError)])
def test_measurement_arguments_are_checked(kwargs, error):
    with pytest.raises(error):
        bandwidth.measure_stream_gbps(**kwargs)


# ---------------------------------------------------------------------- bench
def test_bench_reports_its_distance_to_the_floor(cache, monkeypatch, capsys):
    from test_training_loop import Popularity, _data

    _count_measurements(monkeypatch, 20.0)
    data = _data(200, 2)
    model = SlideMethod.from_config(5, 8, overrides=dict(hidden=[8], batch_size=10, output_sparsity=1.0), threads=1)
    out = bench(model, data, batches=3, warmup=1)
    med = out["median_batch_seconds"]
    assert out["stream_gbps"] == 20.0 and out["bytes_per_batch"] > 0
    assert out["stream_measured"] is not None  # the fake measurement was written to the cache with its time
    assert 0 < out["floor_bytes_per_batch"] < out["bytes_per_batch"]  # rows shared by samples count once
    assert out["floor_seconds"] == out["floor_bytes_per_batch"] / (20.0 * 1e9)
    assert out["x_of_floor"] == med / out["floor_seconds"]
    assert out["achieved_gbps"] == out["bytes_per_batch"] / med / 1e9
    assert set(out["phase_floor"]) <= set(bandwidth.SAMPLE_PHASES)
    assert out["refresh_bytes_per_batch"] == 0  # a full softmax has no tables
    assert math.isclose(sum(f["floor_bytes"] for f in out["phase_floor"].values()), out["floor_bytes_per_batch"])
    for phase, f in out["phase_floor"].items():
        assert f["seconds"] == out["phase_seconds_per_batch"][phase]
        assert f["x_of_floor"] == f["seconds"] / f["floor_seconds"]
    err = capsys.readouterr().err
    assert "the memory floor" in err and "slide by phase" in err and f"(measured {out['stream_measured']})" in err
    # with hash tables: the refreshes (a rehash every 2 batches here) are left out of the median
    # step's figures and amortised in the table's rehash phase
    sampled = SlideMethod.from_config(5, 8, overrides=dict(hidden=[8], batch_size=10, output_sparsity=0.5,
                                                           rehash_every=20, rebuild_every=0), threads=1)
    out = bench(sampled, data, batches=4, warmup=1)
    per_refresh = sampled.W2.nbytes + sampled.index.build_bytes()
    assert out["refresh_bytes_per_batch"] == out["rehashes_in_window"] * per_refresh / out["batches"] > 0
    assert out["phase_floor"]["rehash"]["floor_bytes"] == out["refresh_bytes_per_batch"]
    assert math.isclose(sum(f["floor_bytes"] for f in out["phase_floor"].values()),
                        out["floor_bytes_per_batch"] + out["refresh_bytes_per_batch"])
    # a batch's distinct output rows, scattered, beside the row pass's gradient phase (when there is one)
    for output_pass in ("row", "sample"):
        model = SlideMethod.from_config(5, 8, overrides=dict(hidden=[8], batch_size=10, output_sparsity=0.5,
                                                             output_pass=output_pass), threads=1)
        out = bench(model, data, batches=3, warmup=1)
        rows, grads = out["rows_floor"], out["phase_seconds_per_batch"].get("row_grads")
        assert 0 < rows["rows"] <= 8 and rows["bytes"] == 2 * rows["rows"] * 3 * 8 * model.W2.itemsize
        assert rows["x_of_rows_floor"] == (grads / rows["seconds"] if output_pass == "row" else None)
        assert rows["x_of_step_floor"] == rows["seconds"] / out["floor_seconds"]
        err = capsys.readouterr().err
        assert f"{rows['x_of_step_floor']:.2f}x the whole step's memory floor on their own" in err
        assert ("the gradient phase takes" in err) == (output_pass == "row")
    plain = bench(Popularity.from_config(5, 8), data, batches=3, warmup=1)
    assert not {"bytes_per_batch", "floor_bytes_per_batch", "stream_gbps", "achieved_gbps", "floor_seconds", "x_of_floor",
                "phase_floor", "refresh_bytes_per_batch", "rows_floor", "stream_measured"} & set(plain)


def test_bench_flag_asks_for_a_new_measurement():
    from slide.cli import build_parser

    bench_args = ["bench", "--like", "amazon-670k"]
    assert build_parser().parse_args(bench_args).remeasure_bandwidth is None
    assert build_parser().parse_args([*bench_args, "--remeasure-bandwidth"]).remeasure_bandwidth is True
