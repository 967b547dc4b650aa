"""Verifier replicas: a process reward model (PRM, `ttsearch.engines.prm`) on a vLLM engine or on transformers,
behind a Ray actor that streams each batch's step scores back in completion order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

from ttsearch.config import VerifierConfig, verifier_backend
from ttsearch.engines.prm import PRMScorer
from ttsearch.engines.process_guard import guard_process_group
from ttsearch.runtime.backends import wait_ready
from ttsearch.search.requests import RequestRejected, Score, ScoreResult


class ThreadedScorer:
    """A `PRMScorer` behind the async interface every scorer offers (`score_batch`, `stats`).

    Forward passes run in a worker thread, one at a time (a lock; concurrent passes would only fight for
    the same cores/GPU), so the actor's other methods answer while it works; each micro-batch's results
    stream out as soon as it is done.
    """

    def __init__(self, scorer: PRMScorer) -> None:
        self._scorer = scorer
        self._lock = asyncio.Lock()
        self._stats = {"calls": 0, "items": 0, "scored_steps": 0, "tokens": 0, "cached_tokens": 0, "busy_s": 0.0}

    async def score_batch(self, batch: list[Score]) -> AsyncIterator[tuple[int, ScoreResult | RequestRejected]]:
        self._stats["calls"] += 1
        chunks = self._scorer.iter_scores(batch)
        while True:
            async with self._lock:
                started = time.perf_counter()
                chunk = await asyncio.to_thread(next, chunks, None)
                self._stats["busy_s"] += time.perf_counter() - started
            if chunk is None:
                return
            for index, result in chunk:
                if isinstance(result, ScoreResult):
                    self._stats["items"] += 1
                    self._stats["scored_steps"] += len(result.step_scores)
                    self._stats["tokens"] += result.tokens
                yield index, result

    def stats(self) -> dict[str, float]:
        return {**self._stats, "num_parameters": self._scorer.num_parameters}

    async def reset_prefix_cache(self) -> bool:
        """Nothing to drop: every pass reads its whole input."""
        return True


@ray.remote
class VerifierReplica:
    """A Ray actor hosting one verifier: a vLLM engine (`verifier.backend: vllm`, see actors/vllm_verifier.py)
    or a transformers `PRMScorer`.

    `score` is an async generator, so Ray streams each (index, result) to the caller as soon as it is ready.

    Failure behaviour: created with `max_restarts=verifier.max_restarts` and `max_task_retries=0`; Ray
    restarts a dead replica (the model loads again) while the scheduler replays the unserved scores of
    its calls on other replicas. Scoring is deterministic, so a replay gives the same scores. However the actor
    ends, a vLLM engine's processes end with it (`ttsearch.engines.process_guard`).
    """

    def __init__(self, cfg: VerifierConfig, cache_dir: str) -> None:
        self._guard = guard_process_group()  # before the engine starts: its processes end with this actor
        backend = verifier_backend(cfg, generator=None)
        if backend == "vllm":
            from ttsearch.engines.vllm_scorer import start_vllm_scorer

            self._scorer: Any = start_vllm_scorer(cfg, cache_dir)
        elif backend == "transformers":
            self._scorer = ThreadedScorer(PRMScorer.load(cfg, cache_dir))
        else:
            raise ValueError(f"a verifier replica runs backend 'vllm' or 'transformers', got '{backend}'")

    def ready(self) -> bool:
        return True

    async def score(self, batch: list[Score]) -> AsyncIterator[tuple[int, ScoreResult | RequestRejected]]:
        """Yield `(index, ScoreResult)` for every item of `batch`, in completion order."""
        async for item in self._scorer.score_batch(batch):
            yield item

    def score_stats(self) -> dict[str, float]:
        return self._scorer.stats()

    async def reset_prefix_cache(self) -> bool:
        """Drop cached blocks, so a benchmark phase does not inherit another's cache hits."""
        return await self._scorer.reset_prefix_cache()


def create_verifier_replicas(cfg: VerifierConfig, cache_dir: str) -> list[Any]:
    """Start `cfg.replicas` verifier actors placed by their resources and wait until all are loaded (at most
    `cfg.start_timeout_s`)."""
    options = {"max_restarts": cfg.max_restarts, "max_task_retries": 0}
    replicas = [
        VerifierReplica.options(num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus, **options).remote(cfg, cache_dir)
        for _ in range(cfg.replicas)
    ]
    wait_ready(replicas, cfg.start_timeout_s, "verifier", cfg.num_gpus, cfg.num_cpus)
    return replicas
