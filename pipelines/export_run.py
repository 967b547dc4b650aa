"""`ttsearch export`: a run's best-of-N pools in the generic recorded format, which `ttsearch import` reads back
(`ttsearch.sweep.recorded_runs`)."""

from __future__ import annotations

from ttsearch.sweep.recorded_runs import ExportSummary, export_pools


def run_export(run_dir: str, output: str, seed: int | None = None) -> ExportSummary:
    """Write the pools of `run_dir` (one seed: the smallest unless given) to `output` as JSON Lines."""
    return export_pools(run_dir, output, seed)
