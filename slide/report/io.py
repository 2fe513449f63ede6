"""Atomic writers for the report's CSV tables, figures and HTML."""

from __future__ import annotations

from pathlib import Path

from slide.io import atomic_path, atomic_write_text

__all__ = ["write_csv", "save_figure", "atomic_write_text", "tables_path", "plan_path", "report_path",
           "final_outputs"]


def tables_path(preset: str, name: str = "") -> str:
    """Where a preset's derived tables go: ``results/<preset>/<name>``."""
    return f"results/{preset}/{name}".rstrip("/")


def plan_path(preset: str) -> str:
    """A preset's plan: what ran, what was left out and why (``results/<preset>/skipped.json``)."""
    return tables_path(preset, "skipped.json")


def report_path(preset: str, name: str = "report.html") -> str:
    """Where a preset's report and figures go: ``reports/<preset>/<name>``."""
    return f"reports/{preset}/{name}".rstrip("/")


def final_outputs(preset: str, figures) -> list[str]:
    """What a pipeline run makes: the preset's report, its summary table and each figure as PNG and SVG."""
    return [report_path(preset), tables_path(preset, "summary.csv"),
            *(report_path(preset, f"figures/{f}.{ext}") for f in figures for ext in ("png", "svg"))]


def write_csv(df, path) -> Path:
    """Write a DataFrame as CSV (no index), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return path


def save_figure(fig, png, svg=None, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG (and SVG), each atomically."""
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path is None:
            continue
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
