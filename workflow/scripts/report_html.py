"""Snakemake script: the self-contained reports/<preset>/report.html."""

import json
import sys
from pathlib import Path

import yaml

from slide.report.aggregate import TABLE_NAMES
from slide.report.figures import load_tables
from slide.report.html import build_report


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        sys.stderr = log
        tables = load_tables({k: snakemake.input[k] for k in TABLE_NAMES})
        plan = json.loads(open(snakemake.input.skipped).read())
        paper = yaml.safe_load(open(snakemake.input.paper))
        figures = {Path(p).stem: p for p in snakemake.input.figures}
        build_report(tables, plan, paper, figures, snakemake.output[0], snakemake.params.title,
                     experiments=json.loads(snakemake.params.experiments))
        print(f"wrote {snakemake.output[0]}", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
