"""Monte Carlo step labels for PRM training (Snell et al. 2024, Algorithm 1; Math-Shepherd's estimator).

For a training question: sample K solutions and split them into steps; from every step prefix sample R rollouts
to the end and grade them. A step's soft label is the share of its graded rollouts that reach the reference
answer, its hard label whether any does. Labelling is a pure state machine like the search strategies
(`label_question`), so the rollouts of every question go through the scheduler's ready queue together, and the
R rollouts of one prefix are one request (one prompt, prefilled once, then shared from the prefix cache).
Grading happens after the job, in the shard's sandboxed grader (`labelled_rows`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import OmegaConf

from ttsearch.config import LabelConfig, SweepConfig
from ttsearch.runtime.metrics import LabelMetrics
from ttsearch.search.grading import Grader, extract_answer
from ttsearch.search.outcomes import JobOutcome
from ttsearch.search.requests import Generate, GenerateResult, Request, Result
from ttsearch.search.strategies.common import SearchContext
from ttsearch.sweep.results import RunStore, problems_fingerprint
from ttsearch.sweep.sharded import QuestionWork

LABEL_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("question", pa.string()),
        ("reference", pa.string()),  # the reference answer the rollouts are graded against
        ("source", pa.string()),  # "sample": a solution the model sampled; "reference": the reference solution
        ("sample", pa.int32()),  # which of the K samples (0 for the reference solution)
        ("steps", pa.list_(pa.string())),
        ("finished", pa.bool_()),  # the model ended the solution (EOS) rather than running out of tokens
        ("answer", pa.string()),  # the solution's own final answer, if it states one
        ("solution_correct", pa.bool_()),  # that answer graded; null: no verdict (a grading failure)
        # One element per labelled step (the first min(len(steps), label.max_steps) steps); null: no graded rollout.
        ("soft_labels", pa.list_(pa.float64())),  # successes / rollouts
        ("hard_labels", pa.list_(pa.bool_())),  # successes > 0
        ("successes", pa.list_(pa.int32())),
        ("rollouts", pa.list_(pa.int32())),  # graded rollouts (a rollout whose grading failed is not counted)
        ("generated_tokens", pa.int64()),  # tokens sampled for this solution and its rollouts
        ("wall_s", pa.float64()),  # the whole question's labelling time
        ("error", pa.string()),  # the question failed deterministically: one row, no labels
        ("shard", pa.int32()),
        ("node_id", pa.string()),
    ]
)
SAMPLE, REFERENCE = "sample", "reference"


def is_heldout(unique_id: str, fraction: float) -> bool:
    """Whether a question is held out of PRM training: a stable hash of its id, so `train-prm` and `eval-prm`
    (and every worker) draw the same split without sharing a file, whatever order the rows come in."""
    digest = hashlib.sha256(unique_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def label_store(location: str | Path) -> RunStore:
    """A `ttsearch label` output directory: the sweep's results store, with label rows."""
    return RunStore(location, schema=LABEL_SCHEMA)


def read_labels(location: str | Path) -> pa.Table:
    """The labelled solutions of a finished (or partly finished) `ttsearch label` run; error rows left out."""
    table = label_store(location).read_saved("label")
    return table.filter(pc.is_null(table.column("error")))


@dataclass(frozen=True)
class Trajectory:
    """One solution being labelled: its steps, its own final answer, and the answers its rollouts reached from
    each labelled step prefix."""

    source: str
    sample: int
    steps: tuple[str, ...]
    finished: bool
    answer: str | None
    rollout_answers: tuple[tuple[str | None, ...], ...]
    """One tuple per labelled step. The last step of a finished solution has no rollouts: the solution itself is
    that prefix's only completion, so its own answer stands in (Math-Shepherd labels it the same way)."""
    generated_tokens: int


def reference_steps(solution: str, delimiter: str) -> tuple[str, ...]:
    """A reference solution cut into steps: at the search's step delimiter, else at line breaks, else at sentence
    ends (MATH's references are mostly one paragraph), so that rollouts start from several points of it."""
    for pattern in (re.escape(delimiter), r"\n+", r"(?<=[.!?])\s+(?=[A-Z\\$])"):
        steps = tuple(step.strip() for step in re.split(pattern, solution) if step.strip())
        if len(steps) > 1:
            return steps
    return (solution.strip(),) if solution.strip() else ()


def label_question(ctx: SearchContext, settings: LabelConfig, reference_solution: str = "") -> LabelRun:
    """Algorithm 1 for one question: sample K solutions, then roll out R completions from every labelled step
    prefix of every solution (and of the reference solution if `settings.reference_prefixes`), all in one
    round so the scheduler batches them; returns the trajectories with their rollouts' answers (ungraded)."""
    [sampled] = yield [ctx.solve(ctx.prompt(()), settings.samples, 0)]
    solutions = [
        (SAMPLE, k, ctx.split_steps(c.text), c.ended_solution, c.num_tokens) for k, c in enumerate(sampled.completions)
    ]
    if settings.reference_prefixes and (steps := reference_steps(reference_solution, ctx.search.step_delimiter)):
        solutions.append((REFERENCE, 0, steps, True, 0))
    requests: list[Request] = []
    for index, (_, _, steps, finished, _) in enumerate(solutions):
        requests += [
            ctx.solve(ctx.prompt(steps[:end]), settings.rollouts, 1, index, end)
            for end in _rollout_ends(steps, finished, settings.max_steps)
        ]
    results: list[Result] = (yield requests) if requests else []
    rollouts = iter(zip(requests, results, strict=True))
    trajectories = []
    for source, sample, steps, finished, tokens in solutions:
        text = ctx.search.step_delimiter.join(steps)
        answers: list[tuple[str | None, ...]] = []
        for _ in _rollout_ends(steps, finished, settings.max_steps):
            request, result = next(rollouts)
            answers.append(_answers(request, result))
            tokens += sum(c.num_tokens for c in result.completions)
        if len(answers) < min(len(steps), settings.max_steps):  # the finished solution's last step labels itself
            answers.append((extract_answer(text),))
        trajectories.append(Trajectory(source, sample, steps, finished, extract_answer(text), tuple(answers), tokens))
    return trajectories


LabelRun = Generator[list[Request], list[Result], list[Trajectory]]


def _rollout_ends(steps: tuple[str, ...], finished: bool, max_steps: int) -> range:
    """Prefix lengths that get rollouts: every labelled prefix except a finished solution's whole self."""
    labelled = min(len(steps), max_steps)
    return range(1, labelled if finished and labelled == len(steps) else labelled + 1)


def _answers(request: Generate, result: GenerateResult) -> tuple[str | None, ...]:
    """Each rollout's final answer, read from the prefix plus the completion (the prefix may hold the answer)."""
    prefix = request.prompt.assistant_prefix
    return tuple(extract_answer(prefix + completion.text) for completion in result.completions)


def step_labels(outcomes: list[list[bool | None]]) -> dict[str, list[Any]]:
    """Per-step soft and hard labels with their counts, from each step's rollout verdicts (None: ungraded, not
    counted); a step without a graded rollout gets null labels."""
    successes = [sum(verdict is True for verdict in step) for step in outcomes]
    graded = [sum(verdict is not None for verdict in step) for step in outcomes]
    return {
        "soft_labels": [wins / count if count else None for wins, count in zip(successes, graded, strict=True)],
        "hard_labels": [wins > 0 if count else None for wins, count in zip(successes, graded, strict=True)],
        "successes": successes,
        "rollouts": graded,
    }


def labelled_rows(outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
    """A finished question's rows, one per trajectory, its rollouts graded; one error row for a failed question."""
    problem = outcome.key
    base = {
        "unique_id": problem["unique_id"],
        "question": problem["problem"],
        "reference": problem["answer"],
        "wall_s": outcome.wall_s,
        "error": outcome.error,
    }
    if outcome.value is None:
        # The label columns empty rather than absent: every reader (summary, benchmark, metrics) sees one row shape.
        usage = {"source": None, "steps": [], "generated_tokens": outcome.usage.generated_tokens}
        return [base | step_labels([]) | usage]
    trajectories: list[Trajectory] = outcome.value
    answers = [answer for t in trajectories for answer in (t.answer, *(a for step in t.rollout_answers for a in step))]
    verdicts = iter(grader.grade_many([(answer, problem["answer"]) for answer in answers]))
    rows = []
    for t in trajectories:
        own = next(verdicts)
        outcomes = [[next(verdicts) for _ in step] for step in t.rollout_answers]
        rows.append(
            base
            | step_labels(outcomes)
            | {
                "source": t.source,
                "sample": t.sample,
                "steps": list(t.steps),
                "finished": t.finished,
                "answer": t.answer,
                "solution_correct": own,
                "generated_tokens": t.generated_tokens,
            }
        )
    return rows


def label_fingerprint(cfg: SweepConfig, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides a labelling run's rows: the problems, the generator, how it samples, K, R, ..."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    search = {key: value for key, value in plain["search"].items() if key != "revision_prompt"}
    return {**problems_fingerprint(cfg, problems), "search": search, "label": plain["label"]}


class LabelWork(QuestionWork):
    """`ttsearch label`'s shards: a question's rows are one per labelled solution (`labelled_rows`)."""

    schema = LABEL_SCHEMA

    def question_run(self, problem: dict[str, Any]) -> LabelRun:
        ctx = SearchContext(problem["unique_id"], problem["problem"], self.cfg.search, self.cfg.label.seed)
        return label_question(ctx, self.cfg.label, problem.get("solution", ""))

    def rows(self, outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
        return labelled_rows(outcome, grader)

    def metrics(self, shard: int) -> LabelMetrics:
        return LabelMetrics(shard)
