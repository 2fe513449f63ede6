"""Baselines compared with the SLIDE engine; see ``baselines/README.md``."""

from slide.errors import ConfigError

LOSSES = ("full", "sampled")
DEVICES = ("cpu", "gpu")


def pick_method(methods: dict, framework: str, loss: str, device: str):
    """The adapter class ``methods[f"{framework}-{loss}-{device}"]``, or a one-line ConfigError."""
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose from {list(LOSSES)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose from {list(DEVICES)}")
    return methods[f"{framework}-{loss}-{device}"]
