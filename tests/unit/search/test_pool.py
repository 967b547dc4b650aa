"""Sample-pool estimators against brute force over every subset, and the tie rule they share with `select`."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from tests.fixtures import boxed, forms_only
from ttsearch.config import Selection
from ttsearch.search.pool import Pool, estimate, unit_subsets
from ttsearch.search.selection import answer_groups, draw_tied, select, tied_choices

SELECTIONS = (Selection.naive, Selection.weighted, Selection.majority)


def brute_force(answers, scores, correct, unit, size, selection):
    """Mean over every subset of `size` units of the mean verdict of the tied choices: the definition, in loops."""
    groups = answer_groups(answers, forms_only)
    units = len(answers) // unit
    values = []
    for chosen in itertools.combinations(range(units), size):
        members = [u * unit + m for u in chosen for m in range(unit)]
        tied = tied_choices(scores, groups, selection, members)
        verdicts = [correct[i] for i in tied if correct[i] is not None]
        if verdicts:
            values.append(sum(verdicts) / len(verdicts))
    return sum(values) / len(values)


def random_pool(rng: random.Random, size: int):
    answers = [rng.choice(["1", "2", "3", None]) for _ in range(size)]
    scores = [rng.choice([0.2, 0.5, 0.9]) for _ in range(size)]  # few values: many ties
    correct = [None if a is None else a == "1" for a in answers]
    return answers, scores, correct


@pytest.mark.parametrize("unit", [1, 2])
def test_exact_enumeration_equals_the_definition(unit):
    rng = random.Random(7)
    for _ in range(20):
        answers, scores, correct = random_pool(rng, 8)
        pool = Pool.of(scores, answer_groups(answers, forms_only), correct, unit)
        for size in range(1, pool.units + 1):
            chosen = unit_subsets(pool.units, size, subsets=10_000, seed=0)
            assert len(chosen) == math.comb(pool.units, size)
            for selection in SELECTIONS:
                found = estimate(pool, selection, chosen)
                expected = brute_force(answers, scores, correct, unit, size, selection)
                assert found.accuracy == pytest.approx(expected), (answers, scores, size, selection)
                assert found.accuracy_se == 0.0
                assert found.accuracy_low <= found.accuracy <= found.accuracy_high


def test_drawn_subsets_are_seeded_uniform_and_close_to_exact():
    rng = random.Random(3)
    answers, scores, correct = random_pool(rng, 16)
    pool = Pool.of(scores, answer_groups(answers, forms_only), correct, 1)
    drawn = unit_subsets(16, 4, subsets=1000, seed=11)
    assert drawn.shape == (1000, 4) and (np.diff(drawn, axis=1) > 0).all(), "sorted, without replacement"
    assert np.array_equal(drawn, unit_subsets(16, 4, subsets=1000, seed=11)), "seeded"
    assert np.bincount(drawn.ravel(), minlength=16).min() > 0.8 * 1000 * 4 / 16, "every unit drawn about equally"
    for selection in SELECTIONS:
        found = estimate(pool, selection, drawn)
        exact = brute_force(answers, scores, correct, 1, 4, selection)
        assert found.accuracy_se > 0
        assert abs(found.accuracy - exact) < 4 * found.accuracy_se + 1e-9, selection


def test_ties_are_an_expectation_with_their_worst_and_best_case():
    # Two answers tie at the top score and at the top vote count: one right, one wrong.
    answers, scores, correct = ["1", "2", "2", "1"], [0.9, 0.9, 0.1, 0.1], [True, False, False, True]
    pool = Pool.of(scores, answer_groups(answers, forms_only), correct, 4)
    everything = unit_subsets(1, 1, subsets=1, seed=0)
    for selection in SELECTIONS:
        found = estimate(pool, selection, everything)
        assert (found.accuracy, found.accuracy_low, found.accuracy_high) == (0.5, 0.0, 1.0), selection


def test_ungraded_choices_are_left_out_and_all_ungraded_is_no_verdict():
    pool = Pool.of([0.9, 0.9], [0, 1], [None, True], 2)
    assert estimate(pool, Selection.naive, np.array([[0]])).accuracy == 1.0
    silent = Pool.of([0.9], [0], [None], 1)
    assert estimate(silent, Selection.naive, np.array([[0]])).accuracy is None


def test_coverage_is_the_unbiased_pass_at_k():
    correct = [True, False, False, True, False, False]  # units of 2: covered, uncovered, covered
    pool = Pool.of([0.5] * 6, [0] * 6, correct, 2)
    assert pool.coverage(1) == pytest.approx(2 / 3)
    assert pool.coverage(2) == pytest.approx(1 - 0 / 3)  # no pair of units misses both covered ones
    assert pool.coverage(3) == 1.0


def test_select_draws_among_ties_with_its_seed_and_breaks_no_tie_by_position():
    candidates = [boxed("2", 0.7), boxed("3", 0.7), boxed("4", 0.1)]
    picks = {select(candidates, "naive", "last", forms_only, tie_seed=seed).answer for seed in range(40)}
    assert picks == {"2", "3"}, "either tied candidate, never the lower score"
    assert select(candidates, "naive", "last", forms_only, 5) is select(candidates, "naive", "last", forms_only, 5)
    assert draw_tied([4], 123) == 4
