"""The training step with the output layer computed row by row (``output_pass: row``, or ``auto`` when
the samples of a batch share their active neurons).

:func:`slide.engine.network.train_kernel` runs each sample's whole step on one thread: the sample reads
the ``W2`` rows of its active neurons twice (logits, then gradients) and adds into their gradient rows,
so a row that ``m`` samples of the batch selected is read ``2m`` times from memory. Here the step runs
in phases, each a parallel loop:

1. by sample: hidden layers and active set (:func:`~slide.engine.network.forward_select`), kept per
   sample;
2. the batch's (sample, position) pairs grouped by output neuron (:func:`group_by_row`: a counting
   sort or a two-digit radix sort, by chunks in parallel), and the list of the neurons that have pairs,
   over which the row phases loop (so they cost in proportion to the pairs, not the labels, and
   prefetch the rows a few places ahead);
3. by row: the logits of every sample that selected the row, from one read of it;
4. by sample: softmax, loss and the logits' gradients (:func:`~slide.engine.network.softmax_loss`);
5. by row: the row's gradient, summed over its samples and added once (or, under the sparse
   optimizer, the row's Adam step taken right there), and each sample's share of the last hidden
   layer's gradient (per-thread partial sums, so no update is lost);
6. by sample: the sums of step 5, then the backward through the hidden and input layers.

The result is the same step up to float rounding; it pays most when the samples share many active
neurons (the Delicious-200K shape: ~6,200 of 205,443 labels per sample, each active row selected by ~4
samples of a batch of 128), and it pays at the Amazon-670K shape too (~1,000 of 670,091 per sample,
~1.1 samples per row), where the per-sample step writes each row's gradient and reads it back in Adam.
"""

from __future__ import annotations

import time
from collections import namedtuple

import numba
import numpy as np
from numba import prange

from ..settings import FAST, FAST_PARALLEL, SIMD_LANES
from .intrinsics import prefetch1, vfma, vload, vsplat, vstore
from .network import (Hyper, adam_entry, adam_row, backward_hidden, forward_select, logit_grad, prefetch_row,
                      sample_seed, softmax_loss)
from .precision import load, row_buffer, row_f32

#: Per-batch buffers of :func:`train_grouped`, for a batch of up to ``B`` samples with up to ``cap``
#: active neurons each: hidden activations ``acts`` and their gradients ``dacts`` (B, sum(dims)), the last
#: layer's activations again in ``top`` (B, H) (indexed from 0, so the row loops vectorise); active ids
#: ``ids`` (labels first) and their ``logits``, then gradients (B, cap); the number ``n`` (B,) of each
#: sample's pairs (0 for a sample without labels); the pairs grouped by neuron: the neurons with pairs
#: in ascending order ``touched`` (P = B * cap,), neuron ``touched[j]``'s pairs at ``tptr[j]:tptr[j + 1]``
#: (P + 1,) in ``ent`` (P,) as ``sample << 32 | position`` (so the row phases loop over the touched
#: rows only, without a branch per label); for :func:`group_by_row`, the radix sort's ids after each
#: pass ``key`` (2, P), pairs after the first ``tmp`` (P,), per-chunk digit counts ``hist`` (chunks,
#: 2**high digit bits, or labels if fewer than P; int32; the counting sort's per-chunk cursors),
#: per-chunk run counts ``part`` (chunks + 1,) and the counting sort's per-block pair and row counts
#: ``blocks``; per-thread partial gradients of the last hidden layer ``da_t`` (threads, B, H).
Grouped = namedtuple("Grouped", "acts dacts top ids logits n touched tptr ent key tmp hist part blocks da_t")

#: The Adam constants passed to the gradient phase when it takes no Adam step.
_NO_STEP = Hyper(np.float32(0), np.float32(0), np.float32(0), np.float32(0), np.uint64(0))
#: Hidden units of one register block of the gradient phase (4 vectors), and its vectors' offsets.
_BLOCK = 4 * SIMD_LANES
_L1, _L2, _L3 = SIMD_LANES, 2 * SIMD_LANES, 3 * SIMD_LANES
#: Output neurons per task of the row phases.
ROWS_PER_TASK = 256
#: How many places ahead in the list of touched rows the logits phase (which reads a row) and the
#: gradient phase (which reads and writes a row's weights and moments) prefetch: the best of 1-16 at
#: the Amazon-670K shape (reports/benchmarks.md).
LOGITS_AHEAD = 8
GRADS_AHEAD = 2
#: At most this many chunks (one per thread) in each pass of the sort.
SORT_CHUNKS = 8
#: Labels per block of the counting sort's prefix sum.
SORT_BLOCK = 1024


def _hist_width(num_labels, pairs):
    # a count per value of the radix sort's high digit, or per label for the counting sort, which
    # runs only when the labels are no more than the batch's pairs
    return max(1 << sort_digits(num_labels)[1], min(num_labels, pairs))


def _layout(batch, cap, num_labels, dims, threads):
    """Shape and dtype of every :data:`Grouped` field."""
    total, hl = int(np.sum(dims)), int(dims[-1])
    f32, i32, i64 = np.float32, np.int32, np.int64
    chunks = max(1, min(threads, SORT_CHUNKS))
    pairs = batch * cap
    return Grouped(acts=((batch, total), f32), dacts=((batch, total), f32), top=((batch, hl), f32),
                   ids=((batch, cap), i32), logits=((batch, cap), f32), n=((batch,), i64),
                   touched=((pairs,), i32), tptr=((pairs + 1,), i64), ent=((pairs,), i64), key=((2, pairs), i32),
                   tmp=((pairs,), i64), hist=((chunks, _hist_width(num_labels, pairs)), i32), part=((chunks + 1,), i64),
                   blocks=(((num_labels + SORT_BLOCK - 1) // SORT_BLOCK + 1, 2), i64),
                   da_t=((threads, batch, hl), f32))


def grouped_buffers(batch: int, cap: int, num_labels: int, dims, threads: int) -> Grouped:
    """Fresh :data:`Grouped` buffers (float32 activations, int32 ids, int64 offsets and pairs)."""
    return Grouped(*(np.zeros(shape, dtype) for shape, dtype in _layout(batch, cap, num_labels, dims, threads)))


def grouped_bytes(batch: int, cap: int, num_labels: int, dims, threads: int) -> int:
    """Bytes of :func:`grouped_buffers` with these arguments."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
               for shape, dtype in _layout(batch, cap, num_labels, dims, threads))


def sort_digits(num_labels: int) -> tuple[int, int]:
    """Bits of the low and the high digit of the row pass's radix sort of neuron ids below ``num_labels``."""
    bits = max(1, (int(num_labels) - 1).bit_length())
    return bits // 2, bits - bits // 2


@numba.njit(**FAST)
def _digit_offsets(hist, width):
    # per-(chunk, digit) counts -> where each chunk's pairs of each digit start, digits in order and
    # within a digit the chunks in order (what keeps the sort stable); returns the total
    total = 0
    for d in range(width):
        for p in range(hist.shape[0]):
            count = hist[p, d]
            hist[p, d] = total
            total += count
    return total


@numba.njit(**FAST_PARALLEL)
def _radix_sort(ids, n, lo_bits, hi_bits, touched, tptr, ent, key, tmp, hist, part):
    # stable LSD radix sort of the pairs (s, i) by ids[s, i], two digits (sort_digits): each chunk of
    # samples counts and scatters its pairs by the low digit, each chunk of that order by the high
    # digit; then the runs of equal ids give the touched rows and their offsets. Returns their number.
    chunks = hist.shape[0]
    nb = n.shape[0]
    mask = (1 << lo_bits) - 1
    for p in prange(chunks):
        hist[p, :1 << lo_bits] = 0
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                hist[p, ids[s, i] & mask] += 1
    total = _digit_offsets(hist, 1 << lo_bits)
    for p in prange(chunks):
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                r = ids[s, i]
                e = hist[p, r & mask]
                hist[p, r & mask] = e + 1
                key[0, e] = r
                tmp[e] = (np.int64(s) << 32) | i
    for p in prange(chunks):
        hist[p, :1 << hi_bits] = 0
        for e in range(p * total // chunks, (p + 1) * total // chunks):
            hist[p, key[0, e] >> lo_bits] += 1
    _digit_offsets(hist, 1 << hi_bits)
    for p in prange(chunks):
        for e in range(p * total // chunks, (p + 1) * total // chunks):
            r = key[0, e]
            o = hist[p, r >> lo_bits]
            hist[p, r >> lo_bits] = o + 1
            key[1, o] = r
            ent[o] = tmp[e]
    for p in prange(chunks):
        runs = 0
        for e in range(p * total // chunks, (p + 1) * total // chunks):
            runs += e == 0 or key[1, e] != key[1, e - 1]
        part[p + 1] = runs
    part[0] = 0
    for p in range(chunks):
        part[p + 1] += part[p]
    for p in prange(chunks):
        j = part[p]
        for e in range(p * total // chunks, (p + 1) * total // chunks):
            if e == 0 or key[1, e] != key[1, e - 1]:
                touched[j] = key[1, e]
                tptr[j] = e
                j += 1
    tptr[part[chunks]] = total
    return part[chunks]


@numba.njit(**FAST_PARALLEL)
def _count_sort(ids, n, num_labels, touched, tptr, ent, cursor, blocks):
    # the same result by a counting sort over the labels, cheaper when they are no more than the pairs:
    # each chunk of samples counts its pairs per label (cursor[p, :num_labels]), a blocked prefix sum
    # over (label, chunk) turns the counts into each chunk's cursor per label and lists the labels with
    # pairs, each chunk writes its pairs at its cursors
    chunks = cursor.shape[0]
    nb = n.shape[0]
    for p in prange(chunks):
        cursor[p, :num_labels] = 0
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                cursor[p, ids[s, i]] += 1
    num_blocks = (num_labels + SORT_BLOCK - 1) // SORT_BLOCK
    for b in prange(num_blocks):
        total = rows = 0
        for r in range(b * SORT_BLOCK, min(num_labels, (b + 1) * SORT_BLOCK)):
            count = 0
            for p in range(chunks):
                count += cursor[p, r]
            total += count
            rows += count > 0
        blocks[b + 1, 0] = total
        blocks[b + 1, 1] = rows
    blocks[0, :] = 0
    for b in range(num_blocks):
        blocks[b + 1, 0] += blocks[b, 0]
        blocks[b + 1, 1] += blocks[b, 1]
    for b in prange(num_blocks):
        offset, j = blocks[b, 0], blocks[b, 1]
        for r in range(b * SORT_BLOCK, min(num_labels, (b + 1) * SORT_BLOCK)):
            start = offset
            for p in range(chunks):
                count = cursor[p, r]
                cursor[p, r] = offset
                offset += count
            if offset > start:
                touched[j] = r
                tptr[j] = start
                j += 1
    tptr[blocks[num_blocks, 1]] = blocks[num_blocks, 0]
    for p in prange(chunks):
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                r = ids[s, i]
                ent[cursor[p, r]] = (np.int64(s) << 32) | i
                cursor[p, r] += 1
    return blocks[num_blocks, 1]


def group_by_row(ids, n, num_labels: int, gr: "Grouped") -> int:
    """Group the pairs ``(s, i)`` of ``ids[s, :n[s]]`` by neuron into ``gr.touched``, ``gr.tptr`` and
    ``gr.ent`` (see :data:`Grouped`; within a neuron the samples in order); return the number of
    neurons with pairs. A counting sort when the labels are no more than the pairs (the Delicious-200K
    shape), else a two-digit radix sort, whose cost follows the pairs (the Amazon-670K shape: 670,091
    labels, ~128,000 pairs)."""
    old = numba.set_parallel_chunksize(0)  # one chunk of each pass per thread, whatever the caller's setting
    try:
        if num_labels <= int(n.sum()):
            return int(_count_sort(ids, n, num_labels, gr.touched, gr.tptr, gr.ent, gr.hist, gr.blocks))
        return int(_radix_sort(ids, n, *sort_digits(num_labels), gr.touched, gr.tptr, gr.ent, gr.key, gr.tmp, gr.hist,
                               gr.part))
    finally:
        numba.set_parallel_chunksize(old)


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
def _logits_by_row(W2, b2, top, logits, touched, tptr, ent, num_rows):
    hl = top.shape[1]
    for k in prange((num_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for j in range(k * ROWS_PER_TASK, min(num_rows, (k + 1) * ROWS_PER_TASK)):
            ahead = touched[min(j + LOGITS_AHEAD, num_rows - 1)]
            prefetch_row(W2, ahead)
            prefetch1(b2, ahead)
            r = touched[j]
            for e in range(tptr[j], tptr[j + 1]):
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


@numba.njit(inline="always", **FAST)
def _row_gradient(W2, r, top, grads, e0, e1, ent, da, acc, wbuf):
    """Add row ``r``'s ``W2`` gradient, summed over the samples of its pairs ``ent[e0:e1]``, into
    ``acc[0]`` and each sample's share of the last hidden layer's gradient into its row of ``da``;
    return the ``b2`` gradient. ``wbuf`` is :func:`~slide.engine.precision.row_buffer` of ``W2``.

    Each block of ``4 * SIMD_LANES`` hidden units keeps its part of the row's weights and gradient in
    vector registers while it walks the row's pairs (LLVM's loop vectoriser would load and store the
    gradient at every pair); the units past the last whole block are summed one by one.
    """
    hl = top.shape[1]
    w = row_f32(W2, r, wbuf)
    gb = np.float32(0)
    for e in range(e0, e1):
        gb += grads[ent[e] >> 32, ent[e] & 0xFFFFFFFF]
    for q0 in range(0, hl - hl % _BLOCK, _BLOCK):
        w0, w1, w2, w3 = vload(w, q0), vload(w, q0 + _L1), vload(w, q0 + _L2), vload(w, q0 + _L3)
        a0, a1, a2, a3 = vload(acc, q0), vload(acc, q0 + _L1), vload(acc, q0 + _L2), vload(acc, q0 + _L3)
        for e in range(e0, e1):
            s = ent[e] >> 32
            g = vsplat(grads[s, ent[e] & 0xFFFFFFFF])
            o = s * hl + q0
            a0, a1 = vfma(g, vload(top, o), a0), vfma(g, vload(top, o + _L1), a1)
            a2, a3 = vfma(g, vload(top, o + _L2), a2), vfma(g, vload(top, o + _L3), a3)
            vstore(da, o, vfma(g, w0, vload(da, o)))
            vstore(da, o + _L1, vfma(g, w1, vload(da, o + _L1)))
            vstore(da, o + _L2, vfma(g, w2, vload(da, o + _L2)))
            vstore(da, o + _L3, vfma(g, w3, vload(da, o + _L3)))
        vstore(acc, q0, a0)
        vstore(acc, q0 + _L1, a1)
        vstore(acc, q0 + _L2, a2)
        vstore(acc, q0 + _L3, a3)
    for e in range(e0, e1):
        s = ent[e] >> 32
        g = grads[s, ent[e] & 0xFFFFFFFF]
        for q in range(hl - hl % _BLOCK, hl):
            acc[0, q] += g * top[s, q]
            da[s, q] += g * w[q]
    return gb


@numba.njit(**FAST_PARALLEL)
def _grads_by_row(W2, mW2, vW2, b2, mb2, vb2, gW2, gb2_t, flag2, top, grads, touched, tptr, ent, num_rows, da_t, h,
                  adam):
    # each row's gradient summed over its pairs, then with ``adam`` the row's Adam step ``h`` taken at
    # once (the gradient never reaches gW2), else the gradient added into the shared buffers and the
    # row flagged for the optimizer
    for k in prange((num_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        t = numba.get_thread_id()
        acc = np.zeros((1, top.shape[1]), np.float32)
        wbuf = row_buffer(W2)
        for j in range(k * ROWS_PER_TASK, min(num_rows, (k + 1) * ROWS_PER_TASK)):
            r = touched[j]
            if adam:
                ahead = touched[min(j + GRADS_AHEAD, num_rows - 1)]
                prefetch_row(W2, ahead)
                prefetch_row(mW2, ahead)
                prefetch_row(vW2, ahead)
                for a in (b2, mb2, vb2):
                    prefetch1(a, ahead)
                gb = _row_gradient(W2, r, top, grads, tptr[j], tptr[j + 1], ent, da_t[t], acc, wbuf)
                adam_row(W2, mW2, vW2, acc, 0, r, h)
                adam_entry(b2, mb2, vb2, r, gb, h)
            else:
                gb2_t[t, r] += _row_gradient(W2, r, top, grads, tptr[j], tptr[j + 1], ent, da_t[t], acc, wbuf)
                for q in range(top.shape[1]):
                    gW2[r, q] += acc[0, q]
                    acc[0, q] = 0
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


#: The phases of :func:`train_grouped` as its ``clock`` names them (module docstring, steps 1-6).
ROW_PHASES = ("select", "sort", "logits", "softmax", "grads", "backward")


def train_grouped(batch, dims, W0, b0, Wh, bh, W2, b2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step,
                  losses, nactive, gr, hyper=None, clock=None) -> int:
    """:func:`slide.engine.network.train_kernel` in the phases of the module docstring (``lsh`` must not
    be None); ``gr`` is a :data:`Grouped` for at least ``len(batch.rows)`` samples. Same arguments,
    outputs and gradient buffers otherwise; returns the number of output rows the batch touched.

    With ``hyper`` (a :data:`~slide.engine.network.Hyper`, the sparse optimizer's coming step) each
    output row takes its Adam step in phase 5, as soon as its gradient is complete, instead of adding
    it into ``W2.g`` / ``b2.g_t`` and flagging it: the same update, without writing the gradient row and
    reading it and the weights back in :func:`~slide.engine.network.adam_sparse` (which then finds
    no output row flagged). Phase 5 reads the row's weights before it updates them, and the logits
    were computed in phase 3, so every sample still sees the step's old weights.

    The phases take plain arrays: inside a parallel loop Numba may give each thread its own copy of an
    array reached through a tuple's attribute, and the writes would be lost.

    ``clock``, a dict, gets each phase's wall seconds added under its :data:`ROW_PHASES` name (how
    ``slide bench`` shows which phase stops scaling with the threads).
    """
    nb = batch.rows.shape[0]
    tick = _Ticker(clock)
    _select_all(batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step, nactive,
                gr.acts, gr.top, gr.ids, gr.n)
    tick("select")
    rows = group_by_row(gr.ids[:nb], gr.n[:nb], W2.w.shape[0], gr)
    tick("sort")
    _logits_by_row(W2.w, b2.w, gr.top, gr.logits, gr.touched, gr.tptr, gr.ent, rows)
    tick("logits")
    _softmax_all(batch, sel, scratch.tgt, gr.ids, gr.logits, gr.n, gr.da_t, losses)
    tick("softmax")
    _grads_by_row(W2.w, W2.m, W2.v, b2.w, b2.m, b2.v, W2.g, b2.g_t, W2.flag, gr.top, gr.logits, gr.touched, gr.tptr,
                  gr.ent, rows, gr.da_t, _NO_STEP if hyper is None else hyper, hyper is not None)
    tick("grads")
    _backward_all(batch, dims, W0, b0, Wh, bh, gr.acts, gr.dacts, gr.n, gr.da_t)
    tick("backward")
    return rows


class _Ticker:
    """Adds the seconds since its last call to ``clock[name]`` (nothing when ``clock`` is None)."""

    def __init__(self, clock):
        self.clock, self.last = clock, time.perf_counter()

    def __call__(self, name):
        if self.clock is not None:
            now = time.perf_counter()
            self.clock[name] = self.clock.get(name, 0.0) + now - self.last
            self.last = now
