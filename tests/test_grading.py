"""Answer extraction, normalisation and grading, including hostile model outputs (no Ray, no model)."""

import json
import logging
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsearch.grading import MAX_ANSWER_CHARS, Grader, extract_answer, extract_boxed, grade, normalize_answer

REPO = Path(__file__).resolve().parents[1]
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


# --- normalize_answer --------------------------------------------------------------------------


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
        (r"864 \mbox{ inches}^2", r"864\mbox{inches}^2"),
        (r"x = 5", "x=5"),
        (r"\displaystyle\frac{1}{2}", r"\frac{1}{2}"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_normalize_answer_groups_variants_and_is_idempotent() -> None:
    variants = [r"\dfrac{1}{2}", r"\frac12", r"$\frac{1}{2}$", r"\frac {1} {2}."]
    assert len({normalize_answer(v) for v in variants}) == 1
    for raw in [*variants, r"\left[ 0, \infty \right)", r"5\text{ cm}", r"\text{(C)}"]:
        once = normalize_answer(raw)
        assert normalize_answer(once) == once


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
]
NOT_EQUIVALENT = [
    ("2", "3"),
    (r"\frac{1}{2}", "0.51"),
    ("x^2", "x^3"),
    (r"(3, \frac{\pi}{2})", r"(\frac{\pi}{2}, 3)"),
    ("10", "100"),
    (r"\text{Evelyn}", r"\text{Bob}"),
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
    assert _timed(grader, [(prediction, "1")]) == [False]


@pytest.mark.parametrize("prediction", [r"9^{9^{9^{9^{9}}}}", r"10^{10^{10}}", r"(10^{100})!", r"2^{2^{40}}"])
def test_huge_numbers_return_within_the_timeout(grader: Grader, prediction: str) -> None:
    assert _timed(grader, [(prediction, "1"), ("1", "1")]) == [False, True]


def test_verdicts_are_cached_across_calls(grader: Grader) -> None:
    slow = [(r"10^{10^{10}} + 1", "1"), (r"\frac{3}{6}", "0.5")]
    assert _timed(grader, slow) == [False, True]
    start = time.perf_counter()
    assert grader.grade_many(slow[::-1]) == [True, False]
    assert time.perf_counter() - start < 1.0


def test_hard_timeout_kills_and_replaces_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    # math-verify's own timeout is out of reach here, so only the outer kill can end the item.
    with Grader(item_timeout_s=2.0, math_timeout_s=600) as slow, caplog.at_level(logging.WARNING):
        assert _timed(slow, [(r"9^{9^{9}}", "1"), ("1", "1"), (r"\frac{1}{2}", "0.5")]) == [False, True, True]
    assert any("graded wrong" in record.getMessage() for record in caplog.records)


def test_worker_killed_from_outside_is_replaced() -> None:
    with Grader() as own:
        assert own.grade("1", "1")
        own._workers[0].process.kill()
        own._workers[0].process.join()
        assert own.grade_many([("2", "2"), ("2", "3")]) == [True, False]


def test_worker_guard_refuses_eval_exec_and_processes() -> None:
    probe = f"""
import os, subprocess, sympy
from ttsearch.grading import _install_guard
_install_guard()
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
        ("So the final answer is 1,234.", "1234"),
        ("The answer is $(3, 4)$", "(3, 4)"),
        ("answer: -2.5", "-2.5"),
        ("We conclude nothing about 42.", None),
        ("", None),
    ],
)
def test_extract_answer_prefers_boxed_then_a_stated_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_is_bounded_on_huge_outputs():
    started = time.perf_counter()
    assert extract_answer("answer is " * 200_000 + "answer is 7") == "7"
    assert time.perf_counter() - started < 2
