"""Synthetic stand-ins for the XC datasets (learnable, power-law, deterministic).

``synthesize(like, scale, seed)`` returns ``(train, test)`` :class:`XCDataset` objects
shaped like a registry dataset (``delicious-200k``, ``amazon-670k``, ...):

Shape (:func:`synth_shape`)
    features = max(round(F * scale), 2 * ceil(avg_features_per_point), 64)
    labels   = max(round(L * scale), 2 * ceil(avg_labels_per_point), 16)
    train    = max(round(N_train * scale), 64);  test = max(round(N_test * scale), 32)
    With ``scale=1`` these are the published dimensions and point counts. The
    per-point averages are kept at every scale and hit exactly: the per-point counts
    are adjusted so that nnz(Y) = round(points * avg_labels_per_point) and
    nnz(X) = round(points * avg_features_per_point) in each split; avg points/label
    then follows (train * avg_labels / labels, unchanged by scaling).

Generative model (parameters in the ``synth:`` block of ``datasets.yaml``)
    label_zipf (0.6)        label frequencies follow a Zipf law p(rank r) ~ r**-label_zipf
                            over a random permutation of the label ids.
    label_count_sigma       labels per point ~ round(avg * LogNormal(0, sigma) / E[.]),
                            at least 1, at most labels/2, distinct, then sum-adjusted.
    count_sigma             the same for the number of features per point (<= features/2).
    prototype_size (auto)   every label owns a prototype: that many distinct feature ids
                            drawn uniformly; default max(16, ceil(2 * signal * avg_features
                            / avg_labels)).
    signal (0.5-0.6)        each feature slot of a point is, with probability ``signal``,
                            a feature of the prototype of one of the point's labels (chosen
                            uniformly), otherwise background noise.
    cluster_size (0 = off)  label co-occurrence: the labels are split at random into clusters
    cooccurrence (0.0)      of this many; after a point's first label, each further label is,
    cluster_features (0.0)  with probability ``cooccurrence``, drawn (by popularity) from the
                            cluster of a label the point already has, otherwise from the Zipf
                            law; a fraction ``cluster_features`` of every prototype slot is
                            drawn from a feature pool shared by the label's cluster. Off by
                            default (the output is then bit-identical to earlier versions).
                            Real Bibtex has a pair-weighted mean log-lift of label
                            co-occurrence of 1.74, the independent stand-ins 0.4-0.5
                            (reports/benchmarks.md, "Stand-ins in the paper's regime").
    feature_zipf (1.0)      background features follow a Zipf law over a random
                            permutation of the feature ids (a vocabulary).
    values                  tf-idf like: (1 + ln tf) * idf, tf = 1 + Geometric (longer
                            tail for prototype features), idf = 1 + ln((F + 1) /
                            (1 + F * p_background)), prototype features weighted x1.5;
                            each row is L2-normalised, then rounded to ``value_decimals``
                            (4) decimals, at least 10**-4, so files stay compact
                            (``123:0.0871``) and read back to exactly the same float32.
    Features and labels are sorted within each row. Train and test share the label
    distribution and the prototypes and differ in the random stream.

Determinism: global arrays use ``numpy.random.default_rng(seed)``; every point draws
from its own splitmix64 stream keyed by (seed, split, point index), so the output is
a function of (like, scale, seed) only. Numba kernels do all per-point work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numba
import numpy as np

from slide.data.dataset import XCDataset
from slide.data.registry import DatasetSpec, get_dataset
from slide.data.xc_format import write_xc
from slide.errors import ConfigError
from slide.io import atomic_write_text

__all__ = ["synthesize", "synth_shape", "synth_params", "write_synth", "SynthShape",
           "SYNTH_DEFAULTS", "SYNTH_TRAIN_FILE", "SYNTH_TEST_FILE", "SYNTH_META_FILE"]

SYNTH_TRAIN_FILE = "train.txt"
SYNTH_TEST_FILE = "test.txt"
SYNTH_META_FILE = "synth.json"

SYNTH_DEFAULTS = {
    "label_zipf": 0.6,
    "feature_zipf": 1.0,
    "signal": 0.6,
    "prototype_size": None,
    "count_sigma": 0.4,
    "label_count_sigma": 0.5,
    "cluster_size": 0,
    "cooccurrence": 0.0,
    "cluster_features": 0.0,
    "value_decimals": 4,
    "min_features": 64,
    "min_labels": 16,
    "min_train": 64,
    "min_test": 32,
}


@dataclass(frozen=True)
class SynthShape:
    features: int
    labels: int
    train: int
    test: int
    avg_labels_per_point: float
    avg_features_per_point: float


def _spec(like) -> DatasetSpec:
    return like if isinstance(like, DatasetSpec) else get_dataset(like)


def synth_params(like, **overrides) -> dict:
    """Generator parameters: defaults, then the registry's ``synth:`` block, then overrides."""
    spec = _spec(like)
    params = dict(SYNTH_DEFAULTS)
    params.update(spec.synth)
    params.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(params) - set(SYNTH_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown synth parameters {sorted(unknown)}")
    return params


def synth_shape(like, scale: float, **overrides) -> SynthShape:
    """Dimensions and counts of the stand-in for ``like`` at ``scale``."""
    spec = _spec(like)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= 4):
        raise ConfigError(f"--scale must be in (0, 4], got {scale!r}")
    p = synth_params(spec, **overrides)
    st = spec.stats
    avg_l = st.get("avg_labels_per_point")
    avg_f = st.get("avg_features_per_point")
    if not avg_l or not avg_f:
        raise ConfigError(f"dataset {spec.name!r} lacks the per-point averages a stand-in needs")
    features = max(round(st["features"] * scale), 2 * math.ceil(avg_f), int(p["min_features"]))
    labels = max(round(st["labels"] * scale), 2 * math.ceil(avg_l), int(p["min_labels"]))
    train = max(round(st["train_points"] * scale), int(p["min_train"]))
    test = max(round(st["test_points"] * scale), int(p["min_test"]))
    return SynthShape(int(features), int(labels), int(train), int(test), float(avg_l), float(avg_f))


# ----------------------------------------------------------------------------- RNG

# The engine's SplitMix64 (slide/engine/rng.py), the one copy in the suite.
from slide.engine.rng import GOLDEN as _GOLDEN  # noqa: E402
from slide.engine.rng import mix64 as _mix  # noqa: E402


@numba.njit(cache=True, inline="always")
def _seed_state(st, seed, stream, i):
    st[0] = _mix(_mix(np.uint64(seed) + _GOLDEN * np.uint64(stream + 1)) ^ (np.uint64(i) * _GOLDEN))


@numba.njit(cache=True, inline="always")
def _next(st):
    st[0] = st[0] + _GOLDEN
    return _mix(st[0])


@numba.njit(cache=True, inline="always")
def _unif(st):
    return np.float64(_next(st) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, inline="always")
def _randint(st, n):
    r = np.int64(_unif(st) * n)
    return r if r < n else n - 1


@numba.njit(cache=True, inline="always")
def _normal(st):
    u1 = 1.0 - _unif(st)
    u2 = _unif(st)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# ----------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _counts_kernel(seed, stream, n, mean, sigma, lo, hi):
    """Log-normal counts with the exact total round(n * mean), clipped to [lo, hi]."""
    out = np.empty(n, dtype=np.int64)
    st = np.empty(1, dtype=np.uint64)
    total = 0
    for i in range(n):
        _seed_state(st, seed, stream, i)
        c = np.int64(np.floor(mean * math.exp(sigma * _normal(st) - 0.5 * sigma * sigma) + 0.5))
        if c < lo:
            c = lo
        if c > hi:
            c = hi
        out[i] = c
        total += c
    target = np.int64(np.floor(n * mean + 0.5))
    if target < n * lo:
        target = n * lo
    if target > n * hi:
        target = n * hi
    _seed_state(st, seed, stream + 1000, n)
    diff = target - total
    while diff != 0:
        i = _randint(st, n)
        if diff > 0 and out[i] < hi:
            out[i] += 1
            diff -= 1
        elif diff < 0 and out[i] > lo:
            out[i] -= 1
            diff += 1
    return out


@numba.njit(cache=True)
def _prototype_kernel(seed, num_labels, num_features, size, cluster_of, cluster_proto, shared):
    proto = np.empty((num_labels, size), dtype=np.int32)
    mark = np.full(num_features, -1, dtype=np.int64)
    st = np.empty(1, dtype=np.uint64)
    csz = cluster_proto.shape[1]
    for l in range(num_labels):
        _seed_state(st, seed, 7, l)
        got = 0
        tries = 0
        while got < size:
            tries += 1
            if csz > 0 and tries <= 64 * size and _unif(st) < shared:
                f = cluster_proto[cluster_of[l], _randint(st, csz)]
            else:
                f = _randint(st, num_features)
            if mark[f] == l:
                continue
            mark[f] = l
            proto[l, got] = f
            got += 1
    return proto


@numba.njit(cache=True)
def _sample_cdf(cdf, u):
    r = np.searchsorted(cdf, u * cdf[-1], side="right")
    if r >= cdf.shape[0]:
        r = cdf.shape[0] - 1
    return r


@numba.njit(cache=True, inline="always")
def _cluster_label(st, drawn, cluster_of, cluster_cdf, cluster_members, csize):
    """A co-occurring label: from the cluster of the label ``drawn`` already, by popularity."""
    c = cluster_of[drawn]
    end = min((c + 1) * csize, cluster_cdf.shape[0])
    lo = cluster_cdf[c * csize - 1] if c > 0 else 0.0
    hi = cluster_cdf[end - 1]
    r = np.searchsorted(cluster_cdf, lo + _unif(st) * (hi - lo), side="right")
    if r >= end:
        r = end - 1
    if r < c * csize:
        r = c * csize
    return cluster_members[r]


@numba.njit(cache=True)
def _generate_kernel(seed, stream, y_indptr, x_indptr, label_cdf, label_perm, feat_cdf,
                     feat_perm, idf, proto, signal, denom, cluster_of, cluster_cdf, cluster_members,
                     csize, cooc):
    n = y_indptr.shape[0] - 1
    num_labels = label_cdf.shape[0]
    num_features = feat_cdf.shape[0]
    psize = proto.shape[1]
    y_indices = np.empty(y_indptr[n], dtype=np.int32)
    x_indices = np.empty(x_indptr[n], dtype=np.int32)
    x_data = np.empty(x_indptr[n], dtype=np.float32)
    mark_l = np.full(num_labels, -1, dtype=np.int64)
    mark_f = np.full(num_features, -1, dtype=np.int64)
    maxrow = 0
    for i in range(n):
        if x_indptr[i + 1] - x_indptr[i] > maxrow:
            maxrow = x_indptr[i + 1] - x_indptr[i]
    rowf = np.empty(maxrow, dtype=np.int32)
    rowv = np.empty(maxrow, dtype=np.float64)
    st = np.empty(1, dtype=np.uint64)
    for i in range(n):
        _seed_state(st, seed, stream, i)
        # labels: Zipf draws without repetition
        y0 = y_indptr[i]
        k = y_indptr[i + 1] - y0
        got = 0
        tries = 0
        while got < k:
            tries += 1
            if tries <= 64 * k and got > 0 and csize > 0 and _unif(st) < cooc:
                lab = _cluster_label(st, y_indices[y0 + _randint(st, got)], cluster_of, cluster_cdf,
                                     cluster_members, csize)
            elif tries <= 64 * k:
                lab = label_perm[_sample_cdf(label_cdf, _unif(st))]
            else:
                lab = _randint(st, num_labels)
            if mark_l[lab] == i:
                continue
            mark_l[lab] = i
            y_indices[y0 + got] = lab
            got += 1
        y_indices[y0:y0 + k] = np.sort(y_indices[y0:y0 + k])
        # features: prototype features of the point's labels, plus background noise
        x0 = x_indptr[i]
        m = x_indptr[i + 1] - x0
        got = 0
        tries = 0
        norm = 0.0
        while got < m:
            tries += 1
            sig = False
            if tries > 64 * m:
                f = _randint(st, num_features)
            elif _unif(st) < signal:
                lab = y_indices[y0 + _randint(st, k)]
                f = proto[lab, _randint(st, psize)]
                sig = True
            else:
                f = feat_perm[_sample_cdf(feat_cdf, _unif(st))]
            if mark_f[f] == i:
                continue
            mark_f[f] = i
            tf = 1
            p_more = 0.5 if sig else 0.2
            while tf < 20 and _unif(st) < p_more:
                tf += 1
            v = (1.0 + math.log(tf)) * idf[f] * (1.5 if sig else 1.0)
            rowf[got] = f
            rowv[got] = v
            norm += v * v
            got += 1
        norm = math.sqrt(norm) if norm > 0 else 1.0
        order = np.argsort(rowf[:m])
        for j in range(m):
            o = order[j]
            x_indices[x0 + j] = rowf[o]
            q = np.floor(rowv[o] / norm * denom + 0.5)
            if q < 1.0:
                q = 1.0
            x_data[x0 + j] = np.float32(q / denom)
    return y_indices, x_indices, x_data


def _zipf_cdf(n, a):
    w = np.arange(1, n + 1, dtype=np.float64) ** (-float(a))
    return np.cumsum(w)


def synthesize(like, scale: float = 1.0, seed: int = 0, **overrides) -> tuple[XCDataset, XCDataset]:
    """Generate ``(train, test)`` stand-ins for registry dataset ``like`` (see module doc)."""
    spec = _spec(like)
    shape = synth_shape(spec, scale, **overrides)
    p = synth_params(spec, **overrides)
    seed = int(seed)
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    F, L = shape.features, shape.labels
    signal = float(p["signal"])
    if not 0.0 <= signal <= 1.0:
        raise ConfigError(f"synth signal must be in [0, 1], got {signal}")
    psize = p["prototype_size"]
    if psize is None:
        psize = max(16, math.ceil(2 * signal * shape.avg_features_per_point / shape.avg_labels_per_point))
    psize = int(min(psize, F))
    decimals = int(p["value_decimals"])
    if not 0 <= decimals <= 9:
        raise ConfigError(f"synth value_decimals must be in [0, 9], got {decimals}")
    denom = float(10 ** decimals)

    rng = np.random.default_rng(seed)
    label_perm = rng.permutation(L).astype(np.int32)
    feat_perm = rng.permutation(F).astype(np.int32)
    label_cdf = _zipf_cdf(L, p["label_zipf"])
    feat_cdf = _zipf_cdf(F, p["feature_zipf"])
    p_bg = np.empty(F, dtype=np.float64)
    p_bg[feat_perm] = np.diff(feat_cdf, prepend=0.0) / feat_cdf[-1]
    idf = 1.0 + np.log((F + 1.0) / (1.0 + F * p_bg))
    csize = int(p["cluster_size"])
    cooc = float(p["cooccurrence"])
    shared = float(p["cluster_features"])
    if csize < 0 or not 0.0 <= cooc <= 1.0 or not 0.0 <= shared <= 1.0:
        raise ConfigError(f"synth cluster_size must be >= 0 and cooccurrence, cluster_features in [0, 1], "
                          f"got {csize}, {cooc}, {shared}")
    csize = min(csize, L)
    weight = np.empty(L, dtype=np.float64)
    weight[label_perm] = np.diff(label_cdf, prepend=0.0)
    if csize > 0:
        cluster_members = rng.permutation(L).astype(np.int32)
        cluster_of = np.empty(L, dtype=np.int32)
        cluster_of[cluster_members] = np.arange(L, dtype=np.int32) // csize
        cluster_cdf = np.cumsum(weight[cluster_members])
        n_clusters = -(-L // csize)
        cluster_proto = rng.integers(0, F, size=(n_clusters, psize)).astype(np.int32)
    else:
        cluster_members = np.zeros(1, dtype=np.int32)
        cluster_of = np.zeros(L, dtype=np.int32)
        cluster_cdf = np.ones(1, dtype=np.float64)
        cluster_proto = np.zeros((1, 0), dtype=np.int32)
    proto = _prototype_kernel(np.uint64(seed), L, F, psize, cluster_of, cluster_proto, shared)

    out = []
    for stream, n in ((1, shape.train), (2, shape.test)):
        kc = _counts_kernel(np.uint64(seed), 10 * stream, n, shape.avg_labels_per_point,
                            float(p["label_count_sigma"]), 1, max(1, L // 2))
        mc = _counts_kernel(np.uint64(seed), 10 * stream + 1, n, shape.avg_features_per_point,
                            float(p["count_sigma"]), 1, max(1, F // 2))
        y_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(kc, out=y_indptr[1:])
        x_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(mc, out=x_indptr[1:])
        yi, xi, xd = _generate_kernel(np.uint64(seed), 100 * stream, y_indptr, x_indptr, label_cdf,
                                      label_perm, feat_cdf, feat_perm, idf, proto, signal, denom, cluster_of,
                                      cluster_cdf, cluster_members, csize, cooc)
        out.append(XCDataset(x_indptr, xi, xd, y_indptr, yi, F, L))
    return out[0], out[1]


def write_synth(out_dir, like, scale: float = 1.0, seed: int = 0, **overrides) -> dict:
    """Generate and write ``<out_dir>/train.txt``, ``test.txt`` and ``synth.json``.

    The two data files are written atomically; ``synth.json`` (generator parameters,
    shape, seed) is written last. Returns the paths.
    """
    spec = _spec(like)
    out_dir = Path(out_dir)
    train, test = synthesize(spec, scale, seed, **overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path = write_xc(out_dir / SYNTH_TRAIN_FILE, train)
    test_path = write_xc(out_dir / SYNTH_TEST_FILE, test)
    meta = {
        "like": spec.name,
        "scale": scale,
        "seed": int(seed),
        "shape": asdict(synth_shape(spec, scale, **overrides)),
        "params": synth_params(spec, **overrides),
        "files": {"train": SYNTH_TRAIN_FILE, "test": SYNTH_TEST_FILE},
    }
    meta_path = out_dir / SYNTH_META_FILE
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {"train": str(train_path), "test": str(test_path), "meta": str(meta_path)}


def bench_dir(like: str, scale: float, seed: int, root="data") -> Path:
    """Where benchmark stand-ins live: ``<root>/bench/<like>-s<scale>-seed<seed>``."""
    return Path(root) / "bench" / f"{like}-s{scale:g}-seed{seed}"


def ensure_synth(out_dir, like, scale: float = 1.0, seed: int = 0) -> dict | None:
    """Generate the stand-in in ``out_dir`` unless ``synth.json`` says it is already there, made
    with the generator parameters of today's registry.

    Returns the paths written by :func:`write_synth`, or ``None`` when existing files were reused.
    """
    out_dir = Path(out_dir)
    meta_file = out_dir / SYNTH_META_FILE
    if (out_dir / SYNTH_TRAIN_FILE).is_file() and meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
        if ((meta.get("like"), meta.get("scale"), meta.get("seed"), meta.get("params"))
                == (_spec(like).name, scale, int(seed), synth_params(like))):
            return None
    return write_synth(out_dir, like, scale, seed)
