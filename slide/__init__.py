"""SLIDE reproduction suite: the Numba SLIDE engine and the shared data, metrics and run layers."""

__version__ = "0.1.0"
