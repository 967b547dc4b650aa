"""Selection and the rows of a job: votes grouped by mathematical equivalence, ungraded verdicts kept
apart from wrong ones, and each selection billed only the compute it reads (no Ray, no model)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.fixtures import PROBLEM, ScriptedGrader, boxed, forms_only
from ttsearch.config import StrategySpec
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import JobOutcome, ModelSizes, Usage
from ttsearch.search.selection import answer_groups, select
from ttsearch.search.strategies import Candidate
from ttsearch.sweep.jobs import outcome_rows


class ScriptedSame:
    """`SameAnswers` from a list of equal pairs (either order); records every comparison asked."""

    def __init__(self, *equal: tuple[str, str]):
        self.equal = {frozenset(pair) for pair in equal}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, answer: str, others: Sequence[str]) -> list[bool]:
        self.asked += [(answer, other) for other in others]
        return [frozenset((answer, other)) in self.equal for other in others]


def test_canonical_forms_group_without_asking_math_verify():
    same = ScriptedSame()
    groups = answer_groups(["276,000", r"\$276,000", "276000", "6", "6.00", None, " "], same)
    assert groups == [0, 0, 0, 1, 1, None, None]
    assert same.asked == [("6", "276,000")], "one comparison per new canonical form, against each group"


def test_math_verify_equivalence_joins_forms_the_strings_cannot():
    same = ScriptedSame((r"\frac{1}{2}", "0.5"), (r"\frac{1}{2}", r"\frac{2}{4}"))
    assert answer_groups([r"\frac{1}{2}", "3", "0.5", r"\frac{2}{4}", "3"], same) == [0, 1, 0, 0, 1]


def test_seventeen_right_votes_split_three_ways_beat_fifteen_wrong():
    # The case: string grouping made 15 wrong votes win over 17 right ones written three ways.
    candidates = [boxed("276,000")] * 6 + [boxed(r"\$276,000")] * 6 + [boxed("276000")] * 5 + [boxed("275000")] * 15
    assert select(candidates, "majority", "last", forms_only).answer == "276,000"
    weighted = [boxed("6", 0.3)] * 3 + [boxed("6.00", 0.3)] * 3 + [boxed("7", 0.5)] * 3  # 1.8 vs 1.5
    assert select(weighted, "weighted", "last", forms_only).answer == "6"


def test_weighted_sums_a_group_joined_by_equivalence_and_returns_its_best_candidate():
    same = ScriptedSame((r"\frac{1}{2}", "0.5"))
    candidates = [boxed(r"\frac{1}{2}", 0.4), boxed("0.3", 0.7), boxed("0.5", 0.5)]  # 0.9 vs 0.7
    chosen = select(candidates, "weighted", "last", same)
    assert chosen is candidates[2], "the group wins; its highest-scored member is returned"
    assert select(candidates, "weighted", "last", forms_only).answer == "0.3", "without equivalence 0.7 wins"


def test_tied_groups_are_drawn_by_the_seed_and_nobody_answering_falls_back_to_naive():
    tied = [boxed("2"), boxed("3")]
    assert {select(tied, "majority", "last", forms_only, tie_seed=seed).answer for seed in range(30)} == {"2", "3"}
    assert select(tied, "majority", "last", forms_only, 7) is select(tied, "majority", "last", forms_only, 7)
    silent = [boxed(None, 0.2), boxed(None, 0.9)]
    assert select(silent, "majority", "last", forms_only) is silent[1]


def test_real_grader_groups_equal_answers(grader: Grader):
    candidates = [boxed(r"\frac{1}{2}")] * 2 + [boxed("0.5")] * 2 + [boxed("0.6")] * 3
    assert select(candidates, "majority", "last", grader.same_answers).answer == r"\frac{1}{2}"
    assert grader.same_answers("6", ["6.00", "6.01", r"\frac{12}{2}"]) == [True, False, True]


@pytest.fixture(scope="module")
def grader():
    with Grader() as shared:
        yield shared


SIZES = ModelSizes(generator=100, verifier=10)


def rows_of(spec: StrategySpec, candidates: list[Candidate], verdicts: dict[str, bool | None]) -> dict[str, dict]:
    usage = Usage(generated_tokens=30, prompt_tokens=20, cached_prompt_tokens=5, samples=3, verifier_tokens=40)
    outcome = JobOutcome((PROBLEM, spec, 3, 0), candidates, usage, wall_s=1.0)
    return {row["selection"]: row for row in outcome_rows(outcome, ScriptedGrader(verdicts), SIZES)}


def test_majority_reads_no_verifier_score_and_is_billed_none_of_it():
    spec = StrategySpec.of(name="best_of_n", selections=["naive", "weighted", "majority"])
    candidates = [boxed("5", 0.9, 10), boxed("4", 0.1, 12), boxed("4", 0.2, 8)]
    rows = rows_of(spec, candidates, {"5": True, "4": False})
    generator_flops = 2 * 100 * (30 + 20 - 5)
    for selection in ("naive", "weighted"):
        assert rows[selection]["verifier_tokens"] == 40
        assert rows[selection]["verifier_flops"] == 2 * 10 * 40
        assert rows[selection]["total_flops"] == generator_flops + 800
    assert (rows["majority"]["verifier_tokens"], rows["majority"]["verifier_flops"]) == (0, 0.0)
    assert rows["majority"]["total_flops"] == rows["majority"]["generator_flops"] == generator_flops
    assert rows["majority"]["answer"] == "4" and rows["majority"]["correct"] is False
    assert rows["naive"]["candidate_generated_tokens"] == [10, 12, 8]
    assert rows["naive"]["candidate_verifier_tokens"] == [10, 12, 8]


def test_a_search_steered_by_the_verifier_bills_it_under_every_selection():
    spec = StrategySpec.of(name="beam", beam_width=2, selections=["majority"])
    rows = rows_of(spec, [boxed("5", 0.9), boxed("5", 0.1)], {"5": True})
    assert rows["majority"]["verifier_tokens"] == 40 and rows["majority"]["verifier_flops"] == 800
    assert rows["majority"]["candidate_generated_tokens"] == [None, None], "tree candidates have no own cost"


def test_an_ungraded_choice_is_recorded_as_ungraded_not_wrong():
    spec = StrategySpec.of(name="best_of_n", selections=["naive", "majority"])
    rows = rows_of(spec, [boxed("7", 0.9), boxed("5", 0.1), boxed("5", 0.2)], {"7": None, "5": True})
    assert rows["naive"]["correct"] is None
    assert rows["majority"]["correct"] is True
    assert rows["naive"]["candidate_correct"] == [None, True, True]
