"""The PyTorch baselines as :class:`slide.adapter.Method` adapters.

Four concrete classes, one per method name recorded in ``run.json``::

    torch-full-cpu   torch-full-gpu   torch-sampled-cpu   torch-sampled-gpu

(:func:`method_class` picks one from ``loss`` and ``device``). The loss and the device are part of
the class, not of the configuration, so :meth:`~slide.adapter.PersistentMixin.load` rebuilds the
right one. A training step is: NumPy CSR slicing of the batch -> (pinned, non-blocking on a GPU)
copies to the device -> hidden layers (queued) -> while the device works, NumPy prepares the
targets (and, for sampled softmax, the candidates) -> loss head -> backward -> Adam -> the loss is
read back, which waits for the device: the time of a batch is the time of a finished batch.
"""

from __future__ import annotations

import contextlib

import numpy as np

from baselines import LOSSES, pick_method
from slide.adapter import PAPER_SHARED, Method, PersistentMixin
from slide.errors import ConfigError, ResourceError
from slide.method_registry import method_spec
from slide.metrics import scoring_chunk_rows
from slide.resources import memory_limit_bytes  # one memory rule for every method
from slide.settings import ADAM_BETA1, ADAM_BETA2, ADAM_EPS

from . import model as M
from .device import configure_threads, device_description, device_for, import_torch, synchronize


# Every key, its default and its range: baselines/torch/config.schema.json (shared keys merged in)
_PRESETS = {"delicious-200k": dict(PAPER_SHARED), "amazon-670k": dict(PAPER_SHARED)}


class TorchMethod(PersistentMixin, Method):
    """Base of the PyTorch baselines; use :func:`method_class` or one of the four subclasses."""

    LOSS = "full"
    DEVICE = "cpu"
    DEFAULTS = method_spec("torch-full-cpu").defaults
    PRESETS = _PRESETS

    def __init__(self, num_features, num_labels, config, seed: int = 0, threads: int = 0):
        torch = import_torch()  # ConfigError, one line, when PyTorch is not installed
        threads = configure_threads(threads)
        super().__init__(num_features, num_labels, config, seed=seed, threads=threads)
        self._check_config()
        self.device = device_for(self.DEVICE)  # ConfigError when a GPU is asked for and absent
        self._check_memory()
        torch.manual_seed(self.seed)
        self.step = 0
        self.names, params = M.make_parameters(self.num_features, self.num_labels, self.config["hidden"],
                                               self.seed, self.device)
        self.params = dict(zip(self.names, params))
        self._param_list = params
        self.optimizer = self._make_optimizer(params)
        self._setup_precision()
        self._body, self._head = self._hidden, self._loss_head
        if self.config["compile"]:
            self._body = torch.compile(self._hidden, dynamic=True)
            self._head = torch.compile(self._loss_head, dynamic=True)

    # ------------------------------------------------------------------ configuration
    @property
    def name(self) -> str:
        return f"torch-{self.LOSS}-{self.DEVICE}"

    def _check_config(self) -> None:
        """Types, ranges and choices from the method's schema (one line naming the key), normalised."""
        self.config = method_spec(self.name).check(self.config)

    def hyperparameters(self) -> dict:
        out = dict(self.config)
        out.update(loss=self.LOSS, device=self.DEVICE)
        return out

    def memory_estimate(self) -> dict:
        return M.estimate_memory_bytes(self.num_features, self.num_labels, self.config["hidden"], self.batch_size,
                                       loss=self.LOSS, scoring_rows=scoring_chunk_rows(self.num_labels))

    def estimate_memory_bytes(self) -> int:
        est = self.memory_estimate()
        return est["host"] if self.DEVICE == "cpu" else est["device"]

    def _check_memory(self) -> None:
        """Refuse, one line, before any parameter is allocated (host memory; on a GPU also its free memory)."""
        est = self.memory_estimate()
        shape = f"{self.name} with {self.num_features} features, {self.num_labels} labels and hidden " \
                f"{self.config['hidden']}"
        host = est["host"] if self.device.type == "cpu" else est["host_with_gpu"]
        limit, source = memory_limit_bytes()
        if host > limit:
            raise ResourceError(f"{shape} needs about {host / 2**30:.1f} GiB but {source} is {limit / 2**30:.1f} GiB; "
                                "use a smaller --scale or a machine with more memory")
        if self.device.type == "cuda":
            free, total = import_torch().cuda.mem_get_info(self.device)
            if est["device"] > free:
                raise ResourceError(f"{shape} needs about {est['device'] / 2**30:.1f} GiB of GPU memory but "
                                    f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB are free; use a smaller --scale")

    # ------------------------------------------------------------------ optimiser, precision
    def _make_optimizer(self, params):
        torch = import_torch()
        kw = dict(lr=float(self.config["lr"]), betas=(ADAM_BETA1, ADAM_BETA2), eps=ADAM_EPS)
        try:
            opt = torch.optim.Adam(params, fused=True, **kw)  # one pass over each tensor, CPU and CUDA
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older builds without fused CPU Adam
            opt = torch.optim.Adam(params, foreach=True, **kw)
        # Materialise Adam's state now (a step with zero gradients moves nothing: m = v = 0), so
        # state_arrays/load_state_arrays always find the tensors torch itself created; step back to 0.
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for p in params:
            opt.state[p]["step"].fill_(0)
        return opt

    def _setup_precision(self) -> None:
        torch = import_torch()
        self._scaler = None
        self._amp_dtype = None
        if self.config["amp"]:
            if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                self._amp_dtype = torch.float16
                self._scaler = torch.amp.GradScaler("cuda")
            else:
                self._amp_dtype = torch.bfloat16

    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return import_torch().autocast(device_type=self.device.type, dtype=self._amp_dtype)

    # ------------------------------------------------------------------ batches
    def _to_device(self, array: np.ndarray):
        torch = import_torch()
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _input(self, data, rows):
        row_ids, feats, values, offsets = M.csr_batch(data, rows)
        return tuple(self._to_device(a) for a in (row_ids, feats, values, offsets)) + (len(rows),)

    def _hidden(self, params, batch):
        return M.hidden_output(params, self.config["hidden"], batch, self.config["input"], self.num_features)

    def _targets(self, data, rows):
        return tuple(self._to_device(a) for a in M.full_targets(data, rows))

    def _loss_head(self, params, h, *targets):
        return M.full_softmax_loss(params, h, *targets)

    # ------------------------------------------------------------------ Method interface
    def train_batch(self, data, rows: np.ndarray) -> float:
        rows = np.asarray(rows, dtype=np.int64)
        batch = self._input(data, rows)
        with self._autocast():
            h = self._body(self.params, batch)         # queued on a GPU; NumPy prepares the targets meanwhile
            targets = self._targets(data, rows)
            loss = self._head(self.params, h, *targets)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        value = float(loss.detach())  # waits for the device
        synchronize(self.device)
        return value

    def predict_topk(self, data, rows: np.ndarray, k: int = 5) -> np.ndarray:
        """Top-``k`` labels, best first; among equal scores the lower label id first (as slide.metrics.topk)."""
        torch = import_torch()
        rows = np.asarray(rows, dtype=np.int64)
        k = int(min(k, self.num_labels))
        out = np.empty((len(rows), k), dtype=np.int64)
        chunk = scoring_chunk_rows(self.num_labels)
        p, L = self.params, self.num_labels
        with torch.no_grad(), self._autocast():
            for a in range(0, len(rows), chunk):
                part = rows[a:a + chunk]
                h = self._hidden(p, self._input(data, part))
                z = (h @ p["w_out"][:L].t() + p["b_out"][:L]).float()
                vals, idx = torch.topk(z, k, dim=1, sorted=True)
                # ties: lower label id first -- sort by id, then stably by score
                by_id = torch.argsort(idx, dim=1)
                idx, vals = idx.gather(1, by_id), vals.gather(1, by_id)
                order = torch.sort(vals, dim=1, descending=True, stable=True).indices
                best = idx.gather(1, order).cpu().numpy()
                # rows where the k-th score ties with a score left out: rank them exactly on the host
                kth = vals.min(dim=1, keepdim=True).values
                tie = ((z == kth).sum(dim=1) != (vals == kth).sum(dim=1)).cpu().numpy()
                if tie.any():
                    best[tie] = np.argsort(-z[torch.from_numpy(tie).to(z.device)].cpu().numpy(), axis=1,
                                           kind="stable")[:, :k]
                out[a:a + len(part)] = best
        return out

    def warm_up(self, data, rows: np.ndarray) -> None:
        """One step and one prediction (kernel selection, first touches, torch.compile), then restore.

        The state is snapshotted on the device (clones), so a GPU run does not copy the model
        through host memory; the step counter (which seeds the label and candidate draws) is restored.
        """
        torch = import_torch()
        with torch.no_grad():
            saved = [t.detach().clone() for t in self._state_tensors()]
        step = self.step
        scale = self._scaler.state_dict() if self._scaler is not None else None
        self.train_batch(data, rows)
        if self.config["compile"]:  # a second call: shapes that vary batch to batch compile now, not later
            self.train_batch(data, rows)
        self.predict_topk(data, rows[:8], 5)
        with torch.no_grad():
            for t, s in zip(self._state_tensors(), saved):
                t.copy_(s)
        self.step = step
        if scale is not None:
            self._scaler.load_state_dict(scale)
        synchronize(self.device)

    def stats(self) -> dict:
        return {"active_per_sample_mean": float(self.num_labels), "device": device_description(self.device),
                "input": self.config["input"], "amp_dtype": None if self._amp_dtype is None else str(self._amp_dtype)}

    # ------------------------------------------------------------------ state
    def _state_tensors(self):
        out = []
        for p in self._param_list:
            s = self.optimizer.state[p]
            out += [p, s["exp_avg"], s["exp_avg_sq"], s["step"]]
        return out

    def state_arrays(self) -> dict:
        out = {}
        for name, p in zip(self.names, self._param_list):
            s = self.optimizer.state[p]
            out[name] = p.detach().cpu().numpy().copy()
            out[f"adam_m__{name}"] = s["exp_avg"].cpu().numpy().copy()
            out[f"adam_v__{name}"] = s["exp_avg_sq"].cpu().numpy().copy()
        first = self.optimizer.state[self._param_list[0]]["step"]
        out["adam_iterations"] = np.array(int(first.item()), dtype=np.int64)
        out["step"] = np.array(self.step, dtype=np.int64)
        return out

    def load_state_arrays(self, arrays) -> None:
        torch = import_torch()
        with torch.no_grad():
            for name, p in zip(self.names, self._param_list):
                s = self.optimizer.state[p]
                for key, target in ((name, p), (f"adam_m__{name}", s["exp_avg"]), (f"adam_v__{name}", s["exp_avg_sq"])):
                    if key not in arrays:
                        raise ConfigError(f"model state lacks {key!r}")
                    value = np.asarray(arrays[key])
                    if tuple(value.shape) != tuple(target.shape):
                        raise ConfigError(f"model state {key!r} has shape {value.shape}, "
                                          f"expected {tuple(target.shape)}")
                    target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
                s["step"].fill_(int(arrays["adam_iterations"]))
        self.step = int(arrays["step"])


class TorchSampledMethod(TorchMethod):
    """Sampled softmax with the log-Q correction and up to ``num_true`` true labels per point."""

    LOSS = "sampled"
    DEFAULTS = method_spec("torch-sampled-cpu").defaults

    @property
    def num_sampled(self) -> int:
        c = self.config
        if c["num_sampled"]:
            return int(c["num_sampled"])
        return max(1, int(round(float(c["sample_fraction"]) * self.num_labels)))

    def _check_config(self) -> None:
        super()._check_config()  # each key's own range; the rule that spans keys and data:
        if self.num_sampled >= self.num_labels:
            raise ConfigError(f"num_sampled={self.num_sampled} must be smaller than the {self.num_labels} classes")

    def memory_estimate(self) -> dict:
        return M.estimate_memory_bytes(self.num_features, self.num_labels, self.config["hidden"], self.batch_size,
                                       loss="sampled", num_sampled=self.num_sampled,
                                       num_true=int(self.config["num_true"]),
                                       scoring_rows=scoring_chunk_rows(self.num_labels))

    def hyperparameters(self) -> dict:
        out = super().hyperparameters()
        out["num_sampled_effective"] = self.num_sampled
        return out

    def _targets(self, data, rows):
        c, L = self.config, self.num_labels
        # label and candidate draws are a function of (seed, step): reproducible, and resumed exactly
        rng = np.random.default_rng([self.seed, 0x70C, self.step])
        labels, counts = M.sampled_targets(data, rows, int(c["num_true"]), L, rng)
        sampled, logq_s = M.draw_candidates(L, self.num_sampled, c["sampler"], rng)
        logq_t = M.log_expected_count(np.minimum(labels, L - 1), L, self.num_sampled, c["sampler"])
        hit = np.zeros((len(rows), len(sampled)), dtype=bool)
        if c["remove_accidental_hits"]:
            r, pos = M.accidental_hits(data, rows, sampled)
            hit[r, pos] = True
        return tuple(self._to_device(a) for a in (labels, counts, sampled, logq_s, logq_t, hit))

    def _loss_head(self, params, h, labels, counts, sampled, logq_s, logq_t, hit):
        return M.sampled_softmax_loss(params, h, labels, counts, sampled, logq_s, logq_t, hit,
                                      num_labels=self.num_labels, logq=self.config["logq"],
                                      positives=self.config["positives"])

    def stats(self) -> dict:
        out = super().stats()
        out.update(active_per_sample_mean=float(self.num_sampled + int(self.config["num_true"])),
                   num_sampled=self.num_sampled)
        return out


class TorchFullCPU(TorchMethod):
    LOSS, DEVICE = "full", "cpu"


class TorchFullGPU(TorchMethod):
    LOSS, DEVICE = "full", "gpu"


class TorchSampledCPU(TorchSampledMethod):
    LOSS, DEVICE = "sampled", "cpu"


class TorchSampledGPU(TorchSampledMethod):
    LOSS, DEVICE = "sampled", "gpu"


METHODS = {f"torch-{c.LOSS}-{c.DEVICE}": c for c in (TorchFullCPU, TorchFullGPU, TorchSampledCPU, TorchSampledGPU)}


def method_class(loss: str, device: str) -> type[TorchMethod]:
    """The adapter class for ``loss`` (full|sampled) on ``device`` (cpu|gpu)."""
    return pick_method(METHODS, "torch", loss, device)


__all__ = ["TorchMethod", "TorchSampledMethod", "TorchFullCPU", "TorchFullGPU", "TorchSampledCPU",
           "TorchSampledGPU", "METHODS", "method_class", "LOSSES"]
