"""Search strategies as pure state machines, looked up by the name used in configs."""

from __future__ import annotations

from collections.abc import Callable

from ttsearch.config import STEP_SEARCHES, StrategySpec, inner_spec, running_strategy
from ttsearch.search.strategies.beam import beam_search
from ttsearch.search.strategies.best_of_n import best_of_n
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun
from ttsearch.search.strategies.dvts import dvts
from ttsearch.search.strategies.early_stop import early_stop
from ttsearch.search.strategies.particle_filter import particle_filter
from ttsearch.search.strategies.rebase import rebase
from ttsearch.search.strategies.revisions import revisions

STRATEGY_FUNCTIONS: dict[str, Callable[[SearchContext, int, StrategySpec], StrategyRun]] = {
    "best_of_n": best_of_n,
    "beam": beam_search,
    "lookahead": beam_search,  # beam search whose steps are valued after a k-step rollout
    "revisions": revisions,  # N/T chains of T sequential attempts; selection across all attempts
    "dvts": dvts,  # N/M independent subtrees, each following its best child
    "rebase": rebase,  # a width of N shared over the live nodes by softmax of their scores
    "particle_filter": particle_filter,  # N particles resampled by verifier weight every step
}
"""The strategies that run on their own; `early_stop` runs one of them in rounds (see `start`)."""


def search_reads_verifier(spec: StrategySpec) -> bool:
    """Whether the search itself reads verifier scores: if not, a selection that reads no score (majority) costs no
    verifier compute. Early stopping reads what its inner strategy reads (its own stopping rule reads answers)."""
    return running_strategy(spec) in STEP_SEARCHES


def start(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    if spec.name == "early_stop":
        return early_stop(ctx, budget, spec, start)
    return STRATEGY_FUNCTIONS[spec.name](ctx, budget, spec)


def strategy_config(spec: StrategySpec) -> str:
    """One strategy configuration (its hyper-parameters), e.g. `beam(M=4)`, `best_of_n/min` or
    `early_stop(best_of_n,r=4,s=0.75)`."""
    return _configuration(spec) + ("" if spec.aggregation == "last" else f"/{spec.aggregation}")


def _configuration(spec: StrategySpec) -> str:
    revision_split = f"P={spec.revision_chains}" if spec.revision_chains else f"T={spec.revision_length}"
    params = {
        "beam": f"(M={spec.beam_width})",
        "lookahead": f"(M={spec.beam_width},k={spec.lookahead})",
        "revisions": f"({revision_split},w={spec.revision_window})",
        "dvts": f"(M={spec.beam_width})",
        "rebase": f"(T={spec.rebase_temperature:g})",
        "particle_filter": f"(T={spec.particle_temperature:g})",
    }
    if spec.name == "early_stop":
        return f"early_stop({_configuration(inner_spec(spec))},r={spec.early_stop_round},s={spec.early_stop_share:g})"
    return f"{spec.name}{params.get(spec.name, '')}"


def strategy_label(spec: StrategySpec, selection: str) -> str:
    """Configuration plus final selection, e.g. `beam(M=4)/weighted`: one curve in the report."""
    aggregation = "" if spec.aggregation == "last" else f"/{spec.aggregation}"
    return f"{_configuration(spec)}/{selection}{aggregation}"


__all__ = [
    "Candidate",
    "SearchContext",
    "StrategyRun",
    "search_reads_verifier",
    "start",
    "strategy_config",
    "strategy_label",
]
