"""`ttsearch label`: Monte Carlo step labels for PRM training, as sharded, resumable Ray Data work.

Every question's labelling (`ttsearch.training.labels.label_question`: K samples, then R rollouts from each step prefix)
goes through the shard's ready queue with every other question's, on the generator replicas, into a results store
like the sweep's (`results/shard-K-of-N.parquet`, rows in `ttsearch.training.labels.LABEL_SCHEMA`); a re-run into the
same
`output_dir` computes only the questions without rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ttsearch.config import SweepConfig
from ttsearch.sweep.data import load_problems, require_solutions
from ttsearch.sweep.sharded import questions_failure, run_question_work
from ttsearch.training.labels import LabelWork, label_fingerprint, label_store


@dataclass(frozen=True)
class LabelSummary:
    """What a labelling run holds: what `ttsearch label` prints and decides its exit code on."""

    output_dir: str
    """Where the labels are saved (`output_dir`)."""
    questions: int
    """Questions of the run (its manifest's count)."""
    labelled_questions: int
    """Questions with at least one labelled solution."""
    failed_questions: int
    """Questions that failed deterministically (an error row, kept)."""
    missing_questions: int
    """Questions without rows yet (infrastructure failures, a stopped run): a re-run computes them."""
    solutions: int
    """Solutions labelled, the reference ones included."""
    sampled_correct: float
    """Share of the sampled solutions whose own answer was right."""
    steps: int
    """Labelled steps over every solution."""
    nonzero_steps: float
    """Share of the labelled steps with a soft label above 0: from them, some rollout reached the answer."""
    mean_soft_label: float
    """Mean soft label over the labelled steps."""
    reference_solutions: int
    """Solutions that are the dataset's reference solution (`label.reference_prefixes`)."""
    generated_tokens: int
    """Tokens generated for every question's samples and rollouts."""

    def __str__(self) -> str:
        return "\n".join(
            [
                f"\nlabels saved in {self.output_dir}",
                f"questions: {self.labelled_questions} labelled, {self.failed_questions} failed, "
                f"{self.missing_questions} missing (of {self.questions})",
                f"solutions: {self.solutions} ({self.reference_solutions} reference), sampled solutions correct: "
                f"{self.sampled_correct:.1%}",
                f"labelled steps: {self.steps}, with a non-zero label: {self.nonzero_steps:.1%}, mean soft label "
                f"{self.mean_soft_label:.3f}",
                f"generated tokens: {self.generated_tokens}",
            ]
        )

    @property
    def failure(self) -> str | None:
        """Why the command exits 1: questions missing (a re-run computes them) or failed (error rows, kept)."""
        return questions_failure(self.missing_questions, self.failed_questions, "label")


def run_label(cfg: SweepConfig, generators: list[Any] | None = None) -> LabelSummary:
    """Check inputs, claim `cfg.output_dir`, label the questions that have no rows yet (starting generator
    replicas unless given), and summarize every saved row (`read_labels` reads them)."""
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    if cfg.label.reference_prefixes:
        require_solutions(problems, cfg.data.path, "label.reference_prefixes")
    store = label_store(cfg.output_dir)
    fingerprint = label_fingerprint(cfg, problems)
    return summarize(cfg, run_question_work(cfg, LabelWork(cfg), store, fingerprint, problems, generators))


def summarize(cfg: SweepConfig, table: pa.Table) -> LabelSummary:
    """Counts and label shares of the run's saved rows."""
    rows = table.to_pylist()
    total = label_store(cfg.output_dir).manifest()["num_problems"]
    failed = {row["unique_id"] for row in rows if row["error"] is not None}
    solutions = [row for row in rows if row["error"] is None]
    sampled = [row["solution_correct"] for row in solutions if row["source"] == "sample"]
    labels = [label for row in solutions for label in row["soft_labels"] if label is not None]
    return LabelSummary(
        output_dir=cfg.output_dir,
        questions=total,
        labelled_questions=len({row["unique_id"] for row in solutions}),
        failed_questions=len(failed),
        missing_questions=total - len({row["unique_id"] for row in rows}),
        solutions=len(solutions),
        sampled_correct=sum(verdict is True for verdict in sampled) / max(len(sampled), 1),
        steps=len(labels),
        nonzero_steps=sum(label > 0 for label in labels) / max(len(labels), 1),
        mean_soft_label=sum(labels) / max(len(labels), 1),
        reference_solutions=sum(row["source"] == "reference" for row in solutions),
        generated_tokens=sum(row["generated_tokens"] or 0 for row in rows),
    )
