"""The training step with the output layer computed row by row (``output_pass: row``, or ``auto`` when
the samples of a batch share their active neurons).

:func:`slide.engine.network.train_kernel` runs each sample's whole step on one thread: the sample reads
the ``W2`` rows of its active neurons twice (logits, then gradients) and adds into their gradient rows,
so a row that ``m`` samples of the batch selected is read ``2m`` times from memory. Here the step runs
in phases, each a parallel loop:

1. by sample: hidden layers and active set (:func:`~slide.engine.network.forward_select`), kept per
   sample;
2. the batch's (sample, position) pairs grouped by output neuron (a counting sort);
3. by row: the logits of every sample that selected the row, from one read of it;
4. by sample: softmax, loss and the logits' gradients (:func:`~slide.engine.network.softmax_loss`);
5. by row: the row's gradient, summed over its samples and added once, and each sample's share of the
   last hidden layer's gradient (per-thread partial sums, so no update is lost);
6. by sample: the sums of step 5, then the backward through the hidden and input layers.

The result is the same step up to float rounding; it pays when the samples share many active neurons
(the Delicious-200K shape: ~6,200 of 205,443 labels per sample, each active row selected by ~4 samples
of a batch of 128) and costs when they share few (the Amazon-670K shape: ~1,000 of 670,091).
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np
from numba import prange

from ..settings import FAST, FAST_PARALLEL
from .network import backward_hidden, forward_select, logit_grad, sample_seed, softmax_loss
from .precision import load

#: Per-batch buffers of :func:`train_grouped`, for a batch of up to ``B`` samples with up to ``cap``
#: active neurons each: hidden activations ``acts`` and their gradients ``dacts`` (B, sum(dims)), the last
#: layer's activations again in ``top`` (B, H) (indexed from 0, so the row loops vectorise); active ids
#: ``ids`` (labels first) and their ``logits``, then gradients (B, cap); the number ``n`` (B,) of each
#: sample's pairs (0 for a sample without labels); the pairs grouped by neuron: ``rptr``
#: (labels + 1,) offsets into ``ent`` (B * cap,) of ``sample << 32 | position``, ``cursor`` (labels,)
#: scratch; per-thread partial gradients of the last hidden layer ``da_t`` (threads, B, H).
Grouped = namedtuple("Grouped", "acts dacts top ids logits n rptr ent cursor da_t")

#: Output neurons per task of the row phases.
ROWS_PER_TASK = 256


def _layout(batch, cap, num_labels, dims, threads):
    """Shape and dtype of every :data:`Grouped` field."""
    total, hl = int(np.sum(dims)), int(dims[-1])
    f32, i32, i64 = np.float32, np.int32, np.int64
    return Grouped(acts=((batch, total), f32), dacts=((batch, total), f32), top=((batch, hl), f32),
                   ids=((batch, cap), i32), logits=((batch, cap), f32), n=((batch,), i64),
                   rptr=((num_labels + 1,), i64), ent=((batch * cap,), i64), cursor=((num_labels,), i64),
                   da_t=((threads, batch, hl), f32))


def grouped_buffers(batch: int, cap: int, num_labels: int, dims, threads: int) -> Grouped:
    """Fresh :data:`Grouped` buffers (float32 activations, int32 ids, int64 offsets)."""
    return Grouped(*(np.zeros(shape, dtype) for shape, dtype in _layout(batch, cap, num_labels, dims, threads)))


def grouped_bytes(batch: int, cap: int, num_labels: int, dims, threads: int) -> int:
    """Bytes of :func:`grouped_buffers` with these arguments."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
               for shape, dtype in _layout(batch, cap, num_labels, dims, threads))


@numba.njit(**FAST)
def _group_by_row(ids, n, rptr, ent, cursor):
    # counting sort of the pairs (s, i) by ids[s, i]; within a row the samples stay in batch order
    rptr[:] = 0
    for s in range(n.shape[0]):
        for i in range(n[s]):
            rptr[ids[s, i] + 1] += 1
    for r in range(rptr.shape[0] - 1):
        rptr[r + 1] += rptr[r]
    cursor[:] = rptr[:-1]
    for s in range(n.shape[0]):
        for i in range(n[s]):
            r = ids[s, i]
            ent[cursor[r]] = (np.int64(s) << 32) | i
            cursor[r] += 1


@numba.njit(**FAST_PARALLEL)
def _select_all(batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step, nactive,
                acts, top, ids, n):
    rows = batch.rows
    active = scratch.active
    last = acts.shape[1] - top.shape[1]
    for s in prange(rows.shape[0]):
        t = numba.get_thread_id()
        r = rows[s]
        k = forward_select(r, t, sample_seed(seed, step, s), batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch,
                           hs, (hl0, hl1, hl2, hl3), acts[s])
        nactive[s] = k
        for q in range(top.shape[1]):
            top[s, q] = acts[s, last + q]
        m = k if batch.y_indptr[r + 1] > batch.y_indptr[r] else 0
        n[s] = m
        for i in range(m):
            ids[s, i] = active[t, i]


@numba.njit(**FAST_PARALLEL)
def _logits_by_row(W2, b2, top, logits, rptr, ent):
    num_rows = rptr.shape[0] - 1
    hl = top.shape[1]
    for k in prange((num_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(k * ROWS_PER_TASK, min(num_rows, (k + 1) * ROWS_PER_TASK)):
            for e in range(rptr[r], rptr[r + 1]):
                s = ent[e] >> 32
                z = b2[r]
                for q in range(hl):
                    z += load(W2, r, q) * top[s, q]
                logits[s, ent[e] & 0xFFFFFFFF] = z


@numba.njit(**FAST_PARALLEL)
def _softmax_all(batch, sel, tgt_t, ids, logits, n, da_t, losses):
    rows = batch.rows
    nb = rows.shape[0]
    inv_b = 1.0 / nb
    for s in prange(nb):
        t = numba.get_thread_id()
        losses[s] = 0.0
        m = n[s]
        if m == 0:
            continue
        r = rows[s]
        labels = batch.y_indices[batch.y_indptr[r]:batch.y_indptr[r + 1]]
        tgt = tgt_t[t]
        loss, inv_z = softmax_loss(labels, ids[s], m, tgt, logits[s], sel.logq, sel.qcount)
        for i in range(m):
            logits[s, i] = logit_grad(logits[s, i], inv_z, tgt[ids[s, i]], inv_b)
        for p in range(labels.shape[0]):
            tgt[labels[p]] = 0
        losses[s] = loss
        da_t[:, s, :] = 0


@numba.njit(**FAST_PARALLEL)
def _grads_by_row(W2, gW2, gb2_t, flag2, top, grads, rptr, ent, da_t):
    num_rows = rptr.shape[0] - 1
    hl = top.shape[1]
    for k in prange((num_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        t = numba.get_thread_id()
        acc = np.empty(hl, np.float32)
        for r in range(k * ROWS_PER_TASK, min(num_rows, (k + 1) * ROWS_PER_TASK)):
            if rptr[r + 1] == rptr[r]:
                continue
            acc[:] = 0
            gb = np.float32(0)
            for e in range(rptr[r], rptr[r + 1]):
                s = ent[e] >> 32
                g = grads[s, ent[e] & 0xFFFFFFFF]
                gb += g
                for q in range(hl):
                    acc[q] += g * top[s, q]
                    da_t[t, s, q] += g * load(W2, r, q)
            for q in range(hl):
                gW2[r, q] += acc[q]
            gb2_t[t, r] += gb
            if flag2[r] == 0:
                flag2[r] = 1


@numba.njit(**FAST_PARALLEL)
def _backward_all(batch, dims, W0, b0, Wh, bh, acts, dacts, n, da_t):
    rows = batch.rows
    hl = da_t.shape[2]
    last = acts.shape[1] - hl
    for s in prange(rows.shape[0]):
        if n[s] == 0:
            continue
        t = numba.get_thread_id()
        for q in range(hl):
            d = np.float32(0)
            for u in range(da_t.shape[0]):
                d += da_t[u, s, q]
            dacts[s, last + q] = d
        backward_hidden(rows[s], t, batch, dims, W0, b0, Wh, bh, acts[s], dacts[s])


def train_grouped(batch, dims, W0, b0, Wh, bh, W2, b2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step,
                  losses, nactive, gr) -> None:
    """:func:`slide.engine.network.train_kernel` in the phases of the module docstring (``lsh`` must not
    be None); ``gr`` is a :data:`Grouped` for at least ``len(batch.rows)`` samples. Same arguments,
    outputs and gradient buffers otherwise.

    The phases take plain arrays: inside a parallel loop Numba may give each thread its own copy of an
    array reached through a tuple's attribute, and the writes would be lost.
    """
    nb = batch.rows.shape[0]
    _select_all(batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step, nactive,
                gr.acts, gr.top, gr.ids, gr.n)
    _group_by_row(gr.ids[:nb], gr.n[:nb], gr.rptr, gr.ent, gr.cursor)
    _logits_by_row(W2.w, b2.w, gr.top, gr.logits, gr.rptr, gr.ent)
    _softmax_all(batch, sel, scratch.tgt, gr.ids, gr.logits, gr.n, gr.da_t, losses)
    _grads_by_row(W2.w, W2.g, b2.g_t, W2.flag, gr.top, gr.logits, gr.rptr, gr.ent, gr.da_t)
    _backward_all(batch, dims, W0, b0, Wh, bh, gr.acts, gr.dacts, gr.n, gr.da_t)
