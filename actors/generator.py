"""Generator replicas: a generator engine (`ttsearch.engines`: vLLM's AsyncLLM, or transformers) behind a thin async
Ray actor that streams each batch's results back in completion order."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import ray
from ray.actor import ActorHandle

from ttsearch.config import GeneratorConfig, VerifierConfig, generator_class
from ttsearch.engines.process_guard import guard_process_group
from ttsearch.runtime.backends import wait_ready
from ttsearch.search.requests import Generate, GenerateResult, RequestRejected, Score, ScoreResult


class GeneratorReplica:
    """Ray actor hosting one generator engine (`generator.backend`); `generate` streams results back as an
    ObjectRefGenerator.

    Failure behaviour: created with `max_restarts=generator.max_restarts` and `max_task_retries=0`. Ray
    restarts a replica whose process died (the engine loads again); calls in flight fail with an actor
    error and the scheduler replays their unserved requests elsewhere (they are seeded, so a replay
    is the same sample). A request the engine refuses comes back as `RequestRejected`. If the engine
    core dies under a live actor, the actor exits so that Ray restarts the pair; if the actor ends first, however
    it ends, its engine processes end with it (`ttsearch.engines.process_guard`).
    """

    def __init__(self, cfg: GeneratorConfig, cache_dir: str, judge: VerifierConfig | None = None) -> None:
        self._guard = guard_process_group()  # before the engine starts: its processes end with this actor
        self._generator = generator_class(cfg.backend)(cfg, cache_dir)  # `ttsearch.config.generators`
        self._scorer = None
        if judge is not None:  # `verifier.backend: generator`: the verifier reads on this replica's own engine
            from ttsearch.engines.vllm_scorer import engine_scorer

            generator = self._generator
            self._scorer = engine_scorer(generator.engine, judge, generator.model, generator.num_parameters)

    async def ready(self) -> bool:
        """Returns once the constructor, i.e. the engine start, has finished."""
        return True

    async def generate(self, batch: list[Generate]) -> AsyncIterator[tuple[int, GenerateResult | RequestRejected]]:
        async for item in self._generator.generate_batch(batch):
            yield item

    async def stats(self) -> dict[str, int]:
        return {**asdict(self._generator.totals), "num_parameters": self._generator.num_parameters}

    async def score(self, batch: list[Score]) -> AsyncIterator[tuple[int, ScoreResult | RequestRejected]]:
        """Verifier reads on this engine (`verifier.backend: generator`), streamed like `generate`."""
        if self._scorer is None:
            raise RuntimeError("this generator replica was started without a verifier (verifier.backend != generator)")
        async for item in self._scorer.score_batch(batch):
            yield item

    async def score_stats(self) -> dict[str, float]:
        if self._scorer is None:
            raise RuntimeError("this generator replica was started without a verifier (verifier.backend != generator)")
        return self._scorer.stats()

    async def reset_prefix_cache(self) -> bool:
        return await self._generator.reset_prefix_cache()

    async def shutdown(self) -> None:
        self._generator.shutdown()


def cpu_core_binds(replicas: int) -> list[str]:
    """Give each CPU replica its own cores (VLLM_CPU_OMP_THREADS_BIND syntax).

    vLLM's automatic binding puts every engine's threads on the same cores, so two replicas on one node
    share one core: measured 524 tok/s together, 1080 tok/s with one core each (2-core machine, 64 x 128).
    The split uses the cores visible here, i.e. it assumes the replicas share this node.
    """
    cores = sorted(os.sched_getaffinity(0))
    if replicas >= len(cores):
        return [str(cores[i % len(cores)]) for i in range(replicas)]
    per_replica = len(cores) // replicas
    return [",".join(map(str, cores[i * per_replica : (i + 1) * per_replica])) for i in range(replicas)]


def create_generator_replicas(
    cfg: GeneratorConfig, cache_dir: str, judge: VerifierConfig | None = None
) -> list[ActorHandle]:
    """Start `cfg.replicas` generator actors placed by their resources and wait until all engines are up
    (at most `cfg.start_timeout_s`); with `judge`, each also serves that verifier on its engine."""
    actor_cls = ray.remote(GeneratorReplica)
    options: dict[str, Any] = {
        "num_gpus": cfg.num_gpus,
        "num_cpus": cfg.num_cpus,
        "max_concurrency": 4096,  # every in-flight batch call holds one slot while it streams
        "max_restarts": cfg.max_restarts,
        "max_task_retries": 0,  # the scheduler replays unserved requests itself, on any replica
    }
    split_cores = (
        cfg.backend == "vllm"
        and cfg.num_gpus == 0
        and cfg.replicas > 1
        and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    )
    binds = cpu_core_binds(cfg.replicas) if split_cores else [None] * cfg.replicas
    replicas = [
        actor_cls.options(
            **options, runtime_env={"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": bind}} if bind else None
        ).remote(cfg, cache_dir, judge)
        for bind in binds
    ]
    wait_ready(replicas, cfg.start_timeout_s, "generator", cfg.num_gpus, cfg.num_cpus)
    return replicas
