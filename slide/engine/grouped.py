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
6. by sample: the sums of step 5, then the backward through the hidden and input layers (under the
   sparse optimizer only as far as the first layer's delta);
7. under the sparse optimizer, by input feature: the batch's (sample, feature) pairs grouped by
   feature as in step 2, then each feature's ``W0`` gradient summed over its samples and its Adam step
   taken at once, as the output rows' in step 5 (the gradient row is never written, flagged or read
   back).

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

#: The pairs of a batch grouped by row (an output neuron's, or under the sparse optimizer an input
#: feature's): the rows with pairs in ascending order ``touched`` (P,), row ``touched[j]``'s pairs at
#: ``tptr[j]:tptr[j + 1]`` (P + 1,) in ``ent`` (P,) as ``sample << 32 | position`` (so the row phases
#: loop over the touched rows only, without a branch per pair); for :func:`group_by_row`, the radix
#: sort's ids after each pass ``key`` (2, P), pairs after the first ``tmp`` (P,), per-chunk digit counts
#: ``hist`` (chunks, 2**high digit bits, or rows if fewer than P; int32; the counting sort's per-chunk
#: cursors), per-chunk run counts ``part`` (chunks + 1,) and the counting sort's per-block pair and row
#: counts ``blocks``. P is the most pairs the buffers hold.
Pairs = namedtuple("Pairs", "touched tptr ent key tmp hist part blocks")

#: Per-batch buffers of :func:`train_grouped`, for a batch of up to ``B`` samples with up to ``cap``
#: active neurons each: hidden activations ``acts`` and their gradients ``dacts`` (B, sum(dims)), the last
#: layer's activations again in ``top`` (B, H) (indexed from 0, so the row loops vectorise); active ids
#: ``ids`` (labels first; where sample ``s``'s start in ``ids`` read flat: ``id_start[s] = s * cap``)
#: and their ``logits``, then gradients (B, cap); the number ``n`` (B,) of each sample's pairs (0 for a
#: sample without labels); where each sample's features start in the data's ``x_indices`` ``x_start`` and how many it trains
#: ``x_n`` (B,; 0 without labels); per-thread partial gradients of the last hidden layer ``da_t``
#: (threads, B, H); the (sample, active neuron) pairs grouped by neuron ``out`` and the (sample,
#: feature) pairs by feature ``inp`` (:data:`Pairs`; ``inp`` sized by the features of the largest batch
#: so far, and empty when no step has used it).
Grouped = namedtuple("Grouped", "acts dacts top ids id_start logits n x_start x_n da_t out inp")

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


def _pairs_layout(pairs, num_rows, threads):
    """Shape and dtype of every :data:`Pairs` field, for up to ``pairs`` pairs of rows below ``num_rows``."""
    i32, i64 = np.int32, np.int64
    chunks = max(1, min(threads, SORT_CHUNKS))
    return Pairs(touched=((pairs,), i32), tptr=((pairs + 1,), i64), ent=((pairs,), i64), key=((2, pairs), i32),
                 tmp=((pairs,), i64), hist=((chunks, _hist_width(num_rows, pairs)), i32), part=((chunks + 1,), i64),
                 blocks=(((num_rows + SORT_BLOCK - 1) // SORT_BLOCK + 1, 2), i64))


def _layout(batch, cap, num_labels, dims, threads, num_features, feature_pairs):
    """Shape and dtype of every :data:`Grouped` field (``out`` and ``inp`` as :func:`_pairs_layout`)."""
    total, hl = int(np.sum(dims)), int(dims[-1])
    f32, i32, i64 = np.float32, np.int32, np.int64
    return Grouped(acts=((batch, total), f32), dacts=((batch, total), f32), top=((batch, hl), f32),
                   ids=((batch, cap), i32), id_start=((batch,), i64), logits=((batch, cap), f32), n=((batch,), i64),
                   x_start=((batch,), i64), x_n=((batch,), i64), da_t=((threads, batch, hl), f32),
                   out=_pairs_layout(batch * cap, num_labels, threads),
                   inp=_pairs_layout(feature_pairs, num_features, threads))


def _alloc(layout):
    return type(layout)(*(_alloc(f) if isinstance(f, Pairs) else np.zeros(*f) for f in layout))


def _nbytes(layout) -> int:
    return sum(_nbytes(f) if isinstance(f, Pairs) else int(np.prod(f[0])) * np.dtype(f[1]).itemsize
               for f in layout)


def pairs_buffers(pairs: int, num_rows: int, threads: int) -> Pairs:
    """Fresh :data:`Pairs` for up to ``pairs`` pairs of rows below ``num_rows``."""
    return _alloc(_pairs_layout(pairs, num_rows, threads))


def grouped_buffers(batch: int, cap: int, num_labels: int, dims, threads: int, num_features: int = 1,
                    feature_pairs: int = 0) -> Grouped:
    """Fresh :data:`Grouped` buffers (float32 activations, int32 ids, int64 offsets and pairs), ``inp``
    for up to ``feature_pairs`` (sample, feature) pairs of ``num_features`` features."""
    g = _alloc(_layout(batch, cap, num_labels, dims, threads, num_features, feature_pairs))
    g.id_start[:] = np.arange(batch, dtype=np.int64) * cap
    return g


def grouped_bytes(batch: int, cap: int, num_labels: int, dims, threads: int, num_features: int = 1,
                  feature_pairs: int = 0) -> int:
    """Bytes of :func:`grouped_buffers` with these arguments."""
    return _nbytes(_layout(batch, cap, num_labels, dims, threads, num_features, feature_pairs))


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
def _radix_sort(ids, start, n, lo_bits, hi_bits, touched, tptr, ent, key, tmp, hist, part):
    # stable LSD radix sort of the pairs (s, i) by ids[start[s] + i], two digits (sort_digits): each chunk of
    # samples counts and scatters its pairs by the low digit, each chunk of that order by the high
    # digit; then the runs of equal ids give the touched rows and their offsets. Returns their number.
    chunks = hist.shape[0]
    nb = n.shape[0]
    mask = (1 << lo_bits) - 1
    for p in prange(chunks):
        hist[p, :1 << lo_bits] = 0
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                hist[p, ids[start[s] + i] & mask] += 1
    total = _digit_offsets(hist, 1 << lo_bits)
    for p in prange(chunks):
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                r = ids[start[s] + i]
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
def _count_sort(ids, start, n, num_labels, touched, tptr, ent, cursor, blocks):
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
                cursor[p, ids[start[s] + i]] += 1
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
            first = offset
            for p in range(chunks):
                count = cursor[p, r]
                cursor[p, r] = offset
                offset += count
            if offset > first:
                touched[j] = r
                tptr[j] = first
                j += 1
    tptr[blocks[num_blocks, 1]] = blocks[num_blocks, 0]
    for p in prange(chunks):
        for s in range(p * nb // chunks, (p + 1) * nb // chunks):
            for i in range(n[s]):
                r = ids[start[s] + i]
                ent[cursor[p, r]] = (np.int64(s) << 32) | i
                cursor[p, r] += 1
    return blocks[num_blocks, 1]


def group_by_row(ids, start, n, num_rows: int, pairs: "Pairs") -> int:
    """Group the pairs ``(s, i)`` of ``ids[start[s]:start[s] + n[s]]`` (row ids below ``num_rows``) by
    row into ``pairs.touched``, ``pairs.tptr`` and ``pairs.ent`` (see :data:`Pairs`; within a row the
    samples in order); return the number of rows with pairs. A counting sort when the rows are no more
    than the pairs (the output layer at the Delicious-200K shape), else a two-digit radix sort, whose
    cost follows the pairs (the Amazon-670K shape: 670,091 labels, ~128,000 pairs; the input features
    at both shapes)."""
    old = numba.set_parallel_chunksize(0)  # one chunk of each pass per thread, whatever the caller's setting
    try:
        if num_rows <= int(n.sum()):
            return int(_count_sort(ids, start, n, num_rows, pairs.touched, pairs.tptr, pairs.ent, pairs.hist,
                                   pairs.blocks))
        return int(_radix_sort(ids, start, n, *sort_digits(num_rows), pairs.touched, pairs.tptr, pairs.ent, pairs.key,
                               pairs.tmp, pairs.hist, pairs.part))
    finally:
        numba.set_parallel_chunksize(old)


@numba.njit(**FAST_PARALLEL)
def _select_all(batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step, nactive,
                acts, top, ids, n, x_start, x_n):
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
        x_start[s] = batch.x_indptr[r]
        x_n[s] = batch.x_indptr[r + 1] - x_start[s] if m else 0


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
        w = np.float32(1.0) / np.float32(labels.shape[0])
        for i in range(m):
            logits[s, i] = logit_grad(logits[s, i], inv_z, np.float32(w * tgt[ids[s, i]]), inv_b)
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
def _backward_all(batch, dims, W0, b0, Wh, bh, acts, dacts, n, da_t, input_rows):
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
        backward_hidden(rows[s], t, batch, dims, W0, b0, Wh, bh, acts[s], dacts[s], input_rows)


@numba.njit(**FAST_PARALLEL)
def _input_by_row(W0, mW0, vW0, x_data, x_start, dacts, touched, tptr, ent, num_rows, h):
    # each input feature's W0 gradient, summed over its (sample, position) pairs in sample order (the
    # additions of the sample pass, in its order), then the row's Adam step
    h0 = W0.shape[1]
    for k in prange((num_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.zeros((1, h0), np.float32)
        for j in range(k * ROWS_PER_TASK, min(num_rows, (k + 1) * ROWS_PER_TASK)):
            ahead = touched[min(j + GRADS_AHEAD, num_rows - 1)]
            prefetch_row(W0, ahead)
            prefetch_row(mW0, ahead)
            prefetch_row(vW0, ahead)
            for e in range(tptr[j], tptr[j + 1]):
                s = ent[e] >> 32
                v = x_data[x_start[s] + (ent[e] & 0xFFFFFFFF)]
                for q in range(h0):
                    acc[0, q] += v * dacts[s, q]
            adam_row(W0, mW0, vW0, acc, 0, touched[j], h)


#: The phases of :func:`train_grouped` as its ``clock`` names them (module docstring, steps 1-7).
ROW_PHASES = ("select", "sort", "logits", "softmax", "grads", "backward", "input")


def train_grouped(batch, dims, W0, b0, Wh, bh, W2, b2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step,
                  losses, nactive, gr, hyper=None, clock=None) -> tuple[int, int]:
    """:func:`slide.engine.network.train_kernel` in the phases of the module docstring (``lsh`` must not
    be None); ``gr`` is a :data:`Grouped` for at least ``len(batch.rows)`` samples (and, with ``hyper``,
    an ``inp`` for at least the batch's features). Same arguments, outputs and gradient buffers
    otherwise; returns the number of output rows the batch touched and of input rows (features) it
    updated itself (0 without ``hyper``).

    With ``hyper`` (a :data:`~slide.engine.network.Hyper`, the sparse optimizer's coming step) each
    output row takes its Adam step in phase 5, as soon as its gradient is complete, and each input
    feature's ``W0`` row in phase 7, instead of adding their gradients into ``W2.g`` / ``b2.g_t`` /
    ``W0.g`` and flagging them: the same update, without writing the gradient rows and reading them
    and the weights back in :func:`~slide.engine.network.adam_sparse` (which then finds no ``W0`` or
    ``W2`` row flagged). Phase 5 reads the row's weights before it updates them, the logits were
    computed in phase 3 and the hidden layers in phase 1, so every sample still sees the step's old
    weights.

    The phases take plain arrays: inside a parallel loop Numba may give each thread its own copy of an
    array reached through a tuple's attribute, and the writes would be lost.

    ``clock``, a dict, gets each phase's wall seconds added under its :data:`ROW_PHASES` name (how
    ``slide bench`` shows which phase stops scaling with the threads).
    """
    nb = batch.rows.shape[0]
    tick = _Ticker(clock)
    _select_all(batch, dims, W0, b0, Wh, bh, W2, lsh, sel, scratch, hs, hl0, hl1, hl2, hl3, seed, step, nactive,
                gr.acts, gr.top, gr.ids, gr.n, gr.x_start, gr.x_n)
    tick("select")
    out, inp = gr.out, gr.inp
    rows = group_by_row(gr.ids[:nb].reshape(-1), gr.id_start[:nb], gr.n[:nb], W2.w.shape[0], out)
    tick("sort")
    _logits_by_row(W2.w, b2.w, gr.top, gr.logits, out.touched, out.tptr, out.ent, rows)
    tick("logits")
    _softmax_all(batch, sel, scratch.tgt, gr.ids, gr.logits, gr.n, gr.da_t, losses)
    tick("softmax")
    _grads_by_row(W2.w, W2.m, W2.v, b2.w, b2.m, b2.v, W2.g, b2.g_t, W2.flag, gr.top, gr.logits, out.touched, out.tptr,
                  out.ent, rows, gr.da_t, _NO_STEP if hyper is None else hyper, hyper is not None)
    tick("grads")
    _backward_all(batch, dims, W0, b0, Wh, bh, gr.acts, gr.dacts, gr.n, gr.da_t, hyper is None)
    tick("backward")
    rows0 = 0
    if hyper is not None:
        rows0 = group_by_row(batch.x_indices, gr.x_start[:nb], gr.x_n[:nb], W0.w.shape[0], inp)
        _input_by_row(W0.w, W0.m, W0.v, batch.x_data, gr.x_start, gr.dacts, inp.touched, inp.tptr, inp.ent, rows0,
                      hyper)
        tick("input")
    return rows, rows0


class _Ticker:
    """Adds the seconds since its last call to ``clock[name]`` (nothing when ``clock`` is None)."""

    def __init__(self, clock):
        self.clock, self.last = clock, time.perf_counter()

    def __call__(self, name):
        if self.clock is not None:
            now = time.perf_counter()
            self.clock[name] = self.clock.get(name, 0.0) + now - self.last
            self.last = now
