"""The pipeline's view of the method registry: the name recorded in run.json -> the trainer module,
loss and device, and the command that trains or benchmarks it.

The methods themselves are declared beside their adapters (:mod:`slide.method_registry`); the
pipeline's train and bench commands and ``slide compare`` are all built from them.
"""

from __future__ import annotations

from slide.method_registry import REGISTRY, method_spec

# name -> (python module run with -m, loss, device); loss and device are None for SLIDE
METHODS = {name: (s.module, s.loss, s.device if s.loss else None) for name, s in REGISTRY.items()}
GPU_METHODS = tuple(name for name, s in REGISTRY.items() if s.device == "gpu")
TORCH_METHODS = tuple(name for name, s in REGISTRY.items() if s.module == "baselines.torch")


def method_argv(method: str, action: str) -> list[str]:
    """``python`` arguments of ``method``'s ``action`` (train|bench), e.g. ``-m baselines.tf train
    --loss full --device cpu``."""
    return method_spec(method).argv(action)


def method_command(method: str, action: str) -> str:
    """The shell command (``python -m ...``) of ``method``'s ``action``."""
    return " ".join(["python", *method_argv(method, action)])


__all__ = ["METHODS", "GPU_METHODS", "TORCH_METHODS", "method_argv", "method_command"]
