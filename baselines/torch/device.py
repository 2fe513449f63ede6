"""PyTorch import, device selection, GPU detection, threads and synchronisation for the torch baselines.

* :func:`import_torch` imports PyTorch once; when it is not installed the error is a one-line
  :class:`~slide.errors.ConfigError` naming the extra to install (``pip install -e ".[torch]"``).
* :func:`gpu_available` says whether PyTorch sees a CUDA device (in-process; ``torch.cuda.is_available()``
  does not create a CUDA context).
* :func:`device_for` maps ``cpu``/``gpu`` to ``torch.device('cpu')`` / ``torch.device('cuda:0')``
  (the first visible GPU; pick another with ``CUDA_VISIBLE_DEVICES``) and raises ConfigError,
  one line, when a GPU is asked for and none is visible.
* :func:`configure_threads` sets PyTorch's intra-op pool (``torch.set_num_threads``, allowed at any
  time) and, once per process and only before parallel work started, the inter-op pool.
* :func:`synchronize` waits for queued CUDA work (a no-op on the CPU): every timed region ends with
  it, so a measured batch is a finished batch, not a queued one.
"""

from __future__ import annotations

from slide.errors import ConfigError
from slide.method_registry import DEVICES
from slide.settings import available_cores

_torch = None
_interop_set = False


def torch_importable() -> bool:
    """True when ``import torch`` would succeed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def import_torch():
    """Import and return ``torch`` (once per process); ConfigError when it is not installed."""
    global _torch
    if _torch is None:
        try:
            import torch
        except ImportError as err:
            raise ConfigError(f"PyTorch is not installed ({err}); install the extra: pip install -e \".[torch]\"") \
                from None
        _torch = torch
    return _torch


def gpu_available() -> bool:
    """True when PyTorch is installed and sees at least one CUDA device."""
    if not torch_importable():
        return False
    try:
        return bool(import_torch().cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA install counts as no GPU
        return False


def device_for(device: str):
    """The ``torch.device`` for ``cpu`` or ``gpu``; ConfigError when no GPU is visible."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose from {list(DEVICES)}")
    torch = import_torch()
    if device == "cpu":
        return torch.device("cpu")
    if not gpu_available():
        raise ConfigError("--device gpu: PyTorch sees no GPU on this machine "
                          "(no CUDA device, driver or CUDA-enabled PyTorch build); use --device cpu")
    return torch.device("cuda", 0)


def configure_threads(threads: int | None) -> int:
    """Set PyTorch's intra-op threads to ``threads`` (<= 0: all usable cores); return the value in force."""
    global _interop_set
    torch = import_torch()
    want = int(threads) if threads and threads > 0 else available_cores()
    torch.set_num_threads(want)
    if not _interop_set:
        try:
            torch.set_num_interop_threads(want)
        except RuntimeError:  # parallel work already started in this process: keep the pool in force
            pass
        _interop_set = True
    return int(torch.get_num_threads())


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA); nothing to do on the CPU."""
    if getattr(device, "type", "cpu") == "cuda":
        import_torch().cuda.synchronize(device)


def device_description(device) -> str:
    """``cpu`` or the GPU's name and memory, for ``run.json`` (``method_stats.device``)."""
    torch = import_torch()
    if getattr(device, "type", "cpu") != "cuda":
        return "cpu"
    p = torch.cuda.get_device_properties(device)
    return f"cuda:{device.index or 0} {p.name} {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"


__all__ = ["DEVICES", "torch_importable", "import_torch", "gpu_available", "device_for", "configure_threads",
           "synchronize", "device_description"]
