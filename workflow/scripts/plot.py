"""Snakemake script: one figure (wildcard `figure`) as PNG and SVG in reports/<preset>/figures/."""

import json
import sys

import yaml

from slide.report.figures import TABLES_DRAWN, load_tables, make_figure


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        sys.stderr = log
        tables = load_tables({k: snakemake.input[k] for k in TABLES_DRAWN})
        plan = json.loads(open(snakemake.input.skipped).read())
        paper = yaml.safe_load(open(snakemake.input.paper))
        make_figure(snakemake.wildcards.figure, tables, plan, paper, snakemake.output.png, snakemake.output.svg)
        print(f"wrote {snakemake.output.png} and {snakemake.output.svg}", file=log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
