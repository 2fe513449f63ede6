"""``precision: bf16``: bfloat16 rounding against a NumPy reference, the dtype-generic accessors, and the
engine with bfloat16 ``W0`` / ``W2`` against a float64 twin, a float32 model, checkpoints and the schema.

The reference rounding knows nothing of bit tricks: it lists every finite bfloat16 value from its
sign, exponent and mantissa (float64, exact) and picks the nearest, ties to the even pattern; the
stochastic reference picks the upper neighbour when 16 random bits plus the fraction of the gap
(scaled to 2**16) reach 2**16. The random bits come from the plain-Python SplitMix64 twin.
"""

import numba
import numpy as np
import pytest

import test_slide_method as small
from slide.engine import SlideMethod
from slide.engine.model import memory_estimate_bytes
from slide.engine.precision import (
    BF16,
    bf16_to_f32,
    decoded,
    f32_to_bf16,
    f32_to_bf16_sr,
    from_bf16,
    load,
    col_noise,
    load1,
    noise,
    per_line,
    row_buffer,
    row_f32,
    row_noise,
    store1_sr,
    store_sr,
    to_bf16,
)
from slide.engine import network as net
from slide.engine.presets import validate
from slide.engine.schedule import REHASH
from slide.engine.scoring import exact_topk
from slide.engine.tables import LSHIndex
from slide.errors import ConfigError
from splitmix_twin import GOLDEN, M64, _mix64
from test_network import D, L, Twin, close, make, toy_data

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


def reference_round_sr(x, u):
    """bfloat16 patterns of ``x`` (float64 values) rounded stochastically with the 16-bit integers
    ``u``: up to the next pattern when ``u + 2**16 * fraction of the gap`` reaches 2**16, and where
    ``x`` is NaN (pattern 0 there)."""
    with np.errstate(invalid="ignore"):
        x = np.asarray(x, np.float64)
    nan = np.isnan(x)
    ax = np.abs(np.where(nan, 0.0, x))
    inf = np.isinf(ax)
    ax = np.where(inf, 0.0, ax)
    lo = np.searchsorted(VALUES, ax, side="right") - 1      # VALUES[lo] <= ax < VALUES[lo + 1]
    hi = lo + 1
    frac = (ax - VALUES[lo]) / (VALUES[hi] - VALUES[lo])
    up = np.asarray(u, np.float64) + frac * 2.0 ** 16 >= 2.0 ** 16
    pattern = np.where(inf, 0x7F80, np.where(up, PATTERNS[hi], PATTERNS[lo])) | np.where(np.signbit(x), 0x8000, 0)
    return np.where(nan, 0, pattern).astype(np.uint16), nan


def twin_noise(key, index, lane):
    """Lane ``lane`` (16 bits) of the engine's noise for entries ``index`` of a 1-d array at ``key``,
    from the plain-Python SplitMix64."""
    return np.array([(_mix64((int(key) + int(i) * GOLDEN) & M64) >> (16 * lane)) & 0xFFFF
                     for i in np.ravel(index)], np.int64).reshape(np.shape(index))


def twin_row_noise(key, shape, lane):
    """Lane ``lane`` of the engine's noise for every entry of a 2-d array of ``shape`` at ``key``: the
    row's SplitMix64 plus ``c + 1`` golden-ratio steps, its top 48 bits."""
    rows = [_mix64((int(key) + r * GOLDEN) & M64) for r in range(shape[0])]
    return np.array([[(((base + (c + 1) * GOLDEN) & M64) >> (16 + 16 * lane)) & 0xFFFF for c in range(shape[1])]
                     for base in rows], np.int64)


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
def _copy_through(src, dst, back, flat_dst, flat_back, key):
    """Store ``src`` into ``dst`` and load it back (2-d and 1-d accessors, a 2-d store with lane 0 of its
    row's and column's noise at ``key``, a 1-d store with lane 1 of its index's noise); also per_line
    and row_f32."""
    for r in range(src.shape[0]):
        base = row_noise(dst, key, r)
        for c in range(src.shape[1]):
            i = r * src.shape[1] + c
            store_sr(dst, r, c, src[r, c], col_noise(base, c))
            back[r, c] = load(dst, r, c)
            store1_sr(flat_dst, i, src[r, c], noise(flat_dst, key, i) >> np.uint64(16))
            flat_back[i] = load1(flat_dst, i)
    row = row_f32(dst, 1, row_buffer(dst))
    return per_line(dst), row.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_accessors_index_float32_and_round_bfloat16(dtype):
    """float32 storage is plain indexing; bfloat16 rounds each store stochastically with the lane of
    the noise it is given, as the reference does with the twin's bits."""
    src = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    dst, flat = np.zeros(src.shape, dtype), np.zeros(src.size, dtype)
    back, flat_back = np.zeros_like(src), np.zeros(src.size, np.float32)
    key = np.uint64(0xC0FFEE)
    lanes, row = _copy_through(src, dst, back, flat, flat_back, key)
    if dtype == np.float32:
        want = want_flat = src
        assert noise(dst, key, 5) == row_noise(dst, key, 5) == 0
    else:
        index = np.arange(src.size).reshape(src.shape)
        want = from_bf16(reference_round_sr(src, twin_row_noise(key, src.shape, 0))[0])
        want_flat = from_bf16(reference_round_sr(src, twin_noise(key, index, 1))[0])
        assert not np.array_equal(want, want_flat)  # two lanes, two draws
        np.testing.assert_array_equal(dst, to_bf16(want))
    np.testing.assert_array_equal(decoded(dst), want)
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(flat_back, want_flat.ravel())
    np.testing.assert_array_equal(row, want[1])
    assert lanes == 64 // np.dtype(dtype).itemsize


# ---------------------------------------------------------------- stochastic rounding
@numba.njit
def _round_sr_plain(x, u, out):
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16_sr(x[i], u[i])


@numba.njit(fastmath=True)
def _round_sr_fast(x, u, out):
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16_sr(x[i], u[i])


@pytest.mark.parametrize("kernel", [_round_sr_plain, _round_sr_fast], ids=["plain", "fastmath"])
def test_stochastic_rounding_matches_the_reference_on_a_million_floats(kernel):
    """Every bit pattern, exact values, values beyond the largest finite bfloat16, with random bits
    (only the low 16 are used: the upper ones are set to show it) and with the extremes 0 and
    0xFFFF."""
    rng = np.random.default_rng(2)
    anything = rng.integers(0, 2**32, 600_000, dtype=np.uint32).view(np.float32)
    exact = (rng.integers(0, 2**16, 100_000, dtype=np.uint32) << 16).view(np.float32)
    huge = f32(0x7F7F0001, 0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0xFF800000)
    x = np.concatenate([anything, exact, np.tile(huge, 20)])
    for u in (rng.integers(0, 2**64, x.size, dtype=np.uint64), np.zeros(x.size, np.uint64),
              np.full(x.size, 0xFFFF, np.uint64)):
        got = np.empty(x.shape, np.uint16)
        kernel(x, u, got)
        want, nan = reference_round_sr(x, (u & np.uint64(0xFFFF)).astype(np.int64))
        np.testing.assert_array_equal(got[~nan], want[~nan])
        assert np.isnan(from_bf16(got[nan])).all() and ((got[nan] & 0x0040) != 0).all() and nan.sum() > 1000
    finite = ~np.isnan(x) & ~np.isinf(x)
    exact_mask = (x.view(np.uint32) & 0xFFFF) == 0
    np.testing.assert_array_equal(from_bf16(got)[exact_mask & finite], x[exact_mask & finite])  # exact stays


def test_stochastic_rounding_is_unbiased():
    """Rounding one value 65,536 times with the noise of consecutive entries gives a mean within
    0.02 of a bfloat16 step of the value (the mean's standard deviation is at most 0.002 steps), and
    rounds up about as often as the fraction says (within 0.01)."""
    n = 1 << 16
    for value, frac in ((1.0 + 0.3 / 128, 0.3), (-3.0 - 0.9 * 2 / 128, 0.9), (1e-3, None)):
        x = np.full(n, value, np.float32)
        u = np.array([noise(np.zeros(1, BF16), np.uint64(77), i) for i in range(0, n)], np.uint64)
        out = np.empty(n, np.uint16)
        _round_sr_plain(x, u, out)
        vals = from_bf16(out).astype(np.float64)
        lo, hi = np.unique(vals)[[0, -1]]
        step = hi - lo
        assert abs(vals.mean() - float(x[0])) <= 0.02 * step, (value, vals.mean())
        if frac is not None:
            assert abs((np.abs(vals) == max(abs(lo), abs(hi))).mean() - frac) <= 0.01


@numba.njit
def _row_lanes(keys, rows, cols, lanes):
    """``lanes[k, i, j, l]``: lane ``l`` of the bits of entry (rows[i], cols[j]) of a bfloat16 2-d
    array at step key ``keys[k]``."""
    a = np.zeros((1, 1), np.uint16)
    for k in range(keys.shape[0]):
        for i in range(rows.shape[0]):
            base = row_noise(a, keys[k], rows[i])
            for j in range(cols.shape[0]):
                u = col_noise(base, cols[j])
                for lane in range(3):
                    lanes[k, i, j, lane] = (u >> np.uint64(16 * lane)) & np.uint64(0xFFFF)


def test_row_noise_lanes_are_uniform_and_independent_across_steps_rows_and_lanes():
    """An entry's three 16-bit lanes over 65,536 consecutive steps, for entries at the first, second,
    middle and last column of three rows: each lane's 64-bin histogram passes a chi-square test (63
    degrees of freedom: below 63 + 6 standard deviations), and the correlations of a lane with the
    same lane one step later, with the entry's other lanes and with the next row's entry at the same
    step are all within 6 / sqrt(n) of zero. (The columns of one row are a Weyl sequence by design,
    so neighbouring columns are not independent; each column's rounding is unbiased, next test.)"""
    n = 1 << 16
    keys = np.array([net.adam_key(3, t) for t in range(1, n + 1)], np.uint64)
    rows, cols = np.array([0, 1, 670_090]), np.array([0, 1, 63, 127])
    lanes = np.empty((n, rows.size, cols.size, 3), np.int64)
    _row_lanes(keys, rows, cols, lanes)
    x = lanes / 65536.0 - 0.5
    bound = 6 / np.sqrt(n)
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])
    for i in range(rows.size):
        for j in range(cols.size):
            for lane in range(3):
                counts = np.bincount(lanes[:, i, j, lane] >> 10, minlength=64)
                chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
                assert chi2 < 63 + 6 * np.sqrt(2 * 63), (i, j, lane, chi2)
                assert abs(corr(x[1:, i, j, lane], x[:-1, i, j, lane])) < bound
                assert abs(corr(x[:, i, j, lane], x[:, i, j, (lane + 1) % 3])) < bound
                if i + 1 < rows.size:
                    assert abs(corr(x[:, i, j, lane], x[:, i + 1, j, lane])) < bound


@numba.njit
def _store_rows(x, u_lane, out, key):
    for r in range(out.shape[0]):
        base = row_noise(out, key, r)
        for c in range(out.shape[1]):
            store_sr(out, r, c, x, col_noise(base, c) >> np.uint64(16 * u_lane))


def test_row_noise_rounding_is_unbiased_in_every_column():
    """One value stored into 4,096 rows of 128 bfloat16 columns at one step, with each lane: the mean
    is within 0.005 of a bfloat16 step of the value, and in every column the fraction rounded up is
    the value's fraction of the step within 0.04 (over 5 standard deviations of a fraction of 4,096)."""
    value, frac = np.float32(1.0 + 0.3 / 128), 0.3
    lo, hi = 1.0, 1.0 + 1 / 128
    for lane in range(3):
        out = np.zeros((4096, 128), np.uint16)
        _store_rows(value, lane, out, net.adam_key(11, 1 + lane))
        vals = from_bf16(out).astype(np.float64)
        assert set(np.unique(vals)) == {lo, hi}
        assert abs(vals.mean() - float(value)) <= 0.005 * (hi - lo), (lane, vals.mean())
        up = (vals == hi).mean(axis=0)
        assert np.abs(up - frac).max() <= 0.04, (lane, np.abs(up - frac).max())


H = net.Hyper


@numba.njit
def _adam_rows(w, m, v, g, h):
    for r in range(w.shape[0]):
        net.adam_row(w, m, v, g, r, r, h)


@pytest.mark.parametrize("layout", ["entries", "rows"])
@pytest.mark.parametrize("case", ["decay", "drift"])
def test_sub_step_adam_updates_accumulate_in_bfloat16(case, layout):
    """300 Adam steps on 51,200 bfloat16 entries (a 1-d span, or 400 rows of 128, each with its noise)
    whose every change is below half a bfloat16 step,
    against the float64 recurrence: with ``g = 0`` the second moment decays as 0.999**t (round to
    nearest would keep it at 1.0 for ever), with ``g = 1`` and ``lr_t = 1e-4`` the weights drift from
    1.0 by what float64 gives (round to nearest would keep them at 1.0). Mean within 2% of the
    change (at least 5 standard deviations of the mean: each store adds at most half a step of
    noise); weights without gradient stay exactly where they are."""
    shape, steps = (51_200,) if layout == "entries" else (400, 128), 300
    g0 = 0.0 if case == "decay" else 1.0
    w64, m64, v64 = 0.5 if case == "decay" else 1.0, 0.0, 1.0 if case == "decay" else 0.0
    w, m, v = to_bf16(np.full(shape, w64)), to_bf16(np.full(shape, m64)), to_bf16(np.full(shape, v64))
    g = np.zeros(shape, np.float32)
    b1, b2, lr_t, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-4), np.float32(1e-8)
    w0, v0 = w64, v64
    for t in range(1, steps + 1):
        g[:] = g0
        h = H(lr_t, b1, b2, eps, net.adam_key(5, t))
        if layout == "entries":
            net.adam_span(w, m, v, g, 0, w.size, h)
        else:
            _adam_rows(w, m, v, g, h)
        m64 = 0.9 * m64 + 0.1 * g0
        v64 = 0.999 * v64 + 0.001 * g0 * g0
        w64 -= 1e-4 * m64 / (np.sqrt(v64) + 1e-8)
    got_w, got_v = from_bf16(w).astype(np.float64), from_bf16(v).astype(np.float64)
    assert abs(got_v.mean() - v64) <= 0.02 * abs(v64 - v0), (got_v.mean(), v64)
    if case == "decay":
        assert (got_w == w0).all()
    else:
        assert abs(got_w.mean() - w64) <= 0.02 * abs(w64 - w0), (got_w.mean(), w64)


# ---------------------------------------------------------------- the engine against a float64 twin
def bf16_twin(model):
    """:class:`test_network.Twin` started from the model's decoded weights."""
    twin = Twin(model)
    for k in ("W0", "W2"):
        twin.p[k] = from_bf16(getattr(model, k)).astype(np.float64)
    return twin


def ulps(a, b):
    """Distance in bfloat16 steps between two pattern arrays (signed magnitudes, so -0 == +0)."""
    key = lambda p: np.where(p.astype(np.int64) & 0x8000, -(p.astype(np.int64) & 0x7FFF), p.astype(np.int64))
    return np.abs(key(a) - key(b))


def assert_rounded_like(got, want64, key, lane):
    """Stored patterns ``got`` against the twin's float64 values rounded the kernel's way (stochastic,
    with lane ``lane`` of the twin's noise at ``key``): at most one bfloat16 step apart (the float32
    value lands on the other side of the threshold from the float64 one), equal almost everywhere."""
    want, _ = reference_round_sr(want64, twin_row_noise(key, got.shape, lane))
    assert got.dtype == BF16
    d = ulps(got, want)
    assert d.max() <= 1, d.max()
    assert (d > 0).mean() <= 0.02, (d > 0).mean()


@pytest.mark.parametrize("optimizer", ["sparse", "dense"])
@pytest.mark.parametrize("hidden", [(8,), (8, 6)])
def test_one_bf16_step_matches_the_twin(optimizer, hidden):
    """Forward and backward read the decoded weights (float32 arithmetic, so losses and gradients to
    1e-5 as in float32); Adam's stored w, m, v are the twin's float64 values rounded stochastically
    with the twin's noise, to one bfloat16 step; the float32 parameters to 1e-5."""
    data = toy_data(24, seed=1)
    rows = np.arange(8)
    probe, model = make(hidden, optimizer, precision="bf16"), make(hidden, optimizer, precision="bf16")
    for name in ("W0", "mW0", "vW0", "W2", "mW2", "vW2"):
        assert getattr(model, name).dtype == BF16
    assert model.gW0.dtype == model.gW2.dtype == model.b2.dtype == model.Wh.dtype == np.float32
    twin = bf16_twin(model)
    losses, _ = probe._accumulate(data, rows)
    ref_losses, ref_g, _ = twin.grads(data, rows)
    close(losses, ref_losses)
    got = probe._pending_gradients()
    for k in ("W0", "b0", "W2", "b2"):
        close(got[k], ref_g[k])
    loss = model.train_batch(data, rows)
    ref = twin.step(data, rows, optimizer)
    assert abs(loss - ref.mean()) <= 1e-5 * abs(ref.mean())
    key = net.adam_key(model.seed, 1)
    for k in ("W0", "W2"):
        assert_rounded_like(getattr(model, "m" + k), twin.m[k], key, 0)
        assert_rounded_like(getattr(model, "v" + k), twin.v[k], key, 1)
        assert_rounded_like(getattr(model, k), twin.p[k], key, 2)
    for k in ("b0", "Wh", "bh", "b2"):
        close(getattr(model, k), twin.p[k])
        close(getattr(model, "m" + k), twin.m[k])
        close(getattr(model, "v" + k), twin.v[k])
    assert all(not g.any() for g in model._pending_gradients().values())


def decoded_fp32_copy(model):
    """A float32 model holding ``model``'s state decoded (weights, moments and hash tables)."""
    copy = SlideMethod(model.num_features, model.num_labels, dict(model.config, precision="fp32"),
                       seed=model.seed, threads=model.threads)
    copy.load_state_arrays({k: decoded(v) for k, v in model.state_arrays().items()})
    return copy


@pytest.mark.parametrize("over", [dict(output_sparsity=0.5, K=3, L=4),
                                  dict(hidden=[8, 6], output_sparsity=0.5, hidden_sparsity=[0.5, 1.0], K=3, L=4)])
def test_bf16_model_computes_what_a_float32_model_of_its_decoded_weights_does(over):
    """Initial weights are the float32 ones rounded; hash tables, hidden activations, both inference
    modes, the hidden active sets and a training step of a bfloat16 model equal those of a float32 model
    holding its decoded state (the same float32 arithmetic; a step's stores to one bfloat16 step)."""
    over = dict(over)
    hidden = over.pop("hidden", [8])
    data = toy_data(24, seed=2)
    rows = np.arange(len(data))
    fp32, bf16 = make(hidden, **over), make(hidden, precision="bf16", **over)
    for k in ("W0", "W2"):
        np.testing.assert_array_equal(getattr(bf16, k), to_bf16(getattr(fp32, k)))
    twin = decoded_fp32_copy(bf16)
    twin._refresh_tables(REHASH)  # its tables now come from the float32 build of the decoded weights
    indices = lambda m: [m.index] + [index for _, index in m.hidden_indices]
    for a, b in zip(indices(bf16), indices(twin)):
        for x, y in zip(a.arrays, b.arrays):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(bf16.hidden(data, rows), twin.hidden(data, rows), rtol=1e-6, atol=1e-7)
    for mode in ("dense", "sparse"):
        bf16.config["inference"] = twin.config["inference"] = mode
        assert (bf16.predict_topk(data, rows, 3) == twin.predict_topk(data, rows, 3)).mean() > 0.95
    np.testing.assert_array_equal(bf16.hidden_active_masks(data, rows[:8]), twin.hidden_active_masks(data, rows[:8]))
    loss, ref = bf16.train_batch(data, rows[:8]), twin.train_batch(data, rows[:8])
    assert abs(loss - ref) <= 1e-5 * abs(ref)
    key = net.adam_key(bf16.seed, 1)
    for k, lane in (("W0", 2), ("mW0", 0), ("vW0", 1), ("W2", 2), ("mW2", 0), ("vW2", 1)):
        assert_rounded_like(getattr(bf16, k), getattr(twin, k), key, lane)


def test_lsh_tables_hash_bfloat16_rows_as_their_float32_values():
    w = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    u = to_bf16(w)
    for kind in ("simhash", "dwta"):
        a, b = LSHIndex(kind, 16, 300, 3, 4, seed=2), LSHIndex(kind, 16, 300, 3, 4, seed=2)
        a.build(u)
        b.build(from_bf16(u))
        for x, y in zip(a.arrays, b.arrays):
            np.testing.assert_array_equal(x, y)


def test_exact_topk_reads_bfloat16_weights():
    rng = np.random.default_rng(6)
    h = np.maximum(rng.standard_normal((50, 32)), 0).astype(np.float32)
    W = to_bf16(rng.standard_normal((300, 32)) * 0.1)
    b = (rng.standard_normal(300) * 0.01).astype(np.float32)
    np.testing.assert_array_equal(exact_topk(h, W, b, 5), exact_topk(h, from_bf16(W), b, 5))
    with pytest.raises(ValueError, match="bfloat16"):
        exact_topk(h, W.astype(np.int16), b, 5)


# ---------------------------------------------------------------- learning, state, memory, bytes, schema
@pytest.fixture(scope="module")
def toy():
    return small.synthetic(640, 0), small.synthetic(200, 1)


def test_bf16_learns_as_well_as_fp32(toy):
    """8 epochs on the learnable toy data of test_slide_method (sampled output, rehashes, rebuilds):
    bfloat16 storage ends within 0.05 P@1 of float32 (0.980 vs 0.985 when written)."""
    data, test = toy
    p1 = {}
    for precision in ("fp32", "bf16"):
        m = small.make(precision=precision)
        m.fit(data, test, epochs=8)
        p1[precision] = m.last_run["final"]["p_at_1"]
    assert p1["bf16"] > 0.9 and abs(p1["bf16"] - p1["fp32"]) <= 0.05, p1


def test_bf16_state_round_trip_and_exact_resume(toy, tmp_path):
    data, test = toy
    straight = small.make(precision="bf16")
    small.run_steps(straight, data, 14)
    first = small.make(precision="bf16")
    small.run_steps(first, data, 9)
    first.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        for key in ("W0", "adam_m__W0", "adam_v__W0", "W2", "adam_m__W2", "adam_v__W2"):
            assert z[key].dtype == BF16, key
        assert z["b2"].dtype == z["adam_m__Wh"].dtype == np.float32
    resumed = SlideMethod.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(resumed.predict_topk(test, np.arange(50)), first.predict_topk(test, np.arange(50)))
    for s in range(9, 14):
        resumed.train_batch(data, np.arange(s * 32, (s + 1) * 32) % len(data))
    for k in ("W0", "W2", "b2", "mW2", "vW0"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(straight, k))


@pytest.mark.parametrize("saved, loading", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_state_of_the_other_precision_is_refused(saved, loading):
    state = small.make(precision=saved).state_arrays()
    with pytest.raises(ConfigError, match=f"saved with precision: {saved}, this model has precision: {loading}"):
        small.make(precision=loading).load_state_arrays(state)


def test_memory_estimate_counts_two_bytes_per_bfloat16_entry():
    fp32 = validate(dict(SlideMethod.resolve_config("amazon-670k"), precision="fp32"))
    bf16 = dict(fp32, precision="bf16")
    d, labels, h = 135_909, 670_091, 128
    saved = memory_estimate_bytes(d, labels, fp32, 2) - memory_estimate_bytes(d, labels, bf16, 2)
    assert saved == 3 * 2 * (d * h + labels * h)
    model = small.make(precision="bf16")
    arrays = [getattr(model, p + n) for n in ("W0", "b0", "Wh", "bh", "W2", "b2") for p in ("", "m", "v", "g")]
    held = sum(a.nbytes for a in arrays)
    assert held < model.estimate_memory_bytes() < held + 64 * 2**20


def test_bytes_moved_count_bfloat16_rows_at_two_bytes():
    """The hand count of test_bandwidth's tiny step with bfloat16 W0 / W2 rows of 8 bytes (4 hidden):
    gathers and Adam's w, m, v halve; gradients stay float32."""
    from test_bandwidth import _dataset, _window

    data = _dataset([[0, 1], [1, 2]], [[0], [1]], 6, 5)
    over = dict(hidden=[4], output_sparsity=1.0, batch_size=2)
    parts = {p: _window(SlideMethod.from_config(6, 5, overrides=dict(over, precision=p), threads=1), data,
                        [[0, 1]])[1] for p in ("fp32", "bf16")}
    bf = parts["bf16"]
    assert bf["forward"] == 4 * 8 + 10 * (8 + 4)
    assert bf["backward"] == parts["fp32"]["backward"] == 2 * (4 * 16 + 10 * (16 + 4))
    assert bf["adam"] == 3 * 2 * (3 * 8 + 16) + 5 * (2 * (3 * 8 + 16 + 4 * 4) + 2 * 4)
    assert bf["total"] == parts["fp32"]["total"] - (parts["fp32"]["forward"] - bf["forward"]) \
        - (parts["fp32"]["adam"] - bf["adam"])


def test_invalid_precision_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        SlideMethod.from_config(D, L, overrides={"precision": "fp16"})
    assert str(err.value) == "precision must be one of fp32, bf16, got 'fp16'"
    assert SlideMethod.from_config(D, L, overrides={"hidden": [8]}).config["precision"] == "fp32"


def test_a_checkpoint_that_predates_the_precision_key_loads_and_resumes_as_fp32(tmp_path):
    """Files written before a key existed mean its default: such a checkpoint loads, and a resume
    check against it sees no difference at the default and names the key otherwise."""
    import json

    from slide.training import resume_differences

    model = make([8], output_sparsity=0.5, K=3, L=4)
    path = tmp_path / "old.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["model__header"]))
    del header["config"]["precision"]
    arrays["model__header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    loaded = SlideMethod.load(path)
    assert loaded.config["precision"] == "fp32"
    np.testing.assert_array_equal(loaded.W2, model.W2)
    assert resume_differences(model, {}, header, None, None) == []
    bf16 = make([8], output_sparsity=0.5, K=3, L=4, precision="bf16")
    assert resume_differences(bf16, {}, header, None, None) == ['precision "fp32" -> "bf16"']
