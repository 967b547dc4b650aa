"""Beam search against a process reward model, and lookahead search on top of it.

Budget N, beam width M (Snell et al. §5): sample N first steps, score them, keep the best N/M,
expand each kept beam with M next steps, repeat until every beam has ended or `max_steps`.
Lookahead (k > 0) values a candidate step by the verifier's score at the end of a k-step
temperature-0 rollout from it, which costs N×(k+1) samples per step; the rollout itself is
discarded.
"""

from __future__ import annotations

from dataclasses import replace

from ttsearch.config import StrategySpec
from ttsearch.requests import Completion, Result
from ttsearch.strategies.common import Candidate, SearchContext, StrategyRun


def beam_search(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    keep = budget // spec.beam_width
    beams: list[Candidate] = [ctx.candidate((), (), finished=False)]
    finished: list[Candidate] = []
    for depth in range(ctx.search.max_steps):
        samples_per_beam = budget if depth == 0 else spec.beam_width
        expansions = yield [ctx.expand(beam.steps, samples_per_beam, depth, i) for i, beam in enumerate(beams)]
        children, ended = _children(beams, expansions)
        rollouts = yield from _rollouts(ctx, children, ended, spec.lookahead)
        scored = yield [ctx.score(steps + rollout) for steps, rollout in zip(children, rollouts, strict=True)]

        last_depth = depth == ctx.search.max_steps - 1
        ranked: list[tuple[float, Candidate]] = []
        for steps, done, result in zip(children, ended, scored, strict=True):
            candidate = ctx.candidate(steps, tuple(result.step_scores[: len(steps)]), finished=done)
            if done or last_depth:
                finished.append(candidate)
            else:
                value = result.step_scores[-1] if result.step_scores else 0.0
                ranked.append((value, candidate))
        if not ranked or len(finished) >= budget:
            break
        ranked.sort(key=lambda pair: pair[0], reverse=True)  # stable: earlier samples win ties
        beams = [candidate for _, candidate in ranked[:keep]]
    return finished


def _step(completion: Completion) -> tuple[str, bool]:
    """A sampled step's text, and whether the solution ended there (EOS, or nothing left to say)."""
    step = completion.text.strip("\n")
    return step, completion.ended_solution or not step.strip()


def _children(beams: list[Candidate], expansions: list[Result]) -> tuple[list[tuple[str, ...]], list[bool]]:
    """Each beam extended by each of its sampled steps, and whether that child has ended."""
    children: list[tuple[str, ...]] = []
    ended: list[bool] = []
    for beam, result in zip(beams, expansions, strict=True):
        for completion in result.completions:
            step, done = _step(completion)
            children.append(beam.steps + ((step,) if step.strip() else ()))
            ended.append(done)
    return children, ended


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
            step, done = _step(result.completions[0])
            if step.strip():
                rollouts[i] += (step,)
            if not done:
                still_live.append(i)
        live = still_live
    return rollouts
