"""Active-neuron selection: which output neurons a sample computes, from an LSH lookup of its activation.

Numba functions, callable from other ``@njit`` code (for instance inside a ``numba.prange`` over the samples
of a batch)::

    n = select_active(lsh_arrays, vec, labels, mode, k_or_t, min_active, min_active_trigger, num_items,
                      stamp, counts, stamp_value, rng_seed, out)
    n = select_active_sparse(lsh_arrays, idx, val, labels, mode, ...same arguments...)

``lsh_arrays`` is ``LSHIndex.arrays`` (one tuple argument; see :mod:`slide.engine.tables`), ``vec`` a dense
float32 (dim,) query, or ``idx, val`` (int32, float32, unique indices) a sparse one. ``labels`` (int32, ids
in ``[0, num_items)``; empty at inference) are always active and come first in ``out``; the other ids follow
in retrieval order (table 0 first). ``n`` is returned and the active ids are ``out[:n]``, distinct.

Modes (``mode_code``):

``MODE_VANILLA``
    The union of the L buckets. When labels + union number fewer than ``min_active_trigger``, distinct
    random ids (SplitMix64 stream seeded by ``rng_seed``) are added until there are
    ``min(min_active, num_items)`` (the reference uses 1,500 and 1,000). ``k_or_t`` is ignored.
``MODE_TOPK``
    Labels plus the ``k_or_t`` retrieved ids with the most table collisions (ties: retrieval order).
``MODE_THRESHOLD``
    Labels plus the retrieved ids found in at least ``k_or_t`` of the L tables.

Thread safety: the index arrays are only read. ``stamp`` (any integer dtype; the engine's is a byte,
:data:`slide.engine.network.STAMP`), ``counts`` (int32) and ``out`` (int32), each (num_items,), are scratch
written by the call, so each thread needs its own, e.g. rows of ``(n_threads, num_items)`` arrays picked
with ``numba.get_thread_id()``. ``stamp`` starts as zeros; ``stamp_value`` must differ from every value
used before with that ``stamp`` array (a running sample counter starting at 1 works; re-zero ``stamp``
before the counter passes the dtype's range). After the call, ``stamp`` and ``counts`` hold nothing the
caller should rely on. The index must not be rebuilt during the calls.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import ConfigError
from ..method_registry import method_spec
from ..settings import NJIT
from .hashing import M_L
from .intrinsics import prefetch1
from .rng import GOLDEN as _GOLDEN
from .rng import mix64
from .tables import retrieve

#: The ``sampling`` enum of slide/engine/config.schema.json; a code is its index there.
MODES = method_spec("slide").choices("sampling")
MODE_VANILLA, MODE_TOPK, MODE_THRESHOLD = 0, 1, 2
#: How many draws ahead the random padding prefetches the stamp of an id (select phase at the
#: Amazon-670K shape: 2.5 ms per batch at 0, 2.2 at 8, 1.9-2.0 at 32-128).
PAD_AHEAD = 32


def mode_code(name: str) -> int:
    """Integer code of a selection mode name; ConfigError if unknown."""
    if name not in MODES:
        raise ConfigError(f"unknown active-neuron mode {name!r}; choose one of {', '.join(MODES)}")
    return MODES.index(name)


@numba.njit(inline="always", **NJIT)
def _draw(state, num_items):
    # an id below num_items (< 2**31) from the top 32 bits of a SplitMix64 draw by a multiply and a
    # shift (Lemire), not a 64-bit division; the bias is below num_items / 2**32
    return np.int64(((mix64(state) >> np.uint64(32)) * np.uint64(num_items)) >> np.uint64(32))


@numba.njit(**NJIT)
def pad_random(n, target, num_items, stamp, stamp_value, rng_seed, out):
    """Add distinct random ids below ``num_items`` not yet stamped ``stamp_value`` to ``out[n:]`` (a
    SplitMix64 stream seeded by ``rng_seed``) until there are ``target``; return ``target``."""
    # the stamps of the ids lie anywhere in (num_items,): each is prefetched PAD_AHEAD draws before
    # it is tested (the stream is known in advance)
    state = np.uint64(rng_seed)
    while n < target:
        state += _GOLDEN
        prefetch1(stamp, _draw(state + np.uint64(PAD_AHEAD) * _GOLDEN, num_items))
        c = _draw(state, num_items)
        if stamp[c] != stamp_value:
            stamp[c] = stamp_value
            out[n] = c
            n += 1
    return n


@numba.njit(**NJIT)
def _keep_topk(out, n_labels, n, counts, k, L):
    if n - n_labels <= k:
        return n
    hist = np.zeros(L + 1, np.int64)
    for j in range(n_labels, n):
        hist[counts[out[j]]] += 1
    above, cut = 0, L
    while above + hist[cut] < k:
        above += hist[cut]
        cut -= 1
    ties = k - above  # ids with count == cut still to take, in retrieval order
    w = n_labels
    for j in range(n_labels, n):
        c = out[j]
        if counts[c] > cut or (counts[c] == cut and ties > 0):
            if counts[c] == cut:
                ties -= 1
            out[w] = c
            w += 1
    return w


@numba.njit(**NJIT)
def _keep_threshold(out, n_labels, n, counts, t):
    w = n_labels
    for j in range(n_labels, n):
        if counts[out[j]] >= t:
            out[w] = out[j]
            w += 1
    return w


@numba.njit(**NJIT)
def _select(lsh_arrays, idx, val, dense, labels, mode, k_or_t, min_active, min_active_trigger, num_items,
            stamp, counts, stamp_value, rng_seed, out):
    # the vanilla mode keeps the whole union: the collision counts are for top-k and threshold only
    n_labels, n = retrieve(lsh_arrays, idx, val, dense, labels, stamp, counts, stamp_value, out, mode != MODE_VANILLA)
    if mode == MODE_TOPK:
        return _keep_topk(out, n_labels, n, counts, k_or_t, lsh_arrays[0][M_L])
    if mode == MODE_THRESHOLD:
        return _keep_threshold(out, n_labels, n, counts, k_or_t)
    if n < min_active_trigger:
        n = pad_random(n, min(min_active, num_items), num_items, stamp, stamp_value, rng_seed, out)
    return n


@numba.njit(**NJIT)
def select_active(lsh_arrays, vec, labels, mode, k_or_t, min_active, min_active_trigger, num_items,
                  stamp, counts, stamp_value, rng_seed, out):
    """Active ids for a dense query ``vec`` into ``out[:n]``; returns ``n`` (module docstring)."""
    return _select(lsh_arrays, np.empty(0, np.int32), vec, True, labels, mode, k_or_t, min_active,
                   min_active_trigger, num_items, stamp, counts, stamp_value, rng_seed, out)


@numba.njit(**NJIT)
def select_active_sparse(lsh_arrays, idx, val, labels, mode, k_or_t, min_active, min_active_trigger, num_items,
                         stamp, counts, stamp_value, rng_seed, out):
    """Active ids for a sparse query ``(idx, val)`` into ``out[:n]``; returns ``n`` (module docstring)."""
    return _select(lsh_arrays, idx, val, False, labels, mode, k_or_t, min_active,
                   min_active_trigger, num_items, stamp, counts, stamp_value, rng_seed, out)
