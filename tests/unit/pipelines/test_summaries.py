"""What the question-work commands (`label`, `revision-data`) print of their run and the failure that makes them exit
1: questions missing first (a re-run computes them), then failed ones."""

from __future__ import annotations

from ttsearch.pipelines.label import LabelSummary
from ttsearch.pipelines.revision_data import RevisionDataSummary

LABELLED = dict(
    output_dir="runs/labels",
    questions=5,
    labelled_questions=3,
    failed_questions=1,
    missing_questions=1,
    solutions=9,
    sampled_correct=0.25,
    steps=20,
    nonzero_steps=0.4,
    mean_soft_label=0.123,
    reference_solutions=3,
    generated_tokens=999,
)


def test_a_label_run_prints_its_counts_and_fails_on_missing_then_failed_questions():
    summary = LabelSummary(**LABELLED)
    assert str(summary).splitlines() == [
        "",
        "labels saved in runs/labels",
        "questions: 3 labelled, 1 failed, 1 missing (of 5)",
        "solutions: 9 (3 reference), sampled solutions correct: 25.0%",
        "labelled steps: 20, with a non-zero label: 40.0%, mean soft label 0.123",
        "generated tokens: 999",
    ]
    assert summary.failure == "1 questions missing (infrastructure failures): re-run the same command to label them"
    failed = LabelSummary(**LABELLED | {"missing_questions": 0})
    assert failed.failure == "1 questions failed (a request no engine can serve): see their 'error' column"
    assert LabelSummary(**LABELLED | {"missing_questions": 0, "failed_questions": 0}).failure is None


def test_a_revision_data_run_prints_its_trajectories_and_fails_as_label_does():
    summary = RevisionDataSummary(
        output_dir="runs/revision_data",
        questions=5,
        failed_questions=0,
        missing_questions=2,
        samples=40,
        correct_samples=0.3,
        questions_with_correct=2,
        trajectories=6,
        reference_trajectories=1,
        wrong_attempts={2: 4, 0: 2},
        generated_tokens=77,
    )
    assert str(summary).splitlines()[1:4] == [
        "trajectories saved in runs/revision_data",
        "questions: 3 done, 0 failed, 2 missing (of 5)",
        "attempts: 40, correct: 30.0%; questions with a correct attempt: 2",
    ]
    assert str(summary).splitlines()[4] == (
        "trajectories: 6, 1 of them ending in the reference solution; 2 with 0, 4 with 2 wrong attempts first"
    )
    assert summary.failure == "2 questions missing (infrastructure failures): re-run the same command to sample them"
