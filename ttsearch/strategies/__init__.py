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

SEARCH_READS_VERIFIER = frozenset({"beam", "lookahead"})
"""Strategies whose search itself is steered by verifier scores. The others (best-of-N, revisions) read the
verifier only to select a final answer, so a selection that reads no score (majority) costs no verifier compute."""


def start(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    return STRATEGY_FUNCTIONS[spec.name](ctx, budget, spec)


def strategy_config(spec: StrategySpec) -> str:
    """One strategy configuration (its hyper-parameters), e.g. `beam(M=4)` or `best_of_n/min`."""
    revision_split = f"P={spec.revision_chains}" if spec.revision_chains else f"T={spec.revision_length}"
    params = {
        "beam": f"(M={spec.beam_width})",
        "lookahead": f"(M={spec.beam_width},k={spec.lookahead})",
        "revisions": f"({revision_split},w={spec.revision_window})",
    }
    aggregation = "" if spec.aggregation == "last" else f"/{spec.aggregation}"
    return f"{spec.name}{params.get(spec.name, '')}{aggregation}"


def strategy_label(spec: StrategySpec, selection: str) -> str:
    """Configuration plus final selection, e.g. `beam(M=4)/weighted`: one curve in the report."""
    config, _, aggregation = strategy_config(spec).partition("/")
    return f"{config}/{selection}" + (f"/{aggregation}" if aggregation else "")


__all__ = [
    "SEARCH_READS_VERIFIER",
    "Candidate",
    "SearchContext",
    "StrategyRun",
    "start",
    "strategy_config",
    "strategy_label",
]
