"""Grading at scale: comparisons that failed twice are remembered for the run, a problem's grading time is bounded,
and the grader counts both (`Grader.stats`). The workers are scripted stand-ins (no math-verify), so each test takes
a worker start and the scripted delays, well under a few seconds."""

import dataclasses
import logging
import os
import time
from multiprocessing.connection import Connection

import pytest

from ttsearch.config import ConfigError, GradingConfig, load_config
from ttsearch.search.grading import Grader, GradingStats

ITEM_TIMEOUT_S = 0.3
RETRY_SCALE = 2
FREE_S = 0.1
"""A call that asks no worker returns well within this, even on a loaded machine."""


def scripted_worker(conn: Connection, memory_limit_mb: int | None) -> None:
    """A grading worker speaking `grading_worker.worker_main`'s protocol, its comparisons scripted by the prediction:
    `hang` never answers, `die` exits, `error` fails as math-verify does, `slow:S` answers wrong after S seconds; any
    other prediction is right exactly when it equals the gold."""
    conn.send("ready")
    while True:
        try:
            prediction, gold, _math_timeout = conn.recv()
        except EOFError:
            return
        if prediction == "hang":
            time.sleep(3600)
        elif prediction == "die":
            os._exit(3)
        elif prediction == "error":
            conn.send("math-verify failed: ValueError: scripted")
        elif prediction.startswith("slow:"):
            time.sleep(float(prediction.removeprefix("slow:")))
            conn.send(False)
        else:
            conn.send(prediction == gold)


def scripted_grader(**options) -> Grader:
    return Grader(
        **{"item_timeout_s": ITEM_TIMEOUT_S, "retry_scale": RETRY_SCALE, "worker_main": scripted_worker} | options
    )


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


# --- a comparison that failed twice is remembered -----------------------------------------------


@pytest.mark.parametrize("failure", ["hang", "die", "error"])
def test_a_comparison_that_failed_twice_is_answered_ungraded_without_a_worker_from_then_on(failure: str) -> None:
    with scripted_grader() as grader:
        assert grader.grade_many([(failure, "1"), ("1", "1")]) == [None, True]
        first = grader.stats()
        assert (first.num_failed_twice, first.num_graded, first.num_cache_hits) == (1, 1, 0)
        if failure == "hang":  # both attempts ran to their limits: 0.3 s, then 2 × 0.3 s
            assert first.worker_s >= ITEM_TIMEOUT_S * (1 + RETRY_SCALE)

        for _ in range(3):  # as every row of its problem asks again
            verdicts, elapsed = timed(lambda: grader.grade_many([(failure, "1")]))
            assert verdicts == [None]
            assert elapsed < FREE_S
        later = grader.stats()
        assert (later.num_graded, later.worker_s, later.num_failed_twice) == (1, first.worker_s, 1)
        assert later.num_cache_hits == 3


def test_an_equivalence_that_failed_twice_is_remembered_as_different() -> None:
    with scripted_grader() as grader:
        assert grader.same_answers("hang", ["1"]) == [False]
        worker_s = grader.stats().worker_s
        same, elapsed = timed(lambda: grader.same_answers("hang", ["1"]))
        assert same == [False] and elapsed < FREE_S
        assert grader.stats().worker_s == worker_s
        assert grader.grade_many([("hang", "1")]) == [None], "the same comparison whichever call asks it"


def test_a_remembered_failure_outlives_the_workers_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with scripted_grader() as grader, caplog.at_level(logging.WARNING):
        assert grader.grade("error", "1") is None
        grader.close()  # a later call starts new workers; what the grader learnt stays
        assert timed(lambda: grader.grade("error", "1"))[1] < FREE_S
    messages = [record.getMessage() for record in caplog.records]
    assert sum("ungraded for the rest of the run" in m for m in messages) == 1


# --- a problem's grading time is bounded -----------------------------------------------------------

SLOW_S = 0.6
BOUND_S = 1.0
SLOW_ITEM_TIMEOUT_S = 10 * SLOW_S
"""Two slow comparisons use it up (1.2 s); one leaves 0.4 s of it for a pipe round trip and the next dispatch."""


def test_past_its_bound_a_problems_new_comparisons_are_ungraded_at_once() -> None:
    with scripted_grader(problem_time_s=BOUND_S, item_timeout_s=SLOW_ITEM_TIMEOUT_S) as grader:
        pairs = [("1", "1"), (f"slow:{SLOW_S}", "a"), (f"slow:{SLOW_S}", "b"), (f"slow:{SLOW_S}", "c"), ("2", "2")]
        assert grader.grade_many(pairs, problem="p") == [True, False, False, None, None]
        spent = grader.stats().worker_s
        assert 2 * SLOW_S <= spent < 3 * SLOW_S

        view = grader.problem("p")
        # Remembered verdicts are still answered; new comparisons are not tried, the skipped one neither.
        verdicts, elapsed = timed(lambda: view.grade_many([("1", "1"), ("3", "3"), (f"slow:{SLOW_S}", "c")]))
        assert verdicts == [True, None, None] and elapsed < FREE_S
        assert timed(lambda: view.same_answers("4", ["4"]))[0] == [False]

        assert grader.grade_many([("3", "3")], problem="q") == [True], "another problem has its own bound"
        assert grader.grade("5", "5") is True, "a caller that names no problem has no bound"
        stats = grader.stats()
    assert stats.problems_over_bound == ("p",)
    assert stats.num_skipped_over_bound == 4, "c, 2, 3 and 4 vs 4, each counted once however often asked"
    assert stats.num_graded == 5 and stats.worker_s < spent + FREE_S


def test_the_bound_counts_comparisons_still_running_on_other_workers() -> None:
    # Two workers grade a and b at once: when a ends at 0.6 s, b's 0.6 s running make 1.2 s, over the bound.
    with scripted_grader(problem_time_s=BOUND_S, item_timeout_s=SLOW_ITEM_TIMEOUT_S, num_workers=2) as grader:
        assert grader.grade_many([("1", "1"), ("2", "2")]) == [True, True]  # both workers up: a and b start together
        pairs = [(f"slow:{SLOW_S}", gold) for gold in "abcd"]
        assert grader.grade_many(pairs, problem="p") == [False, False, None, None]
        assert grader.stats().num_skipped_over_bound == 2


def test_past_its_bound_a_failed_comparison_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    with scripted_grader(problem_time_s=ITEM_TIMEOUT_S / 2) as grader, caplog.at_level(logging.WARNING):
        assert grader.grade("hang", "1", problem="p") is None
        stats = grader.stats()
    assert ITEM_TIMEOUT_S <= stats.worker_s < ITEM_TIMEOUT_S * RETRY_SCALE, "one attempt, no retry"
    assert (stats.num_failed_twice, stats.num_skipped_over_bound, stats.problems_over_bound) == (0, 1, ("p",))
    assert any("not retried" in record.getMessage() for record in caplog.records)


# --- configuration and statistics -------------------------------------------------------------------


def test_the_grader_takes_the_runs_grading_section() -> None:
    cfg = load_config(overrides=["grading.problem_time_s=45", "grading.item_timeout_s=7.5", "grading.math_timeout_s=2"])
    assert cfg.grading == GradingConfig(item_timeout_s=7.5, math_timeout_s=2, problem_time_s=45.0)
    grader = Grader.from_config(cfg.grading)  # no worker starts before the first comparison
    assert (grader.item_timeout_s, grader.math_timeout_s, grader.problem_time_s) == (7.5, 2, 45.0)
    assert Grader().problem_time_s == GradingConfig().problem_time_s == 300.0


@pytest.mark.parametrize("key", ["problem_time_s", "item_timeout_s", "math_timeout_s"])
def test_grading_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"key 'grading\.{key}': must be > 0, got 0"):
        load_config(overrides=[f"grading.{key}=0"])


def test_stats_add_up_across_shards_and_print_as_one_line() -> None:
    one = GradingStats(num_graded=10, num_cache_hits=30, num_failed_twice=1, worker_s=12.5)
    two = GradingStats(num_graded=5, problems_over_bound=("q7",), num_skipped_over_bound=14, worker_s=300.25)
    total = one + two
    assert total == GradingStats(15, 30, 1, ("q7",), 14, 312.75)
    assert total.line() == (
        "grading: 15 comparisons graded, 30 from cache, 1 ungraded after two failures, "
        "1 problem over grading.problem_time_s (14 comparisons skipped), 312.8 s in grading workers"
    )
    assert "0 problems over" in GradingStats().line()


def test_stats_come_back_from_a_record_through_arrow() -> None:
    import pyarrow as pa

    stats = GradingStats(num_graded=3, problems_over_bound=("q1", "q2"), num_skipped_over_bound=5, worker_s=1.5)
    (record,) = pa.Table.from_pylist([dataclasses.asdict(stats)]).to_pylist()
    assert GradingStats.from_record(record) == stats
