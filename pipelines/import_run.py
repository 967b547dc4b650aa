"""`ttsearch import`: recorded generations (another run's samples, verifier scores and answers) as a run directory
that `ttsearch report`, `optimize` and `export` read like a sweep's (`ttsearch.sweep.recorded_runs`)."""

from __future__ import annotations

from ttsearch.config import SweepConfig
from ttsearch.sweep.recorded_runs import ImportSummary, import_recorded


def run_import(cfg: SweepConfig, source: str, run_dir: str) -> ImportSummary:
    """Import `source` (in `cfg.recorded.format`) into `run_dir`; the summary counts the samples without an answer."""
    return import_recorded(cfg, source, run_dir)
