"""Snakemake script: every run.json / curve.csv / bench.json / job benchmark -> results/<preset>/*.csv."""

import json
import sys

from slide.report.aggregate import aggregate


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        sys.stderr = log
        plan = json.loads(open(snakemake.input.skipped).read())
        out = {k: snakemake.output[k] for k in ("summary", "curves", "threads", "speedups", "table", "jobs")}
        tables = aggregate(snakemake.input.runs, snakemake.input.bench, snakemake.input.job_benchmarks, plan, out)
        for name, df in tables.items():
            print(f"{name}: {len(df)} row(s)", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
