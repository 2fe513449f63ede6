"""SplitMix64 (Steele, Lea and Flood 2014), the one integer mixer of the suite, in Numba.

Every seeded stream of the engine (hash parameters, bucket slots, reservoir insertion, padding,
per-sample seeds) and of the synthetic data generator (:mod:`slide.data.synth`) goes through
:func:`mix64`, the SplitMix64 finalizer, with the constants below. ``tests/splitmix_twin.py`` is its
pure-Python twin.
"""

from __future__ import annotations

import numba
import numpy as np

from ..settings import NJIT

#: The golden-ratio increment of the SplitMix64 state (also used as a multiplier to spread seeds).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: The two multipliers of the SplitMix64 finalizer.
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


@numba.njit(**NJIT)
def mix64(z):
    """SplitMix64 finalizer of a uint64."""
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    return z ^ (z >> _S31)


__all__ = ["GOLDEN", "MIX1", "MIX2", "mix64"]
