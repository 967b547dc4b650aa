"""The report from synthetic sweep Parquet: files, hand-computed numbers, difficulty bins, errors."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.ticker import LogFormatterSciNotation

from tests.fixtures import (
    BEST_OF_N_SELECTIONS,
    BUDGETS,
    QUESTIONS,
    RIGHT,
    SEEDS,
    beam_rows,
    best_of_n_rows,
    result_row,
    row_settings,
)
from ttsearch.analysis.costs import cost_at_equal_accuracy, early_stop_savings, inner_config
from ttsearch.analysis.curves import difficulty_bins, oracle_pass_at_1
from ttsearch.analysis.render import plot_curves
from ttsearch.analysis.report import build_report
from ttsearch.config import StrategySpec
from ttsearch.sweep.results import REQUIRED_COLUMNS, RESULT_SCHEMA, ResultsError, load_results


def write_results(run_dir: Path, rows: list[dict], schema: pa.Schema = RESULT_SCHEMA, files: int = 2) -> None:
    """Several Parquet files, as Ray Data writes one per block."""
    (run_dir / "results").mkdir(parents=True)
    for part in range(files):
        pq.write_table(pa.Table.from_pylist(rows[part::files], schema=schema), run_dir / "results" / f"{part}.parquet")


def sweep_rows() -> list[dict]:
    rows = [row for uid in QUESTIONS for row in best_of_n_rows(uid) + beam_rows(uid)]
    failed = next(r for r in rows if r["strategy"] == "beam" and r["unique_id"] == "q05" and r["budget"] == 8)
    failed.update(
        correct=False,
        answer=None,
        candidate_answers=[],
        candidate_scores=[],
        candidate_correct=[],
        error="Traceback (most recent call last):\n  ...\nRuntimeError: replica died",
    )
    return rows


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[dict], str]:
    run_dir = tmp_path_factory.mktemp("run")
    rows = sweep_rows()
    write_results(run_dir, rows)
    return run_dir, rows, build_report(run_dir).path.read_text()


def table_row(markdown: str, section: str, label: str) -> list[str]:
    """The cells of `label`'s row in the first table after heading `section`."""
    body = markdown.split(f"## {section}\n", 1)[1]
    line = next(line for line in body.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def mean_and_se(values_per_seed: dict[int, list[bool]]) -> tuple[float, float]:
    """Mean over all problems and seeds; standard error of the per-seed means (%)."""
    every = [v for values in values_per_seed.values() for v in values]
    per_seed = [100 * sum(values) / len(values) for values in values_per_seed.values()]
    return 100 * sum(every) / len(every), statistics.stdev(per_seed) / len(per_seed) ** 0.5


def test_report_writes_every_plot_and_references_it(sweep):
    run_dir, _, markdown = sweep
    pngs = sorted(p.name for p in (run_dir / "report").glob("*.png"))
    assert pngs == [
        "accuracy_by_difficulty.png",
        "accuracy_by_level.png",
        "accuracy_vs_budget.png",
        "accuracy_vs_tokens.png",
        "coverage_vs_budget.png",
    ]
    for name in pngs:
        data = (run_dir / "report" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name
        assert f"]({name})" in markdown
    assert "## How to read this" in markdown


def test_accuracy_table_equals_hand_computed_means(sweep):
    _, rows, markdown = sweep
    for label in ("best_of_n/naive", "best_of_n/weighted", "beam(M=2)/weighted"):
        cells = table_row(markdown, "Accuracy vs budget", label)
        for budget, cell in zip(BUDGETS, cells, strict=True):
            per_seed = {
                seed: [
                    r["correct"]
                    for r in rows
                    if r["strategy_label"] == label
                    and r["budget"] == budget
                    and r["seed"] == seed
                    and r["error"] is None
                ]
                for seed in SEEDS
            }
            mean, se = mean_and_se(per_seed)
            assert cell == f"{mean:.1f} ± {se:.1f}", (label, budget)


def test_coverage_counts_each_search_job_once(sweep):
    _, rows, markdown = sweep
    cells = table_row(markdown, "Coverage (pass@N, oracle verifier)", "best_of_n")
    for budget, cell in zip(BUDGETS, cells, strict=True):
        per_seed = {
            seed: [
                any(r["candidate_correct"])
                for r in rows
                if r["strategy_label"] == "best_of_n/naive" and r["budget"] == budget and r["seed"] == seed
            ]
            for seed in SEEDS
        }
        mean, se = mean_and_se(per_seed)
        assert cell == f"{mean:.1f} ± {se:.1f}", budget


def test_costs_and_errors_are_reported(sweep):
    _, _, markdown = sweep
    assert table_row(markdown, "Compute", "best_of_n") == ["100", "200", "400", "800"]
    assert "| rows with an error (excluded) | 1 |" in markdown
    assert "| RuntimeError: replica died | 1 |" in markdown
    assert "1 error rows (jobs that failed deterministically) are excluded from accuracy" in markdown


def test_difficulty_bins_follow_planted_pass_at_1(sweep):
    run_dir, _, markdown = sweep
    frame = load_results(run_dir)
    pass1 = oracle_pass_at_1(frame)
    assert pass1.to_dict() == pytest.approx({uid: right / 16 for uid, right in RIGHT.items()})
    bins = difficulty_bins(frame)
    assert bins.value_counts().sort_index().to_dict() == {1: 4, 2: 4, 3: 4, 4: 4, 5: 4}
    assert all(bins[uid] == 1 for uid in QUESTIONS[:4]) and all(bins[uid] == 5 for uid in QUESTIONS[-4:])
    assert bins.equals(difficulty_bins(pq.read_table(run_dir / "results")))
    assert "| 1 | 0.875 – 1.000 | 0.953 | 4 |" in markdown  # 16, 16, 15, 14 of 16 right


def test_revisions_rows_add_pass_at_1_by_attempt(sweep, tmp_path):
    assert "## Revisions" not in sweep[2]  # a sweep without revisions has no such section
    # q00..q03: 2 chains of 2 attempts (budget 4); the second attempt of both chains is right on q00 and q01 only.
    rows = [row for uid in QUESTIONS[:4] for row in best_of_n_rows(uid)]
    for i, uid in enumerate(QUESTIONS[:4]):
        flags = [False, i < 2, False, i < 2]
        rows += [
            result_row(
                uid,
                "revisions",
                f"revisions(T=2,w=1)/{sel}",
                4,
                0,
                flags,
                i < 2,
                selection=sel,
                strategy_config="revisions(T=2,w=1)",
                settings=row_settings("revisions", revision_length=2, revision_window=1),
            )
            for sel in ("weighted", "majority")
        ]
    write_results(tmp_path, rows, files=1)
    markdown = build_report(tmp_path).path.read_text()
    assert (tmp_path / "report" / "accuracy_by_attempt.png").stat().st_size > 5000
    assert "](accuracy_by_attempt.png)" in markdown
    # attempt 1: 0 of 8 right; attempt 2: 4 of 8, per question 1, 1, 0, 0 → s.e. 0.577 / √4 = 0.289
    assert table_row(markdown, "Revisions: pass@1 by attempt", "revisions(T=2,w=1) N=4") == ["0.0 ± 0.0", "50.0 ± 28.9"]


def test_pass_at_1_counts_samples_shared_by_selections_once():
    # q: one pool of 2 samples (right, wrong) under two selections; budget 1 is its first sample under three.
    rows = [
        result_row("q", "best_of_n", f"best_of_n/{sel}", 1, 0, [True], True, selection=sel)
        for sel in BEST_OF_N_SELECTIONS
    ]
    rows += [
        result_row("q", "best_of_n", f"best_of_n/{sel}", 2, 0, [True, False], True, selection=sel)
        for sel in ("naive", "weighted")
    ]
    rows.append(result_row("q", "beam", "beam(M=2)/weighted", 2, 0, [True, True], True))  # not a best-of-N sample
    frame = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    assert oracle_pass_at_1(frame)["q"] == pytest.approx(1 / 2)  # not 5/7 (every row) nor 2/3 (every job)


def test_tied_pass_at_1_shares_one_bin():
    # Every question at pass@1 0: no difficulty information, so one bin (rank bins split them by level and hash).
    rows = [row for uid in QUESTIONS for row in best_of_n_rows(uid)]
    for row in rows:
        row["candidate_correct"] = [False] * len(row["candidate_correct"])
    assert difficulty_bins(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)).unique().tolist() == [1]
    # q00..q07 right on every sample, the rest on none: 40 % at 1.0 → two bins, the tie never split.
    for row in rows:
        row["candidate_correct"] = [row["unique_id"] < "q08"] * len(row["candidate_correct"])
    bins = difficulty_bins(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
    assert bins.to_dict() == {uid: 1 if uid < "q08" else 2 for uid in QUESTIONS}


def test_without_best_of_n_the_difficulty_plot_is_skipped_and_flops_are_plotted(tmp_path):
    rows = [row | {"total_flops": 1e9 * row["budget"]} for uid in QUESTIONS[:6] for row in beam_rows(uid)]
    write_results(tmp_path, rows, RESULT_SCHEMA, files=1)
    markdown = build_report(tmp_path).path.read_text()
    report = tmp_path / "report"
    assert not (report / "accuracy_by_difficulty.png").exists()
    assert "No best-of-N candidates in this run" in markdown
    assert (report / "accuracy_vs_flops.png").stat().st_size > 5000 and "](accuracy_vs_flops.png)" in markdown
    assert "| mean FLOPs per problem |" in markdown


def test_missing_run_dir_is_named(tmp_path):
    with pytest.raises(ResultsError, match=re.escape(str(tmp_path / "nope"))):
        build_report(tmp_path / "nope")


@pytest.mark.parametrize("make_results_dir", [False, True])
def test_run_without_parquet_names_the_results_dir(tmp_path, make_results_dir):
    if make_results_dir:
        (tmp_path / "results").mkdir()
    with pytest.raises(ResultsError, match=re.escape(f"no Parquet files in {tmp_path / 'results'}")):
        load_results(tmp_path)


def test_parquet_missing_columns_names_them_and_the_dir(tmp_path):
    rows = best_of_n_rows("q00")
    keep = [c for c in REQUIRED_COLUMNS if c not in ("candidate_correct", "wall_s")]
    write_results(tmp_path, [{c: r[c] for c in keep} for r in rows], pa.schema([RESULT_SCHEMA.field(c) for c in keep]))
    with pytest.raises(ResultsError, match="wall_s, candidate_correct") as error:
        build_report(tmp_path)
    assert str(tmp_path / "results") in str(error.value)


def test_ungraded_rows_are_left_out_of_accuracy_and_counted(tmp_path):
    # q00..q03, best-of-N/naive at budget 1, seed 0: right, right, ungraded, wrong → accuracy 2/3, not 2/4.
    rows = []
    for uid, verdict in zip(QUESTIONS[:4], (True, True, None, False), strict=True):
        rows.append(result_row(uid, "best_of_n", "best_of_n/naive", 1, 0, [verdict], verdict, selection="naive"))
        rows.append(result_row(uid, "best_of_n", "best_of_n/naive", 1, 1, [True], True, selection="naive"))
    write_results(tmp_path, rows, files=1)
    written = build_report(tmp_path)
    markdown = written.path.read_text()
    assert written.ungraded_rows == 1
    assert "| rows ungraded (excluded from accuracy) | 1 |" in markdown
    assert "1 ungraded rows (grading failed twice: no verdict) are excluded from every accuracy" in markdown
    mean, se = mean_and_se({0: [True, True, False], 1: [True] * 4})
    assert table_row(markdown, "Accuracy vs budget", "best_of_n/naive") == [f"{mean:.1f} ± {se:.1f}"]
    # Coverage: q02's seed-0 job holds only an ungraded candidate, so it is not covered (any candidate True).
    cov, cov_se = mean_and_se({0: [True, True, False, False], 1: [True] * 4})
    assert table_row(markdown, "Coverage (pass@N, oracle verifier)", "best_of_n") == [f"{cov:.1f} ± {cov_se:.1f}"]
    assert oracle_pass_at_1(load_results(tmp_path))["q02"] == 1.0  # its one graded sample


def test_run_contents_count_configurations_and_labels_apart(sweep):
    _, _, markdown = sweep
    assert "| strategy configurations | 2 |" in markdown  # best_of_n, beam(M=2)
    assert "| strategy labels (configuration × selection) | 4 |" in markdown  # + naive, majority


def test_report_states_samples_per_question_and_shows_predicted_bins(sweep):
    _, _, markdown = sweep
    assert "each sample once; 16 samples per question" in markdown  # 2 seeds × the 8 of the largest budget
    assert "Predicted bins (mean verifier score of 8 best-of-N samples per question" in markdown
    assert "the default 16 capped by the largest best-of-N job" in markdown


def test_y_range_fits_accuracies_near_90_percent():
    rows = [
        {"label": label, "budget": budget, "seed": seed, "unique_id": f"q{i}", "correct": i < right}
        for label, base in (("A", 85), ("B", 89))
        for budget, extra in ((1, 0), (4, 3))
        for seed in (0, 1)
        for i in range(100)
        for right in [base + extra + seed]
    ]
    figure = plot_curves(None, "t", pd.DataFrame(rows), value="correct", label="label", ylabel="%")
    low, high = figure.axes[0].get_ylim()
    assert 80 <= low < 85 and 93 < high <= 95  # 85–93 % with error bars, not squashed into [0, 100]
    zero = plot_curves(None, "t", pd.DataFrame(rows).assign(correct=False), value="correct", label="label", ylabel="%")
    low, high = zero.axes[0].get_ylim()
    assert low < 0 < high <= 6  # zero-accuracy points stay visible above the bottom edge


def test_token_and_flops_axes_are_scientific_and_the_budget_axis_is_log2():
    rows = [
        {"label": "A", "budget": b, "seed": 0, "unique_id": "q", "correct": True, "total_flops": 3e11 * b}
        for b in (1, 4, 16)
    ]
    flops = plot_curves(None, "t", pd.DataFrame(rows), value="correct", label="label", ylabel="%", x="total_flops")
    axis = flops.axes[0].xaxis
    assert axis.get_scale() == "log" and axis._scale.base == 10
    assert isinstance(axis.get_major_formatter(), LogFormatterSciNotation)
    budget = plot_curves(None, "t", pd.DataFrame(rows), value="correct", label="label", ylabel="%")
    assert budget.axes[0].xaxis._scale.base == 2
    assert [t.get_text() for t in budget.axes[0].get_xticklabels()] == ["1", "4", "16"]


def efficiency_rows() -> list[dict]:
    """10 questions, one seed. best_of_n/weighted: 20/40/60/80 % at N = 1/2/4/8, spending N samples at 1e9 FLOPs
    each. rebase: 40 % at 2 samples, 80 % at 4 (1.5e9 FLOPs each). particle_filter: never above 50 %.
    early_stop over best-of-N: 60 % at N=4 spending 3 on average (half stop after one round of 2), 80 % at N=8
    spending 4; over beam: 6 of beam's 12 step samples at N=4; over dvts: dvts not swept."""
    rows = []

    def add(
        config: str,
        budget: int,
        right: int,
        spent,
        flops_per_sample: float = 1e9,
        selection: str = "weighted",
        settings: str | None = None,
    ) -> None:
        for i, uid in enumerate(QUESTIONS[:10]):
            samples = spent(i) if callable(spent) else spent
            rows.append(
                result_row(
                    uid,
                    config.split("(")[0],
                    f"{config}/{selection}",
                    budget,
                    0,
                    [i < right] * max(1, budget),
                    i < right,
                    selection=selection,
                    samples=samples,
                    total_flops=flops_per_sample * samples,
                    strategy_config=config,
                    **({} if settings is None else {"settings": settings}),
                )
            )

    for budget, right in ((1, 2), (2, 4), (4, 6), (8, 8)):
        add("best_of_n", budget, right, budget)
    for budget, right in ((1, 4), (2, 8)):
        add("rebase(T=0.2)", budget, right, 2 * budget, 1.5e9)
        add("rebase(T=0.2)", budget, right, 2 * budget, 1.5e9, selection="majority")  # no best-of-N/majority
    for budget, right in ((1, 1), (2, 3), (4, 5)):
        add("particle_filter(T=1)", budget, right, 3 * budget)
    over_best_of_n = row_settings("early_stop", early_stop_round=2)
    add("early_stop(best_of_n,r=2,s=0.75)", 4, 6, lambda i: 2 if i < 5 else 4, settings=over_best_of_n)
    add("early_stop(best_of_n,r=2,s=0.75)", 8, 8, 4, settings=over_best_of_n)
    add("beam(M=2)", 4, 5, 12)
    add(
        "early_stop(beam(M=2),r=2,s=0.75)",
        4,
        5,
        6,
        settings=row_settings("early_stop", early_stop_round=2, early_stop_inner="beam"),
    )
    add(
        "early_stop(dvts(M=2),r=2,s=0.75)",
        4,
        5,
        6,
        settings=row_settings("early_stop", early_stop_round=2, early_stop_inner="dvts"),
    )
    return rows


def equal_accuracy(rows: list[dict]) -> pd.DataFrame:
    frame = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA).to_pandas()
    return cost_at_equal_accuracy(frame).set_index(["label", "budget"])


def test_a_strategy_that_reaches_best_of_n_with_fewer_samples_costs_less():
    costs = equal_accuracy(efficiency_rows())
    rebase = costs.loc["rebase(T=0.2)/weighted"]
    assert set(costs["baseline"]) == {"best_of_n/weighted"}
    assert "rebase(T=0.2)/majority" not in costs.index.get_level_values("label")  # no best-of-N/majority to match
    assert rebase.at[4, "accuracy"] == pytest.approx(60.0)
    # 60 % lies halfway (log2) between 2 samples (40 %) and 4 (80 %): 2√2 samples vs best-of-N's 4.
    assert rebase.at[4, "samples"] == pytest.approx(2 * 2**0.5) and rebase.at[4, "samples_bound"] == "="
    assert rebase.at[4, "samples_ratio"] == pytest.approx(2**0.5 / 2)
    assert rebase.at[4, "flops_ratio"] == pytest.approx(3e9 * 2**0.5 / 4e9)  # dearer in FLOPs: 1.5e9 per sample
    assert (rebase.at[8, "samples_ratio"], rebase.at[8, "samples_bound"]) == (pytest.approx(0.5), "=")
    assert (rebase.at[1, "samples_ratio"], rebase.at[1, "samples_bound"]) == (pytest.approx(2.0), "<=")


def test_a_strategy_that_never_reaches_best_of_n_is_a_lower_bound():
    particle = equal_accuracy(efficiency_rows()).loc["particle_filter(T=1)/weighted"]
    assert particle.loc[[4, 8], "samples_bound"].tolist() == [">", ">"]
    assert particle.loc[[4, 8], "samples"].tolist() == [12, 12]  # its largest measured cost
    assert particle.loc[[4, 8], "samples_ratio"].tolist() == pytest.approx([3.0, 1.5])
    assert particle.at[1, "samples_ratio"] == pytest.approx(3 * 2**0.5)  # 20 % between 10 % (3) and 30 % (6)


def test_early_stopping_is_compared_at_the_samples_it_spent():
    rows = efficiency_rows()
    stop = equal_accuracy(rows).loc["early_stop(best_of_n,r=2,s=0.75)/weighted"]
    # Its curve: 60 % at 3 samples spent (nominal 4), 80 % at 4 spent (nominal 8); at nominal budgets k would be 1.
    assert (stop.at[4, "samples_ratio"], stop.at[4, "samples_bound"]) == (pytest.approx(0.75), "<=")
    assert (stop.at[8, "samples_ratio"], stop.at[8, "samples_bound"]) == (pytest.approx(0.5), "=")
    savings = early_stop_savings(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA).to_pandas())
    savings = savings.set_index(["config", "budget"])
    assert savings.loc[
        ("early_stop(best_of_n,r=2,s=0.75)", 4), ["samples", "full_samples", "saved"]
    ].tolist() == pytest.approx([3.0, 4.0, 0.25])
    assert savings.at[("early_stop(best_of_n,r=2,s=0.75)", 8), "saved"] == pytest.approx(0.5)
    assert savings.at[("early_stop(beam(M=2),r=2,s=0.75)", 4), "saved"] == pytest.approx(0.5)  # 6 of 12
    assert pd.isna(savings.at[("early_stop(dvts(M=2),r=2,s=0.75)", 4), "saved"])  # dvts not swept


@pytest.mark.parametrize(
    ("spec", "inner"),
    [
        (StrategySpec.of("early_stop", early_stop_inner="best_of_n"), "best_of_n"),
        (StrategySpec.of("early_stop", early_stop_inner="beam", beam_width=4), "beam(M=4)"),
        (StrategySpec.of("early_stop", aggregation="min"), "best_of_n/min"),
        (
            StrategySpec.of("early_stop", early_stop_inner="lookahead", beam_width=4, lookahead=2, aggregation="prod"),
            "lookahead(M=4,k=2)/prod",
        ),
        (StrategySpec.of("early_stop", early_stop_inner="revisions", revision_length=2), "revisions(T=2,w=4)"),
        (StrategySpec.of("beam", beam_width=4), None),
    ],
)
def test_inner_config_reads_the_configuration_inside_early_stop_from_its_settings(spec, inner):
    row = pd.Series(
        {"strategy": spec.name, "aggregation": spec.aggregation, "settings": json.dumps(spec.filled_settings())}
    )
    assert inner_config(row) == inner


def test_report_has_the_efficiency_section(tmp_path, sweep):
    write_results(tmp_path, efficiency_rows(), files=1)
    markdown = build_report(tmp_path).path.read_text()
    section = "Efficiency: compute to reach best-of-N's accuracy"
    assert f"## {section}\n" in markdown and "k < 1 means cheaper" in markdown
    table = "Same selection as `best_of_n/weighted`"
    assert table_row(markdown, table, "best-of-N accuracy %") == ["20.0", "40.0", "60.0", "80.0"]
    assert table_row(markdown, table, "best-of-N mean samples · FLOPs") == [
        "1 · 1e+09",
        "2 · 2e+09",
        "4 · 4e+09",
        "8 · 8e+09",
    ]
    assert table_row(markdown, table, "rebase(T=0.2)/weighted") == [
        "≤ 2.00 (≤ 2) · ≤ 3.00",
        "≤ 1.00 (≤ 2) · ≤ 1.50",
        "0.71 (2.83) · 1.06",
        "0.50 (4) · 0.75",
    ]
    assert table_row(markdown, table, "particle_filter(T=1)/weighted")[3] == "> 1.50 (> 12) · > 1.50"
    assert "rebase(T=0.2)/majority" not in markdown.split(f"## {section}")[1]
    early = "Early stopping: samples spent vs nominal budget"
    assert table_row(markdown, early, "early_stop(best_of_n,r=2,s=0.75) N=4") == ["4", "3", "4", "25 %"]
    assert table_row(markdown, early, "early_stop(dvts(M=2),r=2,s=0.75) N=4") == ["4", "6", "–", "–"]
    # The main sweep recorded no FLOPs and has no early stopping: FLOPs read "–" and no savings table.
    assert table_row(sweep[2], section, "beam(M=2)/weighted")[0] == "> 8.00 (> 8) · –"
    assert early not in sweep[2]


def test_efficiency_section_without_best_of_n_says_what_it_needs(tmp_path):
    write_results(tmp_path, [row for uid in QUESTIONS[:4] for row in beam_rows(uid)], files=1)
    markdown = build_report(tmp_path).path.read_text()
    assert "This section needs `best_of_n` in the sweep's strategies" in markdown


def test_report_states_which_differences_are_measurable(tmp_path):
    # 20 questions at N=1: naive right on all, weighted on all but q19, majority on q00..q09 only.
    right = {"naive": 20, "weighted": 19, "majority": 10}
    rows = [
        result_row(uid, "best_of_n", f"best_of_n/{sel}", 1, 0, [i < n], i < n, selection=sel)
        for sel, n in right.items()
        for i, uid in enumerate(QUESTIONS)
    ]
    write_results(tmp_path, rows, files=1)
    markdown = build_report(tmp_path).path.read_text()
    section = markdown.split("## Which differences are measurable\n", 1)[1].split("\n## ", 1)[0]
    assert "paired bootstrap over the same questions, 10,000 resamples, seed 0" in section
    # One question in 20 is no verdict: its interval reaches 0. Ten in 20 are.
    assert re.search(
        r"- N=1, against best_of_n/naive \(100\.0 %\): less accurate: best_of_n/majority \(-50\.0 points, "
        r"95 % CI -[0-9.]+ to -[1-9][0-9.]*, 20 questions\); no measurable difference: best_of_n/weighted "
        r"\(-5\.0 points, 95 % CI -[0-9.]+ to \+0\.0, 20 questions\)\.",
        section,
    ), section


def test_score_ties_are_counted_with_the_accuracy_range_they_allow(tmp_path, sweep):
    # q00..q03 best-of-N. Weighted at N=2, seed 0: q00 and q01 tie a right and a wrong choice (0.5, range 0–1).
    rows = [row for uid in QUESTIONS[:4] for row in best_of_n_rows(uid)]
    for row in rows:
        tied = row["strategy_label"] == "best_of_n/weighted" and (row["budget"], row["seed"]) == (2, 0)
        tied = tied and row["unique_id"] in ("q00", "q01")
        value = 0.5 if tied else float(row["correct"])
        row |= {"accuracy": value, "accuracy_low": 0.0 if tied else value, "accuracy_high": 1.0 if tied else value}
        row["pool_budget"] = row["budget"]  # rows with their estimate columns (else read as an older file's)
    write_results(tmp_path, rows, files=1)
    markdown = build_report(tmp_path).path.read_text()
    # The other 6 weighted N=2 rows: all right (q00..q03 have pass@1 ≥ 26/30, and 2 · right ≥ 2 wins).
    others = sum(r["correct"] for r in rows if r["strategy_label"] == "best_of_n/weighted" and r["budget"] == 2)
    others -= sum(r["correct"] for r in rows if r["accuracy_low"] != r["accuracy_high"])
    low, high = 100 * others / 8, 100 * (others + 2) / 8
    assert table_row(markdown, "Score ties", "best_of_n/weighted")[1] == f"2 of 8: {low:.1f} – {high:.1f}"
    assert table_row(markdown, "Score ties", "best_of_n/weighted")[0] == "0 of 8: 100.0 – 100.0"
    assert "| best_of_n/naive |" not in markdown.split("## Score ties", 1)[1].split("\n## ", 1)[0]
    assert "2 of 96 graded rows had several top-scored choices" in markdown
    # Accuracy counts each tie at its expectation: 0.5 for each tied row.
    expected = 100 * (others + 1) / 8
    assert table_row(markdown, "Accuracy vs budget", "best_of_n/weighted")[1].startswith(f"{expected:.1f}")
    assert "No graded row had tied top choices" in sweep[2]  # rows written before the columns: no ties
