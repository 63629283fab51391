"""Run report: one self-contained HTML page (curves, evaluation, samples, config) from a run directory.

Torch-free: reads only the files a run writes (config.json, metrics.jsonl, samples.jsonl,
eval/*.json, summary.json), so it works on any machine the run directory is copied to.
"""

from rlvr.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
