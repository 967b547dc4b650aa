"""`ttsearch eval-prm` end to end: a tiny ProcessBench subset and a tiny label run scored by the session's LM-judge
replicas through one scheduler run, eval.md and eval.json written."""

from __future__ import annotations

import json

import pytest
from ttsearch.pipelines.eval_prm import run_eval_prm

from tests.fixtures import label_row, question_ids, write_labels, write_subset
from ttsearch.config import load_config
from ttsearch.training.prm_eval import format_prm_eval

PROCESSBENCH = [
    {
        "id": "toy-0",
        "generator": "hand",
        "problem": "What is 2 + 3 * 4?",
        "final_answer_correct": False,
        "label": 0,
        "steps": ["First, 2 + 3 = 5.", "Then 5 * 4 = 20.", "The answer is \\boxed{20}."],
    },
    {
        "id": "toy-1",
        "generator": "hand",
        "problem": "What is 2 + 3 * 4?",
        "final_answer_correct": True,
        "label": -1,
        "steps": ["Multiplication comes first: 3 * 4 = 12.", "Then 2 + 12 = 14.", "The answer is \\boxed{14}."],
    },
    {
        "id": "toy-2",
        "generator": "hand",
        "problem": "Tom has 3 apples and buys 2 more. How many?",
        "final_answer_correct": False,
        "label": 1,
        "steps": ["He starts with 3 apples.", "3 + 2 = 6.", "\\boxed{6}"],
    },
    {
        "id": "toy-3",
        "generator": "hand",
        "problem": "What is 10 / 2?",
        "final_answer_correct": True,
        "label": -1,
        "steps": ["10 / 2 = 5.", "The answer is \\boxed{5}."],
    },
]


@pytest.mark.integration
def test_eval_prm_scores_every_item_and_writes_the_report(tmp_path, lm_judge_replicas):
    subset = write_subset(tmp_path / "toy.json", PROCESSBENCH)
    held, kept = question_ids(0.5, True, 2), question_ids(0.5, False, 1)
    labels = write_labels(
        tmp_path / "labels",
        [
            label_row(held[0], ["2 + 2 = 4.", "So \\boxed{4}."], [True, True]),
            label_row(held[0], ["2 + 2 = 5.", "So \\boxed{5}.", "Done."], [False, False], sample=1),
            label_row(held[1], ["3 * 3 = 9.", "So \\boxed{9}."], [True, None]),
            label_row(kept[0], ["1 + 1 = 2."], [True]),  # a training question: not scored
        ],
    )
    output = tmp_path / "eval"
    cfg = load_config(
        overrides=[
            "verifier.kind=lm_judge",
            "verifier.backend=transformers",
            f"eval_prm.processbench=[{subset}]",
            f"eval_prm.labels={labels}",
            "prm.heldout_fraction=0.5",
            f"eval_prm.output={output}",
        ]
    )

    evaluation = run_eval_prm(cfg, verifiers=lm_judge_replicas)
    report = evaluation.report

    assert report.failed == []
    toy = report.subsets["toy"]
    assert (toy.num_items, toy.num_erroneous, toy.num_correct, toy.num_failed) == (4, 2, 2, 0)
    for value in (toy.error_accuracy, toy.correct_accuracy, toy.f1):
        assert value is not None and 0 <= value <= 1
    assert report.num_heldout_solutions == 3
    auc = report.step_auc
    assert auc is not None and auc.num_steps == 5 and auc.positive_share == pytest.approx(3 / 5)
    assert auc.auc is not None and 0 <= auc.auc <= 1
    assert report.verifier_tokens > 0 and report.wall_s > 0
    assert (report.verifier, report.backend, report.threshold) == ("lm_judge", "transformers", 0.5)

    saved = json.loads((output / "eval.json").read_text())
    assert saved["subsets"]["toy"]["num_items"] == 4 and saved["step_auc"]["num_steps"] == 5
    assert saved["failed"] == [] and saved["verifier_tokens"] == report.verifier_tokens
    assert (output / "eval.md").read_text() == format_prm_eval(report)
    assert str(evaluation) == f"{format_prm_eval(report)}\n\nwritten to {output}/eval.md and eval.json"
