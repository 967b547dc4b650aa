"""The one difficulty-bin rule: fitted thresholds, tie groups, collapsed and merged bins, fit == deployment."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from ttsearch.analysis.compute_optimal import FOLDS, compute_optimal, fit_policy, policy_of
from ttsearch.analysis.curves import DEFAULT_ESTIMATION_SAMPLES, estimate_difficulty, sampling_study, score_bins
from ttsearch.analysis.policy import bin_of, fit_thresholds
from ttsearch.sweep.results import RESULT_SCHEMA


def test_distinct_scores_make_equal_rank_quantiles_with_midpoint_thresholds():
    scores = [1.0 - 0.1 * i for i in range(10)]  # 1.0, 0.9, …, 0.1
    thresholds = fit_thresholds(scores, 5)
    assert thresholds == pytest.approx((0.85, 0.65, 0.45, 0.25))
    assert [bin_of(s, thresholds) for s in scores] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert bin_of(thresholds[0], thresholds) == 1 and bin_of(0.849, thresholds) == 2  # on an edge: the easier bin


def test_a_tie_group_is_never_split_and_empty_bins_collapse():
    # 8 of 20 at 1.0 (ranks 0–7, middle 3.5 → quantile 1), then 12 distinct scores: ranks 8–11, 12–15, 16–19 →
    # quantiles 3, 4, 5. Quantile 2 is left empty, so 4 bins: 8, 4, 4, 4 questions.
    scores = [1.0] * 8 + [0.9 - 0.05 * i for i in range(12)]
    thresholds = fit_thresholds(scores, 5)
    assert len(thresholds) == 3 and thresholds[0] == pytest.approx((1.0 + 0.9) / 2)
    bins = [bin_of(s, thresholds) for s in scores]
    assert bins == [1] * 8 + [2] * 4 + [3] * 4 + [4] * 4
    assert fit_thresholds([0.5] * 7, 5) == () and fit_thresholds([], 5) == ()  # one score: one bin


def test_undersized_bins_merge_into_their_harder_neighbour():
    # One question alone at 1.0, then 10 at 0.5 and 9 at 0.0: with min_size 2 the lone easy question joins 0.5's bin.
    scores = [1.0] + [0.5] * 10 + [0.0] * 9
    assert [bin_of(s, fit_thresholds(scores, 5)) for s in (1.0, 0.5, 0.0)] == [1, 2, 3]
    merged = fit_thresholds(scores, 5, min_size=2)
    assert [bin_of(s, merged) for s in (1.0, 0.5, 0.0)] == [1, 1, 2]
    last = fit_thresholds([1.0] * 10 + [0.5] * 9 + [0.0], 5, min_size=2)  # the last bin merges into the easier one
    assert [bin_of(s, last) for s in (1.0, 0.5, 0.0)] == [1, 2, 2]


def test_adjacent_floats_keep_their_own_bins():
    low = 0.3
    high = math.nextafter(low, 1.0)  # the midpoint of two adjacent floats rounds to one of them
    scores = [high] * 5 + [low] * 5
    thresholds = fit_thresholds(scores, 2)
    assert [bin_of(s, thresholds) for s in scores] == [1] * 5 + [2] * 5


def planted_ties() -> pd.DataFrame:
    """20 questions; predicted scores: 8 (40 %) at exactly 1.0, the rest distinct. Two labels per budget."""
    rows = []
    for i in range(20):
        uid, score = f"t{i:02d}", 1.0 if i < 8 else 0.9 - 0.05 * (i - 8)
        flags = [i % 3 != 0] * 4
        base = {
            "unique_id": uid,
            "level": 1 + i % 5,
            "subject": "Algebra",
            "strategy": "best_of_n",
            "strategy_config": "best_of_n",
            "aggregation": "last",
            "beam_width": 4,
            "lookahead": 0,
            "budget": 4,
            "seed": 0,
            "reference": "1",
            "score": 0.5,
            "samples": 4,
            "generated_tokens": 400,
            "prompt_tokens": 50,
            "cached_prompt_tokens": 0,
            "verifier_tokens": 40,
            "generator_flops": 9e4,
            "verifier_flops": 4e4,
            "total_flops": 1.3e5,
            "wall_s": 0.1,
            "candidate_answers": ["1"] * 4,
            "candidate_scores": [score] * 4,
            "candidate_correct": flags,
            "candidate_generated_tokens": [100] * 4,
            "candidate_verifier_tokens": [10] * 4,
            "error": None,
        }
        for selection, right in (("weighted", i < 10), ("naive", i >= 6)):
            rows.append(
                base
                | {
                    "strategy_label": f"best_of_n/{selection}",
                    "selection": selection,
                    "answer": "1" if right else "2",
                    "correct": right,
                }
            )
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA).to_pandas()


def test_planted_ties_bin_alike_in_fitting_cross_validation_and_deployment():
    frame = planted_ties()
    difficulty = estimate_difficulty(frame, "predicted", estimation_samples=4, min_size=FOLDS)
    policy = policy_of(fit_policy(frame, difficulty.bins), difficulty)
    deployed = difficulty.score.map(policy.bin_of)
    assert difficulty.bins.equals(deployed.rename("bin"))  # fitting bins == the policy's own rule, question by question
    assert deployed[[f"t{i:02d}" for i in range(8)]].nunique() == 1  # the 40 % tied at 1.0 share one bin
    assert sorted(deployed.value_counts().to_dict().items()) == [(1, 8), (2, 4), (3, 4), (4, 4)]
    result = compute_optimal(frame, difficulty.bins)
    used = result.per_question.drop_duplicates("unique_id").set_index("unique_id")["bin"]
    assert used.sort_index().equals(deployed.sort_index().rename("bin"))  # cross-validation scored the same bins
    assert {b for _, b in policy.choices} == set(deployed)
    assert score_bins(difficulty.score)[0].equals(difficulty.bins)


def test_sampling_study_supports_the_default_estimation_samples():
    study = sampling_study(ks=(1, 4, DEFAULT_ESTIMATION_SAMPLES), questions=500, trials=5)
    assert study.loc[1, "bins"] == 2 and study.loc[1, "agreement"] < 0.3  # one sample: right or wrong, 2 bins
    assert study.loc[DEFAULT_ESTIMATION_SAMPLES, "within_one"] >= 0.97
    assert study.loc[DEFAULT_ESTIMATION_SAMPLES, "agreement"] > study.loc[4, "agreement"] + 0.1
    assert study["monotone"].eq(1.0).all()  # tie groups kept whole: bins never invert
