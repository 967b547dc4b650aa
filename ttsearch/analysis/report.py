"""The sweep report (`ttsearch report RUN_DIR`): the paper's plots and tables for one sweep, from its Parquet alone.

Nothing is re-run: every number is a function of `RUN_DIR/results/*.parquet`, so a report can be
rebuilt (or built on another machine) long after the replicas are gone. Plots follow the paper's
figures: budget N on a log2 axis, accuracy in %. Error rows are left out of everything, ungraded rows
(no verdict) out of every accuracy; both are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ttsearch.analysis.costs import cost_at_equal_accuracy, early_stop_savings
from ttsearch.analysis.curves import (
    N_BINS,
    NEAR_ZERO_ACCURACY,
    AnalysisError,
    Difficulty,
    bin_sorting,
    coverage_of,
    difficulty_bins,
    estimate_difficulty,
    excluded_note,
    finished_rows,
    graded_rows,
    mean_curves,
    oracle_pass_at_1,
    oracle_samples,
    samples_note,
    search_jobs,
    ungraded_note,
)
from ttsearch.analysis.pools import pool_section
from ttsearch.analysis.render import ReportFile, markdown_table, mean_se_text, plot_curves
from ttsearch.analysis.revisions import attempt_accuracy, attempt_table, curve_label, plot_attempt_curves
from ttsearch.analysis.statistics import (
    ACCURACY_COLUMNS,
    METHOD,
    NO_DIFFERENCE,
    grouped,
    paired_difference,
    tie_counts,
    with_accuracy,
)
from ttsearch.sweep.results import CONFIG, RESULTS, ResultsError, RunStore

ERRORS_LISTED = 5
# Per-problem costs shown per strategy × budget when the column exists: (column, table title, format).
COST_COLUMNS = (
    ("generated_tokens", "mean generated tokens per problem", "{:,.0f}"),
    ("verifier_tokens", "mean verifier tokens per problem", "{:,.0f}"),
    ("total_flops", "mean FLOPs per problem", "{:.3g}"),
    ("wall_s", "mean wall seconds per problem", "{:.1f}"),
)


def sweep_summary(table: pa.Table) -> str:
    """Accuracy and coverage (%) per strategy × budget, averaged over problems and seeds, as the text `ttsearch
    sweep` prints; error rows left out, ungraded rows left out of accuracy, tied top choices at their expectation.

    Coverage is the share of jobs where any candidate was right (pass@N; exact over a sample pool's subsets): what
    an oracle verifier would get.
    """
    columns = ["strategy_label", "budget", "correct", "candidate_correct", "error"]
    extra = [c for c in (*ACCURACY_COLUMNS, "coverage") if c in table.column_names]
    frame = table.select(columns + extra).to_pandas()
    frame = with_accuracy(frame[frame["error"].isna()])  # ungraded: NaN, which the mean skips
    if frame.empty:
        return "no rows without an error"
    frame["covered"] = coverage_of(frame)
    parts = []
    for column, title in (("accuracy", "accuracy %"), ("covered", "coverage % (pass@N)")):
        pivot = frame.pivot_table(index="strategy_label", columns="budget", values=column, aggfunc="mean") * 100
        pivot.columns = [f"N={budget}" for budget in pivot.columns]
        pivot.index.name = title
        parts.append(pivot.round(1).to_string())
    return "\n\n".join(parts)


def _by_budget(long: pd.DataFrame, title: str, text: Callable[[pd.Series], str]) -> str:
    """Markdown table label × budget of a long frame with `label`, `budget` columns; `text` formats one row."""
    cells = long.assign(text=long.apply(text, axis=1))
    table = cells.pivot(index="label", columns="budget", values="text").fillna("–")
    table.columns = [f"N={budget}" for budget in table.columns]
    table.index.name = title
    return markdown_table(table)


def _mean_se(row: pd.Series) -> str:
    return mean_se_text(row["mean"], row["se"])


def _bin_table(frame: pd.DataFrame, bins: pd.Series) -> tuple[pd.DataFrame, dict[int, str]]:
    """Per bin: pass@1 range and question count, and the subplot titles that repeat them."""
    stats = oracle_pass_at_1(frame).groupby(bins).agg(["min", "max", "mean", "size"])
    table = pd.DataFrame(
        {
            "pass@1 range": [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(stats["min"], stats["max"], strict=True)],
            "mean pass@1": stats["mean"].map("{:.3f}".format),
            "questions": stats["size"],
        },
        index=pd.Index(stats.index, name="bin"),
    )
    first, last = stats.index.min(), stats.index.max()
    titles = {
        b: f"bin {b}{' (easiest)' if b == first and first != last else ' (hardest)' if b == last else ''}\n"
        f"pass@1 {stats.at[b, 'min']:.2f}–{stats.at[b, 'max']:.2f}, {stats.at[b, 'size']} q."
        for b in stats.index
    }
    return table, titles


def _predicted(frame: pd.DataFrame) -> Difficulty | None:
    """Predicted difficulty at the default k, or None where the sweep has no verifier scores to predict from."""
    try:
        return estimate_difficulty(frame, "predicted")
    except AnalysisError:
        return None


def _how_to_read(
    frame: pd.DataFrame, accuracy: pd.DataFrame, coverage: pd.DataFrame, bins: pd.Series, excluded: int, ungraded: int
) -> str:
    """A paragraph of caveats that depend on this run's data, so the reader does not over-read the plots."""
    seeds, problems = frame["seed"].nunique(), frame["unique_id"].nunique()
    spread = f"across {seeds} seeds" if seeds > 1 else "across problems (one seed)"
    notes = [
        f"Each point averages {problems} problems × {seeds} seed{'s' if seeds > 1 else ''}; bars are ±1 "
        f"standard error {spread}. "
        "Coverage (pass@N) is the share of (problem, seed) whose candidates include a right answer: what a "
        "perfect verifier would score on the same samples, so the gap between coverage and accuracy is what "
        "better selection could recover. Budget N counts generator samples per problem; step-level searches "
        "sample N steps per depth (lookahead also k roll-out steps per sample) and early stopping may stop "
        "below N, so compare strategies at equal generated tokens and FLOPs too (see the efficiency section)."
    ]
    best = accuracy["mean"].max()
    if best < NEAR_ZERO_ACCURACY:
        notes.append(
            f"Accuracy is near zero everywhere (best {best:.1f} %), as expected for a tiny generator such as "
            "the embedded 135M model: the meaningful signals are coverage and the relative order of "
            "strategies, and only the differences the paired tests below call measurable are more than noise."
        )
        if coverage["mean"].max() < NEAR_ZERO_ACCURACY:
            notes.append(
                f"Coverage is near zero too (best {coverage['mean'].max():.1f} %): this run shows that the "
                "machinery works, not which strategy is better; more samples or an easier set would."
            )
    if problems < 10 * N_BINS and not bins.empty:
        sizes = bins.value_counts()
        held = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}–{sizes.max()}"
        notes.append(
            f"With {problems} problems the difficulty bins hold {held} questions each (the bin table below): "
            "per-bin curves are noisy."
        )
    pass1 = oracle_pass_at_1(frame)
    if not bins.empty and bins.nunique() < N_BINS:
        notes.append(
            f"Ties in pass@1 left {bins.nunique()} difficulty bins instead of {N_BINS}: tied questions always "
            "share a bin, so a pile of equal pass@1 (e.g. 0 for a small model) is one bin."
            + (
                " Every question has the same pass@1, so there is no difficulty information."
                if pass1.nunique() == 1
                else ""
            )
        )
    if excluded:
        notes.append(excluded_note(excluded))
    if ungraded:
        notes.append(ungraded_note(ungraded))
    notes.append(
        "Wall seconds are per problem while sharing replicas with every other problem in flight: a latency, not a cost."
    )
    return " ".join(notes)


def _contents(frame: pd.DataFrame) -> list[str]:
    """Markdown lines: what the run holds, and its most frequent errors (by their last line, the exception)."""
    errors = frame["error"].dropna()
    configurations = search_jobs(frame)["strategy_config"].nunique()
    counts = pd.DataFrame(
        {
            "count": {
                "rows": len(frame),
                "problems": frame["unique_id"].nunique(),
                "seeds": frame["seed"].nunique(),
                "strategy configurations": configurations,
                "strategy labels (configuration × selection)": frame["strategy_label"].nunique(),
                "budgets": frame["budget"].nunique(),
                "rows with an error (excluded)": len(errors),
                "rows ungraded (excluded from accuracy)": int((frame["correct"].isna() & frame["error"].isna()).sum()),
            }
        }
    )
    counts.index.name = "what"
    lines = ["## Run contents", "", markdown_table(counts), ""]
    if len(errors):
        first = errors.map(lambda e: e.strip().splitlines()[-1][:160] if e.strip() else "(empty)").value_counts()
        listed = first.head(ERRORS_LISTED).rename("rows").to_frame()
        listed.index.name = "error (last line)"
        lines += [f"Most frequent errors ({len(first)} distinct):", "", markdown_table(listed), ""]
    return lines


def build_report(run_dir: str | Path | RunStore) -> ReportFile:
    """Write `RUN_DIR/report/report.md` and its PNG plots from the sweep's finished Parquet.

    Error rows are left out of every figure, ungraded rows out of every accuracy; both are counted.
    """
    store = RunStore.of(run_dir)
    everything = store.load_frame()
    frame, excluded = finished_rows(everything)
    if frame.empty:
        raise ResultsError(f"all {excluded} rows in {store.location(RESULTS)} are error rows: nothing to report")
    frame = with_accuracy(frame).assign(
        covered=coverage_of(frame),
        search=frame["strategy_label"].str.split("/").str[0],  # label without selection: shares the samples
    )
    graded, ungraded = graded_rows(frame)
    jobs = search_jobs(frame)
    accuracy = mean_curves(graded, "accuracy", "strategy_label")
    coverage = mean_curves(jobs, "covered", "search")
    bins = difficulty_bins(frame)
    bin_table, bin_titles = _bin_table(frame, bins) if not bins.empty else (None, {})
    with store.local_dir("report") as out:
        md = _markdown(
            store, frame, graded, jobs, accuracy, coverage, bins, bin_table, bin_titles, (excluded, ungraded), out
        )
        md += _contents(everything)
        (out / "report.md").write_text("\n".join(md))
    return ReportFile(store.location("report", "report.md"), excluded, ungraded)


def _revision_section(frame: pd.DataFrame, out: Path) -> list[str]:
    """pass@1 of revision attempt t per revisions configuration and budget, plotted into `out`; none without
    revisions rows."""
    curves = attempt_accuracy(frame)
    if curves.empty:
        return []
    labels = [
        curve_label(config, budget) for config, budget in zip(curves["strategy_config"], curves["budget"], strict=True)
    ]
    curves = curves.assign(label=labels)
    table = attempt_table(curves)
    table.index.name = "pass@1 % (± s.e.)"
    title = "Revisions: pass@1 of attempt t"
    plot_attempt_curves(out / "accuracy_by_attempt.png", title, curves)
    return [
        "## Revisions: pass@1 by attempt",
        "",
        f"![{title}](accuracy_by_attempt.png)",
        "",
        "A revisions job's candidates are its chains' attempts; attempt t of a chain saw the chain's earlier "
        "attempts. Attempt t's pass@1 is the share of graded t-th attempts that are right (over chains, problems "
        "and seeds), ± 1 standard error over problems: a rising curve means revising helps.",
        "",
        markdown_table(table),
        "",
    ]


PAIRED = "Which differences are measurable"
TIES = "Score ties"


def _paired_section(graded: pd.DataFrame) -> list[str]:
    """Per budget, the most accurate label against every other, each verdict from a paired test over questions."""
    per_question = graded.groupby(["budget", "strategy_label", "unique_id"])["accuracy"].mean()
    lines = []
    for budget, at in per_question.groupby(level="budget", sort=True):
        at = at.droplevel("budget")
        means = at.groupby(level="strategy_label").mean()
        if len(means) < 2:
            continue
        best = means.idxmax()  # the first label in order among equal means
        verdicts = []
        for label in means.index.drop(best):
            difference = paired_difference(at.xs(label), at.xs(best))
            verdicts.append((difference.verdict(), f"{label} ({difference.interval()})"))
        lines.append("- " + grouped(f"N={budget}, against {best} ({100 * means[best]:.1f} %)", verdicts, ": "))
    if not lines:
        return []
    return [
        f"## {PAIRED}",
        "",
        "At each budget, the label with the highest accuracy against every other label on the same questions "
        f"(each question's accuracy averaged over seeds): a {METHOD}, in accuracy points (the other label minus "
        f"the best). '{NO_DIFFERENCE}' means the interval holds 0: the table's order there may be noise.",
        "",
        *lines,
        "",
    ]


def _ties_section(graded: pd.DataFrame) -> list[str]:
    """Per label and budget: rows whose tied top-scored choices differ in correctness, and the accuracy range that
    tie-breaking allows (worst to best case)."""
    ties = tie_counts(graded).reset_index()
    tied_labels = ties.groupby("strategy_label")["tied"].sum()
    md = [f"## {TIES}", ""]
    if not tied_labels.any():
        return md + [
            "No graded row had tied top choices that differ in correctness: tie-breaking moves no accuracy here.",
            "",
        ]
    shown = ties[ties["strategy_label"].isin(tied_labels.index[tied_labels > 0])].rename(
        columns={"strategy_label": "label"}
    )

    def cell(row: pd.Series) -> str:
        low, high = 100 * row["accuracy_low"], 100 * row["accuracy_high"]
        return f"{int(row['tied'])} of {int(row['rows'])}: {low:.1f} – {high:.1f}"

    return md + [
        f"{int(ties['tied'].sum())} of {int(ties['rows'].sum())} graded rows had several top-scored choices "
        "that differ in correctness (e.g. a saturating verifier's equal scores). Their accuracy counts the tie "
        "at its expectation (the mean correctness of the tied choices: the `accuracy` column). A cell "
        "reads `tied rows of graded rows: worst – best accuracy %`, the range the accuracy could take by "
        "breaking every tie the worst or the best way.",
        "",
        _by_budget(shown, "tied rows: accuracy range %", cell),
        "",
    ]


EFFICIENCY = "Efficiency: compute to reach best-of-N's accuracy"
_BOUNDS = {"<=": "≤ ", "=": "", ">": "> "}


def _k(ratio: float, bound: str) -> str:
    """A cost ratio with its bound (`cost_to_reach`), or "–" where unknown."""
    return "–" if pd.isna(ratio) else f"{_BOUNDS.get(bound, '')}{ratio:.2f}"


def _cost(value: float, fmt: str) -> str:
    return "–" if pd.isna(value) or value <= 0 else fmt.format(value)


def _equal_accuracy_table(baseline: str, costs: pd.DataFrame) -> str:
    """label × budget: "k in samples (samples needed) · k in FLOPs", under best-of-N's own accuracy and cost."""
    target = costs.drop_duplicates("budget").set_index("budget").sort_index()
    rows = {
        "best-of-N accuracy %": target["accuracy"].map("{:.1f}".format),
        "best-of-N mean samples · FLOPs": pd.Series(
            [
                f"{_cost(s, '{:.3g}')} · {_cost(f, '{:.3g}')}"
                for s, f in zip(target["baseline_samples"], target["baseline_flops"], strict=True)
            ],
            index=target.index,
        ),
    }
    for label, part in costs.groupby("label", sort=True):
        part = part.set_index("budget")
        rows[label] = pd.Series(
            [
                f"{_k(row.samples_ratio, row.samples_bound)} ("
                f"{_BOUNDS.get(row.samples_bound, '')}{_cost(row.samples, '{:.3g}')}) · "
                f"{_k(row.flops_ratio, row.flops_bound)}"
                for row in part.itertuples()
            ],
            index=part.index,
        )
    table = pd.DataFrame(rows).T.fillna("–")
    table.columns = [f"N={budget}" for budget in table.columns]
    table.index.name = f"k vs {baseline}"
    return markdown_table(table)


def _efficiency_section(frame: pd.DataFrame) -> list[str]:
    """What each strategy label spends to reach best-of-N's accuracy, and what early stopping saved."""
    md = [f"## {EFFICIENCY}", ""]
    if not (frame["strategy"] == "best_of_n").any():
        return md + [
            "This section needs `best_of_n` in the sweep's strategies: best-of-N's accuracy at each budget "
            "is the target every other strategy is measured against.",
            "",
        ]
    costs = cost_at_equal_accuracy(frame)
    md += [
        "For each best-of-N label (one per selection mode) and budget N, the target is best-of-N's accuracy at N. "
        "Every other label with the same selection mode is placed on its curve of accuracy against the compute it "
        "actually spent per question (the mean of the `samples` column, as the scheduler counted it, and the mean "
        "total FLOPs), and the compute at which it reaches the target is interpolated on a log2 axis between its "
        "measured budgets. A cell reads `k in samples (samples needed) · k in FLOPs`, k being that compute ÷ "
        "best-of-N's at N: k < 1 means cheaper than best-of-N, k > 1 dearer. '≤ k': the label already reaches the "
        "target at its smallest budget, so it may be cheaper still; '> k': it never reached the target in this "
        "sweep, k being its largest measured compute, so the true cost is higher; '–': unknown (e.g. no FLOPs "
        "recorded). Samples are those spent, not the nominal budget N: early stopping is charged only the rounds "
        "it ran, while tree searches (beam, dvts, rebase, particle filter) count step-level generations, more "
        "than N; FLOPs (generator + verifier) weigh generations of different lengths and are the fairer "
        "comparison where the sweep recorded them.",
        "",
    ]
    if costs.empty:
        md += ["No other strategy label shares a selection mode with a graded best-of-N label: nothing to compare.", ""]
    for baseline, part in costs.groupby("baseline", sort=True):
        md += [f"### Same selection as `{baseline}`", "", _equal_accuracy_table(baseline, part), ""]
    savings = early_stop_savings(frame)
    if not savings.empty:
        table = pd.DataFrame(
            {
                "nominal budget": savings["budget"].to_numpy(),
                "mean samples spent": savings["samples"].map(lambda v: _cost(v, "{:.3g}")).to_numpy(),
                "full inner run spends": savings["full_samples"].map(lambda v: _cost(v, "{:.3g}")).to_numpy(),
                "saved": savings["saved"].map(lambda v: "–" if pd.isna(v) else f"{100 * v:.0f} %").to_numpy(),
            },
            index=pd.Index(
                [f"{config} N={budget}" for config, budget in zip(savings["config"], savings["budget"], strict=True)],
                name="early stopping",
            ),
        )
        md += [
            "### Early stopping: samples spent vs nominal budget",
            "",
            "Early stopping runs its inner configuration in rounds and stops once the answers agree, so it spends "
            "at most its nominal budget N. 'saved' is 1 − spent ÷ what the full inner search spends at N: exactly "
            "N for best-of-N, otherwise the sweep's mean samples of the inner configuration at N ('–' where the "
            "sweep did not run it). The tables above already place early stopping at the samples it spent.",
            "",
            markdown_table(table),
            "",
        ]
    return md


def _markdown(
    store: RunStore,
    frame: pd.DataFrame,
    graded: pd.DataFrame,
    jobs: pd.DataFrame,
    accuracy: pd.DataFrame,
    coverage: pd.DataFrame,
    bins: pd.Series,
    bin_table: pd.DataFrame | None,
    bin_titles: dict[int, str],
    left_out: tuple[int, int],
    out: Path,
) -> list[str]:
    """The report's sections with their plots (written into `out`), up to the run contents. Accuracy plots use the
    graded rows; coverage and difficulty every finished row's graded candidates."""

    def plot(name: str, title: str, data: pd.DataFrame, **kwargs) -> str:
        plot_curves(out / name, title, data, **kwargs)
        return f"![{title}]({name})"

    acc = {"value": "accuracy", "label": "strategy_label", "ylabel": "accuracy %"}
    config = f" (sweep [config](../{CONFIG}))" if store.exists(CONFIG) else ""
    md = [
        f"# Sweep report: {store.name}",
        "",
        f"Built from the Parquet in `{store.location(RESULTS)}`{config}; nothing was re-run.",
        "",
        "## How to read this",
        "",
        _how_to_read(frame, accuracy, coverage, bins, *left_out),
        "",
    ]

    md += [
        "## Accuracy vs budget",
        "",
        plot("accuracy_vs_budget.png", "Accuracy vs test-time budget", graded, **acc),
        "",
        _by_budget(accuracy, "accuracy % (± s.e.)", _mean_se),
        "",
    ]
    md += _paired_section(graded)
    md += _ties_section(graded)
    md += pool_section(frame)

    md += [
        "## Coverage (pass@N, oracle verifier)",
        "",
        plot(
            "coverage_vs_budget.png",
            "Coverage: any candidate correct (pass@N)",
            jobs,
            value="covered",
            label="search",
            ylabel="coverage %",
        ),
        "",
        "For best-of-N the candidates are all N samples; for beam and lookahead the final beams; for DVTS each "
        "subtree's last M children; for REBASE the N finished solutions; for particle filtering the N final "
        "particles; for early stopping every round's candidates.",
        "",
        _by_budget(coverage, "coverage % (± s.e.)", _mean_se),
        "",
    ]

    md += _revision_section(frame, out)

    md += ["## By difficulty (oracle pass@1 bins)", ""]
    if bin_table is None:
        md += [
            "No best-of-N candidates in this run, so no oracle difficulty bins: add `best_of_n` to the sweep's "
            "strategies to get them.",
            "",
        ]
    else:
        md += [
            plot(
                "accuracy_by_difficulty.png",
                "Accuracy vs budget per difficulty bin",
                graded.join(bins, "unique_id"),
                facets=("bin", bin_titles),
                **acc,
            ),
            "",
            f"Bins: each question's pass@1 over all its graded best-of-N samples (all budgets and seeds, each "
            f"sample once; {samples_note(oracle_samples(frame))}), cut into {N_BINS} rank quantiles with each "
            f"group of tied pass@1 kept whole in one bin (the quantile of its middle rank): the rule the deployed "
            f"policy uses (`ttsearch optimize`). Bin 1 is the easiest; {bins.nunique()} bins here.",
            "",
            markdown_table(bin_table),
            "",
        ]
        predicted = _predicted(frame)
        if predicted is not None:
            k = predicted.estimation_samples
            md += [
                f"Predicted bins (mean verifier score of {k} best-of-N samples per question, no ground truth"
                + (", the default 16 capped by the largest best-of-N job" if predicted.capped else "")
                + ") sort the questions by their pass@1 over every sample as follows (decreasing = well sorted):",
                "",
                markdown_table(
                    bin_sorting(oracle_pass_at_1(frame), {"oracle": bins, "predicted": predicted.bins}, bins.index)
                ),
                "",
            ]

    per_level = frame.groupby("level")["unique_id"].nunique()
    levels = {lvl: f"{f'MATH level {lvl}' if lvl else 'level unknown'} ({n} q.)" for lvl, n in per_level.items()}
    md += [
        "## By MATH level",
        "",
        plot("accuracy_by_level.png", "Accuracy vs budget per MATH level", graded, facets=("level", levels), **acc),
        "",
    ]

    md += [
        "## Compute",
        "",
        plot(
            "accuracy_vs_tokens.png",
            "Accuracy vs generated tokens",
            graded,
            x="generated_tokens",
            xlabel="mean generated tokens per problem",
            **acc,
        ),
        "",
    ]
    if "total_flops" in frame and frame["total_flops"].notna().any():
        md += [
            plot(
                "accuracy_vs_flops.png",
                "Accuracy vs inference FLOPs",
                graded,
                x="total_flops",
                xlabel="mean FLOPs per problem",
                **acc,
            ),
            "",
        ]
    for column, title, fmt in COST_COLUMNS:
        if column in jobs and jobs[column].notna().any():
            means = jobs.groupby(["search", "budget"])[column].mean().rename("mean").reset_index()
            means = means.rename(columns={"search": "label"})
            md += [_by_budget(means, title, lambda row, f=fmt: f.format(row["mean"])), ""]
    return md + _efficiency_section(frame)
