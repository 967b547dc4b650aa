"""The recorded GSM8K pool (500 problems × 32 samples, two real PRMs' step scores) through `ttsearch import`, `report`,
`optimize` and `export`, run as docs/guides/importing.md writes the commands; its naive / weighted / majority
accuracy at every budget 1…32 for both PRMs against an independent computation over the JSON Lines.

Independent: the expected values are computed here from the recorded file alone (its `is_correct`, its
`extracted_answer`s grouped by numeric value, its last-step scores), with numpy and plain Python, not with the
project's grading, selection or estimators. The full pool (32) and budget 1 are exact in the rows (every subset
enumerated) and compared exactly. Between them the rows average `pool_subsets` random subsets
(`ttsearch.search.pool`): they are compared with the same subsets (the pool's own seeded draw, `unit_subsets`,
which fixes *which* subsets, not what is chosen on them), and naive also against its exact expectation over
every subset (a closed form), within the rows' own Monte Carlo error.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from ttsearch.cli import main
from ttsearch.search.pool import subset_seed, unit_subsets
from ttsearch.sweep.results import load_results

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "guides" / "importing.md"
POOL = ROOT.parent / "shared" / "data" / "recorded" / "gsm8k_pool.jsonl"
RUN = "runs/gsm8k_pool"
VERIFIERS = ("skywork_prm_1_5b", "math_shepherd")
SELECTIONS = ("naive", "weighted", "majority")
BUDGETS = (1, 2, 4, 8, 16, 32)
SUBSETS = 256  # the default `pool_subsets`, which the documented import uses
PARAMETERS = (
    "recorded.generator_parameters=32500000000",
    "recorded.verifier_parameters={skywork_prm_1_5b: 1540000000, math_shepherd: 7240000000}",
)
"""The documented import's parameter counts (FLOPs), so a re-import bills the same."""

pytestmark = pytest.mark.skipif(not POOL.is_file(), reason=f"the recorded GSM8K pool is not here: {POOL}")


def documented_commands() -> list[list[str]]:
    """argv of every `ttsearch ...` line in the guide's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    lines = [line.split("#")[0].strip() for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("ttsearch ")]


@pytest.fixture(scope="module")
def documented(tmp_path_factory):
    """Every documented command run in order from the repository root, `runs/` in a temporary directory; the
    seconds and printed output of each."""
    base = tmp_path_factory.mktemp("importing")
    done = []
    for argv in documented_commands():
        argv = [arg.replace("runs/", f"{base}/runs/") for arg in argv]
        argv = [str(ROOT / arg) if arg.startswith(("tests/", "../")) else arg for arg in argv]
        started = time.perf_counter()
        with pytest.raises(SystemExit) as exited:
            main(argv)
        done.append((argv, exited.value.code, time.perf_counter() - started))
    return base, done


def test_every_documented_command_runs(documented):
    base, done = documented
    commands = [argv[0] for argv, _, _ in done]
    assert {"import", "report", "optimize", "export"} <= set(commands), commands
    assert [code for _, code, _ in done] == [0] * len(done), done
    assert (base / RUN / "report" / "report.md").is_file()
    assert (base / RUN / "report" / "compute_optimal.md").is_file() and (base / RUN / "policy.json").is_file()


def test_import_plus_report_timing_is_printed(documented, capsys):
    _, done = documented
    seconds = {argv[0]: s for argv, _, s in done if RUN in " ".join(argv) and argv[0] in ("import", "report")}
    with capsys.disabled():
        print(f"\ngsm8k pool: import {seconds['import']:.1f} s + report {seconds['report']:.1f} s")


# ---------------------------------------------------------------- the independent computation
@cache
def recorded_pools() -> dict[str, dict[str, np.ndarray]]:
    """unique_id → arrays over its 32 samples (by sample_index): right (recorded is_correct), answer group
    (extracted answers by numeric value, first seen first), each verifier's last-step score."""
    samples: dict[str, list[dict]] = defaultdict(list)
    for line in POOL.read_text().splitlines():
        record = json.loads(line)
        samples[record["problem_id"]].append(record)
    pools = {}
    for uid, records in samples.items():
        records.sort(key=lambda r: r["sample_index"])
        keys = [answer_key(r["extracted_answer"]) for r in records]
        first = {key: i for i, key in reversed(list(enumerate(dict.fromkeys(keys))))}
        pools[uid] = {
            "right": np.array([r["is_correct"] for r in records], dtype=float),
            "group": np.array([first[key] for key in keys]),
            **{v: np.array([r["step_scores"][v][-1] for r in records]) for v in VERIFIERS},
        }
    return pools


UNITS_AND_MARKUP = re.compile(r"\\text\{[^{}]*\}|\\[,!$%]|[$,%\s]")
FRACTION = re.compile(r"\\d?frac\{(-?\d+)\}\{(\d+)\}")


def answer_key(answer: str) -> str:
    """An extracted answer's value: units, `$`, thousands separators and spacing dropped, `\\frac{a}{b}` as a / b;
    the text itself where that leaves no number."""
    bare = UNITS_AND_MARKUP.sub("", answer)
    bare = FRACTION.sub(lambda m: repr(int(m[1]) / int(m[2])), bare)
    try:
        return repr(float(bare))
    except ValueError:
        return answer.strip()


def subset_values(pool: dict, scores: np.ndarray, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Per subset (a row of sample indices), the expected correctness of what each selection picks, score ties
    broken uniformly: naive among the top-scored samples, weighted / majority among the answer groups with the top
    summed score / count. The recorded scores have at most 11 significant bits, so their sums are exact in any order
    and ties are exact."""
    right, chosen = pool["right"][draws], scores[draws]
    top = chosen == chosen.max(axis=1, keepdims=True)
    values = {"naive": (right * top).sum(axis=1) / top.sum(axis=1)}
    groups = pool["group"].max() + 1
    member_of = pool["group"][draws][:, :, None] == np.arange(groups)  # subset × member × group
    verdict = np.array([pool["right"][pool["group"] == g][0] for g in range(groups)])
    present = member_of.any(axis=1)
    for selection, weight in (("weighted", chosen), ("majority", np.ones_like(chosen))):
        totals = np.where(present, (member_of * weight[:, :, None]).sum(axis=1), -np.inf)
        best = totals == totals.max(axis=1, keepdims=True)
        values[selection] = (best * verdict).sum(axis=1) / best.sum(axis=1)
    return values


@cache
def independent_accuracy() -> dict[tuple[str, str, int], float]:
    """(verifier, selection, budget) → mean over problems of the selection's mean value over the subsets the rows
    average: every one where there are at most `SUBSETS`, else the pool's seeded draw."""
    found: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for uid, pool in recorded_pools().items():
        for budget in BUDGETS:
            draws = unit_subsets(32, budget, SUBSETS, subset_seed(uid, "best_of_n", budget, 0))
            for verifier in VERIFIERS:
                for selection, values in subset_values(pool, pool[verifier], draws).items():
                    found[verifier, selection, budget].append(float(values.mean()))
    return {key: float(np.mean(values)) for key, values in found.items()}


def naive_exact(pool: dict, scores: np.ndarray, budget: int) -> float:
    """E[naive] over all C(32, k) subsets: a subset's top score is s when it holds none above s and j ≥ 1 of the m
    samples at s; by symmetry the tied ones it holds are right c/m of the time."""
    total = math.comb(len(scores), budget)
    value = 0.0
    for score in np.unique(scores):
        at = scores == score
        below = int((scores < score).sum())
        m, c = int(at.sum()), float(pool["right"][at].sum())
        value += c / m * (math.comb(m + below, budget) - math.comb(below, budget)) / total
    return value


def test_the_recorded_answers_group_consistently():
    """Every sample of an answer group has one recorded verdict: the independent votes can grade by group."""
    for pool in recorded_pools().values():
        for group in np.unique(pool["group"]):
            assert len(set(pool["right"][pool["group"] == group])) == 1


@pytest.fixture(scope="module")
def imported_frame(documented):
    base, _ = documented
    return load_results(base / RUN)


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_every_accuracy_equals_the_independent_computation(imported_frame, verifier):
    pools = recorded_pools()
    frame = imported_frame
    assert frame["unique_id"].nunique() == 500 and sorted(frame["budget"].unique()) == list(BUDGETS)
    for selection in SELECTIONS:
        label = f"best_of_n[{verifier}]/{selection}"
        rows = frame[frame["strategy_label"] == label]
        for budget in BUDGETS:
            at = rows[rows["budget"] == budget]
            assert len(at) == 500, (label, budget)
            expected = independent_accuracy()[verifier, selection, budget]
            assert at["accuracy"].mean() == pytest.approx(expected, abs=1e-12), (label, budget)
            if budget in (1, 32):
                assert (at["accuracy_se"] == 0).all(), "enumerated: exact"
    one = frame[(frame["budget"] == 1) & frame["strategy_label"].str.startswith(f"best_of_n[{verifier}]")]
    assert one["accuracy"].mean() == pytest.approx(np.mean([p["right"].mean() for p in pools.values()]))


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_naive_is_within_its_monte_carlo_error_of_the_exact_expectation(imported_frame, verifier):
    pools = recorded_pools()
    rows = imported_frame[imported_frame["strategy_label"] == f"best_of_n[{verifier}]/naive"]
    for budget in BUDGETS:
        at = rows[rows["budget"] == budget].set_index("unique_id")
        exact = np.mean([naive_exact(pools[uid], pools[uid][verifier], budget) for uid in at.index])
        error = math.sqrt((at["accuracy_se"] ** 2).sum()) / len(at)
        assert abs(at["accuracy"].mean() - exact) <= 4 * error + 1e-12, (budget, at["accuracy"].mean(), exact)


def test_the_reports_accuracy_table_shows_the_same_numbers(documented):
    base, _ = documented
    report = (base / RUN / "report" / "report.md").read_text()
    table = report[report.index("| accuracy %") :].split("\n\n")[0].splitlines()
    assert [int(n) for n in re.findall(r"N=(\d+)", table[0])] == list(BUDGETS)
    shown = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table[2:]}
    assert sorted(shown) == sorted(f"best_of_n[{v}]/{s}" for v in VERIFIERS for s in SELECTIONS)
    for verifier in VERIFIERS:
        for selection in SELECTIONS:
            cells = shown[f"best_of_n[{verifier}]/{selection}"]
            for budget, cell in zip(BUDGETS, cells, strict=True):
                value = float(cell.split("±")[0])
                assert value == pytest.approx(100 * independent_accuracy()[verifier, selection, budget], abs=0.051)


def test_the_exported_pools_import_to_the_same_rows(documented, imported_frame):
    base, _ = documented
    again = base / "runs" / "reimported"
    with pytest.raises(SystemExit) as exited:
        main(["import", str(base / "runs" / "gsm8k_pool_export.jsonl"), str(again), *PARAMETERS])
    assert exited.value.code == 0
    order = ["unique_id", "strategy_label", "budget"]
    first, second = (f.sort_values(order).reset_index(drop=True) for f in (imported_frame, load_results(again)))
    for column in first.columns:
        assert first[column].astype(str).tolist() == second[column].astype(str).tolist(), column
