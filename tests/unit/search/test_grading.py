"""Answer extraction, normalisation and grading, including hostile model outputs (no Ray, no model)."""

import json
import logging
import multiprocessing
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsearch.search.grading import MAX_ANSWER_CHARS, Grader, canonical_answer, extract_answer, extract_boxed, grade

REPO = Path(__file__).resolve().parents[3]
MATH500 = REPO / "data" / "math500.jsonl"  # the project's shipped copy of ../shared/data/math500.jsonl
PWNED = Path("/tmp/ttsearch_pwned")
HANG_BOUND_S = 30.0


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(item_timeout_s=10.0, math_timeout_s=2) as shared:
        yield shared


@pytest.fixture(scope="module")
def math500() -> list[dict]:
    with MATH500.open() as f:
        return [json.loads(line) for line in f]


# --- extract_boxed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is $\boxed{42}$.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{1} and finally \fbox{x^{2}}", "x^{2}"),
        (r"\fbox{7} but then \boxed{8}", "8"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\}}", r"\}"),
        (r"\boxed{a\\{b}}", r"a\\{b}"),
        (r"\boxed{}", ""),
        ("no box here", None),
        ("", None),
        (r"\boxed{1} then a truncated \boxed{\frac{1}{", None),
        (r"\boxed{", None),
        (r"\boxed 5", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_is_linear_on_huge_inputs() -> None:
    filler = "x{}" * 350_000  # ~1 MB of braces before the answer
    start = time.perf_counter()
    assert extract_boxed(filler + r"\boxed{17}") == "17"
    assert extract_boxed(filler) is None
    assert extract_boxed(r"\boxed{" + filler) is None
    assert extract_boxed(r"\boxed{" + filler + "}") == filler
    assert time.perf_counter() - start < 10.0


def test_extract_boxed_deep_nesting() -> None:
    depth = 100_000
    nested = "{" * depth + "1" + "}" * depth
    start = time.perf_counter()
    assert extract_boxed(r"\boxed{" + nested + "}") == nested
    assert extract_boxed(r"\boxed{" + "{" * depth + "1") is None
    assert time.perf_counter() - start < 10.0


# --- canonical_answer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", "42"),
        ("  42 . ", "42"),
        ("$42$", "42"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        (r"\frac12", r"\frac{1}{2}"),
        (r"\frac{\sqrt3}2", r"\frac{\sqrt{3}}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"\rightarrow", r"\rightarrow"),
        (r"1\!000", "1000"),
        (r"a\,b", "ab"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        (r"50\%", "50"),
        (r"\text{(C)}", "(C)"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"5\text{ cm}", "5"),
        (r"864 \mbox{ inches}^2", "864"),
        ("276,000", "276000"),
        (r"\$276,000", "276000"),
        (r"168,000 \, \text{\$}", "168000"),
        (r"1{,}000", "1000"),
        ("-1,234.50", "-1234.5"),
        ("6.00", "6"),
        ("2.50", "2.5"),
        ("0.0", "0"),
        ("12 dollars", "12"),
        (r"\text{\$}18.90", "18.9"),
        ("(1,2)", "(1,2)"),
        ("3,5,7", "3,5,7"),
        ("100", "100"),
        (r"x = 5", "x=5"),
        (r"\displaystyle\frac{1}{2}", r"\frac{1}{2}"),
    ],
)
def test_canonical_answer(raw: str, expected: str) -> None:
    assert canonical_answer(raw) == expected


def test_canonical_answer_groups_variants_and_is_idempotent() -> None:
    variants = [r"\dfrac{1}{2}", r"\frac12", r"$\frac{1}{2}$", r"\frac {1} {2}."]
    assert len({canonical_answer(v) for v in variants}) == 1
    assert len({canonical_answer(v) for v in ["276,000", r"\$276,000", "276000", r"276{,}000 \text{ dollars}"]}) == 1
    money = r"168,000 \, \text{\$}"
    for raw in [*variants, "6.00", "1,234", money, r"\left[ 0, \infty \right)", r"5\text{ cm}", r"\text{(C)}"]:
        once = canonical_answer(raw)
        assert canonical_answer(once) == once


# --- grading: equivalences ---------------------------------------------------------------------

EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    ("0.5", r"\frac{1}{2}"),
    (r"\dfrac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}"),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"),
    ("10", "10.0"),
    ("10.0", "10"),
    (r"3\sqrt{2}", r"\sqrt{18}"),
    (r"\{2, 1\}", r"\{1, 2\}"),
    ("x=5", "5"),
    (r"5\text{ cm} ", r"5\text{ cm}"),
    (r"\text{(C)}", r"\text{(C)}"),
    (r"\text{Evelyn}", r"\text{Evelyn}"),
    (r"90^\circ", "90"),
    (r"\$5", "5"),
    ("-5", "-5"),
    (r"\infty", r"\infty"),
    (r"168,000 \, \text{\$}", "168000"),
    ("26.00", "26"),
    ("276,000", r"\$276,000"),
    ("6", "6.00"),
]
NOT_EQUIVALENT = [
    ("2", "3"),
    (r"\frac{1}{2}", "0.51"),
    ("x^2", "x^3"),
    (r"(3, \frac{\pi}{2})", r"(\frac{\pi}{2}, 3)"),
    ("10", "100"),
    (r"\text{Evelyn}", r"\text{Bob}"),
    ("1,234", "1.234"),
    ("2.50", "25"),
]


def test_grade_equivalences(grader: Grader) -> None:
    assert grader.grade_many(EQUIVALENT) == [True] * len(EQUIVALENT)
    assert grader.grade_many(NOT_EQUIVALENT) == [False] * len(NOT_EQUIVALENT)


def test_grade_many_keeps_order_and_duplicates(grader: Grader) -> None:
    pairs = [("1", "1"), ("2", "1"), (None, "1"), ("1", "1"), ("", "1"), ("  ", "1"), ("2", "2")]
    assert grader.grade_many(pairs) == [True, False, False, True, False, False, True]
    assert grader.grade_many([]) == []


def test_grade_from_several_threads(grader: Grader) -> None:
    results: dict[int, list[bool]] = {}

    def work(k: int) -> None:
        results[k] = grader.grade_many([(str(k), str(k)), (str(k), str(k + 1))] * 5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=HANG_BOUND_S)
    assert all(results[k] == [True, False] * 5 for k in range(4))


def test_module_level_grade() -> None:
    assert grade(r"\frac{2}{4}", "0.5") is True
    assert grade(None, "0.5") is False


# --- grading: hostile model outputs ------------------------------------------------------------

INJECTION = "__import__('os').system('touch /tmp/ttsearch_pwned')"


def _timed(grader: Grader, pairs: list[tuple[str | None, str]]) -> list[bool]:
    start = time.perf_counter()
    verdicts = grader.grade_many(pairs)
    assert time.perf_counter() - start < HANG_BOUND_S
    return verdicts


@pytest.mark.parametrize(
    "prediction",
    [
        INJECTION,
        "eval(\"__import__('os').system('touch /tmp/ttsearch_pwned')\")",
        "exec('import os; os.system(\"touch /tmp/ttsearch_pwned\")')",
        "lambda: 0",
        "().__class__.__base__.__subclasses__()",
        r"\text{__import__('os').system('touch /tmp/ttsearch_pwned')}",
        r"\operatorname{__import__}(os)",
    ],
)
def test_code_injection_is_never_executed(grader: Grader, prediction: str) -> None:
    PWNED.unlink(missing_ok=True)
    boxed = extract_boxed(rf"The answer is \boxed{{{prediction}}}.")
    assert boxed == prediction
    assert _timed(grader, [(boxed, "1"), (prediction, "0"), (extract_boxed(prediction), "1")]) == [False] * 3
    assert not PWNED.exists()


def test_huge_and_deeply_nested_outputs(grader: Grader) -> None:
    megabyte = "9" * 1_000_000
    deep_braces = "{" * 100_000 + "1" + "}" * 100_000
    deep_fracs = r"\frac{" * 3000 + "1" + "}{2}" * 3000
    assert len(deep_fracs) > MAX_ANSWER_CHARS
    pairs = [(megabyte, "1"), (extract_boxed(r"\boxed{" + deep_braces + "}"), "1"), (deep_fracs, "1")]
    assert _timed(grader, pairs) == [False] * 3


@pytest.mark.parametrize(
    "prediction",
    [
        r"\frac{1}{" * 190 + "2" + "}" * 190,
        r"\sqrt{" * 280 + "2" + "}" * 280,
        "(" * 990 + "1" + ")" * 990,
        "{" * 990 + "1" + "}" * 990,
        "x_{" * 490 + "2" + "}" * 490,
        "-" * 1990 + "1",
        "2^{" * 390 + "2" + "}" * 390,
    ],
)
def test_pathological_latex_within_the_length_cap(grader: Grader, prediction: str) -> None:
    assert len(prediction) <= MAX_ANSWER_CHARS
    # Wrong, or ungraded where math-verify times out twice; never right, never a hang.
    assert _timed(grader, [(prediction, "1")])[0] in (False, None)


@pytest.mark.parametrize("prediction", [r"9^{9^{9^{9^{9}}}}", r"10^{10^{10}}", r"(10^{100})!", r"2^{2^{40}}"])
def test_huge_numbers_return_within_the_timeout(grader: Grader, prediction: str) -> None:
    # math-verify cannot decide these within its limit, twice: ungraded, not "wrong"; the next item is unaffected.
    assert _timed(grader, [(prediction, "1"), ("1", "1")]) == [None, True]


def test_verdicts_are_cached_across_calls(grader: Grader) -> None:
    slow = [(r"3^{3^{14}}", "1"), (r"\frac{3}{6}", "0.5")]  # the first takes sympy about a second
    assert _timed(grader, slow) == [False, True]
    start = time.perf_counter()
    assert grader.grade_many(slow[::-1]) == [True, False]
    assert time.perf_counter() - start < 1.0


def test_a_hung_item_is_retried_once_with_longer_limits_then_ungraded_not_a_verdict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # math-verify's own timeout is out of reach here, so only the outer kill can end the item.
    with Grader(item_timeout_s=1.0, math_timeout_s=600, retry_scale=2) as slow, caplog.at_level(logging.WARNING):
        start = time.perf_counter()
        assert slow.grade_many([(r"9^{9^{9}}", "1"), ("1", "1"), (r"\frac{1}{2}", "0.5")]) == [None, True, True]
        elapsed = time.perf_counter() - start
        assert (r"9^{9^{9}}", "1") not in slow._cache, "a grading failure must not be cached as a verdict"
        assert slow._cache[("1", "1")] is True
    assert elapsed >= 1.0 + 2.0, "the retry runs with retry_scale x the item limit"
    messages = [record.getMessage() for record in caplog.records]
    assert any("retrying once with 2× the limits" in m for m in messages)
    assert any("ungraded" in m for m in messages)


def test_a_slow_item_that_succeeds_on_its_retry_gets_its_verdict(caplog: pytest.LogCaptureFixture) -> None:
    # 3^(3^14) takes sympy about a second here: over a 0.3 s limit, well within the retry's 6 s.
    with Grader(item_timeout_s=0.3, math_timeout_s=600, retry_scale=20) as grader, caplog.at_level(logging.WARNING):
        grader.grade("1", "1")  # the worker is up: start-up time does not count against the item
        assert grader.grade_many([("3^{3^{14}}", "1")]) == [False]
        assert grader._cache[("3^{3^{14}}", "1")] is False
    assert any("retrying once" in record.getMessage() for record in caplog.records)


def test_math_verify_errors_are_ungraded_not_wrong(caplog: pytest.LogCaptureFixture) -> None:
    # math-verify raises "Can't evaluate nan or zoo" on an undefined gold: no verdict is possible either way.
    with Grader() as grader, caplog.at_level(logging.WARNING):
        assert grader.grade_many([("5", r"\frac{1}{0}"), ("5", "5.0")]) == [None, True]
        assert ("5", r"\frac{1}{0}") not in grader._cache
    messages = [record.getMessage() for record in caplog.records]
    assert any("math-verify failed: ValueError" in m and "retrying once" in m for m in messages)
    assert any("ungraded" in m for m in messages)


def test_worker_killed_from_outside_is_replaced() -> None:
    with Grader() as own:
        assert own.grade("1", "1")
        own._workers[0].process.kill()
        own._workers[0].process.join()
        assert own.grade_many([("2", "2"), ("2", "3")]) == [True, False]


def _probe_a_live_worker(conn) -> None:
    """In a fresh process: run a grading worker's main loop in a thread, then, once it is ready, try what
    the audit hook forbids from this process's main thread (audit hooks are process-wide)."""
    import os

    from ttsearch.search import grading_worker

    worker_end, ours = multiprocessing.Pipe()
    threading.Thread(target=grading_worker.worker_main, args=(worker_end, None), daemon=True).start()
    assert ours.recv() == "ready"
    refused = []
    for attempt in (lambda: eval("len('x')"), lambda: os.system("touch /tmp/ttsearch_pwned")):
        try:
            attempt()
            refused.append(False)
        except RuntimeError as error:
            refused.append("refused" in str(error))
    ours.send(("1", "1", 3))
    conn.send((refused, ours.recv()))


def test_a_grading_worker_installs_the_guard_before_it_takes_jobs() -> None:
    # test_worker_guard_refuses_eval_exec_and_processes checks the hook; this checks that a worker runs it.
    PWNED.unlink(missing_ok=True)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_probe_a_live_worker, args=(child,))
    process.start()
    assert parent.poll(120), "the probe did not answer"
    refused, verdict = parent.recv()
    process.join(30)
    assert refused == [True, True]
    assert verdict is True, "the guarded worker still grades"
    assert not PWNED.exists()


def test_grading_workers_run_under_the_address_space_cap() -> None:
    with Grader(memory_limit_mb=1536) as capped, Grader(memory_limit_mb=None) as uncapped:
        assert capped.grade("1", "1") and uncapped.grade("1", "1")
        limits = {
            name: _address_space_limit(g._workers[0].process.pid)
            for name, g in (("capped", capped), ("uncapped", uncapped))
        }
    assert limits == {"capped": 1536 * 1024 * 1024, "uncapped": None}


def _address_space_limit(pid: int) -> int | None:
    """The soft RLIMIT_AS of a live process, from /proc (None: unlimited)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise AssertionError(f"no address-space line in /proc/{pid}/limits")


def test_worker_guard_refuses_eval_exec_and_processes() -> None:
    probe = f"""
import os, subprocess, sympy
from ttsearch.search.grading_worker import install_guard
install_guard()
assert sympy.Number("12") == 12 and sympy.Number("1.5") == 1.5
for attempt in (
    lambda: sympy.sympify({INJECTION!r}),
    lambda: eval("len('x')"),
    lambda: exec("import os"),
    lambda: os.system("touch /tmp/ttsearch_pwned"),
    lambda: subprocess.run(["touch", "/tmp/ttsearch_pwned"]),
):
    try:
        attempt()
    except RuntimeError as error:
        assert "refused" in str(error), error
        continue
    raise SystemExit("not refused")
print("guarded")
"""
    PWNED.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "guarded"
    assert not PWNED.exists()


# --- grading: real MATH-500 rows ---------------------------------------------------------------


def test_math500_gold_answers_match_themselves(grader: Grader, math500: list[dict]) -> None:
    rows = math500[:12]
    assert grader.grade_many([(row["answer"], row["answer"]) for row in rows]) == [True] * len(rows)


def test_math500_reference_solutions_match_gold(grader: Grader, math500: list[dict]) -> None:
    rows = random.Random(0).sample(math500, 100)
    start = time.perf_counter()
    verdicts = grader.grade_many([(extract_boxed(row["solution"]), row["answer"]) for row in rows])
    assert time.perf_counter() - start < HANG_BOUND_S
    assert sum(verdicts) >= 95


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{5}. The answer is 3", "5"),
        ("Therefore, the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("So the final answer is 1,234.", "1,234"),
        ("The answer is $(3, 4)$", "(3, 4)"),
        ("answer: -2.5", "-2.5"),
        ("We conclude nothing about 42.", None),
        ("", None),
        # The whole stated expression, never a numeric prefix of it:
        ("So the answer is 2x+1.", "2x+1"),
        ("The answer is 2^{10}.", "2^{10}"),
        ("The answer is 2\\sqrt{3}.", "2\\sqrt{3}"),
        ("The answer is \\(x^2 - 1\\). Done.", "x^2 - 1"),
        ("The answer is **12**.", "12"),
        ("The answer is $5$ because 2 + 3 = 5.", "5"),
        ("The answer is 7; we are done.", "7"),
        # ... or no answer when the sentence merely mentions a number:
        ("The answer is 5 because we add 2 and 3.", None),
        ("The answer is between 3 and 4.", None),
        ("The answer is not 6.", None),
        ("The answer is 12 apples.", None),
        ("I think the answer is 3 or 4, hard to say", None),
    ],
)
def test_extract_answer_prefers_boxed_then_a_stated_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_is_bounded_on_huge_outputs():
    started = time.perf_counter()
    assert extract_answer("answer is " * 200_000 + "answer is 7") == "7"
    assert time.perf_counter() - started < 2
