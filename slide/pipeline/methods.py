"""One table of methods: the name recorded in run.json -> the trainer module, loss and device.

The pipeline's train and bench commands and ``slide compare`` are all built from it.
"""

from __future__ import annotations

# name -> (python module run with -m, loss, device); loss and device are None for SLIDE
METHODS = {
    "slide": ("slide.cli", None, None),
    "tf-full-cpu": ("baselines.tf", "full", "cpu"),
    "tf-sampled-cpu": ("baselines.tf", "sampled", "cpu"),
    "tf-full-gpu": ("baselines.tf", "full", "gpu"),
    "tf-sampled-gpu": ("baselines.tf", "sampled", "gpu"),
    "torch-full-cpu": ("baselines.torch", "full", "cpu"),
    "torch-sampled-cpu": ("baselines.torch", "sampled", "cpu"),
    "torch-full-gpu": ("baselines.torch", "full", "gpu"),
    "torch-sampled-gpu": ("baselines.torch", "sampled", "gpu"),
}
GPU_METHODS = tuple(m for m, (_, _, device) in METHODS.items() if device == "gpu")
TORCH_METHODS = tuple(m for m, (module, _, _) in METHODS.items() if module == "baselines.torch")


def method_argv(method: str, action: str) -> list[str]:
    """``python`` arguments of ``method``'s ``action`` (train|bench), e.g. ``-m baselines.tf train
    --loss full --device cpu``."""
    module, loss, device = METHODS[method]
    argv = ["-m", module, action]
    if loss is not None:
        argv += ["--loss", loss, "--device", device]
    return argv


def method_command(method: str, action: str) -> str:
    """The shell command (``python -m ...``) of ``method``'s ``action``."""
    return " ".join(["python", *method_argv(method, action)])


__all__ = ["METHODS", "GPU_METHODS", "TORCH_METHODS", "method_argv", "method_command"]
