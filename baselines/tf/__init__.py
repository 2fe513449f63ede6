"""TensorFlow 2 baselines of the SLIDE paper: full softmax and sampled softmax, on CPU or GPU.

``from baselines.tf import method_class, gpu_available`` is cheap: TensorFlow is imported only when
a model is built or a device is probed.
"""

from __future__ import annotations

import os

from slide.settings import CHILD_ENV

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _key, _value in CHILD_ENV.items():  # read when TensorFlow creates its CPU allocator
    os.environ.setdefault(_key, _value)


def method_class(loss: str, device: str):
    """The adapter class for ``loss`` (full|sampled) on ``device`` (cpu|gpu); see :mod:`.method`."""
    from .method import method_class as _method_class

    return _method_class(loss, device)


def gpu_available() -> bool:
    """True when TensorFlow sees a GPU (in-process, no subprocess); see :mod:`.device`."""
    from .device import gpu_available as _gpu_available

    return _gpu_available()


__all__ = ["method_class", "gpu_available"]
