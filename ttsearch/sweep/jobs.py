"""Jobs: a sweep's searches, one per (problem, strategy configuration, budget, seed).

A job becomes one result row per selection mode of its strategy. This module turns problems into jobs (a
strategy's state machine each) for the scheduler and finished jobs into rows: the sweep's `ShardWork`
(`ttsearch.sweep.sharded` runs it); `run_sweep` runs a whole sweep, so every command that sweeps
(`ttsearch sweep`, `ttsearch eval-revision`) shares one resumable path.

The problems are cut into `data.shards` fixed shards that Ray Data spreads over the nodes; each shard searches
its jobs through its own ready-queue scheduler against the shared replicas and saves its rows through the
results store (`ttsearch.sweep.results`). A re-run of the same sweep into the same `output_dir` computes only the jobs
that have no row yet: whole missing shards, and the jobs of partial shards that hit infrastructure failures.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ttsearch.config import Selection, StrategySpec, SweepConfig
from ttsearch.runtime.metrics import SweepMetrics
from ttsearch.runtime.replicas import check_output_dir, model_sizes
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import JobOutcome, ModelSizes
from ttsearch.search.selection import aggregate, select
from ttsearch.search.strategies import (
    SearchContext,
    StrategyRun,
    search_reads_verifier,
    start,
    strategy_config,
    strategy_label,
)
from ttsearch.sweep.data import load_problems
from ttsearch.sweep.results import RESULT_SCHEMA, RunStore, sweep_fingerprint
from ttsearch.sweep.sharded import ShardWork, run_shards

JobKey = tuple[str, str, int, int]
"""(unique_id, strategy_config, budget, seed): names a job across runs, shards and retries."""


def job_key(problem: dict[str, Any], spec: StrategySpec, budget: int, seed: int) -> JobKey:
    return (problem["unique_id"], strategy_config(spec), budget, seed)


def row_job_key(row: dict[str, Any]) -> JobKey:
    return (row["unique_id"], row["strategy_config"], row["budget"], row["seed"])


def rows_per_problem(cfg: SweepConfig) -> int:
    """Result rows one problem yields: a row per selection of every configuration, budget and seed."""
    return sum(len(spec.selections) for spec in cfg.strategies) * len(cfg.budgets) * len(cfg.seeds)


def sweep_jobs(
    problems: list[dict[str, Any]], cfg: SweepConfig
) -> Iterator[tuple[dict[str, Any], StrategySpec, int, int]]:
    """(problem, spec, budget, seed) of every job, in the sweep's fixed order."""
    for problem in problems:
        for spec in cfg.strategies:
            for budget in cfg.budgets:
                for seed in cfg.seeds:
                    yield problem, spec, budget, seed


def shard_jobs(
    problems: list[dict[str, Any]], cfg: SweepConfig, skip: Collection[JobKey] = ()
) -> Iterator[tuple[Any, StrategyRun]]:
    """(key, its `StrategyRun`) for every job of `problems` not in `skip`; key = (problem, spec, budget, seed)."""
    for problem, spec, budget, seed in sweep_jobs(problems, cfg):
        if job_key(problem, spec, budget, seed) in skip:
            continue
        uid, question, reference = problem["unique_id"], problem["problem"], problem["answer"]
        ctx = SearchContext(uid=uid, question=question, search=cfg.search, seed=seed, reference=reference)
        yield (problem, spec, budget, seed), start(ctx, budget, spec)


def outcome_rows(outcome: JobOutcome, grader: Grader, sizes: ModelSizes) -> list[dict[str, Any]]:
    """One row per selection mode of the job; every candidate is graded for coverage.

    `correct` (and each `candidate_correct`) is True, False or None: None is *ungraded*, a grading failure,
    never a verdict. Majority and weighted votes group answers by the grader's equivalence. A selection
    that reads no verifier score (majority, for strategies whose search does not read the verifier either)
    is billed no verifier compute: its verifier tokens, cached verifier tokens and verifier FLOPs are all 0.
    """
    problem, spec, budget, seed = outcome.key
    candidates = outcome.value or []
    answers = [c.answer for c in candidates]
    correct = grader.grade_many([(answer, problem["answer"]) for answer in answers])
    scores = [aggregate(c.step_scores, spec.aggregation) for c in candidates]
    usage = outcome.usage
    generator_flops, verifier_flops = sizes.flops(usage)
    base = {
        "unique_id": problem["unique_id"],
        "level": problem["level"],
        "subject": problem["subject"],
        "strategy": spec.name,
        "strategy_config": strategy_config(spec),
        "aggregation": spec.aggregation,
        "settings": json.dumps(spec.filled_settings()),
        "budget": budget,
        "seed": seed,
        "reference": problem["answer"],
        "samples": usage.samples,
        "generated_tokens": usage.generated_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
        "generator_flops": generator_flops,
        "wall_s": outcome.wall_s,
        "candidate_answers": answers,
        "candidate_scores": scores,
        "candidate_correct": correct,
        "candidate_generated_tokens": [c.generated_tokens for c in candidates],
        "candidate_verifier_tokens": [c.verifier_tokens for c in candidates],
        "error": outcome.error,
    }
    rows = []
    for selection in spec.selections:
        chosen = select(candidates, selection, spec.aggregation, grader.same_answers)
        index = candidates.index(chosen) if chosen is not None else None
        billed = search_reads_verifier(spec) or selection != Selection.majority
        rows.append(
            base
            | {
                "strategy_label": strategy_label(spec, selection),
                "selection": selection,
                "answer": None if index is None else answers[index],
                "correct": False if index is None else correct[index],
                "score": None if index is None else scores[index],
                "verifier_tokens": usage.verifier_tokens if billed else 0,
                "cached_verifier_tokens": usage.cached_verifier_tokens if billed else 0,
                "verifier_flops": verifier_flops if billed else 0.0,
                "total_flops": generator_flops + (verifier_flops if billed else 0.0),
            }
        )
    return rows


class SweepWork(ShardWork):
    """A sweep's shards: a job is one search, its rows one per selection mode (`outcome_rows`)."""

    schema = RESULT_SCHEMA
    job_name = "search"
    title = "searches"

    def __init__(self, cfg: SweepConfig, sizes: ModelSizes) -> None:
        self.cfg, self.sizes = cfg, sizes

    def job_keys(self, problems: list[dict[str, Any]]) -> list[Hashable]:
        return [job_key(*job) for job in sweep_jobs(problems, self.cfg)]

    def jobs(self, problems: list[dict[str, Any]], skip: Collection[Hashable]) -> Iterator[tuple[Any, StrategyRun]]:
        return shard_jobs(problems, self.cfg, skip)

    def key_of_job(self, key: Any) -> Hashable:
        return job_key(*key)

    def key_of_row(self, row: dict[str, Any]) -> Hashable:
        return row_job_key(row)

    def rows(self, outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
        return outcome_rows(outcome, grader, self.sizes)

    def metrics(self, shard: int) -> SweepMetrics:
        return SweepMetrics(shard)


@dataclass(frozen=True)
class RowCounts:
    """The sweep's rows after a run: what `ttsearch sweep` reports and decides its exit code on."""

    done: int
    ungraded: int
    """Done rows whose chosen answer could not be graded (grading failed twice): kept, left out of accuracy."""
    failed: int
    """Error rows: jobs that failed deterministically (a strategy bug, a request no engine can serve)."""
    missing: int
    """Rows not computed yet (infrastructure failures, a stopped run): a re-run computes them."""

    def line(self) -> str:
        return (
            f"rows: {self.done} done ({self.ungraded} ungraded), {self.failed} failed (problem errors), "
            f"{self.missing} missing"
        )


def run_sweep(cfg: SweepConfig, replicas: tuple[list[Any], list[Any]] | None = None) -> pa.Table:
    """Check inputs, claim the output directory, search the unfinished jobs (starting replicas unless given, and
    stopping them at the end), return every saved row (finished shards and partial records)."""
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
