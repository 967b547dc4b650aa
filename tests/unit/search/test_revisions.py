"""Sequential revisions against scripted results: chain structure, window, seeds, scoring, selection."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from tests.fixtures import completions, drive, forms_only, length_scorer
from ttsearch.config import CONF_DIR, SearchConfig, StrategySpec
from ttsearch.search.grading import extract_answer
from ttsearch.search.requests import Generate, Request, Result, Score, ScoreResult
from ttsearch.search.selection import select
from ttsearch.search.strategies import SearchContext, start
from ttsearch.search.strategies.revisions import revision_chains

SEARCH = SearchConfig(system_prompt="sys", max_solution_tokens=77, temperature=0.6)
QUESTION = "What is 1+1?"


@dataclass
class Templates:
    system_suffix: str = "Revise."
    attempt_format: str = "Attempt {number}:\n{attempt}"
    instruction: str = "Try again."


TEMPLATES = Templates()


def context(seed: int = 0) -> SearchContext:
    return SearchContext(uid="p0", question=QUESTION, search=SEARCH, seed=seed, reference="2")


def numbered_attempts() -> Callable[[Request], Result]:
    """The k-th sampled attempt (in request order) is `work k` then `so \\boxed{k}`, ended by EOS."""
    counter = itertools.count()

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            k = next(counter)
            return completions(f"work {k}\n\nso \\boxed{{{k}}}", eos=True)
        return length_scorer(request)

    return respond


def run(budget: int, length: int, window: int = 4, ctx: SearchContext | None = None):
    return drive(revision_chains(ctx or context(), budget, length, window, TEMPLATES), numbered_attempts())


def generate_rounds(batches: list[list[Request]]) -> list[list[Generate]]:
    return [batch for batch in batches if isinstance(batch[0], Generate)]


def test_chains_advance_in_lockstep_and_each_sees_only_its_own_attempts():
    _, batches = run(budget=4, length=2)
    first, second, scores = batches
    assert len(first) == len(second) == 2, "one request per chain per round"
    for request in first + second:
        assert isinstance(request, Generate)
        assert (request.n, request.stop, request.max_tokens, request.temperature) == (1, (), 77, 0.6)
    assert all(r.prompt == context().prompt(()) for r in first), "attempt 1 uses the plain prompt"
    # Round 1 sampled attempt 0 for chain 0 and attempt 1 for chain 1.
    for chain, (own, other) in enumerate([("work 0", "work 1"), ("work 1", "work 0")]):
        prompt = second[chain].prompt
        assert own in prompt.user and other not in prompt.user
        assert prompt.system == "sys\n\nRevise." and prompt.assistant_prefix == ""
    assert len(scores) == 4 and all(isinstance(s, Score) for s in scores), "all attempts scored in one list"


def test_window_shows_only_the_most_recent_attempts_oldest_first():
    _, batches = run(budget=6, length=6, window=2)
    rounds = generate_rounds(batches)
    assert [len(r) for r in rounds] == [1] * 6, "T=N: one fully sequential chain"
    assert rounds[5][0].prompt.user == (
        f"{QUESTION}\n\nAttempt 4:\nwork 3\n\nso \\boxed{{3}}\n\nAttempt 5:\nwork 4\n\nso \\boxed{{4}}\n\nTry again."
    )
    assert "Attempt 1:" in rounds[1][0].prompt.user and "Attempt 2:" not in rounds[1][0].prompt.user


def test_one_attempt_per_chain_is_best_of_n_sample_count_and_prompt():
    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            return completions(*(["\\boxed{1}"] * request.n), eos=True)
        return length_scorer(request)

    candidates, batches = drive(revision_chains(context(), 4, 1, 4, TEMPLATES), respond)
    _, best_of_n_batches = drive(start(context(), 4, StrategySpec.of(name="best_of_n")), respond)
    [[best_of_n_generate], _] = best_of_n_batches
    [sampled, scores] = batches
    assert sum(r.n for r in sampled) == best_of_n_generate.n == 4 and len(scores) == len(candidates) == 4
    assert {r.prompt for r in sampled} == {best_of_n_generate.prompt}


def test_every_attempt_is_a_scored_candidate_chain_by_chain():
    candidates, batches = run(budget=6, length=3)
    scores = batches[-1]
    # 2 chains; attempts are sampled round by round, so chain 0 holds attempts 0, 2, 4.
    assert [c.answer for c in candidates] == ["0", "2", "4", "1", "3", "5"]
    assert [s.steps for s in scores] == [c.steps for c in candidates]
    assert all(s.question == QUESTION and s.reference == "2" for s in scores), "scored against the bare question"
    assert [c.steps for c in candidates] == [(f"work {k}", f"so \\boxed{{{k}}}") for k in (0, 2, 4, 1, 3, 5)]
    assert all(c.step_scores == (1.0, 0.5) and c.finished for c in candidates)


def test_seeds_differ_per_chain_and_round_and_are_reproducible():
    def seeds(ctx: SearchContext) -> list[list[int | None]]:
        return [[r.seed for r in batch] for batch in generate_rounds(run(budget=6, length=3, ctx=ctx)[1])]

    ctx = context()
    assert seeds(ctx) == [[ctx.request_seed(round_, chain) for chain in range(2)] for round_ in range(3)]
    assert len({seed for round_ in seeds(ctx) for seed in round_}) == 6
    assert seeds(context()) == seeds(ctx)
    assert seeds(context(seed=1)) != seeds(ctx)


def test_weighted_selection_sums_scores_across_all_attempts_of_all_chains():
    answers = iter(["7", "9", "5", "7"])  # chain 0: 7 then 5; chain 1: 9 then 7
    score_of = {"7": 0.4, "9": 0.7, "5": 0.1}

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            return completions(f"\\boxed{{{next(answers)}}}", eos=True)
        assert isinstance(request, Score)
        return ScoreResult(step_scores=(score_of[extract_answer(request.steps[-1])],))

    candidates, _ = drive(revision_chains(context(), 4, 2, 4, TEMPLATES), respond)
    assert [c.answer for c in candidates] == ["7", "5", "9", "7"]
    assert select(candidates, "weighted", "last", forms_only).answer == "7", "0.4 + 0.4 across chains beats 0.7"
    assert select(candidates, "naive", "last", forms_only).answer == "9"
    assert select(candidates, "majority", "last", forms_only).answer == "7"


@pytest.mark.parametrize(
    ("budget", "length", "window", "message"),
    [
        (6, 4, 4, "budget 6 is not a positive multiple of revision_length 4"),
        (2, 4, 4, "budget 2 is not a positive multiple of revision_length 4"),
        (4, 0, 4, "revision_length 0"),
        (4, 2, 0, "revision_window must be >= 1"),
    ],
)
def test_bad_budget_length_or_window_fails_clearly(budget: int, length: int, window: int, message: str):
    with pytest.raises(ValueError, match=message):
        next(revision_chains(context(), budget, length, window, TEMPLATES))


def test_start_runs_revisions_from_the_config():
    from dataclasses import replace

    from ttsearch.config import RevisionPromptConfig

    search = replace(SEARCH, revision_prompt=RevisionPromptConfig(**vars(TEMPLATES)))
    ctx = SearchContext(uid="p0", question=QUESTION, search=search, seed=0)
    spec = StrategySpec.of(name="revisions", revision_length=2, revision_window=1)
    _, via_start = drive(start(ctx, 4, spec), numbered_attempts())
    _, direct = drive(revision_chains(ctx, 4, 2, 1, TEMPLATES), numbered_attempts())
    assert via_start == direct


def test_fixed_chain_count_keeps_the_split_across_budgets():
    """`revision_chains: P` runs P chains of N/P attempts at every budget N; P=1 is fully sequential."""
    from dataclasses import replace

    from ttsearch.config import RevisionPromptConfig
    from ttsearch.search.strategies import strategy_label

    search = replace(SEARCH, revision_prompt=RevisionPromptConfig(**vars(TEMPLATES)))
    ctx = SearchContext(uid="p0", question=QUESTION, search=search, seed=0)
    for chains, budget in [(1, 2), (1, 8), (2, 8)]:
        spec = StrategySpec.of(name="revisions", revision_length=4, revision_chains=chains, revision_window=2)
        _, batches = drive(start(ctx, budget, spec), numbered_attempts())
        assert [len(r) for r in generate_rounds(batches)] == [chains] * (budget // chains), (chains, budget)
    assert strategy_label(spec, "majority") == "revisions(P=2,w=2)/majority", "the label names what was held fixed"
    assert strategy_label(spec.with_settings(revision_chains=0), "majority") == "revisions(T=4,w=2)/majority"


def test_shipped_revision_prompt_renders_attempts_verbatim():
    templates = OmegaConf.load(CONF_DIR / "revision_prompt.yaml").search.revision_prompt
    assert set(templates) == {"system_suffix", "attempt_format", "instruction"}

    def respond(request: Request) -> Result:
        if isinstance(request, Generate):
            return completions("x = {1}\n\nso \\boxed{1}", eos=True)
        return length_scorer(request)

    _, batches = drive(revision_chains(context(), 2, 2, 4, templates), respond)
    revised = batches[1][0].prompt
    assert revised.user.startswith(QUESTION) and revised.user.endswith(templates.instruction)
    assert "x = {1}\n\nso \\boxed{1}" in revised.user and "{number}" not in revised.user
    assert revised.system.startswith("sys") and revised.system.endswith(templates.system_suffix)
