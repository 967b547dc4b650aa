"""Budget sweep: every (strategy, budget, seed) cell on every problem, results as Parquet.

The problems are cut into `data.shards` fixed shards that Ray Data spreads over the nodes (`ttsearch.sharded`);
each shard searches its cells through its own ready-queue scheduler against the shared replicas and saves its rows
through the results store (`ttsearch.results`). A re-run of the same sweep into the same `output_dir` computes
only the cells that have no row yet: whole missing shards, and the cells of partial shards that hit
infrastructure failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ttsearch.analysis import covered
from ttsearch.cells import SweepWork, rows_per_problem
from ttsearch.config import SweepConfig
from ttsearch.data import load_problems
from ttsearch.results import RunStore, sweep_fingerprint
from ttsearch.runtime import check_output_dir, model_sizes
from ttsearch.sharded import run_shards


@dataclass(frozen=True)
class RowCounts:
    """The sweep's rows after a run: what `ttsearch sweep` reports and decides its exit code on."""

    done: int
    ungraded: int
    """Done rows whose chosen answer could not be graded (grading failed twice): kept, left out of accuracy."""
    failed: int
    """Error rows: cells that failed deterministically (a strategy bug, a request no engine can serve)."""
    missing: int
    """Rows not computed yet (infrastructure failures, a stopped run): a re-run computes them."""

    def line(self) -> str:
        return (
            f"rows: {self.done} done ({self.ungraded} ungraded), {self.failed} failed (problem errors), "
            f"{self.missing} missing"
        )


def run_sweep(cfg: SweepConfig, replicas: tuple[list[Any], list[Any]] | None = None) -> pa.Table:
    """Check inputs, claim the output directory, search the unfinished cells (starting replicas unless given),
    return every saved row (finished shards and partial records)."""
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    check_output_dir(cfg)
    store = RunStore(cfg.output_dir)
    store.claim(sweep_fingerprint(cfg, problems), cfg)
    return run_shards(cfg, lambda gens, vers: SweepWork(cfg, model_sizes(gens, vers)), store, problems, replicas)


def row_counts(cfg: SweepConfig, table: pa.Table) -> RowCounts:
    """Done / failed / missing rows of the sweep in `cfg.output_dir`, from the rows `run_sweep` returned."""
    expected = RunStore(cfg.output_dir).manifest()["num_problems"] * rows_per_problem(cfg)
    failed = table.column("error").is_valid().to_pylist().count(True)
    ungraded = pc.sum(pc.and_(pc.is_null(table.column("correct")), pc.is_null(table.column("error")))).as_py() or 0
    return RowCounts(table.num_rows - failed, ungraded, failed, expected - table.num_rows)


def summary(table: pa.Table) -> str:
    """Accuracy and coverage (%) per strategy × budget, averaged over problems and seeds; error rows left out,
    ungraded rows left out of accuracy.

    Coverage is the share of cells where any candidate was right: what an oracle verifier would get.
    """
    frame = table.select(["strategy_label", "budget", "correct", "candidate_correct", "error"]).to_pandas()
    frame = frame[frame["error"].isna()]
    if frame.empty:
        return "no rows without an error"
    frame["correct"] = frame["correct"].astype("float")  # ungraded (None) becomes NaN, which the mean skips
    frame["covered"] = frame["candidate_correct"].map(covered)
    parts = []
    for column, title in (("correct", "accuracy %"), ("covered", "coverage % (pass@N)")):
        pivot = frame.pivot_table(index="strategy_label", columns="budget", values=column, aggfunc="mean") * 100
        pivot.columns = [f"N={budget}" for budget in pivot.columns]
        pivot.index.name = title
        parts.append(pivot.round(1).to_string())
    return "\n\n".join(parts)
