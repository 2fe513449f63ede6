"""Numerics and threading settings, in one place for every method and kernel."""

from __future__ import annotations

import os

import numpy as np

#: Parameter and activation dtype of every method.
FLOAT = np.float32
#: Options shared by every Numba kernel: cached JIT so a second process starts fast.
NJIT = dict(cache=True, nogil=True, fastmath=False)
NJIT_PARALLEL = dict(NJIT, parallel=True)
#: Adam defaults (Kingma and Ba), used by SLIDE and the TensorFlow baselines alike.
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set the Numba thread count, clamped to what Numba was started with; return it."""
    import numba

    if threads is None or threads <= 0:
        threads = available_cores()
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads
