"""The interface every method implements (SLIDE, TF full softmax, TF sampled softmax).

As in ann-benchmarks, a method is an adapter: it owns its parameters and knows how to train on a
batch of rows and how to rank labels for rows. Everything else (batching, the evaluation schedule,
timing, metrics, outputs) is done once, in :mod:`slide.training`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import re

import numpy as np
import yaml

from .errors import ConfigError
from .method_registry import shared_defaults
from .settings import available_cores

#: Keys that mean the same network and optimiser for every method, with their one default: the same
#: flags train the same thing whichever method runs them (Adam's betas and epsilon are in
#: :mod:`slide.settings`). Declared, with ranges and descriptions, in
#: ``slide/shared_config.schema.json``; every method's schema (so its ``DEFAULTS``) starts from them.
SHARED_DEFAULTS = shared_defaults()
#: The paper's values of the shared keys (its Delicious-200K and Amazon-670K settings), used by
#: every method's ``delicious-200k`` and ``amazon-670k`` presets.
PAPER_SHARED = {"hidden": [128], "batch_size": 128, "lr": 1e-4, "eval_every": 50}


class Method(ABC):
    """A trainable extreme classifier.

    Subclasses set ``DEFAULTS`` (every configuration key with its default, from the method's schema in
    :mod:`slide.method_registry`) and may set
    ``PRESETS`` (name -> partial config). They are constructed by :meth:`from_config`.
    """

    DEFAULTS: dict = {}
    PRESETS: dict = {}

    def __init__(self, num_features: int, num_labels: int, config: dict, seed: int = 0, threads: int = 0):
        self.num_features = int(num_features)
        self.num_labels = int(num_labels)
        self.config = dict(config)
        self.seed = int(seed)
        self.threads = int(threads) if threads and threads > 0 else available_cores()

    @classmethod
    def resolve_config(cls, preset: str | None = None, overrides: dict | None = None) -> dict:
        """Defaults, then the preset, then the overrides; unknown keys and presets are errors."""
        config = dict(cls.DEFAULTS)
        if preset:
            if preset not in cls.PRESETS:
                raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(cls.PRESETS)}")
            config.update(cls.PRESETS[preset])
        for key, value in (overrides or {}).items():
            if key not in cls.DEFAULTS:
                raise ConfigError(f"unknown key {key!r} for {cls.__name__}; known keys: {sorted(cls.DEFAULTS)}")
            config[key] = value
        return config

    @classmethod
    def from_config(cls, num_features, num_labels, *, preset=None, overrides=None, seed=0, threads=0, **kw):
        return cls(num_features, num_labels, cls.resolve_config(preset, overrides), seed=seed, threads=threads, **kw)

    @property
    @abstractmethod
    def name(self) -> str:
        """The method's name in results, e.g. ``slide`` or ``tf-full-cpu``."""

    @property
    def batch_size(self) -> int:
        return int(self.config["batch_size"])

    @property
    def eval_every(self) -> int:
        """Steps between evaluations on the fixed test sample: a setting of the shared loop, whose one
        default is in ``slide/shared_config.schema.json``."""
        return int(self.config.get("eval_every", SHARED_DEFAULTS["eval_every"]))

    def hyperparameters(self) -> dict:
        """The resolved configuration, as recorded in ``run.json``."""
        return dict(self.config)

    def estimate_memory_bytes(self) -> int:
        """Bytes this method will allocate for its parameters and state (checked before building)."""
        return 0

    @abstractmethod
    def train_batch(self, data, rows: np.ndarray) -> float:
        """One optimisation step on points ``rows`` of ``data``; return the mean loss."""

    @abstractmethod
    def predict_topk(self, data, rows: np.ndarray, k: int = 5) -> np.ndarray:
        """Label ids ranked best first for points ``rows`` of ``data``: ``(len(rows), k)`` int64."""

    def stats(self) -> dict:
        """Method-specific figures for ``run.json`` and ``bench`` (e.g. active neurons per sample)."""
        return {}

    def table_refreshes(self) -> int | None:
        """Scheduled refreshes of internal tables so far (SLIDE's rehashes); None: it has none."""
        return None

    def traffic(self) -> dict | None:
        """Running counts of the memory traffic of training (SLIDE's), which ``bytes_moved(data,
        counts)`` turns into bytes for ``bench``; None: the method does not count its bytes."""
        return None

    def warm_up(self, data, rows: np.ndarray) -> None:
        """Pay compilation, graph tracing and first-touch costs now, outside the training clock.

        This default runs one training step on ``rows`` and one prediction, then restores every
        state array, so the run that follows is the one it would have been without the warm-up
        (up to framework-internal random streams). Methods with a cheaper way override it.
        """
        saved = {key: np.array(value, copy=True) for key, value in self.state_arrays().items()}
        self.train_batch(data, rows)
        self.predict_topk(data, rows[:8], 5)
        self.load_state_arrays(saved)

    @abstractmethod
    def state_arrays(self) -> dict:
        """Every array needed to resume training (weights, optimizer state, seeds, step)."""

    @abstractmethod
    def load_state_arrays(self, arrays) -> None:
        """Restore what :meth:`state_arrays` returned, from any mapping of names to arrays.

        The mapping may hold other entries (the loop's own); read only the names you wrote.
        """


# YAML 1.1 reads "1e-4" as a string; numbers in scientific notation are floats here.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_overrides(items) -> dict:
    """Parse ``key=value`` strings; values are read as YAML (``lr=1e-4``, ``hidden=[128]``)."""
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = float(raw) if _FLOAT.fullmatch(raw.strip()) else yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read value {raw!r}") from None
        out[key.strip()] = value
    return out


class PersistentMixin:
    """``fit``, ``save`` and ``load`` for any :class:`Method`, built on the shared training loop."""

    def fit(self, train_data, test_data=None, *, epochs: float = 1.0, out_dir=None, dataset="data", **kw):
        """Train for ``epochs``; write run outputs to ``out_dir`` when given. Returns ``self``."""
        import tempfile

        from .training import train

        test_data = train_data if test_data is None else test_data
        if out_dir is None:
            with tempfile.TemporaryDirectory() as tmp:
                self.last_run = train(self, train_data, test_data, tmp, dataset=dataset, epochs=epochs, **kw)
        else:
            self.last_run = train(self, train_data, test_data, out_dir, dataset=dataset, epochs=epochs, **kw)
        return self

    def save(self, path) -> None:
        """Write the model (configuration, weights, optimizer and hash state) to ``path`` (.npz, no pickle)."""
        import json

        from .io import save_npz_atomic

        header = json.dumps(dict(num_features=self.num_features, num_labels=self.num_labels,
                                 config=self.config, seed=self.seed, threads=self.threads))
        save_npz_atomic(path, model__header=np.array(header), **self.state_arrays())

    @classmethod
    def load(cls, path):
        """Rebuild a model written by :meth:`save` (or a training checkpoint with a header)."""
        import json

        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["model__header"]))
            # a key added after the file was written takes its default (keys are only ever added
            # with a default that keeps the earlier behaviour)
            config = {**cls.DEFAULTS, **header["config"]}
            model = cls(header["num_features"], header["num_labels"], config, seed=header["seed"],
                        threads=header["threads"])
            model.load_state_arrays(z)
        return model
