"""Compute-optimal test-time search (Snell et al. 2024, §3–§6) from a sweep's Parquet alone.

The paper's recipe: estimate each question's difficulty (5 quantile bins of pass@1, oracle from the ground
truth or predicted from verifier scores), pick for every (budget, bin) the strategy configuration that did
best there on held-out questions (2-fold cross-validation), and compare the resulting curve with best-of-N
(the "4× less compute" claim) and with a larger model at matched FLOPs. Unlike the paper, the samples spent
on estimating difficulty are counted as compute too.

Difficulty is estimated from the first `estimation_samples` (k) candidates of each question's largest
best-of-N cell (lowest seed; aggregation `last` first, the PRM's score of the final answer). Taking a prefix
of one large cell works for any k up to the largest budget, not only for swept budgets, and the first k of N
independent samples are distributed as the samples of a best-of-k run. Their cost is that cell's measured
cost scaled by k/N: exact for generated and verifier tokens, approximate for the prompt prefill that the N
samples share.

Strategy configurations are the opaque `strategy_label`s; a budget is the nominal generation budget N of
the sweep (beam and lookahead spend more step-level samples than N; the FLOPs columns hold their real cost).
Accuracies here are fractions in [0, 1]; the Markdown report shows percentages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ttsearch.analysis import (
    CELL_KEYS,
    N_BINS,
    NEAR_ZERO_ACCURACY,
    AnalysisError,
    ReportFile,
    difficulty_bins,
    excluded_note,
    finished_rows,
    markdown_table,
    oracle_pass_at_1,
    plot_curves,
    search_cells,
)
from ttsearch.policy import Policy, save_policy
from ttsearch.results import RESULTS, RunStore

KINDS = ("oracle", "predicted")
# Per-question costs of a search job; the estimation cost reports those the sweep recorded.
COST_COLUMNS = ("samples", "generated_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens",
                "generator_flops", "verifier_flops", "total_flops")
BASELINE = "best_of_n/weighted"
R_VALUES = (0.16, 0.79, 22.0)  # D_inference / D_pretrain: the paper's Fig. 9 regimes R ≪ 1, R ≈ 1, R ≫ 1
_TOLERANCE = 1e-12  # accuracies are means of the same per-question values: equal up to rounding


@dataclass(frozen=True)
class Difficulty:
    """Per-question difficulty estimated from k best-of-N samples, and what those samples cost."""

    kind: str  # "oracle" (pass@1 from the ground truth) or "predicted" (mean verifier score, no ground truth)
    estimation_samples: int
    score: pd.Series  # unique_id → pass@1 or mean final-answer score; higher = easier
    bins: pd.Series  # unique_id → 1..n_bins, 1 the easiest
    cost: pd.DataFrame  # unique_id → the COST_COLUMNS the sweep recorded, for the k samples

    def thresholds(self) -> tuple[float, ...]:
        """Score edges between consecutive bins, descending: how a new question's score maps to a bin online."""
        by_bin = self.score.groupby(self.bins).agg(["min", "max"]).sort_index()
        return tuple((by_bin["min"].to_numpy()[:-1] + by_bin["max"].to_numpy()[1:]) / 2)


def estimationsearch_cells(frame: pd.DataFrame, estimation_samples: int | None = None) -> tuple[pd.DataFrame, int]:
    """Per question, its largest best-of-N cell cut to the first k candidates (see the module docstring).

    k defaults to the smallest best-of-N budget, the cheapest estimate the sweep can vouch for. The cost
    columns are scaled to k samples. Questions whose cells all hold fewer than k candidates are absent.
    """
    best_of_n = search_cells(frame[frame["strategy"] == "best_of_n"])
    if best_of_n.empty:
        raise AnalysisError("no best_of_n rows: difficulty is estimated from best-of-N samples; add best_of_n to the "
                         "sweep's strategies")
    k = int(best_of_n["budget"].min()) if estimation_samples is None else int(estimation_samples)
    if k < 1:
        raise AnalysisError(f"estimation_samples must be ≥ 1, got {k}")
    sizes = best_of_n["candidate_correct"].map(lambda flags: 0 if flags is None else len(flags))
    usable = best_of_n[sizes >= k]
    if usable.empty:
        raise AnalysisError(f"estimation_samples={k} exceeds every best-of-N cell (the largest holds {sizes.max()} "
                         "candidates)")
    chosen = (usable.assign(other_aggregation=usable["aggregation"] != "last")
              .sort_values(["unique_id", "other_aggregation", "budget", "seed"], ascending=[True, True, False, True])
              .drop_duplicates("unique_id").drop(columns="other_aggregation"))
    first_k = {column: chosen[column].map(lambda values: list(values[:k]))
               for column in ("candidate_answers", "candidate_scores", "candidate_correct")}
    scaled = {column: chosen[column].astype(float) * k / chosen["budget"]
              for column in COST_COLUMNS if column in chosen}
    return chosen.assign(**first_k, **scaled), k


def estimate_difficulty(frame: pd.DataFrame, kind: str = "oracle", estimation_samples: int | None = None,
                        n_bins: int = N_BINS) -> Difficulty:
    """Bin questions by oracle pass@1 or by predicted (mean verifier) score over k best-of-N samples.

    Both use `report.difficulty_bins`' rank quantiles and tie-breaks, so that the bins mean the same thing
    as in the sweep report.
    """
    if kind not in KINDS:
        raise AnalysisError(f"unknown difficulty kind {kind!r}; choose one of {', '.join(KINDS)}")
    cells, k = estimationsearch_cells(frame, estimation_samples)
    if kind == "oracle":
        score, bins = oracle_pass_at_1(cells), difficulty_bins(cells, n_bins)
    else:
        scores = cells[["unique_id", "candidate_scores"]].explode("candidate_scores").dropna()
        score = scores["candidate_scores"].astype(float).groupby(scores["unique_id"]).mean().rename("score")
        if score.empty:
            raise AnalysisError("no verifier scores on the best-of-N candidates: predicted difficulty needs them")
        bins = _bins_of(score, cells.set_index("unique_id")["level"], n_bins)
    present = [column for column in COST_COLUMNS if column in cells]
    cost = cells.set_index("unique_id")[present].loc[score.index]
    return Difficulty(kind, k, score, bins, cost)


def _bins_of(score: pd.Series, level: pd.Series, n_bins: int) -> pd.Series:
    """Bin any per-question score (higher = easier) exactly as `report.difficulty_bins` bins oracle pass@1.

    difficulty_bins reads pass@1 from best-of-N candidates. One pseudo cell per question, whose R candidates
    hold R − r right ones (r: the score's dense rank, 0 the highest; R: the number of distinct scores), has a
    pass@1 with the score's order and ties, so the quantiles and tie-breaks are the report's own.
    """
    rank = score.rank(method="dense", ascending=False).astype(int).to_numpy() - 1
    distinct = int(rank.max()) + 1
    pseudo = pd.DataFrame({key: 0 for key in CELL_KEYS} | {
        "unique_id": score.index, "strategy": "best_of_n", "level": level.reindex(score.index).to_numpy(),
        "candidate_correct": [[True] * (distinct - r) + [False] * r for r in rank]})
    return difficulty_bins(pseudo, n_bins)


@dataclass(frozen=True)
class _Tables:
    """Question × (strategy_label, budget) matrices: what the policy chooses from and is scored on."""

    accuracy: pd.DataFrame  # mean `correct` over seeds; a cell the question lacks counts as wrong
    tie_cost: pd.DataFrame  # mean total FLOPs (generated tokens when the sweep recorded no FLOPs): breaks ties
    flops: pd.DataFrame  # mean total FLOPs, NaN when not recorded


def _tables(frame: pd.DataFrame, questions: pd.Index) -> _Tables:
    rows = frame[frame["unique_id"].isin(questions)]
    if rows.empty:
        raise AnalysisError("no result rows for the binned questions: are the bins from this sweep?")
    has_flops = "total_flops" in rows and rows["total_flops"].notna().any()
    values = rows.assign(correct=rows["correct"].eq(True).astype(float),
                         flops=rows["total_flops"].astype(float) if has_flops else np.nan,
                         tie_cost=rows["total_flops" if has_flops else "generated_tokens"].astype(float))

    def matrix(column: str) -> pd.DataFrame:
        return values.pivot_table(index="unique_id", columns=["strategy_label", "budget"], values=column,
                                  aggfunc="mean")

    accuracy = matrix("correct").fillna(0.0)
    return _Tables(accuracy, matrix("tie_cost").reindex_like(accuracy),
                   matrix("flops").reindex_like(accuracy) if has_flops else accuracy * np.nan)


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
    """Per (budget, bin), the label with the highest mean accuracy on `questions`; ties: cheaper, then label order."""
    group = bins.loc[questions].rename("bin")
    long = pd.DataFrame({
        "train_accuracy": _long(tables.accuracy.loc[questions].groupby(group).mean()),
        "train_cost": _long(tables.tie_cost.loc[questions].groupby(group).mean()),
    }).reset_index()
    long = long[long["budget"].isin(budgets)].sort_values(
        ["budget", "bin", "train_accuracy", "train_cost", "strategy_label"],
        ascending=[True, True, False, True, True], na_position="last")
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


def compute_optimal(frame: pd.DataFrame, bins: pd.Series, budgets: Sequence[int] | None = None, folds: int = 2,
                    seed: int = 0) -> PolicyResult:
    """The paper's compute-optimal curve, cross-validated over questions so no choice is scored on its own data.

    Only questions with a bin take part (e.g. those with enough best-of-N samples to estimate difficulty).
    Folds are stratified by bin, so every bin needs at least `folds` questions.
    """
    bins = bins.rename("bin")
    tables = _tables(frame, bins.index)
    bins = bins.loc[tables.accuracy.index]
    budgets = _budgets(tables, budgets)
    sizes = bins.value_counts()
    if folds < 2 or (sizes < folds).any():
        raise AnalysisError(f"{folds}-fold cross-validation needs ≥ 2 folds and ≥ {folds} questions in every bin; "
                         f"bin sizes are {sizes.sort_index().to_dict()}: sweep more problems or use fewer bins")
    fold_of = _folds(bins, folds, seed).loc[bins.index]
    accuracy, flops = _long(tables.accuracy), _long(tables.flops)
    choices, scored = [], []
    for fold in range(folds):
        chosen = _choose(tables, fold_of.index[fold_of != fold], bins, budgets).assign(fold=fold)
        held_out = bins[fold_of == fold]
        grid = pd.DataFrame({"unique_id": held_out.index, "bin": held_out.to_numpy(), "fold": fold}).merge(
            chosen[["budget", "bin", "strategy_label"]], on="bin")
        keys = pd.MultiIndex.from_frame(grid[["unique_id", "strategy_label", "budget"]])
        scored.append(grid.assign(correct=accuracy.reindex(keys).to_numpy(),
                                  total_flops=flops.reindex(keys).to_numpy()))
        choices.append(chosen)
    per_question = pd.concat(scored, ignore_index=True).sort_values(["budget", "unique_id"], ignore_index=True)
    choices = pd.concat(choices, ignore_index=True)[
        ["fold", "budget", "bin", "strategy_label", "train_accuracy", "train_cost", "train_questions"]]
    return PolicyResult(choices, per_question, per_question.groupby("budget")["correct"].mean().rename("accuracy"))


def fit_policy(frame: pd.DataFrame, bins: pd.Series,
               budgets: Sequence[int] | None = None) -> dict[tuple[int, int], str]:
    """(budget, bin) → strategy_label chosen on all questions: what a deployment uses; CV estimates its accuracy."""
    bins = bins.rename("bin")
    tables = _tables(frame, bins.index)
    chosen = _choose(tables, tables.accuracy.index, bins, _budgets(tables, budgets))
    return {(int(b), int(n)): str(label)
            for b, n, label in zip(chosen["budget"], chosen["bin"], chosen["strategy_label"], strict=True)}


def policy_of(choices: dict[tuple[int, int], str], difficulty: Difficulty) -> Policy:
    """The deployable policy: the choices and the difficulty estimate they assume (kind, k, score thresholds)."""
    return Policy(choices, difficulty.kind, difficulty.estimation_samples, difficulty.thresholds())


def strategy_curves(frame: pd.DataFrame, questions: pd.Index) -> pd.DataFrame:
    """(strategy_label, budget) → accuracy and mean total FLOPs over `questions`, scored as compute_optimal scores."""
    tables = _tables(frame, questions)
    return pd.DataFrame({"accuracy": tables.accuracy.mean(), "total_flops": tables.flops.mean()})


def _family_labels(frame: pd.DataFrame, curves: pd.DataFrame, baseline: str = BASELINE) -> dict[str, str]:
    """strategy → the label drawn for it: `baseline` for best-of-N, else the best label averaged over budgets.

    Picking the best beam/lookahead/revisions label in-sample favours those baselines, never compute-optimal.
    """
    family = frame.drop_duplicates("strategy_label").set_index("strategy_label")["strategy"]
    mean = curves["accuracy"].groupby(level="strategy_label").mean()
    ranked = pd.DataFrame({"accuracy": mean, "strategy": family.reindex(mean.index)}).reset_index()
    ranked = ranked.sort_values(["strategy", "accuracy", "strategy_label"], ascending=[True, False, True])
    labels = ranked.drop_duplicates("strategy").set_index("strategy")["strategy_label"].to_dict()
    if baseline in family.index:
        labels[family[baseline]] = baseline
    return labels


def cost_to_reach(costs: Sequence[float], accuracy: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest cost at which a measured curve reaches `target`, interpolated on log2(cost) between points.

    Returns (cost, bound): "=" interpolated or measured; "<=" already reached at the smallest measured cost
    (the true cost may be lower); ">" never reached, cost = the largest measured (the true cost is higher).
    """
    points = sorted(zip(costs, accuracy, strict=True))
    if any(not math.isfinite(c) or c <= 0 or not math.isfinite(a) for c, a in points):
        return math.nan, ""
    if points[0][1] >= target - _TOLERANCE:
        return points[0][0], "<="
    for (c0, a0), (c1, a1) in zip(points, points[1:], strict=False):
        if abs(a1 - target) <= _TOLERANCE:
            return c1, "="
        if a1 > target:
            fraction = (target - a0) / (a1 - a0)
            return float(np.exp2(np.log2(c0) + fraction * (np.log2(c1) - np.log2(c0)))), "="
    return points[-1][0], ">"


def efficiency(optimal: pd.DataFrame, baseline: pd.DataFrame, estimation_samples: float,
               estimation_flops: float = math.nan) -> pd.DataFrame:
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
        rows.append({
            "budget": budget, "accuracy": target,
            "baseline_budget": matched, "bound": bound, "k": matched / budget,
            "budget_with_estimation": budget + estimation_samples,
            "k_with_estimation": matched / (budget + estimation_samples),
            "flops": flops, "flops_with_estimation": flops + estimation_flops,
            "baseline_flops": matched_flops, "flops_bound": flops_bound, "k_flops": matched_flops / flops,
            "k_flops_with_estimation": matched_flops / (flops + estimation_flops),
        })
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


def flops_matched(result: PolicyResult, large: pd.DataFrame, small_params: float, large_params: float,
                  r_values: Sequence[float] = R_VALUES) -> pd.DataFrame:
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
        within = [budget for budget in budgets if budget <= matched + _TOLERANCE]
        used = within[-1] if within else None
        for name, ids in groups:
            small_accuracy = math.nan if used is None else by_budget.loc[used].reindex(ids).mean()
            large_mean = large_accuracy.reindex(ids).mean()
            winner = ("unknown" if used is None else "small" if small_accuracy > large_mean + _TOLERANCE
                      else "large" if large_mean > small_accuracy + _TOLERANCE else "tie")
            rows.append({"R": r, "matched_budget": matched, "used_budget": math.nan if used is None else used,
                         "beyond_sweep": matched > budgets[-1], "bin": name, "questions": len(ids),
                         "small_accuracy": small_accuracy, "large_accuracy": large_mean, "winner": winner})
    return pd.DataFrame(rows)


def generator_parameters(frame: pd.DataFrame) -> float:
    """The generator's parameter count, recovered from FLOPs = 2 × parameters × computed tokens (sweep.py)."""
    if "generator_flops" not in frame or frame["generator_flops"].isna().all():
        raise AnalysisError("the sweep recorded no generator FLOPs: pass the parameter count explicitly")
    computed = frame["generated_tokens"] + frame["prompt_tokens"] - frame["cached_prompt_tokens"]
    ratio = frame["generator_flops"] / (2.0 * computed.where(computed > 0))
    return float(ratio.dropna().median())


# ---------------------------------------------------------------- the Markdown report

ACCURACY_PNG = "compute_optimal_vs_budget.png"
EFFICIENCY_PNG = "efficiency.png"
EFFICIENCY_FLOPS_PNG = "efficiency_flops.png"


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


def _bounded(value: float, bound: str) -> str:
    return "–" if pd.isna(value) else {"<=": "≤ ", ">": "> "}.get(bound, "") + f"{value:.3g}"


def _efficiency_table(table: pd.DataFrame, estimation_samples: int) -> str:
    def column(values: str, bound: str) -> list[str]:
        return [_bounded(v, b) for v, b in zip(table[values], table[bound], strict=True)]

    shown = pd.DataFrame({
        "compute-optimal acc. %": table["accuracy"].map(_percent).to_numpy(),
        "best-of-N budget to match": column("baseline_budget", "bound"),
        "k (generations)": column("k", "bound"),
        f"k, counting {estimation_samples} estimation samples": column("k_with_estimation", "bound"),
        "k (FLOPs)": column("k_flops", "flops_bound"),
        "k (FLOPs), counting estimation": column("k_flops_with_estimation", "flops_bound"),
    }, index=pd.Index([f"N={budget}" for budget in table.index], name="budget"))
    return markdown_table(shown)


def _plot_rows(curve: str, values: pd.Series, x: pd.Series | np.ndarray) -> pd.DataFrame:
    """Per-question values indexed (unique_id, budget) as rows plot_curves draws at `x`; one pseudo-seed, so its
    error bars are across questions for every curve alike."""
    return values.index.to_frame(index=False).assign(curve=curve, seed=0, correct=values.to_numpy(),
                                                     x=np.asarray(x, dtype=float))


def _how_to_read(best: float, problems: int, estimation_samples: int, agreement: float, stable: str) -> str:
    """Caveats that depend on this run, so that the reader does not over-read the numbers."""
    per_cell = max(1, problems // (2 * N_BINS))
    notes = [f"Compute-optimal accuracy is cross-validated: the {problems} questions are split into 2 folds "
             "(stratified by difficulty bin) and each fold is scored with the strategy that was best for its (budget, "
             "bin) on the other fold, so no choice is scored on the questions it was chosen on. With about "
             f"{per_cell} question{'s' if per_cell > 1 else ''} per bin and fold the choices can be noisy ({stable}); "
             "the CV curve can even fall below the best single strategy, whose label is picked "
             "in-sample (which favours the fixed strategies).",
             f"Difficulty is estimated from {estimation_samples} best-of-N samples per question; counting them, "
             f"compute-optimal at budget N costs N + {estimation_samples} generations. Predicted bins (mean verifier "
             f"score, no ground truth) agree with the oracle bins on {100 * agreement:.0f} % of the questions."]
    if 100 * best < NEAR_ZERO_ACCURACY:
        notes.append(f"Accuracy is near zero everywhere (best {100 * best:.1f} %), as expected for a tiny generator "
                     "such as the embedded 135M model. Most (budget, bin) choices are then ties, broken by lower "
                     "compute, so 'compute-optimal' mostly means 'cheapest', and the efficiency ratios compare "
                     "near-zero accuracies: they say nothing about the paper's 4× claim. What this run shows is that "
                     "the analysis runs end to end from the Parquet with the estimation cost counted; a real "
                     "generator and PRM (conf/gpu.yaml) are needed for the numbers to mean something.")
    notes.append("Budgets are nominal generation budgets; beam and lookahead spend more step-level samples, so the "
                 "FLOPs figures are the fairer comparison where the sweep recorded FLOPs.")
    return " ".join(notes)


def _flops_matched_section(frame: pd.DataFrame, result: PolicyResult, larger_run_dir: str | Path | RunStore,
                           small_params: float | None, large_params: float | None,
                           r_values: Sequence[float]) -> list[str]:
    larger, _ = finished_rows(RunStore.of(larger_run_dir).load_frame())
    pass1 = oracle_pass_at_1(larger)
    if pass1.empty:
        raise AnalysisError(f"{larger_run_dir} has no best-of-N candidates to take the larger model's pass@1 from")
    small_n = small_params or generator_parameters(frame)
    large_n = large_params or generator_parameters(larger)
    matched = flops_matched(result, pass1.rename("correct").rename_axis("unique_id").reset_index(), small_n,
                            large_n, r_values)
    shown = pd.DataFrame({
        "matched budget": matched["matched_budget"].map("{:.1f}".format).to_numpy(),
        "swept budget used": [("–" if pd.isna(used) else str(int(used))) + (" (beyond sweep)" if beyond else "")
                              for used, beyond in zip(matched["used_budget"], matched["beyond_sweep"], strict=True)],
        "bin": matched["bin"].to_numpy(), "questions": matched["questions"].to_numpy(),
        "small + search %": matched["small_accuracy"].map(_percent).to_numpy(),
        "larger model %": matched["large_accuracy"].map(_percent).to_numpy(),
        "winner": matched["winner"].to_numpy(),
    }, index=pd.Index(matched["R"], name="R"))
    return ["## FLOPs-matched: small model + compute-optimal search vs the larger model", "",
            f"Small model {small_n:.3g} parameters, larger {large_n:.3g} (M = {large_n / small_n:.2f}). The larger "
            "model's accuracy is its pass@1 over its best-of-N samples; the small model's is the cross-validated "
            "compute-optimal accuracy (oracle bins) at the largest swept budget within the matched budget "
            "M + 3(M − 1)/R generations.", "", markdown_table(shown), ""]


def _efficiency_section(out: Path, frame: pd.DataFrame, questions: pd.Index, curves: pd.DataFrame,
                        results: dict[str, PolicyResult], difficulties: dict[str, Difficulty]) -> list[str]:
    """Efficiency tables and figures: compute-optimal against best-of-N, in generations and in FLOPs, with
    the difficulty estimate's cost left out and counted (compute-optimal's curve shifted right by it)."""
    k = difficulties["oracle"].estimation_samples
    tables = _tables(frame, questions)
    accuracy = _long(tables.accuracy).xs(BASELINE, level="strategy_label")
    budgets = accuracy.index.get_level_values("budget")
    generations = [_plot_rows("best-of-N (weighted)", accuracy, budgets)]
    in_flops = [_plot_rows("best-of-N (weighted)", accuracy, _long(tables.flops).xs(BASELINE, level="strategy_label"))]
    md = []
    for kind, result in results.items():
        q = result.per_question.set_index(["unique_id", "budget"])
        budgets = q.index.get_level_values("budget")
        cost = difficulties[kind].cost
        estimation_flops = cost["total_flops"] if "total_flops" in cost else pd.Series(math.nan, cost.index)
        name = f"compute-opt. ({kind})"
        generations += [_plot_rows(name, q["correct"], budgets),
                        _plot_rows(f"{name} + estimate", q["correct"], budgets + k)]
        in_flops += [_plot_rows(name, q["correct"], q["total_flops"]),
                     _plot_rows(f"{name} + estimate", q["correct"], q["total_flops"].to_numpy()
                                + q.index.get_level_values("unique_id").map(estimation_flops))]
        table = efficiency(result.curve(), curves.xs(BASELINE, level="strategy_label"), k,
                           estimation_flops.reindex(questions).mean())
        md += [f"### {kind.capitalize()} difficulty", "", _efficiency_table(table, k), ""]
    figures = [f"![efficiency in generations]({EFFICIENCY_PNG})"]
    plot_curves(out / EFFICIENCY_PNG, f"Compute-optimal vs best-of-N, ± the {k}-sample difficulty estimate",
                pd.concat(generations), value="correct", label="curve", ylabel="accuracy %", x="x",
                xlabel="generations per question")
    if tables.flops.notna().any().any():
        plot_curves(out / EFFICIENCY_FLOPS_PNG, "The same in FLOPs", pd.concat(in_flops), value="correct",
                    label="curve", ylabel="accuracy %", x="x", xlabel="mean FLOPs per question")
        figures.append(f"![efficiency in FLOPs]({EFFICIENCY_FLOPS_PNG})")
    return ["## Efficiency vs best-of-N (weighted)", "", *figures, "",
            "k = the best-of-N budget (or FLOPs) that matches compute-optimal's accuracy, divided by "
            "compute-optimal's own, interpolated on log2 between swept budgets. '≤' means best-of-N matched already "
            "at its smallest budget (k may be smaller); '>' that it never did (k is larger).", "", *md]


def _difficulty_section(frame: pd.DataFrame, questions: pd.Index, difficulties: dict[str, Difficulty]) -> list[str]:
    """What the estimate costs, and how well its bins sort the questions by their pass@1 over *all* samples."""
    k = difficulties["oracle"].estimation_samples
    pass1 = oracle_pass_at_1(frame).reindex(questions)
    sorting = pd.DataFrame({f"{kind} bins: mean pass@1, all samples": pass1.groupby(d.bins.loc[questions]).mean()
                            for kind, d in difficulties.items()}).map("{:.3f}".format)
    sorting.index.name = "bin"
    cost = difficulties["oracle"].cost.reindex(questions).mean().map("{:,.4g}".format).to_frame("mean")
    cost.index.name = f"estimate per question ({k} samples)"
    return ["## Difficulty estimate", "",
            f"Bins from the first {k} samples of each question's largest best-of-N cell; the table shows how well they "
            "sort questions by pass@1 over every best-of-N sample of the sweep (decreasing = well sorted).", "",
            markdown_table(sorting), "", markdown_table(cost), ""]


def build_optimize_report(run_dir: str | Path | RunStore, larger_run_dir: str | Path | RunStore | None = None,
                          estimation_samples: int | None = None, r_values: Sequence[float] = R_VALUES,
                          small_params: float | None = None, large_params: float | None = None) -> ReportFile:
    """Write `RUN_DIR/report/compute_optimal.md` with its PNGs and `RUN_DIR/policy.json`.

    The saved policy uses predicted difficulty, so it is deployable (no ground truth online). Parameter counts
    for the FLOPs-matched comparison default to those recovered from each sweep's FLOPs. Error rows take no
    part (they hold no answer); the report says how many were left out.
    """
    store = RunStore.of(run_dir)
    frame, excluded = finished_rows(store.load_frame())
    difficulties = {kind: estimate_difficulty(frame, kind, estimation_samples) for kind in KINDS}
    questions = difficulties["oracle"].bins.index.intersection(difficulties["predicted"].bins.index)
    results = {kind: compute_optimal(frame, d.bins.loc[questions]) for kind, d in difficulties.items()}
    curves = strategy_curves(frame, questions)
    if BASELINE not in curves.index.get_level_values("strategy_label"):
        raise AnalysisError(f"no {BASELINE} rows: the efficiency comparison needs best-of-N with weighted selection")
    labels = sorted(_family_labels(frame, curves).values())
    with store.local_dir("report") as out:
        md = _optimize_markdown(store, frame, excluded, out, difficulties, questions, results, curves, labels)
        if larger_run_dir is not None:
            md += _flops_matched_section(frame, results["oracle"], larger_run_dir, small_params, large_params,
                                         r_values)
        (out / "compute_optimal.md").write_text("\n".join(md))
    return ReportFile(store.location("report", "compute_optimal.md"), excluded)


def _optimize_markdown(store: RunStore, frame: pd.DataFrame, excluded: int, out: Path,
                       difficulties: dict[str, Difficulty], questions: pd.Index, results: dict[str, PolicyResult],
                       curves: pd.DataFrame, labels: list[str]) -> list[str]:
    """The report's sections with their plots (written into `out`); saves the deployable policy."""
    accuracy = _long(_tables(frame, questions).accuracy)
    drawn = [_plot_rows(label, values, values.index.get_level_values("budget"))
             for label in labels for values in [accuracy.xs(label, level="strategy_label")]]
    drawn += [_plot_rows(f"compute-optimal ({kind} difficulty)", q["correct"], q.index.get_level_values("budget"))
              for kind, r in results.items() for q in [r.per_question.set_index(["unique_id", "budget"])]]
    plot_curves(out / ACCURACY_PNG, "Compute-optimal (cross-validated) vs fixed strategies", pd.concat(drawn),
                value="correct", label="curve", ylabel="accuracy %")
    shown = {label: curves.xs(label, level="strategy_label")["accuracy"] for label in labels}
    shown |= {f"compute-optimal ({kind})": result.accuracy for kind, result in results.items()}
    accuracy_table = pd.DataFrame(shown).T.map(_percent)
    accuracy_table.columns = [f"N={b}" for b in accuracy_table.columns]
    accuracy_table.index.name = "accuracy %"

    fitted = fit_policy(frame, difficulties["predicted"].bins.loc[questions])
    saved = save_policy(policy_of(fitted, difficulties["predicted"]), store.uri)
    policy = pd.Series(fitted).rename_axis(["budget", "bin"]).unstack("bin").fillna("–")
    policy.columns = [f"bin {b}" for b in policy.columns]
    policy.index = pd.Index([f"N={b}" for b in policy.index], name="budget")

    oracle_choices = results["oracle"].choices.pivot(index=["budget", "bin"], columns="fold", values="strategy_label")
    stable = (f"here the two folds chose the same strategy in {int(oracle_choices.nunique(axis=1).eq(1).sum())} "
              f"of {len(oracle_choices)} (budget, oracle bin) cells")
    agreement = float(difficulties["oracle"].bins.loc[questions].eq(difficulties["predicted"].bins.loc[questions])
                      .mean())
    best = max(float(curves["accuracy"].max()), *(float(r.accuracy.max()) for r in results.values()))
    k = difficulties["oracle"].estimation_samples
    read = _how_to_read(best, len(questions), k, agreement, stable)
    read += f" {excluded_note(excluded)}" if excluded else ""
    return [f"# Compute-optimal test-time search: {store.name}", "",
          f"Built from the Parquet in `{store.location(RESULTS)}` alone (Snell et al. 2024, §3–§6).", "",
          "## How to read this", "", read, "",
          "## Accuracy vs budget", "", f"![accuracy vs budget]({ACCURACY_PNG})", "", markdown_table(accuracy_table),
          "", *_efficiency_section(out, frame, questions, curves, results, difficulties),
          *_difficulty_section(frame, questions, difficulties),
          "## Deployed policy (predicted difficulty, fitted on all questions)", "",
          f"Saved as `{saved}` with the score thresholds between bins.", "",
          markdown_table(policy), ""]
