"""Numerics and threading settings, in one place for every method and kernel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Parameter and activation dtype of every method.
FLOAT = np.float32
#: Options shared by every Numba kernel: cached JIT so a second process starts fast.
NJIT = dict(cache=True, nogil=True, fastmath=False)
NJIT_PARALLEL = dict(NJIT, parallel=True)
#: The network kernels reassociate float sums (vectorised dot products) but keep NaN/inf
#: semantics, so a diverging run still reports a NaN loss. Results stay bit-identical run to run
#: on one thread.
FAST = dict(NJIT, fastmath={"reassoc", "contract", "nsz"})
FAST_PARALLEL = dict(FAST, parallel=True)
#: Adam defaults (Kingma and Ba), used by SLIDE and the TensorFlow baselines alike.
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def _simd_lanes() -> int:
    """float32 lanes of one vector register of the CPU Numba compiles for (16, 8 or 4)."""
    from llvmlite import binding
    from numba.core import config

    features = config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    return 16 if "avx512f" in enabled else 8 if "avx" in enabled else 4


#: Lanes of :data:`slide.engine.intrinsics.f32v`, the register-width vector of the scoring kernel.
SIMD_LANES = _simd_lanes()


def drop_stale_cache(module_file: str, *siblings: str) -> None:
    """Delete the cached kernels of ``module_file`` when this file or one of ``siblings`` is newer.

    ``siblings`` are file names beside ``module_file`` whose functions are compiled into its
    kernels. Numba's cache checks only the timestamp of the file that defines a kernel, so an edit
    there would go unnoticed. Only the in-tree cache (``__pycache__``) is checked, not
    ``NUMBA_CACHE_DIR``.
    """
    here = Path(module_file).resolve()
    deps = [here.with_name(name) for name in siblings] + [Path(__file__).resolve()]
    try:
        newest = max(p.stat().st_mtime for p in deps if p.exists())
        index_files = list((here.parent / "__pycache__").glob(here.stem + ".*.nbi"))
    except (ValueError, OSError):
        return
    for index in index_files:
        try:
            if index.stat().st_mtime < newest:
                for data in index.parent.glob(index.name[:-len(".nbi")] + ".*.nbc"):
                    data.unlink(missing_ok=True)
                index.unlink(missing_ok=True)
        except OSError:
            pass


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
