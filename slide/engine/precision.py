"""Storage precision of the row-sparse parameters (the ``precision`` key): float32 or bfloat16.

With ``precision: bf16`` the weights ``w`` and Adam moments ``m``, ``v`` of ``W0`` and ``W2`` hold
bfloat16 bit patterns (the upper 16 bits of a float32) in uint16 arrays, so each row a step touches
moves half the bytes; gradients and every other array stay float32. All arithmetic is float32:
a kernel decodes a value when it reads it (exact) and rounds when it stores it.

The kernels read and write these arrays only through :func:`load` / :func:`store_sr` (2-d) and
:func:`load1` / :func:`store1_sr` (1-d). Numba specialises them on the array's dtype at compile
time: for a float32 array they are plain indexing, inlined at Numba's IR level (the float32 training
and Adam kernels compile to the same machine code as before them), for a uint16 array they decode or
round. :func:`to_bf16` / :func:`from_bf16` are the NumPy face, for initialisation, checkpoints and
tests.

Rounding (:func:`f32_to_bf16`, :func:`to_bf16`, used for initialisation and checkpoints): round to
nearest, ties to even, on the bits, so values above the largest finite bfloat16 round to infinity
exactly where IEEE rounding would, infinities stay infinite, NaN stays NaN (sign and upper payload
kept, quiet bit set), and float32 subnormals round to bfloat16 subnormals (no flush to zero).

The optimiser's stores round stochastically instead (:func:`f32_to_bf16_sr`, :func:`store_sr`):
up with probability equal to the value's distance from the bfloat16 below over the gap, so a store
is exact in expectation. Round to nearest loses every change smaller than half a step (2**-9
relative): Adam's ``v <- 0.999 v + 0.001 g**2`` then never decays, and late small weight updates
vanish. The random bits are reproducible from the step's key, so the sparse and dense updates agree:
an entry of a 1-d array takes :func:`noise`, a SplitMix64 of the key and its index; row ``r`` of a
2-d array takes one SplitMix64 of the key and ``r`` (:func:`row_noise`), and its column ``c`` the
top 48 bits of that value plus ``(c + 1)`` golden-ratio increments (:func:`col_noise`: the state
sequence of a SplitMix64 stream without its finalizer). Every entry's three 16-bit lanes are then
exactly uniform and independent given a uniform row value, and independent from step to step and
row to row as the SplitMix64 outputs are; the columns of one row form a Weyl sequence, whose lanes
are evenly spread rather than independent. One mix per row instead of one per entry takes 14% off
the Adam step on rows in L1 (reports/benchmarks.md, "A Weyl sequence for a row's rounding bits").
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..settings import NJIT
from .intrinsics import f32_bits, f32_from_bits
from .rng import GOLDEN, mix64

#: NumPy dtype of bfloat16 storage (bit patterns).
BF16 = np.dtype(np.uint16)
#: Storage dtype of ``W0`` / ``W2`` weights and moments for each ``precision`` value.
STORAGE = {"fp32": np.dtype(np.float32), "bf16": BF16}
#: Bytes of a cache line, the step of a row prefetch.
CACHE_LINE = 64

_EXP_MASK = 0x7F800000
_QUIET = 0x0040  # the quiet-NaN bit of a bfloat16


# ---------------------------------------------------------------------- scalars (Numba)
@numba.njit(inline="always", **NJIT)
def bf16_to_f32(u):
    """The float32 value of the bfloat16 bit pattern ``u`` (exact)."""
    return f32_from_bits(np.uint32(u) << np.uint32(16))


@numba.njit(inline="always", **NJIT)
def _carry_round(bits, add):
    """The upper 16 bits of the float32 bit pattern ``bits`` (int64) after adding ``add`` below
    them: the one rounding rule of both modes. A NaN adds nothing and gets the quiet bit."""
    # Integer arithmetic only: a NaN test on floats would be folded away under fastmath "nnan".
    # Branch-free: with one return block the function inlines cleanly into parallel loops (else
    # Numba's SSA pass warns there).
    nan = np.int64((bits & 0x7FFFFFFF) > _EXP_MASK)
    return np.uint16(((bits + add * (1 - nan)) >> 16) | (nan * _QUIET))


@numba.njit(inline="always", **NJIT)
def f32_to_bf16(x):
    """``x`` rounded to the nearest bfloat16 (ties to even), as a uint16 bit pattern."""
    bits = np.int64(f32_bits(x))
    return _carry_round(bits, 0x7FFF + ((bits >> 16) & 1))


@numba.njit(inline="always", **NJIT)
def f32_to_bf16_sr(x, u):
    """``x`` rounded to one of its two bfloat16 neighbours at random, as a uint16 bit pattern: away
    from zero when the low 16 bits of ``u`` (random) plus the 16 bits that bfloat16 drops carry.

    Exact values stay exact, infinities stay infinite, a value beyond the largest finite bfloat16
    becomes infinity with the probability of its distance to it, NaN as :func:`f32_to_bf16`."""
    return _carry_round(np.int64(f32_bits(x)), np.int64(u & 0xFFFF))


# ---------------------------------------------------------------------- arrays (NumPy)
@numba.njit(**NJIT)
def _round_all(x, out):
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16(x[i])


def to_bf16(x) -> np.ndarray:
    """``x`` (any float array, taken as float32) rounded to bfloat16 by :func:`f32_to_bf16`:
    a uint16 array of the same shape."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, BF16)
    _round_all(np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
    return out


def from_bf16(u) -> np.ndarray:
    """The float32 values of the bfloat16 bit patterns ``u`` (a uint16 array), exactly."""
    u = np.asarray(u)
    if u.dtype != BF16:
        raise TypeError(f"bfloat16 patterns must be uint16, got {u.dtype}")
    return (u.astype(np.uint32) << np.uint32(16)).view(np.float32)


def decoded(a) -> np.ndarray:
    """The float32 values of a parameter array of either storage (float32 arrays as they are)."""
    return from_bf16(a) if np.asarray(a).dtype == BF16 else np.asarray(a)


# ---------------------------------------------------------------------- accessors (Numba)
def load(a, r, c):
    """``a[r, c]`` as a float32 value, whatever the storage of ``a``."""
    return decoded(a[r, c])


def load1(a, i):
    """``a[i]`` of a 1-d array as a float32 value, whatever its storage."""
    return decoded(a[i])


def noise(a, key, i):
    """Random bits (uint64) for the stochastic stores of entry ``i`` of a 1-d ``a`` at the step of
    ``key``: SplitMix64 of ``key + i * GOLDEN`` for bfloat16 storage (three 16-bit lanes, one per
    array of a parameter), 0 for float32 (which then computes nothing)."""
    if np.asarray(a).dtype != BF16:
        return np.uint64(0)
    with np.errstate(over="ignore"):
        return mix64(np.uint64(key) + np.uint64(i) * GOLDEN)


def row_noise(a, key, r):
    """The random value of row ``r`` of a 2-d ``a`` at the step of ``key``, from which
    :func:`col_noise` draws its columns' bits: as :func:`noise` of entry ``r``."""
    return noise(a, key, r)


@numba.njit(inline="always", **NJIT)
def col_noise(base, c):
    """Random bits (uint64, three 16-bit lanes) for column ``c`` of the row whose
    :func:`row_noise` is ``base``: the top 48 bits of ``base + (c + 1) * GOLDEN``."""
    return (base + np.uint64(c + 1) * GOLDEN) >> np.uint64(16)


def store_sr(a, r, c, x, u):
    """``a[r, c] = x``, rounded to bfloat16 stochastically with the bits ``u`` (float32: as is)."""
    a[r, c] = f32_to_bf16_sr(np.float32(x), np.uint64(u)) if a.dtype == BF16 else x


def store1_sr(a, i, x, u):
    """``a[i] = x`` of a 1-d array, rounded as :func:`store_sr`."""
    a[i] = f32_to_bf16_sr(np.float32(x), np.uint64(u)) if a.dtype == BF16 else x


def per_line(a):
    """Elements of ``a`` in one cache line (16 float32, 32 bfloat16)."""
    return CACHE_LINE // a.itemsize


def row_buffer(a):
    """Scratch for :func:`row_f32`: a float32 row for bfloat16 storage, None for float32."""
    return np.empty(a.shape[1], np.float32) if a.dtype == BF16 else None


def row_f32(a, r, buf):
    """Row ``r`` of a 2-d ``a`` as float32: a view for float32 storage, decoded into ``buf`` else."""
    if a.dtype != BF16:
        return a[r]
    buf[:] = from_bf16(a[r])
    return buf


def _array(a, ndim):
    return isinstance(a, types.Array) and a.ndim == ndim


def _bf16(a):
    return a.dtype == types.uint16


@overload(load, inline="always")
def _ol_load(a, r, c):
    if not _array(a, 2):
        return None
    if _bf16(a):
        return lambda a, r, c: bf16_to_f32(a[r, c])
    return lambda a, r, c: a[r, c]


@overload(load1, inline="always")
def _ol_load1(a, i):
    if not _array(a, 1):
        return None
    if _bf16(a):
        return lambda a, i: bf16_to_f32(a[i])
    return lambda a, i: a[i]


@overload(noise, inline="always")
def _ol_noise(a, key, i):
    if not isinstance(a, types.Array):
        return None
    if _bf16(a):
        return lambda a, key, i: mix64(key + np.uint64(i) * GOLDEN)
    return lambda a, key, i: np.uint64(0)


@overload(row_noise, inline="always")
def _ol_row_noise(a, key, r):
    if not _array(a, 2):
        return None
    return lambda a, key, r: noise(a, key, r)


@overload(store_sr, inline="always")
def _ol_store_sr(a, r, c, x, u):
    if not _array(a, 2):
        return None
    if _bf16(a):
        def impl(a, r, c, x, u):
            a[r, c] = f32_to_bf16_sr(x, u)
        return impl

    def plain(a, r, c, x, u):
        a[r, c] = x
    return plain


@overload(store1_sr, inline="always")
def _ol_store1_sr(a, i, x, u):
    if not _array(a, 1):
        return None
    if _bf16(a):
        def impl(a, i, x, u):
            a[i] = f32_to_bf16_sr(x, u)
        return impl

    def plain(a, i, x, u):
        a[i] = x
    return plain


@overload(per_line, inline="always")
def _ol_per_line(a):
    if not isinstance(a, types.Array):
        return None
    n = CACHE_LINE // (a.dtype.bitwidth // 8)  # a compile-time constant of the kernel
    return lambda a: n


@overload(row_buffer, inline="always")
def _ol_row_buffer(a):
    if not _array(a, 2):
        return None
    if _bf16(a):
        return lambda a: np.empty(a.shape[1], np.float32)
    return lambda a: None


@overload(row_f32, inline="always")
def _ol_row_f32(a, r, buf):
    if not _array(a, 2):
        return None
    if _bf16(a):
        def impl(a, r, buf):
            for col in range(a.shape[1]):
                buf[col] = bf16_to_f32(a[r, col])
            return buf
        return impl
    return lambda a, r, buf: a[r]
