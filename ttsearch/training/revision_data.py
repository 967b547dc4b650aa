"""Training trajectories for a revision model (Snell et al. 2024, §6.1; `ttsearch revision-data`).

For a training question: sample K attempts from the plain prompt (`sample_attempts`, a pure state machine like the
strategies, so every question's attempts share the scheduler's ready queue) and grade them against the reference.
Each correct attempt ends a trajectory whose earlier attempts are wrong ones of the same question, chosen as near
misses of it (`build_trajectories`): the nearest by normalised character edit distance (Levenshtein distance over
the longer length, via rapidfuzz), ordered by increasing similarity, so the attempt just before the correct one is
the most similar. How many is drawn uniformly from `min_wrong`..min(`window`, wrong attempts available), seeded by
the question, so training covers every chain position the revisions strategy reaches. Each trajectory is rendered
with the strategy's own `revision_prompt`, so the model is trained on exactly the text it is shown at inference.
With `reference_fallback`, a question none of whose attempts is right gets one trajectory ending in its reference
solution instead: not the paper's recipe, but what gives a weak generator (the embedded 135M model gets well under 1 %
of MATH attempts right) anything to learn from.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import OmegaConf
from rapidfuzz.distance import Levenshtein

from ttsearch.config import RevisionDataConfig, SweepConfig
from ttsearch.runtime.metrics import QuestionMetrics
from ttsearch.search.grading import Grader, extract_answer
from ttsearch.search.outcomes import JobOutcome
from ttsearch.search.requests import Request, Result
from ttsearch.search.strategies.common import SearchContext
from ttsearch.search.strategies.revisions import revision_prompt
from ttsearch.sweep.results import RunStore, problems_fingerprint
from ttsearch.sweep.sharded import QuestionWork

REVISION_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("question", pa.string()),
        ("reference", pa.string()),
        ("trajectory", pa.int32()),  # its index among the question's; null: the question yielded none (one row)
        ("attempts", pa.list_(pa.string())),  # the wrong attempts shown, oldest first, as the strategy shows them
        ("attempt_answers", pa.list_(pa.string())),
        ("distances", pa.list_(pa.float64())),  # each shown attempt's normalised edit distance to the target
        ("target", pa.string()),  # the correct attempt, as the model wrote it: what training teaches it to write
        ("target_source", pa.string()),  # "sample"; "reference": the reference solution (`reference_fallback`)
        ("target_answer", pa.string()),
        ("system", pa.string()),  # the prompt of the attempt after `attempts`, rendered by the revisions strategy
        ("user", pa.string()),
        ("samples", pa.int32()),  # attempts sampled for the question
        ("correct_samples", pa.int32()),
        ("ungraded_samples", pa.int32()),  # no verdict (a grading failure): used neither as correct nor as wrong
        ("generated_tokens", pa.int64()),  # the question's sampled tokens (on each of its rows)
        ("wall_s", pa.float64()),
        ("error", pa.string()),  # the question failed deterministically: one row, no trajectory
        ("shard", pa.int32()),
        ("node_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class Attempt:
    """One sampled attempt: `text` as the revisions strategy shows it (its steps re-joined), `raw` as sampled."""

    text: str
    raw: str
    answer: str | None


@dataclass(frozen=True)
class TrajectoryPlan:
    """Which attempts make one trajectory: indices into the question's attempts, the wrong ones oldest first."""

    wrong: tuple[int, ...]
    distances: tuple[float, ...]
    correct: int


AttemptRun = Generator[list[Request], list[Result], list[Attempt]]


def sample_attempts(ctx: SearchContext, samples: int) -> AttemptRun:
    """`samples` attempts at the question from the plain prompt: the first attempt of every revision chain."""
    [result] = yield [ctx.solve(ctx.prompt(()), samples, 0)]
    attempts = []
    for completion in result.completions:
        text = ctx.candidate(ctx.split_steps(completion.text), (), completion.ended_solution).text
        attempts.append(Attempt(text, completion.text, extract_answer(text)))
    return attempts


def build_trajectories(
    texts: Sequence[str], verdicts: Sequence[bool | None], settings: RevisionDataConfig, key: str
) -> list[TrajectoryPlan]:
    """Trajectories from one question's graded attempts (pure; `key` seeds the draws).

    Up to `trajectories_per_question` distinct correct attempts, in sample order, each end one; its wrong
    attempts (distinct texts graded False; ungraded ones are neither) are the nearest to it by normalised edit
    distance (ties: sample order), shown farthest first. None when the question has no correct attempt.
    """
    correct = _distinct([i for i, verdict in enumerate(verdicts) if verdict is True], texts)
    wrong = _distinct([i for i, verdict in enumerate(verdicts) if verdict is False], texts)
    plans = []
    for number, target in enumerate(correct[: settings.trajectories_per_question]):
        most = min(settings.window, len(wrong))
        if most < settings.min_wrong:
            break
        count = random.Random(f"{key}|{settings.seed}|{number}").randint(settings.min_wrong, most)
        distance = {i: Levenshtein.normalized_distance(texts[i], texts[target]) for i in wrong}
        nearest = sorted(wrong, key=lambda i: (distance[i], i))[:count]
        shown = nearest[::-1]
        plans.append(TrajectoryPlan(tuple(shown), tuple(distance[i] for i in shown), target))
    return plans


def _distinct(indices: list[int], texts: Sequence[str]) -> list[int]:
    """The first index of each distinct text: a repeated attempt would teach the same thing twice."""
    seen: dict[str, int] = {}
    for i in indices:
        seen.setdefault(texts[i], i)
    return list(seen.values())


def trajectory_rows(outcome: JobOutcome, grader: Grader, cfg: SweepConfig) -> list[dict[str, Any]]:
    """A finished question's rows: one per trajectory, rendered for training, or one row without a trajectory
    (no correct attempt, or a failed question) so a re-run knows the question is done."""
    problem = outcome.key
    base = {
        "unique_id": problem["unique_id"],
        "question": problem["problem"],
        "reference": problem["answer"],
        "generated_tokens": outcome.usage.generated_tokens,
        "wall_s": outcome.wall_s,
        "error": outcome.error,
    }
    if outcome.value is None:
        return [base | {"samples": 0, "correct_samples": 0, "ungraded_samples": 0}]
    attempts: list[Attempt] = outcome.value
    verdicts = grader.grade_many([(attempt.answer, problem["answer"]) for attempt in attempts])
    base |= {
        "samples": len(attempts),
        "correct_samples": sum(verdict is True for verdict in verdicts),
        "ungraded_samples": sum(verdict is None for verdict in verdicts),
    }
    texts, targets = [attempt.text for attempt in attempts], [attempt.raw for attempt in attempts]
    verdicts = list(verdicts)
    solution = problem.get("solution", "").strip()
    if cfg.revision_data.reference_fallback and True not in verdicts and solution:
        texts, targets, verdicts = [*texts, solution], [*targets, solution], [*verdicts, True]
    plans = build_trajectories(texts, verdicts, cfg.revision_data, problem["unique_id"])
    rows = []
    for number, plan in enumerate(plans):
        shown = [texts[i] for i in plan.wrong]
        prompt = revision_prompt(
            cfg.search.system_prompt, problem["problem"], shown, cfg.revision_data.window, cfg.search.revision_prompt
        )
        rows.append(
            base
            | {
                "trajectory": number,
                "attempts": shown,
                "attempt_answers": [attempts[i].answer for i in plan.wrong],
                "distances": list(plan.distances),
                "target": targets[plan.correct],
                "target_source": "sample" if plan.correct < len(attempts) else "reference",
                "target_answer": extract_answer(targets[plan.correct]),
                "system": prompt.system,
                "user": prompt.user,
            }
        )
    return rows or [base]


def revision_store(location: str | Path) -> RunStore:
    """A `ttsearch revision-data` output directory: the sweep's results store, with trajectory rows."""
    return RunStore(location, schema=REVISION_SCHEMA)


def read_trajectories(location: str | Path) -> pa.Table:
    """The trajectories of a finished (or partly finished) `ttsearch revision-data` run: one row each."""
    table = revision_store(location).read_saved("revision-data")
    return table.filter(pc.is_valid(table.column("trajectory")))


def revision_fingerprint(cfg: SweepConfig, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides a revision-data run's rows: the problems, the generator, the search settings (the
    revision prompt texts included: they are in the rows), the trajectory recipe."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    return {**problems_fingerprint(cfg, problems), "search": plain["search"], "revision_data": plain["revision_data"]}


class RevisionDataWork(QuestionWork):
    """`ttsearch revision-data`'s shards: a question's rows are its trajectories (`trajectory_rows`)."""

    schema = REVISION_SCHEMA

    def question_run(self, problem: dict[str, Any]) -> AttemptRun:
        ctx = SearchContext(problem["unique_id"], problem["problem"], self.cfg.search, self.cfg.revision_data.seed)
        return sample_attempts(ctx, self.cfg.revision_data.samples)

    def rows(self, outcome: JobOutcome, grader: Grader) -> list[dict[str, Any]]:
        return trajectory_rows(outcome, grader, self.cfg)

    def metrics(self, shard: int) -> QuestionMetrics:
        return QuestionMetrics(shard, "revision_data")
