"""Cells: the unit of work of a sweep, one (problem, strategy configuration, budget, seed) search.

A cell becomes one result row per selection mode of its strategy. This module plans shards, turns
problems into strategy runs for the scheduler, and turns finished cells into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ttsearch.config import StrategySpec, SweepConfig
from ttsearch.errors import TTSearchError
from ttsearch.grading import Grader
from ttsearch.results import RESULT_SCHEMA, RunStore
from ttsearch.runtime import ModelSizes
from ttsearch.scheduler import Failure, JobOutcome, Scheduler
from ttsearch.selection import aggregate, select
from ttsearch.strategies import (
    SEARCH_READS_VERIFIER,
    SearchContext,
    StrategyRun,
    start,
    strategy_config,
    strategy_label,
)

CHECKPOINT_INTERVAL_S = 60.0
"""How often a shard task saves its finished cells as its partial record while it runs."""

CellKey = tuple[str, str, int, int]
"""(unique_id, strategy_config, budget, seed): names a cell across runs, shards and retries."""


def cell_key(problem: dict[str, Any], spec: StrategySpec, budget: int, seed: int) -> CellKey:
    return (problem["unique_id"], strategy_config(spec), budget, seed)


def row_cell_key(row: dict[str, Any]) -> CellKey:
    return (row["unique_id"], row["strategy_config"], row["budget"], row["seed"])


def plan_shards(problems: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Contiguous, deterministic shards: the same sweep always cuts the same way, so it can resume."""
    shards = min(shards, len(problems))
    size, extra = divmod(len(problems), shards)
    bounds = [i * size + min(i, extra) for i in range(shards + 1)]
    return [problems[bounds[i] : bounds[i + 1]] for i in range(shards)]


def rows_per_problem(cfg: SweepConfig) -> int:
    """Result rows one problem yields: a row per selection of every configuration, budget and seed."""
    return sum(len(spec.selections) for spec in cfg.strategies) * len(cfg.budgets) * len(cfg.seeds)


def cells(problems: list[dict[str, Any]], cfg: SweepConfig) -> Iterator[tuple[dict[str, Any], StrategySpec, int, int]]:
    """(problem, spec, budget, seed) of every cell, in the sweep's fixed order."""
    for problem in problems:
        for spec in cfg.strategies:
            for budget in cfg.budgets:
                for seed in cfg.seeds:
                    yield problem, spec, budget, seed


def shard_jobs(
    problems: list[dict[str, Any]], cfg: SweepConfig, skip: Collection[CellKey] = ()
) -> Iterator[tuple[Any, StrategyRun]]:
    """(key, strategy run) for every cell of `problems` not in `skip`; key = (problem, spec, budget, seed)."""
    for problem, spec, budget, seed in cells(problems, cfg):
        if cell_key(problem, spec, budget, seed) in skip:
            continue
        uid, question, reference = problem["unique_id"], problem["problem"], problem["answer"]
        ctx = SearchContext(uid=uid, question=question, search=cfg.search, seed=seed, reference=reference)
        yield (problem, spec, budget, seed), start(ctx, budget, spec)


def outcome_rows(outcome: JobOutcome, grader: Grader, sizes: ModelSizes) -> list[dict[str, Any]]:
    """One row per selection mode of the cell; every candidate is graded for coverage.

    `correct` (and each `candidate_correct`) is True, False or None: None is *ungraded*, a grading failure,
    never a verdict. Majority and weighted votes group answers by the grader's equivalence. A selection
    that reads no verifier score (majority, for strategies whose search does not read the verifier either)
    is billed no verifier compute: its verifier tokens, cached verifier tokens and verifier FLOPs are all 0.
    """
    problem, spec, budget, seed = outcome.key
    candidates = outcome.candidates or []
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
        "beam_width": spec.beam_width,
        "lookahead": spec.lookahead,
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
        billed = spec.name in SEARCH_READS_VERIFIER or selection != "majority"
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


class SweepStopped(TTSearchError):
    """A shard task stopped on an error the user can act on; the cells it finished are saved."""


SchedulerFactory = Callable[[Grader], Scheduler]
"""Builds a shard's scheduler around the shard's grader (model-free verifiers grade with it)."""


@dataclass(frozen=True)
class ShardResult:
    """What one shard task did; `missing` cells hit infrastructure failures and are left for a re-run."""

    shard: int
    rows: int
    failed: int
    """Rows of cells that failed deterministically (error rows, kept)."""
    missing: int
    """Cells without a row: the shard is saved as a partial record, not as finished."""
    node_id: str


async def run_shard(
    store: RunStore,
    shard: int,
    total: int,
    problems: list[dict[str, Any]],
    cfg: SweepConfig,
    sizes: ModelSizes,
    make_scheduler: SchedulerFactory,
    node_id: str = "",
    on_outcome: Callable[[JobOutcome], None] | None = None,
    on_resumed: Callable[[set[CellKey]], None] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
) -> ShardResult:
    """Search the shard's cells that have no row yet and save the shard.

    Cells saved in the shard's partial record by an earlier attempt are skipped. When every cell has a row
    (an answer, or an error row for a deterministic failure) the shard is written as finished; cells that
    hit an infrastructure failure get no row and the finished ones go to the partial record. If the search
    itself raises (e.g. `ReplicasUnavailable`), the cells finished so far are saved as partial first; and every
    `checkpoint_interval_s` the finished cells are saved as partial anyway, for a task killed without warning.
    """
    saved = store.read_partial(shard, total)
    rows = saved.to_pylist() if saved is not None else []
    done = {row_cell_key(row) for row in rows}
    if on_resumed is not None:
        on_resumed(done)
    missing = 0
    with Grader() as grader, ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading") as grading:
        graded: list[Future] = []

        async def collect() -> list[dict[str, Any]]:
            fresh = [row for future in graded for row in await asyncio.wrap_future(future)]
            return [row | {"shard": shard, "node_id": node_id} for row in fresh]

        try:
            checkpointed = time.monotonic()
            async for outcome in make_scheduler(grader).run(shard_jobs(problems, cfg, skip=done)):
                if outcome.failure is Failure.INFRASTRUCTURE:
                    missing += 1
                    continue
                graded.append(grading.submit(outcome_rows, outcome, grader, sizes))
                if on_outcome is not None:
                    on_outcome(outcome)
                if time.monotonic() - checkpointed >= checkpoint_interval_s:
                    # A task killed outright (SIGKILL, a lost node) runs no cleanup: what it finished survives here.
                    store.write_partial(shard, total, _table(rows + await collect(), problems, cfg))
                    checkpointed = time.monotonic()
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the search's own error is what gets raised
                if finished := rows + await collect():
                    store.write_partial(shard, total, _table(finished, problems, cfg))
            raise
        fresh = await collect()
    if on_rows is not None:
        on_rows(fresh)
    rows += fresh
    table = _table(rows, problems, cfg)
    if missing:
        store.write_partial(shard, total, table)
    else:
        store.write_shard(shard, total, table)
    failed = sum(row["error"] is not None for row in rows)
    return ShardResult(shard, len(rows), failed, missing, node_id)


def _table(rows: list[dict[str, Any]], problems: list[dict[str, Any]], cfg: SweepConfig) -> pa.Table:
    """Rows in the shard's cell order (outcomes arrive in completion order), so a resumed shard's file
    holds its rows in the same order as an uninterrupted one."""
    order = {cell_key(*cell): i for i, cell in enumerate(cells(problems, cfg))}
    rows = sorted(rows, key=lambda row: order[row_cell_key(row)])
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
