"""``SlideMethod``: the SLIDE engine behind ``slide train`` and ``slide bench``.

A sparse input (D features) feeds one or more ReLU hidden layers (default one of 128); the output
layer has one neuron per label and is trained with softmax cross-entropy over the neurons *active*
for the sample: those an LSH lookup of the last hidden activation retrieves, plus the true labels
(adaptive dropout, Chen et al., MLSys 2020). Targets are soft, 1/|y| on each true label.

Training is HOGWILD: the samples of a batch run in parallel and add their gradients into shared
per-row buffers without locks; Adam then updates only the rows the batch touched
(``optimizer: sparse``, the default) or every parameter (``optimizer: dense``, as the reference).
Hash tables are refreshed on a schedule (:mod:`slide.engine.schedule`); the time it takes is part
of the step's time and is also reported as ``rehash_seconds`` by :meth:`SlideMethod.stats`.

Evaluation scores every label exactly (``inference: dense``): hidden activations per chunk of
points with a Numba kernel, then :func:`slide.engine.scoring.exact_topk`, a register-blocked
kernel that keeps running top-k lists and never holds a points x labels matrix.
``inference: sparse`` scores only the LSH-retrieved labels.

Hidden layers may be LSH-sampled too (``hidden_sparsity``, one fraction per hidden layer, default
all 1 = dense). A layer with sparsity s < 1 of width H computes, per training sample, only
``k = ceil(s * H)`` neurons: the k with the most collisions in that layer's hash tables when its
*input* is looked up (the sparse sample for the first layer, the previous layer's activation
otherwise), padded with distinct random neurons to exactly k when fewer are retrieved. This is
fixed top-k, independent of the ``sampling`` key (which governs the output layer only). The other
neurons are 0 in the forward pass and get no gradient. The tables of a layer index its neurons'
weight vectors (the columns of ``W0``, i.e. rows of ``W0.T``, for the first layer; the rows of the
layer's block of ``Wh`` otherwise) and are rehashed / rebuilt on the output tables' schedule.
Evaluation (both ``inference`` modes) computes the hidden layers densely: sampling is a training
device here, and every neuron's weights are trained, so the dense activation is the full model.

``precision: bf16`` stores the weights and Adam moments of ``W0`` and ``W2`` (the rows a step gathers
and updates) as bfloat16 in uint16 arrays, half the bytes per touched row; gradients and the small
dense parameters stay float32 and all arithmetic is float32 (:mod:`slide.engine.precision`). The
initial weights are the float32 ones of the same seed, rounded to nearest; Adam's stores round
stochastically (seeded by the model's seed and the step), so updates smaller than half a bfloat16
step still count in expectation.

Example
-------
>>> from slide.engine import SlideMethod
>>> m = SlideMethod.from_config(1836, 159, overrides={"hidden": [128]}, seed=0, threads=2)
>>> m.fit(train, test, epochs=5)            # doctest: +SKIP
>>> m.predict_topk(test, np.arange(len(test)), k=5)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings

import numba
import numpy as np

from ..adapter import Method, PersistentMixin
from ..data.dataset import row_lengths
from ..errors import ConfigError, ConfigWarning, ResourceError
from ..resources import memory_limit_bytes
from ..settings import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, FLOAT, available_cores, numba_threads
from . import grouped
from . import network as net
from . import scoring
from .precision import BF16, STORAGE, to_bf16
from .presets import DEFAULTS, INFERENCES, PRESETS, validate
from .schedule import REBUILD, Schedule

_LSH_PREFIX = "lsh__"
_LSH_HIDDEN_PREFIX = "lsh_hidden"
#: Hidden layers that may be LSH-sampled at once (one table tuple argument of the kernel each).
MAX_SAMPLED_HIDDEN = 4
#: Steps between re-estimates of the sampling probabilities of ``correction: logq``.
LOGQ_EVERY = 50
#: Points whose hidden activations dense scoring computes at a time.
SCORE_POINTS = 16384
#: Samples a thread takes at a time from the batch (dynamic scheduling, so a thread delayed by
#: another process does not hold up the step).
SAMPLE_CHUNK = 2
#: ``output_pass: auto`` runs the row pass once a batch's (sample, active neuron) pairs reach this share
#: of the labels: at the Amazon-670K shape, since the row phases loop over the touched rows only, the row
#: pass takes 0.70-0.75x the sample pass's time at every share measured, 0.032 to 0.115
#: (reports/benchmarks.md, "The row pass over its touched rows"; before, it lost below ~0.1). Below the
#: smallest share measured the sample pass stays.
AUTO_ROW_SHARE = 1 / 32
#: The counts :meth:`SlideMethod.traffic` keeps: training steps, samples, non-zero features and true
#: labels of those samples, active output neurons summed over the samples, rows of ``W0`` and ``W2``
#: that took Adam with a gradient (the touched rows, under either optimizer), hash-table refreshes,
#: the steps that ran the row pass (:mod:`.grouped`) with their active neurons and their distinct
#: output rows, and of those steps the ones whose row pass updated the input layer too (under the sparse
#: optimizer) with their features and distinct ``W0`` rows.
TRAFFIC_KEYS = ("batches", "samples", "features", "labels", "active", "rows0", "rows2", "refreshes", "row_batches",
                "row_active", "row_rows2", "row_features", "row_rows0")


def _lsh_modules():
    from . import sampling, tables

    return tables, sampling


class SlideMethod(PersistentMixin, Method):
    """The SLIDE network trained with LSH-sampled output neurons and HOGWILD updates.

    Parameters
    ----------
    num_features, num_labels : int
    config : dict
        A resolved configuration (see :mod:`slide.engine.presets` for every key); use
        :meth:`from_config` to start from the defaults or a preset.
    seed : int
        Seeds the initial weights, the hash functions and every sample's random padding.
    threads : int
        Worker threads (0: every usable core, up to Numba's pool).

    Raises
    ------
    ConfigError
        A key has an invalid value.
    ResourceError
        The estimated memory exceeds what is available or ``SLIDE_MEMORY_LIMIT_MB`` (the smaller;
        :func:`slide.resources.memory_limit_bytes`).
    """

    DEFAULTS = DEFAULTS
    PRESETS = PRESETS
    name = "slide"

    def __init__(self, num_features, num_labels, config, seed=0, threads=0):
        config = validate(dict(config))
        if threads is None or threads <= 0:
            threads = available_cores()
        threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
        super().__init__(num_features, num_labels, config, seed=seed, threads=threads)
        if self.num_features < 1 or self.num_labels < 1:
            raise ConfigError(f"need at least one feature and one label, got {num_features} x {num_labels}")
        self.dims = np.asarray(config["hidden"], dtype=np.int64)
        self.sampled = config["output_sparsity"] < 1.0
        self.hidden_sparsity = list(config["hidden_sparsity"])
        self.hidden_sampled = any(v < 1.0 for v in self.hidden_sparsity)
        self._check_memory()
        self._init_parameters()
        self._init_sampling()
        self._init_hidden_sampling()
        self._alloc_scratch()
        self._group_kernel_arrays()
        self.schedule = Schedule(config["schedule"], config["rehash_every"], config["rebuild_every"],
                                 config["decay"], config["decay_start"])
        self.step = 0
        self.samples = 0
        self.active_sum = 0.0
        self.active_count = 0
        self.rehash_seconds = 0.0
        #: Seconds in the forward-backward kernel and in Adam (not saved), for ``slide bench``'s phases (a
        #: row-pass step under the sparse optimizer updates the output layer in its forward-backward).
        self.phase_seconds = {"forward_backward": 0.0, "adam": 0.0}
        #: The forward-backward seconds of row-pass steps, by phase (:data:`~slide.engine.grouped.ROW_PHASES`).
        self.row_phase_seconds = dict.fromkeys(grouped.ROW_PHASES, 0.0)
        self.rehash_count = 0
        self.rebuild_count = 0
        self.build_seconds = 0.0
        self.touched_sum = 0.0
        #: Running counts for the byte accounting of ``slide bench`` (see :meth:`traffic`).
        self._traffic = dict.fromkeys(TRAFFIC_KEYS, 0)
        t0 = time.perf_counter()
        if self.sampled:
            self.index.build(self.W2)
        self._build_hidden_indices(None)
        self.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ set-up
    def _lsh_kwargs(self, seed):
        c = self.config
        return dict(bucket_size=c["bucket_size"], insertion=c["insertion"], seed=seed, bin_size=c["bin_size"],
                    topk_minhash=c["topk_minhash"])

    def estimate_memory_bytes(self) -> int:
        """Weights, biases, Adam m and v, gradient buffers, LSH tables, scratch and scoring buffers."""
        return memory_estimate_bytes(self.num_features, self.num_labels, self.config, self.threads)

    def _check_memory(self) -> None:
        need = self.estimate_memory_bytes()
        limit, source = memory_limit_bytes()
        if need > limit:
            raise ResourceError(
                f"SLIDE needs about {need / 2**20:,.0f} MiB for {self.num_features:,} features x "
                f"{self.num_labels:,} labels (hidden {[int(h) for h in self.dims]}: weights, Adam state, gradients, "
                f"hash tables), more than the {limit / 2**20:,.0f} MiB of {source}; "
                f"reduce hidden, K/L or bucket_size, or raise the limit")

    def _init_parameters(self) -> None:
        c = self.config
        dims = [int(h) for h in self.dims]
        d, L = self.num_features, self.num_labels
        glorot = c["init"] == "glorot"
        rows_dtype = STORAGE[c["precision"]]  # of W0 and W2 and their Adam moments

        def init(tag, shape, fan_in, fan_out, dtype=FLOAT):
            out = np.empty(shape, dtype=dtype)
            if glorot:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                _fill_random(out, (self.seed, 0x51DE, tag), "uniform", 2 * limit, -limit, self.threads)
            else:
                _fill_random(out, (self.seed, 0x51DE, tag), "normal", c["init_scale"], 0.0, self.threads)
            return out

        def bias(tag, n):
            return np.zeros(n, dtype=FLOAT) if glorot else init(tag, (n,), 1, 1)

        self.W0 = init(0, (d, dims[0]), d, dims[0], rows_dtype)
        self.b0 = bias(1, dims[0])
        blocks, biases = [], []
        for i in range(1, len(dims)):
            blocks.append(init(2 * i, (dims[i] * dims[i - 1],), dims[i - 1], dims[i]))
            biases.append(bias(2 * i + 1, dims[i]))
        self.Wh = np.concatenate(blocks) if blocks else np.zeros(0, dtype=FLOAT)
        self.bh = np.concatenate(biases) if biases else np.zeros(0, dtype=FLOAT)
        self.W2 = init(1000, (L, dims[-1]), dims[-1], L, rows_dtype)
        self.b2 = bias(1001, L)
        for name in ("W0", "b0", "Wh", "bh", "W2", "b2"):
            p = getattr(self, name)
            for prefix in ("m", "v", "g"):
                # written now, in order: first touches scattered over training steps cost far more
                setattr(self, prefix + name, _zeros(p.shape, self.threads, FLOAT if prefix == "g" else p.dtype))
        self.flag0 = np.zeros(d, dtype=np.uint8)
        self.flag2 = np.zeros(L, dtype=np.uint8)
        self.rows0 = np.empty(d, dtype=np.int64)
        self.rows2 = np.empty(L, dtype=np.int64)

    def _init_sampling(self) -> None:
        c = self.config
        L = self.num_labels
        target = max(1, int(math.ceil(c["output_sparsity"] * L)))
        self.k_or_t = 0
        self.mode = 0
        self.index = None
        self.qcount = self.logq = np.zeros(0, dtype=FLOAT)  # no sampling correction
        self.q_samples = 0.0
        if not self.sampled:
            self.min_active = self.min_trigger = L
            return
        tables, sampling = _lsh_modules()
        self.mode = int(sampling.mode_code(c["sampling"]))
        if c["sampling"] == "topk":
            self.k_or_t = target
        elif c["sampling"] == "threshold":
            self.k_or_t = int(c["threshold"])
        self.min_active = min(L, target if c["min_active"] is None else c["min_active"])
        cap = max(1, int(math.ceil((c["output_sparsity"] if c["pad_cap"] is None else c["pad_cap"]) * L)))
        if self.min_active > cap:
            warnings.warn(f"min_active={self.min_active} is {self.min_active / L:.1%} of the {L:,} labels; padding "
                          f"capped at {cap:,} (pad_cap={c['pad_cap'] or c['output_sparsity']:g} of the labels; "
                          f"set pad_cap to change it)", ConfigWarning, stacklevel=3)
            self.min_active = cap
        self.min_trigger = self.min_active if c["min_active_trigger"] is None else c["min_active_trigger"]
        if c["correction"] == "logq":
            self.q_prior = min(1.0, self.min_active / L)
            self.qcount = np.zeros(L, dtype=FLOAT)
            self.logq = np.full(L, math.log(self.q_prior), dtype=FLOAT)
        self.index = tables.LSHIndex(c["hash"], int(self.dims[-1]), L, c["K"], c["L"], **self._lsh_kwargs(self._lsh_seed(0)))

    def _hidden_weights(self, layer):
        """Layer ``layer``'s neuron weight vectors, one contiguous row per neuron (bfloat16 patterns for
        the first layer with ``precision: bf16``, which :class:`~.tables.LSHIndex` decodes row by row)."""
        if layer == 0:
            return np.ascontiguousarray(self.W0.T)
        dims = [int(h) for h in self.dims]
        woff = sum(dims[i] * dims[i - 1] for i in range(1, layer))
        return self.Wh[woff:woff + dims[layer] * dims[layer - 1]].reshape(dims[layer], dims[layer - 1])

    def _init_hidden_sampling(self) -> None:
        c = self.config
        dims = [int(h) for h in self.dims]
        nl = len(dims)
        self.hidden_indices = []      # (layer, LSHIndex) of the sampled hidden layers
        self.hslot = np.full(nl, -1, dtype=np.int64)
        self.hk = np.zeros(nl, dtype=np.int64)
        if not self.hidden_sampled:
            return
        if sum(v < 1.0 for v in self.hidden_sparsity) > MAX_SAMPLED_HIDDEN:
            raise ConfigError(f"hidden_sparsity: at most {MAX_SAMPLED_HIDDEN} hidden layers can be sampled")
        tables, _ = _lsh_modules()
        for layer, frac in enumerate(self.hidden_sparsity):
            self.hk[layer] = max(1, min(dims[layer], int(math.ceil(frac * dims[layer]))))
            if frac >= 1.0:
                continue
            dim = self.num_features if layer == 0 else dims[layer - 1]
            self.hslot[layer] = len(self.hidden_indices)
            index = tables.LSHIndex(c["hash"], dim, dims[layer], c["K"], c["L"],
                                    **self._lsh_kwargs(self._lsh_seed(0, layer + 1)))
            self.hidden_indices.append((layer, index))

    def _build_hidden_indices(self, rebuilds) -> None:
        """Rehash (``rebuilds`` None) or rebuild with new hash functions every hidden index."""
        for layer, index in self.hidden_indices:
            if rebuilds is None:
                index.build(self._hidden_weights(layer))
            else:
                index.rebuild(self._hidden_weights(layer), self._lsh_seed(rebuilds, layer + 1))

    def hidden_active_masks(self, data, rows) -> np.ndarray:
        """The hidden neurons the next training step computes for the batch ``rows``:
        ``(len(rows), sum(hidden))`` bool (all True for dense layers). For checks and tests."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        masks = np.zeros((rows.shape[0], int(self.dims.sum())), dtype=np.uint8)
        if not self.hidden_sampled:
            masks[:] = 1
        else:
            net.hidden_masks(data.x_indptr, data.x_indices, data.x_data, rows, self.W0, self.b0, self.Wh,
                             self.bh, self.dims, self._hlsh, self.hslot, self.hk, self.seed, self.step,
                             masks)
        return masks.astype(bool)

    def _lsh_seed(self, rebuilds: int, layer: int = 0) -> int:
        if layer:
            return int(np.random.default_rng([self.seed, 0x1F5, rebuilds, layer]).integers(2**31 - 1))
        return int(np.random.default_rng([self.seed, 0x1F5, rebuilds]).integers(2**31 - 1))

    def _alloc_scratch(self) -> None:
        T, L = self.threads, self.num_labels  # one row per Numba thread id (< self.threads)
        total = int(self.dims.sum())
        self.stamp = np.zeros((T, L), dtype=net.STAMP)
        self.counts = np.zeros((T, L), dtype=np.int32)
        self.stamp_values = np.zeros(T, dtype=np.int64)
        self.active = np.empty((T, L), dtype=np.int32)
        if not self.sampled:
            self.active[:] = np.arange(L, dtype=np.int32)
        self.tgt = np.zeros((T, L), dtype=np.uint8)
        self.logits = np.empty((T, L), dtype=FLOAT)
        self.acts = np.zeros((T, total), dtype=FLOAT)
        self.dacts = np.zeros((T, total), dtype=FLOAT)
        self.gb0_t = np.zeros((T, self.b0.shape[0]), dtype=FLOAT)
        self.gWh_t = np.zeros((T, self.Wh.shape[0]), dtype=FLOAT)
        self.gbh_t = np.zeros((T, self.bh.shape[0]), dtype=FLOAT)
        self.gb2_t = np.zeros((T, L), dtype=FLOAT)
        hmax = int(self.dims.max()) if self.hidden_sampled else 1
        nl = int(self.dims.shape[0])
        self.hstamp = np.zeros((T, hmax), dtype=net.STAMP)
        self.hcounts = np.zeros((T, hmax), dtype=np.int32)
        self.hact = np.zeros((T, nl, hmax), dtype=np.int32)
        self.hn = np.zeros((T, nl), dtype=np.int64)
        self.hsv = np.zeros(T, dtype=np.int64)
        self._grouped = None  # the row pass's buffers (slide/engine/grouped.py), sized by its first batch

    def _group_kernel_arrays(self) -> None:
        """The named tuples of :mod:`slide.engine.network` the training kernels take, built once (every
        array, the hash tables' included, is updated in place from here on): ``_params`` (``W0``, ``b0``,
        ``Wh``, ``bh``, ``W2``, ``b2`` with their Adam state and gradients), ``_lsh`` (None: full softmax),
        ``_selection``, ``_scratch``, and ``_hs`` / ``_hlsh`` (None and four Nones when every hidden
        layer is dense)."""
        def state(name):
            return (getattr(self, name), *(getattr(self, prefix + name) for prefix in "mvg"))

        self._params = (net.RowParam(*state("W0"), self.flag0, self.rows0),
                        net.SumParam(*state("b0"), self.gb0_t), net.SumParam(*state("Wh"), self.gWh_t),
                        net.SumParam(*state("bh"), self.gbh_t),
                        net.RowParam(*state("W2"), self.flag2, self.rows2), net.SumParam(*state("b2"), self.gb2_t))
        self._lsh = self.index.arrays if self.sampled else None
        self._selection = net.Selection(self.mode, self.k_or_t, self.min_active, self.min_trigger, self.logq,
                                        self.qcount)
        self._scratch = net.Scratch(self.stamp, self.counts, self.stamp_values, self.active, self.tgt, self.logits,
                                    self.acts, self.dacts)
        self._hs, self._hlsh = None, (None,) * MAX_SAMPLED_HIDDEN
        if self.hidden_sampled:
            self._hs = net.HiddenSampling(self.hslot, self.hk, self.hstamp, self.hcounts, self.hact, self.hn, self.hsv)
            arrays = [index.arrays for _, index in self.hidden_indices]
            self._hlsh = tuple(arrays + [arrays[0]] * (MAX_SAMPLED_HIDDEN - len(arrays)))

    def _numba_threads(self):
        return numba_threads(self.threads)

    # ------------------------------------------------------------------ training
    def _accumulate(self, data, rows):
        """Forward and backward of the batch into the gradient buffers; per-sample losses and
        active counts. (The first half of :meth:`train_batch` without its Adam step, for the tests.)"""
        return self._forward_backward(data, rows, None)[:2]

    def _forward_backward(self, data, rows, hyper):
        """Forward and backward of the batch; per-sample losses, active counts and the output and
        input rows the row pass touched, a pair ((0, 0) for the sample pass; input rows only with
        ``hyper``). With ``hyper`` the row pass takes those rows' Adam step itself
        (:func:`slide.engine.grouped.train_grouped`) instead of leaving their gradients to
        :meth:`_apply_adam`."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        nb = rows.shape[0]
        losses = np.zeros(nb, dtype=np.float64)
        nactive = np.zeros(nb, dtype=np.int64)
        by_row = (0, 0)
        with self._numba_threads():
            old = numba.set_parallel_chunksize(SAMPLE_CHUNK)
            try:
                batch = net.Batch(data.x_indptr, data.x_indices, data.x_data, data.y_indptr, data.y_indices, rows)
                args = (batch, self.dims, *self._params, self._lsh, self._selection, self._scratch, self._hs,
                        *self._hlsh, self.seed, self.step, losses, nactive)
                if self._row_pass(nb):
                    gr = self._grouped_buffers(data, rows, hyper is not None)
                    by_row = grouped.train_grouped(*args, gr, hyper, clock=self.row_phase_seconds)
                else:
                    net.train_kernel(*args)
            finally:
                numba.set_parallel_chunksize(old)
        return losses, nactive, by_row

    def _row_pass(self, nb: int) -> bool:
        """Whether a batch of ``nb`` samples runs the row pass: as configured, or under ``auto`` once the
        mean active count so far (part of the saved state, so a resumed run chooses alike) times ``nb``
        reaches :data:`AUTO_ROW_SHARE` of the number of labels."""
        choice = self.config["output_pass"]
        if choice != "auto":
            return choice == "row"
        return (self.sampled and self.active_count > 0
                and nb * self.active_sum >= AUTO_ROW_SHARE * self.num_labels * self.active_count)

    def _grouped_buffers(self, data, rows, inputs: bool) -> grouped.Grouped:
        """The row pass's buffers, grown when this batch has more samples or could have more active
        neurons per sample than any before, or (``inputs``: the pass updates the input layer) more
        features."""
        labels = int(row_lengths(data.y_indptr, rows).max(initial=0))
        cap = _active_cap(self.config, self.num_labels, self.min_active, labels)
        features = int(row_lengths(data.x_indptr, rows).sum()) if inputs else 0
        gr = self._grouped
        if gr is None or gr.ids.shape[0] < rows.shape[0] or gr.ids.shape[1] < cap:
            nb = max(rows.shape[0], self.batch_size)
            self._grouped = gr = grouped.grouped_buffers(nb, cap, self.num_labels, self.dims, self.threads,
                                                         self.num_features, features)
        elif gr.inp.ent.shape[0] < features:
            self._grouped = gr = gr._replace(inp=grouped.pairs_buffers(features, self.num_features, self.threads))
        return gr

    def _pending_gradients(self) -> dict:
        """The gradients accumulated since the last Adam step (per-thread parts summed), copies."""
        out = {}
        for name in self._PARAMS:
            g = getattr(self, "g" + name).copy()
            part = {"b0": self.gb0_t, "Wh": self.gWh_t, "bh": self.gbh_t, "b2": self.gb2_t}.get(name)
            if part is not None:
                g += part.sum(axis=0)
            out[name] = g
        return out

    def _hyper(self) -> net.Hyper:
        """The constants of Adam step ``self.step + 1``."""
        t = self.step + 1
        lr = self.config["lr"]
        lr_t = np.float32(lr * math.sqrt(1.0 - ADAM_BETA2 ** t) / (1.0 - ADAM_BETA1 ** t))
        eps_t = np.float32(ADAM_EPS * math.sqrt(1.0 - ADAM_BETA2 ** t))
        return net.Hyper(lr_t, np.float32(ADAM_BETA1), np.float32(ADAM_BETA2), eps_t, net.adam_key(self.seed, t))

    def _apply_adam(self, hyper=None, updated=(0, 0)) -> None:
        """Adam step ``self.step + 1`` (its constants ``hyper``, computed when None) over the touched
        rows (sparse) or every parameter (dense); ``updated``: the output and input rows that already
        took it in the row pass."""
        if hyper is None:
            hyper = self._hyper()
        with self._numba_threads():
            if self.config["optimizer"] == "sparse":
                n0, n2 = net.adam_sparse(*self._params, hyper)
                updated2, updated0 = updated
                self.touched_sum += n2 + updated2
                self._traffic["rows0"] += int(n0) + updated0
                self._traffic["rows2"] += int(n2) + updated2
            else:
                n0, n2 = net.adam_dense(*self._params, hyper)
                self.touched_sum += self.num_labels
                self._traffic["rows0"] += int(n0)
                self._traffic["rows2"] += int(n2)

    def _refresh_tables(self, what: str) -> None:
        t0 = time.perf_counter()
        self._traffic["refreshes"] += 1
        with self._numba_threads():
            if what == REBUILD:
                self.rebuild_count += 1
                if self.sampled:
                    self.index.rebuild(self.W2, self._lsh_seed(self.rebuild_count))
                self._build_hidden_indices(self.rebuild_count)
            else:
                self.rehash_count += 1
                if self.sampled:
                    self.index.build(self.W2)
                self._build_hidden_indices(None)
        self.rehash_seconds += time.perf_counter() - t0

    def train_batch(self, data, rows) -> float:
        """One HOGWILD step on points ``rows`` of ``data``: forward and backward of every sample in
        parallel, Adam, then a rehash or rebuild when the schedule says so. Returns the mean loss
        (NaN or inf when training diverged)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._check_data(data)
        if rows.shape[0] == 0:
            return 0.0
        t0 = time.perf_counter()
        sparse = self.config["optimizer"] == "sparse"
        hyper = self._hyper()
        losses, nactive, by_row = self._forward_backward(data, rows, hyper if sparse else None)
        t1 = time.perf_counter()
        self._apply_adam(hyper, by_row if sparse else (0, 0))
        self.phase_seconds["forward_backward"] += t1 - t0
        self.phase_seconds["adam"] += time.perf_counter() - t1
        before = self.samples
        self.step += 1
        self.samples += int(rows.shape[0])
        self.active_sum += float(nactive.sum())
        self.active_count += int(rows.shape[0])
        self._count_traffic(data, rows, nactive, by_row)
        if self.logq.shape[0]:
            self.q_samples += rows.shape[0]
            if self.step % LOGQ_EVERY == 0:
                self._update_logq()
        if self.sampled or self.hidden_sampled:
            what = self.schedule.after_step(self.step, before, self.samples)
            if what is not None:
                self._refresh_tables(what)
        return float(losses.mean())

    def _count_traffic(self, data, rows, nactive, by_row) -> None:
        """Add one step's counts to :meth:`traffic` (a few NumPy operations on the batch's rows only);
        ``by_row``: the output and input rows of a row-pass step ((0, 0): the step ran by sample; 0
        input rows: it left the input layer to Adam)."""
        t = self._traffic
        t["batches"] += 1
        t["samples"] += int(rows.shape[0])
        features = int(row_lengths(data.x_indptr, rows).sum())
        t["features"] += features
        t["labels"] += int(row_lengths(data.y_indptr, rows).sum())
        t["active"] += int(nactive.sum())
        rows2, rows0 = by_row
        if rows2:
            t["row_batches"] += 1
            t["row_active"] += int(nactive.sum())
            t["row_rows2"] += rows2
        if rows0:
            t["row_features"] += features
            t["row_rows0"] += rows0

    def traffic(self) -> dict:
        """The running counts of :data:`TRAFFIC_KEYS` since this object was made (not saved with the
        state). :func:`slide.bandwidth.slide_bytes` turns the difference of two snapshots into bytes."""
        return dict(self._traffic)

    def bytes_moved(self, data, counts) -> dict:
        """Bytes the training steps of ``counts`` (a difference of :meth:`traffic` snapshots) read and
        wrote, by part and, under ``by_phase``, the floor's bytes by phase
        (:func:`slide.bandwidth.slide_bytes`)."""
        from ..bandwidth import slide_bytes

        return slide_bytes(self, data, counts)

    def rows_floor(self, counts) -> dict | None:
        """:func:`slide.bandwidth.measure_rows` of ``W2`` and its Adam moments at the mean number of
        distinct output rows a step of ``counts`` (as :meth:`bytes_moved`) updated; None for none."""
        from ..bandwidth import measure_rows

        rows = round(int(counts["rows2"]) / max(int(counts["batches"]), 1))
        return measure_rows((self.W2, self.mW2, self.vW2), rows, self.threads) if rows else None

    def _update_logq(self) -> None:
        """Re-estimate each label's probability of being a sampled negative from the counts since the
        last update plus half of the older ones (a running window of about 2 x ``LOGQ_EVERY`` steps, since
        retrieval follows the changing weights), smoothed towards ``min_active / labels`` by one batch."""
        prior = float(self.config["batch_size"])
        q = (self.qcount + prior * self.q_prior) / (self.q_samples + prior)
        np.log(np.minimum(q, 1.0), out=self.logq)
        self.qcount *= 0.5
        self.q_samples *= 0.5

    def table_refreshes(self) -> int | None:
        if not (self.sampled or self.hidden_sampled):
            return None
        return self.rehash_count + self.rebuild_count

    def warm_up(self, data, rows) -> None:
        """Compile every kernel a run calls, on a tiny twin, so the training clock never pays for JIT.

        The twin has this model's configuration and threads but 64 features and 64 labels, so its
        kernels have the same Numba signatures as this model's (table layout, hash kind and
        sampling mode are run-time values); it trains, rehashes, rebuilds and predicts in both
        inference modes. This model's state is not touched and nothing large is allocated.
        """
        from .schedule import REHASH

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            twin = SlideMethod(_TWIN_SIZE, _TWIN_SIZE, dict(self.config), seed=self.seed, threads=self.threads)
        tiny = _twin_data(_TWIN_SIZE, _TWIN_SIZE)
        twin_rows = np.arange(len(tiny), dtype=np.int64)
        twin.train_batch(tiny, twin_rows)
        if twin.sampled and twin.config["output_pass"] == "auto":  # the first batch ran by sample
            twin.config["output_pass"] = "row"
            twin.train_batch(tiny, twin_rows)
        twin._refresh_tables(REHASH)
        twin._refresh_tables(REBUILD)
        for mode in INFERENCES:
            twin.config["inference"] = mode
            twin.predict_topk(tiny, twin_rows, 5)

    def _check_data(self, data) -> None:
        # the kernels index weights with the data's ids unchecked: refuse other dimensions
        if (data.num_features, data.num_labels) != (self.num_features, self.num_labels):
            raise ValueError(f"data has {data.num_features} features x {data.num_labels} labels, the model "
                             f"{self.num_features} x {self.num_labels}")

    # ------------------------------------------------------------------ inference
    def hidden(self, data, rows) -> np.ndarray:
        """Last hidden layer's activations of ``rows``: ``(len(rows), H)`` float32."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.empty((rows.shape[0], int(self.dims[-1])), dtype=FLOAT)
        scratch = np.empty((self.threads, int(self.dims.sum())), dtype=FLOAT)
        with self._numba_threads():
            net.hidden_rows(data.x_indptr, data.x_indices, data.x_data, rows, self.W0, self.b0, self.Wh,
                            self.bh, self.dims, scratch, out)
        return out

    def predict_topk(self, data, rows, k: int = 5) -> np.ndarray:
        """The ``k`` best labels per point of ``rows``, best first: ``(len(rows), k)`` int64.

        ``inference: dense`` scores every label exactly (ties: lowest id first); ``sparse``
        ranks only the labels the hash tables retrieve for the point.
        """
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._check_data(data)
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if rows.shape[0] == 0:
            return np.zeros((0, k), dtype=np.int64)
        if self.config["inference"] == "sparse" and self.sampled:
            return self._predict_sparse(data, rows, k)
        return self._predict_dense(data, rows, k)

    def _predict_sparse(self, data, rows, k):
        out = np.empty((rows.shape[0], k), dtype=np.int64)
        T, L = self.threads, self.num_labels
        stamp = np.zeros((T, L), dtype=net.STAMP)
        counts = np.zeros((T, L), dtype=np.int32)
        active = np.empty((T, L), dtype=np.int32)
        acts = np.zeros((T, int(self.dims.sum())), dtype=FLOAT)
        with self._numba_threads():
            net.sparse_predict(data.x_indptr, data.x_indices, data.x_data, rows, self.W0, self.b0, self.Wh,
                               self.bh, self.dims, self.W2, self.b2, self.index.arrays, self.mode, self.k_or_t,
                               self.min_active, self.min_trigger, stamp, counts, np.zeros(T, dtype=np.int64),
                               active, acts, self.seed, out)
        return out

    def _predict_dense(self, data, rows, k):
        kk = min(k, self.num_labels)
        idx = np.empty((rows.shape[0], kk), dtype=np.int64)
        for s0 in range(0, rows.shape[0], SCORE_POINTS):
            h = self.hidden(data, rows[s0:s0 + SCORE_POINTS])
            with self._numba_threads():
                idx[s0:s0 + SCORE_POINTS] = scoring.exact_topk(h, self.W2, self.b2, kk)
        if kk < k:  # fewer labels than k: repeat the last one
            idx = np.concatenate([idx, np.repeat(idx[:, -1:], k - kk, axis=1)], axis=1)
        return idx

    # ------------------------------------------------------------------ reporting and state
    def stats(self) -> dict:
        cnt = max(self.active_count, 1)
        return {
            "active_per_sample_mean": (self.active_sum / cnt) if self.active_count else None,
            # to the microsecond: bench takes differences of these running totals over its window
            "rehash_seconds": round(self.rehash_seconds, 6),
            "forward_backward_seconds": round(self.phase_seconds["forward_backward"], 6),
            "adam_seconds": round(self.phase_seconds["adam"], 6),
            **{f"row_{k}_seconds": round(v, 6) for k, v in self.row_phase_seconds.items()},
            "rehash_count": int(self.rehash_count),
            "rebuild_count": int(self.rebuild_count),
            "initial_build_seconds": round(self.build_seconds, 4),
            "touched_output_rows_per_step": (self.touched_sum / self.step) if self.step else None,
            "lsh_memory_mb": round(((self.index.memory_bytes() if self.sampled else 0)
                                    + sum(ix.memory_bytes() for _, ix in self.hidden_indices)) / 2**20, 1),
            "estimated_memory_mb": round(self.estimate_memory_bytes() / 2**20, 1),
        }

    _PARAMS = ("W0", "b0", "Wh", "bh", "W2", "b2")

    def state_arrays(self) -> dict:
        out = {}
        for name in self._PARAMS:
            out[name] = getattr(self, name)
            out["adam_m__" + name] = getattr(self, "m" + name)
            out["adam_v__" + name] = getattr(self, "v" + name)
        out["counters__int"] = np.array([self.step, self.samples, self.active_count, self.rehash_count,
                                         self.rebuild_count], dtype=np.int64)
        out["counters__float"] = np.array([self.active_sum, self.rehash_seconds, self.build_seconds,
                                           self.touched_sum], dtype=np.float64)
        out.update(self.schedule.state_arrays())
        if self.logq.shape[0]:
            out["logq"], out["logq_counts"] = self.logq, self.qcount
            out["logq_samples"] = np.array([self.q_samples], dtype=np.float64)
        if self.sampled:
            for key, value in self.index.state_arrays().items():
                out[_LSH_PREFIX + key] = value
        for layer, index in self.hidden_indices:
            for key, value in index.state_arrays().items():
                out[f"{_LSH_HIDDEN_PREFIX}{layer}__{key}"] = value
        return out

    def load_state_arrays(self, arrays) -> None:
        """Restore :meth:`state_arrays` (a dict, or any mapping such as an open ``NpzFile``)."""
        for name in self._PARAMS:
            for prefix, attr in (("", name), ("adam_m__", "m" + name), ("adam_v__", "v" + name)):
                key = prefix + name
                if key not in arrays:
                    raise ConfigError(f"model state lacks {key!r}")
                cur = getattr(self, attr)
                arr = np.asarray(arrays[key])
                if arr.shape != cur.shape:
                    raise ConfigError(f"model state {key!r} has shape {arr.shape}, expected {cur.shape}")
                if (arr.dtype == BF16) != (cur.dtype == BF16):
                    saved = "bf16" if arr.dtype == BF16 else "fp32"
                    raise ConfigError(f"model state {key!r} was saved with precision: {saved}, this model has "
                                      f"precision: {self.config['precision']}; load it with precision: {saved}")
                # into the existing buffers: given a lazy mapping (an open NpzFile), only one array
                # at a time is held twice
                np.copyto(cur, arr, casting="same_kind")
                del arr
        ints = arrays["counters__int"]
        self.step, self.samples, self.active_count, self.rehash_count, self.rebuild_count = (int(v) for v in ints)
        floats = arrays["counters__float"]
        self.active_sum, self.rehash_seconds, self.build_seconds, self.touched_sum = (float(v) for v in floats)
        self.schedule.load_state_arrays(arrays)
        if self.logq.shape[0]:
            for key, cur in (("logq", self.logq), ("logq_counts", self.qcount)):
                if key not in arrays:
                    raise ConfigError(f"model state lacks {key!r} (saved without correction: logq?)")
                np.copyto(cur, np.asarray(arrays[key]), casting="same_kind")
            self.q_samples = float(np.asarray(arrays["logq_samples"])[0])
        if self.sampled:
            self.index.load_state_arrays({k[len(_LSH_PREFIX):]: arrays[k] for k in arrays.keys()
                                          if k.startswith(_LSH_PREFIX)})
        for layer, index in self.hidden_indices:
            prefix = f"{_LSH_HIDDEN_PREFIX}{layer}__"
            part = {k[len(prefix):]: arrays[k] for k in arrays.keys() if k.startswith(prefix)}
            if not part:
                raise ConfigError(f"model state lacks the hash tables of hidden layer {layer}")
            index.load_state_arrays(part)
        for g in ("gW0", "gb0", "gWh", "gbh", "gW2", "gb2", "gb0_t", "gWh_t", "gbh_t", "gb2_t"):
            getattr(self, g).fill(0)
        self.flag0.fill(0)
        self.flag2.fill(0)


# ---------------------------------------------------------------------- memory estimate
#: Labels per point, and non-zero features per point on average over a batch, that
#: :func:`memory_estimate_bytes` allows for in the row pass's buffers.
_LABELS_BOUND = 1024
_FEATURES_BOUND = 1024


def _active_cap(config, num_labels: int, min_active: int, labels: int) -> int:
    """Most active output neurons a sample with ``labels`` labels can get: its labels, the union of
    ``L`` buckets and the random padding up to ``min_active``, at most every label."""
    return int(min(num_labels, labels + config["L"] * config["bucket_size"] + min_active))


def _index_bytes(config, n: int, dim: int) -> int:
    """Bytes of one :class:`slide.engine.tables.LSHIndex` over ``n`` vectors of ``dim`` plus the
    slot map and key buffer its first build allocates and keeps."""
    from .hashing import code_bits
    from .tables import chunk_rows

    c = config
    K, L = c["K"], c["L"]
    bits = code_bits(c["hash"], c["bin_size"])
    hashed = max(16, 1 << (2 * n - 1).bit_length())
    direct = K * bits <= hashed.bit_length() - 1
    slots = (1 << (K * bits)) if direct else hashed
    tables = L * (4 * (slots + 1) + (0 if direct else 8 * slots) + 4 * min(n, slots * c["bucket_size"]))
    params = dim * K * L * (1 if c["hash"] == "simhash" else 0) + 8 * (dim + 1) + 8 * K * L * c["bin_size"]
    return int(tables + params + 4 * L * n + 8 * L * chunk_rows(n, L, direct))


def memory_estimate_bytes(num_features: int, num_labels: int, config: dict, threads: int) -> int:
    """Bytes a :class:`SlideMethod` of this shape and validated ``config`` will hold, computed before
    anything is allocated: parameters with Adam m, v and gradients (the weights and moments of
    ``W0`` and ``W2`` at 2 bytes with ``precision: bf16``), flags, scratch, scoring buffers and the
    hash tables of the output layer and of any sampled hidden layer (and, unless ``output_pass: sample``,
    the per-batch buffers of :mod:`slide.engine.grouped`)."""
    d, L = int(num_features), int(num_labels)
    dims = [int(h) for h in config["hidden"]]
    hidden = sum(dims[i] * dims[i - 1] for i in range(1, len(dims))) + sum(dims[1:])
    params = d * dims[0] + dims[0] + hidden + L * dims[-1] + L
    per_param = 4 * 4                       # weight, m, v, gradient (float32)
    rows = d * dims[0] + L * dims[-1]       # of W0 and W2, whose weight, m, v take the storage precision
    per_row_param = 3 * STORAGE[config["precision"]].itemsize + 4
    flags = d + L
    index_buffers = 8 * (d + L)
    per_label = 4 * 4 + net.STAMP.itemsize + 1  # counts, active, logits, gb2_t; the stamp; the label mark
    scratch = threads * (per_label * L + 4 * 8 * sum(dims) + 4 * (dims[0] + hidden + sum(dims)))
    score_buffers = scoring.scratch_bytes(threads, dims[-1]) + 4 * SCORE_POINTS * dims[-1]
    lsh = _index_bytes(config, L, dims[-1]) if config["output_sparsity"] < 1.0 else 0
    for layer, frac in enumerate(config["hidden_sparsity"]):
        if frac < 1.0:
            lsh += _index_bytes(config, dims[layer], d if layer == 0 else dims[layer - 1])
    if config["output_pass"] != "sample" and config["output_sparsity"] < 1.0:
        min_active = config["min_active"] or int(math.ceil(config["output_sparsity"] * L))
        cap = _active_cap(config, L, min_active, _LABELS_BOUND)
        features = config["batch_size"] * _FEATURES_BOUND if config["optimizer"] == "sparse" else 0
        scratch += grouped.grouped_bytes(config["batch_size"], cap, L, dims, threads, d, features)
    return int((params - rows) * per_param + rows * per_row_param + flags + index_buffers + scratch + score_buffers
               + lsh)


# ---------------------------------------------------------------------- warm-up twin
#: Features and labels of the twin that :meth:`SlideMethod.warm_up` compiles the kernels on.
_TWIN_SIZE = 64


def _twin_data(num_features: int, num_labels: int, points: int = 16):
    """A tiny dataset with the dtypes of real data: 4 features and 2 labels per point."""
    from ..data.dataset import XCDataset

    i = np.arange(points, dtype=np.int64)[:, None]
    x = np.sort((i * 5 + np.arange(4) * 13) % num_features, axis=1)
    y = np.sort((i * 3 + np.arange(2) * 29) % num_labels, axis=1)
    x_data = np.full(x.size, 0.5, dtype=FLOAT)
    return XCDataset(np.arange(0, x.size + 1, 4, dtype=np.int64), x.ravel().astype(np.int32), x_data,
                     np.arange(0, y.size + 1, 2, dtype=np.int64), y.ravel().astype(np.int32),
                     num_features, num_labels)


# ---------------------------------------------------------------------- initialisation
_INIT_CHUNK = 1 << 22


def _fill_random(out, key, kind, scale, shift, threads):
    """Fill ``out`` with ``shift + scale * N(0, 1)`` (``normal``) or ``shift + scale * U[0, 1)``.

    Chunks of 4 Mi entries draw from their own generator seeded by ``(*key, chunk)``, so the result
    depends on the key only, never on ``threads`` (chunks are filled concurrently). A bfloat16
    ``out`` (uint16) gets the float32 values of the same key, rounded (:func:`~.precision.to_bf16`).
    """
    flat = out.reshape(-1)
    starts = range(0, flat.shape[0], _INIT_CHUNK)

    def one(i0):
        part = flat[i0:i0 + _INIT_CHUNK]
        draw = part if part.dtype == FLOAT else np.empty(part.shape, dtype=FLOAT)
        rng = np.random.default_rng([*key, i0 // _INIT_CHUNK])
        if kind == "normal":
            rng.standard_normal(out=draw, dtype=np.float32)
        else:
            rng.random(out=draw, dtype=np.float32)
        draw *= np.float32(scale)
        if shift:
            draw += np.float32(shift)
        if draw is not part:
            part[:] = to_bf16(draw)

    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, starts))
    else:
        for i0 in starts:
            one(i0)


def _zeros(shape, threads, dtype=FLOAT):
    """A zero array whose pages are all written now, in order, by ``threads`` threads."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    starts = range(0, flat.shape[0], _INIT_CHUNK)

    def one(i0):
        flat[i0:i0 + _INIT_CHUNK].fill(0)

    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, starts))
    else:
        out.fill(0)
    return out


# ---------------------------------------------------------------------- evaluation benchmark
def bench_predict(like: str = "amazon-670k", *, scale: float = 1.0, seed: int = 0, steps: int = 50,
                  points: int | None = None, threads: int = 0, root="data", inference=("dense", "sparse"),
                  overrides: dict | None = None) -> dict:
    """Time :meth:`SlideMethod.predict_topk` (k=5) on the test set of a synthetic stand-in.

    The ``like`` preset is trained for ``steps`` batches on the cached stand-in
    (``<root>/bench/<like>-s<scale>-seed<seed>``, generated when absent), then ranks the first
    ``points`` test points (default: all) once per ``inference`` mode. Returns seconds per mode,
    the point count, the hidden activations' non-zero share and the peak RSS. Example::

        python -c "from slide.engine.model import bench_predict; print(bench_predict(threads=2))"
    """
    from ..data import load_xc
    from ..data.synth import SYNTH_TEST_FILE, SYNTH_TRAIN_FILE, bench_dir, ensure_synth
    from ..metrics import evaluate_topk
    from ..runs import peak_rss_mb
    from ..settings import set_threads
    from ..training import epoch_order

    folder = bench_dir(like, scale, seed, root)
    ensure_synth(folder, like, scale, seed)
    train_data, test_data = load_xc(folder / SYNTH_TRAIN_FILE), load_xc(folder / SYNTH_TEST_FILE)
    model = SlideMethod.from_config(train_data.num_features, train_data.num_labels, preset=like,
                                    overrides=overrides, seed=seed, threads=set_threads(threads))
    order = epoch_order(len(train_data), seed, 0)
    bs = model.batch_size
    for s in range(steps):
        model.train_batch(train_data, order[(s * bs) % len(train_data):][:bs])
    n = len(test_data) if points is None else min(int(points), len(test_data))
    rows = np.arange(n, dtype=np.int64)
    out = {"like": like, "points": n, "labels": test_data.num_labels, "threads": model.threads, "steps": steps,
           "hidden_nonzero": float((model.hidden(test_data, rows[:4096]) > 0).mean())}
    for mode in inference:
        model.config["inference"] = mode
        model.predict_topk(test_data, rows[:256])  # JIT warm-up
        t0 = time.perf_counter()
        pred = model.predict_topk(test_data, rows)
        out[f"{mode}_seconds"] = round(time.perf_counter() - t0, 3)
        out[f"{mode}_p_at_1"] = evaluate_topk(pred, test_data, rows)["p_at_1"]
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out
