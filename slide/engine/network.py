"""Numba kernels of the SLIDE network: forward, backward, Adam, and dense scoring of the hidden layer.

Layout (float32, C order, one contiguous row per neuron or input feature; with ``precision: bf16``
the weights and Adam moments of ``W0`` and ``W2`` are bfloat16 in uint16 arrays, which every kernel
reads and writes through the accessors of :mod:`slide.engine.precision`):

``W0`` (D, H0), ``b0`` (H0,)
    First hidden layer, stored input-major: a sample gathers the rows of its non-zero features.
``Wh`` (sum H_l * H_{l-1},), ``bh`` (sum H_l,)
    Further hidden layers, flat; layer l is an (H_l, H_{l-1}) block, one row per neuron.
``W2`` (L, H), ``b2`` (L,)
    Output layer, one row per label; a sample gathers the rows of its active labels.

A training step is :func:`train_kernel` (every sample of the batch in parallel, HOGWILD: the
samples add their gradients into the shared row buffers ``W0.g`` / ``W2.g`` without locks and flag
the rows they touched) followed by Adam over the touched rows only (:func:`adam_sparse`) or over
every parameter (:func:`adam_dense`), one parallel region each, their arguments grouped in the
named tuples below (:data:`Batch`, :data:`RowParam`, ...). The small dense parts (``b0``, the
further hidden layers) and the output biases are accumulated per thread and summed, so they lose
no updates and share no cache lines.

Dense scoring for evaluation is :func:`hidden_rows` (activations of a chunk of points) followed by
:func:`slide.engine.scoring.exact_topk`; :func:`sparse_predict` ranks only the LSH-retrieved labels.

Performance notes: hot loops index 2-d arrays directly (or call ``inline="always"`` helpers) rather
than pass row views to other kernels, since each such call updates the arrays' shared reference
counts atomically from every thread; scattered rows are prefetched a few rows ahead.

Hidden-layer sampling (``hidden_sparsity`` < 1): :func:`hidden_forward_sampled` computes, per
sampled layer, only the ``k`` neurons chosen by an LSH lookup of the layer's *input* (the sparse
sample for the first layer, the previous activation otherwise): fixed top-k by table collisions
(``MODE_TOPK``), padded with distinct random neurons to exactly ``k`` when fewer are retrieved. The
other neurons are 0, so the unchanged backward gives them (and the weights into them) no gradient.
Training passes ``hs=None`` when no hidden layer is sampled, a branch Numba removes at compile
time, so the dense path compiles to the same code as before.

The output layer's active set comes from :func:`slide.engine.sampling.select_active` (LSH
retrieval, the true labels always included); with ``lsh=None`` every output neuron is active
(a full softmax), a branch Numba removes at compile time.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba
import numpy as np
from numba import prange

from ..settings import FAST, FAST_PARALLEL, NJIT
from .intrinsics import f32_from_bits, prefetch
from .precision import col_noise, load, load1, noise, per_line, row_noise, store1_sr, store_sr
from .rng import GOLDEN, MIX1, MIX2, mix64
from .sampling import MODE_TOPK, pad_random, select_active, select_active_sparse


#: Rows ahead that the output-layer and Adam loops prefetch (the rows are scattered in memory).
PREFETCH_AHEAD = 6
#: Rows per task of the dense Adam step.
DENSE_ROWS_PER_TASK = 128

# The training kernels take their arrays grouped in these named tuples, which ``SlideMethod`` builds
# in one place. A parallel loop cannot capture a tuple of tuples, so none of them nests another.

#: A training batch: CSR features and labels of the data set, and the points ``rows`` to train on.
Batch = namedtuple("Batch", "x_indptr x_indices x_data y_indptr y_indices rows")
#: A row-sparse parameter (``W0``, ``W2``): weights ``w``, Adam moments ``m`` and ``v`` (float32, or
#: all three bfloat16 in uint16), gradient ``g`` (float32; all four the same shape), ``flag`` (uint8
#: per row, set by a sample that touches the row) and ``rows`` (int64 per row, where the sparse Adam
#: collects the flagged rows).
RowParam = namedtuple("RowParam", "w m v g flag rows")
#: A 1-d parameter updated whole (``b0``, ``Wh``, ``bh``; ``b2`` row by row with ``W2``): ``w``, ``m``,
#: ``v``, ``g`` as :data:`RowParam`, and ``g_t``, per-thread gradient rows summed into ``g`` by Adam.
SumParam = namedtuple("SumParam", "w m v g g_t")
#: The output layer's active-set selection (:func:`slide.engine.sampling.select_active`) and the
#: sampled-softmax correction ``logq`` / ``qcount`` (see :func:`train_kernel`).
Selection = namedtuple("Selection", "mode k_or_t min_active min_trigger logq qcount")
#: Per-thread training scratch, one row per Numba thread id: the active-set ``stamp`` (of dtype
#: :data:`STAMP`)/``counts`` and running ``stamp_values``, the ``active`` ids, label marks ``tgt`` (uint8:
#: 1 on the sample's labels, whose soft target is 1/|labels|; a byte, for the reason of :data:`STAMP`:
#: the softmax reads the mark of every active neuron), ``logits``, activations ``acts`` and their
#: gradients ``dacts``.
Scratch = namedtuple("Scratch", "stamp counts stamp_values active tgt logits acts dacts")
#: Dtype of every stamp array. A byte: a thread's stamps of 670,091 labels then fit its core's L2
#: (654 KiB, against 2.6 MiB as int32), where the LSH lookup and the random padding test and set a
#: thousand scattered ones per sample (select phase 14-17% faster, reports/benchmarks.md); the array
#: is cleared once per 254 samples, when the running value wraps (:func:`_next_stamp`).
STAMP = np.dtype(np.uint8)
#: Hidden-layer sampling (:func:`hidden_forward_sampled`): per layer the table ``slot`` (-1: dense)
#: and ``k``; per thread the scratch ``stamp``, ``counts``, active ids ``act``, their number ``n`` and
#: the running stamp value ``sv``.
HiddenSampling = namedtuple("HiddenSampling", "slot k stamp counts act n sv")
#: Adam's step constants (float32); ``lr_t`` and ``eps_t`` carry the bias correction of step t:
#: ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``, ``eps_t = eps * sqrt(1 - beta2**t)``;
#: ``key`` (uint64, :func:`adam_key`) seeds the stochastic rounding of bfloat16 stores.
Hyper = namedtuple("Hyper", "lr_t beta1 beta2 eps_t key")


@numba.njit(inline="always", **NJIT)
def prefetch_row(arr, r):
    """Prefetch every cache line of row ``r`` of a 2-d array (float32 or bfloat16)."""
    for c in range(0, arr.shape[1], per_line(arr)):
        prefetch(arr, r, c)


@numba.njit(**NJIT)
def sample_seed(seed, step, index):
    """A non-negative 63-bit seed for sample ``index`` of step ``step`` (splitmix64 of the triple)."""
    z = np.uint64(seed) * GOLDEN + np.uint64(step) * MIX1 + np.uint64(index) * MIX2 + GOLDEN
    return np.int64(mix64(z) >> np.uint64(1))


@numba.njit(**NJIT)
def _adam_key(seed, step):
    return mix64(np.uint64(seed) * MIX2 + np.uint64(step) * GOLDEN + MIX1)


def adam_key(seed: int, step: int) -> np.uint64:
    """The key of Adam step ``step`` of a model seeded ``seed`` (:data:`Hyper`), as a NumPy uint64:
    Numba returns a Python int, which it would type as int64 or uint64 depending on its value (two
    compilations of every Adam kernel)."""
    return np.uint64(_adam_key(seed, step))


@numba.njit(inline="always", **FAST)
def _input_layer(xi, xv, W0, b0, h0, acts):
    """Every first-layer activation for one sparse input: rows of W0 gathered per feature."""
    for j in range(h0):
        acts[j] = b0[j]
    for p in range(xi.shape[0]):
        f = xi[p]
        v = xv[p]
        for j in range(h0):
            acts[j] += v * load(W0, f, j)
    for j in range(h0):
        if acts[j] < 0:
            acts[j] = 0


@numba.njit(inline="always", **FAST)
def _unit(Wh, bh, acts, j, n_in, off, woff, boff):
    """ReLU activation of neuron ``j`` of the layer whose input is ``acts[off - n_in:off]``."""
    s = bh[boff + j]
    w = woff + j * n_in
    for q in range(n_in):
        s += Wh[w + q] * acts[off - n_in + q]
    return s if not s < 0 else 0


@numba.njit(**FAST)
def hidden_forward(xi, xv, W0, b0, Wh, bh, dims, acts):
    """Activations of every hidden layer for one sparse input, into ``acts`` (sum(dims),).

    ReLU everywhere; NaN propagates (a diverged model yields NaN scores, not zeros).
    """
    h0 = dims[0]
    _input_layer(xi, xv, W0, b0, h0, acts)
    off, woff, boff = h0, 0, 0
    for layer in range(1, dims.shape[0]):
        n_in, n_out = dims[layer - 1], dims[layer]
        for j in range(n_out):
            acts[off + j] = _unit(Wh, bh, acts, j, n_in, off, woff, boff)
        off += n_out
        woff += n_out * n_in
        boff += n_out


@numba.njit(**NJIT)
def _layer_seed(rng_seed, layer):
    """The padding seed of hidden layer ``layer`` for a sample whose seed is ``rng_seed``."""
    return sample_seed(rng_seed, layer + 1, 0x5EED)


@numba.njit(**NJIT)
def _next_stamp(stamp, hsv):
    """The next stamp value (of ``stamp``'s dtype) from the running counter ``hsv`` (1,); at the dtype's
    largest value the stamps wrap: ``stamp`` is cleared and the count restarts at 1."""
    v = hsv[0] + 1
    if v >= np.iinfo(stamp.dtype).max:
        stamp[:] = 0
        v = 1
    hsv[0] = v
    return stamp.dtype.type(v)


@numba.njit(**FAST)
def hidden_forward_sampled(xi, xv, W0, b0, Wh, bh, dims, acts, hlsh, hslot, hk, stamp, counts, hact, hn,
                           hsv, rng_seed):
    """:func:`hidden_forward` with LSH-sampled layers; non-selected neurons are 0.

    ``hslot[l]`` is layer l's index in the tuple ``hlsh`` of ``LSHIndex.arrays`` (-1: dense layer),
    ``hk[l]`` its k. The active ids of layer l go to ``hact[l, :hn[l]]`` (dense layers: ``hn[l]`` =
    width, ``hact`` untouched). ``stamp``/``counts`` (max width,) are scratch; ``hsv`` (1,) the
    running stamp value. Deterministic given the weights, the tables, the input and ``rng_seed``.
    """
    empty = np.empty(0, np.int32)
    h0 = dims[0]
    slot = hslot[0]
    if slot < 0:
        _input_layer(xi, xv, W0, b0, h0, acts)
        hn[0] = h0
    else:
        sv = _next_stamp(stamp, hsv)
        k = hk[0]
        act = hact[0]
        seed = _layer_seed(rng_seed, 0)
        n = select_active_sparse(hlsh[slot], xi, xv, empty, MODE_TOPK, k, k, k, h0, stamp, counts, sv, seed, act)
        if n < k:
            n = pad_random(n, k, h0, stamp, sv, seed, act)
        hn[0] = n
        for j in range(h0):
            acts[j] = 0
        for i in range(n):
            j = act[i]
            s = b0[j]
            for p in range(xi.shape[0]):
                s += xv[p] * load(W0, xi[p], j)
            acts[j] = s if not s < 0 else 0
    off, woff, boff = h0, 0, 0
    for layer in range(1, dims.shape[0]):
        n_in, n_out = dims[layer - 1], dims[layer]
        slot = hslot[layer]
        if slot < 0:
            for j in range(n_out):
                acts[off + j] = _unit(Wh, bh, acts, j, n_in, off, woff, boff)
            hn[layer] = n_out
        else:
            sv = _next_stamp(stamp, hsv)
            k = hk[layer]
            act = hact[layer]
            seed = _layer_seed(rng_seed, layer)
            n = select_active(hlsh[slot], acts[off - n_in:off], empty, MODE_TOPK, k, k, k, n_out, stamp, counts,
                              sv, seed, act)
            if n < k:
                n = pad_random(n, k, n_out, stamp, sv, seed, act)
            hn[layer] = n
            for j in range(n_out):
                acts[off + j] = 0
            for i in range(n):
                acts[off + act[i]] = _unit(Wh, bh, acts, act[i], n_in, off, woff, boff)
        off += n_out
        woff += n_out * n_in
        boff += n_out


@numba.njit(**NJIT)
def hidden_masks(x_indptr, x_indices, x_data, rows, W0, b0, Wh, bh, dims, hlsh, hslot, hk, seed, step, masks):
    """The hidden active sets a training step ``step`` would use for the batch ``rows`` (sample s
    of the batch gets ``sample_seed(seed, step, s)``): ``masks`` (len(rows), sum(dims)) uint8,
    1 where a neuron is computed. Single-threaded; for checks and tests."""
    nl = dims.shape[0]
    hmax = 0
    for layer in range(nl):
        hmax = max(hmax, dims[layer])
    acts = np.zeros(masks.shape[1], np.float32)
    stamp = np.zeros(hmax, np.int32)
    counts = np.zeros(hmax, np.int32)
    hact = np.zeros((nl, hmax), np.int32)
    hn = np.zeros(nl, np.int64)
    hsv = np.zeros(1, np.int64)
    for s in range(rows.shape[0]):
        r = rows[s]
        a, b = x_indptr[r], x_indptr[r + 1]
        hidden_forward_sampled(x_indices[a:b], x_data[a:b], W0, b0, Wh, bh, dims, acts, hlsh, hslot, hk,
                               stamp, counts, hact, hn, hsv, sample_seed(seed, step, s))
        off = 0
        for layer in range(nl):
            if hslot[layer] < 0:
                for j in range(dims[layer]):
                    masks[s, off + j] = 1
            else:
                for i in range(hn[layer]):
                    masks[s, off + hact[layer, i]] = 1
            off += dims[layer]


@numba.njit(inline="always", **FAST)
def _output_forward(W2, b2, a, labels, active, n, tgt, logits, logq, qcount):
    """Softmax cross-entropy over the ``n`` active output neurons; returns (loss, 1 / sum of exp).

    Marks ``labels`` in ``tgt`` (:func:`_output_backward` clears them) and leaves the
    unnormalised probabilities in ``logits``.
    """
    hl = a.shape[0]
    for i in range(n):
        j = active[i]
        if i + PREFETCH_AHEAD < n:
            prefetch_row(W2, active[i + PREFETCH_AHEAD])
        s = b2[j]
        for q in range(hl):
            s += load(W2, j, q) * a[q]
        logits[i] = s
    return softmax_loss(labels, active, n, tgt, logits, logq, qcount)


#: :func:`exp_f32`'s constants: log2(e), ln 2 in two parts (the high part exact in 16 bits, so
#: ``k * _LN2_HI`` is exact for the ``|k| <= 126`` it meets) and the argument below which it returns
#: its smallest value.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)
_LN2_LO = np.float32(1.428606765330187e-06)
_EXP_LOW = np.float32(-87.0)


@numba.njit(inline="always", **FAST)
def exp_f32(x):
    """``exp(x)`` of a float32 ``x <= 0`` in float32 arithmetic a vectorising loop can take (without a
    vector math library LLVM would call the scalar ``exp`` once per value): ``2**k * exp(r)`` with
    ``k = round(x / ln 2)``, ``|r| <= ln 2 / 2`` and ``exp(r)`` by its Taylor polynomial of degree 7
    (truncation below 6e-9). Relative error within 4e-7 of the true value; below -87 it returns
    exp(-87) = 1.6e-38 instead of a smaller or zero value; NaN stays NaN."""
    x = x if not x < _EXP_LOW else _EXP_LOW
    k = np.floor(x * _LOG2E + np.float32(0.5))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * f32_from_bits(np.int32(np.int32(k) + np.int32(127)) << np.int32(23))


@numba.njit(inline="always", **FAST)
def softmax_loss(labels, active, n, tgt, logits, logq, qcount):
    """Softmax cross-entropy of the logits ``logits[:n]`` of the neurons ``active[:n]``; returns
    (loss, 1 / sum of exp).

    Marks ``labels`` in ``tgt`` (1; each one's soft target is 1/|labels|; the caller clears them) and
    leaves the unnormalised probabilities in ``logits``. With a sampled-softmax correction (``logq`` not empty) a
    sampled negative's logit becomes ``logit - logq`` (it stands for 1/q of its kind) and ``qcount``
    counts it.
    """
    w = np.float32(1.0) / np.float32(labels.shape[0])
    for p in range(labels.shape[0]):
        tgt[labels[p]] = 1
    correct = logq.shape[0] > 0
    mx = -np.inf
    zt = 0.0
    tsum = 0.0
    for i in range(n):
        j = active[i]
        tj = np.float32(w * tgt[j])
        if correct and tj == 0:
            logits[i] -= logq[j]
            qcount[j] += 1
        s = logits[i]
        if s > mx:
            mx = s
        if tj != 0:
            zt += tj * s
            tsum += tj
    zsum = 0.0
    mx32 = np.float32(mx)
    for i in range(n):
        e = exp_f32(logits[i] - mx32)
        logits[i] = e
        zsum += e
    return tsum * (mx + math.log(zsum)) - zt, 1.0 / zsum


@numba.njit(inline="always", **FAST)
def logit_grad(p, inv_z, t, inv_b):
    """Gradient of the batch-mean loss by a logit: (probability - target) / batch size."""
    return np.float32((p * inv_z - t) * inv_b)


@numba.njit(inline="always", **FAST)
def _output_backward(W2, gW2, gb2, flag2, a, da, labels, active, n, tgt, logits, inv_z, inv_b):
    """Backward through the output layer: ``da`` (the last hidden layer's gradient) and the active
    rows of ``gW2`` / ``gb2`` (flagged in ``flag2``); clears ``tgt``."""
    hl = a.shape[0]
    w = np.float32(1.0) / np.float32(labels.shape[0])
    for q in range(hl):
        da[q] = 0
    for i in range(n):
        j = active[i]
        if i + PREFETCH_AHEAD < n:
            jn = active[i + PREFETCH_AHEAD]
            prefetch_row(W2, jn)
            prefetch_row(gW2, jn)
        g = logit_grad(logits[i], inv_z, np.float32(w * tgt[j]), inv_b)
        for q in range(hl):
            da[q] += g * load(W2, j, q)
            gW2[j, q] += g * a[q]
        gb2[j] += g
        if flag2[j] == 0:  # read first: no write, so no cache-line ping-pong between threads
            flag2[j] = 1
    for p in range(labels.shape[0]):
        tgt[labels[p]] = 0


@numba.njit(inline="always", **FAST)
def _hidden_backward(Wh, gWh, gbh, dims, acts, dacts):
    """Backward through the further hidden layers, last to second: delta = da * relu'(z) into
    ``gWh`` / ``gbh``, and the first layer's activation gradient into ``dacts[:dims[0]]``."""
    nl = dims.shape[0]
    off = acts.shape[0] - dims[nl - 1]
    woff = Wh.shape[0]
    boff = gbh.shape[0]
    for layer in range(nl - 1, 0, -1):
        n_out, n_in = dims[layer], dims[layer - 1]
        woff -= n_out * n_in
        boff -= n_out
        prev = off - n_in
        for q in range(n_in):
            dacts[prev + q] = 0
        for j in range(n_out):
            d = dacts[off + j] if acts[off + j] > 0 else np.float32(0)
            if d != 0:
                gbh[boff + j] += d
                w = woff + j * n_in
                for q in range(n_in):
                    gWh[w + q] += d * acts[prev + q]
                    dacts[prev + q] += d * Wh[w + q]
        off = prev


@numba.njit(inline="always", **FAST)
def _input_delta(gb0, acts, dacts):
    """The first hidden layer's delta (its activation gradient times relu') in place in ``dacts``,
    added into ``gb0``."""
    for j in range(gb0.shape[0]):
        if not acts[j] > 0:
            dacts[j] = 0
        gb0[j] += dacts[j]


@numba.njit(inline="always", **FAST)
def _input_rows(xi, xv, gW0, flag0, dacts):
    """The first layer's delta times each input feature's value, added into the feature's ``gW0`` row,
    which is flagged for Adam."""
    h0 = gW0.shape[1]
    for p in range(xi.shape[0]):
        f = xi[p]
        v = xv[p]
        for j in range(h0):
            gW0[f, j] += v * dacts[j]
        if flag0[f] == 0:
            flag0[f] = 1


@numba.njit(**FAST)
def forward_select(r, t, rng_seed, batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hlsh, acts):
    """The hidden layers of one sample (row ``r``) into ``acts`` and its active output neurons into
    ``scratch.active[t][:n]`` (labels first), by thread ``t``; returns ``n`` (every neuron when ``lsh`` is
    None). Arguments as :func:`train_kernel`; ``hlsh`` is ``(hl0, hl1, hl2, hl3)``."""
    xa, xb = batch.x_indptr[r], batch.x_indptr[r + 1]
    xi = batch.x_indices[xa:xb]
    xv = batch.x_data[xa:xb]
    sv = _next_stamp(scratch.stamp[t], scratch.stamp_values[t:t + 1])
    if hs is None:
        hidden_forward(xi, xv, W0.w, b0.w, Wh.w, bh.w, dims, acts)
    else:
        hidden_forward_sampled(xi, xv, W0.w, b0.w, Wh.w, bh.w, dims, acts, hlsh, hs.slot, hs.k, hs.stamp[t],
                               hs.counts[t], hs.act[t], hs.n[t], hs.sv[t:t + 1], rng_seed)
    num_items = W2.w.shape[0]
    if lsh is None:
        return num_items
    labels = batch.y_indices[batch.y_indptr[r]:batch.y_indptr[r + 1]]
    a = acts[acts.shape[0] - dims[dims.shape[0] - 1]:]
    return select_active(lsh, a, labels, sel.mode, sel.k_or_t, sel.min_active, sel.min_trigger, num_items,
                         scratch.stamp[t], scratch.counts[t], sv, rng_seed, scratch.active[t])


@numba.njit(**FAST)
def backward_hidden(r, t, batch, dims, W0, b0, Wh, bh, acts, dacts, input_rows=True):
    """Backward of one sample (row ``r``, thread ``t``) from its last hidden layer's gradient in ``dacts``
    through the hidden and input layers into the gradient buffers; without ``input_rows`` it stops at the
    first layer's delta (in ``dacts``) and ``b0``'s gradient, and leaves the ``W0`` rows to the caller."""
    _hidden_backward(Wh.w, Wh.g_t[t], bh.g_t[t], dims, acts, dacts)
    _input_delta(b0.g_t[t], acts, dacts)
    if input_rows:
        xa, xb = batch.x_indptr[r], batch.x_indptr[r + 1]
        _input_rows(batch.x_indices[xa:xb], batch.x_data[xa:xb], W0.g, W0.flag, dacts)


@numba.njit(**FAST)
def _sample_step(r, t, rng_seed, inv_b, batch, dims, W0, b0, Wh, bh, W2, b2, lsh, sel, scratch, hs, hlsh):
    """Forward and backward of one sample (row ``r``) by thread ``t``; returns (loss, active count).

    Arguments as :func:`train_kernel`; ``hlsh`` is ``(hl0, hl1, hl2, hl3)``. The thread uses row
    ``t`` of the per-thread arrays.
    """
    acts = scratch.acts[t]
    dacts = scratch.dacts[t]
    n = forward_select(r, t, rng_seed, batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hlsh, acts)
    labels = batch.y_indices[batch.y_indptr[r]:batch.y_indptr[r + 1]]
    if labels.shape[0] == 0:
        return 0.0, n
    last = acts.shape[0] - dims[dims.shape[0] - 1]
    active = scratch.active[t]
    tgt = scratch.tgt[t]
    logits = scratch.logits[t]
    loss, inv_z = _output_forward(W2.w, b2.w, acts[last:], labels, active, n, tgt, logits, sel.logq, sel.qcount)
    _output_backward(W2.w, W2.g, b2.g_t[t], W2.flag, acts[last:], dacts[last:], labels, active, n, tgt, logits,
                     inv_z, inv_b)
    backward_hidden(r, t, batch, dims, W0, b0, Wh, bh, acts, dacts)
    return loss, n


@numba.njit(**FAST_PARALLEL)
def train_kernel(batch, dims, W0, b0, Wh, bh, W2, b2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3,
                 seed, step, losses, nactive):
    """Forward and backward of every sample of ``batch.rows`` (HOGWILD).

    ``W0`` and ``W2`` are :data:`RowParam`, ``b0``, ``Wh``, ``bh``, ``b2`` :data:`SumParam`; the kernel
    adds the gradients into ``W0.g``/``W2.g`` (flagging the rows) and into the per-thread rows
    ``g_t`` of the others (16 output biases share a cache line; the Adam kernels sum them). ``lsh``
    is the output layer's ``LSHIndex.arrays`` (None: every output neuron is active), ``sel`` a
    :data:`Selection`, ``scratch`` a :data:`Scratch`. ``hs`` is None when every hidden layer is dense,
    else a :data:`HiddenSampling`, and ``hl0..hl3`` the ``LSHIndex.arrays`` of the sampled hidden
    layers by slot (unused slots repeat slot 0; None with ``hs``): four arguments, not one tuple,
    because a parallel loop cannot capture a tuple of tuples. Sample s draws its random padding
    from ``sample_seed(seed, step, s)``.

    Samples are dealt to the threads dynamically (set ``numba.set_parallel_chunksize``); a thread
    uses row ``tid = numba.get_thread_id()`` of every per-thread array, so these need
    ``numba.get_num_threads()`` rows. Fills ``losses`` and ``nactive`` per sample and the gradient
    buffers (of the batch-mean loss); returns nothing.

    ``sel.logq`` (float32, one per label, or empty for no correction) is the log of each label's
    probability of being sampled as a negative: a sampled negative's logit becomes ``logit - logq``
    in the softmax (the sampled-softmax correction), and ``sel.qcount[j]`` counts the samples in
    which label j was a sampled negative (HOGWILD adds, approximate by design).
    """
    rows = batch.rows
    nb = rows.shape[0]
    inv_b = 1.0 / nb
    for s in prange(nb):
        t = numba.get_thread_id()
        loss, n = _sample_step(rows[s], t, sample_seed(seed, step, s), inv_b, batch, dims, W0, b0, Wh, bh, W2, b2,
                               lsh, sel, scratch, hs, (hl0, hl1, hl2, hl3))
        losses[s] = loss
        nactive[s] = n


@numba.njit(inline="always", **FAST)
def _adam_values(wv, mv, vv, gc, h):
    """Adam's new ``m``, ``v`` and weight (float32) from their old values and the gradient ``gc``."""
    lr_t, beta1, beta2, eps_t, _ = h
    mc = beta1 * mv + (np.float32(1) - beta1) * gc
    vc = beta2 * vv + (np.float32(1) - beta2) * gc * gc
    return mc, vc, wv - lr_t * mc / (np.sqrt(vc) + eps_t)


@numba.njit(inline="always", **FAST)
def adam_entry(w, m, v, r, gc, h):
    """Adam on entry ``r`` of flat parameters with the gradient ``gc``. ``w``, ``m``, ``v`` may be
    bfloat16: the step uses the float32 ``m``, ``v`` it computed, each store rounds stochastically
    (one :func:`~.precision.noise` per entry, a 16-bit lane each for m, v, w)."""
    u = noise(w, h.key, r)
    mc, vc, wc = _adam_values(load1(w, r), load1(m, r), load1(v, r), gc, h)
    store1_sr(m, r, mc, u)
    store1_sr(v, r, vc, u >> np.uint64(16))
    store1_sr(w, r, wc, u >> np.uint64(32))


@numba.njit(inline="always", **FAST)
def adam_span(w, m, v, g, lo, hi, h):
    """:func:`adam_entry` on entries lo..hi-1 with their gradients in ``g``, which it clears. (Inlined:
    a call per row would cost atomic reference-count updates on the shared arrays.)"""
    for r in range(lo, hi):
        adam_entry(w, m, v, r, g[r], h)
        g[r] = 0


@numba.njit(inline="always", **FAST)
def adam_row(W, M, V, G, g_row, r, h):
    """Adam on row ``r`` of (n, h) parameters with the gradient in row ``g_row`` of ``G`` (the
    parameter's own gradient rows, ``g_row = r``, or a one-row buffer), which it clears. Storage as
    :func:`adam_span`, the bits of entry (r, c) from :func:`~.precision.row_noise` of ``r`` and
    :func:`~.precision.col_noise` of ``c`` (the same in the sparse and the dense update)."""
    base = row_noise(W, h.key, r)
    for c in range(W.shape[1]):
        u = col_noise(base, c)
        mc, vc, wc = _adam_values(load(W, r, c), load(M, r, c), load(V, r, c), G[g_row, c], h)
        store_sr(M, r, c, mc, u)
        store_sr(V, r, c, vc, u >> np.uint64(16))
        store_sr(W, r, c, wc, u >> np.uint64(32))
        G[g_row, c] = 0


@numba.njit(inline="always", **FAST)
def _prefetch_param_row(P, r):
    """Prefetch row ``r`` of a :data:`RowParam`'s weights, moments and gradient."""
    prefetch_row(P.w, r)
    prefetch_row(P.m, r)
    prefetch_row(P.v, r)
    prefetch_row(P.g, r)


@numba.njit(**FAST)
def _reduce_threads(g, g_t):
    """g += sum of the per-thread rows of g_t; clear g_t."""
    for t in range(g_t.shape[0]):
        for i in range(g.shape[0]):
            g[i] += g_t[t, i]
            g_t[t, i] = 0


@numba.njit(**FAST)
def _adam_small(b0, Wh, bh, h):
    """Adam on the small dense parameters (:data:`SumParam`), after summing their thread rows."""
    _reduce_threads(b0.g, b0.g_t)
    _reduce_threads(Wh.g, Wh.g_t)
    _reduce_threads(bh.g, bh.g_t)
    adam_span(b0.w, b0.m, b0.v, b0.g, 0, b0.w.shape[0], h)
    adam_span(Wh.w, Wh.m, Wh.v, Wh.g, 0, Wh.w.shape[0], h)
    adam_span(bh.w, bh.m, bh.v, bh.g, 0, bh.w.shape[0], h)


@numba.njit(**FAST_PARALLEL)
def adam_sparse(W0, b0, Wh, bh, W2, b2, h):
    """One Adam step over what the batch touched, in a single parallel region.

    Parameters as :func:`train_kernel`, ``h`` a :data:`Hyper`. The flagged rows of ``W0`` (input
    features seen) and of ``W2`` with their ``b2`` entries (output neurons active for some sample)
    are collected into ``W0.rows`` / ``W2.rows`` (flags cleared) and updated in parallel; the small
    dense parts (``b0``, further hidden layers) are updated whole, after summing their per-thread
    gradients. Gradients of the updated entries are cleared. Returns ``(n0, n2)``, the rows updated.
    """
    rows0, rows2 = W0.rows, W2.rows
    n0 = collect_flags(W0.flag, rows0)
    n2 = collect_flags(W2.flag, rows2)
    _adam_small(b0, Wh, bh, h)
    gb2, gb2_t = b2.g, b2.g_t
    for i in prange(n0 + n2):
        if i + PREFETCH_AHEAD < n0:
            _prefetch_param_row(W0, rows0[i + PREFETCH_AHEAD])
        elif n0 <= i + PREFETCH_AHEAD < n0 + n2:
            _prefetch_param_row(W2, rows2[i + PREFETCH_AHEAD - n0])
        if i < n0:
            adam_row(W0.w, W0.m, W0.v, W0.g, rows0[i], rows0[i], h)
        else:
            r = rows2[i - n0]
            adam_row(W2.w, W2.m, W2.v, W2.g, r, r, h)
            for t in range(gb2_t.shape[0]):
                gb2[r] += gb2_t[t, r]
                gb2_t[t, r] = 0
            adam_span(b2.w, b2.m, b2.v, gb2, r, r + 1, h)
    return n0, n2


@numba.njit(inline="always", **FAST)
def _adam_rows_dense(w, m, v, g, flag, lo, hi, zero, h):
    """Adam on rows ``lo..hi-1`` of a row parameter's arrays: a flagged row with its gradient (then
    cleared, with the flag), any other with the one-row zero buffer ``zero`` (its gradient row is
    zero, so it is neither read nor written). Returns the flagged rows."""
    n = 0
    for r in range(lo, hi):
        if flag[r]:
            adam_row(w, m, v, g, r, r, h)
            flag[r] = 0
            n += 1
        else:
            adam_row(w, m, v, zero, 0, r, h)
    return n


@numba.njit(**FAST_PARALLEL)
def adam_dense(W0, b0, Wh, bh, W2, b2, h):
    """One Adam step over every parameter (the reference's dense update), one parallel region.

    Arguments as :func:`adam_sparse`; the row lists are unused and the flags are cleared. Rows the
    batch did not touch take the step with a zero gradient without reading their gradient rows.
    Returns ``(n0, n2)``, the touched (flagged) rows of ``W0`` and ``W2``.
    """
    _adam_small(b0, Wh, bh, h)
    # plain arrays: a parallel loop may give each thread its own copy of an array reached through a
    # named tuple's attribute, and a write into it (the flags) would be lost
    w0, m0, v0, g0, flag0 = W0.w, W0.m, W0.v, W0.g, W0.flag
    w2, m2, v2, g2, flag2 = W2.w, W2.m, W2.v, W2.g, W2.flag
    rows = DENSE_ROWS_PER_TASK
    n0 = (w0.shape[0] + rows - 1) // rows
    n2 = (w2.shape[0] + rows - 1) // rows
    width = max(w0.shape[1], w2.shape[1])
    touched = np.zeros(n0 + n2 + 1, np.int64)  # per task: an inlined counter defeats Numba's reductions
    for c in prange(n0 + n2 + 1):
        zero = np.zeros((1, width), np.float32)
        if c < n0:
            touched[c] = _adam_rows_dense(w0, m0, v0, g0, flag0, c * rows, min(w0.shape[0], (c + 1) * rows), zero, h)
        elif c < n0 + n2:
            lo = (c - n0) * rows
            touched[c] = _adam_rows_dense(w2, m2, v2, g2, flag2, lo, min(w2.shape[0], lo + rows), zero, h)
        else:
            _reduce_threads(b2.g, b2.g_t)
            adam_span(b2.w, b2.m, b2.v, b2.g, 0, b2.w.shape[0], h)
    return touched[:n0].sum(), touched[n0:n0 + n2].sum()


@numba.njit(**FAST)
def collect_flags(flag, out):
    """Write the indices of the set flags into ``out``, clear the flags, return how many."""
    # eight flags per test (the row pass leaves all 670,091 output flags clear: 0.10 -> 0.02 ms)
    whole = flag.shape[0] // 8 * 8
    words = flag[:whole].view(np.uint64)
    n = 0
    for w in range(words.shape[0]):
        if words[w]:
            n = _collect_range(flag, 8 * w, 8 * w + 8, out, n)
    return _collect_range(flag, whole, flag.shape[0], out, n)


@numba.njit(inline="always", **FAST)
def _collect_range(flag, lo, hi, out, n):
    for i in range(lo, hi):
        if flag[i]:
            out[n] = i
            n += 1
            flag[i] = 0
    return n


@numba.njit(**FAST_PARALLEL)
def hidden_rows(x_indptr, x_indices, x_data, rows, W0, b0, Wh, bh, dims, scratch, out):
    """Last hidden layer's activations of the points ``rows``: ``out`` (len(rows), H_last).

    ``scratch`` is (threads, sum(dims)); the rows are dealt to threads in contiguous blocks.
    """
    n = rows.shape[0]
    nthreads = scratch.shape[0]
    hl = out.shape[1]
    total = scratch.shape[1]
    per = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        acts = scratch[t]
        for i in range(t * per, min(n, (t + 1) * per)):
            r = rows[i]
            a, b = x_indptr[r], x_indptr[r + 1]
            hidden_forward(x_indices[a:b], x_data[a:b], W0, b0, Wh, bh, dims, acts)
            for q in range(hl):
                out[i, q] = acts[total - hl + q]


@numba.njit(**NJIT)
def _contains(ids, n, value):
    for q in range(n):
        if ids[q] == value:
            return True
    return False


@numba.njit(**FAST_PARALLEL)
def sparse_predict(x_indptr, x_indices, x_data, rows, W0, b0, Wh, bh, dims, W2, b2,
                   lsh, mode, k_or_t, min_active, min_trigger,
                   stamp, counts, stamp_values, active, acts, seed, out):
    """Top-k labels among the LSH-retrieved ones (no true labels), per point of ``rows``.

    Points retrieving fewer than k labels are completed with the lowest unretrieved ids.
    """
    n = rows.shape[0]
    nthreads = stamp.shape[0]
    k = out.shape[1]
    num_items = W2.shape[0]
    total = acts.shape[1]
    hl = dims[dims.shape[0] - 1]
    empty = np.empty(0, dtype=np.int32)
    per = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        vals = np.empty(k, dtype=np.float32)
        ids = np.empty(k, dtype=np.int64)
        for i in range(t * per, min(n, (t + 1) * per)):
            r = rows[i]
            a, b = x_indptr[r], x_indptr[r + 1]
            hidden_forward(x_indices[a:b], x_data[a:b], W0, b0, Wh, bh, dims, acts[t])
            h = acts[t, total - hl:]
            sv = _next_stamp(stamp[t], stamp_values[t:t + 1])
            cnt = select_active(lsh, h, empty, mode, k_or_t, min_active, min_trigger, num_items,
                                stamp[t], counts[t], sv, sample_seed(seed, 0x7FFFFFFF, r),
                                active[t])
            for p in range(k):
                vals[p] = -np.inf
                ids[p] = -1
            for c in range(cnt):
                j = active[t, c]
                s = b2[j]
                for q in range(hl):
                    s += load(W2, j, q) * h[q]
                if s > vals[k - 1] or (s == vals[k - 1] and ids[k - 1] >= 0 and j < ids[k - 1]) \
                        or ids[k - 1] < 0:
                    p = k - 1
                    while p > 0 and (ids[p - 1] < 0 or vals[p - 1] < s or (vals[p - 1] == s and ids[p - 1] > j)):
                        vals[p] = vals[p - 1]
                        ids[p] = ids[p - 1]
                        p -= 1
                    vals[p] = s
                    ids[p] = j
            fill = 0
            for p in range(k):
                if ids[p] < 0:
                    while fill < num_items - 1 and _contains(ids, p, fill):
                        fill += 1
                    ids[p] = fill
                    fill += 1
                out[i, p] = ids[p]
