"""Verdicts with statistics: paired bootstrap differences, tie counts, threshold digits, readable plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap

from ttsearch.analysis.render import plot_curves
from ttsearch.analysis.revisions import plot_attempt_curves
from ttsearch.analysis.statistics import (
    CONFIDENCE,
    NO_DIFFERENCE,
    RESAMPLES,
    SEED,
    Difference,
    distinct_digits,
    grouped,
    paired_difference,
    tie_counts,
    with_accuracy,
)


def test_a_one_question_gap_in_500_is_no_measurable_difference():
    right = np.random.default_rng(1).random(500) < 0.8
    other = right.copy()
    other[np.flatnonzero(~right)[0]] = True  # the other label gets one more question right
    difference = paired_difference(other, right)
    assert difference.mean == pytest.approx(1 / 500) and difference.n == 500
    assert difference.low <= 0 <= difference.high and difference.sign == 0
    assert difference.interval() == (
        f"+0.2 points, 95 % CI {100 * difference.low:+.1f} to {100 * difference.high:+.1f}, 500 questions"
    )
    assert difference.verdict() == NO_DIFFERENCE


def test_a_clear_difference_gets_its_sign_and_interval():
    rng = np.random.default_rng(2)
    better, worse = rng.random(400) < 0.8, rng.random(400) < 0.5
    difference = paired_difference(better, worse)
    assert difference.mean == pytest.approx(better.mean() - worse.mean())
    assert 0 < difference.low < difference.mean < difference.high and difference.sign == 1
    assert difference.verdict() == "more accurate" and difference.verdict("small", "larger") == "small"
    text = difference.interval()
    assert text.startswith(f"{100 * difference.mean:+.1f} points, 95 % CI +") and text.endswith(", 400 questions")
    swapped = paired_difference(worse, better)
    assert swapped.sign == -1 and swapped.verdict() == "less accurate"
    assert swapped.high < 0 and swapped.interval().startswith(f"{100 * swapped.mean:+.1f} points, 95 % CI -")
    # Seeded: the same interval every time, and scipy's own percentile bootstrap of the paired differences.
    assert paired_difference(better, worse) == difference
    expected = bootstrap(
        (better.astype(float) - worse,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    ).confidence_interval
    assert (difference.low, difference.high) == pytest.approx((expected.low, expected.high))


def test_series_pair_by_question_and_ungraded_pairs_take_no_part():
    a = pd.Series({"q1": 1.0, "q2": 0.0, "q3": np.nan, "q4": 1.0})
    b = pd.Series({"q4": 0.0, "q3": 1.0, "q2": 0.0, "q1": 0.0, "q9": 1.0})  # other order; q9 only in b
    difference = paired_difference(a, b)
    assert difference.n == 3 and difference.mean == pytest.approx(2 / 3)  # q1 +1, q2 0, q4 +1
    same = paired_difference([1.0, 1.0], [0.0, 0.0])
    assert (same.mean, same.low, same.high, same.sign) == (1.0, 1.0, 1.0, 1)  # every resample agrees
    assert paired_difference([np.nan], [1.0]).n == 0
    assert paired_difference([np.nan], [1.0]).interval() == "no question in common"
    with pytest.raises(ValueError, match="one value per question on both sides"):
        paired_difference([1.0, 0.0], [1.0])


def test_small_differences_print_with_the_digits_that_show_them():
    # A measurable interval never reads "+0.0" at an end: one count of decimals shows every nonzero value.
    tiny = Difference(-0.00047, -0.001, -0.000066, 500)
    assert tiny.interval() == "-0.047 points, 95 % CI -0.100 to -0.007, 500 questions"
    assert Difference(0.0, -0.0, 0.0, 1).interval() == "+0.0 points, 95 % CI +0.0 to +0.0, 1 question"


def test_grouped_verdicts_read_as_one_sentence():
    verdicts = [("fewer", "N=4 (a)"), (NO_DIFFERENCE, "N=16 (b)"), ("fewer", "N=64 (c)")]
    said = grouped("Generations", verdicts)
    assert said == "Generations: fewer at N=4 (a), N=64 (c); no measurable difference at N=16 (b)."
    assert grouped("x", []) == ""


@pytest.mark.parametrize(
    ("thresholds", "scores", "shown"),
    [
        ((0.99998, 0.5), (1.0, 0.99996, 0.6, 0.4), ["0.99998", "0.5"]),  # not "1": the 1.0 scores would bin below
        ((0.7, 0.5, 0.3, 0.1), (), ["0.7", "0.5", "0.3", "0.1"]),
        ((0.5001, 0.5), (), ["0.5001", "0.5"]),  # neighbours need 4 digits to stay apart
        ((0.123456, 0.123441), (), ["0.1235", "0.1234"]),
        ((0.45,), (0.6, 0.3), ["0.5"]),  # strictly between the scores either side is enough
        ((0.45,), (0.5, 0.4), ["0.45"]),
    ],
)
def test_thresholds_print_with_the_digits_that_tell_them_apart(thresholds, scores, shown):
    assert distinct_digits(thresholds, scores) == shown


def test_missing_accuracy_columns_read_correct_and_tie_free():
    frame = pd.DataFrame({"correct": [True, False, None]})
    filled = with_accuracy(frame)
    assert filled["accuracy"].tolist()[:2] == [1.0, 0.0] and np.isnan(filled["accuracy"].iloc[2])
    assert filled["accuracy_low"].equals(filled["accuracy"]) and filled["accuracy_high"].equals(filled["accuracy"])
    merged = pd.DataFrame(  # an older file (null columns) merged with a newer one
        {"correct": [True, False], "accuracy": [None, 0.5], "accuracy_low": [None, 0.0], "accuracy_high": [None, 1.0]}
    )
    assert with_accuracy(merged)[["accuracy", "accuracy_low", "accuracy_high"]].values.tolist() == [
        [1.0, 1.0, 1.0],
        [0.5, 0.0, 1.0],
    ]


def test_tie_counts_per_label_and_budget():
    rows = [
        # label A, N=1: one clean right row, one tie between a right and a wrong choice, one 3-way tie (1 of 3 right)
        ("A", 1, True, 1.0, 1.0, 1.0),
        ("A", 1, False, 0.5, 0.0, 1.0),
        ("A", 1, True, 1 / 3, 0.0, 1.0),
        # label A, N=2: an ungraded row with a tie takes no part; a tie among equally right choices is no tie
        ("A", 2, None, None, None, None),
        ("A", 2, True, 1.0, 1.0, 1.0),
        ("B", 1, False, 0.0, 0.0, 0.0),
    ]
    frame = pd.DataFrame(
        rows, columns=["strategy_label", "budget", "correct", "accuracy", "accuracy_low", "accuracy_high"]
    )
    ties = tie_counts(frame)
    assert ties.loc[("A", 1)].tolist() == pytest.approx([3, 2, (1 + 0.5 + 1 / 3) / 3, 1 / 3, 1.0])
    assert ties.loc[("A", 2), ["rows", "tied"]].tolist() == [1, 0]
    assert ties.loc[("B", 1), ["rows", "tied"]].tolist() == [1, 0]
    assert tie_counts(frame, by=["strategy_label"])["tied"].to_dict() == {"A": 2, "B": 0}


def visible_tick_labels(ax) -> list:
    """The x tick labels (major and minor) that are drawn: inside the view and not blank."""
    low, high = ax.get_xlim()
    axis = ax.xaxis
    pairs = [*zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True)]
    pairs += [*zip(axis.get_minorticklocs(), axis.get_minorticklabels(), strict=True)]
    return [label for loc, label in pairs if low <= loc <= high and label.get_visible() and label.get_text()]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (3e11, 7e11),
        (1.2e11, 9.5e11),
        (2e11, 4e12),
        (1.5e13, 9e14),
        (1e9, 1e15),
        (2.1e11, 2.6e11),
        (1e10, 1e30),
        (1e3, 5e5),
    ],
)
def test_log_axis_tick_labels_do_not_overlap(low, high):
    # matplotlib's default log10 axis overlapped two labels at (2e11, 4e12) and drew 8 at (1e10, 1e30).
    rows = [
        {"label": "A", "budget": b, "seed": 0, "unique_id": "q", "correct": True, "total_flops": x}
        for b, x in zip((1, 2, 4, 8), np.geomspace(low, high, 4), strict=True)
    ]
    figure = plot_curves(None, "t", pd.DataFrame(rows), value="correct", label="label", ylabel="%", x="total_flops")
    figure.draw_without_rendering()
    labels = visible_tick_labels(figure.axes[0])
    assert 2 <= len(labels) <= 7, [label.get_text() for label in labels]
    boxes = [label.get_window_extent() for label in labels]
    crowded = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not crowded, [label.get_text() for label in labels]


def test_identical_curves_get_their_own_markers_and_stay_apart():
    rows = [
        {"label": label, "budget": b, "seed": 0, "unique_id": "q", "correct": b > 1}
        for label in ("A", "B", "C")
        for b in (1, 2, 4)
    ]
    figure = plot_curves(None, "t", pd.DataFrame(rows), value="correct", label="label", ylabel="%")
    lines = [container.lines[0] for container in figure.axes[0].containers]
    assert len({line.get_marker() for line in lines}) == 3
    xs = [tuple(line.get_xdata()) for line in lines]
    assert len(set(xs)) == 3  # drawn side by side, not on top of each other
    assert all(x == pytest.approx((1, 2, 4), rel=0.05) for x in xs)  # and close to the true budgets
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["1", "2", "4"]
    curves = pd.DataFrame(
        {"label": ["a", "a", "b", "b"], "attempt": [1, 2, 1, 2], "mean": [10.0, 20.0] * 2, "se": [1.0] * 4}
    )
    attempts = plot_attempt_curves(None, "t", curves).axes[0]
    assert len({container.lines[0].get_marker() for container in attempts.containers}) == 2
