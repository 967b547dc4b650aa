"""Search strategies as pure state machines, looked up by name in the registry (`registry.STRATEGIES`)."""

from __future__ import annotations

from ttsearch.config import Aggregation, StrategySpec, running_strategy
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun
from ttsearch.search.strategies.registry import Strategy, strategy, strategy_names


def search_reads_verifier(spec: StrategySpec) -> bool:
    """Whether the search itself reads verifier scores: if not, a selection that reads no score (majority) costs no
    verifier compute. Early stopping reads what its inner strategy reads (its own stopping rule reads answers)."""
    return strategy(running_strategy(spec)).scores_steps


def start(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    return strategy(spec.name).run(ctx, budget, spec)


def strategy_config(spec: StrategySpec) -> str:
    """One strategy configuration (its hyper-parameters), e.g. `beam(M=4)`, `best_of_n/min` or
    `early_stop(best_of_n,r=4,s=0.75)`."""
    return _configuration(spec) + ("" if spec.aggregation == Aggregation.last else f"/{spec.aggregation}")


def _configuration(spec: StrategySpec) -> str:
    return spec.name + strategy(spec.name).label(spec.options)


def strategy_label(spec: StrategySpec, selection: str) -> str:
    """Configuration plus final selection, e.g. `beam(M=4)/weighted`: one curve in the report."""
    aggregation = "" if spec.aggregation == Aggregation.last else f"/{spec.aggregation}"
    return f"{_configuration(spec)}/{selection}{aggregation}"


__all__ = [
    "Candidate",
    "SearchContext",
    "Strategy",
    "StrategyRun",
    "search_reads_verifier",
    "start",
    "strategy",
    "strategy_config",
    "strategy_label",
    "strategy_names",
]
