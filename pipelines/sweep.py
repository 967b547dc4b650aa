"""Budget sweep: every (strategy, budget, seed) cell on every problem, results as Parquet.

Ray Data splits the problems into `data.shards` blocks; each block is one Ray task running its own
ready-queue scheduler against the shared generator and verifier replica actors, so shards on
different nodes all feed the same replica pools and vLLM batches their requests together.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from ttsearch.backends import replica_pools
from ttsearch.config import MODEL_FREE_VERIFIERS, StrategySpec, SweepConfig
from ttsearch.data import load_problems
from ttsearch.grading import Grader
from ttsearch.scheduler import JobOutcome, Scheduler
from ttsearch.selection import aggregate, select
from ttsearch.strategies import SearchContext, StrategyRun, start

RESULT_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("level", pa.int32()),
        ("subject", pa.string()),
        ("strategy", pa.string()),
        ("strategy_label", pa.string()),
        ("selection", pa.string()),
        ("aggregation", pa.string()),
        ("beam_width", pa.int32()),
        ("lookahead", pa.int32()),
        ("budget", pa.int32()),
        ("seed", pa.int64()),
        ("answer", pa.string()),
        ("reference", pa.string()),
        ("correct", pa.bool_()),
        ("score", pa.float64()),
        ("samples", pa.int64()),
        ("generated_tokens", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("cached_prompt_tokens", pa.int64()),
        ("verifier_tokens", pa.int64()),
        ("wall_s", pa.float64()),
        ("candidate_answers", pa.list_(pa.string())),
        ("candidate_scores", pa.list_(pa.float64())),
        ("candidate_correct", pa.list_(pa.bool_())),
        ("error", pa.string()),
    ]
)


# A killed or crashed replica must take its vLLM engine processes with it (they hold RAM / GPU memory).
RAY_ENV = {"RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "1"}


def strategy_label(spec: StrategySpec, selection: str) -> str:
    """A readable name for one strategy configuration, e.g. `beam(M=4)/weighted`."""
    params = {"beam": f"(M={spec.beam_width})", "lookahead": f"(M={spec.beam_width},k={spec.lookahead})"}
    aggregation = "" if spec.aggregation == "last" else f"/{spec.aggregation}"
    return f"{spec.name}{params.get(spec.name, '')}/{selection}{aggregation}"


def shard_jobs(problems: list[dict[str, Any]], cfg: SweepConfig) -> Iterator[tuple[Any, StrategyRun]]:
    for problem in problems:
        for spec in cfg.strategies:
            for budget in cfg.budgets:
                for seed in cfg.seeds:
                    ctx = SearchContext(
                        uid=problem["unique_id"],
                        question=problem["problem"],
                        search=cfg.search,
                        seed=seed,
                        reference=problem["answer"],
                    )
                    yield (problem, spec, budget, seed), start(ctx, budget, spec)


def outcome_rows(outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
    """One row per selection mode of the cell; every candidate is graded for coverage."""
    problem, spec, budget, seed = outcome.key
    candidates = outcome.candidates or []
    answers = [c.answer for c in candidates]
    correct = grader.grade_many([(answer, problem["answer"]) for answer in answers])
    scores = [aggregate(c.step_scores, spec.aggregation) for c in candidates]
    usage = outcome.usage
    base = {
        "unique_id": problem["unique_id"],
        "level": problem["level"],
        "subject": problem["subject"],
        "strategy": spec.name,
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
        "verifier_tokens": usage.verifier_tokens,
        "wall_s": outcome.wall_s,
        "candidate_answers": answers,
        "candidate_scores": scores,
        "candidate_correct": correct,
        "error": outcome.error,
    }
    rows = []
    for selection in spec.selections:
        chosen = select(candidates, selection, spec.aggregation)
        index = candidates.index(chosen) if chosen is not None else None
        rows.append(
            base
            | {
                "strategy_label": strategy_label(spec, selection),
                "selection": selection,
                "answer": None if index is None else answers[index],
                "correct": False if index is None else correct[index],
                "score": None if index is None else scores[index],
            }
        )
    return rows


async def search_problems(
    problems: list[dict[str, Any]], cfg: SweepConfig, generators: list[Any], verifiers: list[Any]
) -> list[dict[str, Any]]:
    """Run every cell of `problems` through one scheduler; grading runs beside it in a thread."""
    with Grader() as grader, ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading") as grading:
        scheduler = Scheduler(
            replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader), cfg.scheduler.max_in_flight
        )
        graded: list[Future] = []
        async for outcome in scheduler.run(shard_jobs(problems, cfg)):
            graded.append(grading.submit(outcome_rows, outcome, grader))
        return [row for future in graded for row in await asyncio.wrap_future(future)]


def search_shard(batch: pa.Table, *, cfg: SweepConfig, generators: list[Any], verifiers: list[Any]) -> pa.Table:
    """Ray Data `map_batches` function: one block of problems in, its result rows out."""
    rows = asyncio.run(search_problems(batch.to_pylist(), cfg, generators, verifiers))
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def start_ray(cfg: SweepConfig, extra_cpus: float = 0.0) -> None:
    """Join `ray_address`, or start a local instance with enough logical CPUs for every actor.

    Replicas and shard tasks mostly wait on each other, so on a small machine the logical CPUs are
    oversubscribed on purpose rather than leaving a shard task unschedulable.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.update(RAY_ENV)
    if cfg.ray_address:
        ray.init(address=cfg.ray_address)
        return
    hosted_verifiers = 0 if cfg.verifier.kind in MODEL_FREE_VERIFIERS else cfg.verifier.replicas
    wanted = (
        cfg.generator.replicas * cfg.generator.num_cpus
        + hosted_verifiers * cfg.verifier.num_cpus
        + cfg.data.shards * cfg.data.shard_num_cpus
        + 1
    )  # +1: Ray Data's write tasks
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(wanted)))


def start_replicas(cfg: SweepConfig) -> tuple[list[Any], list[Any]]:
    from actors.generator import create_generator_replicas
    from actors.verifier import create_verifier_replicas

    generators = create_generator_replicas(cfg.generator, cfg.cache_dir)
    verifiers = (
        [] if cfg.verifier.kind in MODEL_FREE_VERIFIERS else create_verifier_replicas(cfg.verifier, cfg.cache_dir)
    )
    return generators, verifiers


def run_sweep(cfg: SweepConfig, replicas: tuple[list[Any], list[Any]] | None = None) -> pa.Table:
    """Check inputs, start replicas (unless given), search every shard, write Parquet, return the results."""
    import ray

    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    out_dir = Path(cfg.output_dir)
    results_dir = out_dir / "results"
    if results_dir.exists() and any(results_dir.iterdir()):
        raise FileExistsError(f"{results_dir} already holds results: choose another output_dir or remove it")
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), out_dir / "config.yaml")

    start_ray(cfg)
    generators, verifiers = replicas or start_replicas(cfg)
    shards = min(cfg.data.shards, len(problems))
    dataset = ray.data.from_items(problems, override_num_blocks=shards).map_batches(
        search_shard,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={"cfg": cfg, "generators": generators, "verifiers": verifiers},
        num_cpus=cfg.data.shard_num_cpus,
    )
    dataset.write_parquet(str(results_dir))
    return pq.read_table(results_dir, schema=RESULT_SCHEMA)


def summary(table: pa.Table) -> str:
    """Accuracy and coverage (%) per strategy × budget, averaged over problems and seeds.

    Coverage is the share of cells where any candidate was right: what an oracle verifier would get.
    """
    frame = table.select(["strategy_label", "budget", "correct", "candidate_correct"]).to_pandas()
    frame["covered"] = frame["candidate_correct"].map(any)
    parts = []
    for column, title in (("correct", "accuracy %"), ("covered", "coverage % (pass@N)")):
        pivot = frame.pivot_table(index="strategy_label", columns="budget", values=column, aggfunc="mean") * 100
        pivot.columns = [f"N={budget}" for budget in pivot.columns]
        pivot.index.name = title
        parts.append(pivot.round(1).to_string())
    return "\n\n".join(parts)
