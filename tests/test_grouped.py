"""The row pass (``output_pass: row``, slide/engine/grouped.py) against the float64 twin and the sample pass."""

import numba
import numpy as np
import pytest
from test_network import L, Twin, close, make, toy_data

from slide.engine import SlideMethod, grouped
from slide.engine.model import AUTO_ROW_SHARE, memory_estimate_bytes
from slide.engine.precision import decoded
from slide.engine.presets import validate
from slide.errors import ConfigError

#: Every label active (padding to all of them), so the twin's full softmax is the step to match.
ALL_ACTIVE = dict(output_sparsity=0.5, pad_cap=1.0, min_active=L, min_active_trigger=L)


# 72 hidden units: whole register blocks of the gradient phase and a tail, at any vector width
@pytest.mark.parametrize("hidden", [(8,), (8, 6), (72,)], ids=["8", "8-6", "72"])
@pytest.mark.parametrize("correction", ["none", "logq"])
def test_row_pass_matches_the_twin(hidden, correction):
    data = toy_data(empty_label_row=3)
    model = make(hidden, output_pass="row", correction=correction, **ALL_ACTIVE)
    logq = None
    if correction == "logq":
        model.logq[:] = np.log(np.random.default_rng(5).uniform(0.05, 1.0, L))
        logq = model.logq.astype(np.float64)
    twin = Twin(model)
    rows = np.arange(10, dtype=np.int64)
    losses, nactive = model._accumulate(data, rows)
    assert (nactive == L).all()
    ref_losses, ref_g, _ = twin.grads(data, rows, logq=logq)
    close(losses, ref_losses)
    got = model._pending_gradients()
    for k in ("W0", "b0", "Wh", "bh", "W2", "b2"):
        if ref_g[k].size:
            close(got[k], ref_g[k])
    if correction == "logq":
        negatives = (data.to_dense_labels(rows) == 0).sum(axis=0)
        negatives -= (data.to_dense_labels(rows[3:4]) == 0).sum(axis=0)  # a point without labels trains nothing
        np.testing.assert_array_equal(model.qcount, negatives)


def _pair(threads=1, **over):
    kw = dict(output_sparsity=0.5, K=2, L=3, correction="logq", **over)
    return make(output_pass="sample", threads=threads, **kw), make(output_pass="row", threads=threads, **kw)


@pytest.mark.parametrize("over", [dict(), dict(precision="bf16"), dict(hidden=[72]), dict(hidden=[72], precision="bf16"),
                                  dict(hidden=[8, 6], hidden_sparsity=[0.5, 1.0])],
                         ids=["fp32", "bf16", "fp32-72", "bf16-72", "sampled-hidden"])
def test_row_pass_trains_as_the_sample_pass(over):
    """With LSH retrieval (active sets of different sizes, padding, rehashes) both passes take the same
    steps: the same active sets, losses, gradients and, after Adam, weights."""
    over = dict(over)
    hidden = over.pop("hidden", [8])
    data = toy_data(24, seed=4)
    sample, row = _pair(hidden=hidden, rehash_every=16, **over)
    got = [m._accumulate(data, np.arange(8)) for m in (sample, row)]
    np.testing.assert_array_equal(got[0][1], got[1][1])
    assert len(set(got[0][1].tolist())) > 1  # the active sets really differ in size
    close(got[1][0], got[0][0])
    want, have = sample._pending_gradients(), row._pending_gradients()
    for k in want:
        close(have[k], want[k])
    np.testing.assert_array_equal(row.flag2, sample.flag2)
    for m in (sample, row):
        m._apply_adam()
        m.step += 1
        for start in (8, 16, 0):
            m.train_batch(data, np.arange(start, start + 8))
    for k in ("W0", "b0", "Wh", "bh", "W2", "b2", "qcount"):
        # bfloat16 weights may round a rounding-level difference to the neighbouring value (2**-8)
        close(decoded(getattr(row, k)), decoded(getattr(sample, k)), rtol=1e-2 if over.get("precision") else 1e-4)


def test_row_pass_with_two_threads_loses_no_output_update():
    """Each output row belongs to one task of the row phases, so with two threads its gradient is the
    one-thread sample pass's; the per-thread shares of the last hidden layer are all summed."""
    data = toy_data(32, seed=6)
    sample, _ = _pair()
    _, row = _pair(threads=2)
    rows = np.arange(32)
    a, b = sample._accumulate(data, rows), row._accumulate(data, rows)
    np.testing.assert_array_equal(a[1], b[1])
    close(b[0], a[0])
    want, have = sample._pending_gradients(), row._pending_gradients()
    for k in ("W2", "b2", "b0"):
        close(have[k], want[k])


@pytest.mark.parametrize("precision, threads", [("fp32", 1), ("bf16", 2)])
def test_row_pass_takes_the_output_layers_adam_step_itself(precision, threads):
    """Under the sparse optimizer a training step's row pass updates each output row as soon as its
    gradient is complete, and each input feature's row once the batch's deltas are known: the same
    weights and moments, to the bit, as adding the gradients up and running Adam after (the input layer
    with one thread), nothing left in the gradient buffers or flags, and each updated row counted once
    as touched."""
    data = toy_data(24, seed=4, empty_label_row=2)  # its features take no step
    kw = dict(output_sparsity=0.5, K=2, L=3, correction="logq", output_pass="row", precision=precision,
              threads=threads)
    fused, apart = make(**kw), make(**kw)
    rows = np.arange(8)
    fused.train_batch(data, rows)
    apart._accumulate(data, rows)
    flagged = int(apart.flag2.sum())
    apart._apply_adam()
    for k in ("W2", "mW2", "vW2", "b2", "mb2", "vb2"):
        np.testing.assert_array_equal(getattr(fused, k), getattr(apart, k), err_msg=k)
    if threads == 1:  # with two, HOGWILD input-layer updates may lose an addition in either run
        for k in ("W0", "mW0", "vW0", "b0"):
            np.testing.assert_array_equal(getattr(fused, k), getattr(apart, k), err_msg=k)
    assert 0 < flagged < L and fused.touched_sum == apart.touched_sum == flagged
    assert fused.traffic()["rows2"] == fused.traffic()["row_rows2"] == flagged
    assert not fused.gW2.any() and not fused.gb2.any() and not fused.gb2_t.any() and not fused.flag2.any()
    # the input layer: each feature the batch has updated once by the row pass, nothing left flagged
    features = np.unique(np.concatenate([data.x_indices[data.x_indptr[r]:data.x_indptr[r + 1]] for r in rows
                                         if r != 2]))
    assert fused.traffic()["rows0"] == fused.traffic()["row_rows0"] == apart.traffic()["rows0"] == features.size
    assert fused.traffic()["row_features"] == data.x_indptr[8] - data.x_indptr[0]
    assert not fused.gW0.any() and not fused.flag0.any()
    changed = np.flatnonzero((decoded(fused.W0) != decoded(make(**kw).W0)).any(axis=1))
    np.testing.assert_array_equal(changed, features)


def test_row_buffers_grow_with_the_batch():
    data = toy_data(24, seed=1)
    sample, row = _pair()
    for m in (sample, row):
        m._accumulate(data, np.arange(4))
    first = row._grouped
    for m in (sample, row):
        m._accumulate(data, np.arange(4, 24))
    assert row._grouped is not first and row._grouped.ids.shape[0] >= 20
    close(row._pending_gradients()["W2"], sample._pending_gradients()["W2"])


def _group_twin(ids, n):
    """(touched, tptr, ent) by a stable sort of the pairs on their neuron id: the neurons with pairs in
    order, the offsets of their pairs, the pairs."""
    pairs = [(ids[s, i], s, i) for s in range(len(n)) for i in range(n[s])]
    pairs.sort(key=lambda p: p[0])  # stable: samples in order within a row
    touched, counts = np.unique(np.array([p[0] for p in pairs], np.int64), return_counts=True)
    return (touched, np.concatenate([[0], np.cumsum(counts)]),
            np.array([(s << 32) | i for _, s, i in pairs], np.int64))


def _sort(kind, ids, start, n, labels, pr):
    if kind == "count":
        return grouped._count_sort(ids, start, n, labels, pr.touched, pr.tptr, pr.ent, pr.hist, pr.blocks)
    return grouped._radix_sort(ids, start, n, *grouped.sort_digits(labels), pr.touched, pr.tptr, pr.ent, pr.key, pr.tmp,
                               pr.hist, pr.part)


@pytest.mark.parametrize("kind", ["count", "radix"])
@pytest.mark.parametrize("chunks", [1, 3, 7])
@pytest.mark.parametrize("labels", [1, 2, 50, 129, 2 * grouped.SORT_BLOCK + 77, 70_001])
def test_pairs_grouped_by_neuron_match_a_stable_sort(kind, chunks, labels):
    """Both sorts (and group_by_row, which picks the counting sort when the labels are no more than the
    pairs) list the touched neurons in order with their offsets and each neuron's pairs in sample order,
    whether each sample's ids lie in a row of their own or at its start in one flat array (as the input
    features do in the data's CSR)."""
    rng = np.random.default_rng(labels + chunks)
    ids = np.stack([rng.permutation(max(labels, 30))[:30] % labels for _ in range(7)]).astype(np.int32)
    ids[:, :5] = ids[0, :5]  # some neurons shared by every sample
    if labels > 1000:
        ids[:, 5:8] = labels - 1 - np.arange(3)  # the top ids: every bit of both digits, the last block
    n = rng.integers(0, 31, 7).astype(np.int64)
    n[3] = 0
    want_touched, want_ptr, want_ent = _group_twin(ids, n)
    # the same ids in one flat array, each sample's at its own offset (a gap of 3 between samples)
    start = np.arange(7, dtype=np.int64) * 33
    flat = np.full(7 * 33, -1, np.int32)
    for s in range(7):
        flat[start[s]:start[s] + 30] = ids[s]
    with numba.parallel_chunksize(0):
        for sort in (kind, "auto"):
            for layout in ("rows", "flat"):
                # the counting sort's cursors hold a count per label, as many as the buffers' pairs hold at most
                cap = max(30, -(-labels // 7)) if sort == "count" else 30
                pr = grouped.pairs_buffers(7 * cap, labels, chunks)
                pr = pr._replace(**{f: np.full_like(a, -1) for f, a in pr._asdict().items() if f != "part"})
                args = (ids.reshape(-1), np.arange(7, dtype=np.int64) * 30) if layout == "rows" else (flat, start)
                rows = (grouped.group_by_row(*args, n, labels, pr) if sort == "auto"
                        else _sort(kind, *args, n, labels, pr))
                assert rows == want_touched.shape[0]
                np.testing.assert_array_equal(pr.touched[:rows], want_touched)
                np.testing.assert_array_equal(pr.tptr[:rows + 1], want_ptr)
                np.testing.assert_array_equal(pr.ent[:n.sum()], want_ent)


def test_row_pass_needs_a_sampled_output_layer():
    with pytest.raises(ConfigError, match="output_pass: row needs a sampled output layer") as err:
        make(output_pass="row", output_sparsity=1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="output_pass"):
        make(output_pass="rows", output_sparsity=0.5)


def _held(gr):
    return sum(_held(a) if isinstance(a, grouped.Pairs) else a.nbytes for a in gr)


def test_memory_estimate_counts_the_row_buffers():
    """The estimate counts the row pass's buffers as allocated: the active neurons of 1,024 labels per
    point, and under the sparse optimizer (whose row pass groups the input features too) 1,024 features
    per point of a batch."""
    config = validate(SlideMethod.resolve_config("delicious-200k"))
    d, labels = 782_585, 205_443
    cap = min(labels, 1024 + 50 * 128 + 1000)
    for optimizer, features in (("sparse", 128 * 1024), ("dense", 0)):
        over = dict(config, optimizer=optimizer)
        extra = memory_estimate_bytes(d, labels, dict(over, output_pass="row"), 2) - memory_estimate_bytes(
            d, labels, dict(over, output_pass="sample"), 2)
        assert extra == grouped.grouped_bytes(128, cap, labels, [128], 2, d, features)
    assert grouped.grouped_bytes(128, cap, labels, [128], 2, d, 128 * 1024) > grouped.grouped_bytes(
        128, cap, labels, [128], 2) + 128 * 1024 * 36
    model = make(output_pass="row", output_sparsity=0.5, K=2, L=3)
    data = toy_data(8)
    model.train_batch(data, np.arange(8))
    gr = model._grouped
    features = int(data.x_indptr[8] - data.x_indptr[0])
    assert gr.inp.ent.shape[0] == features
    assert _held(gr) == grouped.grouped_bytes(gr.ids.shape[0], gr.ids.shape[1], L, [8], 1, model.num_features,
                                              features)


def test_auto_takes_the_row_pass_once_the_pairs_reach_its_share_of_the_labels():
    """``auto`` runs by sample until the mean active count times the batch reaches AUTO_ROW_SHARE of the
    label count; the choice rests on saved counters, so a model restored from a checkpoint chooses as
    the original."""
    data = toy_data(24, seed=3)
    model = make(output_sparsity=0.5, K=2, L=3, correction="logq")
    assert model.config["output_pass"] == "auto" and not model._row_pass(8)  # nothing counted yet
    _, nactive = model._accumulate(data, np.arange(8))
    model._apply_adam()
    model.active_sum, model.active_count = float(nactive.sum()), 8
    mean = nactive.mean()
    for nb in range(4):
        assert model._row_pass(nb) == (nb * mean >= AUTO_ROW_SHARE * L), nb
    assert not model._row_pass(0) and model._row_pass(3)  # the toy sits between the two
    restored = make(output_sparsity=0.5, K=2, L=3, correction="logq")
    restored.load_state_arrays(model.state_arrays())
    assert restored._row_pass(3) and not restored._row_pass(0)
    assert not make(output_sparsity=1.0)._row_pass(10**6)  # a full softmax always runs by sample
