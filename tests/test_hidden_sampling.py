"""LSH-sampled hidden layers (``hidden_sparsity`` < 1): exact one-step gradients against the float64
twin of ``test_network`` under the kernel's own active masks, configuration errors, checkpointing of
the hidden tables, and learning on Bibtex."""

import math

import numpy as np
import pytest

from slide.engine import SlideMethod
from slide.errors import ConfigError

from test_network import D, L, Twin, close, make, toy_data


@pytest.mark.parametrize("hidden, hs", [((16,), [0.5]), ((16, 12), [0.5, 1.0]), ((16, 12), [1.0, 0.25]),
                                        ((16, 12), [0.5, 0.5])])
# One thread only: with every output active, every sample adds into every row of gW2, and HOGWILD's
# lock-free adds on two threads may lose one (by design), which an exact comparison cannot allow; it
# failed 2 of 4 full runs on this 2-core machine. The parallel path is trained in the Bibtex test below.
@pytest.mark.parametrize("threads", [1])
def test_sampled_hidden_gradients_match_masked_twin(hidden, hs, threads):
    data = toy_data(empty_label_row=3)
    model = make(hidden, hidden_sparsity=hs, threads=threads)
    twin = Twin(model)
    rows = np.arange(10, dtype=np.int64)
    masks = model.hidden_active_masks(data, rows)
    cut = np.cumsum([0, *hidden])
    for li, (h, frac) in enumerate(zip(hidden, hs)):
        per = masks[:, cut[li]:cut[li + 1]].sum(axis=1)
        assert (per == (h if frac == 1.0 else math.ceil(frac * h))).all()
    assert not masks.all()
    losses, nactive = model._accumulate(data, rows)
    ref_losses, ref_g, _ = twin.grads(data, rows, masks)
    close(losses, ref_losses)
    got = model._pending_gradients()
    for k in ("W0", "b0", "Wh", "bh", "W2", "b2"):
        if ref_g[k].size:
            close(got[k], ref_g[k])
    # the masks differ from the dense network's: the sampled loss is not the dense one
    dense_losses, _, _ = twin.grads(data, rows)
    assert not np.allclose(ref_losses, dense_losses)


def test_dense_hidden_sparsity_is_the_default_path():
    data = toy_data(24, seed=1)
    a, b = make((8, 6)), make((8, 6), hidden_sparsity=[1.0, 1.0])
    assert a.config["hidden_sparsity"] == [1.0, 1.0] and not b.hidden_sampled
    for rows in (np.arange(0, 8), np.arange(8, 16)):
        assert a.train_batch(data, rows) == b.train_batch(data, rows)
    np.testing.assert_array_equal(a.W0, b.W0)
    assert not any(k.startswith("lsh_hidden") for k in b.state_arrays())


@pytest.mark.parametrize("value", [[0.0], [1.5], [0.5, 0.5], ["x"], [True], "half", [float("nan")]])
def test_bad_hidden_sparsity_names_the_key(value):
    with pytest.raises(ConfigError, match="hidden_sparsity"):
        SlideMethod.from_config(D, L, overrides={"hidden": [8], "hidden_sparsity": value})


def test_hidden_tables_are_rehashed_and_checkpointed(tmp_path):
    data = toy_data(64, seed=4)
    kw = dict(hidden_sparsity=[0.5, 0.5], rehash_every=16, rebuild_every=48)
    straight, first = make((16, 12), **kw), make((16, 12), **kw)
    batches = [np.arange(s * 8, (s + 1) * 8) % 64 for s in range(10)]
    for rows in batches:
        straight.train_batch(data, rows)
    before = {k: v.copy() for k, v in first.state_arrays().items() if k.startswith("lsh_hidden")}
    assert {k.split("__")[0] for k in before} == {"lsh_hidden0", "lsh_hidden1"}
    for rows in batches[:6]:
        first.train_batch(data, rows)
    assert first.stats()["rehash_count"] >= 1 and first.stats()["rebuild_count"] >= 1
    after = first.state_arrays()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    first.save(tmp_path / "m.npz")
    resumed = SlideMethod.load(tmp_path / "m.npz")
    for k in before:
        np.testing.assert_array_equal(resumed.state_arrays()[k], after[k])
    for rows in batches[6:]:
        resumed.train_batch(data, rows)
    for k in ("W0", "Wh", "W2", "mW0"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(straight, k))


@pytest.mark.slow
def test_bibtex_with_sampled_hidden_layer_learns(bibtex_dir):
    from slide.data import load_split

    tr = load_split(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "bibtex_trSplit.txt", 1)
    te = load_split(bibtex_dir / "Bibtex_data.txt", bibtex_dir / "bibtex_tstSplit.txt", 1)
    m = SlideMethod.from_config(tr.num_features, tr.num_labels, seed=0, threads=2,
                                overrides=dict(hidden=[128], hidden_sparsity=[0.5], output_sparsity=0.3))
    rng = np.random.default_rng(0)
    for epoch in range(10):
        order = rng.permutation(len(tr))
        for s in range(0, len(order), m.batch_size):
            m.train_batch(tr, order[s:s + m.batch_size])
    rows = np.arange(len(te))
    pred = m.predict_topk(te, rows, k=1)[:, 0]
    hits = np.array([pred[i] in te.y_indices[te.y_indptr[i]:te.y_indptr[i + 1]] for i in rows])
    baseline = np.bincount(tr.y_indices, minlength=tr.num_labels).argmax()
    base = np.mean([baseline in te.y_indices[te.y_indptr[i]:te.y_indptr[i + 1]] for i in rows])
    assert hits.mean() >= 0.45 and hits.mean() > base + 0.2, (hits.mean(), base)
