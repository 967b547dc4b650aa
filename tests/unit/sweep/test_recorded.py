"""`ttsearch import` / `export` on small fixtures: the three readers, their errors (file, line and key, before
anything is written), the rows they give, and the round trip (import → export → import gives equal rows)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures import QUESTIONS, best_of_n_rows
from ttsearch.cli import main
from ttsearch.config import ConfigError, load_config
from ttsearch.sweep.recorded import AnswerSource, RecordedError, read_recorded
from ttsearch.sweep.recorded_runs import default_budgets, export_pools, import_recorded, verifier_label
from ttsearch.sweep.results import CONFIG, RESULT_SCHEMA, ResultsError, RunStore, load_results, saved_config

DATA = Path(__file__).resolve().parents[2] / "data" / "recorded"
GENERIC = DATA / "generic_small.jsonl"
SAL = DATA / "search_and_learn_best_of_n.jsonl"
QWEN = DATA / "qwen_rm_maj_math_cot_3.jsonl"
SAL_OVERRIDES = ["recorded.format=search_and_learn", "recorded.verifier=rlhflow_8b"]
QWEN_OVERRIDES = ["recorded.format=qwen_rm_maj", "recorded.verifier=qwen_rm"]
SAL_PREDICTIONS = {"naive": "naive", "weighted": "weighted", "majority": "maj"}
"""Our selection → the suffix of search-and-learn's `pred_*@n` column."""


def imported(source: Path, run_dir: Path, *overrides: str):
    summary = import_recorded(load_config(overrides=list(overrides)), source, str(run_dir))
    return summary, load_results(run_dir)


def by_key(frame, budget: int) -> dict:
    rows = frame[frame["budget"] == budget]
    return {(row.unique_id, row.strategy_label): row for row in rows.itertuples()}


# ---------------------------------------------------------------- readers
def test_the_generic_reader_keeps_steps_text_recorded_answers_and_each_verifier():
    problems = read_recorded(GENERIC, "generic")
    assert [p.unique_id for p in problems] == ["eggs", "sum"]
    eggs, total = problems
    assert eggs.verifiers == ("prm_a", "prm_b") and eggs.level == 0
    assert [s.answer_source for s in eggs.samples] == [
        AnswerSource.recorded,
        AnswerSource.extracted,  # "... The answer is 26." with no recorded answer: ttsearch extracts it
        AnswerSource.recorded,  # "She makes 18 dollars." has no box, but the recorder stored 18
        AnswerSource.none,  # neither: never guessed
    ]
    assert [s.answer for s in eggs.samples] == ["18", "26", "18", None]
    assert eggs.samples[0].step_scores == {"prm_a": (0.9, 0.95), "prm_b": (0.7, 0.8)}
    assert [s.answer for s in total.samples] == ["-100", "-50", "-50", "-100"], "ordered by sample_index"


def test_the_search_and_learn_reader_reads_its_columns():
    problems = read_recorded(SAL, "search_and_learn", verifier="rlhflow_8b")
    assert [p.unique_id for p in problems] == [
        "test/prealgebra/1622.json",
        "test/intermediate_algebra/134.json",
        "test/number_theory/627.json",
    ]
    hexagon = problems[0]
    assert (hexagon.gold, hexagon.level, hexagon.subject) == ("42", 2, "Prealgebra")
    assert hexagon.verifiers == ("rlhflow_8b",)
    assert [s.step_scores["rlhflow_8b"] for s in hexagon.samples][2] == (0.6, 0.2), "PRM step scores, per step"
    assert [s.num_tokens for s in hexagon.samples] == [58, 44, 30, 14]
    assert [s.answer for s in hexagon.samples] == ["42", "42", "126", None], "no \\boxed{}: no answer"


def test_search_and_learn_datasets_read_from_the_hubs_parquet_alike(tmp_path):
    rows = [json.loads(line) for line in SAL.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train-00000-of-00001.parquet")
    assert read_recorded(tmp_path / "train-00000-of-00001.parquet", "search_and_learn") == read_recorded(
        SAL, "search_and_learn"
    )


def test_the_qwen_reader_reads_one_outcome_score_and_the_recorded_pred():
    problems = read_recorded(QWEN, "qwen_rm_maj", verifier="qwen_rm")
    assert [p.unique_id for p in problems] == ["0", "17", "70"]
    seventy = problems[2]
    assert seventy.gold == "31" and seventy.level == 3
    assert all(len(s.step_scores["qwen_rm"]) == 1 for s in seventy.samples), "an outcome score: one step"
    assert [s.answer for s in seventy.samples] == ["19", "31", "31", "19", "19", "31", "19", "19"]
    assert {s.answer_source for s in seventy.samples} == {AnswerSource.recorded}


GOOD = {"problem_id": "p", "question": "1+1?", "gold": "2", "steps": ["\\boxed{2}"], "step_scores": {"v": [0.5]}}


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        ([{k: v for k, v in GOOD.items() if k != "problem_id"}], ":1: key 'problem_id'"),
        ([GOOD | {"gold": ""}], ":1: key 'gold'"),
        ([GOOD | {"steps": "one string"}], ":1: key 'steps'"),
        ([GOOD | {"text": "both"}], ":1: key 'steps'"),
        ([GOOD, GOOD | {"step_scores": {"v": "high"}}], ":2: key 'step_scores.v'"),
        ([GOOD | {"step_scores": {"v": []}}], ":1: key 'step_scores.v'"),
        ([GOOD | {"step_scores": {"a/b": [0.5]}}], ":1: key 'step_scores'"),
        ([GOOD, GOOD | {"step_scores": {"w": [0.5]}}], ":2: key 'step_scores'"),
        ([GOOD, GOOD | {"question": "2+2?"}], ":2: key 'question'"),
        ([GOOD | {"sample_index": 0}, GOOD | {"sample_index": 0}], ":2: key 'sample_index'"),
        ([GOOD | {"num_tokens": -1}], ":1: key 'num_tokens'"),
        ([GOOD | {"extracted_answer": ["2"]}], ":1: key 'extracted_answer'"),
        ([GOOD | {"level": "hard"}], ":1: key 'level'"),
    ],
)
def test_a_bad_generic_line_is_named_by_file_line_and_key(tmp_path, lines, where):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(RecordedError) as error:
        read_recorded(path, "generic")
    assert f"{path}{where}" in str(error.value)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RecordedError, match=rf"{path}:2: not valid JSON"):
        read_recorded(path, "generic")


def edited_copy(source: Path, tmp_path: Path, line: int, **changes) -> Path:
    rows = [json.loads(text) for text in source.read_text().splitlines()]
    rows[line - 1] |= changes
    path = tmp_path / source.name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_bad_search_and_learn_and_qwen_rows_are_named_by_file_line_and_key(tmp_path):
    sal = edited_copy(SAL, tmp_path, 2, scores=[[0.5]])
    with pytest.raises(RecordedError, match=rf"{sal}:2: key 'scores': has 1 entries for 4 completions"):
        read_recorded(sal, "search_and_learn")
    qwen = edited_copy(QWEN, tmp_path, 3, pred_score=[[0.1, 0.2]] * 8)
    with pytest.raises(RecordedError, match=rf"{qwen}:3: key 'pred_score\[0\]': an outcome score is one number"):
        read_recorded(qwen, "qwen_rm_maj")


def test_bad_input_writes_nothing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"gold": None}) + "\n")
    with pytest.raises(RecordedError, match=":2: key 'gold'"):
        import_recorded(load_config(), path, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_budgets_past_the_smallest_pool_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"recorded.budgets.*at most the smallest pool, 4 samples.*got 8"):
        import_recorded(load_config(overrides=["recorded.budgets=[2,8]"]), GENERIC, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_default_budgets_double_up_to_the_pool():
    assert default_budgets(32) == [1, 2, 4, 8, 16, 32]
    assert default_budgets(12) == [1, 2, 4, 8, 12]
    assert verifier_label("best_of_n/weighted/min", "prm") == "best_of_n[prm]/weighted/min"


# ---------------------------------------------------------------- rows
def test_each_verifier_gets_its_own_rows_and_missing_answers_are_counted(tmp_path):
    summary, frame = imported(GENERIC, tmp_path / "run")
    assert summary.answers == {"recorded": 3, "extracted": 4, "none": 1} and summary.missing == ("eggs#3",)
    assert "1 without an answer (graded wrong)" in str(summary) and "eggs#3" in str(summary)
    assert sorted(frame["strategy_label"].unique()) == [
        f"best_of_n[{v}]/{s}" for v in ("prm_a", "prm_b") for s in ("majority", "naive", "weighted")
    ]
    assert summary.budgets == (1, 2, 4) and len(frame) == summary.rows == 2 * 2 * 3 * 3
    full = by_key(frame, 4)
    # Worked by hand from the fixture (last-step scores): prm_a prefers the right answers, prm_b the wrong ones.
    assert full["eggs", "best_of_n[prm_a]/naive"].accuracy == 1.0  # 0.95 → 18
    assert full["eggs", "best_of_n[prm_b]/naive"].accuracy == 0.0  # 0.9 → no answer
    assert full["sum", "best_of_n[prm_b]/weighted"].accuracy == 0.0  # -100: 0.95 + 0.6 beats -50: 0.4 + 0.3
    assert full["sum", "best_of_n[prm_a]/majority"].accuracy == 0.5  # 2 votes each: a tie, by expectation
    assert full["eggs", "best_of_n[prm_a]/naive"].candidate_answers.tolist() == ["18", "26", "18", None]


def test_a_recording_without_scores_gives_majority_rows_only(tmp_path):
    path = tmp_path / "unscored.jsonl"
    lines = [GOOD | {"sample_index": i, "steps": [f"\\boxed{{{a}}}"]} for i, a in enumerate("223")]
    path.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "step_scores"}) + "\n" for line in lines))
    summary, frame = imported(path, tmp_path / "run")
    assert summary.verifiers == () and "none (majority only)" in str(summary)
    assert sorted(frame["strategy_label"].unique()) == ["best_of_n/majority"]
    assert frame[frame["budget"] == 3]["accuracy"].tolist() == [1.0]


def test_search_and_learn_full_pool_choices_match_its_own_predictions(tmp_path):
    """The fixture's `pred_{naive,weighted,maj}@4` columns follow search-and-learn's own selection code; where
    ttsearch sees no tie, its choice at budget 4 is right exactly when theirs is."""
    _, frame = imported(SAL, tmp_path / "run", *SAL_OVERRIDES)
    rows = {json.loads(line)["unique_id"]: json.loads(line) for line in SAL.read_text().splitlines()}
    full = by_key(frame, 4)
    compared = 0
    for (uid, label), row in full.items():
        theirs = rows[uid][f"pred_{SAL_PREDICTIONS[row.selection]}@4"]
        right = float(theirs == "\\boxed{" + rows[uid]["answer"] + "}")
        assert row.accuracy_low <= right <= row.accuracy_high, (uid, label)
        if row.accuracy_low == row.accuracy_high:
            assert row.accuracy == right, (uid, label)
            compared += 1
    assert compared >= 7


def test_qwen_full_pool_rm_and_majority_match_rm_maj_eval(tmp_path):
    """rm@8 and maj@8 as Qwen's evaluation/rm_maj_eval.py computes them (the highest `pred_score`; the most
    common `pred`, first seen on ties, graded by its `score`), against the rows at budget 8."""
    _, frame = imported(QWEN, tmp_path / "run", *QWEN_OVERRIDES)
    full = by_key(frame, 8)
    for line in QWEN.read_text().splitlines():
        sample = json.loads(line)
        scores = [s[0] for s in sample["pred_score"]]
        rm = sample["score"][scores.index(max(scores))]
        majority = Counter(sample["pred"]).most_common(1)[0][0]
        maj = sample["score"][sample["pred"].index(majority)]
        uid = str(sample["idx"])
        naive, vote = full[uid, "best_of_n[qwen_rm]/naive"], full[uid, "best_of_n[qwen_rm]/majority"]
        assert naive.accuracy == rm
        assert vote.accuracy_low <= maj <= vote.accuracy_high
        if vote.accuracy_low == vote.accuracy_high:
            assert vote.accuracy == maj
    assert [full[uid, "best_of_n[qwen_rm]/majority"].accuracy for uid in ("0", "17", "70")] == [1.0, 0.5, 0.0]


# ---------------------------------------------------------------- the run directory and the round trip
@pytest.mark.parametrize(("source", "overrides"), [(GENERIC, []), (SAL, SAL_OVERRIDES), (QWEN, QWEN_OVERRIDES)])
def test_import_export_import_gives_equal_rows(tmp_path, source, overrides):
    _, first = imported(source, tmp_path / "first", *overrides)
    exported = export_pools(str(tmp_path / "first"), tmp_path / "pools.jsonl")
    assert exported.problems == first["unique_id"].nunique()
    _, second = imported(tmp_path / "pools.jsonl", tmp_path / "second")  # the generic format names its verifiers
    order = ["unique_id", "strategy_label", "budget"]
    first, second = (f.sort_values(order).reset_index(drop=True) for f in (first, second))
    assert list(first.columns) == list(second.columns)
    for column in first.columns:
        assert first[column].astype(str).tolist() == second[column].astype(str).tolist(), column


def test_the_cli_imports_reimports_the_same_recording_and_refuses_another(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as done:
        main(["import", str(SAL), run_dir, *SAL_OVERRIDES])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "imported 3 problems × 4 samples" in out and "11 extracted by ttsearch, 1 without an answer" in out
    before = load_results(run_dir)
    with pytest.raises(SystemExit) as again:
        main(["import", str(SAL), run_dir, *SAL_OVERRIDES])
    assert again.value.code == 0 and load_results(run_dir).equals(before), "the same recording: the same rows"
    with pytest.raises(SystemExit) as other:
        main(["import", str(GENERIC), run_dir])
    assert other.value.code == 2 and "holds results of a different sweep" in capsys.readouterr().err
    assert load_results(run_dir).equals(before), "refused without touching the run"
    with pytest.raises(SystemExit) as exported:
        main(["export", run_dir, str(tmp_path / "out.jsonl")])
    assert (
        exported.value.code == 0 and "exported 3 pools (12 samples, verifiers: rlhflow_8b)" in capsys.readouterr().out
    )


def test_export_of_a_directory_without_pools_says_so(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        export_pools(str(tmp_path / "nothing"), tmp_path / "out.jsonl")


def test_a_sweeps_pools_export_with_the_questions_of_its_problem_set(tmp_path):
    """A sweep (not an import) exports its best-of-N pools too: one seed, the largest budget's candidates, its
    configuration as the verifier, the questions read from its `data.path`."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"unique_id": u, "problem": f"Q {u}", "answer": "1"}) + "\n" for u in QUESTIONS)
    )
    store = RunStore(tmp_path / "sweep")
    store.write_text(saved_config(load_config(overrides=[f"data.path={problems}"])), CONFIG)
    rows = [row | {"strategy_config": "best_of_n"} for uid in QUESTIONS[:3] for row in best_of_n_rows(uid)]
    store.write_shard(0, 1, pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
    summary = export_pools(str(tmp_path / "sweep"), tmp_path / "pools.jsonl")
    assert (summary.problems, summary.samples, summary.verifiers) == (3, 24, ("best_of_n",))
    lines = [json.loads(line) for line in (tmp_path / "pools.jsonl").read_text().splitlines()]
    first = [line for line in lines if line["problem_id"] == "q00"]
    largest = next(r for r in rows if r["unique_id"] == "q00" and r["seed"] == 0 and r["budget"] == 8)
    assert [line["extracted_answer"] for line in first] == largest["candidate_answers"]
    assert first[0]["question"] == "Q q00" and first[0]["step_scores"] == {"best_of_n": [0.5]}
