"""Snakemake script: write results/<preset>/skipped.json - the runs left out of the DAG (with the reason),
the datasets (labels, sizes, targets), the GPU check, the cores and the thread counts.

The report reads it to say what could not run here and why.
"""

import json
import sys
from pathlib import Path

from slide.data.synth import synth_shape
from slide.io import atomic_write_text


def dataset_labels(name, source, scale):
    """Number of output labels of the dataset (synthetic: at its scale)."""
    try:
        if source == "synth":
            return int(synth_shape(name, scale).labels)
        from slide.data.registry import get_dataset

        return int(get_dataset(name).stats["labels"])
    except Exception:  # an unknown shape only loses the active-fraction column
        return None


def build_plan(params) -> dict:
    datasets = json.loads(params.datasets)
    for d in datasets.values():
        d["labels"] = dataset_labels(d["name"], d["source"], d.get("scale") or 1.0)
    return {
        "preset": params.preset,
        "cores": int(params.cores),
        "thread_counts": list(params.threads),
        "gpu": json.loads(params.gpu),
        "datasets": datasets,
        "skipped": json.loads(params.skipped),
        "imported": json.loads(params.imported),
    }


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        sys.stderr = log
        plan = build_plan(snakemake.params)
        atomic_write_text(Path(snakemake.output[0]), json.dumps(plan, indent=2, sort_keys=True) + "\n")
        print(f"{len(plan['skipped'])} run(s) left out", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
