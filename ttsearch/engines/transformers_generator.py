"""A generator engine on Hugging Face transformers, for machines without vLLM.

It serves the same `Generate` requests with the same results as `VLLMGenerator` (stop strings cut
from the text, EOS counted as a generated token, `finish_reason` / `stop_reason` alike), so the
scheduler and strategies cannot tell them apart. What it lacks is vLLM's speed: no continuous
batching and no prefix cache. Requests of a batch that share sampling settings run as padded
`generate` calls of at most `transformers_call_tokens` tokens, and each call's results stream back
as it ends.

Sampling is seeded per call from the seeds of the requests in it, so a batch is reproducible as a
whole; vLLM's per-request seeds also keep a request's samples independent of its batch-mates.

Billing (what `GenerateResult` and the replica totals report):
- Prompt tokens are billed as the call computed them (`prefill_tokens`): each row of a request (one
  per decoded sample) re-reads its prompt, left-padded to the call's longest prompt, and padding
  positions go through the model like any other. So a request is billed rows × padded prompt length,
  with no cached tokens (there is no prefix cache). vLLM bills one prompt per request instead
  (`len(prompt ids)`, its n samples share one prefill) less its prefix-cache hits: the two backends
  give the same completions but different prompt counts, and the difference is real compute.
- Generated tokens are billed per decoded sample as its own count up to where it stopped
  (`Completion.num_tokens`, as vLLM counts them), not as run: a row that ended early keeps stepping
  through the model on padding until the call's longest row ends, and those steps are not billed.
  `num_tokens` is what the strategies, the per-candidate costs and the throughput figures read, and it
  must agree with vLLM's; `GenerateResult` has no field for the wasted steps. Generated-token FLOPs of
  this backend are therefore a lower bound, short by at most rows × (the call's decode steps − a row's
  own tokens); calls group requests of the same `max_tokens` and stop strings, which keeps it small.
"""

from __future__ import annotations

import asyncio
import bisect
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ttsearch.config import GeneratorConfig
from ttsearch.engines.common import GeneratorTotals, prompt_too_long
from ttsearch.engines.models import resolve_model
from ttsearch.search.requests import Completion, Generate, GenerateResult, RequestRejected, chat_prompt_ids


def finish(
    token_ids: Sequence[int], end_ids: set[int], stop: Sequence[str], decode: Callable[[Sequence[int]], str]
) -> Completion:
    """One generated row as vLLM reports it.

    `generate` pads a row that ended early with the pad id, which is often the EOS id, so an end id
    right after a stop string is padding: the stop string is looked for before the first end id.
    """
    ended_at = next((i for i, token in enumerate(token_ids) if token in end_ids), None)
    kept = token_ids if ended_at is None else token_ids[:ended_at]
    text = decode(kept)
    hits = [(text.find(s), s) for s in stop if s in text]
    if hits:
        position, matched = min(hits)
        # Tokens up to the one that completes the stop string: where vLLM would have stopped.
        needed = bisect.bisect_left(range(len(kept) + 1), position + len(matched), key=lambda k: len(decode(kept[:k])))
        return Completion(text=text[:position], num_tokens=needed, finish_reason="stop", stop_reason=matched)
    if ended_at is not None:  # EOS is a generated token, as in vLLM's counts
        return Completion(text=text, num_tokens=ended_at + 1, finish_reason="stop")
    return Completion(text=text, num_tokens=len(kept), finish_reason="length")


def calls(batch: Sequence[Generate], prompt_lengths: Sequence[int], max_call_tokens: int) -> Iterator[list[int]]:
    """Indices of `batch` per `generate` call: requests with the same sampling settings, shortest prompt
    first so rows pad little, and at most `max_call_tokens` padded tokens (rows × longest prompt plus new
    tokens) in a call; a request larger than that gets a call of its own.

    Small calls are the fast ones: on one CPU thread, 16 rows of a beam-search step ran at 90 generated
    tok/s and 128 rows at 26, since every row is padded to the longest and computed until the last ends.
    """
    groups: dict[tuple, list[int]] = {}
    for index in sorted(range(len(batch)), key=prompt_lengths.__getitem__):
        request = batch[index]
        groups.setdefault((request.temperature, request.max_tokens, request.stop), []).append(index)
    for indices in groups.values():
        call: list[int] = []
        rows = width = 0
        for index in indices:
            request = batch[index]
            length = prompt_lengths[index] + request.max_tokens
            if call and (rows + request.decoded_samples) * max(width, length) > max_call_tokens:
                yield call
                call, rows, width = [], 0, 0
            call.append(index)
            rows, width = rows + request.decoded_samples, max(width, length)
        yield call


def prefill_tokens(requests: Sequence[Generate], prompt_lengths: Sequence[int]) -> list[int]:
    """Prompt tokens each request of one padded `generate` call computed: its rows (decoded samples) times the
    call's longest prompt, the width every row is left-padded to."""
    width = max(prompt_lengths)
    return [request.decoded_samples * width for request in requests]


class TransformersGenerator:
    """One transformers causal LM serving `Generate` requests; keeps cumulative token counts."""

    def __init__(self, cfg: GeneratorConfig, cache_dir: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(cfg.model, cache_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(cfg.num_cpus)))
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype)).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.end_ids = {eos} if isinstance(eos, int) else set(eos or [self.tokenizer.eos_token_id])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.end_ids)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())  # tied weights counted once
        self.max_call_tokens = cfg.transformers_call_tokens
        self.max_model_len = cfg.max_model_len
        self.seed = cfg.seed
        self.totals = GeneratorTotals()
        self._lock = asyncio.Lock()  # one `generate` at a time: concurrent calls would only split the cores

    def run_call(self, requests: Sequence[Generate], prompts: Sequence[list[int]]) -> list[GenerateResult]:
        """One padded `generate` over every sample of `requests` (which share their sampling settings)."""
        import torch

        first = requests[0]
        greedy = first.temperature == 0
        rows = [ids for ids, request in zip(prompts, requests, strict=True) for _ in range(request.decoded_samples)]
        width = max(map(len, rows))
        prefills = prefill_tokens(requests, [len(ids) for ids in prompts])
        input_ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        # vLLM samples the whole distribution at the request's temperature and ignores the checkpoint's
        # generation_config (top-k, top-p, repetition penalty): override whatever that file sets.
        sampling: dict[str, Any] = {"repetition_penalty": 1.0}
        if greedy:
            sampling |= {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        else:
            sampling |= {"do_sample": True, "temperature": first.temperature, "top_k": 0, "top_p": 1.0}
        seeds = ",".join(str(self.seed if r.seed is None else r.seed) for r in requests)
        torch.manual_seed(zlib.crc32(seeds.encode()))
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=first.max_tokens,
                stop_strings=list(first.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.pad_id,
                **sampling,
            )
        generated = iter(output[:, width:].tolist())  # rows in request order, decoded_samples each

        def decode(ids: Sequence[int]) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        def read(row: list[int]) -> Completion:
            return finish(row, self.end_ids, first.stop, decode)

        results = []
        for request, prefill in zip(requests, prefills, strict=True):
            decoded = tuple(read(next(generated)) for _ in range(request.decoded_samples))
            result = GenerateResult(completions=request.as_requested(decoded), prompt_tokens=prefill)
            self.totals.add(result, sum(c.num_tokens for c in decoded))
            results.append(result)
        return results

    async def generate_batch(
        self, batch: list[Generate]
    ) -> AsyncIterator[tuple[int, GenerateResult | RequestRejected]]:
        """Run the batch call by call (off the event loop) and yield `(index, result)` as each call ends;
        a prompt that cannot fit `max_model_len` is rejected first, alone."""
        prompts = [chat_prompt_ids(self.tokenizer, request.prompt) for request in batch]
        servable = []
        for index, ids in enumerate(prompts):
            if rejected := prompt_too_long(ids, self.max_model_len):
                yield index, rejected
            else:
                servable.append(index)
        for group in calls([batch[i] for i in servable], [len(prompts[i]) for i in servable], self.max_call_tokens):
            indices = [servable[i] for i in group]
            async with self._lock:
                results = await asyncio.to_thread(
                    self.run_call, [batch[i] for i in indices], [prompts[i] for i in indices]
                )
            for index, result in zip(indices, results, strict=True):
                yield index, result

    async def reset_prefix_cache(self) -> bool:
        """Nothing to drop: this engine keeps no KV cache between calls."""
        return True

    def shutdown(self) -> None:
        del self.model
