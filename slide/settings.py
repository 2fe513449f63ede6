"""Numerics and threading settings, in one place for every method and kernel."""

from __future__ import annotations

import contextlib
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
#: on one thread. A float division by zero gives inf or NaN, as in NumPy, instead of raising: the
#: raise is an exit from the loop at every division, and LLVM vectorises no loop with such an exit
#: (Adam's rows were scalar, one ``sqrtss`` / ``divss`` per entry).
FAST = dict(NJIT, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
FAST_PARALLEL = dict(FAST, parallel=True)
#: Memory-allocator settings of every training or benchmark process the suite starts, the same for
#: every method. TensorFlow's Keras Adam creates full-size temporaries at each step; with TF's default
#: CPU allocator glibc hands them back to the kernel (mmap/munmap) and the next step faults them in
#: again, 4 KiB at a time: on a 2-core VM that was 40-55% of TF's CPU time in the kernel
#: (reports/benchmarks.md, "Allocator settings"). TF's pooling (BFC) CPU allocator and glibc's
#: transparent-huge-page hint remove most of it; SLIDE allocates its arrays once and is unaffected.
CHILD_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
#: Appended to ``GLIBC_TUNABLES`` (read by glibc when a process starts, so set for child processes).
GLIBC_TUNABLE = "glibc.malloc.hugetlb=1"


def child_env(base=None) -> dict:
    """The environment for a method's process: ``base`` (default ``os.environ``) with
    :data:`CHILD_ENV` and :data:`GLIBC_TUNABLE` added where the user has not set them."""
    env = dict(os.environ if base is None else base)
    for key, value in CHILD_ENV.items():
        env.setdefault(key, value)
    tunables = env.get("GLIBC_TUNABLES", "")
    if GLIBC_TUNABLE.split("=")[0] not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{GLIBC_TUNABLE}" if tunables else GLIBC_TUNABLE
    return env


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


#: Environment variable naming the root folder of the keyed JIT cache (Numba's own; optional).
CACHE_ENV = "NUMBA_CACHE_DIR"


def jit_cache_key() -> str:
    """Hash of the source of every engine module, this file and the Numba version (16 hex digits).

    Numba's cache checks only the timestamp of the file that defines a kernel, while the engine's
    kernels inline functions and constants of their siblings: an edit to ``hashing.py`` would leave
    the kernels of ``tables.py`` with the old code. Keying the whole cache on all of it means an
    edit anywhere starts a fresh cache.
    """
    import hashlib

    import numba

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"numba {numba.__version__}\n".encode())
    for path in [Path(__file__).resolve(), *sorted((here / "engine").glob("*.py"))]:
        digest.update(f"{path.relative_to(here)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_root() -> Path:
    """Where the keyed folders go: ``NUMBA_CACHE_DIR`` when the user set it, else ``slide/__pycache__/jit``
    (or ``~/.cache/slide/jit`` where the package folder is read-only)."""
    user = os.environ.get(CACHE_ENV)
    if user:
        return Path(user)
    local = Path(__file__).resolve().parent / "__pycache__"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local / "jit"
    except OSError:
        pass
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "slide" / "jit"


def configure_jit_cache() -> Path:
    """Point Numba's cache of this process at ``<root>/slide-<jit_cache_key()>`` and return it.

    Called when this module is imported, which every engine module does before defining a kernel
    (Numba picks a kernel's cache folder when the decorator runs, from ``numba.core.config.CACHE_DIR``).
    Only ``numba.core.config`` is set, not the environment, so a child process computes its own key
    from its own source. Folders of older keys are left in place (each is a few MiB; delete the
    root to reclaim them).
    """
    from numba.core import config

    folder = _cache_root() / f"slide-{jit_cache_key()}"
    config.CACHE_DIR = str(folder)
    return folder


#: The keyed cache folder of this process (see :func:`configure_jit_cache`).
JIT_CACHE_DIR = configure_jit_cache()


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


@contextlib.contextmanager
def numba_threads(threads: int):
    """Run the block on ``threads`` Numba threads, then restore the count it had."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(before)
