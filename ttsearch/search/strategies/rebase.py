"""REBASE, reward-balanced search (Wu et al. 2024, "Inference Scaling Laws"), the expansion rule ETS builds on.

Budget N: the root is expanded N ways. At every depth each live (unfinished) node's children are scored, children
that end the solution are set aside as finished, and the width left, N minus the finished count, is shared out
over the unfinished children in proportion to softmax(score / `rebase_temperature`), the score being the
verifier's score of the node's last step. A node given width 0 is pruned. The paper rounds each share; here the
shares are apportioned by largest remainder so they sum to exactly the width left (ties to the earlier child),
which keeps the search at exactly N finished solutions. The search ends when N solutions have finished or at
`search.max_steps`, where the unfinished children are returned too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.config import StrategySpec
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun, grow, softmax, step_value
from ttsearch.search.strategies.registry import Errors, Strategy, positive_errors, step_prefix


@dataclass(frozen=True)
class RebaseSettings:
    rebase_temperature: float = 0.2
    """A node's share of the width is softmax(score / this) over the live nodes."""

    def errors(self, budgets: list[int]) -> Errors:
        return positive_errors(self, "rebase_temperature")


def rebase(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    temperature = spec.options.rebase_temperature
    nodes, widths = [ctx.candidate((), (), finished=False)], [budget]
    finished: list[Candidate] = []
    for depth in range(ctx.search.max_steps):
        grown = yield from grow(ctx, nodes, widths, depth, list(range(len(nodes))))
        children = [child for family in grown for child in family]
        finished += [child for child in children if child.finished]
        unfinished = [child for child in children if not child.finished]
        if depth == ctx.search.max_steps - 1:
            return finished + unfinished
        left = budget - len(finished)
        if left <= 0 or not unfinished:
            break
        shares = softmax([step_value(child) / temperature for child in unfinished])
        allotted = apportion(left, shares)
        nodes = [child for child, width in zip(unfinished, allotted, strict=True) if width]
        widths = [width for width in allotted if width]
    return finished


def apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Whole numbers proportional to `shares` that sum to `total`: each share's floor, then one more to the largest
    remainders (the earlier on ties)."""
    quotas = [total * share for share in shares]
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


REBASE = Strategy(
    "rebase",
    rebase,
    RebaseSettings,
    scores_steps=True,
    label=lambda settings: f"(T={settings.rebase_temperature:g})",
    worst_case_tokens=step_prefix,
)
