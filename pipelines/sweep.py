"""`ttsearch sweep`: every (strategy, budget, seed) job on every problem, results as Parquet.

The sweep itself (sharding, resume, replicas) is `ttsearch.sweep.jobs.run_sweep`; this adds what the command reports:
the rows' counts, which decide its exit code, and the accuracy and coverage tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttsearch.analysis.pools import SampleCounts, sample_counts
from ttsearch.analysis.report import sweep_summary
from ttsearch.config import SweepConfig
from ttsearch.search.grading import GradingStats
from ttsearch.sweep.jobs import RowCounts, row_counts, run_sweep
from ttsearch.sweep.results import RunStore


@dataclass(frozen=True)
class SweepResult:
    """What a sweep run left in its output directory: what `ttsearch sweep` prints and decides its exit code on."""

    output_dir: str
    """Where the rows are saved (`output_dir`)."""
    rows: int
    """Rows saved, error rows included."""
    summary: str
    """Accuracy and coverage per strategy × budget (`ttsearch.analysis.report.sweep_summary`)."""
    counts: RowCounts
    """Done, ungraded, failed and missing rows."""
    samples: SampleCounts
    """Samples the searches generated, and what searching each budget alone would have."""
    grading: GradingStats
    """What grading did (each shard's latest run): cache hits, double failures, problems over the time bound."""

    def __str__(self) -> str:
        lines = f"{self.samples.line()}\n{self.grading.line()}\n{self.counts.line()}"
        return f"\n{self.rows} rows saved in {self.output_dir}\n\n{self.summary}\n{lines}"

    @property
    def failure(self) -> str | None:
        """Why the command exits 1: rows missing (a re-run computes them) or failed (error rows, kept)."""
        missing, failed = self.counts.missing, self.counts.failed
        if missing:
            return f"{missing} rows missing (infrastructure failures): re-run the same command to compute them"
        if failed:
            return f"{failed} rows failed (a strategy bug or a request no engine can serve): see their 'error' column"
        return None


def sweep(cfg: SweepConfig) -> SweepResult:
    """Run the jobs of `cfg` that have no row yet and count every saved row."""
    table = run_sweep(cfg)
    counts, grading = row_counts(cfg, table), RunStore(cfg.output_dir).grading()
    return SweepResult(cfg.output_dir, table.num_rows, sweep_summary(table), counts, sample_counts(table), grading)
