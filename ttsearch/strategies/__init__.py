"""Search strategies as pure state machines, looked up by the name used in configs."""

from __future__ import annotations

from collections.abc import Callable

from ttsearch.config import StrategySpec
from ttsearch.strategies.beam import beam_search
from ttsearch.strategies.best_of_n import best_of_n
from ttsearch.strategies.common import Candidate, SearchContext, StrategyRun
from ttsearch.strategies.revisions import revisions

STRATEGY_FUNCTIONS: dict[str, Callable[[SearchContext, int, StrategySpec], StrategyRun]] = {
    "best_of_n": best_of_n,
    "beam": beam_search,
    "lookahead": beam_search,  # beam search whose steps are valued after a k-step rollout
    "revisions": revisions,  # N/T chains of T sequential attempts; selection across all attempts
}


def start(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    return STRATEGY_FUNCTIONS[spec.name](ctx, budget, spec)


__all__ = ["Candidate", "SearchContext", "StrategyRun", "start"]
