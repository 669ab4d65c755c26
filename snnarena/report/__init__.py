"""Comparison reports of snnarena runs: one self-contained HTML page, Markdown and figures.

``build_report(["results/quick/<run_id>"])`` writes ``report/quick/<run_id>/index.html`` (see
:mod:`snnarena.report.assemble` for the layout and :mod:`snnarena.report.tables` for the summaries).
"""

from snnarena.report.assemble import build_report

__all__ = ["build_report"]
