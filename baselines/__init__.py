"""Baselines compared with the SLIDE engine; see ``baselines/README.md``."""
