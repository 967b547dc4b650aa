"""Jobs: a sweep's searches, one per (problem, strategy configuration, budget, seed).

A job becomes one result row per selection mode of its strategy. A pooled strategy (best-of-N, DVTS, revisions
at a fixed chain length: `Strategy.pool_unit`) searches only the sweep's largest budget, and its job's rows cover
every budget, the smaller ones derived from its samples (`ttsearch.sweep.pools`). This module turns problems into
jobs (a strategy's state machine each) for the scheduler and finished jobs into rows: the sweep's `ShardWork`
(`ttsearch.sweep.sharded` runs it); `run_sweep` runs a whole sweep, so every command that sweeps
(`ttsearch sweep`, `ttsearch eval-revision`) shares one resumable path.

The problems are cut into `data.shards` fixed shards that Ray Data spreads over the nodes; each shard searches
its jobs through its own ready-queue scheduler against the shared replicas and saves its rows through the
results store (`ttsearch.sweep.results`). A re-run of the same sweep into the same `output_dir` computes only the jobs
that have no row yet: whole missing shards, and the jobs of partial shards that hit infrastructure failures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ttsearch.config import StrategySpec, SweepConfig, searches
from ttsearch.runtime.metrics import SweepMetrics
from ttsearch.runtime.replicas import check_output_dir, model_sizes
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import JobOutcome, ModelSizes
from ttsearch.search.strategies import SearchContext, StrategyRun, start, strategy, strategy_config
from ttsearch.search.strategies.registry import pool_search, pooled
from ttsearch.sweep.data import load_problems
from ttsearch.sweep.pools import PoolKey, SavedPool, after, merged_usage, pool_rows, saved_pools
from ttsearch.sweep.results import RESULT_SCHEMA, RunStore, sweep_fingerprint
from ttsearch.sweep.sharded import ShardWork, run_shards

JobKey = tuple[str, str, int, int]
"""(unique_id, strategy_config, budget, seed): names a job across runs, shards and retries."""


def job_key(problem: dict[str, Any], spec: StrategySpec, budget: int, seed: int) -> JobKey:
    return (problem["unique_id"], strategy_config(spec), budget, seed)


def row_job_key(row: dict[str, Any]) -> JobKey:
    """The job a row came from: its pool's (`pool_budget`) for a row derived from a sample pool."""
    pool_budget = row.get("pool_budget")
    budget = row["budget"] if pool_budget is None or pool_budget != pool_budget else pool_budget  # NaN: older file
    return (row["unique_id"], row["strategy_config"], int(budget), row["seed"])


def rows_per_problem(cfg: SweepConfig) -> int:
    """Result rows one problem yields: a row per selection of every configuration, budget and seed."""
    return sum(len(spec.selections) for spec in cfg.strategies) * len(cfg.budgets) * len(cfg.seeds)


def sweep_jobs(
    problems: list[dict[str, Any]], cfg: SweepConfig
) -> Iterator[tuple[dict[str, Any], StrategySpec, int, int]]:
    """(problem, spec, budget, seed) of every job, in the sweep's fixed order: a pooled strategy's at its largest
    budget only (`ttsearch.config.searches`)."""
    for problem in problems:
        for spec in cfg.strategies:
            for _, budget in searches(spec, cfg.budgets):
                for seed in cfg.seeds:
                    yield problem, spec, budget, seed


def shard_jobs(
    problems: list[dict[str, Any]],
    cfg: SweepConfig,
    skip: Collection[JobKey] = (),
    saved: dict[PoolKey, SavedPool] | None = None,
) -> Iterator[tuple[Any, StrategyRun]]:
    """(key, its `StrategyRun`) for every job of `problems` not in `skip`; key = (problem, spec, budget, seed).

    A pool job whose smaller pool an earlier run saved (`saved`: the sweep's largest budget grew) samples only the
    units after the saved ones, when its strategy can (`Strategy.pool_extend`)."""
    for problem, spec, budget, seed in sweep_jobs(problems, cfg):
        if job_key(problem, spec, budget, seed) in skip:
            continue
        uid, question, reference = problem["unique_id"], problem["problem"], problem["answer"]
        ctx = SearchContext(uid=uid, question=question, search=cfg.search, seed=seed, reference=reference)
        search = pool_search(spec) if pooled(spec, cfg.budgets) else spec  # early stopping's pool: its inner
        grown = extended_pool(cfg, saved or {}, uid, spec, budget, seed)
        if grown is not None:
            extend = strategy(search.name).pool_extend
            yield (problem, spec, budget, seed), after(grown, extend(ctx, budget, search, len(grown.candidates)))
        else:
            yield (problem, spec, budget, seed), start(ctx, budget, search)


def extended_pool(
    cfg: SweepConfig, saved: dict[PoolKey, SavedPool], uid: str, spec: StrategySpec, budget: int, seed: int
) -> SavedPool | None:
    """The saved pool a job extends: a smaller one of the same configuration, when its search can sample just the
    units after it (`Strategy.pool_extend`); None: the job searches its whole budget."""
    grown = saved.get((uid, strategy_config(spec), seed))
    if grown is None or grown.budget >= budget or not pooled(spec, cfg.budgets):
        return None
    return grown if strategy(pool_search(spec).name).pool_extend is not None else None


def outcome_rows(
    outcome: JobOutcome, grader: Grader, sizes: ModelSizes, budgets: list[int] | None = None, subsets: int = 256
) -> list[dict[str, Any]]:
    """The job's rows (`ttsearch.sweep.pools.pool_rows`): at its own budget, and at each of `budgets` below it
    when its strategy pools its samples."""
    problem, spec, budget, seed = outcome.key
    budgets = [b for b in budgets if b <= budget] if budgets and pooled(spec, budgets) else [budget]
    return pool_rows(
        problem,
        spec,
        seed,
        budgets,
        outcome.value or [],
        outcome.usage,
        outcome.wall_s,
        grader,
        sizes,
        subsets,
        pool_budget=budget,
        error=outcome.error,
    )


class SweepWork(ShardWork):
    """A sweep's shards: a job is one search, its rows one per selection mode (`outcome_rows`)."""

    schema = RESULT_SCHEMA
    job_name = "search"
    title = "searches"

    def __init__(self, cfg: SweepConfig, sizes: ModelSizes) -> None:
        self.cfg, self.sizes = cfg, sizes
        self.saved: dict[PoolKey, SavedPool] = {}
        """Pools an earlier run saved at a smaller largest budget: extended rather than searched again."""

    def build_on(self, rows: list[dict[str, Any]]) -> None:
        self.saved = saved_pools(rows)

    def successor(self, row: dict[str, Any]) -> Hashable:
        """A superseded row belongs to a pool of a smaller largest budget: the pool job at today's supersedes it."""
        return (row["unique_id"], row["strategy_config"], max(self.cfg.budgets), row["seed"])

    def job_keys(self, problems: list[dict[str, Any]]) -> list[Hashable]:
        return [job_key(*job) for job in sweep_jobs(problems, self.cfg)]

    def jobs(self, problems: list[dict[str, Any]], skip: Collection[Hashable]) -> Iterator[tuple[Any, StrategyRun]]:
        return shard_jobs(problems, self.cfg, skip, self.saved)

    def key_of_job(self, key: Any) -> Hashable:
        return job_key(*key)

    def key_of_row(self, row: dict[str, Any]) -> Hashable:
        return row_job_key(row)

    def rows(self, outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
        problem, spec, budget, seed = outcome.key
        grown = extended_pool(self.cfg, self.saved, problem["unique_id"], spec, budget, seed)
        if grown is not None and outcome.error is None:  # an extended pool: both parts
            shared_prompt = strategy(pool_search(spec).name).pool_shared_prompt
            usage = merged_usage(grown, outcome.usage, shared_prompt)
            outcome = dataclasses.replace(outcome, usage=usage, wall_s=outcome.wall_s + grown.wall_s)
        return outcome_rows(outcome, grader, self.sizes, self.cfg.budgets, self.cfg.pool_subsets)

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
