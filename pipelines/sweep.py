"""Budget sweep: every (strategy, budget, seed) cell on every problem, results as Parquet.

The problems are cut into `data.shards` fixed shards; Ray Data spreads the shards over the nodes,
each shard is one task running its own ready-queue scheduler against the shared generator and
verifier replica actors (so shards on different nodes feed the same replica pools and vLLM batches
their requests together), and saves its rows through the results store (`ttsearch.results`) when it
finishes. A re-run of the same sweep into the same `output_dir` computes only the cells that have no
row yet: whole missing shards, and the cells of partial shards that hit infrastructure failures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines.metrics import ProgressCounter, SweepMetrics, run_with_progress
from ttsearch.analysis import covered
from ttsearch.backends import replica_pools
from ttsearch.cells import CellKey, ShardResult, SweepStopped, cell_key, plan_shards, rows_per_problem, run_shard
from ttsearch.config import SweepConfig
from ttsearch.data import load_problems
from ttsearch.errors import TTSearchError
from ttsearch.grading import Grader
from ttsearch.results import RunStore, sweep_fingerprint
from ttsearch.runtime import ModelSizes, check_output_dir, model_sizes, start_ray, start_replicas
from ttsearch.scheduler import JobOutcome, Scheduler


@dataclass(frozen=True)
class ShardContext:
    """What every shard task needs besides its problems (pickled once into the Ray Data stage)."""

    cfg: SweepConfig
    generators: list[Any]
    verifiers: list[Any]
    sizes: ModelSizes
    output_dir: str
    num_shards: int
    progress: Any = None
    """A ProgressCounter actor, or None."""


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


def search_shard(batch: pa.Table, *, ctx: ShardContext) -> pa.Table:
    """Ray Data `map_batches` function over shard descriptors: search each shard's unfinished cells, save
    the shard, return one summary row per shard saying where it ran and what is left."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    shards = zip(batch.column("shard").to_pylist(), batch.column("problems").to_pylist(), strict=True)
    results = [asyncio.run(_search(shard, problems, ctx, node_id)) for shard, problems in shards]
    return pa.Table.from_pylist([vars(result) for result in results])


async def _search(shard: int, problems: list[dict[str, Any]], ctx: ShardContext, node_id: str) -> ShardResult:
    """One shard through `run_shard`, wired to the replicas, the metrics and the progress counter."""
    cfg, metrics = ctx.cfg, SweepMetrics(shard)

    def make_scheduler(grader: Grader) -> Scheduler:
        pools = replica_pools(ctx.generators, ctx.verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        return Scheduler.from_config(pools, cfg.scheduler, on_dispatch=metrics.on_dispatch)

    def report(keys: list[CellKey]) -> None:
        if ctx.progress is not None and keys:
            ctx.progress.add.remote(keys)

    def on_outcome(outcome: JobOutcome) -> None:
        metrics.on_outcome(outcome.key[1].name, outcome)
        report([cell_key(*outcome.key)])

    return await run_shard(
        RunStore(ctx.output_dir), shard, ctx.num_shards, problems, cfg, ctx.sizes, make_scheduler, node_id,
        on_outcome=on_outcome, on_resumed=lambda keys: report(list(keys)), on_rows=metrics.on_rows,
    )  # fmt: skip


def run_sweep(cfg: SweepConfig, replicas: tuple[list[Any], list[Any]] | None = None) -> pa.Table:
    """Check inputs, start replicas (unless given), search the unfinished cells, return every saved row
    (finished shards and partial records)."""
    import ray

    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    check_output_dir(cfg)
    store = RunStore(cfg.output_dir)
    store.claim(sweep_fingerprint(cfg, problems), cfg)
    shards = plan_shards(problems, cfg.data.shards)
    finished = store.finished_shards(len(shards))
    pending = [i for i in range(len(shards)) if i not in finished]
    cells_per_problem = len(cfg.strategies) * len(cfg.budgets) * len(cfg.seeds)
    if pending:
        start_ray(cfg)
        generators, verifiers = replicas or start_replicas(cfg)
        # On the driver's node: losing another node must not take the progress bar (and the sweep) with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        progress = ProgressCounter.options(scheduling_strategy=here).remote()
        ctx = ShardContext(
            cfg, generators, verifiers, model_sizes(generators, verifiers), store.uri, len(shards), progress
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
        # A shard task is one long call by design (it searches all its cells, for hours on a big sweep), so Ray
        # Data sees no block move until it ends; its default 30-minute no-progress timeout would kill the sweep.
        # Progress is the ProgressCounter's, and finished cells are checkpointed by the task itself.
        dataset.context.execution_no_progress_timeout_s = -1
        initial = sum(len(shards[i]) for i in finished) * cells_per_problem
        try:
            run_with_progress(dataset.take_all, progress, len(problems) * cells_per_problem, initial, "searches")
        except Exception as exc:
            cause = _user_error(exc)
            if cause is None:
                raise
            raise SweepStopped(f"{cause}; the finished cells are saved: re-run the same command for the rest") from None
    return store.read_results(include_partial=True)


def _user_error(exc: BaseException) -> TTSearchError | None:
    """The TTSearchError inside a shard task's failure (Ray wraps it, perhaps several times), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TTSearchError) and type(current).__module__ != "ray.exceptions":
            return current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__
    return None


def row_counts(cfg: SweepConfig, table: pa.Table) -> RowCounts:
    """Done / failed / missing rows of the sweep in `cfg.output_dir`, from the rows `run_sweep` returned."""
    expected = RunStore(cfg.output_dir).manifest()["num_problems"] * rows_per_problem(cfg)
    failed = table.column("error").is_valid().to_pylist().count(True)
    ungraded = pc.sum(pc.and_(pc.is_null(table.column("correct")), pc.is_null(table.column("error")))).as_py() or 0
    return RowCounts(table.num_rows - failed, ungraded, failed, expected - table.num_rows)


def _spread() -> dict[str, str]:
    """Shard tasks go to different nodes where they can, so the whole cluster drives the replicas."""
    return {"scheduling_strategy": "SPREAD"}


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
