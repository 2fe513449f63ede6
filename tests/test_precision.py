"""``precision: bf16``: bfloat16 rounding against a NumPy reference and the dtype-generic accessors.

The reference rounding knows nothing of bit tricks: it lists every finite bfloat16 value from its
sign, exponent and mantissa (float64, exact) and picks the nearest, ties to the even pattern.
"""

import numba
import numpy as np
import pytest

from slide.engine.precision import (
    bf16_to_f32,
    decoded,
    f32_to_bf16,
    from_bf16,
    load,
    load1,
    per_line,
    row_buffer,
    row_f32,
    store,
    store1,
    to_bf16,
)

# ---------------------------------------------------------------- the NumPy reference
#: Patterns 0 .. 0x7F80 and their values: every non-negative finite bfloat16, then 2**128 for the
#: infinity pattern (the value IEEE rounding treats as the next one above the largest finite).
PATTERNS = np.arange(0x7F81)
_E, _F = PATTERNS >> 7, PATTERNS & 0x7F
VALUES = np.where(_E == 0, _F / 128 * 2.0 ** -126, (1 + _F / 128) * np.exp2(_E - 127.0))


def reference_round(x):
    """Nearest bfloat16 patterns of float32 ``x`` (ties: even pattern), and where ``x`` is NaN (its
    pattern is left 0: NaN payloads are checked apart)."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x = np.asarray(x, np.float32).astype(np.float64)
    nan = np.isnan(x)
    ax = np.abs(np.where(nan, 0.0, x))
    inf = np.isinf(ax)
    ax = np.where(inf, 0.0, ax)
    hi = np.searchsorted(VALUES, ax)              # VALUES[hi] >= ax (float32 max < 2**128)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = ax - VALUES[lo], VALUES[hi] - ax
    even = np.where(lo % 2 == 0, lo, hi)
    pick = np.where(d_hi == 0, hi, np.where(d_lo < d_hi, lo, np.where(d_hi < d_lo, hi, even)))
    pattern = np.where(inf, 0x7F80, PATTERNS[pick]) | np.where(np.signbit(x), 0x8000, 0)
    return np.where(nan, 0, pattern).astype(np.uint16), nan


def reference_decode(patterns):
    """float64 values of bfloat16 patterns: the table above, infinity for 0x7F80, NaN beyond."""
    p = np.asarray(patterns).astype(np.int64)
    mag = p & 0x7FFF
    val = np.where(mag < 0x7F80, VALUES[np.minimum(mag, 0x7F7F)], np.where(mag == 0x7F80, np.inf, np.nan))
    return np.where(p & 0x8000, -val, val)


def f32(*bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


# float32 bits -> expected bfloat16 pattern
EDGES = {
    0x3F808000: 0x3F80,  # 1 + 2**-8: halfway, the even neighbour (1.0) is below: down
    0x3F818000: 0x3F82,  # halfway above an odd pattern: up to the even one
    0x3F808001: 0x3F81,  # just above halfway
    0x3F807FFF: 0x3F80,  # just below halfway
    0xBF818000: 0xBF82,  # negative tie, away from zero to the even pattern
    0x7F7F0000: 0x7F7F,  # the largest finite bfloat16
    0x7F7F7FFF: 0x7F7F,  # below the overflow threshold
    0x7F7F8000: 0x7F80,  # halfway to 2**128 above an odd pattern: overflows to inf
    0x7F7FFFFF: 0x7F80,  # float32 max: inf
    0xFF7FFFFF: 0xFF80,  # -float32 max: -inf
    0x7F800000: 0x7F80,  # inf
    0xFF800000: 0xFF80,  # -inf
    0x00000000: 0x0000,  # +0
    0x80000000: 0x8000,  # -0 keeps its sign
    0x00000001: 0x0000,  # smallest float32 subnormal: 0
    0x00008000: 0x0000,  # subnormal tie, even neighbour 0
    0x00018000: 0x0002,  # subnormal tie above an odd pattern
    0x00010000: 0x0001,  # smallest bfloat16 subnormal, exact
    0x80008001: 0x8001,  # negative subnormal just above halfway
    0x007FFFFF: 0x0080,  # largest float32 subnormal rounds up to the smallest normal
    0x3FC00000: 0x3FC0,  # 1.5, exact
}
#: NaN inputs: quiet and signalling, both signs, payload only in the low 16 bits (truncation would give inf).
NANS = (0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7F810000)


@numba.njit
def _round_plain(x, out):
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16(x[i])


@numba.njit(fastmath=True)
def _round_fast(x, out):
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16(x[i])


@numba.njit
def _decode(u, out):
    for i in range(u.shape[0]):
        out[i] = bf16_to_f32(u[i])


def rounders():
    """The NumPy rounding and the Numba scalar one, in plain and fastmath (nnan) kernels."""
    def numba_round(kernel):
        def run(x):
            out = np.empty(x.shape, np.uint16)
            kernel(x, out)
            return out
        return run
    return {"numpy": to_bf16, "numba": numba_round(_round_plain), "numba-fastmath": numba_round(_round_fast)}


@pytest.mark.parametrize("name", ["numpy", "numba", "numba-fastmath"])
def test_rounding_edge_cases(name):
    rnd = rounders()[name]
    bits = np.array(list(EDGES), np.uint32)
    got = rnd(bits.view(np.float32))
    want = np.array(list(EDGES.values()), np.uint16)
    np.testing.assert_array_equal(got, want, err_msg=str([hex(v) for v in got]))
    np.testing.assert_array_equal(reference_round(bits.view(np.float32))[0], want)  # the reference agrees
    nan_in = f32(*NANS)
    out = rnd(nan_in).astype(np.int64)
    assert np.isnan(from_bf16(out.astype(np.uint16))).all()
    assert ((out & 0x0040) != 0).all()                                     # quiet
    np.testing.assert_array_equal(out >> 15, np.signbit(nan_in).astype(int))  # sign kept


@pytest.mark.parametrize("name", ["numpy", "numba", "numba-fastmath"])
def test_rounding_matches_the_reference_on_a_million_floats(name):
    rng = np.random.default_rng(0)
    # every bit pattern equally likely (all exponents, subnormals, inf, NaN), exact ties, ordinary values
    anything = rng.integers(0, 2**32, 600_000, dtype=np.uint32).view(np.float32)
    ties = ((rng.integers(0, 2**16, 200_000, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    ordinary = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-30, 30, 200_000)).astype(np.float32)
    x = np.concatenate([anything, ties, ordinary])
    got = rounders()[name](x)
    want, nan = reference_round(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(from_bf16(got[nan])).all() and nan.sum() > 1000


def test_decoding_every_pattern_is_exact():
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    want = reference_decode(patterns)
    got = np.empty(patterns.shape, np.float32)
    _decode(patterns, got)
    for values in (got, from_bf16(patterns)):
        assert values.dtype == np.float32
        with np.errstate(invalid="ignore"):  # signalling NaNs
            np.testing.assert_array_equal(values.astype(np.float64), want)  # NaN where want is NaN
        np.testing.assert_array_equal(np.signbit(values), patterns >> 15 == 1)
    np.testing.assert_array_equal(to_bf16(from_bf16(patterns))[~np.isnan(want)], patterns[~np.isnan(want)])
    with pytest.raises(TypeError, match="uint16"):
        from_bf16(np.zeros(3, np.int16))


# ---------------------------------------------------------------- the accessors
@numba.njit
def _copy_through(src, dst, back, flat_dst, flat_back):
    """Store ``src`` into ``dst`` and load it back (2-d and 1-d accessors); also per_line and row_f32."""
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            store(dst, r, c, src[r, c])
            back[r, c] = load(dst, r, c)
            store1(flat_dst, r * src.shape[1] + c, src[r, c])
            flat_back[r * src.shape[1] + c] = load1(flat_dst, r * src.shape[1] + c)
    row = row_f32(dst, 1, row_buffer(dst))
    return per_line(dst), row.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_accessors_index_float32_and_round_bfloat16(dtype):
    src = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    dst, flat = np.zeros(src.shape, dtype), np.zeros(src.size, dtype)
    back, flat_back = np.zeros_like(src), np.zeros(src.size, np.float32)
    lanes, row = _copy_through(src, dst, back, flat, flat_back)
    want = src if dtype == np.float32 else from_bf16(to_bf16(src))
    np.testing.assert_array_equal(decoded(dst), want)
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(flat_back, want.ravel())
    np.testing.assert_array_equal(row, want[1])
    assert lanes == 64 // np.dtype(dtype).itemsize
    if dtype == np.uint16:
        np.testing.assert_array_equal(dst, to_bf16(src))
