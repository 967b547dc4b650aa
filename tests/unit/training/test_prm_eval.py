"""`ttsearch.training.prm_eval`: ProcessBench's protocol and the step AUC on planted scores, the loaders' errors and the
report, with no Ray and no model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from tests.fixtures import label_row, question_ids, write_labels, write_subset
from tests.fixtures import processbench_item as item
from ttsearch.config import ConfigError, load_config
from ttsearch.search.requests import Score, ScoreResult
from ttsearch.sweep.data import DataError, load_first_error_items
from ttsearch.training.prm_eval import (
    LABELS,
    check_eval_config,
    evenly_spaced,
    format_prm_eval,
    load_heldout_solutions,
    predicted_error,
    prm_eval_report,
    score_steps,
    scoring_jobs,
    step_auc,
    subset_metrics,
)

# -- ProcessBench's protocol -------------------------------------------------------------------


def test_f1_on_planted_predictions_matches_the_hand_computed_value():
    # 3 erroneous items, first errors at steps 0, 2, 1: the first two found exactly, the third not at all -> 2/3.
    # 2 error-free items: one left alone (-1), one flagged at step 1 -> 1/2. F1 = 2·(2/3)(1/2) / (2/3 + 1/2) = 4/7.
    scores = [(0.2, 0.9, 0.9), (0.9, 0.6, 0.1), (0.9, 0.9, 0.9), (0.9, 0.8, 0.7), (0.9, 0.3, 0.9)]
    labels = [0, 2, 1, -1, -1]
    predictions = [predicted_error(step_scores, 0.5) for step_scores in scores]
    assert predictions == [0, 2, -1, -1, 1]
    metrics = subset_metrics(labels, predictions)
    assert (metrics.num_items, metrics.num_erroneous, metrics.num_correct) == (5, 3, 2)
    assert metrics.error_accuracy == pytest.approx(2 / 3)
    assert metrics.correct_accuracy == pytest.approx(1 / 2)
    assert metrics.f1 == pytest.approx(4 / 7)


def test_a_wrong_step_found_too_late_or_too_early_counts_as_a_miss():
    assert subset_metrics([1, 1, -1], [2, 0, -1]).error_accuracy == 0.0


def test_f1_is_0_when_either_accuracy_is_0_and_undefined_without_both_kinds():
    assert subset_metrics([0, -1], [-1, -1]).f1 == 0.0  # flags nothing: all error-free right, no error found
    assert subset_metrics([0, -1], [0, 0]).f1 == 0.0  # flags everything
    assert subset_metrics([0, -1], [1, 0]).f1 == 0.0  # both accuracies 0: no division by zero
    only_erroneous = subset_metrics([0, 1], [0, 1])
    assert only_erroneous.correct_accuracy is None and only_erroneous.f1 is None
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        subset_metrics([0, 1], [0])


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ((0.9, 0.5, 0.4), 2),  # a score equal to the threshold is not below it
        ((0.49, 0.1), 0),  # the first step below, not the lowest
        ((0.5, 0.5), -1),
        ((), -1),
    ],
)
def test_predicted_error_is_the_first_step_strictly_below_the_threshold(scores, expected):
    assert predicted_error(scores, 0.5) == expected


def test_step_auc_on_planted_scores():
    perfect = step_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    assert perfect.auc == 1.0 and perfect.num_steps == 4 and perfect.positive_share == 0.5
    assert step_auc([0.1, 0.9], [True, False]).auc == 0.0
    assert step_auc([0.2, 0.6, 0.4], [False, True, True]).auc == 1.0
    assert step_auc([0.5, 0.5], [True, False]).auc == 0.5  # a tie ranks neither way
    one_class = step_auc([0.2, 0.7], [True, True])
    assert one_class.auc is None and one_class.positive_share == 1.0
    assert step_auc([], []).auc is None and step_auc([], []).positive_share is None


# -- the config checks before any replica starts -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["eval_prm.processbench=[]"],
            "give ProcessBench subset files, a `ttsearch label` output_dir or both, got neither",
        ),
        (["eval_prm.processbench=[a/gsm8k.json]", "verifier.kind=oracle"], "'verifier.kind': .*'oracle' is model-free"),
        (["eval_prm.labels=runs/label", "verifier.kind=hash"], "'hash' is model-free"),
        (["eval_prm.labels=runs/label", "verifier.backend=generator"], "'verifier.backend': eval-prm starts no gen"),
        (["eval_prm.processbench=[a/math.json,b/math.json]"], r"\['math'\] appear more than once"),
    ],
)
def test_check_eval_config_refuses_what_eval_prm_cannot_evaluate(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_eval_config(load_config(overrides=overrides))


# -- held-out labels ---------------------------------------------------------------------------


def test_heldout_solutions_are_the_held_out_rows_cut_to_their_labelled_steps(tmp_path):
    held, kept = question_ids(0.5, True, 2), question_ids(0.5, False, 1)
    rows = [
        label_row(held[0], ["a", "b", "c"], [True, False]),  # the third step has no label: not scored
        label_row(held[0], ["a", "d"], [None, None], sample=1),  # no label at all: left out
        label_row(held[1], ["e", "f"], [None, True]),
        label_row(kept[0], ["g"], [True]),  # trained on: left out
    ]
    solutions = load_heldout_solutions(str(write_labels(tmp_path, rows)), 0.5)
    assert [(s.unique_id, s.sample, s.steps, s.hard_labels) for s in solutions] == [
        (held[0], 0, ("a", "b"), (True, False)),
        (held[1], 0, ("e", "f"), (None, True)),
    ]
    assert solutions[0].question == f"Question {held[0]}?"


def test_heldout_solutions_refuse_a_split_that_holds_nothing_out(tmp_path):
    location = str(write_labels(tmp_path / "labels", [label_row(uid, ["a"], [True]) for uid in ("q0", "q1")]))
    held_out_none = r"no labelled steps among the questions held out at prm\.heldout_fraction=0\.0 \(2 questions"
    with pytest.raises(DataError, match=held_out_none):
        load_heldout_solutions(location, 0.0)
    with pytest.raises(DataError, match="eval_prm.labels: .*holds no `ttsearch label` output"):
        load_heldout_solutions(str(tmp_path / "nothing"), 0.5)


# -- the jobs and the report -------------------------------------------------------------------


def test_score_steps_reads_every_step_once_and_checks_the_count():
    score = Score("q?", ("a", "b"), system="sys")
    run = score_steps(score)
    assert run.send(None) == [score]
    with pytest.raises(StopIteration) as stop:
        run.send([ScoreResult(step_scores=(0.7, 0.2), tokens=5)])
    assert stop.value.value == (0.7, 0.2)
    short = score_steps(score)
    short.send(None)
    with pytest.raises(ValueError, match="returned 1 step scores for 2 steps"):
        short.send([ScoreResult(step_scores=(0.7,))])


def test_scoring_jobs_cover_every_item_and_solution_under_the_search_system_prompt(tmp_path):
    subsets = {"toy": load_first_error_items(write_subset(tmp_path / "toy.json", [item(0, 0), item(1, -1)]))}
    [held] = question_ids(0.5, True, 1)
    solutions = load_heldout_solutions(str(write_labels(tmp_path / "l", [label_row(held, ["x"], [True])])), 0.5)
    jobs = scoring_jobs(subsets, solutions, system="Be brief.")
    assert [key for key, _ in jobs] == [("processbench/toy", 0), ("processbench/toy", 1), (LABELS, 0)]
    first = [run.send(None)[0] for _, run in jobs]
    assert first[1] == Score("What is 1 + 1?", subsets["toy"][1].steps, system="Be brief.")
    assert first[2] == Score(f"Question {held}?", ("x",), system="Be brief.")


def test_report_scores_planted_results_and_keeps_failed_items_out_of_the_metrics(tmp_path):
    subset_path = write_subset(tmp_path / "toy.json", [item(0, 0), item(1, 2), item(2, 1), item(3, -1), item(4, -1)])
    subsets = {"toy": load_first_error_items(subset_path)}
    [held] = question_ids(0.5, True, 1)
    labels = str(write_labels(tmp_path / "labels", [label_row(held, ["a", "b", "c"], [True, None, False])]))
    solutions = load_heldout_solutions(labels, 0.5)
    cfg = load_config(
        overrides=[
            f"eval_prm.processbench=[{subset_path}]",
            f"eval_prm.labels={labels}",
            "prm.heldout_fraction=0.5",
            "verifier.kind=lm_judge",
        ]
    )
    planted = [(0.2, 0.9, 0.9), (0.9, 0.6, 0.1), (0.9, 0.9, 0.9), (0.9, 0.8, 0.7), (0.9, 0.3, 0.9)]
    scores = {("processbench/toy", i): s for i, s in enumerate(planted)} | {(LABELS, 0): (0.8, 0.1, 0.3)}
    report = prm_eval_report(cfg, subsets, solutions, scores, {}, verifier_tokens=123, wall_s=1.5)
    toy = report.subsets["toy"]
    assert (toy.error_accuracy, toy.correct_accuracy, toy.f1) == pytest.approx((2 / 3, 1 / 2, 4 / 7))
    assert report.mean_f1 == pytest.approx(4 / 7)
    assert report.step_auc is not None and (report.step_auc.num_steps, report.step_auc.auc) == (2, 1.0)
    assert report.backend == "vllm"  # "auto" without a generator: an engine of its own

    markdown = format_prm_eval(report)
    assert "| toy | 5 | 3 | 2 | 66.7 | 50.0 | 57.1 | 0 |" in markdown
    assert "lm_judge verifier (embedded, vllm)" in markdown and "below 0.5 is the predicted first error" in markdown
    assert "2 labelled steps of 1 solutions, 50.0% positive" in markdown and "**AUC 1.000**" in markdown
    assert "read 123 tokens in 1.5 s; 0 items failed" in markdown

    # The item whose error went unfound fails instead: it leaves the metrics and is listed.
    del scores["processbench/toy", 2]
    failed = {("processbench/toy", 2): ("problem", "Traceback ...\nValueError: too long")}
    report = prm_eval_report(cfg, subsets, solutions, scores, failed, verifier_tokens=0, wall_s=0.0)
    toy = report.subsets["toy"]
    assert (toy.num_items, toy.num_erroneous, toy.error_accuracy, toy.num_failed) == (4, 2, 1.0, 1)
    assert [(f.source, f.item, f.failure) for f in report.failed] == [("processbench/toy", "toy-2", "problem")]
    markdown = format_prm_eval(report)
    assert "| toy | 4 | 2 | 2 | 100.0 | 50.0 | 66.7 | 1 |" in markdown
    assert "- processbench/toy toy-2 (problem): ValueError: too long" in markdown
    assert json.loads(json.dumps(asdict(report)))["subsets"]["toy"]["num_failed"] == 1


def test_report_of_several_subsets_averages_f1_and_says_n_a_where_undefined(tmp_path):
    subsets = {
        "a": load_first_error_items(write_subset(tmp_path / "a.json", [item(0, 0), item(1, -1)])),
        "b": load_first_error_items(write_subset(tmp_path / "b.json", [item(0, 0)])),
    }
    cfg = load_config(overrides=["eval_prm.processbench=[a.json,b.json]", "verifier.kind=qwen_prm"])
    scores = {
        ("processbench/a", 0): (0.1, 0.9, 0.9),
        ("processbench/a", 1): (0.9,) * 3,
        ("processbench/b", 0): (0.1,) * 3,
    }
    report = prm_eval_report(cfg, subsets, [], scores, {}, verifier_tokens=0, wall_s=0.0)
    assert report.subsets["a"].f1 == 1.0 and report.subsets["b"].f1 is None and report.mean_f1 is None
    markdown = format_prm_eval(report)
    assert "| b | 1 | 1 | 0 | 100.0 | n/a | n/a | 0 |" in markdown and "| average |  |  |  |  |  | n/a |  |" in markdown
    assert "Step ROC AUC" not in markdown and report.step_auc is None
    both = replace(report, subsets={"a": report.subsets["a"], "c": report.subsets["a"]}, mean_f1=1.0)
    assert "| average |  |  |  |  |  | 100.0 |  |" in format_prm_eval(both)


def test_a_limit_spreads_over_the_subset_so_both_classes_stay():
    labels = [3] * 6 + [-1] * 4  # ordered as ProcessBench's files are: the erroneous solutions first
    picked = evenly_spaced(labels, 4)
    assert picked == [3, 3, 3, -1] and evenly_spaced(labels, None) == labels and evenly_spaced(labels, 20) == labels
