"""Snakemake script: every run.json / curve.csv / bench.json / job benchmark -> results/<preset>/*.csv."""

import json
import sys

from slide.report.aggregate import TABLE_NAMES, aggregate


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        sys.stderr = log
        plan = json.loads(open(snakemake.input.skipped).read())
        out = {k: snakemake.output[k] for k in (*TABLE_NAMES, "manifest")}
        notes = []
        runs = list(snakemake.input.runs) + list(snakemake.params.imported)
        tables = aggregate(runs, snakemake.input.bench, snakemake.input.job_benchmarks, plan, out,
                           notes=notes)
        for name, df in tables.items():
            print(f"{name}: {len(df)} row(s)", file=log)
        for msg in notes:  # e.g. a curve with repeated steps: on the console as well as in the log
            print(f"[slide pipeline] aggregate: {msg}", file=sys.__stderr__, flush=True)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
