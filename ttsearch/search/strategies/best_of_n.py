"""Best-of-N: N independent full solutions, each scored step by step by the verifier."""

from __future__ import annotations

import dataclasses

from ttsearch.config import StrategySpec
from ttsearch.search.strategies.common import SearchContext, StrategyRun
from ttsearch.search.strategies.registry import Strategy


def best_of_n(ctx: SearchContext, budget: int, spec: StrategySpec, first: int = 0) -> StrategyRun:
    """One request with n=budget (one shared prompt, so the prompt is prefilled once); from sample `first` on only,
    to extend a pool: vLLM seeds sample i of a request with the request's seed + i, so the rest of the budget,
    asked for with the seed moved by `first`, is exactly the rest of the whole request's samples."""
    whole = ctx.solve(ctx.prompt(()), budget - first, 0)
    [sampled] = yield [dataclasses.replace(whole, seed=whole.seed + first)]
    solutions = [(ctx.split_steps(c.text), c) for c in sampled.completions]
    scored = yield [ctx.score(steps) for steps, _ in solutions]
    return [
        ctx.candidate(steps, result.step_scores, completion.ended_solution, completion.num_tokens, result.tokens)
        for (steps, completion), result in zip(solutions, scored, strict=True)
    ]


BEST_OF_N = Strategy(
    "best_of_n",
    best_of_n,
    pool_unit=lambda settings: 1,  # N independent samples: any k of them are distributed as budget k's
    pool_shared_prompt=True,
    pool_extend=best_of_n,
)
