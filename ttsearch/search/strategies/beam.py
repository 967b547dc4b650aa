"""Beam search against a process reward model, and lookahead search on top of it.

Budget N, beam width M (Snell et al. §5): sample N first steps, score them, keep the best N/M,
expand each kept beam with M next steps, repeat until every beam has ended or `max_steps`.
Lookahead (k > 0) values a candidate step by the verifier's score at the end of a k-step
temperature-0 rollout from it, which costs N×(k+1) samples per step; the rollout itself is
discarded.

Scoring is incremental: a child asks the verifier only for the steps its parent beam has not had
scored (its new step, plus the rollout under lookahead), and carries the parent's scores forward,
so a verifier with a prefix cache computes each step once instead of re-reading the whole path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttsearch.config import StrategySpec
from ttsearch.search.requests import Result
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun, sampled_step
from ttsearch.search.strategies.registry import Errors, Strategy, multiple_errors, step_prefix


@dataclass(frozen=True)
class BeamSettings:
    beam_width: int = 4
    """M: beam search keeps N/M beams and expands each M ways (DVTS: N/M subtrees, M ways each); divides N."""

    def errors(self, budgets: list[int]) -> Errors:
        return multiple_errors("beam_width", self.beam_width, budgets)


@dataclass(frozen=True)
class LookaheadSettings(BeamSettings):
    lookahead: int = 0
    """k: rollout steps at temperature 0 after each candidate step, whose end the verifier scores."""

    def errors(self, budgets: list[int]) -> Errors:
        negative = [("lookahead", f"must be >= 0, got {self.lookahead}")] if self.lookahead < 0 else []
        return super().errors(budgets) + negative


def beam_search(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    keep = budget // spec.options.beam_width
    beams: list[Candidate] = [ctx.candidate((), (), finished=False)]
    finished: list[Candidate] = []
    for depth in range(ctx.search.max_steps):
        samples_per_beam = budget if depth == 0 else spec.options.beam_width
        expansions = yield [ctx.expand(beam.steps, samples_per_beam, depth, i) for i, beam in enumerate(beams)]
        parents, children, ended = _children(ctx, beams, expansions)
        rollouts = yield from _rollouts(ctx, children, ended, getattr(spec.options, "lookahead", 0))
        scored = yield [
            ctx.score(steps + rollout, scored_steps=len(parent.steps))
            for parent, steps, rollout in zip(parents, children, rollouts, strict=True)
        ]

        last_depth = depth == ctx.search.max_steps - 1
        ranked: list[tuple[float, Candidate]] = []
        for parent, steps, done, result in zip(parents, children, ended, scored, strict=True):
            path_scores = parent.step_scores + tuple(result.step_scores)  # the path's steps, then the rollout's
            candidate = ctx.candidate(steps, path_scores[: len(steps)], finished=done)
            if done or last_depth:
                finished.append(candidate)
            else:
                value = path_scores[-1] if path_scores else 0.0
                ranked.append((value, candidate))
        if not ranked or len(finished) >= budget:
            break
        ranked.sort(key=lambda pair: pair[0], reverse=True)  # stable: earlier samples win ties
        beams = [candidate for _, candidate in ranked[:keep]]
    return finished


def _children(
    ctx: SearchContext, beams: list[Candidate], expansions: list[Result]
) -> tuple[list[Candidate], list[tuple[str, ...]], list[bool]]:
    """Each child's parent beam, the beam extended by each of its sampled steps, and whether that child has
    ended."""
    parents: list[Candidate] = []
    children: list[tuple[str, ...]] = []
    ended: list[bool] = []
    for beam, result in zip(beams, expansions, strict=True):
        for completion in result.completions:
            steps, done = ctx.extend(beam, completion)
            parents.append(beam)
            children.append(steps)
            ended.append(done)
    return parents, children, ended


def _rollouts(ctx: SearchContext, children: list[tuple[str, ...]], ended: list[bool], k: int):
    """Greedy k-step continuations of every unfinished child, batched one step at a time."""
    rollouts: list[tuple[str, ...]] = [() for _ in children]
    live = [i for i, done in enumerate(ended) if not done]
    for _ in range(k):
        if not live:
            break
        results = yield [replace(ctx.expand(children[i] + rollouts[i], 1), temperature=0.0, seed=None) for i in live]
        still_live = []
        for i, result in zip(live, results, strict=True):
            step, done = sampled_step(result.completions[0])
            if step.strip():
                rollouts[i] += (step,)
            if not done:
                still_live.append(i)
        live = still_live
    return rollouts


BEAM = Strategy(
    "beam",
    beam_search,
    BeamSettings,
    scores_steps=True,
    label=lambda settings: f"(M={settings.beam_width})",
    worst_case_tokens=step_prefix,
)
LOOKAHEAD = Strategy(
    "lookahead",
    beam_search,
    LookaheadSettings,
    scores_steps=True,
    label=lambda settings: f"(M={settings.beam_width},k={settings.lookahead})",
    worst_case_tokens=step_prefix,
)
