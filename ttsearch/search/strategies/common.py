"""What every strategy shares: the per-problem context and the candidate solutions it returns.

A strategy is a generator function: it yields a non-empty list of requests (`Generate`/`Score`),
receives the list of their results in the same order, and finally returns its candidates. It never
calls a model, Ray or the clock, so the scheduler can interleave thousands of them and tests can
drive one with scripted results.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from ttsearch.config import SearchConfig
from ttsearch.search.grading import extract_answer
from ttsearch.search.requests import Completion, Generate, Prompt, Request, Result, Score

StrategyRun = Generator[list[Request], list[Result], list["Candidate"]]
"""The generator a strategy returns for one job (one search): the state machine the scheduler drives."""


@dataclass(frozen=True)
class Candidate:
    """A (possibly unfinished) solution: its steps and the verifier's score of each step."""

    steps: tuple[str, ...]
    step_scores: tuple[float, ...] = ()
    finished: bool = False  # the model ended it (EOS) rather than the search running out of steps
    delimiter: str = "\n\n"
    generated_tokens: int | None = None
    """Tokens sampled for this candidate alone; None where candidates share their steps (tree search)."""
    verifier_tokens: int | None = None
    """Tokens the verifier read to score this candidate alone; None where scores were shared (tree search)."""
    recorded_answer: str | None = None
    """The final answer a recorder extracted (`ttsearch import`), used instead of our own extraction; None: extract."""

    @property
    def text(self) -> str:
        return self.delimiter.join(self.steps)

    @property
    def answer(self) -> str | None:
        return self.recorded_answer if self.recorded_answer is not None else extract_answer(self.text)


@dataclass(frozen=True)
class SearchContext:
    """One problem as a strategy sees it, plus the sampling settings shared by all strategies."""

    uid: str
    question: str
    search: SearchConfig
    seed: int
    reference: str | None = None  # ground truth, forwarded only so the oracle verifier can grade
    round: int = 0
    """Which round of a strategy run in rounds (`early_stop`) this is: every round samples with seeds of its own,
    round 0 with the plain strategy's."""

    def prompt(self, steps: tuple[str, ...]) -> Prompt:
        """Same system/user text for every call of a problem, so the prefix cache can hit."""
        prefix = "".join(step + self.search.step_delimiter for step in steps)
        return Prompt(system=self.search.system_prompt, user=self.question, assistant_prefix=prefix)

    def request_seed(self, *path: int | str) -> int:
        """A sampling seed that depends only on (problem, sweep seed, round, position in the search)."""
        rounds = [f"round{self.round}"] if self.round else []
        key = "|".join([self.uid, str(self.seed), *rounds, *map(str, path)])
        return zlib.crc32(key.encode())

    def expand(self, steps: tuple[str, ...], n: int, *path: int) -> Generate:
        """Sample `n` next steps after `steps`."""
        return Generate(
            prompt=self.prompt(steps),
            n=n,
            temperature=self.search.temperature,
            max_tokens=self.search.max_step_tokens,
            stop=(self.search.step_delimiter,),
            seed=self.request_seed(*path),
        )

    def solve(self, prompt: Prompt, n: int, *path: int) -> Generate:
        """Sample `n` whole solutions to `prompt` (no step stop string)."""
        return Generate(
            prompt=prompt,
            n=n,
            temperature=self.search.temperature,
            max_tokens=self.search.max_solution_tokens,
            seed=self.request_seed(*path),
        )

    def score(self, steps: tuple[str, ...], scored_steps: int = 0) -> Score:
        """Score `steps` from step `scored_steps` on (the caller holds the earlier steps' scores)."""
        return Score(self.question, steps, self.reference, scored_steps, system=self.search.system_prompt)

    def extend(self, parent: Candidate, completion: Completion) -> tuple[tuple[str, ...], bool]:
        """`parent`'s steps with a sampled next step (none if it is blank), and whether the solution ended there."""
        step, done = sampled_step(completion)
        return parent.steps + ((step,) if step.strip() else ()), done

    def split_steps(self, text: str) -> tuple[str, ...]:
        return tuple(step for step in text.split(self.search.step_delimiter) if step.strip())

    def candidate(
        self,
        steps: tuple[str, ...],
        scores: tuple[float, ...],
        finished: bool,
        generated_tokens: int | None = None,
        verifier_tokens: int | None = None,
    ) -> Candidate:
        return Candidate(steps, scores, finished, self.search.step_delimiter, generated_tokens, verifier_tokens)


def sampled_step(completion: Completion) -> tuple[str, bool]:
    """A sampled step's text, and whether the solution ended there (EOS, or nothing left to say)."""
    step = completion.text.strip("\n")
    return step, completion.ended_solution or not step.strip()


def softmax(values: Sequence[float]) -> list[float]:
    """Probabilities proportional to exp(value), shifted by the largest value so none overflows (REBASE's width
    shares, particle filtering's resampling weights)."""
    top = max(values)
    weights = [math.exp(value - top) for value in values]
    total = sum(weights)
    return [weight / total for weight in weights]


def step_value(candidate: Candidate) -> float:
    """What step-level searches rank a partial solution by: the verifier's score of its last step (0 unscored)."""
    return candidate.step_scores[-1] if candidate.step_scores else 0.0


def grow(
    ctx: SearchContext, nodes: list[Candidate], widths: list[int], depth: int, keys: list[int]
) -> Generator[list[Request], list[Result], list[list[Candidate]]]:
    """Sample `widths[i]` next steps of `nodes[i]` (seeded by (depth, keys[i])) and score each child's new step,
    carrying its parent's scores forward (one prefix-cached verifier read per step). Returns each node's children,
    in sampling order; a node's `keys` entry must stay the same across re-runs, so a retry replays it."""
    expansions = yield [
        ctx.expand(node.steps, width, depth, key) for node, width, key in zip(nodes, widths, keys, strict=True)
    ]
    children = [
        (parent, *ctx.extend(parent, completion))
        for parent, result in zip(nodes, expansions, strict=True)
        for completion in result.completions
    ]
    scored = yield [ctx.score(steps, scored_steps=len(parent.steps)) for parent, steps, _ in children]
    grown = iter(
        ctx.candidate(steps, parent.step_scores + tuple(result.step_scores), finished=done)
        for (parent, steps, done), result in zip(children, scored, strict=True)
    )
    return [[next(grown) for _ in range(width)] for width in widths]
