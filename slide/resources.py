"""Resource limits shared by every method: one rule for how much memory a new model may use."""

from __future__ import annotations

import math
import os

from .errors import ConfigError

#: Environment variable capping the memory a new model may use, in MiB (optional).
MEMORY_ENV = "SLIDE_MEMORY_LIMIT_MB"


def memory_limit_bytes() -> tuple[int, str]:
    """The memory a new model may use, in bytes, and where the figure comes from.

    The smaller of psutil's available memory and ``SLIDE_MEMORY_LIMIT_MB`` (when set): the variable
    can only lower the limit, never raise it above what the machine has free. The source reads
    ``"available memory"`` or ``"SLIDE_MEMORY_LIMIT_MB=<value>"``. A value that is not a positive
    number of MiB is a ConfigError.
    """
    import psutil

    limit, source = int(psutil.virtual_memory().available), "available memory"
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            mib = float(env)
        except ValueError:
            mib = math.nan
        if not (mib > 0 and math.isfinite(mib)):
            raise ConfigError(f"{MEMORY_ENV} must be a positive number of MiB, got {env!r}")
        env_bytes = int(mib * 2**20)
        if env_bytes < limit:
            limit, source = env_bytes, f"{MEMORY_ENV}={env}"
    return limit, source


__all__ = ["MEMORY_ENV", "memory_limit_bytes"]
