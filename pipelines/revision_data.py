"""`ttsearch revision-data`: training trajectories for a revision model, as sharded, resumable Ray Data work.

Every question's attempts (`ttsearch.training.revision_data.sample_attempts`: K samples from the plain prompt) go
through
the shard's ready queue with every other question's, on the generator replicas; each finished question is graded
and turned into its trajectories (`trajectory_rows`: near-miss wrong attempts, then a correct one, rendered in the
revisions strategy's prompt format) in a results store like the sweep's (`results/shard-K-of-N.parquet`, rows in
`REVISION_SCHEMA`). A re-run into the same `output_dir` computes only the questions without rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ttsearch.config import SweepConfig, validate_revision_prompt
from ttsearch.sweep.data import load_problems, require_solutions
from ttsearch.sweep.sharded import questions_failure, run_question_work
from ttsearch.training.revision_data import RevisionDataWork, revision_fingerprint, revision_store


@dataclass(frozen=True)
class RevisionDataSummary:
    """What a revision-data run holds: what `ttsearch revision-data` prints and decides its exit code on."""

    output_dir: str
    """Where the trajectories are saved (`output_dir`)."""
    questions: int
    """Questions of the run (its manifest's count)."""
    failed_questions: int
    """Questions that failed deterministically (an error row, kept)."""
    missing_questions: int
    """Questions without rows yet (infrastructure failures, a stopped run): a re-run computes them."""
    samples: int
    """Attempts sampled over every question."""
    correct_samples: float
    """Share of the sampled attempts graded correct."""
    questions_with_correct: int
    """Questions with at least one correct attempt."""
    trajectories: int
    """Training trajectories written."""
    reference_trajectories: int
    """Trajectories ending in the reference solution (`revision_data.reference_fallback`), of `trajectories`."""
    wrong_attempts: dict[int, int]
    """How many trajectories show 0, 1, ... wrong attempts before the correct one."""
    generated_tokens: int
    """Tokens generated for every question's attempts."""

    def __str__(self) -> str:
        lengths = ", ".join(f"{count} with {wrong}" for wrong, count in sorted(self.wrong_attempts.items()))
        return "\n".join(
            [
                f"\ntrajectories saved in {self.output_dir}",
                f"questions: {self.questions - self.missing_questions - self.failed_questions} done, "
                f"{self.failed_questions} failed, {self.missing_questions} missing (of {self.questions})",
                f"attempts: {self.samples}, correct: {self.correct_samples:.1%}; questions with a correct attempt: "
                f"{self.questions_with_correct}",
                f"trajectories: {self.trajectories}, {self.reference_trajectories} of them ending in the reference "
                "solution" + (f"; {lengths} wrong attempts first" if lengths else ""),
                f"generated tokens: {self.generated_tokens}",
            ]
        )

    @property
    def failure(self) -> str | None:
        """Why the command exits 1: questions missing (a re-run samples them) or failed (error rows, kept)."""
        return questions_failure(self.missing_questions, self.failed_questions, "sample")


def run_revision_data(cfg: SweepConfig, generators: list[Any] | None = None) -> RevisionDataSummary:
    """Check inputs, claim `cfg.output_dir`, sample and grade the questions that have no rows yet (starting
    generator replicas unless given), and summarize every saved row (`read_trajectories` reads them)."""
    validate_revision_prompt(cfg.search.revision_prompt)  # the rows are rendered with it
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    if cfg.revision_data.reference_fallback:
        require_solutions(problems, cfg.data.path, "revision_data.reference_fallback")
    fingerprint = revision_fingerprint(cfg, problems)
    store = revision_store(cfg.output_dir)
    return summarize(cfg, run_question_work(cfg, RevisionDataWork(cfg), store, fingerprint, problems, generators))


def summarize(cfg: SweepConfig, table: pa.Table) -> RevisionDataSummary:
    """Counts of the run's saved rows (a question's counts repeat on each of its rows)."""
    rows = table.to_pylist()
    questions = {row["unique_id"]: row for row in rows}
    total = revision_store(cfg.output_dir).manifest()["num_problems"]
    trajectories = [row for row in rows if row["trajectory"] is not None]
    samples = sum(row["samples"] for row in questions.values())
    return RevisionDataSummary(
        output_dir=cfg.output_dir,
        questions=total,
        failed_questions=sum(row["error"] is not None for row in questions.values()),
        missing_questions=total - len(questions),
        samples=samples,
        correct_samples=sum(row["correct_samples"] for row in questions.values()) / max(samples, 1),
        questions_with_correct=sum(row["correct_samples"] > 0 for row in questions.values()),
        trajectories=len(trajectories),
        reference_trajectories=sum(row["target_source"] == "reference" for row in trajectories),
        wrong_attempts=dict(Counter(len(row["attempts"]) for row in trajectories)),
        generated_tokens=sum(row["generated_tokens"] or 0 for row in questions.values()),
    )
