"""Partial shards with fakes (no Ray, no model): infrastructure failures leave jobs for a re-run, which
computes exactly those and ends with the rows of an uninterrupted run; deterministic failures keep error rows."""

from __future__ import annotations

import pytest

from tests.fixtures import FakeScheduler
from ttsearch.config import load_config
from ttsearch.search.outcomes import Failure, ModelSizes, ReplicasUnavailable
from ttsearch.sweep.jobs import SweepWork, row_job_key, rows_per_problem
from ttsearch.sweep.results import RunStore
from ttsearch.sweep.sharded import ShardResult, run_shard, until_stopped

PROBLEMS = [
    {"unique_id": f"p{i}", "problem": f"What is {i} + 0?", "answer": str(i % 2), "subject": "Algebra", "level": 1}
    for i in range(3)
]
CFG = load_config(
    None,
    [
        "strategies=[{name: best_of_n, selections: [naive, majority]}, {name: beam, beam_width: 2}]",
        "budgets=[2,4]",
        "seeds=[0,1]",
        "verifier.kind=majority",
    ],
)
JOBS = len(PROBLEMS) * (1 + 2) * 2  # best-of-N: one pool at budget 4 (its budget-2 rows derived); beam: both budgets
ROWS = len(PROBLEMS) * rows_per_problem(CFG)
SIZES = ModelSizes(generator=100, verifier=10)


def shard(store: RunStore, scheduler: FakeScheduler) -> ShardResult:
    import asyncio

    return asyncio.run(run_shard(store, 0, 1, PROBLEMS, SweepWork(CFG, SIZES), lambda grader: scheduler, node_id="n"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    store = RunStore(tmp_path_factory.mktemp("full"))
    assert shard(store, FakeScheduler()) == ShardResult(0, ROWS, 0, 0, "n")
    return store.read_results().to_pylist()


def test_infrastructure_failures_leave_a_partial_shard_that_a_rerun_completes(tmp_path, uninterrupted):
    store = RunStore(tmp_path)
    lost = {("p1", "best_of_n", 4, 1), ("p2", "beam(M=2)", 2, 0)}
    first = shard(store, FakeScheduler(lambda key: Failure.INFRASTRUCTURE if key in lost else None))
    assert (first.missing, first.failed) == (2, 0)
    assert store.finished_shards(1) == set(), "a shard with missing jobs is not finished"
    assert store.read_results().num_rows == 0
    saved = store.read_partial(0, 1).to_pylist()
    assert len(saved) == first.rows == len(uninterrupted) - 4 - 1, "2 jobs lost: best-of-N's pool has 4 rows, beam 1"

    rerun = FakeScheduler()
    second = shard(store, rerun)
    assert set(rerun.ran) == lost and len(rerun.ran) == 2, "only the missing jobs ran again"
    assert second == ShardResult(0, len(uninterrupted), 0, 0, "n")
    assert store.finished_shards(1) == {0} and store.read_partial(0, 1) is None
    assert store.read_results().to_pylist() == uninterrupted, "same rows, contents and order as one whole run"


def test_problem_failures_keep_error_rows_and_finish_the_shard(tmp_path):
    store = RunStore(tmp_path)
    bad = ("p0", "beam(M=2)", 4, 0)
    result = shard(store, FakeScheduler(lambda key: Failure.PROBLEM if key == bad else None))
    assert (result.missing, result.failed) == (0, 1)
    assert store.finished_shards(1) == {0}
    errors = [row for row in store.read_results().to_pylist() if row["error"] is not None]
    assert [(r["unique_id"], r["strategy_config"], r["budget"], r["seed"]) for r in errors] == [bad]
    assert store.read_partial(0, 1) is None, "nothing left for a re-run: `run_sweep` skips finished shards"


def test_a_stopped_search_saves_its_finished_jobs_before_raising(tmp_path, uninterrupted):
    store = RunStore(tmp_path)
    with pytest.raises(ReplicasUnavailable):
        shard(store, FakeScheduler(stop_after=5))
    assert len({row_job_key(row) for row in store.read_partial(0, 1).to_pylist()}) == 5
    rerun = FakeScheduler()
    shard(store, rerun)
    assert len(rerun.ran) == JOBS - 5
    assert store.read_results().to_pylist() == uninterrupted


def test_finished_jobs_are_checkpointed_while_the_shard_runs(tmp_path, uninterrupted):
    """A task killed outright (SIGKILL, a lost node) runs no cleanup: the periodic partial record is what survives."""
    import asyncio

    store = RunStore(tmp_path)
    saved_before_each_job: list[int] = []

    class Peeking(FakeScheduler):
        async def run(self, jobs):
            async for outcome in super().run(jobs):
                partial = store.read_partial(0, 1)
                saved = set() if partial is None else {row_job_key(row) for row in partial.to_pylist()}
                saved_before_each_job.append(len(saved))
                yield outcome

    def run(interval: float) -> None:
        saved_before_each_job.clear()
        asyncio.run(
            run_shard(
                store,
                0,
                1,
                PROBLEMS,
                SweepWork(CFG, SIZES),
                lambda grader: Peeking(),
                node_id="n",
                checkpoint_interval_s=interval,
            )
        )

    run(interval=3600.0)
    assert saved_before_each_job == [0] * JOBS, "no checkpoint within the interval"
    store.fs.delete_dir_contents(store.path("results"))
    run(interval=0.0)
    assert saved_before_each_job == list(range(JOBS)), "every finished job saved before the next one is handed out"
    assert store.read_results().to_pylist() == uninterrupted


class StopRequests:
    """The driver's side of a stop (`ProgressCounter.stop_requested`), as an awaitable the way a Ray call is."""

    def __init__(self) -> None:
        self.requested = False
        self.stop_requested = self

    def remote(self):
        async def answer() -> bool:
            return self.requested

        return answer()


def test_a_shard_told_to_stop_saves_its_finished_jobs_and_a_rerun_computes_the_rest(
    tmp_path, uninterrupted, monkeypatch
):
    """What an interrupted command does (`ttsearch.runtime.interrupts`): the driver asks every shard to stop; each
    cancels its `run_shard`, which saves the jobs it finished, and the re-run computes exactly the others."""
    import asyncio

    import ttsearch.sweep.sharded

    monkeypatch.setattr(ttsearch.sweep.sharded, "STOP_POLL_S", 0.01)
    store, stop = RunStore(tmp_path), StopRequests()

    class Interrupted(FakeScheduler):
        async def run(self, jobs):
            async for outcome in super().run(jobs):
                yield outcome
                if len(self.ran) == 5:
                    stop.requested = True
                    await asyncio.sleep(3600)  # the sixth job is still searching when the stop comes

    work = SweepWork(CFG, SIZES)
    shard_run = run_shard(store, 0, 1, PROBLEMS, work, lambda grader: Interrupted(), node_id="n")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(asyncio.wait_for(until_stopped(shard_run, stop), timeout=30))
    saved = {row_job_key(row) for row in store.read_partial(0, 1).to_pylist()}
    assert len(saved) == 5
    rerun = FakeScheduler()
    shard(store, rerun)
    assert len(rerun.ran) == JOBS - 5 and not saved & set(rerun.ran)
    assert store.read_results().to_pylist() == uninterrupted


def test_a_shard_nobody_stops_runs_to_its_end(tmp_path, uninterrupted):
    import asyncio

    store = RunStore(tmp_path)
    shard_run = run_shard(store, 0, 1, PROBLEMS, SweepWork(CFG, SIZES), lambda grader: FakeScheduler(), node_id="n")
    result = asyncio.run(until_stopped(shard_run, StopRequests()))
    assert result == ShardResult(0, len(uninterrupted), 0, 0, "n")
