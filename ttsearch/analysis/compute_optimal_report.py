"""The compute-optimal report (`ttsearch optimize RUN_DIR`): compute-optimal test-time search (Snell et al. 2024,
§3–§6) from a sweep's Parquet alone, with the deployable policy it fits (`policy.json`, what `ttsearch solve` runs).

The paper's recipe: estimate each question's difficulty (quantile bins of pass@1, oracle from the ground truth
or predicted from verifier scores), pick for every (budget, bin) the strategy label that did best there on
held-out questions (2-fold cross-validation), and compare the resulting curve with the best fixed strategy
label per budget (chosen on the same folds), with each best-of-N selection mode, and with a larger model at
matched FLOPs. Unlike the paper, the samples spent on the predicted estimate are counted as compute too.

Oracle difficulty is pass@1 over every graded best-of-N sample of the question (all budgets and seeds, each
sample once). Predicted difficulty is the mean verifier score of the first `estimation_samples` (k) candidates
of the question's largest best-of-N job (see `ttsearch.analysis.curves.estimation_jobs`); its cost is what those k
samples spent (`ttsearch.analysis.curves.estimation_cost`: their own generated and verifier tokens and the job's one
prompt prefill). Both are binned by the rule the deployed policy uses (`ttsearch.analysis.policy.fit_thresholds`), so
cross-validation scores the policy that `ttsearch solve` runs.

Strategy labels are the opaque `strategy_label`s (configuration × selection); a budget is the nominal
generation budget N of the sweep (step-level searches spend more step samples than N, early stopping may spend
fewer; the FLOPs columns hold their real cost). Accuracies here are fractions in [0, 1]; the Markdown report shows
percentages.
Ungraded rows take no part in any accuracy; error rows take no part at all. Every comparison stated in words
(compute-optimal against the best fixed label, fewer or more compute, small against larger model) is a paired
test over the same questions (`ttsearch.analysis.statistics`), with its 95 % interval.

This module builds the report: its sections, tables and plots, and the policy it saves. The paired comparisons
behind its verdicts, and the curves they compare, are `ttsearch.analysis.compute_optimal_verdicts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ttsearch.analysis.compute_optimal import (
    BEST_FIXED,
    FOLDS,
    KINDS,
    R_VALUES,
    PolicyResult,
    accuracy_tables,
    as_long,
    best_fixed,
    best_of_n_labels,
    compute_optimal,
    efficiency,
    family_labels,
    fit_policy,
    flops_matched,
    generator_parameters,
    policy_of,
    strategy_curves,
)
from ttsearch.analysis.compute_optimal_verdicts import (
    UNDETERMINED,
    Curve,
    comparators,
    cost_sentences,
    matched_tests,
    result_curve,
    versus_best_fixed,
)
from ttsearch.analysis.curves import (
    DEFAULT_ESTIMATION_SAMPLES,
    N_BINS,
    NEAR_ZERO_ACCURACY,
    AnalysisError,
    Difficulty,
    bin_sorting,
    estimate_difficulty,
    excluded_note,
    finished_rows,
    oracle_pass_at_1,
    samples_note,
    ungraded_note,
)
from ttsearch.analysis.policy import save_policy
from ttsearch.analysis.render import ReportFile, markdown_table, plot_curves
from ttsearch.analysis.statistics import METHOD, NO_DIFFERENCE, distinct_digits, tie_counts
from ttsearch.sweep.results import RESULTS, RunStore

ACCURACY_PNG = "compute_optimal_vs_budget.png"
EFFICIENCY_PNG = "efficiency.png"
EFFICIENCY_FLOPS_PNG = "efficiency_flops.png"


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


def _bounded(value: float, bound: str) -> str:
    return "–" if pd.isna(value) else {"<=": "≤ ", ">": "> "}.get(bound, "") + f"{value:.3g}"


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
    compared: dict[str, Curve],
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
        mine = result_curve(result)
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
            bullets.append(f"- vs {other_name}. " + cost_sentences(mine, other, table, counted))
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
        "The verdicts below are not read off k, whose interpolation cannot tell a real gap from a question or "
        f"two of noise: each comes from a {METHOD}, comparing compute-optimal's per-question accuracy at N with "
        "the compared curve's at the swept budget that brackets compute-optimal's cost (N, N + the estimate, or "
        "its FLOPs). 'fewer' means the compared curve is measurably less accurate even at its cheapest swept "
        "budget costing at least as much; 'more' that it is measurably more accurate at its dearest swept budget "
        f"costing at most as much; '{NO_DIFFERENCE}' that the interval of that comparison holds 0; "
        f"'{UNDETERMINED}' that the only bracketing budget the sweep has differs measurably in the direction "
        "that leaves the cost open. Each verdict names the compared budget and the difference in accuracy "
        "points (compute-optimal minus it) with its 95 % interval.",
        "",
        text,
        "",
        *md,
    ]


def _fold_sizes(results: dict[str, PolicyResult]) -> pd.DataFrame:
    """bin → questions per cross-validation fold, per kind of difficulty ("–": a bin that kind does not have)."""
    columns = {}
    for kind, result in results.items():
        questions = result.per_question.drop_duplicates("unique_id")
        sizes = questions.groupby(["bin", "fold"]).size().unstack("fold", fill_value=0)
        columns |= {f"{kind}: fold {fold}": sizes[fold].map(str) for fold in sizes.columns}
    table = pd.DataFrame(columns).fillna("–")
    table.index.name = "bin"
    return table


def _size_range(results: dict[str, PolicyResult]) -> str:
    """'2–3 (oracle bins) and 2 (predicted bins)': the real questions per bin and fold the choices were made on."""
    parts = []
    for kind, result in results.items():
        sizes = result.per_question.drop_duplicates("unique_id").groupby(["bin", "fold"]).size()
        low, high = int(sizes.min()), int(sizes.max())
        parts.append(f"{low if low == high else f'{low}–{high}'} ({kind} bins)")
    return " and ".join(parts)


def _difficulty_section(
    frame: pd.DataFrame, questions: pd.Index, difficulties: dict[str, Difficulty], results: dict[str, PolicyResult]
) -> list[str]:
    """How each difficulty was estimated, how well its bins sort questions by pass@1 over every sample, how many
    questions each bin and fold held, and what the predicted estimate cost."""
    oracle, predicted = difficulties["oracle"], difficulties["predicted"]
    k = predicted.estimation_samples
    capped = (
        f" (the default {DEFAULT_ESTIMATION_SAMPLES} capped by the largest best-of-N job, which holds {k})"
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
        f"job{capped}. Both are binned by the deployed policy's rule: thresholds between {N_BINS} rank "
        "quantiles, each group of tied scores kept whole in one bin (the quantile of its middle rank), a bin of "
        f"fewer than {FOLDS} questions merged into its neighbour; every question is then binned by its score "
        "against the thresholds, as `ttsearch solve` bins a new question.",
        (f" Ties left fewer than {N_BINS} bins: {', '.join(fewer)}." if fewer else ""),
        "",
        "Decreasing mean pass@1 (over every sample) from bin 1 down means the bins sort the questions:",
        "",
        markdown_table(sorting),
        "",
        "Questions per bin and cross-validation fold (each fold's choices are made on the other fold's questions "
        "of the bin, and scored on its own):",
        "",
        markdown_table(_fold_sizes(results)),
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
            "job's one prompt prefill (a best-of-N job is one request, so k samples pay one prompt).",
            "",
        ]
    return lines


def _how_to_read(
    best: float,
    problems: int,
    difficulties: dict[str, Difficulty],
    agreement: float,
    stable: str,
    versus_fixed: str,
    sizes: str,
) -> str:
    """Caveats that depend on this run, so that the reader does not over-read the numbers."""
    predicted = difficulties["predicted"]
    k = predicted.estimation_samples
    same_bins = difficulties["oracle"].n_bins == predicted.n_bins
    notes = [
        f"Compute-optimal accuracy is cross-validated: the {problems} questions are split into {FOLDS} folds "
        "(stratified by difficulty bin) and each fold is scored with the label that was best for its (budget, "
        "bin) on the other fold, so no choice is scored on the questions it was chosen on. With "
        f"{sizes} questions per bin and fold (the table under 'Difficulty estimate') the choices can be noisy "
        f"({stable}).",
        versus_fixed,
        "The per-strategy curves in the first figure are each strategy's label with the best mean accuracy over "
        "budgets, picked in-sample (which favours them); every best-of-N label is drawn.",
        f"Oracle difficulty uses every best-of-N sample ({samples_note(difficulties['oracle'].samples)}); "
        f"predicted difficulty uses {k} samples per question"
        + (" (capped by the largest best-of-N job)" if predicted.capped else "")
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
    tests = matched_tests(result, pass1, matched)
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
            "small − larger": [("–" if test is None else test.interval()) for test in tests],
            "verdict": [("unknown" if test is None else test.verdict("small", "larger")) for test in tests],
        },
        index=pd.Index(matched["R"], name="R"),
    )
    return [
        "## FLOPs-matched: small model + compute-optimal search vs the larger model",
        "",
        f"Small model {small_n:.3g} parameters, larger {large_n:.3g} (M = {large_n / small_n:.2f}). The larger "
        "model's accuracy is its pass@1 over its graded best-of-N samples; the small model's is the "
        "cross-validated compute-optimal accuracy (oracle bins) at the largest swept budget within the matched "
        f"budget M + 3(M − 1)/R generations. The verdict compares the two models' per-question accuracies by a "
        f"{METHOD}: 'small' or 'larger' where one is measurably more accurate, else '{NO_DIFFERENCE}'.",
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
    return ReportFile(store.location("report", "compute_optimal.md"), excluded, ungraded, "compute-optimal report")


def _ties_note(frame: pd.DataFrame) -> str:
    """How many graded rows had tied top choices with different correctness (what tie-breaking could move)."""
    ties = tie_counts(frame, by=["strategy_label"])
    tied, rows = int(ties["tied"].sum()), int(ties["rows"].sum())
    if not tied:
        return "No graded row had tied top choices that differ in correctness."
    return (
        f"{tied} of {rows} graded rows had tied top choices that differ in correctness; their accuracy is the "
        "expectation over the tied choices, and how the ties were broken could move each label's accuracy "
        "within the range the sweep report's 'Score ties' section gives."
    )


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
    labels = sorted(set(family_labels(frame, curves).values()) | set(best_of_n_labels(frame)))
    accuracy = as_long(accuracy_tables(frame, questions).accuracy)
    drawn = [
        _plot_rows(label, values, values.index.get_level_values("budget"))
        for label in labels
        for values in [accuracy.xs(label, level="strategy_label")]
    ]
    mine = {f"compute-optimal ({kind})": result_curve(r) for kind, r in results.items()} | {
        BEST_FIXED: result_curve(fixed)
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
    efficiency_md = _efficiency_section(
        out, frame, questions, results, comparators(frame, questions, fixed), difficulties
    )
    read = _how_to_read(
        best, len(questions), difficulties, agreement, stable, versus_best_fixed(results, fixed), _size_range(results)
    )
    read += f" {_ties_note(frame)}"
    read += f" {excluded_note(excluded)}" if excluded else ""
    read += f" {ungraded_note(ungraded)}" if ungraded else ""
    thresholds = ", ".join(distinct_digits(predicted.thresholds, predicted.score)) or "none (one bin)"
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
        *_difficulty_section(frame, questions, difficulties, results),
        "## Deployed policy (predicted difficulty, fitted on all questions)",
        "",
        f"Saved as `{saved}` with the score thresholds between bins ({thresholds}): `ttsearch solve` bins a new "
        f"question's mean score over {predicted.estimation_samples} samples against them, the rule the choices "
        "were fitted and cross-validated with.",
        "",
        markdown_table(policy),
        "",
    ]
