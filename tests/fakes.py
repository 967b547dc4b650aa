"""Scripted in-process backends: strategies and the scheduler run against them in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from ttsearch.search.requests import (
    Completion,
    Generate,
    GenerateResult,
    Request,
    RequestRejected,
    Result,
    Score,
    ScoreResult,
)
from ttsearch.search.scheduler import ReplicaFailed


class ScriptedBackend:
    """Answers each request with `respond(request)`; records every batch it was sent.

    `fail_when(request)` makes the call raise when it reaches that request (a replica that answers with
    an error); `reject_when(request)` answers that one request with `RequestRejected`; `delay` is the
    seconds each request takes.
    """

    def __init__(
        self,
        respond: Callable[[Request], Result],
        fail_when: Callable[[Request], bool] | None = None,
        reject_when: Callable[[Request], bool] | None = None,
        delay: float = 0.0,
    ):
        self.respond = respond
        self.fail_when = fail_when
        self.reject_when = reject_when
        self.delay = delay
        self.batches: list[list[Request]] = []
        self.checks = 0

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result | RequestRejected]]:
        self.batches.append(list(batch))
        for index, request in enumerate(batch):
            await asyncio.sleep(self.delay)  # let other calls interleave, as a real replica would
            if self.fail_when and self.fail_when(request):
                raise RuntimeError("scripted replica failure")
            if self.reject_when and self.reject_when(request):
                yield index, RequestRejected("scripted rejection")
            else:
                yield index, self.respond(request)

    async def check(self) -> None:
        self.checks += 1


class DyingBackend(ScriptedBackend):
    """Dies after serving `results_before_death` results: the call in progress and every later one fail
    with `ReplicaFailed`, as a killed Ray actor's would. It answers a health check again after
    `checks_to_restart` failed checks (Ray restarted it), or never (None)."""

    def __init__(self, respond, results_before_death: int, checks_to_restart: int | None = None):
        super().__init__(respond)
        self.results_left = results_before_death
        self.checks_to_restart = checks_to_restart
        self.dead = False
        self.batches_after_restart = 0
        self.calls_while_dead = 0

    async def submit(self, batch):
        if self.dead:
            self.calls_while_dead += 1
            raise ReplicaFailed("scripted: actor died")
        self.batches_after_restart += self.checks > 0
        async for index, result in super().submit(batch):
            if self.results_left == 0:
                self.dead = True
                raise ReplicaFailed("scripted: actor died")
            self.results_left -= 1
            yield index, result

    async def check(self) -> None:
        await super().check()
        if self.dead:
            if self.checks_to_restart is None or self.checks <= self.checks_to_restart:
                raise ReplicaFailed("scripted: actor is restarting")
            self.dead, self.results_left = False, -1  # restarted: serves forever


class HangingBackend(ScriptedBackend):
    """Its first `hangs` calls never stream a result (a wedged engine); later calls are served."""

    def __init__(self, respond, hangs: int = 1):
        super().__init__(respond)
        self.hangs = hangs

    async def submit(self, batch):
        if self.hangs > 0:
            self.hangs -= 1
            self.batches.append(list(batch))
            await asyncio.Event().wait()
        async for item in super().submit(batch):
            yield item


def completions(*texts: str, eos: bool = False, tokens: int = 5) -> GenerateResult:
    """A result whose completions stopped at the step delimiter (or at EOS with `eos=True`)."""
    stop = None if eos else "\n\n"
    return GenerateResult(
        completions=tuple(Completion(text=t, num_tokens=tokens, finish_reason="stop", stop_reason=stop) for t in texts),
        prompt_tokens=10,
        cached_prompt_tokens=4,
    )


def step_generator(depth_to_finish: int = 2) -> Callable[[Request], Result]:
    """Writes `step<depth>.<i>` and ends with a boxed answer at `depth_to_finish`."""

    def respond(request: Request) -> Result:
        assert isinstance(request, Generate)
        depth = request.prompt.assistant_prefix.count("\n\n")
        if depth >= depth_to_finish or not request.stop:
            return completions(*(f"so \\boxed{{{i % 2}}}" for i in range(request.n)), eos=True)
        return completions(*(f"step{depth}.{i}" for i in range(request.n)))

    return respond


def length_scorer(request: Request) -> Result:
    """Scores step j of a solution 1/(1+j): deterministic and easy to reason about."""
    assert isinstance(request, Score)
    scores = tuple(1.0 / (1 + j) for j in range(request.scored_steps, len(request.steps)))
    return ScoreResult(step_scores=scores, tokens=3)


def drive(run, respond: Callable[[Request], Result]):
    """Run a strategy to its end without a scheduler; returns (candidates, all request batches)."""
    batches: list[list[Request]] = []
    results = None
    while True:
        try:
            requests = run.send(results)
        except StopIteration as stop:
            return stop.value, batches
        batches.append(requests)
        results = [respond(r) for r in requests]


class Grades:
    """A grader whose verdicts are scripted per answer (None: a grading failure; unlisted answers are wrong)."""

    def __init__(self, verdicts: dict[str | None, bool | None]):
        self.verdicts = verdicts

    def grade_many(self, pairs):
        return [self.verdicts.get(answer, False) for answer, _ in pairs]


def forms_only(answer: str, others: Sequence[str]) -> list[bool]:
    """A `SameAnswers` without math-verify: answers are the same only when their canonical forms are."""
    return [False] * len(others)
