"""Budget sweep: every (strategy, budget, seed) cell on every problem, results as Parquet.

The problems are cut into `data.shards` fixed shards; Ray Data spreads the shards over the nodes,
each shard is one task running its own ready-queue scheduler against the shared generator and
verifier replica actors (so shards on different nodes feed the same replica pools and vLLM batches
their requests together), and writes its rows as one Parquet file when it finishes. A re-run of the
same sweep into the same `output_dir` only computes the shards whose file is missing; the sweep's
fingerprint in `sweep.json` stops a different sweep from mixing its rows into the directory.
`output_dir` may be a local path (shared by all nodes on a cluster) or a pyarrow filesystem URI
(`s3://`, `gs://`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from pipelines.metrics import ProgressCounter, SweepMetrics, run_with_progress
from ttsearch.backends import replica_pools
from ttsearch.config import MODEL_FREE_VERIFIERS, StrategySpec, SweepConfig
from ttsearch.data import load_problems
from ttsearch.grading import Grader
from ttsearch.scheduler import JobOutcome, Scheduler, Usage
from ttsearch.selection import aggregate, select
from ttsearch.strategies import SearchContext, StrategyRun, start

RESULT_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("level", pa.int32()),
        ("subject", pa.string()),
        ("strategy", pa.string()),
        ("strategy_config", pa.string()),
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
        ("generator_flops", pa.float64()),
        ("verifier_flops", pa.float64()),
        ("total_flops", pa.float64()),
        ("wall_s", pa.float64()),
        ("candidate_answers", pa.list_(pa.string())),
        ("candidate_scores", pa.list_(pa.float64())),
        ("candidate_correct", pa.list_(pa.bool_())),
        ("error", pa.string()),
        ("shard", pa.int32()),
        ("node_id", pa.string()),
    ]
)
MANIFEST = "sweep.json"


# A killed or crashed replica must take its vLLM engine processes with it (they hold RAM / GPU memory).
RAY_ENV = {"RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "1"}


def strategy_config(spec: StrategySpec) -> str:
    """One strategy configuration (its hyper-parameters), e.g. `beam(M=4)` or `best_of_n/min`."""
    revision_split = f"P={spec.revision_chains}" if spec.revision_chains else f"T={spec.revision_length}"
    params = {
        "beam": f"(M={spec.beam_width})",
        "lookahead": f"(M={spec.beam_width},k={spec.lookahead})",
        "revisions": f"({revision_split},w={spec.revision_window})",
    }
    aggregation = "" if spec.aggregation == "last" else f"/{spec.aggregation}"
    return f"{spec.name}{params.get(spec.name, '')}{aggregation}"


def strategy_label(spec: StrategySpec, selection: str) -> str:
    """Configuration plus final selection, e.g. `beam(M=4)/weighted`: one curve in the report."""
    config, _, aggregation = strategy_config(spec).partition("/")
    return f"{config}/{selection}" + (f"/{aggregation}" if aggregation else "")


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


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts read from the hosted models, for FLOPs ≈ 2 × parameters × tokens."""

    generator: int
    verifier: int  # 0 for a model-free verifier

    def flops(self, usage: Usage) -> tuple[float, float]:
        """(generator, verifier) FLOPs: the generator computed its generated tokens plus the prompt tokens
        that were not served from the prefix cache."""
        computed = usage.generated_tokens + usage.prompt_tokens - usage.cached_prompt_tokens
        return 2.0 * self.generator * computed, 2.0 * self.verifier * usage.verifier_tokens


def outcome_rows(outcome: JobOutcome, grader: Grader, sizes: ModelSizes) -> list[dict[str, Any]]:
    """One row per selection mode of the cell; every candidate is graded for coverage."""
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
        "verifier_tokens": usage.verifier_tokens,
        "generator_flops": generator_flops,
        "verifier_flops": verifier_flops,
        "total_flops": generator_flops + verifier_flops,
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


@dataclass(frozen=True)
class ShardContext:
    """What every shard task needs besides its problems (pickled once into the Ray Data stage)."""

    cfg: SweepConfig
    generators: list[Any]
    verifiers: list[Any]
    sizes: ModelSizes
    results_dir: str
    num_shards: int
    progress: Any = None  # a ProgressCounter actor, or None


async def search_problems(
    problems: list[dict[str, Any]], ctx: ShardContext, metrics: SweepMetrics | None = None
) -> list[dict[str, Any]]:
    """Run every cell of `problems` through one scheduler; grading runs beside it in a thread."""
    cfg = ctx.cfg
    with Grader() as grader, ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading") as grading:
        pools = replica_pools(ctx.generators, ctx.verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        on_dispatch = metrics.on_dispatch if metrics else None
        scheduler = Scheduler(pools, cfg.scheduler.max_in_flight, on_dispatch=on_dispatch)
        graded: list[Future] = []
        async for outcome in scheduler.run(shard_jobs(problems, cfg)):
            graded.append(grading.submit(outcome_rows, outcome, grader, ctx.sizes))
            if metrics:
                metrics.on_outcome(outcome.key[1].name, outcome)
            if ctx.progress is not None:
                ctx.progress.add.remote(1)
        rows = [row for future in graded for row in await asyncio.wrap_future(future)]
    if metrics:
        metrics.on_rows(rows)
    return rows


def search_shard(batch: pa.Table, *, ctx: ShardContext) -> pa.Table:
    """Ray Data `map_batches` function over shard descriptors: search each shard's problems, write
    its Parquet file atomically, return one summary row per shard saying where it ran."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    summaries = []
    for shard, problems in zip(batch.column("shard").to_pylist(), batch.column("problems").to_pylist(), strict=True):
        rows = asyncio.run(search_problems(problems, ctx, SweepMetrics(shard)))
        table = pa.Table.from_pylist([row | {"shard": shard, "node_id": node_id} for row in rows], schema=RESULT_SCHEMA)
        write_shard(ctx.results_dir, shard, ctx.num_shards, table)
        summaries.append({"shard": shard, "rows": table.num_rows, "node_id": node_id})
    return pa.Table.from_pylist(summaries)


def shard_file(index: int, total: int) -> str:
    return f"shard-{index:05d}-of-{total:05d}.parquet"


def write_shard(results_dir: str, index: int, total: int, table: pa.Table) -> None:
    """Write to a temporary name, then rename: a killed task never leaves a file that looks finished."""
    fs, root = pafs.FileSystem.from_uri(results_dir)
    final = f"{root}/{shard_file(index, total)}"
    partial = f"{root}/.{shard_file(index, total)}.{uuid.uuid4().hex}.partial"
    pq.write_table(table, partial, filesystem=fs)
    fs.move(partial, final)


def plan_shards(problems: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Contiguous, deterministic shards: the same sweep always cuts the same way, so it can resume."""
    shards = min(shards, len(problems))
    size, extra = divmod(len(problems), shards)
    bounds = [i * size + min(i, extra) for i in range(shards + 1)]
    return [problems[bounds[i] : bounds[i + 1]] for i in range(shards)]


def sweep_fingerprint(cfg: SweepConfig, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides which rows a sweep produces and what they mean."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    ids = hashlib.sha256("\n".join(p["unique_id"] for p in problems).encode()).hexdigest()
    return {
        "problems": ids,
        "num_problems": len(problems),
        "shards": min(cfg.data.shards, len(problems)),
        "generator_model": cfg.generator.model,
        "verifier": {"kind": cfg.verifier.kind, "model": cfg.verifier.model, "dtype": cfg.verifier.dtype},
        **{key: plain[key] for key in ("search", "strategies", "budgets", "seeds")},
    }


def output_path(output_dir: str) -> str:
    """A filesystem URI as given, a local path made absolute (shard tasks may run elsewhere)."""
    return output_dir if "://" in output_dir else str(Path(output_dir).resolve())


def prepare_output(cfg: SweepConfig, problems: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """Claim `output_dir` for this sweep (or check it is this sweep's) and list the unfinished shards.

    Fails before any compute, and without touching anything, if the directory holds another sweep.
    """
    root = output_path(cfg.output_dir)
    fs, path = pafs.FileSystem.from_uri(root)
    fingerprint = sweep_fingerprint(cfg, problems)
    manifest = f"{path}/{MANIFEST}"
    results = f"{path}/results"
    if fs.get_file_info(manifest).type == pafs.FileType.File:
        with fs.open_input_stream(manifest) as stream:
            saved = json.loads(stream.read())
        changed = sorted(key for key in fingerprint.keys() | saved.keys() if fingerprint.get(key) != saved.get(key))
        if changed:
            raise FileExistsError(
                f"{root} holds results of a different sweep (it differs in: {', '.join(changed)}); "
                "choose another output_dir"
            )
    elif fs.get_file_info(results).type != pafs.FileType.NotFound:
        raise FileExistsError(f"{results} exists but {root} has no {MANIFEST}: not a sweep of ours, refusing to mix")
    else:
        fs.create_dir(results, recursive=True)
        with fs.open_output_stream(manifest) as stream:
            stream.write(json.dumps(fingerprint, indent=2).encode())
        with fs.open_output_stream(f"{path}/config.yaml") as stream:
            stream.write(OmegaConf.to_yaml(OmegaConf.structured(cfg)).encode())
    total = fingerprint["shards"]
    done = {info.base_name for info in fs.get_file_info(pafs.FileSelector(results))}
    return f"{root}/results", [i for i in range(total) if shard_file(i, total) not in done]


def start_ray(cfg: SweepConfig, extra_cpus: float = 0.0) -> None:
    """Join the cluster (`ray_address`, or RAY_ADDRESS as set by `ray job submit`), or start a local
    instance with enough logical CPUs for every actor.

    Replicas and shard tasks mostly wait on each other, so on a small machine the logical CPUs are
    oversubscribed on purpose rather than leaving a shard task unschedulable.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.update(RAY_ENV)
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    hosted_verifiers = 0 if cfg.verifier.kind in MODEL_FREE_VERIFIERS else cfg.verifier.replicas
    wanted = (
        cfg.generator.replicas * cfg.generator.num_cpus
        + hosted_verifiers * cfg.verifier.num_cpus
        + cfg.data.shards * cfg.data.shard_num_cpus
        + extra_cpus
        + 1  # Ray Data's own tasks
    )
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(wanted)))


def start_replicas(cfg: SweepConfig) -> tuple[list[Any], list[Any]]:
    from actors.generator import create_generator_replicas
    from actors.verifier import create_verifier_replicas

    generators = create_generator_replicas(cfg.generator, cfg.cache_dir)
    hosted = cfg.verifier.kind not in MODEL_FREE_VERIFIERS
    verifiers = create_verifier_replicas(cfg.verifier, cfg.cache_dir) if hosted else []
    return generators, verifiers


def model_sizes(generators: list[Any], verifiers: list[Any]) -> ModelSizes:
    import ray

    generator = ray.get(generators[0].stats.remote())["parameters"]
    verifier = ray.get(verifiers[0].stats.remote())["num_parameters"] if verifiers else 0
    return ModelSizes(generator=int(generator), verifier=int(verifier))


def run_sweep(cfg: SweepConfig, replicas: tuple[list[Any], list[Any]] | None = None) -> pa.Table:
    """Check inputs, start replicas (unless given), search the unfinished shards, return all rows."""
    import ray

    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    results_dir, pending = prepare_output(cfg, problems)
    shards = plan_shards(problems, cfg.data.shards)
    cells = len(cfg.strategies) * len(cfg.budgets) * len(cfg.seeds)
    if pending:
        start_ray(cfg)
        generators, verifiers = replicas or start_replicas(cfg)
        progress = ProgressCounter.remote()
        ctx = ShardContext(
            cfg, generators, verifiers, model_sizes(generators, verifiers), results_dir, len(shards), progress
        )
        descriptors = [{"shard": i, "problems": shards[i]} for i in pending]
        dataset = ray.data.from_items(descriptors, override_num_blocks=len(descriptors)).map_batches(
            search_shard,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs={"ctx": ctx},
            num_cpus=cfg.data.shard_num_cpus,
            ray_remote_args_fn=_spread,
        )
        finished = sum(len(shards[i]) for i in range(len(shards)) if i not in pending) * cells
        run_with_progress(dataset.take_all, progress, len(problems) * cells, finished, "searches")
    return read_results(results_dir)


def _spread() -> dict[str, str]:
    """Shard tasks go to different nodes where they can, so the whole cluster drives the replicas."""
    return {"scheduling_strategy": "SPREAD"}


def read_results(results_dir: str) -> pa.Table:
    fs, path = pafs.FileSystem.from_uri(results_dir)
    return pq.read_table(path, filesystem=fs, schema=RESULT_SCHEMA)


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
