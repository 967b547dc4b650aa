"""Backend-neutral pieces every engine shares: its parameter count for FLOPs, the prompt-length check, cumulative
token counts, and streaming a batch's results back in completion order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ttsearch.search.requests import GenerateResult, RequestRejected

Item = TypeVar("Item")
Result = TypeVar("Result")


def count_parameters(hf_config: Any) -> int:
    """Parameters of the served model (tied embeddings counted once), for FLOPs accounting.

    Built on the meta device from the engine's config, so it costs no memory and works for hub ids too.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


def prompt_too_long(prompt_ids: list[int], max_model_len: int) -> RequestRejected | None:
    """Checked before a request reaches the engine: a prompt that leaves no room for one new token can
    never be served, and it must fail only its own problem, not the batch it came in."""
    if len(prompt_ids) < max_model_len:
        return None
    return RequestRejected(
        f"prompt of {len(prompt_ids)} tokens leaves no room to generate within generator.max_model_len={max_model_len}"
    )


@dataclass
class GeneratorTotals:
    """Cumulative counts a replica reports in `stats()`: what its engine computed, billed as `Usage` bills it."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    """Tokens of the decoded samples only: a greedy request's n copies were decoded once and count once."""

    def add(self, result: GenerateResult, generated_tokens: int) -> None:
        self.requests += 1
        self.prompt_tokens += result.prompt_tokens
        self.cached_prompt_tokens += result.cached_prompt_tokens
        self.generated_tokens += generated_tokens


async def as_completed(
    batch: Sequence[Item], call: Callable[[Item], Awaitable[Result]]
) -> AsyncIterator[tuple[int, Result]]:
    """Submit the whole batch at once (the engine batches it) and yield `(index, result)` as each item finishes; if
    the consumer goes away, what is still running is cancelled instead of finishing unseen."""

    async def indexed(index: int, item: Item) -> tuple[int, Result]:
        return index, await call(item)

    tasks = [asyncio.ensure_future(indexed(i, item)) for i, item in enumerate(batch)]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
