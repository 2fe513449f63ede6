"""The TensorFlow baselines as :class:`slide.adapter.Method` adapters.

Four concrete classes, one per method name recorded in ``run.json``::

    tf-full-cpu   tf-full-gpu   tf-sampled-cpu   tf-sampled-gpu

(:func:`method_class` picks one from ``loss`` and ``device``). The loss and the device are part of
the class, not of the configuration, so :meth:`~slide.adapter.PersistentMixin.load` rebuilds the
right one. Each training step is one ``tf.function`` (forward, loss, gradients and the Keras Adam
update, traced once with a fixed input signature); the only per-batch Python work is the vectorised
NumPy conversion of the CSR batch into ``tf.SparseTensor`` parts.
"""

from __future__ import annotations


import numpy as np

from baselines import LOSSES, pick_method
from slide.adapter import PAPER_SHARED, Method, PersistentMixin
from slide.errors import ConfigError, ResourceError
from slide.method_registry import method_spec
from slide.metrics import scoring_chunk_rows
from slide.resources import memory_limit_bytes
from slide.settings import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, FLOAT

from . import model as M
from .device import configure_threads, device_name, import_tf


# Every key, its default and its range: baselines/tf/config.schema.json (shared keys merged in)
_PRESETS = {"delicious-200k": dict(PAPER_SHARED), "amazon-670k": dict(PAPER_SHARED)}


def adam_slots(optimizer, variables) -> list:
    """``(momentum, velocity)`` of each of ``variables`` in a built Keras Adam, from public API only.

    Keras 3 lists them in ``optimizer.variables`` as ``<name>_momentum`` and ``<name>_velocity``, in the
    order of the variables it was built with. Anything else (a Keras that names, orders or shapes them
    differently) is a RuntimeError here, never a checkpoint with the wrong moments;
    ``tests/test_tf_baselines.py`` checks the moments against one Adam step.
    """
    by_kind = {kind: [s for s in optimizer.variables if s.name.endswith(f"_{kind}")] for kind in ("momentum", "velocity")}
    pairs = list(zip(by_kind["momentum"], by_kind["velocity"]))
    ok = len(by_kind["momentum"]) == len(by_kind["velocity"]) == len(variables)
    for var, (m, v) in zip(variables, pairs) if ok else ():
        stem = var.name.split(":")[0]
        ok = ok and all(s.name.startswith(stem) and tuple(s.shape) == tuple(var.shape) for s in (m, v))
    if not ok:
        import keras

        raise RuntimeError(
            f"Keras {keras.__version__}: Adam's optimizer.variables no longer hold one '<name>_momentum' and one "
            f"'<name>_velocity' per parameter ({[s.name for s in optimizer.variables]}); update "
            f"baselines.tf.method.adam_slots")
    return pairs


class TFMethod(PersistentMixin, Method):
    """Base of the TensorFlow baselines; use :func:`method_class` or one of the four subclasses."""

    LOSS = "full"
    DEVICE = "cpu"
    DEFAULTS = method_spec("tf-full-cpu").defaults
    PRESETS = _PRESETS

    def __init__(self, num_features, num_labels, config, seed: int = 0, threads: int = 0):
        # thread pools first: TensorFlow ignores them once it has run an op
        threads = configure_threads(threads)
        super().__init__(num_features, num_labels, config, seed=seed, threads=threads)
        self._check_config()
        self.device = device_name(self.DEVICE)  # ConfigError when a GPU is asked for and absent
        need = self.estimate_memory_bytes()
        limit, source = memory_limit_bytes()
        if need > limit:
            raise ResourceError(
                f"{self.name} with {self.num_features} features, {self.num_labels} labels and hidden "
                f"{self.config['hidden']} needs about {need / 2**30:.1f} GiB but {source} is "
                f"{limit / 2**30:.1f} GiB; use a smaller --scale or a machine with more memory")
        tf = import_tf()
        tf.random.set_seed(self.seed)
        self.step = 0
        with tf.device(self.device):
            self.net = M.Network(self.num_features, self.num_outputs, self.config["hidden"], self.seed)
            self.optimizer = tf.keras.optimizers.Adam(learning_rate=float(self.config["lr"]), beta_1=ADAM_BETA1,
                                                      beta_2=ADAM_BETA2, epsilon=ADAM_EPS)
            self.optimizer.build(self.net.variables)
        self._build_functions()

    # ------------------------------------------------------------------ configuration
    @property
    def name(self) -> str:
        return f"tf-{self.LOSS}-{self.DEVICE}"

    @property
    def num_outputs(self) -> int:
        """Output neurons: the labels, plus one dummy class for ``pad: dummy`` sampled softmax."""
        return self.num_labels

    def _check_config(self) -> None:
        """Types, ranges and choices from the method's schema (one line naming the key), normalised."""
        self.config = method_spec(self.name).check(self.config)

    def hyperparameters(self) -> dict:
        out = dict(self.config)
        out.update(loss=self.LOSS, device=self.DEVICE)
        return out

    def estimate_memory_bytes(self) -> int:
        return M.estimate_memory_bytes(self.num_features, self.num_outputs, self.config["hidden"],
                                       self.batch_size, loss=self.LOSS,
                                       scoring_rows=scoring_chunk_rows(self.num_labels))

    # ------------------------------------------------------------------ TF functions
    def _build_functions(self) -> None:
        tf = import_tf()
        sparse_sig = [tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.float32),
                      tf.TensorSpec([], tf.int64)]
        net, L = self.net, self.num_labels

        @tf.function(input_signature=sparse_sig + [tf.TensorSpec([], tf.int32)])
        def predict(indices, values, batch, k):
            logits = net.logits(net.hidden_output(indices, values, batch))
            return tf.math.top_k(logits[:, :L], k=k, sorted=True).indices

        self._predict = predict
        self._train = tf.function(self._train_step_fn(), input_signature=sparse_sig + self._label_signature())
        # trace both graphs now (nothing runs), so the first timed batch does not pay for tracing
        with tf.device(self.device):
            self._predict.get_concrete_function()
            self._train.get_concrete_function()

    def _label_signature(self) -> list:
        tf = import_tf()
        return [tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.float32)]

    def _train_step_fn(self):
        tf = import_tf()
        net, opt = self.net, self.optimizer

        def step(indices, values, batch, y_indices, y_values):
            with tf.GradientTape() as tape:
                loss = M.full_softmax_loss(net, indices, values, batch, y_indices, y_values)
            grads = tape.gradient(loss, net.variables)
            opt.apply_gradients(zip(grads, net.variables))
            return loss

        return step

    def _label_inputs(self, data, rows):
        return M.soft_targets(data, rows)

    # ------------------------------------------------------------------ Method interface
    def train_batch(self, data, rows: np.ndarray) -> float:
        tf = import_tf()
        indices, values = M.sparse_batch(data, rows)
        labels = self._label_inputs(data, rows)
        with tf.device(self.device):
            loss = self._train(indices, values, np.int64(len(rows)), *labels)
        self.step += 1
        return float(loss.numpy())

    def predict_topk(self, data, rows: np.ndarray, k: int = 5) -> np.ndarray:
        tf = import_tf()
        rows = np.asarray(rows, dtype=np.int64)
        k = int(min(k, self.num_labels))
        out = np.empty((len(rows), k), dtype=np.int64)
        chunk = scoring_chunk_rows(self.num_labels)
        with tf.device(self.device):
            for a in range(0, len(rows), chunk):
                part = rows[a:a + chunk]
                indices, values = M.sparse_batch(data, part)
                out[a:a + len(part)] = self._predict(indices, values, np.int64(len(part)), np.int32(k)).numpy()
        return out

    def stats(self) -> dict:
        return {"active_per_sample_mean": float(self.num_labels), "device": self.device}

    def _slots(self):
        return [(name, var, m, v) for name, var, (m, v) in
                zip(self.net.names, self.net.variables, adam_slots(self.optimizer, self.net.variables))]

    def state_arrays(self) -> dict:
        out = {}
        for name, var, m, v in self._slots():
            out[name] = var.numpy()
            out[f"adam_m__{name}"] = m.numpy()
            out[f"adam_v__{name}"] = v.numpy()
        out["adam_iterations"] = np.array(int(self.optimizer.iterations.numpy()), dtype=np.int64)
        out["step"] = np.array(self.step, dtype=np.int64)
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        for name, var, m, v in self._slots():
            for key, target in ((name, var), (f"adam_m__{name}", m), (f"adam_v__{name}", v)):
                if key not in arrays:
                    raise ConfigError(f"model state lacks {key!r}")
                value = np.asarray(arrays[key])
                if tuple(value.shape) != tuple(target.shape):
                    raise ConfigError(f"model state {key!r} has shape {value.shape}, expected {tuple(target.shape)}")
                target.assign(value.astype(FLOAT, copy=False))
        self.optimizer.iterations.assign(int(arrays["adam_iterations"]))
        self.step = int(arrays["step"])


class TFSampledMethod(TFMethod):
    """``tf.nn.sampled_softmax_loss`` on the same network (see :func:`model.true_label_matrix`)."""

    LOSS = "sampled"
    DEFAULTS = method_spec("tf-sampled-cpu").defaults

    @property
    def num_outputs(self) -> int:
        return self.num_labels + (1 if self.config.get("pad") == "dummy" else 0)

    @property
    def num_sampled(self) -> int:
        c = self.config
        if c["num_sampled"]:
            return int(c["num_sampled"])
        return max(1, int(round(float(c["sample_fraction"]) * self.num_labels)))

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        nt = c["num_true"]  # the rules that span keys; each key's own range is in the schema
        if c["label_mode"] == "single" and nt != 1:
            raise ConfigError(f"label_mode=single uses num_true=1, got {nt}; set label_mode=multi for more")
        if c["label_mode"] == "multi" and nt < 2:
            raise ConfigError("label_mode=multi needs num_true >= 2 (e.g. --set num_true=5)")
        if self.num_sampled >= self.num_outputs:
            raise ConfigError(f"num_sampled={self.num_sampled} must be smaller than the {self.num_outputs} classes")

    def estimate_memory_bytes(self) -> int:
        return M.estimate_memory_bytes(self.num_features, self.num_outputs, self.config["hidden"],
                                       self.batch_size, loss="sampled", num_sampled=self.num_sampled,
                                       num_true=int(self.config["num_true"]),
                                       scoring_rows=scoring_chunk_rows(self.num_labels))

    def hyperparameters(self) -> dict:
        out = super().hyperparameters()
        out["num_sampled_effective"] = self.num_sampled
        return out

    def _label_signature(self) -> list:
        tf = import_tf()
        return [tf.TensorSpec([None, int(self.config["num_true"])], tf.int64), tf.TensorSpec([None], tf.float32)]

    def _train_step_fn(self):
        tf = import_tf()
        net, opt, c = self.net, self.optimizer, self.config
        kw = dict(num_sampled=self.num_sampled, num_true=int(c["num_true"]), sampler=c["sampler"],
                  remove_accidental_hits=bool(c["remove_accidental_hits"]), seed=self.seed)

        def step(indices, values, batch, labels, weights):
            with tf.GradientTape() as tape:
                loss = M.sampled_softmax_loss(net, indices, values, batch, labels, weights, **kw)
            grads = tape.gradient(loss, net.variables)
            opt.apply_gradients(zip(grads, net.variables))
            return loss

        return step

    def _label_inputs(self, data, rows):
        # label choice is a function of (seed, step): reproducible and resumable
        rng = np.random.default_rng([self.seed, 0x1AB, self.step])
        return M.true_label_matrix(data, rows, int(self.config["num_true"]), self.config["pad"],
                                   self.num_labels, rng)

    def stats(self) -> dict:
        out = super().stats()
        out.update(active_per_sample_mean=float(self.num_sampled + int(self.config["num_true"])),
                   num_sampled=self.num_sampled)
        return out


class TFFullCPU(TFMethod):
    LOSS, DEVICE = "full", "cpu"


class TFFullGPU(TFMethod):
    LOSS, DEVICE = "full", "gpu"


class TFSampledCPU(TFSampledMethod):
    LOSS, DEVICE = "sampled", "cpu"


class TFSampledGPU(TFSampledMethod):
    LOSS, DEVICE = "sampled", "gpu"


METHODS = {f"tf-{c.LOSS}-{c.DEVICE}": c for c in (TFFullCPU, TFFullGPU, TFSampledCPU, TFSampledGPU)}


def method_class(loss: str, device: str) -> type[TFMethod]:
    """The adapter class for ``loss`` (full|sampled) on ``device`` (cpu|gpu)."""
    return pick_method(METHODS, "tf", loss, device)


__all__ = ["TFMethod", "TFSampledMethod", "TFFullCPU", "TFFullGPU", "TFSampledCPU", "TFSampledGPU",
           "METHODS", "method_class", "memory_limit_bytes", "adam_slots", "LOSSES"]
