"""TensorFlow import, device selection, GPU detection and thread settings for the TF baselines.

Everything that touches TensorFlow's process-wide state lives here:

* :func:`import_tf` imports TensorFlow quietly. ``TF_CPP_MIN_LOG_LEVEL=2`` is set first, but
  TF 2.21 prints a few lines (oneDNN notice, "Could not find cuda drivers", ``cuInit`` failure)
  through absl *before* that variable takes effect, so file descriptor 2 is pointed at
  ``/dev/null`` while TensorFlow loads and probes its devices. Errors raised by the import
  itself still propagate as exceptions. Set ``SLIDE_TF_VERBOSE=1`` to see TensorFlow's logs.
* :func:`gpu_available` says whether TensorFlow sees a GPU. It runs in-process and creates no
  subprocess: ``tf.config.list_physical_devices('GPU')`` enumerates devices without
  initialising the TensorFlow runtime, so thread settings can still be applied afterwards. The
  cost is the TensorFlow import (a few seconds, once per process); on a CPU-only build
  (``tf.test.is_built_with_cuda()`` false) no CUDA probe happens at all.
* :func:`configure_threads` sets intra- and inter-op parallelism; it must run before TensorFlow
  executes any op, which is why the adapter calls it first thing in its constructor.
* :func:`device_name` maps ``cpu``/``gpu`` to ``/CPU:0`` / ``/GPU:0`` (the first visible GPU;
  pick another with ``CUDA_VISIBLE_DEVICES``) and raises :class:`~slide.errors.ConfigError`
  (a one-line CLI error) when a GPU is asked for and none is visible.
"""

from __future__ import annotations

import contextlib
import os
import sys

from slide.errors import ConfigError
from slide.method_registry import DEVICES
from slide.settings import available_cores

_tf = None
_gpus = None
_threads_set = None


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration (TensorFlow's C++ start-up logs)."""
    if os.environ.get("SLIDE_TF_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):  # pragma: no cover - closed or replaced stderr
        pass
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no fd 2
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):  # pragma: no cover
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tf():
    """Import and return ``tensorflow`` with its start-up logs silenced (once per process)."""
    global _tf, _gpus
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _quiet_stderr():
            import tensorflow as tf

            # probing devices is where CUDA builds log cuInit failures: do it while quiet
            _gpus = list(tf.config.list_physical_devices("GPU")) if tf.test.is_built_with_cuda() else []
        tf.get_logger().setLevel("ERROR")
        _tf = tf
    return _tf


def visible_gpus() -> list:
    """TensorFlow's physical GPU devices (empty on a CPU-only machine or build)."""
    import_tf()
    return list(_gpus)


def gpu_available() -> bool:
    """True when TensorFlow sees at least one GPU. In-process, no subprocess; see module docs."""
    try:
        return bool(visible_gpus())
    except Exception:  # pragma: no cover - a broken CUDA install counts as no GPU
        return False


def device_name(device: str) -> str:
    """The TensorFlow device string for ``cpu`` or ``gpu``; ConfigError when no GPU is visible."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose from {list(DEVICES)}")
    if device == "cpu":
        return "/CPU:0"
    if not gpu_available():
        raise ConfigError("--device gpu: TensorFlow sees no GPU on this machine "
                          "(no CUDA device, driver or CUDA-enabled TensorFlow build); use --device cpu")
    return "/GPU:0"


def configure_threads(threads: int | None) -> int:
    """Set TensorFlow's intra- and inter-op thread pools to ``threads`` (<= 0: all usable cores).

    TensorFlow accepts this only before its runtime starts. When it already started (a second
    model in the same process) with a different value, the value in force is kept and returned,
    with a warning on stderr; the recorded thread count is always the one in force.
    """
    global _threads_set
    tf = import_tf()
    want = int(threads) if threads and threads > 0 else available_cores()
    if _threads_set == want:
        return want
    try:
        tf.config.threading.set_intra_op_parallelism_threads(want)
        tf.config.threading.set_inter_op_parallelism_threads(want)
        _threads_set = want
        return want
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads() or _threads_set or available_cores()
        if current != want:
            print(f"warning: TensorFlow already started with {current} threads; {want} ignored in this process",
                  file=sys.stderr)
        _threads_set = current
        return int(current)


__all__ = ["DEVICES", "import_tf", "gpu_available", "visible_gpus", "device_name", "configure_threads"]
