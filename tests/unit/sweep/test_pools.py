"""A pooled job's rows: the largest budget searched once, every smaller budget derived from its samples."""

from __future__ import annotations

import asyncio
import itertools

import pyarrow as pa
import pytest

from tests.fixtures import (
    ESTIMATE_COLUMNS,
    PROBLEM,
    FakeScheduler,
    ScriptedGrader,
    boxed,
    result_row,
    seeded_answers,
)
from ttsearch.analysis.pools import pool_standard_errors, sample_counts
from ttsearch.analysis.report import build_report
from ttsearch.config import StrategySpec, load_config, searches
from ttsearch.search.outcomes import Failure, JobOutcome, ModelSizes, Usage
from ttsearch.sweep.jobs import (
    SweepWork,
    outcome_rows,
    row_job_key,
    rows_per_problem,
    sweep_jobs,
)
from ttsearch.sweep.results import RESULT_SCHEMA, ResultsError, RunStore, sweep_fingerprint, with_estimate_columns
from ttsearch.sweep.sharded import run_shard

SIZES = ModelSizes(generator=100, verifier=10)
VERDICTS = {"5": True, "4": False, "3": False}


def pooled_rows(spec: StrategySpec, candidates, budgets, usage: Usage, subsets: int = 256):
    outcome = JobOutcome((PROBLEM, spec, max(budgets), 0), candidates, usage, wall_s=2.0)
    rows = outcome_rows(outcome, ScriptedGrader(VERDICTS), SIZES, budgets, subsets)
    return {(row["budget"], row["selection"]): row for row in rows}


def test_best_of_n_derives_every_smaller_budget_from_the_largest_ones_samples():
    spec = StrategySpec.of(name="best_of_n", selections=["naive", "majority"])
    answers = ["5", "4", "5", "3", "4", "5", "4", "4"]  # 3 of 8 right
    candidates = [boxed(a, 0.1 * (i + 1), generated=10 + i) for i, a in enumerate(answers)]
    usage = Usage(generated_tokens=108, prompt_tokens=50, cached_prompt_tokens=0, samples=8, verifier_tokens=108)
    rows = pooled_rows(spec, candidates, [1, 2, 4, 8], usage)
    assert len(rows) == 8
    one = rows[1, "naive"]
    assert one["accuracy"] == pytest.approx(3 / 8), "budget 1 is pass@1 over all 8 samples, exactly"
    assert one["accuracy_se"] == 0.0 and one["pool_subsets"] == 8, "8 subsets: enumerated"
    assert one["coverage"] == pytest.approx(3 / 8)
    assert one["candidate_answers"] == ["5"] and one["answer"] == "5", "the realisation: budget 1's own sample"
    two = rows[2, "naive"]
    assert two["coverage"] == pytest.approx(1 - (5 * 4) / (8 * 7)), "unbiased pass@2"
    assert (two["samples"], two["generated_tokens"], two["prompt_tokens"]) == (2, 27, 50), "a share; the prompt whole"
    assert two["pool_budget"] == 8 and rows[8, "naive"]["pool_budget"] == 8
    four = rows[4, "majority"]
    assert four["pool_subsets"] == 70 and four["verifier_tokens"] == 0, "C(8,4)=70 subsets; majority reads no score"
    assert rows[8, "naive"]["accuracy"] == 0.0, "the top score (0.8) is a wrong answer"
    assert rows[8, "majority"]["accuracy"] == 0.0, "4 votes for '4' beat 3 for '5'"


def test_drawn_subsets_report_their_monte_carlo_error():
    spec = StrategySpec.of(name="best_of_n", selections=["weighted"])
    answers = ["5", "4"] * 8
    candidates = [boxed(a, 0.05 * i) for i, a in enumerate(answers)]
    rows = pooled_rows(spec, candidates, [4, 16], Usage(samples=16), subsets=64)
    four = rows[4, "weighted"]
    assert four["pool_subsets"] == 64 and four["accuracy_se"] > 0
    assert rows == pooled_rows(spec, candidates, [4, 16], Usage(samples=16), subsets=64), "seeded: the same rows"


def test_dvts_units_are_whole_subtrees_and_bill_a_share_of_every_request():
    spec = StrategySpec.of(name="dvts", beam_width=2, selections=["naive"])
    candidates = [boxed("5", 0.9), boxed("4", 0.2), boxed("4", 0.3), boxed("3", 0.1)]  # subtree 0 right, 1 wrong
    usage = Usage(generated_tokens=40, prompt_tokens=80, samples=4, verifier_tokens=20)
    rows = pooled_rows(spec, candidates, [2, 4], usage)
    two = rows[2, "naive"]
    assert two["accuracy"] == 0.5 and two["candidate_answers"] == ["5", "4"], "one subtree of two"
    assert (two["prompt_tokens"], two["generated_tokens"]) == (40, 20), "a tree's prompts scale with its subtrees"


def test_a_failed_pool_gives_error_rows_at_every_budget_with_no_accuracy():
    spec = StrategySpec.of(name="best_of_n", selections=["naive"])
    outcome = JobOutcome((PROBLEM, spec, 4, 0), None, Usage(), wall_s=0.0, error="boom")
    rows = outcome_rows(outcome, ScriptedGrader(VERDICTS), SIZES, [1, 4], 16)
    assert [(row["budget"], row["error"], row["accuracy"]) for row in rows] == [(1, "boom", None), (4, "boom", None)]


def test_pooled_strategies_search_only_the_largest_budget_and_their_rows_name_that_job():
    cfg = load_config(
        "conf/revision_prompt.yaml",
        overrides=[
            "budgets=[2,4,8]",
            "search.max_solution_tokens=256",
            "strategies=[{name: best_of_n}, {name: beam, beam_width: 2}, {name: dvts, beam_width: 2},"
            " {name: revisions, revision_length: 2}, {name: revisions, revision_chains: 2}]",
        ],
    )
    searched = [(spec.name, spec.options, budget) for _, spec, budget, _ in sweep_jobs([PROBLEM], cfg)]
    assert [(name, budget) for name, _, budget in searched] == [
        ("best_of_n", 8),
        *[("beam", b) for b in (2, 4, 8)],
        ("dvts", 8),
        ("revisions", 8),
        *[("revisions", b) for b in (2, 4, 8)],  # a fixed chain count changes the chain length with the budget
    ]
    assert searches(cfg.strategies[0], [4]) == [(cfg.strategies[0], 4)]
    derived = result_row("q", "best_of_n", "best_of_n/naive", 2, 0, [True], True, strategy_config="best_of_n")
    work = SweepWork(cfg, SIZES)
    assert work.key_of_row(derived | {"pool_budget": 8}) == ("q", "best_of_n", 8, 0)
    assert row_job_key(derived | {"pool_budget": None}) == ("q", "best_of_n", 2, 0), "an older row: its own job"
    assert len(work.job_keys([PROBLEM])) == 1 + 3 + 1 + 1 + 3


def test_rows_written_before_the_pools_read_their_own_realisation():
    row = result_row("q", "best_of_n", "best_of_n/naive", 2, 0, [False, True], False)
    row = {key: value for key, value in row.items() if key not in ESTIMATE_COLUMNS}
    old = pa.Table.from_pylist([row, row | {"correct": None}], schema=RESULT_SCHEMA)
    upgraded = with_estimate_columns(old).to_pylist()
    assert [(r["accuracy"], r["accuracy_se"], r["coverage"], r["pool_budget"]) for r in upgraded] == [
        (0.0, 0.0, 1.0, 2),
        (None, 0.0, 1.0, 2),
    ]


@pytest.mark.parametrize("strategy", ["{name: best_of_n}", "{name: early_stop, early_stop_round: 1}"])
def test_a_best_of_n_sweep_over_budgets_1_to_64_generates_the_samples_of_budget_64_once(tmp_path, strategy):
    problems = [{"unique_id": f"p{i}", "problem": "?", "answer": "1", "subject": "A", "level": 1} for i in range(3)]

    def generated(budgets: str) -> int:
        overrides = [f"budgets={budgets}", f"strategies=[{strategy}]", "verifier.kind=majority", "search.max_steps=2"]
        cfg = load_config(overrides=overrides)
        scheduler = FakeScheduler()
        store = RunStore(tmp_path / budgets)
        result = asyncio.run(run_shard(store, 0, 1, problems, SweepWork(cfg, SIZES), lambda grader: scheduler))
        assert result.rows == len(problems) * len(cfg.budgets) and result.missing == 0
        if "best_of_n" in strategy:  # early stopping's rows bill what each budget spends, not the pool
            counts = sample_counts(store.read_results())
            assert (counts.generated, counts.alone) == (scheduler.samples, len(problems) * sum(cfg.budgets))
        return scheduler.samples

    assert generated("[1,2,4,8,16,32,64]") == 3 * 64, "one pool of 64 samples per problem"
    if "best_of_n" in strategy:
        assert generated("[64]") == 3 * 64


def test_early_stopping_over_best_of_n_replays_its_rule_over_ordered_draws_from_the_pool():
    spec = StrategySpec.of(name="early_stop", early_stop_round=2, early_stop_share=0.75, selections=["majority"])
    answers = ["5", "5", "4", "5", "3", "5", "4", "5"]  # 5 of 8 right
    candidates = [boxed(a, 0.5) for a in answers]
    rows = pooled_rows(spec, candidates, [4, 8], Usage(generated_tokens=800, samples=8), subsets=4000)
    four = rows[4, "majority"]

    def spent(order):  # the rule, written out: stop after 2 if both agree, else spend all 4
        return 2 if order[0] == order[1] else 4

    def right(order):  # majority over what was spent, ties by expectation
        counts = {a: order[: spent(order)].count(a) for a in set(order[: spent(order)])}
        top = [a for a, n in counts.items() if n == max(counts.values())]
        return sum(a == "5" for a in top) / len(top)

    orders = list(itertools.permutations(answers, 4))
    assert four["accuracy"] == pytest.approx(sum(map(right, orders)) / len(orders), abs=4 * four["accuracy_se"])
    expected_samples = sum(map(spent, orders)) / len(orders)
    assert four["samples"] == round(expected_samples) and four["generated_tokens"] < 400, "billed what it spent"
    assert four["candidate_answers"] == ["5", "5"], "the realisation: the pool's first samples stop after a round"
    assert four["pool_budget"] == 8 and rows[8, "majority"]["pool_subsets"] == 4000


def test_raising_the_largest_budget_extends_the_saved_pools_and_searches_only_the_new_budget(tmp_path):
    problems = [{"unique_id": f"p{i}", "problem": f"{i}?", "answer": "1", "subject": "A", "level": 1} for i in range(2)]
    both = "[{name: best_of_n, selections: [naive, majority]}, {name: beam, beam_width: 2}]"

    def sweep(directory: str, budgets: str, strategies: str = both) -> tuple[FakeScheduler, list[dict]]:
        overrides = [f"budgets={budgets}", f"strategies={strategies}", "verifier.kind=majority", "search.max_steps=2"]
        cfg = load_config(overrides=overrides)
        store = RunStore(tmp_path / directory)
        store.claim(sweep_fingerprint(cfg, problems), cfg)
        scheduler = FakeScheduler(respond=seeded_answers)
        result = asyncio.run(run_shard(store, 0, 1, problems, SweepWork(cfg, SIZES), lambda grader: scheduler))
        assert result.missing == 0 and result.rows == len(problems) * rows_per_problem(cfg)
        graded = store.grading()
        assert graded.num_graded > 0 and graded.num_failed_twice == 0, "the shard saved its grading statistics"
        return scheduler, store.read_results().to_pylist()

    sweep("grown", "[2,4]")
    grown, rows = sweep("grown", "[2,4,8]")
    assert sorted(key[2:] for key in grown.ran) == [(8, 0)] * 4, "per problem: the best-of-N pool and beam at 8"
    _, fresh = sweep("fresh", "[2,4,8]")

    def comparable(table: list[dict]) -> list[dict]:
        return sorted(({k: v for k, v in row.items() if k != "wall_s"} for row in table), key=str)

    assert comparable(rows) == comparable(fresh), "the same rows as a sweep that started at the larger budget"
    with pytest.raises(ResultsError, match="differs in: budgets"):
        sweep("grown", "[2]")
    sweep("alone", "[2,4]", "[{name: best_of_n}]")
    extended, _ = sweep("alone", "[2,4,8]", "[{name: best_of_n}]")
    assert extended.samples == len(problems) * 4, "only the 4 samples the pool lacked"


def test_the_report_shows_what_the_pools_saved_and_both_estimates_errors(tmp_path):
    problems = [{"unique_id": f"p{i}", "problem": f"{i}?", "answer": "1", "subject": "A", "level": 1} for i in range(6)]
    cfg = load_config(overrides=["budgets=[1,2,4,8]", "strategies=[{name: best_of_n, selections: [majority]}]"])
    store = RunStore(tmp_path)
    store.claim(sweep_fingerprint(cfg, problems), cfg)
    scheduler = FakeScheduler(respond=seeded_answers)
    asyncio.run(run_shard(store, 0, 1, problems, SweepWork(cfg, SIZES), lambda grader: scheduler))
    frame = store.load_frame()
    errors = pool_standard_errors(frame).set_index("budget")
    assert list(errors.index) == [1, 2, 4] and (errors["questions"] == 6).all()
    derived = frame[frame["budget"] < 8].groupby("budget")
    assert errors["pool accuracy %"].tolist() == pytest.approx((100 * derived["accuracy"].mean()).tolist())
    assert errors["first-k accuracy %"].tolist() == pytest.approx((100 * derived["correct"].mean()).tolist())
    markdown = build_report(store).path.read_text()
    assert "## Sample pools" in markdown
    assert "Samples: 48 generated; each budget searched alone: 90, 47% saved" in markdown
    one = frame[frame["budget"] == 1]
    assert one["coverage"].tolist() == pytest.approx(one["accuracy"].tolist()), "pass@1 is the expected accuracy"


def test_a_pool_whose_extension_failed_is_kept_and_extended_by_the_rerun(tmp_path):
    problems = [{"unique_id": f"p{i}", "problem": f"{i}?", "answer": "1", "subject": "A", "level": 1} for i in range(2)]

    def sweep(budgets: str, fail=lambda key: None) -> FakeScheduler:
        cfg = load_config(overrides=[f"budgets={budgets}", "strategies=[{name: best_of_n}]", "verifier.kind=majority"])
        store = RunStore(tmp_path)
        store.claim(sweep_fingerprint(cfg, problems), cfg)
        scheduler = FakeScheduler(fail, respond=seeded_answers)
        asyncio.run(run_shard(store, 0, 1, problems, SweepWork(cfg, SIZES), lambda grader: scheduler))
        return scheduler

    sweep("[2,4]")
    lost = ("p1", "best_of_n", 8, 0)
    sweep("[2,4,8]", lambda key: Failure.INFRASTRUCTURE if key == lost else None)
    saved = RunStore(tmp_path).read_partial(0, 1).to_pylist()
    assert {(r["unique_id"], r["pool_budget"]) for r in saved} == {("p0", 8), ("p1", 4)}, "p1's old pool kept"
    rerun = sweep("[2,4,8]")
    assert rerun.ran == [lost] and rerun.samples == 4, "the re-run extends p1's saved pool, nothing else"
    assert {r["pool_budget"] for r in RunStore(tmp_path).read_results().to_pylist()} == {8}
