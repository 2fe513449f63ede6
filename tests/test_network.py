"""The SLIDE network kernels against a float64 NumPy twin of the same network.

With every output neuron active (``output_sparsity: 1``) a training step of the engine must equal,
to 1e-5 relative, the textbook computation: ReLU hidden layers, softmax cross-entropy with soft
targets 1/|y|, gradients of the batch-mean loss, and Adam with bias correction, in both the
``sparse`` (rows touched by the batch) and ``dense`` (every parameter) modes.
"""

import numba
import numpy as np
import pytest

from slide.data.dataset import XCDataset
from slide.engine import SlideMethod
from slide.engine.network import STAMP, exp_f32, sample_seed
from slide.settings import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, FAST

D, L = 40, 12


def toy_data(n=16, seed=0, empty_label_row=None):
    rng = np.random.default_rng(seed)
    xi, xv, yi = [], [], []
    for i in range(n):
        f = np.sort(rng.choice(D, rng.integers(2, 8), replace=False))
        xi.append(f)
        xv.append(rng.uniform(0.2, 1.5, f.size))
        y = np.sort(rng.choice(L, rng.integers(1, 4), replace=False))
        yi.append(y[:0] if i == empty_label_row else y)
    ptr = lambda parts: np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    return XCDataset(ptr(xi), np.concatenate(xi).astype(np.int32), np.concatenate(xv).astype(np.float32),
                     ptr(yi), np.concatenate(yi).astype(np.int32), D, L)


class Twin:
    """Float64 NumPy copy of the network: forward, loss, gradients, Adam (sparse or dense)."""

    def __init__(self, model):
        self.p = {k: getattr(model, k).astype(np.float64).copy() for k in ("W0", "b0", "Wh", "bh", "W2", "b2")}
        self.dims = [int(h) for h in model.dims]
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.lr = model.config["lr"]

    def _layers(self):
        out, wo, bo = [], 0, 0
        for i in range(1, len(self.dims)):
            n_in, n_out = self.dims[i - 1], self.dims[i]
            out.append((slice(wo, wo + n_in * n_out), slice(bo, bo + n_out), n_out, n_in))
            wo += n_in * n_out
            bo += n_out
        return out

    def grads(self, data, rows, masks=None, logq=None):
        """``masks`` (len(rows), sum(dims)) bool: hidden neurons computed (others are 0); None: all.
        ``logq`` (labels,): the sampled-softmax correction, subtracted from every non-target logit."""
        p = self.p
        X = data.to_dense_features(rows).astype(np.float64)
        Y = data.to_dense_labels(rows).astype(np.float64)
        nb = len(rows)
        if masks is None:
            masks = np.ones((nb, sum(self.dims)), bool)
        cut = np.cumsum([0] + self.dims)
        mask = [masks[:, cut[i]:cut[i + 1]] for i in range(len(self.dims))]
        acts = [np.maximum(X @ p["W0"] + p["b0"], 0) * mask[0]]
        for li, (ws, bs, n_out, n_in) in enumerate(self._layers(), start=1):
            acts.append(np.maximum(acts[-1] @ p["Wh"][ws].reshape(n_out, n_in).T + p["bh"][bs], 0) * mask[li])
        z = acts[-1] @ p["W2"].T + p["b2"]
        if logq is not None:
            z = z - np.where(Y > 0, 0.0, logq)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n_lab = Y.sum(axis=1, keepdims=True)
        T = np.divide(Y, n_lab, out=np.zeros_like(Y), where=n_lab > 0)
        losses = -(T * logp).sum(axis=1)
        has = (n_lab[:, 0] > 0)[:, None]
        dz = np.where(has, np.exp(logp) - T, 0.0) / nb
        g = {k: np.zeros_like(v) for k, v in p.items()}
        g["W2"] = dz.T @ acts[-1]
        g["b2"] = dz.sum(axis=0)
        da = dz @ p["W2"]
        for li in range(len(self.dims) - 1, 0, -1):
            ws, bs, n_out, n_in = self._layers()[li - 1]
            delta = da * (acts[li] > 0)
            g["Wh"][ws] = (delta.T @ acts[li - 1]).reshape(-1)
            g["bh"][bs] = delta.sum(axis=0)
            da = delta @ p["Wh"][ws].reshape(n_out, n_in)
        delta = da * (acts[0] > 0)
        g["W0"] = X.T @ delta
        g["b0"] = delta.sum(axis=0)
        touched0 = np.unique(data.subset(rows).x_indices)
        return losses, g, touched0

    def step(self, data, rows, optimizer):
        losses, g, touched0 = self.grads(data, rows)
        self.t += 1
        b1, b2, t = ADAM_BETA1, ADAM_BETA2, self.t
        for k in self.p:
            sel = touched0 if (k == "W0" and optimizer == "sparse") else slice(None)
            m = self.m[k][sel] = b1 * self.m[k][sel] + (1 - b1) * g[k][sel]
            v = self.v[k][sel] = b2 * self.v[k][sel] + (1 - b2) * g[k][sel] ** 2
            self.p[k][sel] -= self.lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + ADAM_EPS)
        return losses


def make(hidden=(8,), optimizer="sparse", threads=1, seed=3, **kw):
    over = dict(hidden=list(hidden), output_sparsity=1.0, optimizer=optimizer, lr=0.01, init_scale=0.3, batch_size=8)
    return SlideMethod.from_config(D, L, overrides={**over, **kw},
                                   seed=seed, threads=threads)


def close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    if not b.size:
        return
    scale = max(np.abs(b).max(), 1e-30)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("hidden", [(8,), (8, 6)])
def test_loss_and_gradients_match_twin(hidden):
    data = toy_data(empty_label_row=3)
    model = make(hidden)
    twin = Twin(model)
    rows = np.arange(10, dtype=np.int64)
    losses, nactive = model._accumulate(data, rows)
    ref_losses, ref_g, _ = twin.grads(data, rows)
    close(losses, ref_losses)
    assert (nactive == L).all()
    got = model._pending_gradients()
    for k in ("W0", "b0", "Wh", "bh", "W2", "b2"):
        if ref_g[k].size:
            close(got[k], ref_g[k])


def test_logq_correction_matches_twin_and_counts_negatives():
    """With every label active (padding to all of them), ``correction: logq`` trains the softmax
    over logit - log q for the negatives and counts, per label, the samples it was a negative in."""
    data = toy_data()
    model = make(output_sparsity=0.5, pad_cap=1.0, min_active=L, min_active_trigger=L, correction="logq")
    model.logq[:] = np.log(np.random.default_rng(5).uniform(0.05, 1.0, L))
    twin = Twin(model)
    rows = np.arange(10, dtype=np.int64)
    losses, nactive = model._accumulate(data, rows)
    assert (nactive == L).all()
    ref_losses, ref_g, _ = twin.grads(data, rows, logq=model.logq.astype(np.float64))
    close(losses, ref_losses)
    got = model._pending_gradients()
    for k in ("W0", "b0", "W2", "b2"):
        close(got[k], ref_g[k])
    np.testing.assert_array_equal(model.qcount, (data.to_dense_labels(rows) == 0).sum(axis=0))


@pytest.mark.parametrize("optimizer", ["sparse", "dense"])
@pytest.mark.parametrize("hidden", [(8,), (8, 6)])
def test_adam_steps_match_twin(optimizer, hidden):
    data = toy_data(24, seed=1)
    model = make(hidden, optimizer)
    twin = Twin(model)
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 24), np.arange(0, 8)]
    for step, rows in enumerate(batches):
        loss = model.train_batch(data, rows)
        ref = twin.step(data, rows, optimizer)
        assert abs(loss - ref.mean()) <= 1e-5 * abs(ref.mean())
        # one step: everything to 1e-5; later steps compound float32 rounding (v is squared)
        for k in ("W0", "b0", "Wh", "bh", "W2", "b2"):
            close(getattr(model, k), twin.p[k])
            close(getattr(model, "m" + k), twin.m[k], rtol=1e-5 if step == 0 else 3e-5)
            close(getattr(model, "v" + k), twin.v[k], rtol=1e-5 if step == 0 else 1e-4)
    # nothing left behind for the next step
    assert all(not g.any() for g in model._pending_gradients().values())
    assert not model.flag0.any() and not model.flag2.any()


def test_sparse_and_dense_adam_differ_only_on_untouched_rows():
    data = toy_data(24, seed=2)
    sparse, dense = make(optimizer="sparse"), make(optimizer="dense")
    for rows in (np.arange(0, 8), np.arange(8, 16)):
        sparse.train_batch(data, rows)
        dense.train_batch(data, rows)
    first = np.unique(data.subset(np.arange(0, 8)).x_indices)
    second = np.unique(data.subset(np.arange(8, 16)).x_indices)
    stale = np.setdiff1d(first, second)            # touched at step 1 only: dense keeps moving them
    assert stale.size and not np.allclose(sparse.W0[stale], dense.W0[stale])
    np.testing.assert_allclose(sparse.W2, dense.W2, rtol=1e-5, atol=1e-6)  # every output row is touched


def test_sample_seed_is_a_function_of_its_arguments():
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3) >= 0
    assert len({sample_seed(s, t, i) for s in range(3) for t in range(3) for i in range(3)}) == 27


def test_every_rebuild_draws_new_hash_functions():
    """A rebuild draws its hash functions from a new seed, for the output and the hidden indices.

    Reusing the old seed would rebuild the same tables from the same functions (only the weights move),
    which a loose statistical threshold elsewhere does not catch.
    """
    from slide.engine.schedule import REBUILD

    model = SlideMethod.from_config(D, L, overrides=dict(hidden=[8, 6], output_sparsity=0.5, hidden_sparsity=[1.0, 0.5],
                                                         K=3, L=4, batch_size=8), seed=3, threads=1)
    indices = [model.index] + [index for _, index in model.hidden_indices]
    assert len(indices) == 2

    def params(index):
        arrays = index.state_arrays()
        return index.seed, {k: v.copy() for k, v in arrays.items() if k not in ("meta", "keys", "ptr", "items")}

    seen = [[params(index)] for index in indices]
    for _ in range(3):
        model._refresh_tables(REBUILD)
        for index, history in zip(indices, seen):
            history.append(params(index))
    for history in seen:
        seeds = [seed for seed, _ in history]
        assert len(set(seeds)) == len(seeds), seeds
        for (_, a), (_, b) in zip(history, history[1:]):
            assert any(not np.array_equal(a[k], b[k]) for k in a)  # new hash functions, not only a new label


def test_stamp_wrap_clears_the_scratch_and_changes_nothing():
    """At the stamp dtype's limit the per-thread stamps wrap: the scratch is cleared, so a step there
    equals a step from fresh scratch (stale stamps equal to the restarted value would hide labels)."""
    data = toy_data()
    rows = np.arange(8, dtype=np.int64)
    fresh = make(output_sparsity=0.5, K=2, L=3)
    wrapped = make(output_sparsity=0.5, K=2, L=3)
    assert wrapped.stamp.dtype == STAMP
    wrapped.stamp_values[:] = np.iinfo(STAMP).max - 1
    wrapped.stamp[:, ::2] = 1  # the value the stamp restarts at (on half the labels, so padding ends)
    want, got = fresh._accumulate(data, rows), wrapped._accumulate(data, rows)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert wrapped.stamp_values[0] == fresh.stamp_values[0] == len(rows)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 64, 1003])
def test_collect_flags_lists_the_set_flags_in_order_and_clears_them(size):
    """Against ``np.flatnonzero``, at lengths around the 8-flag words it tests at once, with runs,
    isolated flags and none set."""
    from slide.engine.network import collect_flags

    rng = np.random.default_rng(size)
    for density in (0.0, 0.02, 0.5, 1.0):
        flag = (rng.random(size) < density).astype(np.uint8)
        want = np.flatnonzero(flag)
        out = np.full(size + 1, -1, np.int64)
        n = collect_flags(flag, out)
        assert n == want.size and out[:n].tolist() == want.tolist() and not flag.any()


@numba.njit(**FAST)
def _exp_all(x, out):
    for i in range(x.shape[0]):  # the softmax's loop shape, so this is the vectorised code
        out[i] = exp_f32(x[i])


def test_exp_f32_matches_numpy_exp_within_its_stated_error():
    """The softmax's float32 exponential against NumPy's float64 one: within 4e-7 relative on its
    domain [-87, 0] (every 1/2**14, and the points where the range reduction changes k), exp(-87) below
    it, exactly 1 at 0, NaN kept."""
    grid = np.arange(-87 * 2**14, 1, dtype=np.int64).astype(np.float64) / 2**14
    steps = (np.arange(-126, 1) + 0.5) * np.log(2)  # where k = round(x / ln 2) steps
    x = np.concatenate([grid, steps, np.nextafter(steps, 0), np.nextafter(steps, -np.inf)]).astype(np.float32)
    x = x[x >= -87]
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - ref) / ref) < 4e-7
    edge = np.array([0.0, -0.0, -88.0, -1e4, -np.inf, np.nan], np.float32)
    got = np.empty_like(edge)
    _exp_all(edge, got)
    assert got[0] == got[1] == 1.0
    assert (got[2:5] == got[2]).all() and abs(got[2] / np.exp(-87.0) - 1) < 4e-7 and got[2] < 2e-38
    assert np.isnan(got[5])
