"""Monte Carlo step labels (`ttsearch label`) with scripted rollouts: no model, no Ray."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pyarrow as pa

from tests.fixtures import Grades, ScriptedBackend, drive
from ttsearch.config import LabelConfig, SchedulerConfig, SearchConfig, load_config
from ttsearch.search.outcomes import JobOutcome, Usage
from ttsearch.search.requests import Completion, Generate, GenerateResult, Request, Result
from ttsearch.search.scheduler import ReplicaFailed, ReplicaPool, Scheduler
from ttsearch.search.strategies.common import SearchContext
from ttsearch.sweep.sharded import run_shard
from ttsearch.training.labels import (
    LABEL_SCHEMA,
    LabelWork,
    Trajectory,
    is_heldout,
    label_question,
    label_store,
    labelled_rows,
    read_labels,
    reference_steps,
    step_labels,
)

SEARCH = SearchConfig(step_delimiter="\n", max_solution_tokens=64)
PROBLEM = {"unique_id": "q1", "problem": "What is 2 + 3?", "answer": "5", "solution": "2 + 3 = 5.\nSo $\\boxed{5}$."}


def completion(text: str, eos: bool = True, tokens: int = 7) -> Completion:
    return Completion(text=text, num_tokens=tokens, finish_reason="stop" if eos else "length")


def scripted(request: Request) -> Result:
    """Samples: one finished 2-step solution (right), one 3-step solution cut by the token cap. A rollout from a
    prefix holding "good" reaches 5 on its first completion only; from any other prefix it reaches 7."""
    assert isinstance(request, Generate)
    prefix = request.prompt.assistant_prefix
    if not prefix:
        return GenerateResult((completion("good step\n\\boxed{5}"), completion("bad\nworse\nstill", eos=False)), 9)
    answer = ["5", "7"] if "good" in prefix else ["7", "7"]
    return GenerateResult(tuple(completion(f"so \\boxed{{{a}}}") for a in answer[: request.n]), 9)


def test_step_labels_from_scripted_rollout_outcomes():
    labels = step_labels([[True, False, None], [False, False], [None], [True, True]])
    assert labels == {
        "soft_labels": [0.5, 0.0, None, 1.0],  # the ungraded rollout counts in neither numerator nor denominator
        "hard_labels": [True, False, None, True],
        "successes": [1, 0, 0, 2],
        "rollouts": [2, 2, 0, 2],
    }


def test_label_question_rolls_out_from_every_labelled_prefix_in_one_round():
    ctx = SearchContext("q1", PROBLEM["problem"], SEARCH, seed=0, reference="5")
    settings = LabelConfig(samples=2, rollouts=2, max_steps=3)
    trajectories, batches = drive(label_question(ctx, settings), scripted)
    assert [len(batch) for batch in batches] == [1, 4]  # the samples, then every prefix's rollouts together
    prefixes = [request.prompt.assistant_prefix for request in batches[1]]
    # The finished solution's whole self needs no rollout: only its first step does; the cut one gets all 3.
    assert prefixes == ["good step\n", "bad\n", "bad\nworse\n", "bad\nworse\nstill\n"]
    assert all(request.n == 2 and request.stop == () for request in batches[1])
    assert len({request.seed for request in batches[1]}) == 4  # each prefix seeded on its own: a retry replays
    good, cut = trajectories
    assert good == Trajectory("sample", 0, ("good step", "\\boxed{5}"), True, "5", (("5", "7"), ("5",)), 7 + 14)
    assert cut.steps == ("bad", "worse", "still") and not cut.finished and cut.answer is None
    assert cut.rollout_answers == (("7", "7"),) * 3


def test_max_steps_caps_the_labelled_prefixes():
    ctx = SearchContext("q1", PROBLEM["problem"], SEARCH, seed=0)
    trajectories, batches = drive(label_question(ctx, LabelConfig(samples=2, rollouts=2, max_steps=1)), scripted)
    assert [request.prompt.assistant_prefix for request in batches[1]] == ["good step\n", "bad\n"]
    assert [len(t.rollout_answers) for t in trajectories] == [1, 1]


def test_reference_prefixes_are_rolled_out_too_and_the_whole_reference_labels_itself():
    ctx = SearchContext("q1", PROBLEM["problem"], SEARCH, seed=0)
    settings = LabelConfig(samples=2, rollouts=2, max_steps=3, reference_prefixes=True)
    trajectories, batches = drive(label_question(ctx, settings, PROBLEM["solution"]), scripted)
    reference = trajectories[-1]
    assert reference.source == "reference" and reference.steps == ("2 + 3 = 5.", "So $\\boxed{5}$.")
    assert batches[1][-1].prompt.assistant_prefix == "2 + 3 = 5.\n"
    assert reference.rollout_answers == (("7", "7"), ("5",))


def test_reference_steps_split_at_the_delimiter_else_lines_else_sentences():
    assert reference_steps("a\n\nb", "\n\n") == ("a", "b")
    assert reference_steps("a\nb\n", "\n\n") == ("a", "b")
    assert reference_steps("We add. Then $x=2$. So 5.", "\n\n") == ("We add.", "Then $x=2$.", "So 5.")
    assert reference_steps("one step", "\n") == ("one step",)
    assert reference_steps("  ", "\n") == ()


def test_labelled_rows_grade_rollouts_into_soft_and_hard_labels():
    trajectory = Trajectory("sample", 1, ("s1", "s2", "s3"), False, None, (("5", "7", "x"), ("7", "7", "7"), ()), 40)
    outcome = JobOutcome(key=PROBLEM, value=[trajectory], usage=Usage(), wall_s=2.0)
    [row] = labelled_rows(outcome, Grades({"5": True, "7": False, "x": None}))
    assert row["soft_labels"] == [0.5, 0.0, None] and row["hard_labels"] == [True, False, None]
    assert row["successes"] == [1, 0, 0] and row["rollouts"] == [2, 3, 0]
    assert row["solution_correct"] is False and row["source"] == "sample" and row["sample"] == 1
    pa.Table.from_pylist([row | {"shard": 0, "node_id": ""}], schema=LABEL_SCHEMA)  # fits the schema


def test_a_failed_question_is_one_error_row_without_labels():
    outcome = JobOutcome(key=PROBLEM, value=None, usage=Usage(generated_tokens=3), wall_s=1.0, error="boom")
    [row] = labelled_rows(outcome, Grades({}))
    assert row["error"] == "boom" and row["steps"] == [] and row["generated_tokens"] == 3


def test_heldout_split_is_stable_and_close_to_its_fraction():
    ids = [f"gsm8k_train.jsonl:{i}" for i in range(2000)]
    held = [uid for uid in ids if is_heldout(uid, 0.1)]
    assert held == [uid for uid in ids if is_heldout(uid, 0.1)]
    assert 150 < len(held) < 250
    assert not any(is_heldout(uid, 0.0) for uid in ids)


class FlakyReplica(ScriptedBackend):
    """A replica whose call dies (`ReplicaFailed`, as a killed actor's) whenever it carries a request `fails`."""

    def __init__(self, respond, fails):
        super().__init__(respond)
        self.fails = fails

    async def submit(self, batch):
        if any(self.fails(request) for request in batch):
            raise ReplicaFailed("scripted: actor died")
        async for item in super().submit(batch):
            yield item


def test_label_shards_through_the_ready_queue_resume_only_the_missing_questions(tmp_path):
    """Two runs of a shard: the first loses one question to an infrastructure failure (the replica fails its
    requests), the re-run labels exactly that one, and the rows equal an uninterrupted run's."""
    cfg = load_config(None, [r'search.step_delimiter="\n"', "label.samples=2", "label.rollouts=2", "label.max_steps=3"])
    cfg = replace(cfg, search=replace(cfg.search, max_solution_tokens=64))
    problems = [PROBLEM | {"unique_id": f"q{i}", "problem": f"What is {i} + 3?"} for i in range(3)]
    work = LabelWork(cfg)

    def run(store_dir, failing: str | None) -> None:
        backend = FlakyReplica(scripted, fails=lambda r: failing is not None and failing in r.prompt.user)
        retry = SchedulerConfig(max_request_retries=0, health_check_interval_s=0.01)
        pool = ReplicaPool([backend], max_outstanding=64, max_batch=1)  # one request per call: a failure hits one
        store = label_store(store_dir)

        def scheduler(grader):
            return Scheduler.from_config({"generator": pool}, retry)

        asyncio.run(run_shard(store, 0, 1, problems, work, scheduler, node_id="n"))

    run(tmp_path / "a", failing="1 + 3")  # no retries: q1's question is an infrastructure failure, left for a re-run
    assert label_store(tmp_path / "a").finished_shards(1) == set()
    assert sorted(read_labels(tmp_path / "a").column("unique_id").unique().to_pylist()) == ["q0", "q2"]
    run(tmp_path / "a", failing=None)
    run(tmp_path / "b", failing=None)
    resumed, clean = (label_store(tmp_path / d).read_results().drop(["wall_s", "node_id"]) for d in ("a", "b"))
    assert resumed.equals(clean) and resumed.num_rows == 6


def test_the_benchmarks_baseline_sends_one_prefix_at_a_time_and_labels_the_same():
    from ttsearch.pipelines.label_bench import one_prefix_at_a_time

    settings = LabelConfig(samples=2, rollouts=2, max_steps=3, reference_prefixes=True)

    def run():
        return label_question(SearchContext("q1", PROBLEM["problem"], SEARCH, seed=0), settings, PROBLEM["solution"])

    together, _ = drive(run(), scripted)
    alone, batches = drive(one_prefix_at_a_time(run()), scripted)
    assert alone == together and len(batches) == 1 + 5 and all(len(batch) == 1 for batch in batches)
