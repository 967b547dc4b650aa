"""Compute-optimal scaling (Snell et al. 2024, §3): the per-difficulty policy fitted by cross-validation, its
efficiency against best-of-N, and the FLOPs-matched comparison with a larger model. `ttsearch optimize` (the
pipeline) turns these into its report; `ttsearch.analysis.policy` is the policy `ttsearch solve` deploys.

The paper's recipe: estimate each question's difficulty (quantile bins of pass@1, oracle from the ground truth
or predicted from verifier scores), pick for every (budget, bin) the strategy label that did best there on
held-out questions (2-fold cross-validation), and compare the resulting curve with the best fixed strategy
label per budget (chosen on the same folds), with each best-of-N selection mode, and with a larger model at
matched FLOPs. Unlike the paper, the samples spent on the predicted estimate are counted as compute too.
Accuracies here are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ttsearch.analysis.costs import ACCURACY_TOLERANCE, cost_to_reach
from ttsearch.analysis.curves import DIFFICULTY_KINDS, AnalysisError, Difficulty, computed_tokens
from ttsearch.analysis.policy import Policy
from ttsearch.search.outcomes import flops_of

KINDS = DIFFICULTY_KINDS
FOLDS = 2
R_VALUES = (0.16, 0.79, 22.0)  # D_inference / D_pretrain: the paper's Fig. 9 regimes R ≪ 1, R ≈ 1, R ≫ 1
BEST_FIXED = "best fixed label (CV)"


@dataclass(frozen=True)
class _Tables:
    """Question × (strategy_label, budget) matrices: what the policy chooses from and is scored on."""

    accuracy: pd.DataFrame
    """Mean `accuracy` (a row's expected correctness, `ttsearch.sweep.pools`) over graded seeds; a question with no
    row for a (strategy_label, budget) counts as wrong there; NaN: only ungraded rows."""
    tie_cost: pd.DataFrame  # mean total FLOPs (generated tokens when the sweep recorded no FLOPs): breaks ties
    flops: pd.DataFrame  # mean total FLOPs, NaN when not recorded


def accuracy_tables(frame: pd.DataFrame, questions: pd.Index) -> _Tables:
    rows = frame[frame["unique_id"].isin(questions)]
    if rows.empty:
        raise AnalysisError("no result rows for the binned questions: are the bins from this sweep?")
    has_flops = "total_flops" in rows and rows["total_flops"].notna().any()
    values = rows.assign(
        correct=rows["accuracy"].astype(float),
        flops=rows["total_flops"].astype(float) if has_flops else np.nan,
        tie_cost=rows["total_flops" if has_flops else "generated_tokens"].astype(float),
    )
    grouped = values.groupby(["unique_id", "strategy_label", "budget"])

    def matrix(column: str) -> pd.DataFrame:
        return grouped[column].mean().unstack(["strategy_label", "budget"]).sort_index(axis=1)

    accuracy = matrix("correct")
    present = grouped.size().unstack(["strategy_label", "budget"]).reindex_like(accuracy).notna()
    accuracy = accuracy.mask(~present, 0.0)  # absent: wrong; present but ungraded only: NaN, no verdict
    return _Tables(
        accuracy,
        matrix("tie_cost").reindex_like(accuracy),
        matrix("flops").reindex_like(accuracy) if has_flops else accuracy * np.nan,
    )


def _budgets(tables: _Tables, budgets: Sequence[int] | None) -> list[int]:
    swept = sorted(set(tables.accuracy.columns.get_level_values("budget")))
    if budgets is None:
        return swept
    missing = sorted(set(budgets) - set(swept))
    if missing:
        raise AnalysisError(f"budgets {missing} were not swept; the sweep has {swept}")
    return sorted(budgets)


def as_long(matrix: pd.DataFrame) -> pd.Series:
    return matrix.stack(["strategy_label", "budget"])


def _choose(tables: _Tables, questions: pd.Index, bins: pd.Series, budgets: list[int]) -> pd.DataFrame:
    """Per (budget, bin), the label with the highest mean accuracy on `questions`; ties: cheaper, then label order.

    Means skip ungraded (NaN) entries.
    """
    group = bins.loc[questions].rename("bin")
    long = pd.DataFrame(
        {
            "train_accuracy": as_long(tables.accuracy.loc[questions].groupby(group).mean()),
            "train_cost": as_long(tables.tie_cost.loc[questions].groupby(group).mean()),
        }
    ).reset_index()
    long = long[long["budget"].isin(budgets)].sort_values(
        ["budget", "bin", "train_accuracy", "train_cost", "strategy_label"],
        ascending=[True, True, False, True, True],
        na_position="last",
    )
    chosen = long.drop_duplicates(["budget", "bin"]).reset_index(drop=True)
    return chosen.assign(train_questions=chosen["bin"].map(group.value_counts()))


def _folds(bins: pd.Series, folds: int, seed: int) -> pd.Series:
    """unique_id → fold: within each bin a seeded shuffle dealt round-robin, continuing across bins (balanced)."""
    rng = np.random.default_rng(seed)
    dealt, offset = [], 0
    for _, members in bins.groupby(bins, sort=True):
        ids = np.sort(members.index.to_numpy())[rng.permutation(len(members))]
        dealt.append(pd.Series((offset + np.arange(len(ids))) % folds, index=ids))
        offset += len(ids)
    return pd.concat(dealt).rename("fold")


@dataclass(frozen=True)
class PolicyResult:
    """Cross-validated compute-optimal policy: what each fold chose and how it did on the held-out fold."""

    choices: pd.DataFrame  # fold, budget, bin, strategy_label, train_accuracy, train_cost, train_questions
    per_question: pd.DataFrame  # unique_id, budget, fold, bin, strategy_label, correct, total_flops (held out)
    accuracy: pd.Series  # budget → compute-optimal accuracy over all questions, each scored out of fold

    def curve(self) -> pd.DataFrame:
        """budget → accuracy and mean total FLOPs of the chosen strategies, the shape `efficiency` takes."""
        means = self.per_question.groupby("budget")[["correct", "total_flops"]].mean()
        return means.rename(columns={"correct": "accuracy"})

    def folds(self) -> pd.Series:
        """unique_id → the fold it was held out in."""
        return self.per_question.drop_duplicates("unique_id").set_index("unique_id")["fold"]


def compute_optimal(
    frame: pd.DataFrame,
    bins: pd.Series,
    budgets: Sequence[int] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    fold_of: pd.Series | None = None,
) -> PolicyResult:
    """The paper's compute-optimal curve, cross-validated over questions so no choice is scored on its own data.

    Only questions with a bin take part (e.g. those with enough best-of-N samples to estimate difficulty).
    Folds are stratified by bin, so every bin needs at least `folds` questions; `fold_of` (unique_id → fold)
    imposes given folds instead, e.g. another result's `folds()` so that two curves are scored on the same split.
    Ungraded rows take no part: a held-out question whose chosen label has no verdict is left out of the mean.
    """
    bins = bins.rename("bin")
    tables = accuracy_tables(frame, bins.index)
    bins = bins.loc[tables.accuracy.index]
    budgets = _budgets(tables, budgets)
    if fold_of is None:
        sizes = bins.value_counts()
        if folds < 2 or (sizes < folds).any():
            raise AnalysisError(
                f"{folds}-fold cross-validation needs ≥ 2 folds and ≥ {folds} questions in every "
                f"bin; bin sizes are {sizes.sort_index().to_dict()}: sweep more problems or use "
                "fewer bins"
            )
        fold_of = _folds(bins, folds, seed)
    fold_of = fold_of.reindex(bins.index)
    if fold_of.isna().any():
        raise AnalysisError(f"no fold for {fold_of.index[fold_of.isna()].tolist()[:5]}")
    accuracy, flops = as_long(tables.accuracy), as_long(tables.flops)
    choices, scored = [], []
    for fold in sorted(fold_of.unique()):
        chosen = _choose(tables, fold_of.index[fold_of != fold], bins, budgets).assign(fold=fold)
        held_out = bins[fold_of == fold]
        grid = pd.DataFrame({"unique_id": held_out.index, "bin": held_out.to_numpy(), "fold": fold}).merge(
            chosen[["budget", "bin", "strategy_label"]], on="bin"
        )
        keys = pd.MultiIndex.from_frame(grid[["unique_id", "strategy_label", "budget"]])
        scored.append(
            grid.assign(correct=accuracy.reindex(keys).to_numpy(), total_flops=flops.reindex(keys).to_numpy())
        )
        choices.append(chosen)
    per_question = pd.concat(scored, ignore_index=True).sort_values(["budget", "unique_id"], ignore_index=True)
    choices = pd.concat(choices, ignore_index=True)[
        ["fold", "budget", "bin", "strategy_label", "train_accuracy", "train_cost", "train_questions"]
    ]
    return PolicyResult(choices, per_question, per_question.groupby("budget")["correct"].mean().rename("accuracy"))


def best_fixed(frame: pd.DataFrame, result: PolicyResult, budgets: Sequence[int] | None = None) -> PolicyResult:
    """The best single strategy label per budget, chosen out of sample like the policy: on `result`'s folds,
    each fold scored with the label that was best on the other folds' questions (one bin for all)."""
    folds = result.folds()
    return compute_optimal(frame, pd.Series(1, index=folds.index), budgets, fold_of=folds)


def fit_policy(
    frame: pd.DataFrame, bins: pd.Series, budgets: Sequence[int] | None = None
) -> dict[tuple[int, int], str]:
    """(budget, bin) → strategy_label chosen on all questions: what a deployment uses; CV estimates its accuracy."""
    bins = bins.rename("bin")
    tables = accuracy_tables(frame, bins.index)
    chosen = _choose(tables, tables.accuracy.index, bins.loc[tables.accuracy.index], _budgets(tables, budgets))
    return {
        (int(b), int(n)): str(label)
        for b, n, label in zip(chosen["budget"], chosen["bin"], chosen["strategy_label"], strict=True)
    }


def policy_of(choices: dict[tuple[int, int], str], difficulty: Difficulty) -> Policy:
    """The deployable policy: the choices and the difficulty rule they were fitted with (k, thresholds)."""
    if difficulty.kind != "predicted" or difficulty.estimation_samples is None:
        raise AnalysisError(f"only predicted difficulty is deployable (no ground truth online), got {difficulty.kind}")
    return Policy(
        choices, difficulty.kind, difficulty.estimation_samples, difficulty.thresholds, difficulty.aggregation or "last"
    )


def strategy_curves(frame: pd.DataFrame, questions: pd.Index) -> pd.DataFrame:
    """(strategy_label, budget) → accuracy and mean total FLOPs over `questions`, scored as compute_optimal scores."""
    tables = accuracy_tables(frame, questions)
    return pd.DataFrame({"accuracy": tables.accuracy.mean(), "total_flops": tables.flops.mean()})


def best_of_n_labels(frame: pd.DataFrame) -> list[str]:
    """Every best-of-N strategy label of the sweep (one per selection mode and aggregation)."""
    return sorted(frame.loc[frame["strategy"] == "best_of_n", "strategy_label"].unique())


def family_labels(frame: pd.DataFrame, curves: pd.DataFrame) -> dict[str, str]:
    """strategy → its label with the best accuracy averaged over budgets (picked in-sample).

    Picking in-sample favours those fixed strategies, never compute-optimal.
    """
    family = frame.drop_duplicates("strategy_label").set_index("strategy_label")["strategy"]
    mean = curves["accuracy"].groupby(level="strategy_label").mean()
    ranked = pd.DataFrame({"accuracy": mean, "strategy": family.reindex(mean.index)}).reset_index()
    ranked = ranked.sort_values(["strategy", "accuracy", "strategy_label"], ascending=[True, False, True])
    return ranked.drop_duplicates("strategy").set_index("strategy")["strategy_label"].to_dict()


def efficiency(
    optimal: pd.DataFrame, baseline: pd.DataFrame, estimation_samples: float, estimation_flops: float = math.nan
) -> pd.DataFrame:
    """Per compute-optimal budget N: the baseline's cost to match its accuracy and k = that cost / N.

    `optimal` and `baseline` are curves (budget → accuracy, total_flops), e.g. `PolicyResult.curve()` and a
    label of `strategy_curves`. In generations, compute-optimal costs N, or N + estimation_samples counting
    the difficulty estimate; in FLOPs, its chosen strategies' mean total FLOPs, plus `estimation_flops`.
    A bound of "<=" / ">" (see `cost_to_reach`) applies to the baseline cost and to k alike.
    """
    baseline = baseline.sort_index()
    baseline_flops = baseline["total_flops"] if "total_flops" in baseline else pd.Series(math.nan, baseline.index)
    rows = []
    for budget, row in optimal.sort_index().iterrows():
        target = row["accuracy"]
        matched, bound = cost_to_reach(baseline.index.astype(float), baseline["accuracy"], target)
        flops = row.get("total_flops", math.nan)
        matched_flops, flops_bound = cost_to_reach(baseline_flops, baseline["accuracy"], target)
        rows.append(
            {
                "budget": budget,
                "accuracy": target,
                "baseline_budget": matched,
                "bound": bound,
                "k": matched / budget,
                "budget_with_estimation": budget + estimation_samples,
                "k_with_estimation": matched / (budget + estimation_samples),
                "flops": flops,
                "flops_with_estimation": flops + estimation_flops,
                "baseline_flops": matched_flops,
                "flops_bound": flops_bound,
                "k_flops": matched_flops / flops,
                "k_flops_with_estimation": matched_flops / (flops + estimation_flops),
            }
        )
    return pd.DataFrame(rows).set_index("budget")


def flops_multiplier(small_params: float, large_params: float, r: float) -> float:
    """How many times its 1-sample inference compute the small model may spend to match the large model's
    total (pretraining + inference) FLOPs: M + 3·(D_pretrain/D_inference)·(M − 1), M = N_large/N_small.

    From 6·N·D_pretrain + 2·N·D_inference·m = M·(6·N·D_pretrain + 2·N·D_inference), R = D_inference/D_pretrain.
    """
    if small_params <= 0 or large_params <= 0 or r <= 0:
        raise AnalysisError(f"parameter counts and R must be positive, got {small_params}, {large_params}, {r}")
    ratio = large_params / small_params
    return ratio + 3 * (ratio - 1) / r


def flops_matched(
    result: PolicyResult,
    large: pd.DataFrame,
    small_params: float,
    large_params: float,
    r_values: Sequence[float] = R_VALUES,
) -> pd.DataFrame:
    """Small model + compute-optimal test-time search vs a larger model's single sample, at matched FLOPs.

    `large` holds the larger model's per-question results (unique_id, correct; `correct` may be a pass@1
    fraction). Per R and difficulty bin (and "all"): the small model's matched budget (1 generation × the
    multiplier), its cross-validated compute-optimal accuracy at the largest swept budget ≤ that
    (`beyond_sweep`: the match allows more than was swept, so the small model's accuracy is a lower bound;
    no swept budget ≤ it: accuracy NaN, winner "unknown"), the large model's accuracy, and who wins. Only the
    questions both results share count.
    """
    large_accuracy = large.assign(correct=large["correct"].astype(float)).groupby("unique_id")["correct"].mean()
    small = result.per_question[result.per_question["unique_id"].isin(large_accuracy.index)]
    if small.empty:
        raise AnalysisError("the two models' results share no questions (unique_id)")
    bins = small.drop_duplicates("unique_id").set_index("unique_id")["bin"]
    groups = [(int(b), members.index) for b, members in bins.groupby(bins, sort=True)] + [("all", bins.index)]
    budgets = sorted(small["budget"].unique())
    by_budget = small.set_index(["budget", "unique_id"])["correct"]
    rows = []
    for r in r_values:
        matched = flops_multiplier(small_params, large_params, r)
        within = [budget for budget in budgets if budget <= matched + ACCURACY_TOLERANCE]
        used = within[-1] if within else None
        for name, ids in groups:
            small_accuracy = math.nan if used is None else by_budget.loc[used].reindex(ids).mean()
            large_mean = large_accuracy.reindex(ids).mean()
            winner = (
                "unknown"
                if used is None
                else "small"
                if small_accuracy > large_mean + ACCURACY_TOLERANCE
                else "large"
                if large_mean > small_accuracy + ACCURACY_TOLERANCE
                else "tie"
            )
            rows.append(
                {
                    "R": r,
                    "matched_budget": matched,
                    "used_budget": math.nan if used is None else used,
                    "beyond_sweep": matched > budgets[-1],
                    "bin": name,
                    "questions": len(ids),
                    "small_accuracy": small_accuracy,
                    "large_accuracy": large_mean,
                    "winner": winner,
                }
            )
    return pd.DataFrame(rows)


def generator_parameters(frame: pd.DataFrame) -> float:
    """The generator's parameter count, recovered from FLOPs = 2 × parameters × computed tokens
    (`ttsearch.search.outcomes.flops_of`, `ttsearch.analysis.curves.computed_tokens`)."""
    if "generator_flops" not in frame or frame["generator_flops"].isna().all():
        raise AnalysisError("the sweep recorded no generator FLOPs: pass the parameter count explicitly")
    computed, _ = computed_tokens(frame)
    ratio = frame["generator_flops"] / flops_of(1.0, computed.where(computed > 0))
    return float(ratio.dropna().median())


# ---------------------------------------------------------------- the Markdown report
