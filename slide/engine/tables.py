"""LSH bucket tables of the SLIDE engine and their Python face, :class:`LSHIndex`.

Each of the ``L`` tables maps the 64-bit key of a bucket (``hashing.pack_key``) to a slot:

* direct addressing (slot = key) when ``K*bits <= log2(next_pow2(2*num_items))``, i.e. when the key space
  is no larger than a hash map would be;
* otherwise an open-addressed hash map (SplitMix64 of the key, linear probing) of
  ``S = next_pow2(2*num_items)`` slots, load factor <= 1/2, with the keys in ``keys[t]``.

Either way memory is O(L * min(num_items, 2**(K*bits))) and distinct keys never share a bucket. Bucket
contents are CSR per table: slot ``s`` of table ``t`` holds ``items[t, ptr[t, s]:ptr[t, s+1]]``; an empty
range is an empty slot. A bucket keeps at most ``bucket_size`` items: ``fifo`` keeps the newest (ring
buffer), ``reservoir`` a uniform sample (seeded). Items are inserted in id order, so the tables depend only
on the weights and the seed, never on the thread count.

``LSHIndex.arrays`` is the tuple handed to Numba code, fixed in layout for every family::

    (meta, proj, dcoord, cptr, chash, caux, keys, ptr, items)

    meta   int64 (13,)            kind, dim, num_items, K, L, bits, bin_size, topk, S, direct,
                                  bucket_size, insertion (0 fifo, 1 reservoir), seed (``hashing.M_*``)
    proj   int8 (dim, K*L)        SimHash signs, (0, 0) otherwise                 (see ``hashing``)
    dcoord int32 (W, K*L)         WTA / DWTA coordinates by position, (0, 0) otherwise
    cptr   int64 (dim + 1,)       coordinate -> hash CSR of wta/dwta/minhash
    chash  int32 (nnz,)
    caux   int32 (nnz,)
    keys   int64 (L, S) | (L, 0)  hash-map keys (empty with direct addressing)
    ptr    int32 (L, S + 1)       bucket offsets
    items  int32 (L, cap)         bucket contents, cap = min(num_items, S*bucket_size); unused tail = -1

The arrays are allocated once: ``build``, ``rebuild`` and ``load_state_arrays`` overwrite them in place, so
a tuple fetched once stays valid. Numba code must only read them, and not while ``build`` runs.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import ConfigError
from ..method_registry import method_spec
from ..settings import FLOAT, NJIT, NJIT_PARALLEL
from .hashing import (
    M_BITS,
    M_BUCKET,
    M_DIRECT,
    M_INSERT,
    M_K,
    M_L,
    M_SEED,
    M_SLOTS,
    code_bits,
    draw_params,
    hash_into,
    hash_rows,
    kind_code,
    pack_key,
    simhash_lists,
)
from .precision import BF16
from .rng import GOLDEN as _GOLDEN
from .rng import mix64

#: The ``insertion`` enum of slide/engine/config.schema.json; a code (saved in ``meta``) is its index there.
INSERTIONS = method_spec("slide").choices("insertion")
#: Bytes of the key buffer of ``build`` (L x :func:`chunk_rows` int64) for tables that are hash maps
#: (with direct addressing a key is its slot and goes straight into the slot map). Each pass of the
#: build counts its keys into every table's bucket offsets, which fall out of the cache between
#: passes: few large passes, not many small ones.
KEY_BUFFER_BYTES = 1 << 26
#: Rows per parallel task of the hashing.
_BLOCK = 64
_STATE_NAMES = ("meta", "proj", "dcoord", "cptr", "chash", "caux", "keys", "ptr", "items")


@numba.njit(**NJIT)
def find_slot(keys, ptr, t, key, direct, n_slots):
    """Slot of ``key`` in table ``t``, or -1 when that bucket is empty."""
    if direct:
        s = key
    else:
        mask = n_slots - 1
        s = np.int64(mix64(np.uint64(key)) & np.uint64(mask))
        while ptr[t, s + 1] > ptr[t, s] and keys[t, s] != key:
            s = (s + 1) & mask
    return s if ptr[t, s + 1] > ptr[t, s] else -1


@numba.njit(**NJIT)
def retrieve(arrays, idx, val, dense, labels, stamp, counts, stamp_value, out, counted):
    """Write ``labels`` then the new items of the ``L`` buckets of a vector into ``out``.

    With ``counted``, ``counts[c]`` becomes the number of tables whose bucket holds ``c`` (labels start
    from 0); without, ``counts`` is not touched (a scattered write per bucket item that the union alone
    does not need). An id is new when ``stamp[id] != stamp_value``. See ``hashing.hash_into`` for
    ``idx, val, dense``.

    Returns
    -------
    (n_labels, n) : ids in ``out[:n_labels]`` are the distinct labels, ``out[n_labels:n]`` the candidates.
    """
    meta, keys, ptr, items = arrays[0], arrays[6], arrays[7], arrays[8]
    K, L, bits, n_slots, direct = meta[M_K], meta[M_L], meta[M_BITS], meta[M_SLOTS], meta[M_DIRECT] != 0
    codes = np.empty(K * L, np.int64)
    hash_into(arrays, idx, val, dense, codes, np.empty(K * L, np.float32), np.empty(K * L, np.int64))
    n = 0
    for c in labels:
        if stamp[c] != stamp_value:
            stamp[c] = stamp_value
            if counted:
                counts[c] = 0
            out[n] = c
            n += 1
    n_labels = n
    for t in range(L):
        s = find_slot(keys, ptr, t, pack_key(codes, t, K, bits), direct, n_slots)
        if s < 0:
            continue
        for e in range(ptr[t, s], ptr[t, s + 1]):
            c = items[t, e]
            if stamp[c] != stamp_value:
                stamp[c] = stamp_value
                if counted:
                    counts[c] = 1
                out[n] = c
                n += 1
            elif counted:
                counts[c] += 1
    return n_labels, n


@numba.njit(**NJIT)
def _count_insert(keys, ptr, t, key, n_slots):
    # the slot of ``key`` in hash-map table t, claimed if new; while counting, ptr[t, s+1] holds the
    # number of items of slot s (a direct-addressed build counts its keys itself)
    mask = n_slots - 1
    s = np.int64(mix64(np.uint64(key)) & np.uint64(mask))
    while ptr[t, s + 1] > 0 and keys[t, s] != key:
        s = (s + 1) & mask
    keys[t, s] = key
    ptr[t, s + 1] += 1
    return s


@numba.njit(**NJIT)
def _fill_table(ptr, items, slot_of, t, cap, reservoir, seed):
    # ptr[t, s+1] holds slot s's count; it becomes the CSR end. An item of a slot that keeps all its
    # items goes to the slot's cursor (one scattered read-modify-write per item); only the items of a
    # slot with more than ``cap`` take their rank there and the ring (fifo) or reservoir position.
    n_slots = ptr.shape[1] - 1
    cursor = np.empty(n_slots, np.int32)
    total = 0
    over = False
    for s in range(n_slots):
        count = ptr[t, s + 1]
        over |= count > cap
        cursor[s] = total if count <= cap else -1
        total += min(count, cap)
        ptr[t, s + 1] = total
    items[t, total:] = -1
    rank = np.zeros(n_slots if over else 0, np.int32)
    state = mix64(np.uint64(seed) ^ (np.uint64(t + 1) * _GOLDEN))
    for i in range(slot_of.shape[1]):
        s = slot_of[t, i]
        c = cursor[s]
        if c >= 0:
            items[t, c] = i
            cursor[s] = c + 1
            continue
        r = rank[s]
        rank[s] = r + 1
        if not reservoir:
            p = r % cap
        elif r < cap:
            p = r
        else:
            state += _GOLDEN
            p = np.int64(mix64(state) % np.uint64(r + 1))
            if p >= cap:
                continue
        items[t, ptr[t, s] + p] = i


@numba.njit(**NJIT_PARALLEL)
def _build(arrays, weights, slot_of, chunk_keys):
    meta, keys, ptr, items = arrays[0], arrays[6], arrays[7], arrays[8]
    L, n_slots, direct = meta[M_L], meta[M_SLOTS], meta[M_DIRECT] != 0
    n = weights.shape[0]
    ptr[:, :] = 0
    keys[:, :] = 0  # unused slots too, so that the arrays depend only on the weights and the seed
    lists = simhash_lists(arrays)
    if direct:
        # a key is its slot: every row hashed straight into the slot map, then counted in one pass
        for blk in numba.prange((n + _BLOCK - 1) // _BLOCK):
            hash_rows(arrays, weights, blk * _BLOCK, min(n, (blk + 1) * _BLOCK), slot_of, blk * _BLOCK, lists)
        for t in numba.prange(L):
            for i in range(n):
                ptr[t, slot_of[t, i] + 1] += 1
    else:
        chunk = chunk_keys.shape[1]
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            for blk in numba.prange((m + _BLOCK - 1) // _BLOCK):
                hash_rows(arrays, weights, start + blk * _BLOCK, start + min(m, (blk + 1) * _BLOCK), chunk_keys,
                          blk * _BLOCK, lists)
            for t in numba.prange(L):
                for i in range(m):
                    slot_of[t, start + i] = _count_insert(keys, ptr, t, chunk_keys[t, i], n_slots)
    for t in numba.prange(L):
        _fill_table(ptr, items, slot_of, t, meta[M_BUCKET], meta[M_INSERT] != 0, meta[M_SEED])


def chunk_rows(num_items: int, L: int, direct: bool) -> int:
    """Rows hashed per parallel pass of a build: as many as :data:`KEY_BUFFER_BYTES` of keys hold
    (at least one block), at most all of them; none with direct addressing, where a key is its slot
    and the build hashes every row straight into its slot map."""
    if direct:
        return 0
    return int(min(num_items, max(_BLOCK, KEY_BUFFER_BYTES // (8 * L))))


@numba.njit(**NJIT)
def _hash_one(arrays, idx, val, dense):
    meta = arrays[0]
    K, L, bits = meta[M_K], meta[M_L], meta[M_BITS]
    codes = np.empty(K * L, np.int64)
    hash_into(arrays, idx, val, dense, codes, np.empty(K * L, np.float32), np.empty(K * L, np.int64))
    keys = np.empty(L, np.int64)
    for t in range(L):
        keys[t] = pack_key(codes, t, K, bits)
    return codes, keys


def _positive_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"LSH {name} must be an integer >= {low}, got {value!r}")
    return int(value)


class LSHIndex:
    """``L`` LSH tables over the rows of a weight matrix (one item per output neuron).

    Parameters
    ----------
    kind : {'simhash', 'wta', 'dwta', 'minhash'}
        Hash family (see :mod:`slide.engine.hashing`).
    dim : int
        Length of the hashed vectors (weight rows and queries).
    num_items : int
        Number of items (weight rows); ids are ``0 .. num_items-1``.
    K, L : int
        Codes per bucket key, number of tables; ``K * bits <= 64``.
    bucket_size : int
        Capacity of a bucket.
    insertion : {'fifo', 'reservoir'}
        What a full bucket does with a new item: replace the oldest, or keep a uniform sample.
    seed : int
        Seed of the hash functions and of reservoir sampling.
    bin_size : int
        WTA prefix length / DWTA and MinHash bin width, a power of two in [2, 64].
    topk_minhash : int
        Size of the coordinate set that MinHash hashes.

    Raises
    ------
    ConfigError
        On an invalid setting.
    """

    def __init__(self, kind: str, dim: int, num_items: int, K: int, L: int, bucket_size: int = 128,
                 insertion: str = "fifo", seed: int = 0, bin_size: int = 8, topk_minhash: int = 32):
        code = kind_code(kind)
        dim, num_items, K, L = (_positive_int(n, v) for n, v in
                                (("dim", dim), ("num_items", num_items), ("K", K), ("L", L)))
        bucket_size = _positive_int("bucket_size", bucket_size)
        topk_minhash = _positive_int("topk_minhash", topk_minhash)
        seed = self._check_seed(seed)
        if num_items >= 2**31:
            raise ConfigError(f"LSH num_items must be < 2**31, got {num_items}")
        if insertion not in INSERTIONS:
            raise ConfigError(f"unknown bucket insertion {insertion!r}; choose fifo or reservoir")
        if kind != "simhash":
            bin_size = _positive_int("bin_size", bin_size, 2)
            if bin_size > 64 or bin_size & (bin_size - 1):
                raise ConfigError(f"LSH bin_size must be a power of two in [2, 64], got {bin_size}")
            if kind == "wta" and bin_size > dim:
                raise ConfigError(f"WTA bin_size {bin_size} exceeds dim {dim}")
        bits = code_bits(kind, bin_size)
        if K * bits > 64:
            raise ConfigError(f"K*bits = {K}*{bits} = {K * bits} exceeds the 64 bits of a bucket key; lower K")
        hashed_slots = max(16, 1 << (2 * num_items - 1).bit_length())
        direct = K * bits <= hashed_slots.bit_length() - 1
        n_slots = 1 << (K * bits) if direct else hashed_slots
        self.kind, self.dim, self.num_items, self.K, self.L = kind, dim, num_items, K, L
        self.bucket_size, self.insertion = bucket_size, insertion
        self.bin_size, self.topk_minhash = bin_size, topk_minhash
        meta = np.array([code, dim, num_items, K, L, bits, bin_size, topk_minhash, n_slots, direct,
                         bucket_size, INSERTIONS.index(insertion), seed], dtype=np.int64)
        keys = np.zeros((L, 0 if direct else n_slots), np.int64)
        ptr = np.zeros((L, n_slots + 1), np.int32)
        items = np.full((L, min(num_items, n_slots * bucket_size)), -1, np.int32)
        self._arrays = (meta, *draw_params(kind, dim, K, L, bin_size, seed), keys, ptr, items)
        self._work = None

    @staticmethod
    def _check_seed(seed):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ConfigError(f"LSH seed must be an integer in [0, 2**63), got {seed!r}")
        return int(seed)

    @property
    def seed(self) -> int:
        """Seed of the current hash functions."""
        return int(self._arrays[0][M_SEED])

    @property
    def arrays(self) -> tuple:
        """``(meta, proj, dcoord, cptr, chash, caux, keys, ptr, items)``, for Numba code (module docstring)."""
        return self._arrays

    def _weights(self, weights):
        """``weights`` as a C-ordered float32 array, or uint16 taken as bfloat16 (hashed as decoded)."""
        weights = np.ascontiguousarray(weights, dtype=BF16 if np.asarray(weights).dtype == BF16 else FLOAT)
        if weights.shape != (self.num_items, self.dim):
            raise ValueError(f"weights must have shape ({self.num_items}, {self.dim}), got {weights.shape}")
        return weights

    def build(self, weights: np.ndarray) -> None:
        """Clear the tables and insert every row of ``weights`` (num_items, dim) with the current hashes;
        a uint16 ``weights`` holds bfloat16 patterns (:mod:`slide.engine.precision`), decoded a row at a time."""
        weights = self._weights(weights)
        if self._work is None:
            # kept from build to build: fresh pages of this size cost a fault each, and with
            # transparent huge pages a compaction stall, 0.05-0.4 s of a 0.26 s build at the Amazon shape
            direct = bool(self._arrays[0][M_DIRECT])
            self._work = (np.empty((self.L, self.num_items), np.int32),
                          np.empty((self.L, chunk_rows(self.num_items, self.L, direct)), np.int64))
        _build(self._arrays, weights, *self._work)

    def rebuild(self, weights: np.ndarray, seed: int) -> None:
        """Draw new hash functions from ``seed``, then :meth:`build`."""
        weights = self._weights(weights)
        seed = self._check_seed(seed)
        for old, new in zip(self._arrays[1:6], draw_params(self.kind, self.dim, self.K, self.L, self.bin_size, seed)):
            old[...] = new
        self._arrays[0][M_SEED] = seed
        self.build(weights)

    def _vector(self, vec):
        if isinstance(vec, tuple):
            idx, val = np.ascontiguousarray(vec[0], np.int32), np.ascontiguousarray(vec[1], FLOAT)
            if idx.ndim != 1 or idx.shape != val.shape or (idx.size and not 0 <= idx.min() <= idx.max() < self.dim):
                raise ValueError(f"a sparse vector needs equal-length indices in [0, {self.dim}) and values")
            return idx, val, False
        val = np.ascontiguousarray(vec, FLOAT)
        if val.shape != (self.dim,):
            raise ValueError(f"a dense vector must have shape ({self.dim},), got {val.shape}")
        return np.empty(0, np.int32), val, True

    def codes(self, vec) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, keys)``: the K*L hash codes and the L bucket keys of a vector.

        ``vec`` is a dense (dim,) array or a sparse ``(indices, values)`` tuple.
        """
        return _hash_one(self._arrays, *self._vector(vec))

    def query(self, vec) -> np.ndarray:
        """Sorted distinct ids in the union of the L buckets of a vector (dense, or ``(indices, values)``)."""
        n = self.num_items
        out = np.empty(n, np.int32)
        _, m = retrieve(self._arrays, *self._vector(vec), np.empty(0, np.int32), np.zeros(n, np.int32),
                        np.empty(n, np.int32), 1, out, False)
        return np.sort(out[:m])

    def build_bytes(self) -> int:
        """Bytes one :meth:`build` reads and writes in the index's own arrays, the weights it hashes
        aside (for ``slide bench``'s byte count; element bytes of each array once per pass over it).

        The hash functions read once; with direct addressing the slot map (``L x n`` int32) written by
        the hashing and read by the count and by the fill, else the keys (int64) written into the key
        buffer and read by the inserts, the key map zeroed, read and written by them, and the slot map
        written by them and read by the fill; the slot counts zeroed, read and written by the count,
        read and written by the fill (which turns them into bucket ends); each table's cursors (an int32
        per slot) written, then read and written by the fill; every bucket entry written once.
        """
        meta, keys, ptr, items = self._arrays[0], self._arrays[6], self._arrays[7], self._arrays[8]
        slot_map = 4 * self.L * self.num_items
        if meta[M_DIRECT]:
            hashed = 3 * slot_map
        else:
            hashed = 2 * 8 * self.L * self.num_items + 3 * keys.nbytes + 2 * slot_map
        cursors = 3 * 4 * self.L * (ptr.shape[1] - 1)
        functions = sum(a.nbytes for a in self._arrays[1:6])
        return int(functions + hashed + 5 * ptr.nbytes + cursors + items.nbytes)

    def memory_bytes(self) -> int:
        """Bytes held by the hash functions and the tables, and after the first build its slot map
        and key buffer (kept for the next; no key buffer with direct addressing)."""
        return int(sum(a.nbytes for a in self._arrays + (self._work or ())))

    def state_arrays(self) -> dict:
        """Copies of every array (hash functions, seed and tables), for a checkpoint."""
        return {name: a.copy() for name, a in zip(_STATE_NAMES, self._arrays)}

    def load_state_arrays(self, state: dict) -> None:
        """Restore :meth:`state_arrays` of an index with the same settings (any seed), in place."""
        missing = [n for n in _STATE_NAMES if n not in state]
        if missing:
            raise ConfigError(f"LSH state lacks {', '.join(missing)}")
        for name, a in zip(_STATE_NAMES, self._arrays):
            b = np.asarray(state[name])
            if b.shape != a.shape or b.dtype != a.dtype:
                raise ConfigError(f"LSH state array {name!r} is {b.dtype}{b.shape}, expected {a.dtype}{a.shape}")
        meta = np.asarray(state["meta"])
        if not np.array_equal(meta[:M_SEED], self._arrays[0][:M_SEED]):
            raise ConfigError("LSH state was saved with other settings (family, shape, K, L, bucket or insertion)")
        for name, a in zip(_STATE_NAMES, self._arrays):
            a[...] = state[name]

    def __repr__(self) -> str:
        return (f"LSHIndex({self.kind!r}, dim={self.dim}, num_items={self.num_items}, K={self.K}, L={self.L}, "
                f"bucket_size={self.bucket_size}, insertion={self.insertion!r}, seed={self.seed})")
