"""Baselines compared with the SLIDE engine; see ``baselines/README.md``.

Their methods, losses and devices are declared in ``baselines/*/config.schema.json`` and read
through :mod:`slide.method_registry`.
"""

from slide.errors import ConfigError
from slide.method_registry import DEVICES, LOSSES


def pick_method(methods: dict, framework: str, loss: str, device: str):
    """The adapter class ``methods[f"{framework}-{loss}-{device}"]``, or a one-line ConfigError."""
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose from {list(LOSSES)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose from {list(DEVICES)}")
    return methods[f"{framework}-{loss}-{device}"]
