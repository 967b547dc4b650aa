"""Strategy logic against scripted results: no model, no Ray, no clock."""

from __future__ import annotations

import pytest

from tests.fixtures import completions, drive, forms_only, length_scorer, step_generator
from ttsearch.config import RevisionPromptConfig, SearchConfig, StrategySpec
from ttsearch.search.requests import Generate, GenerateResult, Request, Result, Score, ScoreResult
from ttsearch.search.selection import aggregate, select
from ttsearch.search.strategies import Candidate, SearchContext, start

SEARCH = SearchConfig(system_prompt="sys", max_steps=4)


def context(uid: str = "p0", seed: int = 0) -> SearchContext:
    return SearchContext(uid=uid, question="What is 1+1?", search=SEARCH, seed=seed, reference="2")


def test_best_of_n_samples_once_and_scores_every_solution():
    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            return completions("a\n\nb \\boxed{1}", "c \\boxed{2}", "d", eos=True)
        return length_scorer(request)

    candidates, batches = drive(start(context(), 3, StrategySpec.of(name="best_of_n")), respond)
    [generate], scores = batches
    assert generate.n == 3 and generate.stop == () and generate.max_tokens == SEARCH.max_solution_tokens
    assert [s.steps for s in scores] == [("a", "b \\boxed{1}"), ("c \\boxed{2}",), ("d",)]
    assert [c.answer for c in candidates] == ["1", "2", None]
    assert candidates[0].step_scores == (1.0, 0.5)
    assert all(c.finished for c in candidates)


def test_weighted_picks_the_answer_with_the_largest_summed_score():
    cands = [
        Candidate(steps=("\\boxed{7}",), step_scores=(0.3,)),
        Candidate(steps=("\\boxed{7.}",), step_scores=(0.35,)),  # same answer after normalisation
        Candidate(steps=("\\boxed{9}",), step_scores=(0.6,)),
        Candidate(steps=("no answer",), step_scores=(0.99,)),
    ]
    chosen = select(cands, "weighted", "last", forms_only)
    assert chosen.answer == "7.", "0.65 for 7 beats 0.6 for 9; best of group returned"
    assert select(cands, "naive", "last", forms_only).answer is None, "naive takes the highest score, answered or not"
    assert select(cands, "majority", "last", forms_only).answer in ("7", "7.")
    assert select([], "weighted", "last", forms_only) is None


def test_majority_ignores_scores_and_draws_among_tied_answers():
    cands = [
        Candidate(steps=(f"\\boxed{{{a}}}",), step_scores=(s,)) for a, s in [(1, 0.1), (2, 0.9), (2, 0.0), (1, 0.0)]
    ]
    drawn = [select(cands, "majority", "last", forms_only, tie_seed=seed) for seed in range(30)]
    assert {c.answer for c in drawn} == {"1", "2"}, "a 2-2 vote is a tie, whatever the scores"
    assert {cands.index(c) for c in drawn} == {0, 1}, "each group's best-scored member"


def test_aggregations():
    assert aggregate((0.5, 0.2, 0.8), "last") == 0.8
    assert aggregate((0.5, 0.2, 0.8), "min") == 0.2
    assert abs(aggregate((0.5, 0.2, 0.8), "prod") - 0.08) < 1e-12
    assert aggregate((), "min") == 0.0
    cands = [
        Candidate(steps=("\\boxed{1}",), step_scores=(0.9, 0.1)),
        Candidate(steps=("\\boxed{2}",), step_scores=(0.5, 0.5)),
    ]
    assert select(cands, "naive", "last", forms_only).answer == "2"
    assert select(cands, "naive", "min", forms_only).answer == "2"
    assert select(cands, "weighted", "last", forms_only).answer == "2"


def test_beam_search_keeps_the_top_n_over_m_beams_and_expands_each_m_times():
    # First step: 4 samples with last-step scores 0.1, 0.9, 0.5, 0.7 -> keep "s1" and "s3".
    first_scores = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.7}

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            depth = request.prompt.assistant_prefix.count("\n\n")
            if depth == 0:
                return completions("s0", "s1", "s2", "s3")
            return completions(
                *(f"end of {request.prompt.assistant_prefix.strip()} \\boxed{{{i}}}" for i in range(request.n)),
                eos=True,
            )
        assert isinstance(request, Score)
        new_steps = request.steps[request.scored_steps :]
        return ScoreResult(step_scores=tuple(first_scores.get(s, 0.5) for s in new_steps))

    candidates, batches = drive(start(context(), 4, StrategySpec.of(name="beam", beam_width=2)), respond)
    first, _, second, _ = batches
    assert [(r.n, r.prompt.assistant_prefix) for r in first] == [(4, "")]
    assert [(r.n, r.prompt.assistant_prefix) for r in second] == [(2, "s1\n\n"), (2, "s3\n\n")]
    assert len(candidates) == 4 and all(c.finished for c in candidates)
    assert [c.steps[0] for c in candidates] == ["s1", "s1", "s3", "s3"]
    assert candidates[0].step_scores == (0.9, 0.5)


def test_beam_search_keeps_finished_beams_and_stops_at_max_steps():
    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            depth = request.prompt.assistant_prefix.count("\n\n")
            texts = [f"d{depth}.{i}" for i in range(request.n)]
            if depth == 0:  # one of the first samples ends the solution right away
                return GenerateResult(
                    completions=completions(*texts[:-1]).completions + completions("\\boxed{3}", eos=True).completions,
                    prompt_tokens=1,
                )
            return completions(*texts)
        return length_scorer(request)

    search = SearchConfig(max_steps=3)
    ctx = SearchContext(uid="p", question="q", search=search, seed=0)
    candidates, batches = drive(start(ctx, 4, StrategySpec.of(name="beam", beam_width=2)), respond)
    generate_batches = [b for b in batches if isinstance(b[0], Generate)]
    assert len(generate_batches) == 3, "max_steps bounds the depth"
    assert candidates[0].steps == ("\\boxed{3}",) and candidates[0].finished
    assert sum(1 for c in candidates if not c.finished) == 4, "beams alive at max_steps are kept unfinished"
    assert all(len(c.steps) == 3 for c in candidates[1:])


def test_lookahead_spends_n_times_k_plus_one_samples_per_step_and_scores_the_rollout_end():
    k, budget = 2, 4

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            depth = request.prompt.assistant_prefix.count("\n\n")
            return completions(*(f"d{depth}.{i}" for i in range(request.n)))
        # the value of a candidate is its rollout end's score: reward rollouts from "d0.2"
        new_steps = request.steps[request.scored_steps :]
        return ScoreResult(step_scores=tuple(0.9 if request.steps[0] == "d0.2" else 0.1 for _ in new_steps))

    search = SearchConfig(max_steps=2)
    ctx = SearchContext(uid="p", question="q", search=search, seed=0)
    candidates, batches = drive(
        start(ctx, budget, StrategySpec.of(name="lookahead", beam_width=2, lookahead=k)), respond
    )
    generated = [sum(r.n for r in b) for b in batches if isinstance(b[0], Generate)]
    assert generated == [4, 4, 4, 4, 4, 4], "per depth: N step samples + N*k greedy rollout samples"
    assert sum(generated[:3]) == budget * (k + 1)
    rollout_requests = [r for b in batches if isinstance(b[0], Generate) for r in b if r.temperature == 0.0]
    assert len(rollout_requests) == budget * k * 2 and all(r.n == 1 for r in rollout_requests)
    scores = [b for b in batches if isinstance(b[0], Score)]
    assert all(len(s.steps) == 1 + k for s in scores[0]), "the first step is scored after a k-step rollout"
    second_depth = [b for b in batches if isinstance(b[0], Generate)][3]
    assert [r.prompt.assistant_prefix for r in second_depth] == ["d0.2\n\n", "d0.0\n\n"]
    assert all(len(c.steps) == 2 for c in candidates), "rollouts are not kept in the beams"


def test_request_seeds_are_reproducible_and_distinct_per_problem_and_seed():
    def first_seed(ctx: SearchContext) -> int | None:
        return next(start(ctx, 4, StrategySpec.of(name="beam", beam_width=2)))[0].seed

    assert first_seed(context("a", 0)) == first_seed(context("a", 0))
    assert len({first_seed(context("a", 0)), first_seed(context("b", 0)), first_seed(context("a", 1))}) == 3


# name, spec, (generate rounds, samples) at budget N: a request list per round; samples = sequences sampled.
EVERY_STRATEGY = [
    ("best_of_n", StrategySpec.of(name="best_of_n"), lambda n: (1, n)),  # all N at once
    ("beam", StrategySpec.of(name="beam", beam_width=2), lambda n: (3, 3 * n)),  # N per depth, finished at depth 2
    # per unfinished depth N steps + N*k rollout steps, then the N finishing steps need no rollout
    ("lookahead", StrategySpec.of(name="lookahead", beam_width=2, lookahead=1), lambda n: (5, 2 * 2 * n + n)),
    (
        "revisions",
        StrategySpec.of(name="revisions", revision_length=2, revision_window=1),
        lambda n: (2, n),
    ),  # N/2 chains
]
REVISING = SearchConfig(
    system_prompt="sys",
    max_steps=4,
    revision_prompt=RevisionPromptConfig(
        system_suffix="Revise.", attempt_format="Attempt {number}: {attempt}", instruction="Try again."
    ),
)


@pytest.mark.parametrize("budget", [2, 4])
@pytest.mark.parametrize(("name", "spec", "cost"), EVERY_STRATEGY, ids=[name for name, *_ in EVERY_STRATEGY])
def test_every_strategy_spends_its_budget_on_the_fakes_steps(name, spec, cost, budget):
    """Each strategy on the step-writing fake: N candidates built only from the steps the fake wrote, scored by the
    fake scorer, answered, and the samples and rounds the strategy's cost model says."""
    generate, written = step_generator(), set()

    def respond(request: Request) -> Result:
        if isinstance(request, Score):
            return length_scorer(request)
        result = generate(request)
        written.update(step for c in result.completions for step in c.text.split("\n\n"))
        return result

    ctx = SearchContext(uid="p0", question="What is 1+1?", search=REVISING, seed=0, reference="2")
    candidates, batches = drive(start(ctx, budget, spec), respond)
    rounds = [batch for batch in batches if isinstance(batch[0], Generate)]
    assert (len(rounds), sum(r.n for batch in rounds for r in batch)) == cost(budget), "generate rounds, samples"
    assert len(candidates) == budget, "one candidate per unit of budget"
    for candidate in candidates:
        assert set(candidate.steps) <= written, f"{candidate.steps}: not steps the fake wrote"
        depth = 1 if name in ("best_of_n", "revisions") else 3  # whole solutions, or steps until depth 2 finished
        assert len(candidate.steps) == depth and candidate.finished and candidate.answer in ("0", "1")
        assert candidate.step_scores == tuple(1 / (1 + j) for j in range(depth)), "the scorer's scores, kept"
    if name == "revisions":  # the second attempt of each chain is asked with the first one shown
        assert all(
            "Attempt 1: so \\boxed{0}" in r.prompt.user and r.prompt.system == "sys\n\nRevise." for r in rounds[1]
        )
        assert not any("Attempt" in r.prompt.user for r in rounds[0])


@pytest.mark.parametrize(
    "spec", [StrategySpec.of(name="beam", beam_width=2), StrategySpec.of(name="lookahead", beam_width=2, lookahead=1)]
)
def test_tree_search_asks_only_for_new_steps_and_keeps_full_rescoring_scores(spec):
    """Each Score asks from the parent's depth on; the candidates' scores equal a full rescoring of their steps."""

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            depth = request.prompt.assistant_prefix.count("\n\n")
            return completions(*(f"d{depth}.{i}.{request.seed}" for i in range(request.n)))
        return length_scorer(request)

    ctx = SearchContext(uid="p", question="q", search=SearchConfig(max_steps=3), seed=0)
    candidates, batches = drive(start(ctx, 4, spec), respond)
    scores = [r for b in batches for r in b if isinstance(r, Score)]
    assert all(len(r.steps) - r.scored_steps == 1 + getattr(spec.options, "lookahead", 0) for r in scores), (
        "the new step (+ rollout) only"
    )
    assert {r.scored_steps for r in scores} == {0, 1, 2}, "every depth asks from its parent's depth on"
    for candidate in candidates:
        assert candidate.step_scores == length_scorer(Score("q", candidate.steps)).step_scores
