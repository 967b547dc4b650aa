"""The paired comparisons behind every verdict the compute-optimal report states in words (`ttsearch optimize`;
the report's sections, tables and plots are `ttsearch.analysis.compute_optimal_report`).

A `Curve` is what compute-optimal is compared with (the best fixed label, a best-of-N label), with its
per-question values so that a paired test can compare them. Each verdict comes from a paired test over the same
questions (`ttsearch.analysis.statistics`, with its 95 % interval), never from a difference of means alone:
compute-optimal against the best fixed label at equal budget (`versus_best_fixed`); whether compute-optimal needs
fewer or more compute than a compared curve for its accuracy, in generations and in FLOPs (`cost_verdict`,
`cost_sentences`); and the small model with compute-optimal search against the larger model at matched FLOPs
(`matched_tests`). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ttsearch.analysis.compute_optimal import (
    BEST_FIXED,
    PolicyResult,
    accuracy_tables,
    as_long,
    best_of_n_labels,
    strategy_curves,
)
from ttsearch.analysis.statistics import METHOD, NO_DIFFERENCE, Difference, grouped, paired_difference

UNDETERMINED = "undetermined within the sweep"


def _item(budget: int, difference: Difference, versus: str = "") -> str:
    """'N=4 (vs its N=8: +12.0 points, 95 % CI …)', the budget and the paired test that decided its verdict."""
    return f"N={budget} ({versus}{difference.interval()})"


@dataclass(frozen=True)
class Curve:
    """A curve compared with compute-optimal: per budget accuracy and FLOPs, and its per-question values."""

    curve: pd.DataFrame  # budget → accuracy, total_flops
    correct: pd.Series  # (unique_id, budget) → correct (NaN: ungraded)
    flops: pd.Series  # (unique_id, budget) → total FLOPs

    def at(self, budget: int) -> pd.Series:
        """unique_id → accuracy at `budget`: what a paired test compares."""
        return self.correct.xs(budget, level="budget")


def result_curve(result: PolicyResult) -> Curve:
    """A cross-validated policy result (compute-optimal, the best fixed label) as a `Curve`."""
    q = result.per_question.set_index(["unique_id", "budget"])
    return Curve(result.curve(), q["correct"], q["total_flops"])


def comparators(frame: pd.DataFrame, questions: pd.Index, fixed: PolicyResult) -> dict[str, Curve]:
    """The best fixed label (CV) and every best-of-N label, as curves over `questions`."""
    tables = accuracy_tables(frame, questions)
    accuracy, flops = as_long(tables.accuracy), as_long(tables.flops)
    curves = strategy_curves(frame, questions)
    compared = {BEST_FIXED: result_curve(fixed)}
    for label in best_of_n_labels(frame):
        compared[label] = Curve(
            curves.xs(label, level="strategy_label"),
            accuracy.xs(label, level="strategy_label"),
            flops.xs(label, level="strategy_label"),
        )
    return compared


def cost_verdict(
    compare: Callable[[int], Difference], cost: float, costs: pd.Series
) -> tuple[str, Difference, int] | None:
    """Whether compute-optimal needs fewer or more compute than a compared curve for its accuracy at one budget.

    `cost` is compute-optimal's (generations or FLOPs), `costs` the compared curve's per swept budget, and
    `compare(budget)` the paired test of compute-optimal's per-question accuracy against the compared curve's at
    that budget. "fewer": the curve is measurably less accurate even at its cheapest swept budget costing at least
    `cost`; "more": measurably more accurate at its dearest swept budget costing at most `cost`; otherwise no
    measurable difference, or undetermined where the one bracketing budget the sweep has is measurably apart.
    Returns (verdict, the deciding test, its budget), None where a cost is unknown.
    """
    costs = costs.dropna()
    if pd.isna(cost) or costs.empty:
        return None
    tolerance = 1e-9 * abs(cost)
    dearer, cheaper = costs[costs >= cost - tolerance], costs[costs <= cost + tolerance]
    up = (compare(int(dearer.idxmin())), int(dearer.idxmin())) if len(dearer) else None
    down = (compare(int(cheaper.idxmax())), int(cheaper.idxmax())) if len(cheaper) else None
    if up and up[0].sign > 0:
        return "fewer", *up
    if down and down[0].sign < 0:
        return "more", *down
    for tested in (up, down):
        if tested and tested[0].sign == 0:
            return NO_DIFFERENCE, *tested
    return UNDETERMINED, *(up or down)


def cost_sentences(mine: Curve, other: Curve, table: pd.DataFrame, counted: bool) -> str:
    """'Generations: fewer at N=4 (vs its N=8: …); … FLOPs: …', each verdict from `cost_verdict`."""

    @functools.cache
    def compare(budget: int, other_budget: int) -> Difference:
        return paired_difference(mine.at(budget), other.at(other_budget))

    generations = table["budget_with_estimation"] if counted else pd.Series(table.index.astype(float), table.index)
    units = {
        "Generations": (generations, pd.Series(other.curve.index.astype(float), other.curve.index)),
        "FLOPs": (table["flops_with_estimation"] if counted else table["flops"], other.curve["total_flops"]),
    }
    sentences = []
    for unit, (cost, costs) in units.items():
        verdicts = []
        for budget in table.index:
            decided = cost_verdict(functools.partial(compare, int(budget)), cost[budget], costs)
            if decided is not None:
                verdict, difference, versus = decided
                verdicts.append((verdict, _item(int(budget), difference, f"vs its N={versus}: ")))
        sentences.append(grouped(unit, verdicts))
    return " ".join(part for part in sentences if part)


def versus_best_fixed(results: dict[str, PolicyResult], fixed: PolicyResult) -> str:
    """Compute-optimal against the best fixed label at each budget, each verdict from a paired test."""
    theirs = result_curve(fixed)
    said = []
    for kind, result in results.items():
        mine = result_curve(result)
        verdicts = []
        for budget in sorted(mine.curve.index):
            difference = paired_difference(mine.at(budget), theirs.at(budget))
            verdicts.append((difference.verdict(), _item(int(budget), difference)))
        said.append(grouped(f"compute-optimal ({kind})", verdicts).rstrip("."))
    return (
        f"Compared with the {BEST_FIXED} at equal budget ({METHOD}; differences in accuracy points, "
        f"compute-optimal minus it): {'; '.join(said)}."
    )


def matched_tests(result: PolicyResult, pass1: pd.Series, matched: pd.DataFrame) -> list[Difference | None]:
    """Per row of `flops_matched`: the paired test of the small model's per-question accuracy at the budget used
    against the larger model's pass@1, over that row's bin ("all": every shared question); None: no budget used."""
    small = result.per_question[result.per_question["unique_id"].isin(pass1.index)]
    bins = small.drop_duplicates("unique_id").set_index("unique_id")["bin"]
    by_budget = small.set_index(["budget", "unique_id"])["correct"]
    tests = []
    for used, group in zip(matched["used_budget"], matched["bin"], strict=True):
        if pd.isna(used):
            tests.append(None)
            continue
        ids = bins.index if group == "all" else bins.index[bins == group]
        tests.append(paired_difference(by_budget.loc[int(used)].reindex(ids), pass1.reindex(ids)))
    return tests
