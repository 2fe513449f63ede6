"""LSH families of the SLIDE engine: parameters drawn from a seed, codes computed in Numba.

Four families, each giving ``K * L`` small integer codes per vector (``K`` per table, ``L`` tables):

``simhash``
    Signed sparse random projections, as the reference C++: projection ``h`` touches ``ceil(dim / 3)``
    coordinates chosen at random with random signs; the code is one bit, ``sum >= 0``.
``wta``
    Winner-take-all: hash ``h`` looks at a random ordered prefix of ``bin_size`` distinct coordinates
    and its code is the position of the largest value (ties: the lowest position; absent coordinates of a
    sparse vector count as zeros).
``dwta``
    Densified WTA (the reference's ``DensifiedWtaHash``): ``ceil(K*L*bin_size / dim)`` random permutations
    of the coordinates are laid end to end and cut into ``K*L`` bins of ``W = (n_perm*dim) // (K*L)``
    consecutive positions (``W == bin_size`` whenever ``dim`` is small; the few positions past the last bin
    are dropped). A bin's code is the offset of its largest NONZERO coordinate (ties: lowest offset), taken
    modulo ``bin_size``. A bin without any nonzero coordinate copies the code of the first non-empty bin on a
    seeded probe sequence that depends only on the bin (densified one permutation hashing, Shrivastava 2017):
    32 pseudo-random probes, then a circular scan. An all-zero vector gets code 0 everywhere.
``minhash``
    Densified one-permutation MinHash of the set of the ``topk`` largest nonzero coordinates (ties: lower
    coordinate): same bins as ``dwta``, a bin's code is the smallest offset of a set member in it, modulo
    ``bin_size``; empty bins are densified as above.

Codes take ``bits`` bits (1 for ``simhash``, ``log2(bin_size)`` otherwise); table ``t`` packs codes
``t*K ... t*K+K-1`` into a 64-bit key, code ``j`` at bit ``j*bits`` (:func:`pack_key`), so distinct code
tuples never share a key (the reference packs with too few bits and merges buckets).

Parameter layout (inside the ``arrays`` tuple of :class:`slide.engine.tables.LSHIndex`):

* ``proj`` int8 ``(dim, K*L)``: ``simhash`` signs (-1, 0, +1), coordinate-major so that a dense or a
  sparse vector is hashed with one contiguous, vectorised row update per nonzero coordinate; ``(0, 0)``
  for the other families.
* ``dcoord`` int32 ``(W, K*L)``: ``dcoord[o, h]`` is the coordinate at position / offset ``o`` of WTA hash
  or DWTA bin ``h`` (``W = bin_size`` for WTA). A dense vector is hashed ``SIMD_LANES`` hashes at a
  time: position by position, one vector of their coordinates' values gathered through it against a
  running maximum held in registers (ties go to the lowest position for free); ``(0, 0)`` for
  ``simhash`` and ``minhash``.
* ``cptr`` int64 ``(dim + 1,)``, ``chash`` int32, ``caux`` int32: the same map by coordinate, CSR
  coordinate -> (hash or bin, position or offset), for sparse vectors (and dense ``minhash``, which only
  visits its top-k coordinates); ``cptr`` all zeros and ``chash``/``caux`` empty for ``simhash``.

Many dense rows (a table build, :func:`hash_rows`) are hashed ``SIMD_LANES`` rows at a time from a
transposed tile, so that a coordinate's values for all of them are one vector load; the codes and keys
are those of the one-vector pass (:func:`hash_into`), to the bit.

Only nonzero coordinates of a sparse vector are visited (an explicit zero is the same as an absent one),
and a sparse vector gets exactly the codes of its dense twin.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..errors import ConfigError
from ..method_registry import method_spec
from ..settings import NJIT, SIMD_LANES
from .intrinsics import vfma, vgather, vgt_mask, vlane, vload, vselect_gt, vsplat, vstore
from .precision import load, row_buffer, row_f32
from .rng import GOLDEN as _GOLDEN
from .rng import mix64

#: The names are the ``hash`` enum of slide/engine/config.schema.json; a code is its index there.
KINDS = method_spec("slide").choices("hash")
KIND_SIMHASH, KIND_WTA, KIND_DWTA, KIND_MINHASH = 0, 1, 2, 3
#: Pseudo-random probes of an empty bin before the circular scan.
DENSIFY_PROBES = 32
#: Fields of the int64 ``meta`` array that opens the ``arrays`` tuple.
(M_KIND, M_DIM, M_ITEMS, M_K, M_L, M_BITS, M_BIN, M_TOPK, M_SLOTS, M_DIRECT, M_BUCKET, M_INSERT, M_SEED) = range(13)

_S32 = np.uint64(32)


def kind_code(name: str) -> int:
    """Integer code of a hash family name; ConfigError if unknown."""
    if name not in KINDS:
        raise ConfigError(f"unknown LSH family {name!r}; choose one of {', '.join(KINDS)}")
    return KINDS.index(name)


def code_bits(kind: str, bin_size: int) -> int:
    """Bits per code: 1 for SimHash, ``log2(bin_size)`` for the others."""
    return 1 if kind == "simhash" else int(bin_size).bit_length() - 1


def bin_layout(dim: int, n_hashes: int, bin_size: int) -> tuple[int, int]:
    """``(n_perm, W)``: permutations and bin width of the DWTA / MinHash bins."""
    n_perm = -(-n_hashes * bin_size // dim)
    return n_perm, (n_perm * dim) // n_hashes


def draw_params(kind: str, dim: int, K: int, L: int, bin_size: int, seed: int):
    """Hash parameters of a family, reproducible from ``seed``.

    Returns
    -------
    proj : int8 (dim, K*L) or (0, 0)
    dcoord : int32 (W, K*L) or (0, 0)
    cptr : int64 (dim + 1,)
    chash, caux : int32 (nnz,)
        See the module docstring.
    """
    n = K * L
    rng = np.random.default_rng(seed)
    none8, none32 = np.zeros((0, 0), np.int8), np.zeros((0, 0), np.int32)
    if kind == "simhash":
        proj = np.zeros((dim, n), dtype=np.int8)
        sample = math.ceil(dim / 3)
        for h in range(n):
            coords = rng.choice(dim, sample, replace=False)
            proj[coords, h] = rng.integers(0, 2, sample, dtype=np.int8) * 2 - 1
        return proj, none32, np.zeros(dim + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32)
    if kind == "wta":
        width = bin_size
        coord = np.concatenate([rng.choice(dim, bin_size, replace=False) for _ in range(n)])
        hsh = np.repeat(np.arange(n), bin_size)
        aux = np.tile(np.arange(bin_size), n)
    else:
        n_perm, width = bin_layout(dim, n, bin_size)
        # position of coordinate d in permutation p, laid end to end: p*dim + rank
        glob = np.concatenate([p * dim + np.argsort(rng.permutation(dim)) for p in range(n_perm)])
        coord = np.tile(np.arange(dim), n_perm)
        keep = glob < n * width
        coord, glob = coord[keep], glob[keep]
        hsh, aux = glob // width, glob % width
    dcoord = none32
    if kind != "minhash":
        dcoord = np.empty((width, n), np.int32)
        dcoord[aux, hsh] = coord
    order = np.argsort(coord, kind="stable")
    cptr = np.zeros(dim + 1, np.int64)
    cptr[1:] = np.cumsum(np.bincount(coord, minlength=dim))
    return none8, dcoord, cptr, hsh[order].astype(np.int32), aux[order].astype(np.int32)


@numba.njit(**NJIT)
def pack_key(codes, t, K, bits):
    """Key of table ``t``: codes ``t*K .. t*K+K-1``, code ``j`` at bit ``j*bits`` (int64, all 64 bits used)."""
    key = np.int64(0)
    for j in range(K):
        key |= np.int64(codes[t * K + j]) << np.int64(j * bits)
    return key


@numba.njit(**NJIT)
def _simhash(proj, idx, val, dense, acc, codes):
    acc[:] = 0.0
    nnz = val.shape[0]
    for j in range(nnz):
        v = val[j]
        if v == 0:
            continue
        row = proj[j if dense else idx[j]]
        for h in range(acc.shape[0]):
            acc[h] += row[h] * v
    for h in range(acc.shape[0]):
        codes[h] = 1 if acc[h] >= 0 else 0


@numba.njit(inline="always", **NJIT)
def _max_step(v, best, at, o, skip_zeros, zero, ninf):
    """One position ``o`` of SIMD_LANES running argmaxes: ``(best, at)`` after seeing the values ``v``
    (strict '>' keeps the lowest position on ties; with ``skip_zeros`` a zero never wins)."""
    if skip_zeros:
        v = vselect_gt(v, zero, v, vselect_gt(zero, v, v, ninf))
    return vselect_gt(v, best, v, best), vselect_gt(v, best, vsplat(np.float32(o)), at)


@numba.njit(**NJIT)
def _argmax_dense(dcoord, x, skip_zeros, pos):
    # SIMD_LANES hashes side by side: each offset's coordinates are gathered into one vector and the
    # running maximum and its offset stay in registers
    W, n = dcoord.shape
    zero = vsplat(np.float32(0))
    ninf = vsplat(np.float32(-np.inf))
    empty = vsplat(np.float32(-1 if skip_zeros else 0))  # -1 marks an empty DWTA bin; a WTA hash never is
    wide = n - n % SIMD_LANES
    for h0 in range(0, wide, SIMD_LANES):
        best, at = ninf, empty
        for o in range(W):
            best, at = _max_step(vgather(x, dcoord, o * n + h0), best, at, o, skip_zeros, zero, ninf)
        for i in range(SIMD_LANES):
            pos[h0 + i] = np.int64(vlane(at, i))
    for h in range(wide, n):
        best1, at1 = -np.inf, -1 if skip_zeros else 0
        for o in range(W):
            v = x[np.uint32(dcoord[o, h])]  # unsigned index: no negative-index wraparound code
            if v > best1 and (v != 0 or not skip_zeros):
                best1, at1 = v, o
        pos[h] = at1


@numba.njit(**NJIT)
def _argmax_tile(dcoord, tile, skip_zeros, out):
    # SIMD_LANES vectors side by side, transposed (tile[c * SIMD_LANES + lane]): one contiguous load per
    # (hash, position) and no gather; four hashes at a time, so that four compare chains overlap (two
    # left the core waiting on each chain: 8% slower builds at Amazon).
    # out[h * SIMD_LANES + lane]: the offset (as float32) of hash h's maximum in vector ``lane``
    # Returns whether some lane of some hash is an empty DWTA bin (-1).
    W, n = dcoord.shape
    zero = vsplat(np.float32(0))
    ninf = vsplat(np.float32(-np.inf))
    empty = vsplat(np.float32(-1 if skip_zeros else 0))
    low = zero
    for h in range(0, n, 4):
        h1, h2, h3 = min(h + 1, n - 1), min(h + 2, n - 1), min(h + 3, n - 1)  # last hashes may repeat
        best0, at0, best1, at1 = ninf, empty, ninf, empty
        best2, at2, best3, at3 = ninf, empty, ninf, empty
        for o in range(W):
            best0, at0 = _max_step(vload(tile, dcoord[o, h] * SIMD_LANES), best0, at0, o, skip_zeros, zero, ninf)
            best1, at1 = _max_step(vload(tile, dcoord[o, h1] * SIMD_LANES), best1, at1, o, skip_zeros, zero, ninf)
            best2, at2 = _max_step(vload(tile, dcoord[o, h2] * SIMD_LANES), best2, at2, o, skip_zeros, zero, ninf)
            best3, at3 = _max_step(vload(tile, dcoord[o, h3] * SIMD_LANES), best3, at3, o, skip_zeros, zero, ninf)
        vstore(out, h * SIMD_LANES, at0)
        vstore(out, h1 * SIMD_LANES, at1)
        vstore(out, h2 * SIMD_LANES, at2)
        vstore(out, h3 * SIMD_LANES, at3)
        low = vselect_gt(low, at0, at0, low)
        low = vselect_gt(low, at1, at1, low)
        low = vselect_gt(low, at2, at2, low)
        low = vselect_gt(low, at3, at3, low)
    return vgt_mask(zero, low) != 0


@numba.njit(inline="always", **NJIT)
def _tile_keys(best, K, L, bits, kbuf, keys, col, m):
    """The keys of lanes ``0 .. m-1`` of a tile's codes ``best`` (:func:`_argmax_tile` without an empty
    bin, or :func:`_simhash_tile`; codes below ``2**bits``) into ``keys[t, col + lane]``, summed as
    float32 vectors (exact: ``K * bits <= 24``)."""
    for t in range(L):
        key = vsplat(np.float32(0))
        for j in range(K):
            key = vfma(vload(best, (t * K + j) * SIMD_LANES), vsplat(np.float32(1 << (j * bits))), key)
        vstore(kbuf, t * SIMD_LANES, key)
    for t in range(L):
        for lane in range(m):
            keys[t, col + lane] = np.int64(kbuf[t * SIMD_LANES + lane])


@numba.njit(**NJIT)
def _wta_sparse(cptr, chash, caux, bin_size, idx, val, best, pos, codes):
    # codes first holds the bit mask of the positions seen (present nonzero coordinates)
    best[:] = -np.inf
    pos[:] = 0
    codes[:] = 0
    for j in range(val.shape[0]):
        v = val[j]
        if v == 0:
            continue
        d = idx[j]
        for e in range(cptr[d], cptr[d + 1]):
            h, p = np.uint32(chash[e]), caux[e]
            codes[h] |= np.int64(1) << np.int64(p)
            b_v, b_p = best[h], pos[h]
            take = (v > b_v) | ((v == b_v) & (p < b_p))  # branch-free: winners are unpredictable
            best[h] = v if take else b_v
            pos[h] = p if take else b_p
    for h in range(codes.shape[0]):
        # the first unseen position holds a zero, which beats negative values (seen values are nonzero)
        for p in range(bin_size):
            if not (codes[h] >> np.int64(p)) & 1:
                if 0.0 > best[h]:
                    pos[h] = p
                break
        codes[h] = pos[h]


@numba.njit(**NJIT)
def _topk_set(idx, val, dense, k):
    # the k largest nonzero values (ties: lower coordinate), as coordinates
    top_v = np.empty(k, np.float32)
    top_d = np.empty(k, np.int64)
    m = 0
    for j in range(val.shape[0]):
        v = val[j]
        if v == 0:
            continue
        d = j if dense else np.int64(idx[j])
        if m == k and not (v > top_v[k - 1] or (v == top_v[k - 1] and d < top_d[k - 1])):
            continue
        p = m if m < k else k - 1
        while p > 0 and (v > top_v[p - 1] or (v == top_v[p - 1] and d < top_d[p - 1])):
            top_v[p] = top_v[p - 1]
            top_d[p] = top_d[p - 1]
            p -= 1
        top_v[p] = v
        top_d[p] = d
        m = min(m + 1, k)
    return top_d[:m]


@numba.njit(**NJIT)
def _densify(pos, bin_size, seed, codes):
    n = pos.shape[0]
    mask = bin_size - 1
    empty = 0
    for b in range(n):  # one vectorised pass settles every non-empty bin (all of them, for weight rows)
        empty += pos[b] < 0
        codes[b] = pos[b] & mask
    if empty == 0:
        return
    if empty == n:  # e.g. an all-zero vector: skip n fruitless scans of n bins
        codes[:] = 0
        return
    base = np.uint64(seed) * _GOLDEN
    for b in range(n):
        if pos[b] >= 0:
            continue
        src = -1
        attempt = 0
        while src < 0 and attempt < DENSIFY_PROBES:
            attempt += 1
            z = mix64(base ^ (np.uint64(b) << _S32) ^ (np.uint64(attempt) * _GOLDEN))
            c = np.int64(z % np.uint64(n))
            if pos[c] >= 0:
                src = c
        step = 1
        while src < 0 and step < n:
            c = (b + step) % n
            if pos[c] >= 0:
                src = c
            step += 1
        codes[b] = pos[src] & mask


@numba.njit(**NJIT)
def _dwta_sparse(cptr, chash, caux, idx, val, best, pos):
    best[:] = -np.inf
    pos[:] = -1
    for j in range(val.shape[0]):
        v = val[j]
        if v == 0:
            continue
        d = idx[j]
        for e in range(cptr[d], cptr[d + 1]):
            b, o = np.uint32(chash[e]), caux[e]
            b_v, b_o = best[b], pos[b]
            take = (v > b_v) | ((v == b_v) & (o < b_o))
            best[b] = v if take else b_v
            pos[b] = o if take else b_o


@numba.njit(**NJIT)
def _minhash(cptr, chash, caux, idx, val, dense, k, pos):
    pos[:] = -1
    for d in _topk_set(idx, val, dense, k):
        for e in range(cptr[d], cptr[d + 1]):
            b, o = np.uint32(chash[e]), caux[e]
            if pos[b] < 0 or o < pos[b]:
                pos[b] = o


@numba.njit(**NJIT)
def hash_into(arrays, idx, val, dense, codes, fbuf, ibuf):
    """Write the ``K*L`` codes of one vector into ``codes`` (int64).

    Parameters
    ----------
    arrays : tuple
        ``LSHIndex.arrays``.
    idx, val : int32 (nnz,), float32 (nnz,)
        A sparse vector (unique indices); for a dense vector ``val`` is the (dim,) vector and ``idx`` is
        ignored (pass an empty int32 array).
    dense : bool
    codes : int64 (K*L,) output; fbuf float32 (K*L,), ibuf int64 (K*L,) scratch.
    """
    meta, proj, dcoord, cptr, chash, caux = arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], arrays[5]
    kind, bin_size = meta[M_KIND], meta[M_BIN]
    if kind == KIND_SIMHASH:
        _simhash(proj, idx, val, dense, fbuf, codes)
    elif kind == KIND_WTA:
        if dense:
            _argmax_dense(dcoord, val, False, codes)
        else:
            _wta_sparse(cptr, chash, caux, bin_size, idx, val, fbuf, ibuf, codes)
    else:
        if kind == KIND_MINHASH:
            _minhash(cptr, chash, caux, idx, val, dense, meta[M_TOPK], ibuf)
        elif dense:
            _argmax_dense(dcoord, val, True, ibuf)
        else:
            _dwta_sparse(cptr, chash, caux, idx, val, fbuf, ibuf)
        _densify(ibuf, bin_size, meta[M_SEED], codes)


@numba.njit(inline="always", **NJIT)
def _transpose_rows(weights, r0, m, tile):
    """Rows ``r0 .. r0+m-1`` of ``weights`` (float32 or bfloat16, decoded) into lanes ``0 .. m-1`` of
    ``tile[c * SIMD_LANES + lane]``; return whether every value is finite, and whether none is zero."""
    finite, nonzero = True, True
    for lane in range(m):
        for c in range(weights.shape[1]):
            x = load(weights, r0 + lane, c)
            tile[c * SIMD_LANES + lane] = x
            finite &= np.isfinite(x)
            nonzero &= x != 0
    return finite, nonzero


@numba.njit(**NJIT)
def simhash_lists(arrays):
    """SimHash projection ``h``'s coordinates, by hash, for :func:`hash_rows`: ``coord[h]`` (increasing)
    and ``sign[h]`` (float32 +-1), a projection with fewer than the most padded with sign 0
    (``draw_params`` gives them all ``ceil(dim / 3)``); (0, 0) arrays for the other families."""
    meta, proj = arrays[0], arrays[1]
    if meta[M_KIND] != KIND_SIMHASH:
        return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
    dim, n = proj.shape
    counts = np.zeros(n, np.int64)
    for d in range(dim):
        for h in range(n):
            counts[h] += proj[d, h] != 0
    coord = np.zeros((n, counts.max()), np.int32)
    sign = np.zeros((n, counts.max()), np.float32)
    counts[:] = 0
    for d in range(dim):
        for h in range(n):
            if proj[d, h] != 0:
                coord[h, counts[h]] = d
                sign[h, counts[h]] = proj[d, h]
                counts[h] += 1
    return coord, sign


@numba.njit(**NJIT)
def _simhash_tile(coord, sign, tile, out):
    # SIMD_LANES finite vectors side by side (tile as in _argmax_tile): each projection's signed sum
    # over its coordinates in increasing order, as the one-vector pass adds them (its other terms are
    # zeros), two projections at a time; out[h * SIMD_LANES + lane]: code 1.0 where the sum is >= 0
    n, width = coord.shape
    zero = vsplat(np.float32(0))
    one = vsplat(np.float32(1))
    for h in range(0, n, 2):
        h1 = min(h + 1, n - 1)
        acc0, acc1 = zero, zero
        for k in range(width):
            acc0 = vfma(vsplat(sign[h, k]), vload(tile, coord[h, k] * SIMD_LANES), acc0)
            acc1 = vfma(vsplat(sign[h1, k]), vload(tile, coord[h1, k] * SIMD_LANES), acc1)
        vstore(out, h * SIMD_LANES, vselect_gt(zero, acc0, zero, one))
        vstore(out, h1 * SIMD_LANES, vselect_gt(zero, acc1, zero, one))


@numba.njit(**NJIT)
def hash_rows(arrays, weights, start, stop, keys, col, lists):
    """The ``L`` bucket keys of the dense rows ``start .. stop-1`` of ``weights``: row ``i``'s key of table
    ``t`` goes to ``keys[t, col + i - start]``; ``lists`` is :func:`simhash_lists` of ``arrays``.

    The same keys as :func:`hash_into` row by row (then :func:`pack_key`). SimHash, WTA and DWTA hash
    ``SIMD_LANES`` rows at once, transposed into a small tile (:func:`_simhash_tile`,
    :func:`_argmax_tile`), and a tile whose codes need no densifying gets its keys as vectors
    (:func:`_tile_keys`); other tiles and MinHash go row by row. ``weights`` is float32, or uint16
    holding bfloat16 patterns (decoded).
    """
    meta, dcoord = arrays[0], arrays[2]
    kind, K, L, bits, bin_size = meta[M_KIND], meta[M_K], meta[M_L], meta[M_BITS], meta[M_BIN]
    n = K * L
    codes = np.empty(n, np.int64)
    ibuf = np.empty(n, np.int64)
    fbuf = np.empty(n, np.float32)
    no_idx = np.empty(0, np.int32)
    row = row_buffer(weights)  # bfloat16 rows are decoded into it, float32 ones hashed in place
    tile = np.zeros(weights.shape[1] * SIMD_LANES, np.float32)
    best = np.empty(n * SIMD_LANES, np.float32)
    kbuf = np.empty(L * SIMD_LANES, np.float32)
    simhash = kind == KIND_SIMHASH
    argmax = kind == KIND_WTA or kind == KIND_DWTA
    # float keys: the codes are the offsets (DWTA bins as wide as bin_size) and a key fits a float32
    as_float = (simhash or (argmax and dcoord.shape[0] == bin_size)) and K * bits <= 24
    coord, sign = lists
    for r0 in range(start, stop, SIMD_LANES):
        m = min(SIMD_LANES, stop - r0)
        if simhash or argmax:
            finite, nonzero = _transpose_rows(weights, r0, m, tile)
            if simhash and finite and as_float:
                _simhash_tile(coord, sign, tile, best)
                _tile_keys(best, K, L, bits, kbuf, keys, col + r0 - start, m)
                continue
            # DWTA skips zeros (an empty bin); a finite tile without zeros takes the shorter steps
            skip = kind == KIND_DWTA and not (finite and nonzero)
            if argmax and not _argmax_tile(dcoord, tile, skip, best) and as_float:
                _tile_keys(best, K, L, bits, kbuf, keys, col + r0 - start, m)
                continue
        for i in range(r0, r0 + m):
            hash_into(arrays, no_idx, row_f32(weights, i, row), True, codes, fbuf, ibuf)
            for t in range(L):
                keys[t, col + i - start] = pack_key(codes, t, K, bits)
