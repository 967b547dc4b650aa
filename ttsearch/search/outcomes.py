"""What a search consumed and how it ended: the values the scheduler hands back for every job, and the FLOPs model
that prices what it consumed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ttsearch.errors import TTSearchError
from ttsearch.search.requests import Generate, GenerateResult, Request, Result, ScoreResult


@dataclass
class Usage:
    """Compute one problem's search consumed: token counts as the engines computed them, for the FLOPs model
    (`ttsearch.search.outcomes.ModelSizes.flops`), and the samples the search asked for."""

    generated_tokens: int = 0
    """Tokens of the samples an engine decoded: a greedy request's n identical copies were decoded once
    (`Generate.decoded_samples`) and are billed once."""
    prompt_tokens: int = 0
    """Prompt tokens as each engine reports the prefill it ran (vLLM: one prompt per request; transformers: one
    padded row per decoded sample)."""
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those served from the generator's prefix cache rather than computed."""
    samples: int = 0
    """Generations the search requested, the paper's "generations": n per request, greedy copies included, since
    that is what the strategy's budget counts; the compute of the copies is not billed (`generated_tokens`)."""
    verifier_tokens: int = 0
    """Input tokens the verifier read."""
    cached_verifier_tokens: int = 0
    """Of `verifier_tokens`, those served from the verifier's prefix cache rather than computed."""
    scored_solutions: int = 0

    def merge(self, other: Usage) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def add(self, request: Request, result: Result) -> None:
        if isinstance(request, Generate) and isinstance(result, GenerateResult):
            decoded = result.completions[: request.decoded_samples]  # `as_requested` repeats these n // d times
            self.generated_tokens += sum(c.num_tokens for c in decoded)
            self.prompt_tokens += result.prompt_tokens
            self.cached_prompt_tokens += result.cached_prompt_tokens
            self.samples += len(result.completions)
        elif isinstance(result, ScoreResult):
            self.verifier_tokens += result.tokens
            self.cached_verifier_tokens += result.cached_tokens
            self.scored_solutions += 1


class ReplicasUnavailable(TTSearchError):
    """Every replica of a target stayed out of rotation for `replica_wait_s`: the run stops instead of hanging."""


class Failure(StrEnum):
    """Why a job did not finish; decides whether a re-run computes it again."""

    PROBLEM = "problem"
    """Deterministic: a strategy bug or a request no engine can serve. Replaying gives the same error, so the
    job keeps an error row."""
    INFRASTRUCTURE = "infrastructure"
    """Replicas died or timed out and the request's retries ran out: nothing about the job is wrong, so it is
    never written as finished and a re-run computes it again."""
    CANCELLED = "cancelled"
    """The caller of `Scheduler.search` went away (a client disconnected): its queued requests are dropped."""


@dataclass
class JobOutcome:
    key: Any
    value: Any
    """What the job returned: a search's candidates, a labelled question's solutions; None when it failed."""
    usage: Usage
    wall_s: float
    error: str | None = None
    failure: Failure | None = None  # None when the job finished


def generator_computed_tokens(generated: Any, prompt: Any, cached_prompt: Any) -> Any:
    """Tokens the generator computed: generated plus prompt tokens, less those served from its prefix cache.

    Takes counts or DataFrame columns alike; the one rule behind every generator FLOPs figure.
    """
    return generated + prompt - cached_prompt


def verifier_computed_tokens(verifier: Any, cached_verifier: Any) -> Any:
    """Tokens the verifier computed: the input tokens it read, less those served from its prefix cache.

    Takes counts or DataFrame columns alike; the one rule behind every verifier FLOPs figure.
    """
    return verifier - cached_verifier


def flops_of(parameters: Any, computed_tokens: Any) -> Any:
    """FLOPs ≈ 2 × parameters × computed tokens (a forward pass costs about two FLOPs per parameter and token)."""
    return 2.0 * parameters * computed_tokens


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts read from the hosted models, for FLOPs ≈ 2 × parameters × tokens."""

    generator: int
    verifier: int
    """0 for a model-free verifier."""

    def flops(self, usage: Usage) -> tuple[float, float]:
        """(generator, verifier) FLOPs of the tokens each model computed
        (`ttsearch.search.outcomes.generator_computed_tokens`,
        `verifier_computed_tokens`): prefix-cache hits are not computed, so they are not billed."""
        generator = generator_computed_tokens(usage.generated_tokens, usage.prompt_tokens, usage.cached_prompt_tokens)
        verifier = verifier_computed_tokens(usage.verifier_tokens, usage.cached_verifier_tokens)
        return flops_of(self.generator, generator), flops_of(self.verifier, verifier)
