"""Verdicts with statistics: every comparison the reports state in words is a paired test over the same questions.

Two accuracies measured on the same questions differ by question difficulty far more than by strategy, so their
difference is tested on the per-question differences: a bootstrap over questions (`scipy.stats.bootstrap`,
`RESAMPLES` resamples, seeded, percentile interval). A verdict names a direction only when the 95 % interval of
the mean difference excludes 0; otherwise it says "no measurable difference". Bootstrap intervals are too narrow
for a handful of questions (4 questions that all differ the same way give an interval of that one value), so
per-bin verdicts on small bins are weaker than they read. Ties between top-scored choices are
reported here too: a row's `accuracy` is its expected correctness with tied top choices broken by expectation,
`accuracy_low` / `accuracy_high` the worst and best tie-breaking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

RESAMPLES = 10_000
"""Bootstrap resamples per comparison; the reports state it."""
CONFIDENCE = 0.95
SEED = 0
"""Every comparison draws its resamples from this seed, so a report is reproducible to the digit."""
NO_DIFFERENCE = "no measurable difference"
ACCURACY_COLUMNS = ("accuracy", "accuracy_low", "accuracy_high")
TIE_COLUMNS = ["rows", "tied", "accuracy", "accuracy_low", "accuracy_high"]
METHOD = (
    f"paired bootstrap over the same questions, {RESAMPLES:,} resamples, seed {SEED}, "
    f"{100 * CONFIDENCE:.0f} % percentile intervals"
)
"""How every verdict is decided, as the reports say it."""


def _decimals(values: Sequence[float]) -> int:
    """Decimals (in points) that show every nonzero value with at least one significant digit: 1 to 4."""
    shown = [abs(100 * v) for v in values if v and not math.isnan(v)]
    return min(4, max([1, *(-math.floor(math.log10(v)) for v in shown)]))


@dataclass(frozen=True)
class Difference:
    """The mean of a − b over the questions both have a verdict on, and its bootstrap interval (fractions)."""

    mean: float
    """Mean per-question difference in accuracy, in [−1, 1]; NaN when no question is shared."""
    low: float
    """Lower end of the 95 % interval."""
    high: float
    """Upper end of the 95 % interval."""
    n: int
    """Questions compared (both graded)."""

    @property
    def sign(self) -> int:
        """+1 when a is measurably more accurate, −1 when measurably less, 0 when the interval holds 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def interval(self) -> str:
        """'+1.2 points, 95 % CI +0.4 to +2.0, 500 questions', with one count of decimals that shows each."""
        if self.n == 0:
            return "no question in common"
        digits = _decimals((self.mean, self.low, self.high))
        mean, low, high = (f"{100 * v + 0.0:+.{digits}f}" for v in (self.mean, self.low, self.high))  # no -0.0
        questions = f"{self.n} question{'s' if self.n != 1 else ''}"
        return f"{mean} points, {100 * CONFIDENCE:.0f} % CI {low} to {high}, {questions}"

    def verdict(self, better: str = "more accurate", worse: str = "less accurate") -> str:
        """`better`, `worse` or NO_DIFFERENCE, by the sign of the interval."""
        return {1: better, -1: worse, 0: NO_DIFFERENCE}[self.sign]


def grouped(subject: str, verdicts: list[tuple[str, str]], link: str = " at ") -> str:
    """'subject: A at x (…), y (…); B at z (…).' from (verdict, item) pairs, verdicts in first-seen order; '' for
    none. One sentence per comparison set, so every report words its verdicts alike."""
    groups: dict[str, list[str]] = {}
    for verdict, item in verdicts:
        groups.setdefault(verdict, []).append(item)
    parts = [f"{verdict}{link}{', '.join(items)}" for verdict, items in groups.items()]
    return f"{subject}: {'; '.join(parts)}." if parts else ""


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def paired_difference(
    a: Sequence[float] | pd.Series, b: Sequence[float] | pd.Series, seed: int = SEED, resamples: int = RESAMPLES
) -> Difference:
    """Mean of a − b over paired per-question accuracies, with its bootstrap interval over questions.

    Series are paired by their index (questions only one of them has take no part); sequences by position. Pairs
    with a NaN (ungraded) take no part. Resampling questions with both their values is resampling their
    differences, so the bootstrap runs on those. All differences equal (e.g. both always right): every resample
    agrees and the interval is that one value.
    """
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        a, b = a.align(b, join="inner")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired accuracies need one value per question on both sides, got {a.shape} and {b.shape}")
    differences = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if differences.size == 0:
        return Difference(math.nan, math.nan, math.nan, 0)
    mean = float(differences.mean())
    if np.ptp(differences) == 0:
        return Difference(mean, mean, mean, differences.size)
    result = bootstrap(
        (differences,),
        _mean,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Difference(mean, float(interval.low), float(interval.high), differences.size)


def with_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with float `accuracy`, `accuracy_low`, `accuracy_high` (NaN: ungraded).

    Rows written before these columns (absent, or null in a file merged with newer ones) read `correct` as their
    accuracy, and low = high = it: such rows recorded no ties.
    """
    correct = frame["correct"].astype(float)
    accuracy = frame["accuracy"].astype(float).fillna(correct) if "accuracy" in frame else correct
    bounds = {
        name: frame[name].astype(float).fillna(accuracy) if name in frame else accuracy
        for name in ("accuracy_low", "accuracy_high")
    }
    return frame.assign(accuracy=accuracy, **bounds)


def tie_counts(frame: pd.DataFrame, by: Sequence[str] = ("strategy_label", "budget")) -> pd.DataFrame:
    """Per group: graded rows, rows whose tied top choices differ in correctness, and the mean accuracy with ties
    broken by expectation, worst case and best case (fractions). Ungraded rows take no part."""
    rows = with_accuracy(frame)
    rows = rows[rows["accuracy"].notna()]
    rows = rows.assign(tied=rows["accuracy_low"] < rows["accuracy_high"])
    grouped = rows.groupby(list(by), sort=True)
    counts = grouped.agg(
        rows=("accuracy", "size"),
        tied=("tied", "sum"),
        accuracy=("accuracy", "mean"),
        accuracy_low=("accuracy_low", "mean"),
        accuracy_high=("accuracy_high", "mean"),
    )
    return counts[TIE_COLUMNS]


def distinct_digits(values: Sequence[float], others: Sequence[float] = ()) -> list[str]:
    """`values` printed with the fewest significant digits (one count for all) with which each printed value still
    lies strictly between its neighbours among `values` and `others` (e.g. the scores a threshold separates).

    So a threshold of 0.99998 between scores 0.99996 and 1 prints as "0.99998", never as "1".
    """
    marks = sorted({float(v) for v in [*values, *others]})

    def shown(digits: int) -> list[str]:
        return [f"{v:.{digits}g}" for v in values]

    # 17 significant digits give back every double exactly, so some count up to 17 always works
    fits = next(
        d for d in range(1, 18) if all(_between(float(t), v, marks) for t, v in zip(shown(d), values, strict=True))
    )
    return shown(fits)


def _between(printed: float, value: float, marks: list[float]) -> bool:
    """Whether `printed` lies strictly between the neighbours of `value` in `marks` (value itself left out)."""
    below = [m for m in marks if m < value]
    above = [m for m in marks if m > value]
    return (not below or printed > below[-1]) and (not above or printed < above[0])
