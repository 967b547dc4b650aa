"""Compute-optimal test-time search (Snell et al. 2024, §3–§6) from a sweep's Parquet alone.

The paper's recipe: estimate each question's difficulty (quantile bins of pass@1, oracle from the ground truth
or predicted from verifier scores), pick for every (budget, bin) the strategy label that did best there on
held-out questions (2-fold cross-validation), and compare the resulting curve with the best fixed strategy
label per budget (chosen on the same folds), with each best-of-N selection mode, and with a larger model at
matched FLOPs. Unlike the paper, the samples spent on the predicted estimate are counted as compute too.

Oracle difficulty is pass@1 over every graded best-of-N sample of the question (all budgets and seeds, each
sample once). Predicted difficulty is the mean verifier score of the first `estimation_samples` (k) candidates
of the question's largest best-of-N cell (see `ttsearch.analysis.estimation_cells`); its cost is what those k
samples spent (`ttsearch.analysis.estimation_cost`: their own generated and verifier tokens and the cell's one
prompt prefill). Both are binned by the rule the deployed policy uses (`ttsearch.policy.fit_thresholds`), so
cross-validation scores the policy that `ttsearch solve` runs.

Strategy labels are the opaque `strategy_label`s (configuration × selection); a budget is the nominal
generation budget N of the sweep (step-level searches spend more step samples than N, early stopping may spend
fewer; the FLOPs columns hold their real cost). Accuracies here are fractions in [0, 1]; the Markdown report shows
percentages.
Ungraded rows take no part in any accuracy; error rows take no part at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ttsearch.analysis import (
    ACCURACY_TOLERANCE,
    COST_COLUMNS,
    DEFAULT_ESTIMATION_SAMPLES,
    DIFFICULTY_KINDS,
    N_BINS,
    NEAR_ZERO_ACCURACY,
    AnalysisError,
    Difficulty,
    ReportFile,
    bin_sorting,
    computed_tokens,
    cost_to_reach,
    estimate_difficulty,
    estimation_cells,
    estimation_cost,
    excluded_note,
    finished_rows,
    flops_rates,
    markdown_table,
    oracle_pass_at_1,
    plot_curves,
    samples_note,
    ungraded_note,
)
from ttsearch.policy import Policy, save_policy
from ttsearch.results import RESULTS, RunStore, flops_of

__all__ = ["COST_COLUMNS", "Difficulty", "estimate_difficulty", "estimation_cells", "estimation_cost", "flops_rates"]

KINDS = DIFFICULTY_KINDS
FOLDS = 2
R_VALUES = (0.16, 0.79, 22.0)  # D_inference / D_pretrain: the paper's Fig. 9 regimes R ≪ 1, R ≈ 1, R ≫ 1
BEST_FIXED = "best fixed label (CV)"


def _as_verdict(value) -> float:
    """1.0 right, 0.0 wrong, NaN ungraded (no verdict)."""
    return math.nan if value is None or pd.isna(value) else float(bool(value))


@dataclass(frozen=True)
class _Tables:
    """Question × (strategy_label, budget) matrices: what the policy chooses from and is scored on."""

    accuracy: pd.DataFrame
    """Mean `correct` over graded seeds; a cell the question lacks counts as wrong; NaN: only ungraded rows."""
    tie_cost: pd.DataFrame  # mean total FLOPs (generated tokens when the sweep recorded no FLOPs): breaks ties
    flops: pd.DataFrame  # mean total FLOPs, NaN when not recorded


def _tables(frame: pd.DataFrame, questions: pd.Index) -> _Tables:
    rows = frame[frame["unique_id"].isin(questions)]
    if rows.empty:
        raise AnalysisError("no result rows for the binned questions: are the bins from this sweep?")
    has_flops = "total_flops" in rows and rows["total_flops"].notna().any()
    values = rows.assign(
        correct=rows["correct"].map(_as_verdict).astype(float),
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


def _long(matrix: pd.DataFrame) -> pd.Series:
    return matrix.stack(["strategy_label", "budget"])


def _choose(tables: _Tables, questions: pd.Index, bins: pd.Series, budgets: list[int]) -> pd.DataFrame:
    """Per (budget, bin), the label with the highest mean accuracy on `questions`; ties: cheaper, then label order.

    Means skip ungraded (NaN) entries.
    """
    group = bins.loc[questions].rename("bin")
    long = pd.DataFrame(
        {
            "train_accuracy": _long(tables.accuracy.loc[questions].groupby(group).mean()),
            "train_cost": _long(tables.tie_cost.loc[questions].groupby(group).mean()),
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
    tables = _tables(frame, bins.index)
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
    accuracy, flops = _long(tables.accuracy), _long(tables.flops)
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
    tables = _tables(frame, bins.index)
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
    tables = _tables(frame, questions)
    return pd.DataFrame({"accuracy": tables.accuracy.mean(), "total_flops": tables.flops.mean()})


def best_of_n_labels(frame: pd.DataFrame) -> list[str]:
    """Every best-of-N strategy label of the sweep (one per selection mode and aggregation)."""
    return sorted(frame.loc[frame["strategy"] == "best_of_n", "strategy_label"].unique())


def _family_labels(frame: pd.DataFrame, curves: pd.DataFrame) -> dict[str, str]:
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
    (`ttsearch.results.flops_of`, `ttsearch.analysis.computed_tokens`)."""
    if "generator_flops" not in frame or frame["generator_flops"].isna().all():
        raise AnalysisError("the sweep recorded no generator FLOPs: pass the parameter count explicitly")
    computed, _ = computed_tokens(frame)
    ratio = frame["generator_flops"] / flops_of(1.0, computed.where(computed > 0))
    return float(ratio.dropna().median())


# ---------------------------------------------------------------- the Markdown report

ACCURACY_PNG = "compute_optimal_vs_budget.png"
EFFICIENCY_PNG = "efficiency.png"
EFFICIENCY_FLOPS_PNG = "efficiency_flops.png"


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


def _bounded(value: float, bound: str) -> str:
    return "–" if pd.isna(value) else {"<=": "≤ ", ">": "> "}.get(bound, "") + f"{value:.3g}"


def _budget_list(budgets: list[int]) -> str:
    return ", ".join(f"N={b}" for b in budgets)


def _sentence(subject: str, groups: dict[str, list[int]]) -> str:
    """'subject: A at N=1, N=4; B at N=16.' over the non-empty groups."""
    parts = [f"{what} at {_budget_list(budgets)}" for what, budgets in groups.items() if budgets]
    return f"{subject}: {'; '.join(parts)}." if parts else ""


def _compare_accuracy(optimal: pd.Series, other: pd.Series) -> dict[str, list[int]]:
    """Budgets where `optimal` (budget → accuracy) is above, equal to and below `other`."""
    groups: dict[str, list[int]] = {"more accurate": [], "equally accurate": [], "less accurate": []}
    for budget, value in optimal.items():
        theirs = other.get(budget, math.nan)
        if pd.isna(value) or pd.isna(theirs):
            continue
        key = (
            "more accurate"
            if value > theirs + ACCURACY_TOLERANCE
            else "less accurate"
            if value < theirs - ACCURACY_TOLERANCE
            else "equally accurate"
        )
        groups[key].append(int(budget))
    return groups


def _cost_verdict(k: float, bound: str) -> str:
    """What k = (comparator's cost to match) / (compute-optimal's cost) says, with its bound (`cost_to_reach`)."""
    if pd.isna(k):
        return "unknown"
    if bound == "=":
        return "fewer" if k > 1 + 1e-9 else "more" if k < 1 - 1e-9 else "as many"
    if bound == ">":  # the comparator never matched within the sweep: the true k is larger still
        return "fewer" if k >= 1 else "undetermined within the sweep"
    return "no fewer" if k <= 1 else "undetermined within the sweep"  # "<=": the true k is at most this


def _cost_groups(table: pd.DataFrame, column: str, bound: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for budget, row in table.iterrows():
        groups.setdefault(_cost_verdict(row[column], row[bound]), []).append(int(budget))
    return groups


@dataclass(frozen=True)
class _Curve:
    """A curve compared with compute-optimal: per budget accuracy and FLOPs, and its per-question values."""

    curve: pd.DataFrame  # budget → accuracy, total_flops
    correct: pd.Series  # (unique_id, budget) → correct (NaN: ungraded)
    flops: pd.Series  # (unique_id, budget) → total FLOPs


def _result_curve(result: PolicyResult) -> _Curve:
    q = result.per_question.set_index(["unique_id", "budget"])
    return _Curve(result.curve(), q["correct"], q["total_flops"])


def _comparators(frame: pd.DataFrame, questions: pd.Index, fixed: PolicyResult) -> dict[str, _Curve]:
    """The best fixed label (CV) and every best-of-N label, as curves over `questions`."""
    tables = _tables(frame, questions)
    accuracy, flops = _long(tables.accuracy), _long(tables.flops)
    curves = strategy_curves(frame, questions)
    compared = {BEST_FIXED: _result_curve(fixed)}
    for label in best_of_n_labels(frame):
        compared[label] = _Curve(
            curves.xs(label, level="strategy_label"),
            accuracy.xs(label, level="strategy_label"),
            flops.xs(label, level="strategy_label"),
        )
    return compared


def _plot_rows(curve: str, values: pd.Series, x: pd.Series | np.ndarray) -> pd.DataFrame:
    """Per-question values indexed (unique_id, budget) as rows plot_curves draws at `x`; one pseudo-seed, so its
    error bars are across questions for every curve alike."""
    return values.index.to_frame(index=False).assign(
        curve=curve, seed=0, correct=values.to_numpy(), x=np.asarray(x, dtype=float)
    )


def _efficiency_table(rows: list[dict]) -> str:
    shown = pd.DataFrame(rows)
    return markdown_table(shown.set_index("budget"))


def _efficiency_section(
    out: Path,
    frame: pd.DataFrame,
    questions: pd.Index,
    results: dict[str, PolicyResult],
    compared: dict[str, _Curve],
    difficulties: dict[str, Difficulty],
) -> list[str]:
    """Efficiency figures and tables: compute-optimal against the best fixed label (CV) and each best-of-N label,
    in generations and in FLOPs, the predicted estimate's cost left out and counted; the sentences are computed
    from the tables."""
    predicted = difficulties["predicted"]
    k = int(predicted.estimation_samples or 0)
    estimate = predicted.cost.reindex(questions) if predicted.cost is not None else None
    estimation_flops = estimate["total_flops"] if estimate is not None else pd.Series(math.nan, questions)
    generations, in_flops = [], []
    for name, other in compared.items():
        generations.append(_plot_rows(name, other.correct, other.correct.index.get_level_values("budget")))
        in_flops.append(_plot_rows(name, other.correct, other.flops))
    md, said = [], []
    for kind, result in results.items():
        mine = _result_curve(result)
        budgets = mine.correct.index.get_level_values("budget")
        name = f"compute-optimal ({kind})"
        generations.append(_plot_rows(name, mine.correct, budgets))
        in_flops.append(_plot_rows(name, mine.correct, mine.flops))
        counted = kind == "predicted"
        if counted:
            extra = mine.correct.index.get_level_values("unique_id").map(estimation_flops).to_numpy()
            generations.append(_plot_rows(f"{name} + estimate", mine.correct, budgets + k))
            in_flops.append(_plot_rows(f"{name} + estimate", mine.correct, mine.flops.to_numpy() + extra))
        rows, bullets = [], []
        for other_name, other in compared.items():
            table = efficiency(
                mine.curve,
                other.curve,
                k if counted else math.nan,
                float(estimation_flops.mean()) if counted else math.nan,
            )
            for budget, r in table.iterrows():
                rows.append(
                    {
                        "budget": f"N={budget}",
                        "vs": other_name,
                        "compute-optimal acc. %": _percent(r["accuracy"]),
                        "its acc. % at N": _percent(other.curve["accuracy"].get(budget, math.nan)),
                        "its budget to match": _bounded(r["baseline_budget"], r["bound"]),
                        "k (generations)": _bounded(r["k"], r["bound"]),
                        f"k, counting {k} estimation samples": _bounded(r["k_with_estimation"], r["bound"]),
                        "k (FLOPs)": _bounded(r["k_flops"], r["flops_bound"]),
                        "k (FLOPs), counting estimation": _bounded(r["k_flops_with_estimation"], r["flops_bound"]),
                    }
                )
            in_samples = _cost_groups(table, "k_with_estimation" if counted else "k", "bound")
            in_compute = _cost_groups(table, "k_flops_with_estimation" if counted else "k_flops", "flops_bound")
            bullets.append(
                " ".join(
                    [f"- vs {other_name}.", _sentence("Generations", in_samples), _sentence("FLOPs", in_compute)]
                ).rstrip()
            )
        how = f"counting its {k} estimation samples" if counted else "the oracle: no estimation cost counted"
        said.append(
            "\n".join(
                [
                    f"Compute needed for its accuracy by {name} ({how}), compared with the compute the "
                    "compared curve needs for the same accuracy ('fewer' = compute-optimal needs less):",
                    *bullets,
                ]
            )
        )
        md += [f"### {kind.capitalize()} difficulty", "", _efficiency_table(rows), ""]
    figures = [f"![efficiency in generations]({EFFICIENCY_PNG})"]
    plot_curves(
        out / EFFICIENCY_PNG,
        f"Compute-optimal vs fixed labels, ± the {k}-sample difficulty estimate",
        pd.concat(generations),
        value="correct",
        label="curve",
        ylabel="accuracy %",
        x="x",
        xlabel="generations per question",
        x_log2=True,
    )
    if pd.concat(in_flops)["x"].gt(0).any():
        plot_curves(
            out / EFFICIENCY_FLOPS_PNG,
            "The same in FLOPs",
            pd.concat(in_flops),
            value="correct",
            label="curve",
            ylabel="accuracy %",
            x="x",
            xlabel="mean FLOPs per question",
        )
        figures.append(f"![efficiency in FLOPs]({EFFICIENCY_FLOPS_PNG})")
    text = "\n\n".join(said)
    return [
        "## Efficiency vs fixed strategy labels",
        "",
        *figures,
        "",
        f"Compared with: '{BEST_FIXED}', the single label per budget that was best on the training fold, "
        "scored on the held-out fold (the predicted policy's folds, so it is chosen out of sample like the "
        "policy), and every best-of-N label of the sweep. k = the compared curve's budget (or FLOPs) that "
        "matches compute-optimal's accuracy, divided by compute-optimal's own, interpolated on log2 between "
        "swept budgets: k > 1 means compute-optimal needs less. '≤' means the compared curve matched already at "
        "its smallest budget (k may be smaller); '>' that it never did (k is larger). The predicted policy is "
        f"also shown counting its {k} estimation samples (budget N + {k}; FLOPs plus the estimate's); the "
        "oracle needs the ground truth, so no estimation cost is counted for it.",
        "",
        text,
        "",
        *md,
    ]


def _difficulty_section(frame: pd.DataFrame, questions: pd.Index, difficulties: dict[str, Difficulty]) -> list[str]:
    """How each difficulty was estimated, how well its bins sort questions by pass@1 over every sample, and what
    the predicted estimate cost."""
    oracle, predicted = difficulties["oracle"], difficulties["predicted"]
    k = predicted.estimation_samples
    capped = (
        f" (the default {DEFAULT_ESTIMATION_SAMPLES} capped by the largest best-of-N cell, which holds {k})"
        if predicted.capped
        else ""
    )
    made = {kind: d.n_bins for kind, d in difficulties.items()}
    fewer = [f"{kind} {n}" for kind, n in made.items() if n < N_BINS]
    sorting = bin_sorting(oracle_pass_at_1(frame), {kind: d.bins for kind, d in difficulties.items()}, questions)
    cost = predicted.cost.reindex(questions).mean() if predicted.cost is not None else pd.Series(dtype=float)
    shown = cost.map(lambda v: "–" if pd.isna(v) else f"{v:,.4g}").to_frame("mean")
    shown.index.name = f"predicted estimate per question ({k} samples)"
    unknown = cost.drop("samples", errors="ignore").isna().any()
    lines = [
        "## Difficulty estimate",
        "",
        f"Oracle bins: pass@1 over every graded best-of-N sample of the question (all budgets and seeds, each "
        f"sample once): {samples_note(oracle.samples.reindex(questions))}. Predicted bins: mean verifier score "
        f"(aggregation `{predicted.aggregation}`) of the first {k} samples of the question's largest best-of-N "
        f"cell{capped}. Both are binned by the deployed policy's rule: thresholds between {N_BINS} rank "
        "quantiles, each group of tied scores kept whole in one bin (the quantile of its middle rank), a bin of "
        f"fewer than {FOLDS} questions merged into its neighbour; every question is then binned by its score "
        "against the thresholds, as `ttsearch solve` bins a new question.",
        (f" Ties left fewer than {N_BINS} bins: {', '.join(fewer)}." if fewer else ""),
        "",
        "Decreasing mean pass@1 (over every sample) from bin 1 down means the bins sort the questions:",
        "",
        markdown_table(sorting),
        "",
    ]
    lines += [markdown_table(shown), ""]
    if unknown:
        lines += [
            "The sweep recorded no per-candidate token counts (an older sweep), so the estimate's tokens and "
            "FLOPs are unknown ('–'); the efficiency rows counting the estimate in FLOPs are unknown too.",
            "",
        ]
    else:
        lines += [
            "The estimate's cost is what its samples spent: their own generated and verifier tokens, and the "
            "cell's one prompt prefill (a best-of-N cell is one request, so k samples pay one prompt).",
            "",
        ]
    return lines


def _how_to_read(
    best: float, problems: int, difficulties: dict[str, Difficulty], agreement: float, stable: str, versus_fixed: str
) -> str:
    """Caveats that depend on this run, so that the reader does not over-read the numbers."""
    per_cell = max(1, problems // (FOLDS * N_BINS))
    predicted = difficulties["predicted"]
    k = predicted.estimation_samples
    same_bins = difficulties["oracle"].n_bins == predicted.n_bins
    notes = [
        f"Compute-optimal accuracy is cross-validated: the {problems} questions are split into {FOLDS} folds "
        "(stratified by difficulty bin) and each fold is scored with the label that was best for its (budget, "
        "bin) on the other fold, so no choice is scored on the questions it was chosen on. With about "
        f"{per_cell} question{'s' if per_cell > 1 else ''} per bin and fold the choices can be noisy ({stable}).",
        versus_fixed,
        "The per-strategy curves in the first figure are each strategy's label with the best mean accuracy over "
        "budgets, picked in-sample (which favours them); every best-of-N label is drawn.",
        f"Oracle difficulty uses every best-of-N sample ({samples_note(difficulties['oracle'].samples)}); "
        f"predicted difficulty uses {k} samples per question"
        + (" (capped by the largest best-of-N cell)" if predicted.capped else "")
        + f"; counting them, the predicted policy at budget N costs N + {k} generations. "
        + (
            f"Predicted bins (mean verifier score, no ground truth) agree with the oracle bins on "
            f"{100 * agreement:.0f} % of the questions."
            if same_bins
            else f"Predicted and oracle difficulty made different numbers of bins ({predicted.n_bins} and "
            f"{difficulties['oracle'].n_bins}), so their bins are not compared one to one."
        ),
    ]
    if 100 * best < NEAR_ZERO_ACCURACY:
        notes.append(
            f"Accuracy is near zero everywhere (best {100 * best:.1f} %), as expected for a tiny generator "
            "such as the embedded 135M model. Most (budget, bin) choices are then ties, broken by lower "
            "compute, so 'compute-optimal' mostly means 'cheapest', and the efficiency ratios compare "
            "near-zero accuracies: they say nothing about the paper's 4× claim. What this run shows is that "
            "the analysis runs end to end from the Parquet with the estimation cost counted; a real "
            "generator and PRM (conf/gpu.yaml) are needed for the numbers to mean something."
        )
    notes.append(
        "Budgets are nominal generation budgets; step-level searches (beam, lookahead, DVTS, REBASE, particle "
        "filtering) spend more step samples and early stopping may spend fewer, so the FLOPs figures are the "
        "fairer comparison where the sweep recorded FLOPs."
    )
    return " ".join(notes)


def _flops_matched_section(
    frame: pd.DataFrame,
    result: PolicyResult,
    larger_run_dir: str | Path | RunStore,
    small_params: float | None,
    large_params: float | None,
    r_values: Sequence[float],
) -> list[str]:
    larger, _ = finished_rows(RunStore.of(larger_run_dir).load_frame())
    pass1 = oracle_pass_at_1(larger)
    if pass1.empty:
        raise AnalysisError(f"{larger_run_dir} has no best-of-N candidates to take the larger model's pass@1 from")
    small_n = small_params or generator_parameters(frame)
    large_n = large_params or generator_parameters(larger)
    matched = flops_matched(
        result, pass1.rename("correct").rename_axis("unique_id").reset_index(), small_n, large_n, r_values
    )
    shown = pd.DataFrame(
        {
            "matched budget": matched["matched_budget"].map("{:.1f}".format).to_numpy(),
            "swept budget used": [
                ("–" if pd.isna(used) else str(int(used))) + (" (beyond sweep)" if beyond else "")
                for used, beyond in zip(matched["used_budget"], matched["beyond_sweep"], strict=True)
            ],
            "bin": matched["bin"].to_numpy(),
            "questions": matched["questions"].to_numpy(),
            "small + search %": matched["small_accuracy"].map(_percent).to_numpy(),
            "larger model %": matched["large_accuracy"].map(_percent).to_numpy(),
            "winner": matched["winner"].to_numpy(),
        },
        index=pd.Index(matched["R"], name="R"),
    )
    return [
        "## FLOPs-matched: small model + compute-optimal search vs the larger model",
        "",
        f"Small model {small_n:.3g} parameters, larger {large_n:.3g} (M = {large_n / small_n:.2f}). The larger "
        "model's accuracy is its pass@1 over its graded best-of-N samples; the small model's is the "
        "cross-validated compute-optimal accuracy (oracle bins) at the largest swept budget within the matched "
        "budget M + 3(M − 1)/R generations.",
        "",
        markdown_table(shown),
        "",
    ]


def _difficulties(frame: pd.DataFrame, estimation_samples: int | None) -> tuple[dict[str, Difficulty], pd.Index]:
    """Both difficulties, fitted on the questions both can score (so bins and thresholds are those of the
    questions that cross-validation and the policy use)."""
    first = {kind: estimate_difficulty(frame, kind, estimation_samples, min_size=FOLDS) for kind in KINDS}
    questions = first["oracle"].score.index.intersection(first["predicted"].score.index).sort_values()
    if all(d.score.index.equals(questions) for d in first.values()):
        return first, questions
    shared = frame[frame["unique_id"].isin(questions)]
    return {kind: estimate_difficulty(shared, kind, estimation_samples, min_size=FOLDS) for kind in KINDS}, questions


def build_optimize_report(
    run_dir: str | Path | RunStore,
    larger_run_dir: str | Path | RunStore | None = None,
    estimation_samples: int | None = None,
    r_values: Sequence[float] = R_VALUES,
    small_params: float | None = None,
    large_params: float | None = None,
) -> ReportFile:
    """Write `RUN_DIR/report/compute_optimal.md` with its PNGs and `RUN_DIR/policy.json`.

    The saved policy uses predicted difficulty, so it is deployable (no ground truth online). Parameter counts
    for the FLOPs-matched comparison default to those recovered from each sweep's FLOPs. Error rows take no
    part (they hold no answer) and ungraded rows no part in accuracy; the report says how many were left out.
    """
    store = RunStore.of(run_dir)
    frame, excluded = finished_rows(store.load_frame())
    ungraded = int(frame["correct"].isna().sum())
    difficulties, questions = _difficulties(frame, estimation_samples)
    frame = frame[frame["unique_id"].isin(questions)]
    results = {kind: compute_optimal(frame, d.bins) for kind, d in difficulties.items()}
    fixed = best_fixed(frame, results["predicted"])
    with store.local_dir("report") as out:
        md = _optimize_markdown(store, frame, excluded, ungraded, out, difficulties, questions, results, fixed)
        if larger_run_dir is not None:
            md += _flops_matched_section(frame, results["oracle"], larger_run_dir, small_params, large_params, r_values)
        (out / "compute_optimal.md").write_text("\n".join(md))
    return ReportFile(store.location("report", "compute_optimal.md"), excluded, ungraded)


def _optimize_markdown(
    store: RunStore,
    frame: pd.DataFrame,
    excluded: int,
    ungraded: int,
    out: Path,
    difficulties: dict[str, Difficulty],
    questions: pd.Index,
    results: dict[str, PolicyResult],
    fixed: PolicyResult,
) -> list[str]:
    """The report's sections with their plots (written into `out`); saves the deployable policy."""
    curves = strategy_curves(frame, questions)
    labels = sorted(set(_family_labels(frame, curves).values()) | set(best_of_n_labels(frame)))
    accuracy = _long(_tables(frame, questions).accuracy)
    drawn = [
        _plot_rows(label, values, values.index.get_level_values("budget"))
        for label in labels
        for values in [accuracy.xs(label, level="strategy_label")]
    ]
    mine = {f"compute-optimal ({kind})": _result_curve(r) for kind, r in results.items()} | {
        BEST_FIXED: _result_curve(fixed)
    }
    drawn += [_plot_rows(name, c.correct, c.correct.index.get_level_values("budget")) for name, c in mine.items()]
    plot_curves(
        out / ACCURACY_PNG,
        "Compute-optimal (cross-validated) vs fixed strategy labels",
        pd.concat(drawn),
        value="correct",
        label="curve",
        ylabel="accuracy %",
    )
    shown = {label: curves.xs(label, level="strategy_label")["accuracy"] for label in labels}
    shown |= {name: c.curve["accuracy"] for name, c in mine.items()}
    accuracy_table = pd.DataFrame(shown).T.map(_percent)
    accuracy_table.columns = [f"N={b}" for b in accuracy_table.columns]
    accuracy_table.index.name = "accuracy %"

    predicted = difficulties["predicted"]
    fitted = fit_policy(frame, predicted.bins)
    saved = save_policy(policy_of(fitted, predicted), store.uri)
    policy = pd.Series(fitted).rename_axis(["budget", "bin"]).unstack("bin").fillna("–")
    policy.columns = [f"bin {b}" for b in policy.columns]
    policy.index = pd.Index([f"N={b}" for b in policy.index], name="budget")

    oracle_choices = results["oracle"].choices.pivot(index=["budget", "bin"], columns="fold", values="strategy_label")
    stable = (
        f"here the {FOLDS} folds chose the same label in {int(oracle_choices.nunique(axis=1).eq(1).sum())} "
        f"of {len(oracle_choices)} (budget, oracle bin) cells"
    )
    agreement = float(difficulties["oracle"].bins.eq(predicted.bins.reindex(difficulties["oracle"].bins.index)).mean())
    best = max(float(curves["accuracy"].max()), *(float(r.accuracy.max()) for r in results.values()))
    versus_fixed = "; ".join(
        said
        for kind, r in results.items()
        for said in [
            _sentence(f"compute-optimal ({kind}) is", _compare_accuracy(r.accuracy, fixed.accuracy))
            .replace(" is:", " is", 1)
            .rstrip(".")
        ]
        if said
    )
    versus_fixed = f"Compared with the {BEST_FIXED} at equal budget: {versus_fixed}." if versus_fixed else ""
    efficiency_md = _efficiency_section(
        out, frame, questions, results, _comparators(frame, questions, fixed), difficulties
    )
    read = _how_to_read(best, len(questions), difficulties, agreement, stable, versus_fixed)
    read += f" {excluded_note(excluded)}" if excluded else ""
    read += f" {ungraded_note(ungraded)}" if ungraded else ""
    thresholds = ", ".join(f"{t:.4g}" for t in predicted.thresholds) or "none (one bin)"
    return [
        f"# Compute-optimal test-time search: {store.name}",
        "",
        f"Built from the Parquet in `{store.location(RESULTS)}` alone (Snell et al. 2024, §3–§6).",
        "",
        "## How to read this",
        "",
        read,
        "",
        "## Accuracy vs budget",
        "",
        f"![accuracy vs budget]({ACCURACY_PNG})",
        "",
        markdown_table(accuracy_table),
        "",
        *efficiency_md,
        *_difficulty_section(frame, questions, difficulties),
        "## Deployed policy (predicted difficulty, fitted on all questions)",
        "",
        f"Saved as `{saved}` with the score thresholds between bins ({thresholds}): `ttsearch solve` bins a new "
        f"question's mean score over {predicted.estimation_samples} samples against them, the rule the choices "
        "were fitted and cross-validated with.",
        "",
        markdown_table(policy),
        "",
    ]
