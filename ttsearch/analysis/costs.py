"""Cost at equal accuracy: the compute each strategy label needs to reach best-of-N's accuracy, and what early
stopping saved against its full inner search."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ttsearch.analysis.curves import finished_rows, graded_rows, mean_curves, search_jobs
from ttsearch.config import StrategySpec, inner_spec
from ttsearch.search.strategies import strategy, strategy_config, strategy_names

ACCURACY_TOLERANCE = 1e-12  # accuracies are means of the same per-question values: equal up to rounding


def cost_to_reach(costs: Sequence[float], accuracy: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest cost at which a measured curve reaches `target`, interpolated on log2(cost) between points.

    Returns (cost, bound): "=" interpolated or measured; "<=" already reached at the smallest measured cost
    (the true cost may be lower); ">" never reached, cost = the largest measured (the true cost is higher).
    """
    points = sorted(zip(costs, accuracy, strict=True))
    if any(not math.isfinite(c) or c <= 0 or not math.isfinite(a) for c, a in points):
        return math.nan, ""
    if points[0][1] >= target - ACCURACY_TOLERANCE:
        return points[0][0], "<="
    for (c0, a0), (c1, a1) in zip(points, points[1:], strict=False):
        if abs(a1 - target) <= ACCURACY_TOLERANCE:
            return c1, "="
        if a1 > target:
            fraction = (target - a0) / (a1 - a0)
            return float(np.exp2(np.log2(c0) + fraction * (np.log2(c1) - np.log2(c0)))), "="
    return points[-1][0], ">"


EQUAL_ACCURACY_COLUMNS = [
    "baseline",
    "selection",
    "budget",
    "accuracy",
    "baseline_samples",
    "baseline_flops",
    "label",
    "samples",
    "samples_bound",
    "samples_ratio",
    "flops",
    "flops_bound",
    "flops_ratio",
]


def _ratio(cost: float, baseline: float) -> float:
    """cost ÷ baseline, NaN where the baseline is no positive number (e.g. FLOPs not recorded)."""
    return cost / baseline if math.isfinite(baseline) and baseline > 0 else math.nan


def cost_at_equal_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per best-of-N label, budget N and other label of the same selection mode: the compute that label needs to
    reach best-of-N's accuracy at N, in mean samples spent per question and in mean total FLOPs.

    The x axes are what the searches spent (the `samples` column, as the scheduler counted it), not the nominal
    budget, so a search that stops early is charged only the rounds it ran. Costs come from `cost_to_reach` over
    the label's measured points (bounds kept); ratios are the label's cost ÷ best-of-N's at N (< 1: cheaper), NaN
    where unknown. `accuracy` is best-of-N's accuracy at N in %. Error rows and ungraded rows take no part.
    """
    graded, _ = graded_rows(finished_rows(frame)[0])
    flops = graded["total_flops"].astype(float) if "total_flops" in graded else math.nan
    graded = graded.assign(samples=graded["samples"].astype(float), total_flops=flops)
    by_samples = mean_curves(graded, "correct", "strategy_label", x="samples")
    by_flops = mean_curves(graded, "correct", "strategy_label", x="total_flops")
    curves = by_samples.rename(columns={"x": "samples"}).assign(flops=by_flops["x"], accuracy=by_samples["mean"] / 100)
    labels = graded.drop_duplicates("strategy_label").set_index("strategy_label")[["strategy", "selection"]]
    rows = []
    for baseline in sorted(labels.index[labels["strategy"] == "best_of_n"]):
        selection = labels.at[baseline, "selection"]
        others = sorted(labels.index[(labels["strategy"] != "best_of_n") & (labels["selection"] == selection)])
        for target in curves[curves["label"] == baseline].itertuples():
            for label in others:
                curve = curves[curves["label"] == label]
                samples, samples_bound = cost_to_reach(curve["samples"], curve["accuracy"], target.accuracy)
                flops, flops_bound = cost_to_reach(curve["flops"], curve["accuracy"], target.accuracy)
                rows.append(
                    {
                        "baseline": baseline,
                        "selection": selection,
                        "budget": target.budget,
                        "accuracy": target.mean,
                        "baseline_samples": target.samples,
                        "baseline_flops": target.flops,
                        "label": label,
                        "samples": samples,
                        "samples_bound": samples_bound,
                        "samples_ratio": _ratio(samples, target.samples),
                        "flops": flops,
                        "flops_bound": flops_bound,
                        "flops_ratio": _ratio(flops, target.flops),
                    }
                )
    return pd.DataFrame(rows, columns=EQUAL_ACCURACY_COLUMNS)


def inner_config(row: pd.Series) -> str | None:
    """The configuration a wrapping strategy's row (early_stop) runs in rounds, its aggregation kept; None for
    any other, and None where it cannot be known: a strategy not installed here, or a row of an old run directory
    whose settings its config.yaml did not give. Read from the row's `settings`: `early_stop(beam(M=4),r=4,s=0.75)`
    → `beam(M=4)`."""
    if row["strategy"] not in strategy_names() or not isinstance(row["settings"], str):
        return None
    if strategy(row["strategy"]).inner is None:
        return None
    spec = StrategySpec(row["strategy"], [], row["aggregation"], json.loads(row["settings"]))
    return strategy_config(inner_spec(spec))


EARLY_STOP_COLUMNS = ["config", "budget", "inner_config", "samples", "full_samples", "saved"]


def early_stop_savings(frame: pd.DataFrame) -> pd.DataFrame:
    """Per early_stop configuration and nominal budget N: mean samples spent per question, what the full inner
    search spends at N, and the share saved (1 − spent ÷ full). Its selections share one search, so one row.

    A full best-of-N job spends exactly N; any other inner configuration is taken from the sweep's own rows of
    that configuration at N (its mean `samples`, each job once), NaN where the sweep did not run it.
    Error rows take no part; ungraded rows do (what a search spent does not depend on its grade).
    """
    jobs = search_jobs(finished_rows(frame)[0])
    rows = []
    stops = jobs[jobs["strategy"] == "early_stop"]
    for (config, budget), group in stops.groupby(["strategy_config", "budget"], sort=True):
        inner = inner_config(group.iloc[0])
        if inner is None:
            full = math.nan
        elif inner.split("/")[0] == "best_of_n":
            full = float(budget)
        else:
            spent = jobs.loc[(jobs["strategy_config"] == inner) & (jobs["budget"] == budget), "samples"]
            full = float(spent.astype(float).mean()) if len(spent) else math.nan
        samples = float(group["samples"].astype(float).mean())
        rows.append(
            {
                "config": config,
                "budget": budget,
                "inner_config": inner,
                "samples": samples,
                "full_samples": full,
                "saved": 1 - _ratio(samples, full),
            }
        )
    return pd.DataFrame(rows, columns=EARLY_STOP_COLUMNS)
