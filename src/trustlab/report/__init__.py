"""Run folders, results files, plots and HTML reports shared by every command."""

from trustlab.report import stats
from trustlab.report.io import append_jsonl, read_json, read_jsonl, write_json, write_jsonl
from trustlab.report.run import RunFolder, Section, config_hash, plt, progress, render_html
from trustlab.report.schema import (
    BenchmarkRecord,
    Claim,
    machine_info,
    read_benchmark,
    read_summary,
    write_benchmark,
    write_summary,
)

__all__ = [
    "BenchmarkRecord", "Claim", "RunFolder", "Section", "append_jsonl", "config_hash", "machine_info", "plt", "progress",
    "read_benchmark", "read_json", "read_jsonl", "read_summary", "render_html", "write_benchmark",
    "stats", "write_json", "write_jsonl", "write_summary",
]
