"""The SLIDE engine: an LSH-sampled, HOGWILD-trained wide network in Numba.

``SlideMethod`` (:mod:`slide.engine.model`) is the method behind ``slide train`` / ``slide bench``;
``PRESETS`` holds the paper's settings (``delicious-200k``, ``amazon-670k``) and ``DEFAULTS``
every configuration key (:mod:`slide.engine.presets`).
"""

from .model import SlideMethod
from .presets import DEFAULTS, PRESETS

__all__ = ["SlideMethod", "PRESETS", "DEFAULTS"]
