"""Scripted in-process backends: strategies and the scheduler run against them in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from ttsearch.requests import Completion, Generate, GenerateResult, Request, Result, Score, ScoreResult


class ScriptedBackend:
    """Answers each request with `respond(request)`; records every batch it was sent."""

    def __init__(self, respond: Callable[[Request], Result], fail_when: Callable[[Request], bool] | None = None):
        self.respond = respond
        self.fail_when = fail_when
        self.batches: list[list[Request]] = []

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result]]:
        self.batches.append(list(batch))
        for index, request in enumerate(batch):
            await asyncio.sleep(0)  # let other calls interleave, as a real replica would
            if self.fail_when and self.fail_when(request):
                raise RuntimeError("scripted replica failure")
            yield index, self.respond(request)


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
    return ScoreResult(step_scores=tuple(1.0 / (1 + j) for j in range(len(request.steps))), tokens=3)


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
