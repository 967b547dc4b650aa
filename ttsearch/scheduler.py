"""The ready queue: many strategy runs in flight, their requests batched per target.

Every strategy run yields a list of requests and waits for all of them; the scheduler keeps up to
`max_in_flight` runs going, so while one problem waits on its verifier scores another's step
expansions fill the generator's batch. Requests from all runs wait in one queue per target
("generator", "verifier"); whenever a replica has room, the queue's head is packed into one call to
the least-loaded replica. Results stream back per request and are routed to their run, which then
advances. No barrier spans problems: a run only waits for its own requests.

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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ttsearch.errors import TTSearchError
from ttsearch.requests import Generate, GenerateResult, Request, Result, ScoreResult
from ttsearch.strategies.common import Candidate, StrategyRun


class Backend(Protocol):
    def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result]]:
        """Serve `batch`, yielding `(index in batch, result)` as each request finishes."""
        ...


@dataclass
class Usage:
    """Compute one problem's search consumed."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    samples: int = 0  # sequences sampled (the paper's "generations")
    verifier_tokens: int = 0
    scored_solutions: int = 0

    def merge(self, other: Usage) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def add(self, request: Request, result: Result) -> None:
        if isinstance(result, GenerateResult):
            self.generated_tokens += sum(c.num_tokens for c in result.completions)
            self.prompt_tokens += result.prompt_tokens
            self.cached_prompt_tokens += result.cached_prompt_tokens
            self.samples += len(result.completions)
        elif isinstance(result, ScoreResult):
            self.verifier_tokens += result.tokens
            self.scored_solutions += 1


class ReplicasUnavailable(TTSearchError):
    """Every replica of a target stayed out of rotation for `replica_wait_s`: the run stops instead of hanging."""


class Failure(StrEnum):
    """Why a cell did not finish; decides whether a re-run computes it again."""

    PROBLEM = "problem"
    """Deterministic: a strategy bug or a request no engine can serve. Replaying gives the same error, so the
    cell keeps an error row."""
    INFRASTRUCTURE = "infrastructure"
    """Replicas died or timed out and the request's retries ran out: nothing about the cell is wrong, so it is
    never written as finished and a re-run computes it again."""


@dataclass
class JobOutcome:
    key: Any
    candidates: list[Candidate] | None  # None when the run failed
    usage: Usage
    wall_s: float
    error: str | None = None
    failure: Failure | None = None  # None when the run finished


@dataclass
class SchedulerStats:
    """What the scheduler did; the benchmark reads these."""

    calls: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    max_batch: dict[str, int] = field(default_factory=dict)
    driver_busy_s: float = 0.0  # time spent in scheduler and strategy code, outside awaits


class ReplicaPool:
    """The replicas of one target and how many sequences each has outstanding."""

    def __init__(self, backends: Sequence[Backend], max_outstanding: int, max_batch: int):
        if not backends:
            raise ValueError("a replica pool needs at least one backend")
        self.backends = list(backends)
        self.load = [0] * len(backends)
        self.max_outstanding = max_outstanding
        self.max_batch = max_batch

    def least_loaded(self) -> int | None:
        index = min(range(len(self.backends)), key=self.load.__getitem__)
        return index if self.load[index] < self.max_outstanding else None


def request_weight(request: Request) -> int:
    """Sequences a request puts on its replica: n for a generation, one per scored solution."""
    return request.n if isinstance(request, Generate) else 1


@dataclass
class _Run:
    key: Any
    steps: StrategyRun
    started: float
    usage: Usage = field(default_factory=Usage)
    results: list[Result | None] = field(default_factory=list)
    pending: int = 0
    closed: bool = False


@dataclass
class _Item:
    run: _Run
    slot: int
    request: Request


DispatchObserver = Callable[[str, int, int], None]
"""Called as (target, requests in the call, requests still queued) for every replica call."""


class Scheduler:
    def __init__(self, pools: dict[str, ReplicaPool], max_in_flight: int, on_dispatch: DispatchObserver | None = None):
        self.pools = pools
        self.max_in_flight = max_in_flight
        self.on_dispatch = on_dispatch
        self.stats = SchedulerStats()
        self._queues: dict[str, deque[_Item]] = {target: deque() for target in pools}
        self._calls: set[asyncio.Task] = set()

    async def run(self, jobs: Iterable[tuple[Any, StrategyRun]]) -> AsyncIterator[JobOutcome]:
        """Run every job to completion, yielding outcomes in completion order."""
        self._jobs = iter(jobs)
        self._in_flight = 0
        self._exhausted = False
        self._outcomes: asyncio.Queue[JobOutcome | None] = asyncio.Queue()
        self._dispatch_scheduled = False
        self._ended = False
        self._dispatch()
        while (outcome := await self._outcomes.get()) is not None:
            yield outcome

    # -- runs ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        while not self._exhausted and self._in_flight < self.max_in_flight:
            job = next(self._jobs, None)
            if job is None:
                self._exhausted = True
                break
            key, steps = job
            self._in_flight += 1
            self._advance(_Run(key=key, steps=steps, started=time.perf_counter()), None)
        if self._exhausted and self._in_flight == 0 and not self._ended:
            self._ended = True
            self._outcomes.put_nowait(None)

    def _advance(self, run: _Run, results: list[Result] | None) -> None:
        """Feed a run its results and queue what it asks for next, or finish it."""
        try:
            requests = run.steps.send(results)
            if not requests:
                raise RuntimeError("a strategy yielded an empty list of requests")
            for request in requests:
                if request.target not in self._queues:
                    raise RuntimeError(f"no replicas serve target '{request.target}'")
        except StopIteration as stop:
            self._finish(run, stop.value, None)
            return
        except Exception:  # a failing problem must not take the others down
            self._finish(run, None, traceback.format_exc(limit=5))
            return
        run.results = [None] * len(requests)
        run.pending = len(requests)
        for slot, request in enumerate(requests):
            self._queues[request.target].append(_Item(run, slot, request))

    def _finish(self, run: _Run, candidates: list[Candidate] | None, error: str | None) -> None:
        if run.closed:
            return
        run.closed = True
        run.steps.close()
        self._in_flight -= 1
        wall = time.perf_counter() - run.started
        self._outcomes.put_nowait(JobOutcome(run.key, candidates, run.usage, wall, error))
        self._schedule_dispatch()  # admit the next job there, not recursively from here

    def _route(self, item: _Item, result: Result) -> None:
        run = item.run
        if run.closed:
            return
        run.usage.add(item.request, result)
        run.results[item.slot] = result
        run.pending -= 1
        if run.pending == 0:
            self._advance(run, run.results)  # type: ignore[arg-type]

    # -- dispatch -----------------------------------------------------------------------------
    def _schedule_dispatch(self) -> None:
        """Coalesce all results that arrive in one event-loop tick into one dispatch."""
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        with self._busy():
            self._admit()
            for target, queue in self._queues.items():
                pool = self.pools[target]
                while queue and (replica := pool.least_loaded()) is not None:
                    room = min(pool.max_batch, pool.max_outstanding - pool.load[replica])
                    batch = [queue.popleft()]
                    weight = request_weight(batch[0].request)
                    while queue and weight + request_weight(queue[0].request) <= room:
                        weight += request_weight(queue[0].request)
                        batch.append(queue.popleft())
                    pool.load[replica] += weight
                    self._record_call(target, len(batch))
                    if self.on_dispatch is not None:
                        self.on_dispatch(target, len(batch), len(queue))
                    task = asyncio.create_task(self._call(target, replica, batch, weight))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)

    async def _call(self, target: str, replica: int, batch: list[_Item], weight: int) -> None:
        pool = self.pools[target]
        served: set[int] = set()
        try:
            async for index, result in pool.backends[replica].submit([item.request for item in batch]):
                with self._busy():
                    served.add(index)
                    self._route(batch[index], result)
                self._schedule_dispatch()
        except Exception:
            error = f"{target} replica {replica} failed:\n{traceback.format_exc(limit=5)}"
            for index, item in enumerate(batch):
                if index not in served:
                    self._finish(item.run, None, error)
        finally:
            pool.load[replica] -= weight
            self._schedule_dispatch()

    def _record_call(self, target: str, size: int) -> None:
        stats = self.stats
        stats.calls[target] = stats.calls.get(target, 0) + 1
        stats.requests[target] = stats.requests.get(target, 0) + size
        stats.max_batch[target] = max(stats.max_batch.get(target, 0), size)

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Adds the time spent inside the block to the driver's busy time (the overhead figure)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stats.driver_busy_s += time.perf_counter() - start
