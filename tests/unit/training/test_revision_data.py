"""Revision-model training trajectories (`ttsearch revision-data`) from scripted attempts: no model, no Ray."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pyarrow as pa
import pytest

from tests.fixtures import Grades, ScriptedBackend, drive
from ttsearch.config import RevisionDataConfig, SchedulerConfig, StrategySpec, load_config
from ttsearch.search.outcomes import JobOutcome, Usage
from ttsearch.search.requests import Completion, Generate, GenerateResult, Request, Result
from ttsearch.search.scheduler import ReplicaPool, Scheduler
from ttsearch.search.strategies import start
from ttsearch.search.strategies.common import SearchContext
from ttsearch.sweep.sharded import run_shard
from ttsearch.training.revision_data import (
    REVISION_SCHEMA,
    RevisionDataWork,
    build_trajectories,
    read_trajectories,
    revision_store,
    sample_attempts,
    trajectory_rows,
)

PROBLEM = {"unique_id": "q1", "problem": "What is 2 + 3?", "answer": "5"}
RIGHT = "2 + 3 = 5.\n\nSo $\\boxed{5}$."
# Wrong attempts at decreasing edit distance from RIGHT: FAR shares little with it, NEAR differs in one character.
FAR = "I think the answer might be $\\boxed{9}$ after all."
MID = "2 + 3 = 6.\n\nWe get $\\boxed{6}$."
NEAR = "2 + 3 = 4.\n\nSo $\\boxed{4}$."
SETTINGS = RevisionDataConfig(samples=6, window=4, min_wrong=4, trajectories_per_question=4)


def test_wrong_attempts_are_the_nearest_ordered_by_increasing_similarity():
    texts = [FAR, NEAR, RIGHT, MID, "x" * 80]
    verdicts = [False, False, True, False, False]
    [plan] = build_trajectories(texts, verdicts, replace(SETTINGS, min_wrong=3, window=3), "q1")
    assert plan.correct == 2
    assert plan.wrong == (0, 3, 1)  # FAR, MID, NEAR: the most similar last, the unrelated 5th left out
    assert list(plan.distances) == sorted(plan.distances, reverse=True) and 0 < plan.distances[-1] < 0.1


def test_the_window_caps_the_wrong_attempts_and_the_count_is_drawn_in_range():
    texts = [FAR, MID, NEAR, RIGHT]
    verdicts = [False, False, False, True]
    [capped] = build_trajectories(texts, verdicts, replace(SETTINGS, window=2, min_wrong=2), "q1")
    assert capped.wrong == (1, 2)  # the two nearest, nearest last
    counts = {
        len(build_trajectories(texts, verdicts, replace(SETTINGS, min_wrong=1), f"q{i}")[0].wrong) for i in range(40)
    }
    assert counts == {1, 2, 3}  # uniform over min_wrong..min(window, available): every chain position is trained
    again = [build_trajectories(texts, verdicts, replace(SETTINGS, min_wrong=1), f"q{i}") for i in range(40)]
    assert again == [build_trajectories(texts, verdicts, replace(SETTINGS, min_wrong=1), f"q{i}") for i in range(40)]


def test_only_questions_with_a_correct_attempt_and_enough_wrong_ones_yield_trajectories():
    assert build_trajectories([FAR, MID], [False, False], SETTINGS, "q1") == []  # no correct attempt
    assert build_trajectories([RIGHT, FAR], [True, False], replace(SETTINGS, min_wrong=2), "q1") == []
    [plain] = build_trajectories([RIGHT], [True], replace(SETTINGS, min_wrong=0), "q1")
    assert plain.wrong == ()  # min_wrong 0: a first attempt (plain prompt -> correct) is a trajectory too


def test_ungraded_and_repeated_attempts_are_left_out_and_each_distinct_correct_one_ends_a_trajectory():
    right_too = "5, because 2 + 3 = 5: $\\boxed{5}$"
    texts = [RIGHT, NEAR, RIGHT, MID, right_too, FAR, NEAR]
    verdicts = [True, False, True, None, True, False, False]
    plans = build_trajectories(texts, verdicts, replace(SETTINGS, min_wrong=2, window=2), "q1")
    assert [plan.correct for plan in plans] == [0, 4]  # the repeat of RIGHT ends none
    assert all(set(plan.wrong) == {1, 5} for plan in plans)  # MID is ungraded; the repeated NEAR counts once
    one = replace(SETTINGS, min_wrong=1, trajectories_per_question=1)
    assert len(build_trajectories(texts, verdicts, one, "q1")) == 1


def attempts_respond(texts: list[str]):
    def respond(request: Request) -> Result:
        assert isinstance(request, Generate) and request.prompt.assistant_prefix == ""
        return GenerateResult(tuple(Completion(t, 9, "stop") for t in texts[: request.n]), 20)

    return respond


def test_the_rendered_trajectory_is_exactly_what_the_revisions_strategy_sends_at_inference():
    """The row's prompt equals the request the strategy makes for the attempt after the shown wrong ones, when
    the chain's earlier attempts were those wrong ones; the target is the correct attempt as sampled."""
    cfg = load_config(
        "conf/revision_prompt.yaml", ["revision_data.samples=4", "revision_data.window=2", "revision_data.min_wrong=2"]
    )
    texts = [FAR, NEAR, RIGHT + "\n\n", MID]
    ctx = SearchContext("q1", PROBLEM["problem"], cfg.search, seed=0)
    attempts, batches = drive(sample_attempts(ctx, 4), attempts_respond(texts))
    assert len(batches) == 1 and batches[0][0].n == 4 and batches[0][0].prompt == ctx.prompt(())
    outcome = JobOutcome(key=PROBLEM, value=attempts, usage=Usage(generated_tokens=36), wall_s=1.0)
    [row] = trajectory_rows(outcome, Grades({"5": True}), cfg)
    assert row["attempts"] == [MID, NEAR] and row["target"] == RIGHT + "\n\n" and row["target_answer"] == "5"
    assert row["samples"] == 4 and row["correct_samples"] == 1 and row["generated_tokens"] == 36
    pa.Table.from_pylist([row | {"shard": 0, "node_id": ""}], schema=REVISION_SCHEMA)

    chain = iter([MID, NEAR, RIGHT, RIGHT])  # the strategy's one chain writes the shown attempts, then asks again
    spec = StrategySpec.of(name="revisions", revision_length=4, revision_window=2)
    _, strategy_batches = drive(
        start(ctx, 4, spec),
        lambda request: attempts_respond([next(chain)])(request) if isinstance(request, Generate) else _scores(request),
    )
    third = strategy_batches[2][0].prompt
    assert (third.system, third.user, third.assistant_prefix) == (row["system"], row["user"], "")


def _scores(request):
    from ttsearch.search.requests import ScoreResult

    return ScoreResult(step_scores=(0.5,) * len(request.steps), tokens=1)


def test_a_question_without_a_correct_attempt_or_that_failed_is_one_row_without_a_trajectory():
    cfg = load_config("conf/revision_prompt.yaml")
    attempts, _ = drive(sample_attempts(SearchContext("q1", "?", cfg.search, 0), 2), attempts_respond([FAR, MID]))
    [row] = trajectory_rows(JobOutcome(key=PROBLEM, value=attempts, usage=Usage(), wall_s=1.0), Grades({}), cfg)
    assert row.get("trajectory") is None and row["samples"] == 2 and row["correct_samples"] == 0
    failed = JobOutcome(key=PROBLEM, value=None, usage=Usage(generated_tokens=3), wall_s=1.0, error="boom")
    [row] = trajectory_rows(failed, Grades({}), cfg)
    assert row["error"] == "boom" and row["samples"] == 0


@pytest.mark.parametrize("override", ["revision_data.min_wrong=5", "revision_data.samples=0"])
def test_bad_revision_data_settings_are_refused_naming_the_key(override):
    from ttsearch.config import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config("conf/revision.yaml", [override])


def test_revision_data_shards_run_through_the_ready_queue_and_read_back_only_trajectories(tmp_path):
    """A shard's questions share the ready queue (and the replica's calls); every question gets a row, and
    read_trajectories drops the rows of questions without a trajectory."""
    cfg = load_config(
        ["conf/revision.yaml", "conf/revision_prompt.yaml"], ["revision_data.samples=4", "revision_data.min_wrong=1"]
    )
    problems = [PROBLEM | {"unique_id": f"q{i}", "problem": f"What is 2 + 3? ({i})"} for i in range(3)]

    def respond(request: Request) -> Result:  # question 1 gets no correct attempt
        return attempts_respond([FAR, MID] if "(1)" in request.prompt.user else [FAR, RIGHT, NEAR, MID])(request)

    backend = ScriptedBackend(respond)
    pool = ReplicaPool([backend], max_outstanding=64, max_batch=8)
    store = revision_store(tmp_path)

    def scheduler(grader):
        return Scheduler.from_config({"generator": pool}, SchedulerConfig())

    asyncio.run(run_shard(store, 0, 1, problems, RevisionDataWork(cfg), scheduler, node_id="n"))
    assert sum(len(batch) for batch in backend.batches) == 3 and len(backend.batches) < 3  # questions share calls
    assert store.finished_shards(1) == {0} and store.read_results().num_rows == 3
    trajectories = read_trajectories(tmp_path)
    assert trajectories.column("unique_id").to_pylist() == ["q0", "q2"]


def test_reference_fallback_ends_a_trajectory_only_where_no_attempt_is_right():
    overrides = ["revision_data.reference_fallback=true", "revision_data.min_wrong=2", "revision_data.window=2"]
    cfg = load_config(["conf/revision.yaml", "conf/revision_prompt.yaml"], overrides)
    problem = PROBLEM | {"solution": "Adding, $2 + 3 = \\boxed{5}$."}
    wrong, _ = drive(sample_attempts(SearchContext("q1", "?", cfg.search, 0), 2), attempts_respond([FAR, MID]))
    [row] = trajectory_rows(JobOutcome(key=problem, value=wrong, usage=Usage(), wall_s=1.0), Grades({"5": True}), cfg)
    assert row["target_source"] == "reference" and row["target"] == problem["solution"]
    assert row["target_answer"] == "5" and row["attempts"] == [FAR, MID] and row["correct_samples"] == 0
    right, _ = drive(sample_attempts(SearchContext("q1", "?", cfg.search, 0), 3), attempts_respond([FAR, MID, RIGHT]))
    [row] = trajectory_rows(JobOutcome(key=problem, value=right, usage=Usage(), wall_s=1.0), Grades({"5": True}), cfg)
    assert row["target_source"] == "sample" and row["target"] == RIGHT


def test_reference_fallback_refuses_questions_without_a_reference_solution_before_anything_runs(tmp_path):
    import json
    from pathlib import Path

    from ttsearch.pipelines.revision_data import run_revision_data

    from ttsearch.sweep.data import DataError

    rows = [json.loads(line) for line in Path("data/math500.jsonl").read_text().splitlines()[:2]]
    rows[1]["solution"] = ""
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = load_config(
        ["conf/revision.yaml", "conf/revision_prompt.yaml"],
        [f"data.path={data}", "data.levels=[]", f"output_dir={tmp_path / 'out'}"],
    )
    with pytest.raises(DataError, match=r"revision_data\.reference_fallback needs a reference 'solution'.*none for 1"):
        run_revision_data(cfg)
    assert not (tmp_path / "out").exists(), "nothing claimed"
