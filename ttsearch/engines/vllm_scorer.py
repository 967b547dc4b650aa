"""PRM scoring on a vLLM engine: each step's score is one next-token read at its tag, served by the prefix cache.

For the families whose step score is a next-token probability at a tag (`lm_judge`, `math_shepherd`,
`rlhflow`), the score of step j is read from the distribution of the token after its tag, given
everything before it. So each new step is one engine request whose prompt is the solution's token ids up
to and including that tag, decoding a single token and returning the log-probabilities of the family's
good/bad tokens (`SamplingParams.logprob_token_ids`, read from the raw, unprocessed distribution). The
input of step t extends the input of step t-1 exactly (the adapters lay solutions out so), hence the
prefix cache serves every earlier step, the question and the instruction, and only the new step and its
tag are computed: verifier work per step stays flat instead of growing with the depth.

The same scorer runs on a dedicated verifier engine (`verifier.backend: vllm`) or on a generator
replica's own engine (`verifier.backend: generator`), where generator and judge are the same model.

Token-classification PRMs (`qwen_prm`: Qwen2.5-Math-PRM's 2-class head at each "<extra_0>") run on vLLM's
pooling runner instead (`PoolingScorer`): the same one request per new step, ending at its tag, read as
the classifier's logits at that last token. vLLM's `Qwen2ForProcessRewardModel` defaults to STEP pooling
(every tag of the input, found by token id), under which vLLM turns prefix caching off
(`ModelConfig.is_prefix_caching_supported`, vllm/config/model.py); with ALL pooling prefix caching stays
on, and a `token_classify` request that is allowed to read the cache (`skip_reading_prefix_cache=False`;
vLLM defaults it to True for token tasks, vllm/pooling_params.py) returns the logits of the tokens it
computed, whose last row is the tag's.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from ttsearch.config import GeneratorConfig, VerifierConfig, verifier_family
from ttsearch.config.verifiers import Layout
from ttsearch.engines.common import as_completed
from ttsearch.engines.models import resolve_model
from ttsearch.engines.prm import Encoded, StepAdapter, make_adapter
from ttsearch.search.requests import RequestRejected, Score, ScoreResult


def step_probability(logprobs: dict[int, float], good_ids: Sequence[int], bad_ids: Sequence[int]) -> float:
    """p(good) after a softmax restricted to the good+bad tokens: sigmoid(logsumexp(good) - logsumexp(bad)),
    the read-out every adapter uses (`StepAdapter.step_probs`), from log-probabilities instead of logits (a
    softmax's shared normaliser cancels)."""
    good = _logsumexp([logprobs[i] for i in good_ids])
    bad = _logsumexp([logprobs[i] for i in bad_ids])
    return 1.0 / (1.0 + math.exp(bad - good))


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


class BusyClock:
    """Seconds during which at least one scoring request was in the engine: the verifier's busy time when
    the engine is shared or serves many requests at once."""

    def __init__(self) -> None:
        self.busy_s = 0.0
        self._active = 0
        self._since = 0.0

    def enter(self) -> None:
        if self._active == 0:
            self._since = time.perf_counter()
        self._active += 1

    def leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self.busy_s += time.perf_counter() - self._since

    def total(self) -> float:
        return self.busy_s + (time.perf_counter() - self._since if self._active else 0.0)


class VLLMScorer:
    """Scores `Score` requests on an `AsyncLLM` engine through a family's `StepAdapter`."""

    def __init__(self, engine: Any, adapter: StepAdapter, max_input_tokens: int, num_parameters: int) -> None:
        self.engine = engine
        self.adapter = adapter
        self.max_input_tokens = max_input_tokens
        self.num_parameters = num_parameters
        self.label_ids = [*adapter.good_ids, *adapter.bad_ids]
        self._ids = itertools.count()
        self._clock = BusyClock()
        self._stats = {"calls": 0, "items": 0, "scored_steps": 0, "tokens": 0, "cached_tokens": 0}

    async def score_batch(self, batch: list[Score]) -> AsyncIterator[tuple[int, ScoreResult | RequestRejected]]:
        """Submit the whole batch at once and yield `(index, result)` as each solution's scores are ready."""
        self._stats["calls"] += 1
        async for item in as_completed(list(enumerate(batch)), lambda indexed: self.score(*indexed)):
            yield item

    async def score(self, index: int, item: Score) -> ScoreResult | RequestRejected:
        """The scores of the steps from `item.scored_steps` on; the earlier ones are the caller's. Failures
        are handled as the generator handles them (`VLLMGenerator.generate`)."""
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if item.scored_steps == len(item.steps):
            return ScoreResult(())
        try:
            encoded = self.adapter.encode(index, item, self.max_input_tokens)
        except ValueError as exc:
            return RequestRejected(str(exc))
        # Tags the caller already holds a score for need no read; a truncated-away step is never read.
        first = max(item.scored_steps - encoded.num_cut, 0)
        try:
            reads = await asyncio.gather(*(self._read(encoded, p) for p in encoded.positions[first:]))
        except (VLLMClientError, ValueError) as exc:  # the engine refused this request: fail it alone
            return RequestRejected(f"{type(exc).__name__}: {exc}")
        except EngineDeadError:  # unrecoverable: the actor exits so that Ray restarts it with a new engine
            os._exit(1)
        scores = [score for score, _, _ in reads]
        result = ScoreResult(
            encoded.new_scores(scores) if first == 0 else tuple(scores),
            tokens=sum(tokens for _, tokens, _ in reads),
            cached_tokens=sum(cached for _, _, cached in reads),
        )
        self._stats["items"] += 1
        self._stats["scored_steps"] += len(scores)
        self._stats["tokens"] += result.tokens
        self._stats["cached_tokens"] += result.cached_tokens
        return result

    async def _read(self, encoded: Encoded, position: int) -> tuple[float, int, int]:
        """(score, prompt tokens, prompt tokens served from the prefix cache) for the tag at `position`."""
        from vllm import SamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=len(self.label_ids),
            logprob_token_ids=self.label_ids,
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        prompt = list(encoded.input_ids[: position + 1])
        final = None
        self._clock.enter()
        try:
            async for output in self.engine.generate(tokens_input(prompt), params, f"score-{next(self._ids)}"):
                final = output
        finally:
            self._clock.leave()
        assert final is not None and final.finished, "vLLM ended a scoring request without a final output"
        [step_logprobs] = final.outputs[0].logprobs
        logprobs = {token: entry.logprob for token, entry in step_logprobs.items()}
        score = step_probability(logprobs, self.adapter.good_ids, self.adapter.bad_ids)
        return score, len(prompt), final.num_cached_tokens or 0

    def stats(self) -> dict[str, float]:
        return {**self._stats, "busy_s": self._clock.total(), "num_parameters": self.num_parameters}

    async def reset_prefix_cache(self) -> bool:
        return await self.engine.reset_prefix_cache()


class PoolingScorer(VLLMScorer):
    """Scores a token-classification PRM (`qwen_prm`) on a pooling engine (`runner="pooling"`, ALL token
    pooling, prefix caching on): each new step is one `token_classify` request whose prompt ends at the
    step's tag; its score is the adapter's read-out (`StepAdapter.step_probs`) of the raw logits at that
    last token. The prefix cache serves the earlier steps, so vLLM returns rows for the computed tokens
    only; the last one is always the tag's."""

    async def _read(self, encoded: Encoded, position: int) -> tuple[float, int, int]:
        import torch
        from vllm import PoolingParams
        from vllm.inputs import tokens_input

        # use_activation=False: raw logits, the adapter applies its own softmax (what transformers computes).
        params = PoolingParams(task="token_classify", use_activation=False, skip_reading_prefix_cache=False)
        prompt = list(encoded.input_ids[: position + 1])
        final = None
        self._clock.enter()
        try:
            async for output in self.engine.encode(tokens_input(prompt), params, f"score-{next(self._ids)}"):
                final = output
        finally:
            self._clock.leave()
        if final is None or not final.finished:
            raise RuntimeError("vLLM ended a pooling request without a final output")
        logits = torch.as_tensor(final.outputs.data)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise RuntimeError(f"expected [computed tokens, labels] logits, got shape {tuple(logits.shape)}")
        score = float(self.adapter.step_probs(logits[-1:])[0])
        return score, len(prompt), final.num_cached_tokens or 0


def reads_pooled(cfg: VerifierConfig) -> bool:
    """Whether vLLM reads this family on its pooling runner (a token-classification head) rather than as a
    next-token probability (`ttsearch.config.verifiers.Layout`)."""
    return verifier_family(cfg.kind).layout is Layout.TOKEN_CLASSIFICATION


def engine_scorer(engine: Any, cfg: VerifierConfig, model_path: str, num_parameters: int) -> VLLMScorer:
    """A scorer for `cfg.kind` on `engine`, which serves `model_path` (its own or a generator's); a pooling
    engine for the token-classification families (`Layout.TOKEN_CLASSIFICATION`)."""
    from transformers import AutoTokenizer

    # The adapters tokenize with offsets (to find each tag's token), which needs the Hugging Face tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    scorer_class = PoolingScorer if reads_pooled(cfg) else VLLMScorer
    return scorer_class(engine, make_adapter(cfg.kind, tokenizer), cfg.max_input_tokens, num_parameters)


def pooling_parameters(hf_config: Any) -> int:
    """Parameters of vLLM's `Qwen2ForProcessRewardModel` (vllm/model_executor/models/qwen2_rm.py): the base
    model, built on the meta device from its config, plus the score head Linear(h, h), ReLU, Linear(h, 2)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        base = AutoModel.from_config(hf_config, trust_remote_code=False)  # the library's base model, not remote code
    hidden = hf_config.hidden_size
    return sum(p.numel() for p in base.parameters()) + hidden * hidden + hidden + hidden * 2 + 2


def start_vllm_scorer(cfg: VerifierConfig, cache_dir: str) -> VLLMScorer:
    """A verifier engine of its own, set up like a generator engine (prefix caching on; on CPU, a KV cache of
    `cpu_kv_cache_gib` and 32-token blocks), with room for the longest input plus the one token it reads.

    Token-classification families (`Layout.TOKEN_CLASSIFICATION`) get a pooling engine with ALL token pooling,
    the pooling under which vLLM keeps prefix caching on (the model's default, STEP, turns it off)."""
    import torch
    from vllm.v1.engine.async_llm import AsyncLLM

    from ttsearch.engines.common import count_parameters
    from ttsearch.engines.vllm_generator import engine_args

    model_path = resolve_model(cfg.model, cache_dir)
    engine_cfg = GeneratorConfig(
        model=cfg.model,
        dtype=cfg.dtype,
        max_model_len=cfg.max_input_tokens + 1,
        max_num_seqs=cfg.max_num_seqs,
        cpu_kv_cache_gib=cfg.cpu_kv_cache_gib,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
    )
    args = engine_args(engine_cfg, model_path, torch.cuda.is_available())
    pooling = reads_pooled(cfg)
    if pooling:
        from vllm.config import PoolerConfig

        args = replace(args, runner="pooling", pooler_config=PoolerConfig(tok_pooling_type="ALL"))
    engine = AsyncLLM.from_engine_args(args)
    if pooling and not engine.vllm_config.cache_config.enable_prefix_caching:
        engine.shutdown()
        raise RuntimeError(f"vLLM turned prefix caching off for the '{cfg.kind}' pooling engine ({model_path})")
    hf_config = engine.model_config.hf_config
    num_parameters = pooling_parameters(hf_config) if pooling else count_parameters(hf_config)
    return engine_scorer(engine, cfg, model_path, num_parameters)
