"""The ready queue: many jobs in flight, their requests batched per target.

A job (a search; a question of `label` or `revision-data`) is a pure state machine (`RequestRun`): it yields a
list of requests and waits for all of them; the scheduler keeps up to `max_in_flight` jobs going, so while one
problem waits on its verifier scores another's step expansions fill the generator's batch. Requests from all
jobs wait in one queue per target ("generator", "verifier"); whenever a replica has room, the queue's head is
packed into one call to the least-loaded replica. Results stream back per request and are routed to their job,
which then advances. No barrier spans problems: a job only waits for its own requests.

Each job has a home replica per pool, where its earlier requests went: its requests go there while the
home is in rotation, has room and is not loaded well beyond the others, because that engine's prefix
cache holds the job's prompt, its beams' shared steps and (with the judge on the generator replicas) the
step just generated. Otherwise another replica serves it and becomes the job's new home.

Backends are anything with `submit(batch) -> async iterator of (index, result)`; Ray actor pools,
in-process verifiers and the scripted fakes of the tests all fit, so this module knows nothing about
Ray or models.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttsearch.config import SchedulerConfig
from ttsearch.search.outcomes import Failure, JobOutcome, ReplicasUnavailable, Usage
from ttsearch.search.requests import Generate, Request, RequestRejected, Result

RequestRun = Generator[list[Request], list[Result], Any]
"""A job's pure state machine, which the scheduler drives: it yields requests, receives their results, returns its
value (a search strategy's `StrategyRun`, a labeller's `LabelRun`; see `ttsearch.search.strategies.common`)."""


class Backend(Protocol):
    def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result | RequestRejected]]:
        """Serve `batch`, yielding `(index in batch, result)` as each request finishes.

        A request the engine refuses comes back as `RequestRejected`; its batch mates are still served.
        Raises `ReplicaFailed` when the replica died or cannot be reached.
        """
        ...

    async def check(self) -> None:
        """Return once the replica answers (after a restart, once its engine is up); raise if it cannot."""
        ...


class ReplicaFailed(Exception):
    """A replica died, restarted or stopped answering: its unserved requests are replayed elsewhere."""


@dataclass
class SchedulerStats:
    """What the scheduler did; the benchmark, the service's stats route and the load test read these."""

    calls: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # `request_weight` summed: the batch the engine saw
    max_batch: dict[str, int] = field(default_factory=dict)
    # The field names are the keys of the service's stats route (JSON): "runs" there are jobs.
    shared_calls: dict[str, int] = field(default_factory=dict)  # calls carrying requests of more than one job
    max_runs_per_call: dict[str, int] = field(default_factory=dict)  # the most jobs one call carried
    cancelled_runs: int = 0  # jobs whose caller went away (`Scheduler.search` cancelled)
    driver_busy_s: float = 0.0  # time spent in scheduler and strategy code, outside awaits


@dataclass(frozen=True)
class RetryPolicy:
    """How the scheduler rides out replica failures; the fields mirror `SchedulerConfig`'s keys."""

    max_request_retries: int = 3
    """Replays of one request after its replica failed (or its call raised) before its problem fails."""
    replica_wait_s: float = 600.0
    """Seconds a target may have no replica in rotation before the run stops with `ReplicasUnavailable`."""
    health_check_interval_s: float = 5.0
    """Seconds between checks of a replica taken out of rotation (each check also waits this long)."""
    call_timeout_s: float = 1800.0
    """Seconds a call may go without streaming a result before its replica counts as failed."""

    @classmethod
    def from_config(cls, cfg: SchedulerConfig) -> RetryPolicy:
        return cls(cfg.max_request_retries, cfg.replica_wait_s, cfg.health_check_interval_s, cfg.call_timeout_s)


class ReplicaPool:
    """The replicas of one target, how many sequences each has outstanding, and which are in rotation.

    A replica whose call failed leaves the rotation until it answers a health check again, so the
    least-loaded pick never lands on a dead one.
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        max_outstanding: int,
        max_batch: int,
        homes: str | None = None,
        affinity_slack: int = 32,
    ):
        if not backends:
            raise ValueError("a replica pool needs at least one backend")
        self.backends = list(backends)
        self.load = [0] * len(backends)
        self.in_rotation = [True] * len(backends)
        self.max_outstanding = max_outstanding
        self.max_batch = max_batch
        self.homes = homes
        """The target whose home replicas this pool's jobs follow, when both pools are served by the same
        replicas (the judge on the generator replicas reads where the step was generated); None: its own."""
        self.affinity_slack = affinity_slack
        self.unavailable_since: float | None = None  # monotonic time the last replica left the rotation

    def with_room(self) -> list[int]:
        """The replicas in rotation with room for another sequence, least loaded first."""
        serving = [i for i, ok in enumerate(self.in_rotation) if ok and self.load[i] < self.max_outstanding]
        return sorted(serving, key=self.load.__getitem__)

    def may_serve(self, replica: int, home: int | None, taking: int) -> bool:
        """Whether `replica`, about to take `taking` more sequences, may serve a job whose home is `home`.

        A job stays home unless its home carries more than `affinity_slack` sequences beyond this replica
        (the cache is worth that much queueing, not more). A job without a usable home (none yet, out of
        rotation, full) goes where the load is lowest, give or take the slack, so new jobs spread.
        """
        load = self.load[replica] + taking
        if home == replica:
            return True
        if home is not None and self.in_rotation[home] and self.load[home] < self.max_outstanding:
            return self.load[home] - load > self.affinity_slack
        others = [
            other
            for i, other in enumerate(self.load)
            if i != replica and self.in_rotation[i] and other < self.max_outstanding
        ]
        return not others or load <= min(others) + self.affinity_slack

    def take_out(self, replica: int) -> bool:
        """Take a failed replica out of rotation; False if it already was."""
        if not self.in_rotation[replica]:
            return False
        self.in_rotation[replica] = False
        if not any(self.in_rotation):
            self.unavailable_since = time.monotonic()
        return True

    def put_back(self, replica: int) -> None:
        self.in_rotation[replica] = True
        self.unavailable_since = None


def request_weight(request: Request) -> int:
    """Sequences a request puts on its replica: n for a generation, one per scored solution."""
    return request.n if isinstance(request, Generate) else 1


@dataclass(eq=False)  # identity: jobs are kept in sets
class _Job:
    key: Any
    steps: RequestRun
    started: float
    usage: Usage = field(default_factory=Usage)
    results: list[Result | None] = field(default_factory=list)
    pending: int = 0
    closed: bool = False
    home: dict[str, int] = field(default_factory=dict)  # target -> the replica its last requests went to
    done: asyncio.Future[JobOutcome] | None = None  # set for a `Scheduler.search` job; None: a `run` job


@dataclass
class _Item:
    job: _Job
    slot: int
    request: Request
    attempts: int = 0  # calls that failed while carrying this request
    alone: bool = False  # its last call raised: serve it in a call of its own, so a bad request shows itself


DispatchObserver = Callable[[str, int, int], None]
"""Called as (target, requests in the call, requests still queued) for every replica call."""


class Scheduler:
    """The ready queue: runs many jobs at once and serves their requests on replica pools.

    Failure handling (see the README's "Failure handling"): a call whose replica died, became
    unreachable or timed out puts its unserved requests back at the head of the queue and takes the
    replica out of rotation until it answers a health check; requests are seeded, so the replay on
    another replica is the same sample. A call that raised is split up: its requests are replayed one
    per call, so a request that fails alone fails only its own problem. After `max_request_retries`
    replays a problem fails (`Failure.INFRASTRUCTURE` or `Failure.PROBLEM` by the last cause); with no
    replica of a target in rotation for `replica_wait_s` the whole run stops with `ReplicasUnavailable`.
    An error inside the scheduler itself ends `run` with that error rather than a hang.
    """

    def __init__(
        self,
        pools: dict[str, ReplicaPool],
        max_in_flight: int,
        on_dispatch: DispatchObserver | None = None,
        retry: RetryPolicy | None = None,
        batch_window_s: float = 0.0,
    ):
        self.pools = pools
        self.max_in_flight = max_in_flight
        self.on_dispatch = on_dispatch
        self.retry = retry or RetryPolicy()
        self.batch_window_s = batch_window_s
        """How long a dispatch waits for more requests to join its calls. 0 (a sweep): requests queued in the same
        event-loop tick share a call, and the engine batches the rest. A service sets a few milliseconds, so users
        whose requests arrive that close together share one call."""
        self.stats = SchedulerStats()
        self._queues: dict[str, deque[_Item]] = {target: deque() for target in pools}
        self._tasks: set[asyncio.Task] = set()
        self._calls: dict[asyncio.Task, list[_Item]] = {}  # replica calls in flight and what they carry
        self._jobs: Iterator[tuple[Any, RequestRun]] = iter(())
        self._in_flight = 0  # `run` jobs only; `search` callers bound their own concurrency
        self._exhausted = True
        self._outcomes: asyncio.Queue[JobOutcome | None] | None = None  # set while `run` is going
        self._searches: set[_Job] = set()
        self._dispatch_scheduled = False
        self._ended = False
        self._fatal: BaseException | None = None

    @classmethod
    def from_config(
        cls, pools: dict[str, ReplicaPool], cfg: SchedulerConfig, on_dispatch: DispatchObserver | None = None
    ) -> Scheduler:
        return cls(pools, cfg.max_in_flight, on_dispatch, RetryPolicy.from_config(cfg), cfg.batch_window_s)

    async def run(self, jobs: Iterable[tuple[Any, RequestRun]]) -> AsyncIterator[JobOutcome]:
        """Run every job to completion, yielding outcomes in completion order.

        Raises `ReplicasUnavailable` when a target has had no replica for too long, or the scheduler's
        own error; outcomes already yielded stand.
        """
        if self._outcomes is not None or self._searches:
            raise RuntimeError("a scheduler runs one `run` at a time, and not alongside `search` callers")
        self._jobs = iter(jobs)
        self._in_flight = 0
        self._exhausted = False
        self._outcomes = outcomes = asyncio.Queue()
        self._dispatch_scheduled = False
        self._ended = False
        self._fatal = None
        try:
            self._dispatch()
            while (outcome := await outcomes.get()) is not None:
                yield outcome
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._outcomes = None
            await self.close()

    async def search(self, key: Any, steps: RequestRun) -> JobOutcome:
        """Run one job alongside every other job in flight and return its outcome: the entry point of
        a long-lived scheduler that many concurrent callers (a service's requests) share, so their requests
        land in the same replica calls.

        Cancelling the caller ends the job: its queued requests leave the queue, none are sent for it again,
        and a replica call carrying only its requests is cancelled, which aborts them on the replica (a call
        shared with other jobs finishes for them). Raises the scheduler's own
        error, or `ReplicasUnavailable`, if that ends every search in flight.
        """
        if self._outcomes is not None:
            raise RuntimeError("`search` cannot join a scheduler that is inside `run`")
        if self._ended:
            raise RuntimeError("this scheduler has stopped") from self._fatal
        job = _Job(key=key, steps=steps, started=time.perf_counter(), done=asyncio.get_running_loop().create_future())
        self._searches.add(job)
        try:
            self._advance(job, None)
            self._schedule_dispatch()
            return await asyncio.shield(job.done)
        except asyncio.CancelledError:
            if not job.closed:
                self.stats.cancelled_runs += 1
                self._finish(job, None, "cancelled by its caller", Failure.CANCELLED)
            raise
        finally:
            self._searches.discard(job)

    @property
    def stopped(self) -> bool:
        """A fatal error (its own, or no replica of a target for `replica_wait_s`) ended this scheduler."""
        return self._fatal is not None

    async def close(self) -> None:
        """Stop the background tasks (replica calls, health checks); a long-lived scheduler's owner calls it."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- jobs ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        while not self._exhausted and self._in_flight < self.max_in_flight:
            entry = next(self._jobs, None)
            if entry is None:
                self._exhausted = True
                break
            key, steps = entry
            self._in_flight += 1
            self._advance(_Job(key=key, steps=steps, started=time.perf_counter()), None)
        if self._exhausted and self._in_flight == 0 and self._outcomes is not None:
            self._end()

    def _end(self, fatal: BaseException | None = None) -> None:
        """`run`: its last outcome is out (or `fatal` stops it). A fatal error also fails every `search` caller,
        and stops the scheduler for good."""
        if self._ended:
            return
        self._ended, self._fatal = True, fatal
        if self._outcomes is not None:
            self._outcomes.put_nowait(None)
        for job in self._searches:  # only a fatal error ends a scheduler that `search` callers share
            if job.done is not None and not job.done.done():
                job.done.set_exception(fatal)

    def _advance(self, job: _Job, results: list[Result] | None) -> None:
        """Feed a job its results and queue what it asks for next, or finish it."""
        try:
            requests = job.steps.send(results)
            if not requests:
                raise RuntimeError("a strategy yielded an empty list of requests")
            for request in requests:
                if request.target not in self._queues:
                    raise RuntimeError(f"no replicas serve target '{request.target}'")
        except StopIteration as stop:
            self._finish(job, stop.value)
            return
        except Exception:  # a failing problem must not take the others down
            self._finish(job, None, traceback.format_exc(limit=5), Failure.PROBLEM)
            return
        job.results = [None] * len(requests)
        job.pending = len(requests)
        for slot, request in enumerate(requests):
            self._queues[request.target].append(_Item(job, slot, request))

    def _finish(self, job: _Job, value: Any, error: str | None = None, failure: Failure | None = None) -> None:
        if job.closed:
            return
        job.closed = True
        job.steps.close()
        if failure is not None:  # its other requests leave the queue instead of being served for nothing
            for queue in self._queues.values():
                alive = [item for item in queue if item.job is not job]
                queue.clear()
                queue.extend(alive)
            # ... and a call that carries nothing else is cancelled, which aborts its requests on the replica.
            current = asyncio.current_task()
            for task, batch in list(self._calls.items()):
                if task is not current and all(item.job.closed for item in batch):
                    task.cancel()
        outcome = JobOutcome(job.key, value, job.usage, time.perf_counter() - job.started, error, failure)
        if job.done is not None:
            if not job.done.done():
                job.done.set_result(outcome)
        else:
            self._in_flight -= 1
            assert self._outcomes is not None
            self._outcomes.put_nowait(outcome)
        self._schedule_dispatch()  # admit the next job there, not recursively from here

    def _route(self, item: _Item, result: Result | RequestRejected) -> None:
        job = item.job
        if job.closed:
            return
        if isinstance(result, RequestRejected):
            self._finish(job, None, f"{item.request.target} rejected a request: {result.message}", Failure.PROBLEM)
            return
        job.usage.add(item.request, result)
        job.results[item.slot] = result
        job.pending -= 1
        if job.pending == 0:
            self._advance(job, job.results)  # type: ignore[arg-type]

    def _replay(self, target: str, items: list[_Item], cause: str, failure: Failure, alone: bool) -> None:
        """Put a failed call's unserved requests back at the head of the queue, or fail their problems
        once their retries are spent."""
        again = []
        for item in items:
            if item.job.closed:
                continue
            item.attempts += 1
            if item.attempts > self.retry.max_request_retries:
                retries = f"{item.attempts} failed calls ({self.retry.max_request_retries} retries)"
                self._finish(item.job, None, f"gave up after {retries}: {cause}", failure)
            else:
                item.alone = item.alone or alone
                again.append(item)
        self._queues[target].extendleft(reversed([item for item in again if not item.job.closed]))

    # -- dispatch -----------------------------------------------------------------------------
    def _schedule_dispatch(self) -> None:
        """Coalesce all results that arrive in one event-loop tick into one dispatch."""
        if not self._dispatch_scheduled and not self._ended:
            self._dispatch_scheduled = True
            loop = asyncio.get_running_loop()
            if self.batch_window_s > 0:
                loop.call_later(self.batch_window_s, self._dispatch)
            else:
                loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        try:
            with self._busy():
                self._admit()
                for target, queue in self._queues.items():
                    while queue and (call := self._take_batch(target)) is not None:
                        self._send(target, *call)
        except BaseException as exc:  # it runs from call_soon, where an error would vanish into a hang
            self._end(exc)

    def _take_batch(self, target: str) -> tuple[int, list[_Item]] | None:
        """The next call: for the least-loaded replica with room that has queued work, the first request
        it may serve (`ReplicaPool.may_serve`), plus the ones after it while the call's sequences fit its
        room. The jobs served get that replica as their home."""
        queue, pool = self._queues[target], self.pools[target]
        homes = pool.homes or target
        for replica in pool.with_room():
            room = min(pool.max_batch, pool.max_outstanding - pool.load[replica])
            batch: list[_Item] = []
            weight = 0
            for item in queue:
                if not pool.may_serve(replica, item.job.home.get(homes), weight):
                    continue
                if batch and (item.alone or weight + request_weight(item.request) > room):
                    break
                batch.append(item)
                weight += request_weight(item.request)
                if item.alone:
                    break
            if batch:
                taken = {id(item) for item in batch}
                kept = [item for item in queue if id(item) not in taken]
                queue.clear()
                queue.extend(kept)
                for item in batch:
                    item.job.home[homes] = replica
                return replica, batch
        return None

    def _send(self, target: str, replica: int, batch: list[_Item]) -> None:
        weight = sum(request_weight(item.request) for item in batch)
        self.pools[target].load[replica] += weight
        self._record_call(target, batch, weight)
        if self.on_dispatch is not None:
            self.on_dispatch(target, len(batch), len(self._queues[target]))
        self._calls[self._spawn(self._call(target, replica, batch, weight))] = batch

    def _spawn(self, coroutine: Any, name: str | None = None) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._calls.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self._end(task.exception())

    async def _call(self, target: str, replica: int, batch: list[_Item], weight: int) -> None:
        pool = self.pools[target]
        unserved = dict(enumerate(batch))
        stream = pool.backends[replica].submit([item.request for item in batch])
        try:
            while unserved:
                try:
                    async with asyncio.timeout(self.retry.call_timeout_s):
                        index, result = await anext(stream)
                except (ReplicaFailed, TimeoutError) as exc:
                    cause = f"{target} replica {replica} failed: " + (
                        str(exc) or f"no result for {self.retry.call_timeout_s:g} s (scheduler.call_timeout_s)"
                    )
                    self._take_out(target, replica)
                    self._replay(target, list(unserved.values()), cause, Failure.INFRASTRUCTURE, alone=False)
                    return
                except StopAsyncIteration:
                    missing = f"{target} replica {replica} ended a call without {len(unserved)} results"
                    raise RuntimeError(missing) from None
                except Exception:
                    cause = f"{target} replica {replica} raised:\n{traceback.format_exc(limit=5)}"
                    self._replay(target, list(unserved.values()), cause, Failure.PROBLEM, alone=True)
                    return
                with self._busy():
                    self._route(unserved.pop(index), result)
                self._schedule_dispatch()
        finally:
            pool.load[replica] -= weight  # first: a cancellation may interrupt the close below
            self._schedule_dispatch()
            await stream.aclose()

    # -- replica health -----------------------------------------------------------------------
    def _take_out(self, target: str, replica: int) -> None:
        if self.pools[target].take_out(replica):
            self._spawn(self._bring_back(target, replica), name=f"{target} replica {replica} health check")

    async def _bring_back(self, target: str, replica: int) -> None:
        """Check a replica until it answers (Ray restarts a dead actor), then put it back in rotation;
        stop the run if its whole pool has been out for longer than `replica_wait_s`."""
        pool = self.pools[target]
        interval = self.retry.health_check_interval_s
        while True:
            started = time.monotonic()
            try:
                # Not asyncio.wait_for: on Python 3.11 it runs the check as a task of its own, and when the check
                # fails in the same tick as this task is cancelled (the run ending) it raises the check's error
                # instead of CancelledError; caught below, the cancellation was lost and `run` waited forever on
                # a loop of checks against a replica that never comes back. The timeout context runs the check
                # in this task, so a cancellation always reaches it.
                async with asyncio.timeout(interval):
                    await pool.backends[replica].check()
            except Exception:
                since = pool.unavailable_since
                if since is not None and time.monotonic() - since > self.retry.replica_wait_s:
                    raise ReplicasUnavailable(
                        f"no {target} replica has answered for {self.retry.replica_wait_s:g} s "
                        "(scheduler.replica_wait_s); see the replicas' logs in the Ray dashboard"
                    ) from None
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
                continue
            pool.put_back(replica)
            self._schedule_dispatch()
            return

    def _record_call(self, target: str, batch: list[_Item], weight: int) -> None:
        stats, size, jobs = self.stats, len(batch), len({id(item.job) for item in batch})
        stats.calls[target] = stats.calls.get(target, 0) + 1
        stats.requests[target] = stats.requests.get(target, 0) + size
        stats.sequences[target] = stats.sequences.get(target, 0) + weight
        stats.max_batch[target] = max(stats.max_batch.get(target, 0), size)
        stats.shared_calls[target] = stats.shared_calls.get(target, 0) + (jobs > 1)
        stats.max_runs_per_call[target] = max(stats.max_runs_per_call.get(target, 0), jobs)

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Adds the time spent inside the block to the driver's busy time (the overhead figure)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stats.driver_busy_s += time.perf_counter() - start
