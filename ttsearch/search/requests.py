"""The messages strategies exchange with the scheduler.

Strategies only build these values and read the results; the scheduler decides how they are
batched and which replica serves them. Keeping them plain frozen dataclasses means they pickle
cheaply across Ray and compare by value in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Prompt:
    """A chat prompt; the generator applies its own chat template, then appends the prefix.

    The prefix is the assistant's partial solution so far: identical prompts with growing prefixes
    are what lets vLLM's prefix cache reuse the KV blocks shared between beams.
    """

    system: str
    user: str
    assistant_prefix: str = ""


def chat_prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The token ids a generator feeds its engine for `prompt`: the chat template applied, then the assistant's
    partial solution. Training (`ttsearch train-revision`) builds its inputs with it too, so they are the same ids."""
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": prompt.user})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template already holds its special tokens; adding BOS again would change the prefix.
    return tokenizer.encode(text + prompt.assistant_prefix, add_special_tokens=False)


@dataclass(frozen=True)
class Generate:
    """Sample `n` continuations of `prompt`."""

    target: ClassVar[str] = "generator"

    prompt: Prompt
    n: int
    temperature: float
    max_tokens: int
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def decoded_samples(self) -> int:
        """Samples an engine has to decode: greedy continuations are all the same, so one stands for n."""
        return 1 if self.temperature == 0 else self.n

    def as_requested(self, decoded: tuple[Completion, ...]) -> tuple[Completion, ...]:
        """The `n` completions asked for, from the `decoded_samples` an engine decoded."""
        return decoded * (self.n // self.decoded_samples)


@dataclass(frozen=True)
class Completion:
    """One sampled continuation; the matched stop string is not part of `text`."""

    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it; None for EOS or length

    @property
    def ended_solution(self) -> bool:
        """True when the model itself ended the answer (EOS), not a step delimiter or the cap."""
        return self.finish_reason == "stop" and self.stop_reason is None


@dataclass(frozen=True)
class GenerateResult:
    completions: tuple[Completion, ...]
    prompt_tokens: int
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class Score:
    """Score the steps of a (partial) solution to `question` from step `scored_steps` on.

    A search extends solutions one step at a time and already holds the scores of their earlier steps:
    asking only for the new ones lets a verifier with a prefix cache compute just the new step and its tag
    (a PRM reads causally, so an earlier step's score does not depend on what follows it).
    """

    target: ClassVar[str] = "verifier"

    question: str
    steps: tuple[str, ...]
    reference: str | None = None  # ground-truth answer: read only by the oracle verifier
    scored_steps: int = 0  # leading steps whose scores the caller already holds; 0 scores them all
    system: str = ""  # the system prompt the solution was written under (a chat judge reads it in context)

    def __post_init__(self) -> None:
        if not 0 <= self.scored_steps <= len(self.steps):
            raise ValueError(f"scored_steps={self.scored_steps} is outside 0..{len(self.steps)} steps")


@dataclass(frozen=True)
class ScoreResult:
    step_scores: tuple[float, ...]  # one score in [0, 1] per step from `Score.scored_steps` on
    tokens: int = 0  # input tokens the verifier read
    cached_tokens: int = 0  # of those, tokens served from its prefix cache rather than computed


@dataclass(frozen=True)
class RequestRejected:
    """An engine refused this one request (a prompt longer than the model's context, bad sampling values).

    Replaying it elsewhere would fail the same way, so its problem fails; the rest of its batch is served.
    """

    message: str


Request = Generate | Score
Result = GenerateResult | ScoreResult
