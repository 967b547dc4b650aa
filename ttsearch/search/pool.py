"""Sample pools: a strategy's smaller budgets estimated from its largest budget's samples.

A strategy whose budget-k search is k/m independent, identically distributed *units* (`Strategy.pool_unit`) needs
only its largest budget generated: any k/m units of it are distributed as a budget-k search's. Best-of-N: a unit
is one sample; DVTS: one subtree's M children; revisions at a fixed chain length T: one chain of T attempts. Seeds
depend on a unit's position, never on the budget, so with vLLM the first u units are exactly what budget k alone
samples (a row's realisation). A smaller budget's accuracy is the expectation over every subset of u = k/m of the
pool's U units, not the first u alone: the same mean, less variance (each question contributes an average instead
of one draw), and each real sample is generated once.

Estimation (`estimate`): all C(U, u) subsets when there are at most `subsets` of them (exact: standard error 0),
else `subsets` drawn uniformly without replacement, seeded (`subset_seed`), with the Monte Carlo standard error.
Within a subset, score ties are broken by expectation: the value is the mean correctness of `tied_choices`, the
rule `select` draws from. Every selection of a job reads the same subsets, so their comparison is paired.
Coverage (any correct candidate) is exact: the unbiased pass@k estimator over units, 1 − C(U − c, u) / C(U, u)
for c covered units (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttsearch.config import Selection


@dataclass(frozen=True)
class PoolEstimate:
    """What one selection chooses on subsets of a pool, averaged over the subsets."""

    accuracy: float | None
    """Expected correctness of the chosen answer, ties broken by expectation; None: every drawn choice ungraded."""
    accuracy_low: float | None
    """The same with every tie broken against the reference: the worst the tie-breaking allows."""
    accuracy_high: float | None
    """With every tie broken towards the reference: the best the tie-breaking allows."""
    accuracy_se: float
    """Monte Carlo standard error of `accuracy` over the drawn subsets; 0 when every subset was enumerated."""
    subsets: int
    """Subsets averaged (all C(U, u) when that is at most the `subsets` asked for)."""


@dataclass(frozen=True)
class Pool:
    """One job's candidates as the estimators read them, in candidate order, `unit` consecutive per unit."""

    scores: np.ndarray
    """Aggregated verifier score per candidate."""
    groups: np.ndarray
    """Answer group per candidate (`answer_groups`, computed once per pool); -1: no answer."""
    correct: np.ndarray
    """1.0 right, 0.0 wrong, NaN ungraded, per candidate."""
    unit: int

    @classmethod
    def of(
        cls, scores: Sequence[float], groups: Sequence[int | None], correct: Sequence[bool | None], unit: int
    ) -> Pool:
        if unit < 1 or len(scores) % unit:
            raise ValueError(f"a pool of {len(scores)} candidates does not split into units of {unit}")
        return cls(
            np.asarray(scores, dtype=float),
            np.asarray([-1 if g is None else g for g in groups], dtype=np.int64),
            np.asarray([math.nan if c is None else float(c) for c in correct], dtype=float),
            unit,
        )

    @property
    def units(self) -> int:
        return len(self.scores) // self.unit

    def group_verdicts(self) -> np.ndarray:
        """Per answer group, the verdict of its first graded member (the grader calls its members equal, so they
        grade alike); NaN for a group none of whose members was graded."""
        verdicts = np.full(int(self.groups.max(initial=-1)) + 1, math.nan)
        for group, verdict in zip(self.groups[::-1], self.correct[::-1], strict=True):
            if group >= 0 and not math.isnan(verdict):
                verdicts[group] = verdict
        return verdicts

    def coverage(self, units: int) -> float:
        """Probability that `units` units drawn from the pool hold a correct candidate (unbiased pass@k)."""
        covered = np.nan_to_num(self.correct).reshape(self.units, self.unit).max(axis=1) > 0
        missed = self.units - int(covered.sum())
        return 1.0 - math.comb(missed, units) / math.comb(self.units, units)


def subset_seed(*key: object) -> int:
    """The seed of a job's subset draws: fixed by what names the row (problem, configuration, budget, seed)."""
    return zlib.crc32("|".join(map(str, key)).encode())


def unit_subsets(units: int, size: int, subsets: int, seed: int) -> np.ndarray:
    """Subsets of `size` of `units` unit indices, one per row, each sorted: every subset when there are at most
    `subsets` of them, else `subsets` uniform draws without replacement."""
    if not 1 <= size <= units:
        raise ValueError(f"cannot draw {size} of {units} units")
    if math.comb(units, size) <= subsets:
        return np.array(list(itertools.combinations(range(units), size)), dtype=np.int64)
    order = np.argsort(np.random.default_rng(seed).random((subsets, units)), axis=1)
    return np.sort(order[:, :size], axis=1)


def ordered_draws(units: int, size: int, draws: int, seed: int) -> np.ndarray:
    """`draws` random orders of random subsets of `size` of `units` units: for a strategy whose result depends on
    the order it meets its units (`Strategy.pool_replay`), so never enumerated."""
    if not 1 <= size <= units:
        raise ValueError(f"cannot draw {size} of {units} units")
    return np.argsort(np.random.default_rng(seed).random((draws, units)), axis=1)[:, :size]


def estimate(
    pool: Pool, selection: Selection | str, chosen_units: np.ndarray, spent: np.ndarray | None = None
) -> PoolEstimate:
    """`selection`'s expected correctness over the rows of `chosen_units` (`unit_subsets`, `ordered_draws`), ties
    by expectation. `spent[i]`: row i's search used only its first `spent[i]` units (it stopped early)."""
    lengths = np.full(len(chosen_units), chosen_units.shape[1]) if spent is None else np.asarray(spent)
    values = np.empty((len(chosen_units), 3))
    for length in np.unique(lengths):
        rows = lengths == length
        units = chosen_units[rows, :length]
        members = (units[:, :, None] * pool.unit + np.arange(pool.unit)).reshape(len(units), -1)
        values[rows] = (
            _naive_values(pool, members)
            if selection == Selection.naive
            else _vote_values(pool, members, weighted=selection == Selection.weighted)
        )
    mean, low, high = (values[:, column] for column in range(3))
    graded = ~np.isnan(mean)
    if not graded.any():
        return PoolEstimate(None, None, None, 0.0, len(values))
    exact = spent is None and len(values) == math.comb(pool.units, chosen_units.shape[1])
    se = 0.0 if exact or graded.sum() < 2 else float(np.std(mean[graded], ddof=1) / math.sqrt(graded.sum()))
    return PoolEstimate(
        float(mean[graded].mean()), float(low[graded].mean()), float(high[graded].mean()), se, len(values)
    )


def _tie_values(tied: np.ndarray, verdicts: np.ndarray) -> np.ndarray:
    """Per row: (mean, min, max) of the graded verdicts of the tied choices; NaN where none is graded."""
    usable = tied & ~np.isnan(verdicts)
    count = usable.sum(axis=1)
    filled = np.where(usable, verdicts, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / count
    low = np.where(usable, verdicts, np.inf).min(axis=1)
    high = np.where(usable, verdicts, -np.inf).max(axis=1)
    none = count == 0
    return np.stack([mean, np.where(none, np.nan, low), np.where(none, np.nan, high)], axis=1)


def _naive_values(pool: Pool, members: np.ndarray) -> np.ndarray:
    scores = pool.scores[members]
    tied = scores == scores.max(axis=1, keepdims=True)
    return _tie_values(tied, pool.correct[members])


def _vote_values(pool: Pool, members: np.ndarray, weighted: bool) -> np.ndarray:
    """Weighted (summed scores) or majority (counts) votes per answer group; rows where nobody answered fall back
    to naive, as `tied_choices` does."""
    groups = pool.groups[members]
    verdicts = pool.group_verdicts()
    if len(verdicts) == 0:
        return _naive_values(pool, members)
    rows = np.repeat(np.arange(len(members)), members.shape[1])
    answered = groups.ravel() >= 0
    weights = (pool.scores[members] if weighted else np.ones(members.shape)).ravel()
    totals = np.zeros((len(members), len(verdicts)))
    present = np.zeros_like(totals, dtype=bool)
    np.add.at(totals, (rows[answered], groups.ravel()[answered]), weights[answered])
    present[rows[answered], groups.ravel()[answered]] = True
    top = np.where(present, totals, -np.inf).max(axis=1, keepdims=True)
    values = _tie_values(present & (totals == top), np.broadcast_to(verdicts, totals.shape))
    silent = ~present.any(axis=1)
    if silent.any():
        values[silent] = _naive_values(pool, members[silent])
    return values
