"""PyTorch baselines of the SLIDE paper: full softmax and sampled softmax (log-Q corrected, several
true labels per point), on CPU or GPU.

``from baselines.torch import method_class, gpu_available`` is cheap: PyTorch is imported only when
a model is built or a device is probed. PyTorch is an optional extra: ``pip install -e ".[torch]"``.
"""

from __future__ import annotations

import os

# Large CPU tensors (logits, gradients: hundreds of MB at the paper's shapes) are fresh mmaps every
# step; with 4 KiB pages their first touches cost ~40% of a full-softmax step. PyTorch backs them
# with transparent huge pages when this is set before its first allocation (Amazon-670K shape at
# scale 0.25, 1 thread: 0.53 -> 0.29 s per batch). Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def method_class(loss: str, device: str):
    """The adapter class for ``loss`` (full|sampled) on ``device`` (cpu|gpu); see :mod:`.method`."""
    from .method import method_class as _method_class

    return _method_class(loss, device)


def gpu_available() -> bool:
    """True when PyTorch is installed and sees a CUDA device; see :mod:`.device`."""
    from .device import gpu_available as _gpu_available

    return _gpu_available()


def torch_importable() -> bool:
    """True when PyTorch is installed (checked without importing it)."""
    from .device import torch_importable as _torch_importable

    return _torch_importable()


__all__ = ["method_class", "gpu_available", "torch_importable"]
