"""Sharded, resumable work over a problem set on Ray Data: what `ttsearch sweep` and `ttsearch label` share.

The problems are cut into fixed shards; Ray Data spreads the shards over the nodes, and each shard is one task
running its own ready-queue scheduler against the shared generator and verifier replica actors (so shards on
different nodes feed the same replica pools and vLLM batches their requests together). A shard saves its rows
through the results store when it finishes, and its finished jobs every `CHECKPOINT_INTERVAL_S` while it runs,
so a re-run into the same directory computes only the jobs that have no row yet.

What a job is (a sweep's search, a labeller's question), the state machine that computes it and how a finished
job becomes rows is the `ShardWork`'s business; everything else (resume, checkpoints, failures, progress,
metrics) is here, once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Coroutine, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from ttsearch.config import GradingConfig, SweepConfig
from ttsearch.errors import TTSearchError
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import Failure, JobOutcome
from ttsearch.search.scheduler import RequestRun, Scheduler
from ttsearch.sweep.results import RunStore

CHECKPOINT_INTERVAL_S = 60.0
"""How often a shard task saves its finished jobs as its partial record while it runs."""
STOP_POLL_S = 1.0
"""How often a shard task asks whether the driver was interrupted."""
SHARD_ENDED_TIMEOUT_S = 10.0


class ShardMetrics(ABC):
    """What a shard reports to the Ray dashboard while it runs (`ttsearch.runtime.metrics`)."""

    @abstractmethod
    def on_dispatch(self, target: str, size: int, queued: int) -> None: ...

    @abstractmethod
    def on_outcome(self, outcome: JobOutcome) -> None: ...

    @abstractmethod
    def on_rows(self, rows: list[dict[str, Any]]) -> None: ...


class ShardWork(ABC):
    """One kind of sharded work: its jobs, the state machine that computes a job, and the rows a finished job
    becomes."""

    schema: ClassVar[pa.Schema]
    job_name: ClassVar[str]
    """What the progress bar calls a job: "search", "question"."""
    title: ClassVar[str]
    """The progress bar's title: "searches", "questions"."""

    @abstractmethod
    def job_keys(self, problems: list[dict[str, Any]]) -> list[Hashable]:
        """Every job key of `problems`, in the work's fixed order (a shard's rows are saved in this order)."""

    @abstractmethod
    def jobs(self, problems: list[dict[str, Any]], skip: Collection[Hashable]) -> Iterator[tuple[Any, RequestRun]]:
        """(scheduler key, state machine) for every job of `problems` whose job key is not in `skip`."""

    @abstractmethod
    def key_of_job(self, key: Any) -> Hashable:
        """The job key (as `job_keys` lists it) of a job's scheduler key (`jobs`, `JobOutcome.key`)."""

    @abstractmethod
    def key_of_row(self, row: dict[str, Any]) -> Hashable:
        """The job key of one of the job's rows."""

    @abstractmethod
    def rows(self, outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
        """The rows of a finished or deterministically failed job (graded in the shard's grading thread)."""

    @abstractmethod
    def metrics(self, shard: int) -> ShardMetrics: ...

    @abstractmethod
    def successor(self, row: dict[str, Any]) -> Hashable:
        """The job key of the job that supersedes a row of a job this work no longer has (`build_on`)."""

    @abstractmethod
    def build_on(self, rows: list[dict[str, Any]]) -> None:
        """Rows an earlier run saved for jobs this work no longer has (a sweep's pools, before its largest budget
        grew): they are dropped from the shard; the work may build on them (extend those pools)."""


class QuestionWork(ShardWork):
    """Work done a question at a time (`ttsearch label`, `revision-data`): a job is one question, keyed by its
    unique_id, its state machine `question_run(problem)`."""

    job_name = "question"
    title = "questions"

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def question_run(self, problem: dict[str, Any]) -> RequestRun: ...

    def job_keys(self, problems: list[dict[str, Any]]) -> list[Hashable]:
        return [problem["unique_id"] for problem in problems]

    def jobs(self, problems: list[dict[str, Any]], skip: Collection[Hashable]) -> Iterator[tuple[Any, RequestRun]]:
        return ((problem, self.question_run(problem)) for problem in problems if problem["unique_id"] not in skip)

    def key_of_job(self, key: Any) -> Hashable:
        return key["unique_id"]

    def key_of_row(self, row: dict[str, Any]) -> Hashable:
        return row["unique_id"]

    def build_on(self, rows: list[dict[str, Any]]) -> None:
        """Nothing to build on: a question's job (its unique_id) is the same in every run."""

    def successor(self, row: dict[str, Any]) -> Hashable:
        return self.key_of_row(row)


class SweepStopped(TTSearchError):
    """A shard task stopped on an error the user can act on; the jobs it finished are saved."""


SchedulerFactory = Callable[[Grader], Scheduler]
"""Builds a shard's scheduler around the shard's grader (model-free verifiers grade with it)."""


@dataclass(frozen=True)
class ShardResult:
    """What one shard task did; `missing` jobs hit infrastructure failures and are left for a re-run."""

    shard: int
    rows: int
    failed: int
    """Rows of jobs that failed deterministically (error rows, kept)."""
    missing: int
    """Jobs without a row: the shard is saved as a partial record, not as finished."""
    node_id: str


def plan_shards(problems: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Contiguous, deterministic shards: the same run always cuts the same way, so it can resume."""
    shards = min(shards, len(problems))
    size, extra = divmod(len(problems), shards)
    bounds = [i * size + min(i, extra) for i in range(shards + 1)]
    return [problems[bounds[i] : bounds[i + 1]] for i in range(shards)]


async def run_shard(
    store: RunStore,
    shard: int,
    total: int,
    problems: list[dict[str, Any]],
    work: ShardWork,
    make_scheduler: SchedulerFactory,
    node_id: str = "",
    on_outcome: Callable[[JobOutcome], None] | None = None,
    on_resumed: Callable[[set[Hashable]], None] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    grading_config: GradingConfig | None = None,
) -> ShardResult:
    """Compute the shard's jobs that have no row yet and save the shard.

    Jobs saved in the shard's partial record by an earlier attempt are skipped. When every job has rows
    (results, or an error row for a deterministic failure) the shard is written as finished; jobs that hit an
    infrastructure failure get no row and the finished ones go to the partial record. If the scheduler itself
    raises (e.g. `ReplicasUnavailable`), the jobs finished so far are saved as partial first; and every
    `checkpoint_interval_s` the finished jobs are saved as partial anyway, for a task killed without warning.
    The shard's grading statistics (`grading_config`'s bounds at work) are saved beside its rows.
    """
    saved = store.read_partial(shard, total)
    rows = saved.to_pylist() if saved is not None else []
    expected = set(work.job_keys(problems))
    superseded = [row for row in rows if work.key_of_row(row) not in expected]
    work.build_on(superseded)
    rows = [row for row in rows if work.key_of_row(row) in expected]
    done = {work.key_of_row(row) for row in rows}
    if on_resumed is not None:
        on_resumed(done)
    missing = 0
    grader = Grader.from_config(grading_config or GradingConfig())
    with grader, ThreadPoolExecutor(max_workers=1, thread_name_prefix="grading") as grading:
        graded: list[Future] = []

        def placed(fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [row | {"shard": shard, "node_id": node_id} for row in fresh]

        async def collect() -> list[dict[str, Any]]:
            return placed([row for future in graded for row in await asyncio.wrap_future(future)])

        def table(finished: list[dict[str, Any]], keep_superseded: bool = True) -> pa.Table:
            """Rows in the work's job order (outcomes arrive in completion order), so a resumed shard's file
            holds its rows in the same order as an uninterrupted one. A partial record keeps, after them, the superseded
            rows whose successor has not finished: a pool whose extension failed is built on by the re-run, not lost."""
            order = {key: i for i, key in enumerate(work.job_keys(problems))}
            finished = sorted(finished, key=lambda row: order[work.key_of_row(row)])
            done = {work.key_of_row(row) for row in finished}
            kept = [row for row in superseded if keep_superseded and work.successor(row) not in done]
            return pa.Table.from_pylist(finished + kept, schema=work.schema)

        try:
            checkpointed = time.monotonic()
            async for outcome in make_scheduler(grader).run(work.jobs(problems, done)):
                if outcome.failure is Failure.INFRASTRUCTURE:
                    missing += 1
                    continue
                graded.append(grading.submit(work.rows, outcome, grader))
                if on_outcome is not None:
                    on_outcome(outcome)
                if time.monotonic() - checkpointed >= checkpoint_interval_s:
                    # A task killed outright (SIGKILL, a lost node) runs no cleanup: what it finished survives here.
                    store.write_partial(shard, total, table(rows + await collect()))
                    checkpointed = time.monotonic()
        except BaseException:
            # Stopped (cancelled by `until_stopped`) or failed: save what finished, then re-raise. The save waits for
            # the grading thread without awaiting, so a second cancellation cannot cut it short; a failed save is
            # reported, and the scheduler's own error is what gets raised.
            try:
                if finished := rows + placed([row for future in graded for row in future.result()]):
                    store.write_partial(shard, total, table(finished))
            except Exception as error:
                print(f"shard {shard}: could not save its finished jobs: {error!r}", file=sys.stderr, flush=True)
            raise
        fresh = await collect()
    if on_rows is not None:
        on_rows(fresh)
    rows += fresh
    if missing:
        store.write_partial(shard, total, table(rows))
    else:
        store.write_shard(shard, total, table(rows, keep_superseded=False))
    store.write_grading(shard, total, grader.stats())
    failed = sum(row["error"] is not None for row in rows)
    return ShardResult(shard, len(rows), failed, missing, node_id)


@dataclass(frozen=True)
class ShardContext:
    """What every shard task needs besides its problems (pickled once into the Ray Data stage)."""

    cfg: SweepConfig
    work: ShardWork
    generators: list[Any]
    verifiers: list[Any]
    output_dir: str
    num_shards: int
    progress: Any = None
    """A ProgressCounter actor, or None."""


def _shard_task(batch: pa.Table, *, ctx: ShardContext) -> pa.Table:
    """Ray Data `map_batches` function over shard descriptors: compute each shard's unfinished jobs, save the
    shard, return one summary row per shard saying where it ran and what is left."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    shards = zip(batch.column("shard").to_pylist(), batch.column("problems").to_pylist(), strict=True)
    results = []
    for shard, problems in shards:
        if ctx.progress is not None:
            ctx.progress.shard_started.remote(shard)
        try:  # a cancel from Ray (KeyboardInterrupt) cancels the run too, which saves before asyncio.run re-raises
            results.append(asyncio.run(_run_shard_task(shard, problems, ctx, node_id)))
        finally:  # saved (or finished): an interrupted driver may shut Ray down now
            if ctx.progress is not None:
                ray.get(ctx.progress.shard_ended.remote(shard), timeout=SHARD_ENDED_TIMEOUT_S)
    return pa.Table.from_pylist([vars(result) for result in results])


async def _run_shard_task(shard: int, problems: list[dict[str, Any]], ctx: ShardContext, node_id: str) -> ShardResult:
    """One shard through `run_shard`, wired to the replicas, the metrics and the progress counter."""
    from ttsearch.runtime.backends import replica_pools

    cfg, work = ctx.cfg, ctx.work
    metrics = work.metrics(shard)

    def make_scheduler(grader: Grader) -> Scheduler:
        pools = replica_pools(ctx.generators, ctx.verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        return Scheduler.from_config(pools, cfg.scheduler, on_dispatch=metrics.on_dispatch)

    def report(keys: list[Hashable]) -> None:
        if ctx.progress is not None and keys:
            ctx.progress.add.remote(keys)

    def on_outcome(outcome: JobOutcome) -> None:
        metrics.on_outcome(outcome)
        report([work.key_of_job(outcome.key)])

    shard_run = run_shard(
        RunStore(ctx.output_dir, schema=work.schema),
        shard,
        ctx.num_shards,
        problems,
        work,
        make_scheduler,
        node_id,
        on_outcome=on_outcome,
        on_resumed=lambda keys: report(list(keys)),
        on_rows=metrics.on_rows,
        grading_config=cfg.grading,
    )
    return await (shard_run if ctx.progress is None else until_stopped(shard_run, ctx.progress))


async def until_stopped(shard_run: Coroutine[Any, Any, ShardResult], progress: Any) -> ShardResult:
    """Run the shard, cancelling it once the driver asks every shard to stop (`progress.stop_requested`: the command
    was interrupted). The cancelled `run_shard` saves the jobs it finished as the shard's partial record, so a
    re-run computes only the rest."""
    task = asyncio.ensure_future(shard_run)

    async def cancel_on_stop() -> None:
        while not await progress.stop_requested.remote():
            await asyncio.sleep(STOP_POLL_S)
        task.cancel()

    watcher = asyncio.ensure_future(cancel_on_stop())
    try:
        return await task
    finally:
        watcher.cancel()


WorkFactory = Callable[[list[Any], list[Any]], ShardWork]
"""Builds the work once the (generator, verifier) replicas are up: a sweep's rows bill FLOPs by their sizes."""


def run_shards(
    cfg: SweepConfig,
    make_work: WorkFactory,
    store: RunStore,
    problems: list[dict[str, Any]],
    replicas: tuple[list[Any], list[Any]] | None = None,
    needs_verifier: bool = True,
) -> pa.Table:
    """Compute every job of `problems` that has no row in `store` yet (the store is claimed by the caller),
    starting Ray and the replicas (unless given; the verifier's only if `needs_verifier`) only if there is
    something to compute; return every saved row (finished shards and partial records).

    Replicas it started are stopped when the work is done, so one process can run several models in turn (e.g.
    `eval-revision`) without two models' engines sharing the machine; after a failure they are left to Ray, which
    ends them with the driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ttsearch.runtime.metrics import ProgressCounter, run_with_progress
    from ttsearch.runtime.replicas import start_generator_replicas, start_ray, start_replicas, stop_replicas

    shards = plan_shards(problems, cfg.data.shards)
    finished = store.finished_shards(len(shards))
    pending = [i for i in range(len(shards)) if i not in finished]
    if not pending:
        return store.read_results(include_partial=True)
    start_ray(cfg)
    started = replicas is None
    if replicas is None:
        replicas = start_replicas(cfg) if needs_verifier else (start_generator_replicas(cfg), [])
    generators, verifiers = replicas
    work = make_work(generators, verifiers)
    # On the driver's node: losing another node must not take the progress bar (and the run) with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = ProgressCounter.options(scheduling_strategy=here).remote()
    ctx = ShardContext(cfg, work, generators, verifiers, store.uri, len(shards), progress)
    descriptors = [{"shard": i, "problems": shards[i]} for i in pending]
    dataset = ray.data.from_items(descriptors, override_num_blocks=len(descriptors)).map_batches(
        _shard_task,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"ctx": ctx},
        num_cpus=cfg.data.shard_num_cpus,
        ray_remote_args_fn=_spread,
    )
    # A shard task is one long call by design (it computes all its jobs, for hours on a big run), so Ray Data
    # sees no block move until it ends; its default 30-minute no-progress timeout would kill the run. Progress is
    # the ProgressCounter's, and finished jobs are checkpointed by the task itself.
    dataset.context.execution_no_progress_timeout_s = -1
    total = len(work.job_keys(problems))
    initial = sum(len(work.job_keys(shards[i])) for i in finished)
    try:
        run_with_progress(dataset.take_all, progress, total, initial, work.title, work.job_name)
    except Exception as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        raise SweepStopped(f"{cause}; the finished work is saved: re-run the same command for the rest") from None
    if started:
        stop_replicas(generators, verifiers)
    return store.read_results(include_partial=True)


def run_question_work(
    cfg: SweepConfig,
    work: QuestionWork,
    store: RunStore,
    fingerprint: dict[str, Any],
    problems: list[dict[str, Any]],
    generators: list[Any] | None = None,
) -> pa.Table:
    """Claim `store` for the run `fingerprint` describes (another run's directory is refused) and compute the
    questions without rows on the generator replicas (started unless given); return every saved row."""
    from ttsearch.runtime.replicas import check_output_dir

    check_output_dir(cfg)
    store.claim(fingerprint, cfg)
    replicas = None if generators is None else (generators, [])
    return run_shards(cfg, lambda *_: work, store, problems, replicas, needs_verifier=False)


def questions_failure(missing: int, failed: int, verb: str) -> str | None:
    """Why a question-work command (`label`, `revision-data`) exits 1, or None: questions missing (infrastructure
    failures: a re-run of the same command will `verb` them), else questions failed (error rows, kept)."""
    if missing:
        return f"{missing} questions missing (infrastructure failures): re-run the same command to {verb} them"
    if failed:
        return f"{failed} questions failed (a request no engine can serve): see their 'error' column"
    return None


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


def _spread() -> dict[str, str]:
    """Shard tasks go to different nodes where they can, so the whole cluster drives the replicas."""
    return {"scheduling_strategy": "SPREAD"}
