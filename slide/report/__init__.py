"""Aggregation, figures and the HTML report of the Snakemake pipeline.

* :mod:`slide.report.aggregate` - every ``run.json`` / ``curve.csv`` / ``bench.json`` and job
  benchmark into tidy CSV tables (``results/<preset>/summary.csv`` and friends), time-to-target
  and the SLIDE speedups at equal P@1 (none from a disturbed run or one that did not learn).
* :mod:`slide.report.figures` - the paper's figures 5-9 and two secondary ones (matplotlib, Agg).
* :mod:`slide.report.html` - the self-contained ``reports/<preset>/report.html``.
* :mod:`slide.report.io` - atomic writers and each preset's output paths.

Every file is written atomically (temporary file in the same folder, then rename).
"""

from .style import METHOD_COLORS, METHOD_LABELS, method_color, method_label

__all__ = ["METHOD_COLORS", "METHOD_LABELS", "method_color", "method_label"]
