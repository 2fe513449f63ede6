"""How far ``slide bench`` is from the memory-bandwidth floor: the bytes a SLIDE training step moves,
and the machine's measured memory bandwidth.

:func:`slide_bytes` counts the bytes every array a SLIDE training step reads or writes from the
engine's own counts (:meth:`slide.engine.SlideMethod.traffic`); :func:`stream_gbps` measures the
machine's memory bandwidth with a STREAM-like update (``a = a + s * b`` over arrays several times
the last-level cache, best of a few repetitions) on the bench's thread count, cached per machine in
``<user cache>/bandwidth.json`` (:func:`slide.data.cache.user_cache_dir`; the file is
``$SLIDE_BANDWIDTH_CACHE`` when set). ``slide bench --remeasure-bandwidth`` or
``SLIDE_REMEASURE_BANDWIDTH=1`` measures again. ``bytes / stream bandwidth`` is the time the step
would take if it did nothing but move its data at the machine's sustained rate: the floor.

The update, not STREAM's triad ``a = b + s * c``: STREAM counts the triad's 3 x 8 bytes an element,
but a store to a line the core has not read makes it read the line first (write-allocate), so the
triad moves 4 x 8 and its figure is 3/4 of the rate the memory sustained. The byte count here counts
a row read and written back as two transfers, which is what the hardware moves; so does the update,
whose written array is read first. Against the triad's figure a kernel that reads and writes rows,
as the engine's row phases do, could run faster than the "floor" (reports/benchmarks.md, "A floor
the engine could beat").

Example
-------
>>> from slide.bandwidth import stream_gbps
>>> stream_gbps(threads=2)      # doctest: +SKIP
31.0
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import namedtuple
from pathlib import Path

import numba
import numpy as np
from numba import prange

from .engine import grouped
from .engine.network import prefetch_row
from .settings import FAST_PARALLEL, numba_threads

#: Environment variable naming the cache file (default ``<user cache>/bandwidth.json``).
CACHE_ENV = "SLIDE_BANDWIDTH_CACHE"
#: Environment variable that, set to anything but ``""`` or ``0``, makes :func:`stream_gbps` measure again.
REMEASURE_ENV = "SLIDE_REMEASURE_BANDWIDTH"
#: Bytes of each of the two arrays of the update: 4 x the last-level cache, within these bounds.
MIN_ARRAY_BYTES, MAX_ARRAY_BYTES = 64 * 2**20, 512 * 2**20
#: Timed updates; the best one counts (STREAM's convention).
REPEATS = 5
#: The measuring kernel and its version, part of the cache key: figures of an older kernel are
#: measured again (``triad=1`` ran scalar and reported half the bandwidth of an AVX-512 machine,
#: ``triad=2`` was the triad, 3/4 of the rate the memory sustains).
KERNEL = "update=1"
#: Bytes one element of the update moves: ``a`` read and written, ``b`` read, float64.
_UPDATE_BYTES = 3 * 8


# ---------------------------------------------------------------------- bytes of a training step
#: One term of the byte accounting: the bytes of one kind of access in the ``part`` of
#: :func:`slide_bytes` it belongs to, the ``phase`` of a step that makes it (a key of ``slide bench``'s
#: ``phase_seconds_per_batch``; None where a window mixed steps by row and by sample), and the count
#: that holds it: ``both`` (the touched bytes and the floor's), ``gathered`` (touched only: a gather or
#: gradient read-modify-write counted once per sample) or ``distinct`` (the floor only: the same
#: accesses once per distinct row of a batch).
_Term = namedtuple("_Term", "part phase bytes count")
#: The phases of a step that ran by sample (:func:`slide.engine.network.train_kernel`).
SAMPLE_PHASES = ("forward_backward", "adam", "rehash")
#: The phases of a step that ran by row (:data:`slide.engine.grouped.ROW_PHASES`), as ``slide bench``
#: names them, then the optimizer's and the table refresh.
ROW_PHASES = (*(f"row_{p}" for p in grouped.ROW_PHASES), "adam", "rehash")


def _row(a) -> int:
    """Bytes of one row of ``a`` (one element of a 1-d array)."""
    return int(a.itemsize * (a.size // a.shape[0] if a.ndim > 1 and a.shape[0] else 1))


def slide_bytes(model, data, counts) -> dict:
    """Bytes read and written by the training steps that ``counts`` describes, by part.

    ``counts`` is a difference of two :meth:`~slide.engine.SlideMethod.traffic` snapshots (or a
    dict with the same keys): ``batches`` steps of ``samples`` samples with ``features`` non-zero
    features, ``labels`` true labels and ``active`` active output neurons in all, ``rows0`` /
    ``rows2`` rows of ``W0`` / ``W2`` updated by the sparse Adam (the ``n0, n2`` of
    :func:`slide.engine.network.adam_sparse`, with the rows the row pass updated itself),
    ``refreshes`` hash-table refreshes, ``row_batches`` steps that ran the output layer by row
    (:mod:`slide.engine.grouped`) with ``row_active`` active neurons and ``row_rows2`` distinct output
    rows, and of them the steps whose row pass updated the input layer too, with ``row_features``
    features and ``row_rows0`` distinct ``W0`` rows. Row widths come from the model's arrays (shape and
    dtype) and the index widths from ``data``'s.

    What each sample moves is in :func:`_per_sample_terms`, what the row pass moves in
    :func:`_by_row_terms`, what each step moves once in :func:`_per_batch_terms`, a table refresh in
    :func:`_refresh_bytes`; a refresh is counted in the step that does it, so the mean over steps
    amortises it over the refresh interval. :func:`phase_bytes` splits the floor's bytes by phase.

    Not counted: per-thread scratch (activations, logits, the active list, targets, stamps and
    collision counts, the row pass's per-sample buffers), the hash-table bucket reads of the LSH
    lookup, and the periodic ``logq`` re-estimate. Bytes are element bytes: a scattered scalar (a
    ``b2`` entry, a flag) moves a 64-byte cache line, so the figure, and the floor from it, are lower
    bounds. With LSH-sampled hidden layers the first layer's rows are still counted whole.

    Returns
    -------
    dict
        Bytes per part (``forward``, ``backward``, ``flags``, ``input``, ``by_row``, ``adam``,
        ``dense_parts``, ``refresh``) and their ``total``, all for the whole of ``counts`` (divide by
        ``counts["batches"]`` for a mean per batch), and ``distinct_total``: the same traffic with
        the per-sample gathers and gradient read-modify-writes counted once per distinct row of the
        batch (:func:`_distinct_row_terms`), the bytes that must cross the memory bus even if every
        shared row stayed in cache. Measured steps run faster than ``total`` at stream bandwidth
        allows (0.66x at the Amazon shape), so shared rows do hit cache: ``distinct_total`` is the
        floor's byte count, ``total`` an upper bound. The row pass reads and writes by distinct row
        already, so its bytes are the same in both. With ``optimizer: dense`` no distinct counts
        exist and ``distinct_total`` equals ``total``. ``by_phase``: :func:`phase_bytes` of the same
        terms.
    """
    parts = dict.fromkeys(("forward", "backward", "flags", "input", "by_row", "adam", "dense_parts", "refresh"), 0)
    terms = _terms(model, data, counts)
    for term in terms:
        if term.count != "distinct":
            parts[term.part] += term.bytes
    parts["total"] = sum(parts.values())
    parts["distinct_total"] = sum(term.bytes for term in terms if term.count != "gathered")
    parts["by_phase"] = _by_phase(terms, counts)
    return parts


def phase_bytes(model, data, counts) -> dict | None:
    """The floor's bytes (``distinct_total`` of :func:`slide_bytes`) by the phase of a step that moves
    them, for the whole of ``counts``: a dict over :data:`ROW_PHASES` when every step of the window ran
    by row, over :data:`SAMPLE_PHASES` when none did, None when the window mixed the two (their
    per-sample bytes cannot be told apart). The values sum to ``distinct_total``."""
    return _by_phase(_terms(model, data, counts), counts)


def _by_phase(terms, counts) -> dict | None:
    by_phase = {}
    for term in terms:
        if term.count == "gathered" or not term.bytes:
            continue
        if term.phase is None:
            return None
        by_phase[term.phase] = by_phase.get(term.phase, 0) + term.bytes
    phases = ROW_PHASES if counts["row_batches"] else SAMPLE_PHASES
    if by_phase.keys() - set(phases):
        return None
    return {p: by_phase.get(p, 0) for p in phases}


def _terms(model, data, counts) -> list:
    """Every :data:`_Term` of the steps of ``counts`` (see :func:`slide_bytes`)."""
    c = {k: int(v) for k, v in counts.items()}
    dense = model.config["optimizer"] == "dense"
    # a per-sample access is in the phase of its pass when the window ran one pass only
    by_row = c["row_batches"] == c["batches"] and c["batches"] > 0
    by_sample = c["row_batches"] == 0

    def phase(row_phase: str):
        return row_phase if by_row else "forward_backward" if by_sample else None

    terms = [*_per_sample_terms(model, data, c, phase), *_by_row_terms(model, data, c, fused=not dense),
             *_per_batch_terms(model, c, dense),
             _Term("refresh", "rehash", c["refreshes"] * _refresh_bytes(model), "both")]
    if dense:  # no distinct counts: every access is the floor's
        return [t._replace(count="both") for t in terms]
    return terms + _distinct_row_terms(model, c, phase)


def _output_row_bytes(m) -> tuple[int, int]:
    """Bytes of an output neuron (its ``W2`` row and ``b2`` entry) and of its gradient (``gW2`` row
    and one thread's ``gb2`` entry)."""
    return _row(m.W2) + _row(m.b2), _row(m.gW2) + m.gb2_t.itemsize


def _per_sample_terms(m, data, c: dict, phase) -> list:
    """``forward``, ``backward``, ``flags`` and ``input`` bytes of the samples of ``c``, each sample
    counting the rows it touches; ``phase(row_phase)`` names the phase of a per-sample access.

    The gathers and the gradient read-modify-writes of the rows a sample touches: ``W0`` rows of
    its features read in the forward pass and their ``gW0`` rows read and written in the backward
    pass; in the steps that ran by sample, ``W2`` rows and ``b2`` entries of its active neurons read,
    and their ``gW2`` rows and per-thread ``gb2`` entries read and written; the ``flag0``/``flag2``
    byte of each such row read; the ``logq`` entry read and the ``qcount`` entry read and written for
    each sampled negative (``correction: logq``); the sample's features, labels and indptr entries. A
    row shared by several samples of a batch is counted once for each: the samples run on different
    cores at different times, a batch's rows (up to hundreds of MB at the paper's shapes) do not stay
    in a core's cache from one sample to the next, and the gradient rows are written by each sample in
    turn (HOGWILD), so the hardware fetches them again. The second read of a ``W2`` row in the
    sample's own backward pass is not counted: it comes right after the forward read, from cache.
    """
    out_row, grad_row = _output_row_bytes(m)
    by_sample = c["active"] - c["row_active"]
    features = c["features"] - c["row_features"]  # whose gW0 rows the samples add into
    gathered = "gathered"
    terms = [
        _Term("forward", phase("row_select"), c["features"] * _row(m.W0), gathered),
        _Term("forward", "forward_backward", by_sample * out_row, gathered),
        _Term("backward", phase("row_backward"), 2 * features * _row(m.gW0), gathered),
        _Term("backward", "forward_backward", 2 * by_sample * grad_row, gathered),
        _Term("flags", phase("row_backward"), features * _row(m.flag0), gathered),
        _Term("flags", "forward_backward", by_sample * _row(m.flag2), gathered),
        _Term("input", phase("row_select"),
              c["features"] * (_row(data.x_indices) + _row(data.x_data)) + c["labels"] * _row(data.y_indices)
              + c["samples"] * (8 + 2 * _row(data.x_indptr) + 2 * _row(data.y_indptr)), "both"),  # 8: the row id
    ]
    if m.logq.shape[0]:
        negatives = max(c["active"] - c["labels"], 0)
        terms.append(_Term("backward", phase("row_softmax"), negatives * (_row(m.logq) + 2 * _row(m.qcount)),
                           gathered))
    return terms


def _by_row_terms(m, data, c: dict, fused: bool) -> list:
    """The output layer of the steps that ran by row (:mod:`slide.engine.grouped`), and their input
    layer where the row pass updated it.

    Each distinct output row: its ``W2`` row and ``b2`` entry read in the logits phase and the ``W2``
    row again in the gradient phase (a batch's rows are swept twice and do not stay in cache between
    the sweeps); unless ``fused`` (the sparse optimizer, whose Adam step the row pass takes itself,
    counted in ``adam``) its ``gW2`` row and a thread's ``gb2`` entry read and written and its flag read
    and set. The grouping of the pairs by row (:func:`_grouping_bytes`), read by both row phases; for
    the input layer read by its one phase, which also reads each pair's feature value.
    """
    out_row, grad_row = _output_row_bytes(m)
    rows, steps = c["row_rows2"], c["row_batches"]
    sort2, sweep2 = _grouping_bytes(m.num_labels, m.threads, steps, c["row_active"], rows)
    sort0, sweep0 = _grouping_bytes(m.num_features, m.threads, steps, c["row_features"], c["row_rows0"])
    return [
        _Term("by_row", "row_sort", sort2, "both"),
        _Term("by_row", "row_logits", rows * out_row + sweep2, "both"),
        _Term("by_row", "row_grads", rows * (_row(m.W2) + (0 if fused else 2 * grad_row + 2 * _row(m.flag2))) + sweep2,
              "both"),
        _Term("by_row", "row_input", sort0 + sweep0 + c["row_features"] * _row(data.x_data), "both"),
    ]


def _grouping_bytes(num_rows: int, threads: int, steps: int, pairs: int, rows: int) -> tuple[int, int]:
    """Bytes of grouping ``pairs`` (sample, position) pairs of ``steps`` steps by their row id (below
    ``num_rows``; ``rows`` distinct rows per step, summed) as
    :func:`slide.engine.grouped.group_by_row` does, and of one row phase reading the result.

    The counting sort (when the rows are no more than a step's pairs; the mean step decides): per step
    each chunk's int32 cursor per row zeroed, read by the prefix sum and read and written by it; per
    pair its id read twice, its cursor read and written twice, its entry written. The radix sort:
    per pair its id read twice, then its key (int32) and pair (int64) written by the first pass, read
    and written again by the second, and the second's keys read twice for the runs (56 bytes). Either
    way per distinct row its id and offset written; a phase reads them with each pair's entry.
    """
    if not steps or not pairs:
        return 0, 0
    chunks = max(1, min(threads, grouped.SORT_CHUNKS))
    if num_rows <= pairs / steps:
        sort = steps * chunks * num_rows * 4 * 4 + pairs * (2 * 4 + 2 * 2 * 4 + 8)
    else:
        sort = pairs * 56
    return sort + rows * (4 + 8), rows * (4 + 8) + pairs * 8


def _per_batch_terms(m, c: dict, dense: bool) -> list:
    """``adam``, ``dense_parts`` and the per-step share of ``flags``: what the hardware does once per
    step, once per row.

    The sparse Adam of each touched row (``rows0``, ``rows2``: read ``W, m, v, g`` and write ``W, m,
    v`` and the zeroed ``g``, 8 row transfers, plus ``b2`` with its ``m, v, g`` and the per-thread
    ``gb2`` entries of the row); for an output row the row pass updated itself (``row_rows2`` under
    the sparse optimizer, in its gradient phase) only ``m, v`` read and ``W, m, v`` written (``W`` was
    read in the gradient phase, the gradient stays in a thread's buffer), ``b2, m, v`` read and written
    and its ``gb2`` entry written, read and cleared, and no flag; for an input row the row pass updated
    itself (``row_rows0``, in its input phase) ``W, m, v`` read and written and no flag; the flag scan
    that collects the touched rows (every flag read, the touched ones set and cleared, the row lists
    written and read); with ``optimizer: dense`` the same Adam over every row of ``W0``, ``W2``,
    ``b2``, the untouched rows' gradient rows neither read nor zeroed, every flag read and the touched
    ones set and cleared; the small dense parts (``b0`` and the further hidden layers ``Wh``, ``bh``:
    read once per batch in the forward pass, since every sample reads all of them they stay in cache,
    then their per-thread gradients summed and Adam, all counted in the optimizer's phase).
    """
    T = m.gb2_t.shape[0]                                           # threads with their own gb2 rows
    # rows the optimizer updated in all: every row in every step (dense), the touched ones (sparse)
    n0, n2 = (c["batches"] * m.num_features, c["batches"] * m.num_labels) if dense else (c["rows0"], c["rows2"])
    fused = 0 if dense else c["row_rows2"]                         # of n2, updated by the row pass
    fused0 = 0 if dense else c["row_rows0"]                        # of n0, updated by the row pass
    adam0 = 2 * sum(_row(a) for a in (m.W0, m.mW0, m.vW0, m.gW0))
    adam2 = 2 * sum(_row(a) for a in (m.W2, m.mW2, m.vW2, m.gW2, m.b2, m.mb2, m.vb2, m.gb2)) + 2 * T * m.gb2_t.itemsize
    adam0_fused = 2 * sum(_row(a) for a in (m.W0, m.mW0, m.vW0))
    adam2_fused = (_row(m.W2) + 2 * (_row(m.mW2) + _row(m.vW2)) + 2 * sum(_row(a) for a in (m.b2, m.mb2, m.vb2))
                   + 3 * _row(m.gb2))
    small = (m.b0, m.mb0, m.vb0, m.gb0, m.Wh, m.mWh, m.vWh, m.gWh, m.bh, m.mbh, m.vbh, m.gbh)
    # read in the forward pass; Adam (read and write W, m, v, g); per-thread gradients summed and zeroed
    dense_parts = c["batches"] * (m.b0.nbytes + m.Wh.nbytes + m.bh.nbytes + 2 * sum(a.nbytes for a in small)
                                  + 2 * (m.gb0_t.nbytes + m.gWh_t.nbytes + m.gbh_t.nbytes))
    scanned = c["batches"] * (m.flag0.nbytes + m.flag2.nbytes)
    if dense:  # the touched rows (rows0, rows2) as sparse; the others without their gradient rows
        untouched = (n0 - c["rows0"]) * (adam0 - 2 * _row(m.gW0)) + (n2 - c["rows2"]) * (adam2 - 2 * _row(m.gW2))
        adam = c["rows0"] * adam0 + c["rows2"] * adam2 + untouched
        flags = scanned + 2 * (c["rows0"] * _row(m.flag0) + c["rows2"] * _row(m.flag2))
        return [_Term("adam", "adam", adam, "both"), _Term("dense_parts", "adam", dense_parts, "both"),
                _Term("flags", "adam", flags, "both")]
    flagged0, flagged2 = n0 - fused0, n2 - fused
    flags = (scanned
             + 2 * (flagged0 * _row(m.flag0) + flagged2 * _row(m.flag2))               # set, cleared
             + 2 * (flagged0 * _row(m.rows0) + flagged2 * _row(m.rows2)))              # listed, read
    return [_Term("adam", "adam", flagged0 * adam0 + flagged2 * adam2, "both"),
            _Term("adam", "row_input", fused0 * adam0_fused, "both"),
            _Term("adam", "row_grads", fused * adam2_fused, "both"),
            _Term("dense_parts", "adam", dense_parts, "both"), _Term("flags", "adam", flags, "both")]


def _refresh_bytes(m) -> int:
    """Bytes of one table refresh (rehash or rebuild): every row of ``W2`` read and the build's own
    arrays (:meth:`~slide.engine.tables.LSHIndex.build_bytes`), and so for each LSH-sampled hidden
    layer (the first layer's ``W0.T`` copy is read and written)."""
    refresh = m.W2.nbytes + m.index.build_bytes() if m.sampled else 0
    for layer, index in m.hidden_indices:
        refresh += (2 * m.W0.nbytes if layer == 0 else m._hidden_weights(layer).nbytes) + index.build_bytes()
    return refresh


def _distinct_row_terms(m, c: dict, phase) -> list:
    """The per-sample gathers, gradient read-modify-writes and flag reads of ``c`` counted once per
    distinct row of a batch (the ``rows0``/``rows2`` that the sparse Adam updated; of ``rows0`` those the
    row pass did not update with only their read, of ``rows2`` those of the steps that ran by sample)."""
    out_row, grad_row = _output_row_bytes(m)
    return [_Term("forward", phase("row_select"), c["rows0"] * _row(m.W0), "distinct"),
            _Term("backward", phase("row_backward"), (c["rows0"] - c["row_rows0"]) * (2 * _row(m.gW0) + _row(m.flag0)),
                  "distinct"),
            _Term("backward", "forward_backward",
                  (c["rows2"] - c["row_rows2"]) * (out_row + 2 * grad_row + _row(m.flag2)), "distinct")]


def floor_figures(bytes_per_batch: float, floor_bytes_per_batch: float, median_batch_seconds: float,
                  gbps: float) -> dict:
    """``achieved_gbps`` (of ``bytes_per_batch``), ``floor_seconds`` (the time to move
    ``floor_bytes_per_batch``, the distinct rows, at ``gbps``) and ``x_of_floor``."""
    floor = floor_bytes_per_batch / (gbps * 1e9)
    return {"achieved_gbps": bytes_per_batch / median_batch_seconds / 1e9, "floor_seconds": floor,
            "x_of_floor": median_batch_seconds / floor}


def phase_floor(floor_bytes: dict, seconds: dict, batches: int, gbps: float) -> dict:
    """Each phase's distance to its own floor, per batch: ``floor_bytes`` (:func:`phase_bytes` of a
    window of ``batches`` steps) against ``seconds`` (``slide bench``'s ``phase_seconds_per_batch``,
    means over the window) at ``gbps``. Phases with neither bytes nor time are left out; a phase that
    moves no counted bytes has ``x_of_floor`` None."""
    out = {}
    for phase, total in floor_bytes.items():
        b, s = total / batches, float(seconds.get(phase, 0.0))
        if b or s:
            floor = b / (gbps * 1e9)
            out[phase] = {"seconds": s, "floor_bytes": b, "floor_seconds": floor,
                          "x_of_floor": s / floor if b else None}
    return out


def phase_table(name: str, by_phase: dict, gbps: float) -> str:
    """The human table of :func:`phase_floor` that ``slide bench`` prints, with a line for the sum."""
    rows = [(p, f["seconds"], f["floor_bytes"], f["floor_seconds"], f["x_of_floor"]) for p, f in by_phase.items()]
    s, b, fl = (sum(r[i] for r in rows) for i in (1, 2, 3))
    rows.append(("all phases", s, b, fl, s / fl if fl else None))
    lines = [f"{name} by phase (mean per batch; floor: the phase's distinct bytes at {gbps:.1f} GB/s):",
             f"  {'phase':<17}{'ms':>8}{'MB':>9}{'floor ms':>10}{'x floor':>9}"]
    for p, s, b, fl, x in rows:
        lines.append(f"  {p:<17}{s * 1e3:>8.2f}{b / 1e6:>9.1f}{fl * 1e3:>10.2f}{'-' if x is None else f'{x:.2f}':>9}")
    return "\n".join(lines)


def rows_floor_line(name: str, rows: dict) -> str:
    """The human line of :func:`slide.training.bench` about its ``rows_floor`` (:func:`measure_rows` of
    the output layer with ``x_of_step_floor`` and, when the steps ran by row, ``x_of_rows_floor``)."""
    line = (f"{name}: {rows['rows']:,} scattered rows of W2 and its moments (a batch's), read and written back "
            f"with no arithmetic: {rows['seconds'] * 1e3:.1f} ms = {rows['gbps']:.1f} GB/s, "
            f"{rows['x_of_step_floor']:.2f}x the whole step's memory floor on their own")
    if rows["x_of_rows_floor"]:
        line += f"; the gradient phase takes {rows['x_of_rows_floor']:.2f}x that"
    return line


def floor_line(name: str, result: dict) -> str:
    """The one human line of :func:`slide.training.bench` about the floor."""
    return (f"{name}: touches {result['bytes_per_batch'] / 1e6:,.0f} MB per batch "
            f"({result['floor_bytes_per_batch'] / 1e6:,.0f} MB in distinct rows): {result['achieved_gbps']:.1f} GB/s "
            f"touched; the distinct rows at the machine's {result['stream_gbps']:.1f} GB/s stream bandwidth"
            f"{f' (measured {when})' if (when := result.get('stream_measured')) else ''} take "
            f"{result['floor_seconds'] * 1e3:.1f} ms = {result['x_of_floor']:.2f}x the memory floor")


# ---------------------------------------------------------------------- the machine's bandwidth
@numba.njit(**FAST_PARALLEL)
def _fill(a, b, parts):
    """Write both arrays, each thread its own contiguous block (the pages the update will use)."""
    n = a.shape[0]
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        a[lo:hi] = 0.0
        b[lo:hi] = 1.0


@numba.njit(**FAST_PARALLEL)
def _update(a, b, s, parts):
    """``a = a + s * b``, the blocks of :func:`_fill`."""
    n = a.shape[0]
    for t in prange(parts):
        lo, hi = n * t // parts, n * (t + 1) // parts
        # views indexed from 0: an index that starts at a runtime offset could be negative for all
        # Numba knows, and the wraparound code it then emits keeps the loop scalar (a kernel timing
        # the cores' arithmetic, half this machine's bandwidth)
        aa, bb = a[lo:hi], b[lo:hi]
        for i in range(aa.shape[0]):
            aa[i] = aa[i] + s * bb[i]


@numba.njit(**FAST_PARALLEL)
def _rewrite_rows(a, b, c, rows, zero):
    """Rows ``rows`` (ascending) of the unsigned-integer arrays ``a``, ``b``, ``c`` read and written back
    as ``x + zero``: with ``zero`` 0 (a run-time value, so the compiler keeps every load and store)
    nothing changes. Tasks, order and prefetch as the row pass's gradient phase."""
    n = rows.shape[0]
    for k in prange((n + grouped.ROWS_PER_TASK - 1) // grouped.ROWS_PER_TASK):
        for j in range(k * grouped.ROWS_PER_TASK, min(n, (k + 1) * grouped.ROWS_PER_TASK)):
            ahead = rows[min(j + grouped.GRADS_AHEAD, n - 1)]
            prefetch_row(a, ahead)
            prefetch_row(b, ahead)
            prefetch_row(c, ahead)
            r = rows[j]
            for q in range(a.shape[1]):
                a[r, q] += zero
                b[r, q] += zero
                c[r, q] += zero


def _as_unsigned(a) -> np.ndarray:
    """A view of a C-contiguous 2-d array as unsigned integers of its item size (its bits unchanged)."""
    return a.view(np.dtype(f"u{a.itemsize}"))


def measure_rows(arrays, rows_per_batch: int, threads: int | None = None, *, repeats: int = REPEATS,
                 seed: int = 0) -> dict:
    """How fast the machine reads and writes back scattered rows of ``arrays`` (three C-contiguous
    2-d arrays with the same rows, such as a layer's weights and Adam moments) with no arithmetic.

    Each of ``repeats`` timings rewrites ``rows_per_batch`` rows drawn at random (seeded, ascending, a
    fresh draw each time) in the row pass's tasks and prefetch order, leaving every value as it was;
    the best counts. The memory floor of :func:`stream_gbps` assumes long sequential runs: rows of a
    few cache lines each, spread over hundreds of MB, move slower, and this says how much.

    Returns
    -------
    dict
        ``rows``, ``bytes`` (each row of each array read and written), ``seconds`` and ``gbps``.
    """
    threads, _, repeats = _checked(threads, None, repeats)
    a, b, c = (_as_unsigned(x) for x in arrays)
    if not (all(x.ndim == 2 and x.flags.c_contiguous for x in (a, b, c)) and a.shape[0] == b.shape[0] == c.shape[0]):
        raise ValueError("measure_rows needs three C-contiguous 2-d arrays with the same number of rows")
    n = _check_int("rows_per_batch", rows_per_batch, 1, a.shape[0])
    rng = np.random.default_rng(seed)
    zero = a.dtype.type(0)
    best = math.inf
    with numba_threads(threads):
        for i in range(repeats + 1):  # the first compiles (or loads) the kernel; untimed
            rows = np.sort(rng.choice(a.shape[0], n, replace=False)).astype(np.int64)
            t0 = time.perf_counter()
            _rewrite_rows(a, b, c, rows, zero)
            if i:
                best = min(best, time.perf_counter() - t0)
    moved = 2 * n * sum(_row(x) for x in (a, b, c))
    return {"rows": n, "bytes": moved, "seconds": best, "gbps": moved / max(best, 1e-9) / 1e9}


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (:func:`slide.runs.cpu_caches`), 32 MiB where it cannot be read."""
    from .runs import cpu_caches

    return max(cpu_caches().values(), default=32 * 2**20)


def default_array_bytes() -> int:
    """Bytes of each array of the update: 4 x the last-level cache, clamped to :data:`MIN_ARRAY_BYTES` ..
    :data:`MAX_ARRAY_BYTES`."""
    return int(min(MAX_ARRAY_BYTES, max(MIN_ARRAY_BYTES, 4 * last_level_cache_bytes())))


def _check_int(name, value, low, high=None) -> int:
    """``value`` as an int, or TypeError / ValueError when it is not one in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {low}..{high if high is not None else ''}, got {value}")
    return int(value)


def _checked(threads, array_bytes, repeats=REPEATS) -> tuple[int, int, int]:
    """The measurement's arguments checked, with their defaults filled in."""
    threads = numba.get_num_threads() if threads is None else _check_int("threads", threads, 1,
                                                                         numba.config.NUMBA_NUM_THREADS)
    array_bytes = default_array_bytes() if array_bytes is None else _check_int("array_bytes", array_bytes, 8192)
    return threads, array_bytes, _check_int("repeats", repeats, 1)


def measure_stream_gbps(threads: int | None = None, *, array_bytes: int | None = None,
                        repeats: int = REPEATS) -> float:
    """The machine's memory bandwidth in GB/s (1e9 bytes/s), measured now, never cached.

    The best of ``repeats`` updates ``a = a + s * b`` over two float64 arrays of ``array_bytes``
    each (default :func:`default_array_bytes`) on ``threads`` Numba threads (default: Numba's
    current count), counting the 24 bytes an element moves (``a`` read and written, ``b`` read).

    Raises
    ------
    TypeError, ValueError
        An argument has the wrong type or is out of range (``array_bytes`` at least 8 KiB).
    """
    threads, array_bytes, repeats = _checked(threads, array_bytes, repeats)
    n = array_bytes // 8
    a, b = (np.empty(n, dtype=np.float64) for _ in range(2))
    best = math.inf
    with numba_threads(threads):
        _fill(a, b, threads)
        _update(a, b, 0.5, threads)          # compiles (or loads) the kernel; untimed
        for _ in range(repeats):
            t0 = time.perf_counter()
            _update(a, b, 0.5, threads)
            best = min(best, time.perf_counter() - t0)
    return _UPDATE_BYTES * n / max(best, 1e-9) / 1e9


def cache_file() -> Path:
    """Where measured bandwidths are kept: ``$SLIDE_BANDWIDTH_CACHE`` or ``<user cache>/bandwidth.json``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from .data.cache import user_cache_dir

    return user_cache_dir() / "bandwidth.json"


def machine_key(threads: int, array_bytes: int) -> str:
    """The cache key of a measurement: host name, CPU model, thread count, array size and kernel."""
    from .runs import cpu_model

    return (f"{socket.gethostname()}|{cpu_model()}|threads={threads}|array_mib={array_bytes / 2**20:g}"
            f"|{KERNEL}")


def _read_cache(path: Path) -> dict:
    """The cache's entries; ``{}`` when the file is missing, unreadable or not a JSON object."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _cached_gbps(entry) -> float | None:
    value = entry.get("gbps") if isinstance(entry, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def stream_gbps(threads: int | None = None, *, array_bytes: int | None = None, repeats: int = REPEATS,
                remeasure: bool | None = None) -> float:
    """The machine's memory bandwidth in GB/s for ``threads`` threads, from the cache when it has it
    (the ``gbps`` of :func:`stream_entry`, which takes the same arguments)."""
    return stream_entry(threads, array_bytes=array_bytes, repeats=repeats, remeasure=remeasure)["gbps"]


def stream_entry(threads: int | None = None, *, array_bytes: int | None = None, repeats: int = REPEATS,
                 remeasure: bool | None = None) -> dict:
    """The machine's memory bandwidth for ``threads`` threads and when it was measured: ``gbps`` and
    ``measured`` (UTC, ISO 8601), from the cache when it has them.

    Measured by :func:`measure_stream_gbps` when the cache (:func:`cache_file`) has no valid entry
    for :func:`machine_key`, or when ``remeasure`` (default: ``$SLIDE_REMEASURE_BANDWIDTH`` set to
    anything but ``""``/``0``); the measurement is then written back. A corrupt cache file, or a
    corrupt entry, is ignored and rewritten; a cache that cannot be written is left as it is. An entry
    written before the time was kept has ``measured`` None.
    """
    threads, array_bytes, repeats = _checked(threads, array_bytes, repeats)
    if remeasure is None:
        remeasure = os.environ.get(REMEASURE_ENV, "") not in ("", "0")
    path = cache_file()
    key = machine_key(threads, array_bytes)
    entries = _read_cache(path)
    if not remeasure:
        cached = _cached_gbps(entries.get(key))
        if cached is not None:
            measured = entries[key].get("measured")
            return {"gbps": cached, "measured": measured if isinstance(measured, str) else None}
    gbps = measure_stream_gbps(threads, array_bytes=array_bytes, repeats=repeats)
    entries[key] = {"gbps": gbps, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "repeats": repeats}
    try:
        from .io import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass
    return {"gbps": gbps, "measured": entries[key]["measured"]}


__all__ = ["slide_bytes", "floor_figures", "floor_line", "stream_gbps", "stream_entry", "measure_stream_gbps",
           "measure_rows", "cache_file", "machine_key", "default_array_bytes", "CACHE_ENV", "REMEASURE_ENV"]
