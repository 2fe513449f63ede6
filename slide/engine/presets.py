"""Configuration of the SLIDE engine: every key with its default, the paper presets, validation.

``DEFAULTS`` suit small extreme-classification sets (Bibtex, Mediamill, Delicious, EURLex-4K:
hundreds to a few thousand labels). ``PRESETS`` hold the paper's settings:

``delicious-200k``
    SimHash, K=9, L=50, batch 128, one hidden layer of 128, Adam lr 1e-4, rehash every 6,400
    samples and rebuild every 128,000, output layer sampled (vanilla union of the L buckets,
    padded with random neurons to 1,000 when fewer than 1,500 are retrieved, as the reference).
``amazon-670k``
    DWTA (bin size 8), K=6, L=50 as in the reference code (the paper's text gives K=8), batch
    128, one hidden layer of 128, Adam lr 1e-4, rehash every 6,400 samples, rebuild every 128,000,
    the same vanilla sampling with padding; weights and Adam moments stored as bfloat16: at this
    shape a step reads and writes whole rows for about one sample each, so half the bytes per row is
    0.86x of the float32 step, at the same P@1 (reports/benchmarks.md, "bfloat16 by default at the
    Amazon-670K shape"). At the Delicious-200K shape, about four samples per row, it gains nothing.

By default only the output layer is LSH-sampled (``output_sparsity``); a hidden layer is sampled
when its ``hidden_sparsity`` entry is below 1 (see :mod:`slide.engine.model`).

Every key (``slide train --set KEY=VALUE``; values are YAML), with its default, range and
description, is declared once, in ``slide/engine/config.schema.json`` (the keys shared with the
baselines in ``slide/shared_config.schema.json``); :func:`validate` checks a configuration against
that schema, then the few rules that span keys.
"""

from __future__ import annotations

from ..adapter import PAPER_SHARED
from ..errors import ConfigError
from ..method_registry import method_spec

SPEC = method_spec("slide")
INFERENCES = SPEC.choices("inference")
DEFAULTS = SPEC.defaults

_PAPER = {
    **PAPER_SHARED, "optimizer": "sparse", "bucket_size": 128,
    "insertion": "fifo", "sampling": "vanilla", "min_active": 1000, "min_active_trigger": 1500,
    "rehash_every": 6400, "rebuild_every": 128000, "schedule": "fixed", "output_sparsity": 0.005,
}

PRESETS = {
    "delicious-200k": dict(_PAPER, hash="simhash", K=9, L=50),
    # The paper's text says K=8 for Amazon-670K; the reference code uses K=6 with DWTA.
    "amazon-670k": dict(_PAPER, hash="dwta", K=6, L=50, bin_size=8, precision="bf16"),
}


def validate(config: dict) -> dict:
    """Check every key of a resolved configuration; return it with normalised types.

    Raises
    ------
    ConfigError
        naming the offending key.
    """
    out = SPEC.check(config)  # presence, types, ranges and choices, from the schema
    hs = out["hidden_sparsity"]
    if hs is None:
        hs = [1.0] * len(out["hidden"])
    elif not isinstance(hs, list):
        hs = [hs] * len(out["hidden"])
    if len(hs) != len(out["hidden"]):
        raise ConfigError(f"hidden_sparsity must be a list of {len(out['hidden'])} fractions in (0, 1] "
                          f"(one per hidden layer), got {config['hidden_sparsity']!r}")
    out["hidden_sparsity"] = hs
    if out["sampling"] == "threshold" and out["output_sparsity"] < 1.0 and out["threshold"] > out["L"]:
        raise ConfigError(f"threshold must be <= L={out['L']} with sampling: threshold (a neuron is counted "
                          f"once per table, so none could be seen in {out['threshold']} tables), got "
                          f"{out['threshold']}")
    if out["output_pass"] == "row" and out["output_sparsity"] >= 1.0:
        raise ConfigError("output_pass: row needs a sampled output layer (output_sparsity < 1); a full softmax "
                          "reads every row for every sample either way")
    if out["hash"] == "simhash" and out["K"] > 30:
        raise ConfigError(f"K must be <= 30 for simhash, got {out['K']}")
    return out
