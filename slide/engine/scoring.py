"""Exact dense top-k of an output layer: the ``k`` best labels of ``h @ W.T + b`` per row.

Evaluation scores every label for every test point (153,025 x 670,091 x 128 multiply-adds at
the Amazon-670K shape), so this is one fused Numba kernel rather than BLAS products plus a
separate top-k pass. Each task takes a chunk of rows; a tile of ``2 * SIMD_LANES`` rows is
transposed so that one vector load gives one hidden unit of every row of the tile, and each
group of 4 labels keeps 8 vector accumulators in registers while it walks the hidden units
(broadcasting one weight per label). The tile's current k-th best scores are a vector too, so
one comparison per accumulator finds the rare scores that enter a top-k list; only those go
through a scalar insertion. No score matrix is ever written to memory.

Labels are visited in increasing order for each row and a score replaces a list entry only when
strictly greater, so ties rank the lowest label first, as :func:`slide.metrics.topk`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ..settings import FAST, FAST_PARALLEL, FLOAT, SIMD_LANES
from .intrinsics import vfma, vgt_mask, vlane, vload, vsplat
from .precision import BF16, load


#: Rows of one register tile: two vectors.
TILE_ROWS = 2 * SIMD_LANES
#: Most rows one parallel task scores; its transposed activations stay in the core's cache.
TASK_ROWS = 512
#: Labels scored against a task's rows before moving on, so their weights stay in L2 (1 MB at 128 hidden).
LABEL_BLOCK = 2048


def exact_topk(h: np.ndarray, W: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` labels with the largest ``h @ W.T + b`` per row, best first.

    Parameters
    ----------
    h : (n, H) float32
        Activations of the last hidden layer.
    W : (L, H) float32 or bfloat16 (uint16 bit patterns, :mod:`slide.engine.precision`), C order
        Output weights, one row per label.
    b : (L,) float32
        Output biases.
    k : int, 1 <= k <= L

    Returns
    -------
    (n, k) int64
        Label ids; ties go to the lowest id. Runs on Numba's current thread count.
    """
    h = np.ascontiguousarray(h, dtype=FLOAT)
    if h.ndim != 2 or W.ndim != 2 or b.ndim != 1 or W.shape[1] != h.shape[1] or b.shape[0] != W.shape[0]:
        raise ValueError(f"shapes do not fit: h {h.shape}, W {W.shape}, b {b.shape}")
    if W.dtype not in (FLOAT, BF16) or b.dtype != FLOAT or not W.flags.c_contiguous:
        raise ValueError("W must be a C-ordered float32 or bfloat16 (uint16) array, b float32")
    if not 1 <= k <= W.shape[0]:
        raise ValueError(f"k must be between 1 and the label count {W.shape[0]}, got {k}")
    n = h.shape[0]
    vals = np.full((n, k), -np.inf, dtype=FLOAT)
    idx = np.zeros((n, k), dtype=np.int64)
    if n:
        _topk_kernel(h, W, np.ascontiguousarray(b), vals, idx, task_rows(n, numba.get_num_threads()))
    return idx


def task_rows(n: int, threads: int) -> int:
    """Rows per parallel task: whole tiles, at most :data:`TASK_ROWS`, every thread busy."""
    per_thread = -(-n // max(threads, 1))
    return int(min(TASK_ROWS, -(-per_thread // TILE_ROWS) * TILE_ROWS))


def scratch_bytes(threads: int, hidden: int) -> int:
    """Memory :func:`exact_topk` allocates besides its output, for the memory estimate."""
    return threads * 4 * TASK_ROWS * (hidden + 1)


@numba.njit(inline="always", **FAST)
def _insert(vals, idx, r, v, j):
    p = vals.shape[1] - 1
    while p > 0 and vals[r, p - 1] < v:
        vals[r, p] = vals[r, p - 1]
        idx[r, p] = idx[r, p - 1]
        p -= 1
    vals[r, p] = v
    idx[r, p] = j


@numba.njit(inline="always", **FAST)
def _offer(lo, hi, j, row0, row1, L, vals, idx):
    """Offer label ``j``'s scores for rows ``row0 ..`` (two vectors) to their top-k lists."""
    if j >= L:
        return
    last = vals.shape[1] - 1
    for lane in range(SIMD_LANES):
        r = row0 + lane
        if r < row1 and vlane(lo, lane) > vals[r, last]:
            _insert(vals, idx, r, vlane(lo, lane), j)
        r += SIMD_LANES
        if r < row1 and vlane(hi, lane) > vals[r, last]:
            _insert(vals, idx, r, vlane(hi, lane), j)


@numba.njit(**FAST_PARALLEL)
def _topk_kernel(h, W, b, vals, idx, rows_per_task):
    n, H = h.shape
    L = W.shape[0]
    last = vals.shape[1] - 1
    T = TILE_ROWS
    for task in prange((n + rows_per_task - 1) // rows_per_task):
        r0 = task * rows_per_task
        r1 = min(n, r0 + rows_per_task)
        tiles = (r1 - r0 + T - 1) // T
        hT = np.zeros(tiles * H * T, dtype=np.float32)  # tile t, unit u, row l at (t * H + u) * T + l
        thr = np.full(tiles * T, np.inf, dtype=np.float32)  # each row's k-th best; inf pads the last tile
        for r in range(r0, r1):
            t, lane = (r - r0) // T, (r - r0) % T
            for u in range(H):
                hT[(t * H + u) * T + lane] = h[r, u]
            thr[r - r0] = vals[r, last]
        for c0 in range(0, L, LABEL_BLOCK):
            c1 = min(L, c0 + LABEL_BLOCK)
            for t in range(tiles):
                base = t * H * T
                row0 = r0 + t * T
                th_lo = vload(thr, t * T)
                th_hi = vload(thr, t * T + SIMD_LANES)
                for j in range(c0, c1, 4):
                    j1, j2, j3 = min(j + 1, L - 1), min(j + 2, L - 1), min(j + 3, L - 1)
                    a0 = vsplat(b[j])
                    a1 = vsplat(b[j1])
                    a2 = vsplat(b[j2])
                    a3 = vsplat(b[j3])
                    a0h, a1h, a2h, a3h = a0, a1, a2, a3
                    for u in range(H):
                        lo = vload(hT, base + u * T)
                        hi = vload(hT, base + u * T + SIMD_LANES)
                        w = vsplat(load(W, j, u))
                        a0 = vfma(lo, w, a0)
                        a0h = vfma(hi, w, a0h)
                        w = vsplat(load(W, j1, u))
                        a1 = vfma(lo, w, a1)
                        a1h = vfma(hi, w, a1h)
                        w = vsplat(load(W, j2, u))
                        a2 = vfma(lo, w, a2)
                        a2h = vfma(hi, w, a2h)
                        w = vsplat(load(W, j3, u))
                        a3 = vfma(lo, w, a3)
                        a3h = vfma(hi, w, a3h)
                    hit = (vgt_mask(a0, th_lo) | vgt_mask(a0h, th_hi) | vgt_mask(a1, th_lo) | vgt_mask(a1h, th_hi)
                           | vgt_mask(a2, th_lo) | vgt_mask(a2h, th_hi) | vgt_mask(a3, th_lo) | vgt_mask(a3h, th_hi))
                    if hit:
                        _offer(a0, a0h, j, row0, r1, L, vals, idx)
                        _offer(a1, a1h, j + 1, row0, r1, L, vals, idx)
                        _offer(a2, a2h, j + 2, row0, r1, L, vals, idx)
                        _offer(a3, a3h, j + 3, row0, r1, L, vals, idx)
                        for lane in range(min(T, r1 - row0)):
                            thr[t * T + lane] = vals[row0 + lane, last]
                        th_lo = vload(thr, t * T)
                        th_hi = vload(thr, t * T + SIMD_LANES)
