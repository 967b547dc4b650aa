"""DVTS, REBASE, particle filtering and early stopping against scripted results: no model, no Ray, no clock.

Most tests use `keyed_generator`: it recovers each Generate request's (depth, key) from its seed (every step-level
search seeds a request by `ctx.request_seed(depth, key)`) and writes the step `d<depth>k<key>c<i>` for its i-th
sample, so a test can script the verifier's score, or an EOS, per sampled step by that step's text.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import replace

import pytest

from tests.fixtures import completions, drive, length_scorer, step_generator
from ttsearch.config import (
    ConfigError,
    SearchConfig,
    StrategySpec,
    largest_request,
    load_config,
    strategy_errors,
    worst_case_tokens,
)
from ttsearch.search.requests import Completion, Generate, GenerateResult, Request, Result, Score, ScoreResult
from ttsearch.search.strategies import SearchContext, search_reads_verifier, start, strategy_config, strategy_label
from ttsearch.search.strategies.early_stop import leading_share
from ttsearch.search.strategies.rebase import apportion, softmax


def context(uid: str = "p0", seed: int = 0, max_steps: int = 4) -> SearchContext:
    search = SearchConfig(system_prompt="sys", max_steps=max_steps)
    return SearchContext(uid=uid, question="What is 1+1?", search=search, seed=seed, reference="2")


def keyed_generator(ctx: SearchContext, ends: Collection[str] = ()) -> Callable[[Request], Result]:
    """Writes `d<depth>k<key>c<i>` for the i-th sample of the request seeded (depth, key); a step named in `ends`
    comes back ended by EOS, every other one stopped at the step delimiter."""
    keys = {ctx.request_seed(depth, key): (depth, key) for depth in range(8) for key in range(128)}

    def respond(request: Request) -> Result:
        assert isinstance(request, Generate)
        depth, key = keys[request.seed]
        texts = [f"d{depth}k{key}c{i}" for i in range(request.n)]
        return GenerateResult(
            completions=tuple(Completion(t, 5, "stop", None if t in ends else "\n\n") for t in texts),
            prompt_tokens=10,
        )

    return respond


def step_scorer(scores: dict[str, float], default: float = 0.5) -> Callable[[Request], Result]:
    """Scores each new step by its text (`default` for steps not listed)."""

    def respond(request: Request) -> Result:
        assert isinstance(request, Score)
        return ScoreResult(step_scores=tuple(scores.get(s, default) for s in request.steps[request.scored_steps :]))

    return respond


def both(generate: Callable[[Request], Result], score: Callable[[Request], Result]) -> Callable[[Request], Result]:
    return lambda request: generate(request) if isinstance(request, Generate) else score(request)


def generates(batches: list[list[Request]]) -> list[list[Generate]]:
    return [batch for batch in batches if isinstance(batch[0], Generate)]


def prefixes(batch: list[Generate]) -> list[str]:
    return [request.prompt.assistant_prefix for request in batch]


# ---------------------------------------------------------------------------------------------------------------
# DVTS


def test_dvts_runs_n_over_m_subtrees_each_expanded_m_ways_and_moving_to_its_best_child():
    ctx = context(max_steps=2)
    # subtrees 0 and 2 prefer their second child, 1 and 3 their first
    scores = {f"d0k{k}c{i}": 0.9 if i == (k + 1) % 2 else 0.1 for k in range(4) for i in range(2)}
    candidates, batches = drive(
        start(ctx, 8, StrategySpec.of(name="dvts", beam_width=2)), both(keyed_generator(ctx), step_scorer(scores))
    )
    first, second = generates(batches)
    assert [(r.n, r.prompt.assistant_prefix) for r in first] == [(2, "")] * 4, "N/M = 4 subtrees, M = 2 ways each"
    assert [r.n for r in second] == [2, 2, 2, 2]
    assert prefixes(second) == ["d0k0c1\n\n", "d0k1c0\n\n", "d0k2c1\n\n", "d0k3c0\n\n"], "each follows its best"
    assert [c.steps for c in candidates] == [
        (best, f"d1k{k}c{i}") for k, best in enumerate(["d0k0c1", "d0k1c0", "d0k2c1", "d0k3c0"]) for i in range(2)
    ], "each subtree's last M children, subtree by subtree"
    assert all(c.step_scores == (0.9, 0.5) and not c.finished for c in candidates)
    scored = [r for batch in batches for r in batch if isinstance(r, Score)]
    assert [r.scored_steps for r in scored] == [0] * 8 + [1] * 8, "only each child's new step is scored"


def root_scorer(good_root: str) -> Callable[[Request], Result]:
    """Every step of a path that starts with `good_root` scores 0.9, every other step 0.1."""

    def respond(request: Request) -> Result:
        assert isinstance(request, Score)
        value = 0.9 if request.steps[0] == good_root else 0.1
        return ScoreResult(step_scores=tuple(value for _ in request.steps[request.scored_steps :]))

    return respond


def test_dvts_subtrees_stay_apart_where_beam_search_crowds_into_the_best_branch():
    """One first step whose descendants all score high: beam search ends with every candidate under it, DVTS keeps
    each subtree on its own root."""
    ctx = context(max_steps=4)
    respond = both(keyed_generator(ctx), root_scorer("d0k0c0"))  # the first sample of both searches' first request
    beam, _ = drive(start(ctx, 8, StrategySpec.of(name="beam", beam_width=2)), respond)
    assert [c.steps[0] for c in beam] == ["d0k0c0"] * 8, "beam search: the good branch takes every beam"
    dvts, _ = drive(start(ctx, 8, StrategySpec.of(name="dvts", beam_width=2)), respond)
    assert len(dvts) == 8 and all(len(c.steps) == 4 for c in dvts)
    assert [c.steps[0] for c in dvts] == [f"d0k{k}c0" for k in range(4) for _ in range(2)], "one root per subtree"
    assert [c.step_scores for c in dvts] == [(0.9,) * 4] * 2 + [(0.1,) * 4] * 6, "low subtrees are not taken over"


def test_dvts_stops_a_subtree_whose_best_child_ends_while_the_others_go_on():
    ctx = context(max_steps=3)
    ends = {"d0k1c1", "d0k2c0"}  # subtree 1's best child ends; subtree 2's ending child is not its best
    scores = {"d0k1c1": 0.9, "d0k2c0": 0.1}
    candidates, batches = drive(
        start(ctx, 6, StrategySpec.of(name="dvts", beam_width=2)), both(keyed_generator(ctx, ends), step_scorer(scores))
    )
    rounds = generates(batches)
    assert [len(batch) for batch in rounds] == [3, 2, 2], "subtree 1 is not expanded after its best child ended"
    assert [r.seed for r in rounds[1]] == [ctx.request_seed(1, 0), ctx.request_seed(1, 2)], "keys stay the subtree's"
    assert prefixes(rounds[1]) == ["d0k0c0\n\n", "d0k2c1\n\n"]
    assert len(candidates) == 6
    assert [(c.steps, c.finished) for c in candidates[2:4]] == [(("d0k1c0",), False), (("d0k1c1",), True)]
    # subtree 2's ended sibling "d0k2c0" is not among them: only each subtree's last M children are (search-and-learn)
    assert [c.steps for c in candidates[4:]] == [("d0k2c1", "d1k2c0", "d2k2c0"), ("d0k2c1", "d1k2c0", "d2k2c1")]
    assert not any(c.finished for c in candidates[:2] + candidates[4:])


def test_dvts_seeds_depend_on_depth_and_subtree_so_a_rerun_sends_identical_requests():
    ctx = context(max_steps=3)
    respond = both(keyed_generator(ctx), step_scorer({"d0k0c1": 0.8, "d1k2c1": 0.7}))
    candidates, batches = drive(start(ctx, 12, StrategySpec.of(name="dvts", beam_width=4)), respond)
    again, batches_again = drive(start(ctx, 12, StrategySpec.of(name="dvts", beam_width=4)), respond)
    assert batches == batches_again and candidates == again
    rounds = generates(batches)
    seeds = [[r.seed for r in batch] for batch in rounds]
    assert seeds == [[ctx.request_seed(depth, k) for k in range(3)] for depth in range(3)], "seeded (depth, subtree)"
    assert len({r.seed for batch in rounds for r in batch}) == 9
    other = context(seed=1, max_steps=3)
    assert next(start(other, 12, StrategySpec.of(name="dvts", beam_width=4)))[0].seed != rounds[0][0].seed


# ---------------------------------------------------------------------------------------------------------------
# REBASE


def test_rebase_expands_the_root_once_n_ways():
    ctx = context()
    [[root]] = [next(start(ctx, 6, StrategySpec.of(name="rebase")))]
    assert (root.n, root.prompt.assistant_prefix, root.seed) == (6, "", ctx.request_seed(0, 0))
    assert root.stop == ("\n\n",) and root.max_tokens == ctx.search.max_step_tokens


def test_rebase_shares_the_width_by_softmax_of_scores_apportioned_by_largest_remainder():
    # softmax([0.9, 0.5, 0.5, 0.1] / 0.2) * 4 = [3.10, 0.42, 0.42, 0.06]: floors [3, 0, 0, 0], the one left over
    # to the larger remainder, the earlier of the two 0.42s; children 2 and 3 get width 0 and are pruned
    ctx = context(max_steps=2)
    scores = {"d0k0c0": 0.9, "d0k0c1": 0.5, "d0k0c2": 0.5, "d0k0c3": 0.1}
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="rebase", rebase_temperature=0.2)),
        both(keyed_generator(ctx), step_scorer(scores)),
    )
    root, second = generates(batches)
    assert [(r.prompt.assistant_prefix, r.n, r.seed) for r in second] == [
        ("d0k0c0\n\n", 3, ctx.request_seed(1, 0)),
        ("d0k0c1\n\n", 1, ctx.request_seed(1, 1)),
    ]
    assert [c.steps for c in candidates] == [
        ("d0k0c0", "d1k0c0"),
        ("d0k0c0", "d1k0c1"),
        ("d0k0c0", "d1k0c2"),
        ("d0k0c1", "d1k1c0"),
    ], "at max_steps the unfinished children are returned"
    assert not any(c.finished for c in candidates) and candidates[0].step_scores == (0.9, 0.5)


def test_rebase_finished_children_reduce_the_width_left():
    # one of the 4 first steps ends: softmax([0.9, 0.5, 0.1] / 1) * 3 = [1.42, 0.95, 0.64] -> [1, 1, 1]
    ctx = context(max_steps=2)
    scores = {"d0k0c0": 0.9, "d0k0c1": 0.99, "d0k0c2": 0.5, "d0k0c3": 0.1}
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="rebase", rebase_temperature=1.0)),
        both(keyed_generator(ctx, ends={"d0k0c1"}), step_scorer(scores)),
    )
    _, second = generates(batches)
    assert [(r.prompt.assistant_prefix, r.n) for r in second] == [
        ("d0k0c0\n\n", 1),
        ("d0k0c2\n\n", 1),
        ("d0k0c3\n\n", 1),
    ], "the finished child's score takes no share; the width is N - 1"
    assert (candidates[0].steps, candidates[0].finished) == (("d0k0c1",), True)
    assert len(candidates) == 4 and sum(c.finished for c in candidates) == 1


def test_rebase_keeps_exactly_n_solutions_finished_plus_returned_at_max_steps():
    ctx = context(max_steps=3)
    ends = {"d0k0c7", "d1k2c0", "d1k5c0"}  # equal scores: every live child gets width 1
    candidates, batches = drive(
        start(ctx, 8, StrategySpec.of(name="rebase")), both(keyed_generator(ctx, ends), step_scorer({}))
    )
    assert [sum(r.n for r in batch) for batch in generates(batches)] == [8, 7, 5], "N minus the finished so far"
    assert len(candidates) == 8
    assert [c.steps[-1] for c in candidates if c.finished] == ["d0k0c7", "d1k2c0", "d1k5c0"]
    assert sum(not c.finished and len(c.steps) == 3 for c in candidates) == 5


def test_rebase_stops_once_n_solutions_have_finished():
    ctx = context(max_steps=6)
    candidates, batches = drive(start(ctx, 4, StrategySpec.of(name="rebase")), both(step_generator(1), length_scorer))
    assert [sum(r.n for r in batch) for batch in generates(batches)] == [4, 4], "no request after all 4 ended"
    assert len(candidates) == 4 and all(c.finished and c.answer in ("0", "1") for c in candidates)


@pytest.mark.parametrize(
    ("temperature", "widths"),
    [(0.01, [8]), (0.2, [5, 2, 1]), (0.5, [2, 2, 1, 1, 1, 1]), (100.0, [1] * 8)],
)
def test_rebase_low_temperature_concentrates_the_width_on_the_best_child_and_high_spreads_it(temperature, widths):
    ctx = context(max_steps=2)
    values = [0.9, 0.7, 0.5, 0.3, 0.1, 0.1, 0.1, 0.1]
    scores = {f"d0k0c{i}": value for i, value in enumerate(values)}
    _, batches = drive(
        start(ctx, 8, StrategySpec.of(name="rebase", rebase_temperature=temperature)),
        both(keyed_generator(ctx), step_scorer(scores)),
    )
    _, second = generates(batches)
    assert [r.n for r in second] == widths
    assert prefixes(second) == [f"d0k0c{i}\n\n" for i in range(len(widths))], "best first; width-0 children pruned"


def test_softmax_sums_to_one_keeps_order_and_does_not_overflow():
    assert softmax([0.0, 0.0]) == [0.5, 0.5]
    weights = softmax([3.0, 1.0, 2.0])
    assert math.isclose(sum(weights), 1.0) and weights[0] > weights[2] > weights[1]
    assert math.isclose(weights[0] / weights[1], math.e**2)
    assert softmax([1000.0, 0.0]) == [1.0, 0.0]


def test_apportion_sums_to_the_total_by_largest_remainder_ties_to_the_earlier():
    assert apportion(4, [0.25] * 4) == [1, 1, 1, 1]
    assert apportion(5, [0.5, 0.3, 0.2]) == [3, 1, 1], "2.5 and 1.5 tie on remainder: the earlier gets the extra"
    assert apportion(2, [1 / 3] * 3) == [1, 1, 0]
    assert apportion(1, [0.5, 0.5]) == [1, 0]
    assert apportion(7, [0.1, 0.6, 0.3]) == [1, 4, 2]  # 0.7, 4.2, 2.1: floors 0, 4, 2, the extra to the 0.7
    assert apportion(0, [0.5, 0.5]) == [0, 0]
    rng = random.Random(0)
    for total in range(1, 40):
        shares = softmax([rng.uniform(-3, 3) for _ in range(rng.randint(1, 9))])
        counts = apportion(total, shares)
        assert sum(counts) == total and all(abs(c - total * s) < 1 for c, s in zip(counts, shares, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Particle filtering


def test_particle_filter_gives_every_particle_one_step_per_round():
    ctx = context(max_steps=2)
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="particle_filter")), both(keyed_generator(ctx), step_scorer({}))
    )
    rounds = generates(batches)
    assert [[(r.n, r.seed) for r in batch] for batch in rounds] == [
        [(1, ctx.request_seed(depth, i)) for i in range(4)] for depth in range(2)
    ], "N requests of one sample, each particle index its own seed"
    assert prefixes(rounds[0]) == [""] * 4
    assert [c.steps[-1] for c in candidates] == [f"d1k{i}c0" for i in range(4)], "no resampling after the last round"
    assert all(len(c.steps) == 2 and not c.finished for c in candidates)


def test_particle_filter_resamples_every_particle_from_the_one_the_verifier_favours():
    ctx = context(max_steps=3)
    scores = {f"d0k{i}c0": 1.0 if i == 2 else 0.0 for i in range(4)}  # logits +-16.1: weight e^-32 for the others
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="particle_filter")), both(keyed_generator(ctx), step_scorer(scores))
    )
    rounds = generates(batches)
    assert prefixes(rounds[1]) == ["d0k2c0\n\n"] * 4
    assert [r.seed for r in rounds[1]] == [ctx.request_seed(1, i) for i in range(4)], "copies sample different steps"
    assert len(candidates) == 4 and all(c.steps[0] == "d0k2c0" for c in candidates)
    assert all(c.step_scores[0] == 1.0 for c in candidates)


def test_particle_filter_resampling_draws_by_softmax_of_logit_score_over_temperature():
    ctx, budget, temperature = context(max_steps=2), 64, 0.5
    values = [0.9, 0.6, 0.4, 0.2]
    scores = {f"d0k{i}c0": values[i % 4] for i in range(budget)}
    _, batches = drive(
        start(ctx, budget, StrategySpec.of(name="particle_filter", particle_temperature=temperature)),
        both(keyed_generator(ctx), step_scorer(scores)),
    )
    weights = softmax([math.log(values[i % 4] / (1 - values[i % 4])) / temperature for i in range(budget)])
    drawn = random.Random(ctx.request_seed("resample", 0)).choices(range(budget), weights, k=budget)
    assert prefixes(generates(batches)[1]) == [f"d0k{i}c0\n\n" for i in drawn]
    ancestry = Counter(i % 4 for i in drawn)
    assert ancestry[0] > ancestry[3], "the better score is drawn more often"


@pytest.mark.parametrize(("temperature", "fewest", "most"), [(0.05, 1, 1), (100.0, 4, 4)])
def test_particle_filter_low_temperature_keeps_only_the_best_particle_and_high_keeps_all(temperature, fewest, most):
    ctx = context(max_steps=2)
    scores = {f"d0k{i}c0": [0.9, 0.6, 0.4, 0.2][i % 4] for i in range(32)}
    _, batches = drive(
        start(ctx, 32, StrategySpec.of(name="particle_filter", particle_temperature=temperature)),
        both(keyed_generator(ctx), step_scorer(scores)),
    )
    scores_kept = {scores[prefix.strip()] for prefix in prefixes(generates(batches)[1])}
    assert fewest <= len(scores_kept) <= most
    assert 0.9 in scores_kept


def test_particle_filter_keeps_finished_particles_in_the_population_without_extending_them():
    ctx = context(uid="p1", max_steps=2)
    scores = {"d0k0c0": 0.9, "d0k1c0": 0.9, "d0k2c0": 0.0, "d0k3c0": 0.0}  # 2 and 3 die out
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="particle_filter")),
        both(keyed_generator(ctx, ends={"d0k0c0"}), step_scorer(scores)),
    )
    _, second = generates(batches)
    finished = [i for i, c in enumerate(candidates) if c.finished]
    assert 0 < len(finished) < 4, "this uid's draws mix the finished particle and the live one"
    live = [i for i in range(4) if i not in finished]
    assert [r.seed for r in second] == [ctx.request_seed(1, i) for i in live], "only live particles are extended"
    assert prefixes(second) == ["d0k1c0\n\n"] * len(live)
    assert all(candidates[i].steps == ("d0k0c0",) and candidates[i].step_scores == (0.9,) for i in finished)
    assert all(candidates[i].steps == ("d0k1c0", f"d1k{i}c0") for i in live)


def test_particle_filter_population_stays_n_when_particles_finish_at_different_rounds():
    ctx = context(max_steps=4)
    ends = {"d0k0c0", "d0k1c0", "d1k5c0", "d2k6c0"}  # equal scores: uniform resampling
    candidates, batches = drive(
        start(ctx, 8, StrategySpec.of(name="particle_filter")), both(keyed_generator(ctx, ends), step_scorer({}))
    )
    assert len(candidates) == 8, "finished particles are resampled with the rest, N in all"
    assert all(c.finished or len(c.steps) == 4 for c in candidates)
    assert [c.steps[-1] for c in candidates if c.finished] == ["d2k6c0"] * 2, "finished copies stay as they are"
    assert [sum(r.n for r in batch) for batch in generates(batches)] == [8, 8, 7, 6], "only live particles step"


def test_particle_filter_stops_once_every_particle_has_finished():
    ctx = context(max_steps=5)
    candidates, batches = drive(
        start(ctx, 4, StrategySpec.of(name="particle_filter")),
        both(keyed_generator(ctx, ends={f"d0k{i}c0" for i in range(4)}), step_scorer({})),
    )
    assert len(generates(batches)) == 1
    assert [c.steps for c in candidates] == [(f"d0k{i}c0",) for i in range(4)] and all(c.finished for c in candidates)


def test_particle_filter_replays_for_the_same_context_and_draws_anew_for_another_seed():
    def ancestry(seed: int) -> tuple[list[list[Request]], list[list[str]]]:
        ctx = context(seed=seed, max_steps=3)
        scores = {f"d{d}k{i}c0": 0.3 + 0.1 * (i % 5) for d in range(3) for i in range(8)}
        candidates, batches = drive(
            start(ctx, 8, StrategySpec.of(name="particle_filter")), both(keyed_generator(ctx), step_scorer(scores))
        )
        return batches, [list(c.steps) for c in candidates]

    assert ancestry(0) == ancestry(0)
    assert ancestry(0)[0][0][0].seed != ancestry(1)[0][0][0].seed
    assert len({str(ancestry(seed)[1]) for seed in range(5)}) > 1, "other seeds resample other ancestries"


@pytest.mark.parametrize("budget", [1, 4, 8])
def test_particle_filter_returns_n_candidates(budget):
    ctx = context()
    candidates, batches = drive(
        start(ctx, budget, StrategySpec.of(name="particle_filter")), both(step_generator(2), length_scorer)
    )
    assert len(candidates) == budget
    assert all(c.finished and len(c.steps) == 3 and c.answer == "0" for c in candidates)
    assert [sum(r.n for r in batch) for batch in generates(batches)] == [budget] * 3


# ---------------------------------------------------------------------------------------------------------------
# Early stopping

EARLY_STOP = StrategySpec.of(name="early_stop", early_stop_round=4, early_stop_share=0.75)


def answering(ctx: SearchContext, rounds: list[list[str | None]]) -> Callable[[Request], Result]:
    """Best-of-N solutions whose answers are scripted per round (None: no answer), the round known by its seed."""
    seeds = {replace(ctx, round=r).request_seed(0): r for r in range(len(rounds))}

    def respond(request: Request) -> Result:
        if isinstance(request, Score):
            return length_scorer(request)
        answers = rounds[seeds[request.seed]]
        assert request.n == len(answers)
        return completions(*("no answer" if a is None else f"so \\boxed{{{a}}}" for a in answers), eos=True)

    return respond


def test_early_stop_stops_after_the_first_round_when_its_answers_agree():
    ctx = context()
    candidates, batches = drive(start(ctx, 8, EARLY_STOP), answering(ctx, [["2", "2", "3", "2"], ["5"] * 4]))
    [[request]] = generates(batches)
    assert request.n == 4, "one round of 4 samples spent out of 8"
    assert [c.answer for c in candidates] == ["2", "2", "3", "2"]


def test_early_stop_runs_more_rounds_while_the_answers_disagree():
    ctx = context()
    script = [["2", "3", "2", "3"], ["2", "2", "2", "2"], ["7"] * 4]  # 2/4, then 6/8: stops before round 2
    candidates, batches = drive(start(ctx, 12, EARLY_STOP), answering(ctx, script))
    rounds = generates(batches)
    assert [[r.n for r in batch] for batch in rounds] == [[4], [4]], "8 of 12 samples spent"
    assert [c.answer for c in candidates] == ["2", "3", "2", "3", "2", "2", "2", "2"]


def test_early_stop_counts_candidates_without_an_answer_against_the_share():
    ctx = context()
    spec = EARLY_STOP.with_settings(early_stop_share=0.8)
    _, batches = drive(start(ctx, 8, spec), answering(ctx, [["2", "2", "2", None], ["2"] * 4]))
    assert len(generates(batches)) == 2, "3 of 4 is 0.75 < 0.8: the unanswered one counts"
    _, batches = drive(start(ctx, 8, spec), answering(ctx, [["2", "2", "2", "2"], ["2"] * 4]))
    assert len(generates(batches)) == 1


def test_early_stop_round_zero_replays_plain_best_of_n_and_later_rounds_sample_with_new_seeds():
    ctx = context()
    candidates, batches = drive(start(ctx, 8, EARLY_STOP), answering(ctx, [["1", "2", "3", "4"], ["5"] * 4]))
    [first], [second] = generates(batches)
    [plain] = next(start(ctx, 4, StrategySpec.of(name="best_of_n")))
    assert first == plain
    assert first.seed == zlib.crc32(b"p0|0|0"), "round 0 keeps the seeds plain runs had before rounds existed"
    assert second.seed == replace(ctx, round=1).request_seed(0) != first.seed
    assert replace(second, seed=first.seed) == first, "only the seed differs"
    assert len(candidates) == 8


def test_early_stop_wraps_beam_search_in_rounds():
    ctx = context()
    spec = EARLY_STOP.with_settings(early_stop_inner="beam", beam_width=2)
    respond = both(step_generator(2), length_scorer)  # answers 0, 1, 0, 1: never 3 of 4
    candidates, batches = drive(start(ctx, 8, spec), respond)
    rounds = generates(batches)
    assert [sum(r.n for r in batch) for batch in rounds] == [4, 4, 4] * 2, "two rounds of beam search at budget 4"
    assert rounds[0] == next(start(ctx, 4, StrategySpec.of(name="beam", beam_width=2)))
    assert rounds[3][0].seed == replace(ctx, round=1).request_seed(0, 0) != rounds[0][0].seed
    assert len(candidates) == 8 and all(c.finished and len(c.steps) == 3 for c in candidates)

    def agreeing(request: Request) -> Result:
        if isinstance(request, Generate) and request.prompt.assistant_prefix.count("\n\n") >= 2:
            return completions(*(["so \\boxed{2}"] * request.n), eos=True)
        return respond(request)

    candidates, batches = drive(start(ctx, 8, spec), agreeing)
    assert len(generates(batches)) == 3 and [c.answer for c in candidates] == ["2"] * 4


def test_leading_share_is_the_top_answer_share_of_all_candidates_grouped_by_canonical_form():
    def solution(text: str):
        return context().candidate((text,), (0.5,), finished=True)

    assert leading_share([]) == 0.0
    assert leading_share([solution("no answer"), solution("\\boxed{}")]) == 0.0
    cands = [solution("\\boxed{7}"), solution("\\boxed{7.}"), solution("\\boxed{9}"), solution("none")]
    assert leading_share(cands) == 0.5, "7 and 7. are one answer; the unanswered one counts in the total"
    assert leading_share([solution("\\boxed{3}")] * 3) == 1.0


# ---------------------------------------------------------------------------------------------------------------
# Config, registry and labels


@pytest.mark.parametrize(
    ("spec", "budgets", "field"),
    [
        (StrategySpec.of(name="rebase", rebase_temperature=0), [4], "rebase_temperature"),
        (StrategySpec.of(name="rebase", rebase_temperature=-0.5), [4], "rebase_temperature"),
        (StrategySpec.of(name="particle_filter", particle_temperature=0), [4], "particle_temperature"),
        (StrategySpec.of(name="particle_filter", particle_temperature=-1), [4], "particle_temperature"),
        (StrategySpec.of(name="dvts", beam_width=3), [8], "beam_width"),
        (StrategySpec.of(name="dvts", beam_width=4), [4, 6], "beam_width"),
        (StrategySpec.of(name="dvts", beam_width=8), [4], "beam_width"),
        (StrategySpec.of(name="dvts", beam_width=0), [4], "beam_width"),
        (EARLY_STOP.with_settings(early_stop_round=3), [8], "early_stop_round"),
        (EARLY_STOP.with_settings(early_stop_round=8), [4], "early_stop_round"),
        (EARLY_STOP.with_settings(early_stop_round=0), [4], "early_stop_round"),
        (EARLY_STOP.with_settings(early_stop_share=0), [8], "early_stop_share"),
        (EARLY_STOP.with_settings(early_stop_share=1.5), [8], "early_stop_share"),
        (EARLY_STOP.with_settings(early_stop_share=-0.1), [8], "early_stop_share"),
        (EARLY_STOP.with_settings(early_stop_inner="early_stop"), [8], "early_stop_inner"),
        (EARLY_STOP.with_settings(early_stop_inner="nope"), [8], "early_stop_inner"),
        (StrategySpec.of(name="particle_filter", rebase_temperature=0.5), [4], "rebase_temperature"),  # not its key
        (EARLY_STOP.with_settings(early_stop_inner="dvts", beam_width=8), [8], "beam_width"),  # M=8 > round 4
        (EARLY_STOP.with_settings(early_stop_inner="rebase", rebase_temperature=0), [8], "rebase_temperature"),
    ],
)
def test_strategy_errors_reject_bad_values_naming_the_field(spec, budgets, field):
    errors = strategy_errors(spec, budgets)
    assert errors and {name for name, _ in errors} == {field}, errors


@pytest.mark.parametrize(
    ("spec", "budgets"),
    [
        (StrategySpec.of(name="dvts", beam_width=4), [4, 8, 16]),
        (StrategySpec.of(name="rebase", rebase_temperature=0.2), [1, 3, 8]),
        (StrategySpec.of(name="particle_filter", particle_temperature=1.0), [1, 5]),
        (EARLY_STOP, [4, 8, 16]),
        (EARLY_STOP.with_settings(early_stop_share=1.0), [8]),
        (EARLY_STOP.with_settings(early_stop_inner="beam", beam_width=4), [8]),
        (EARLY_STOP.with_settings(early_stop_inner="dvts", beam_width=2, early_stop_round=2), [2, 6]),
        (EARLY_STOP.with_settings(early_stop_inner="particle_filter"), [12]),
    ],
)
def test_strategy_errors_accept_good_values(spec, budgets):
    assert strategy_errors(spec, budgets) == []


def test_largest_request_is_the_widest_single_request():
    assert largest_request(StrategySpec.of(name="dvts", beam_width=4), 16) == 4, "a subtree's M children"
    assert largest_request(StrategySpec.of(name="rebase"), 16) == 16, "the root's N first steps"
    assert largest_request(StrategySpec.of(name="particle_filter"), 16) == 1, "a particle's one step"
    assert largest_request(EARLY_STOP, 16) == 4, "best-of-N at the round budget"
    assert largest_request(EARLY_STOP.with_settings(early_stop_inner="beam", early_stop_round=8), 16) == 8
    assert largest_request(EARLY_STOP.with_settings(early_stop_inner="dvts", beam_width=2), 16) == 2
    assert largest_request(EARLY_STOP.with_settings(early_stop_inner="particle_filter"), 16) == 1


def test_worst_case_tokens_of_step_searches_are_steps_times_step_tokens():
    search = SearchConfig(max_steps=5, max_step_tokens=100, max_solution_tokens=700)
    for name in ("dvts", "rebase", "particle_filter"):
        assert worst_case_tokens(StrategySpec.of(name=name), 8, search, "s")[0] == 500
    assert worst_case_tokens(EARLY_STOP, 8, search, "s")[0] == 700
    assert worst_case_tokens(EARLY_STOP.with_settings(early_stop_inner="rebase"), 8, search, "s")[0] == 500


def test_strategy_config_and_label_name_the_new_strategies_hyper_parameters():
    assert strategy_config(StrategySpec.of(name="dvts", beam_width=4)) == "dvts(M=4)"
    assert strategy_config(StrategySpec.of(name="rebase", rebase_temperature=0.2)) == "rebase(T=0.2)"
    assert strategy_config(StrategySpec.of(name="particle_filter", particle_temperature=1.0)) == "particle_filter(T=1)"
    assert strategy_config(EARLY_STOP) == "early_stop(best_of_n,r=4,s=0.75)"
    beam_rounds = EARLY_STOP.with_settings(early_stop_inner="beam", beam_width=4)
    assert strategy_config(beam_rounds) == "early_stop(beam(M=4),r=4,s=0.75)"
    assert strategy_config(replace(EARLY_STOP, aggregation="min")) == "early_stop(best_of_n,r=4,s=0.75)/min"
    assert strategy_label(StrategySpec.of(name="rebase"), "weighted") == "rebase(T=0.2)/weighted"
    assert strategy_label(beam_rounds, "majority") == "early_stop(beam(M=4),r=4,s=0.75)/majority"


@pytest.mark.parametrize(
    ("spec", "reads"),
    [
        (StrategySpec.of(name="dvts"), True),
        (StrategySpec.of(name="rebase"), True),
        (StrategySpec.of(name="particle_filter"), True),
        (EARLY_STOP.with_settings(early_stop_inner="beam"), True),
        (EARLY_STOP.with_settings(early_stop_inner="rebase"), True),
        (StrategySpec.of(name="best_of_n"), False),
        (StrategySpec.of(name="revisions"), False),
        (EARLY_STOP, False),
        (EARLY_STOP.with_settings(early_stop_inner="revisions"), False),
    ],
)
def test_search_reads_verifier_for_step_searches_and_early_stop_over_them(spec, reads):
    assert search_reads_verifier(spec) is reads


def test_load_config_names_the_strategy_key_of_a_bad_temperature():
    with pytest.raises(ConfigError, match=re.escape("'strategies[0].rebase_temperature'")):
        load_config(None, ["strategies=[{name: rebase, rebase_temperature: 0}]"])
    with pytest.raises(ConfigError, match=re.escape("'strategies[1].early_stop_round'")):
        load_config(None, ["strategies=[{name: dvts}, {name: early_stop, early_stop_round: 3}]", "budgets=[4]"])
    cfg = load_config(None, ["strategies=[{name: early_stop, early_stop_inner: beam}]", "budgets=[8]"])
    assert cfg.strategies[0].options.early_stop_inner == "beam"
