"""Problem loading: shipped MATH-500, Parquet, and errors that name the file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures import processbench_item as item
from tests.fixtures import write_subset
from ttsearch.config import DataConfig
from ttsearch.sweep.data import DataError, FirstErrorItem, load_first_error_items, load_problems


def test_shipped_math500_loads_with_its_fields():
    rows = load_problems(DataConfig().path)
    assert len(rows) == 500
    assert set(rows[0]) == {"unique_id", "problem", "answer", "subject", "level", "solution"}
    assert {r["level"] for r in rows} == {1, 2, 3, 4, 5}
    assert len({r["unique_id"] for r in rows}) == 500


def test_limit_and_offset():
    rows = load_problems(DataConfig().path, limit=3, offset=10)
    assert [r["unique_id"] for r in rows] == [r["unique_id"] for r in load_problems(DataConfig().path)[10:13]]


def test_level_filter_applies_before_limit():
    rows = load_problems(DataConfig().path, limit=5, levels=[1, 2])
    assert len(rows) == 5 and {r["level"] for r in rows} <= {1, 2}


def test_parquet_and_jsonl_give_the_same_rows(tmp_path):
    rows = load_problems(DataConfig().path, limit=5)
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_problems(path) == rows


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in records) + "\n")


def test_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?"}])
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: missing or empty field 'answer'"):
        load_problems(path)


def test_missing_problem_in_parquet_names_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "1+1?", "answer": "2"}, {"problem": None, "answer": "3"}]), path)
    with pytest.raises(DataError, match=r"bad\.parquet: row 2: missing or empty field 'problem'"):
        load_problems(path)


def test_invalid_json_and_missing_file_and_duplicates(tmp_path):
    path = tmp_path / "broken.jsonl"
    write_jsonl(path, [{"problem": "a", "answer": "1"}, "{not json"])
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        load_problems(path)
    with pytest.raises(DataError, match="dataset not found"):
        load_problems(tmp_path / "missing.jsonl")
    write_jsonl(
        path, [{"problem": "a", "answer": "1", "unique_id": "x"}, {"problem": "b", "answer": "2", "unique_id": "x"}]
    )
    with pytest.raises(DataError, match="duplicate unique_id 'x'"):
        load_problems(path)


def test_a_selection_that_leaves_no_problems_names_the_keys_the_file_and_the_counts():
    path = DataConfig().path
    with pytest.raises(DataError) as caught:
        load_problems(path, offset=600, levels=[1])
    assert str(caught.value) == (
        f"data.levels=[1] and data.offset=600 leave no problems in {path} (500 rows, 43 at those levels)"
    )
    with pytest.raises(DataError, match=r"^data\.offset=500 leaves no problems in .*math500\.jsonl \(500 rows\)$"):
        load_problems(path, offset=500)


def test_a_level_the_file_lacks_leaves_no_problems(tmp_path):
    path = tmp_path / "easy.jsonl"
    write_jsonl(path, [{"problem": "1+1?", "answer": "2", "level": "Level 1"}])
    with pytest.raises(DataError, match=r"^data\.levels=\[5\] leaves no problems in .*easy\.jsonl \(1 rows, 0 at"):
        load_problems(path, levels=[5])


def test_a_negative_offset_is_refused_with_its_value():
    with pytest.raises(DataError, match=r"data\.offset must be >= 0, got -1"):
        load_problems(DataConfig().path, offset=-1)


def test_a_line_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"problem": "1+1?", "answer": "2"}).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + b'{"problem": "caf\xe9?", "answer": "2"}\n')
    with pytest.raises(DataError) as caught:
        load_problems(path)
    assert str(caught.value) == f"{path}:3: not UTF-8 text (byte 0xe9 at column 17)"


def test_an_unreadable_parquet_file_is_named(tmp_path):
    path = tmp_path / "truncated.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "1+1?", "answer": "2"}]), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: not a readable Parquet file \("):
        load_problems(path)


# -- first-error-step files (ProcessBench, PRM800K converted) ------------------------------------
SHIPPED = Path(__file__).resolve().parents[3] / "data" / "processbench"


def test_first_error_items_read_json_lines_too(tmp_path):
    path = tmp_path / "prm800k.jsonl"
    path.write_text(json.dumps(item(0, 2) | {"id": 7}) + "\n\n" + json.dumps(item(1, -1)) + "\n")
    assert [(i.id, i.label) for i in load_first_error_items(path)] == [("7", 2), ("toy-1", -1)]
    path.write_text(json.dumps(item(0, 5)) + "\n")
    with pytest.raises(DataError, match=r"prm800k\.jsonl: line 1 \(id 'toy-0'\): 'label'"):
        load_first_error_items(path)


def test_load_first_error_items_reads_items_and_applies_limit(tmp_path):
    path = write_subset(tmp_path / "toy.json", [item(0, 1), item(1, -1), item(2, 0)])
    items = load_first_error_items(path, limit=2)
    steps = [tuple(f"Step {step} of item {index}." for step in range(3)) for index in range(2)]
    assert items == [
        FirstErrorItem("toy-0", "What is 0 + 1?", steps[0], 1),
        FirstErrorItem("toy-1", "What is 1 + 1?", steps[1], -1),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"items": []}, r"toy\.json: expected a JSON list of first-error items, got a dict"),
        ([], r"toy\.json: holds no items"),
        ([item(0, 0), "x"], r"toy\.json: item 1: expected an object, got a str"),
        ([item(0, 0), {k: v for k, v in item(1, 0).items() if k != "steps"}], r"item 1: missing key\(s\) \['steps'\]"),
        (
            [item(0, 0), item(1, 3)],
            r"item 1 \(id 'toy-1'\): 'label' must be -1 \(no wrong step\) or the index of the first wrong step "
            r"in 0\.\.2",
        ),
        ([item(0, -2)], r"item 0 \(id 'toy-0'\): 'label' .* got -2"),
        ([item(0, 0) | {"label": True}], r"item 0 \(id 'toy-0'\): 'label' .* got True"),
        ([item(0, 0) | {"steps": []}], r"item 0 \(id 'toy-0'\): 'steps' must be a non-empty list of strings"),
        ([item(0, 0) | {"steps": ["a", 2]}], r"'steps' must be a non-empty list of strings, got \['a', 2\]"),
        ([item(0, 0) | {"problem": None}], r"item 0 \(id 'toy-0'\): 'problem' must be a non-empty string, got None"),
    ],
)
def test_load_first_error_items_errors_name_the_file_the_item_and_the_key(tmp_path, content, message):
    path = write_subset(tmp_path / "toy.json", content)
    with pytest.raises(DataError, match=message) as caught:
        load_first_error_items(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("subset", "num_items", "num_erroneous"), [("gsm8k", 400, 207), ("math", 1000, 594)])
def test_the_shipped_processbench_subsets_load_whole(subset, num_items, num_erroneous):
    items = load_first_error_items(SHIPPED / f"{subset}.json")
    assert len(items) == num_items and sum(i.label != -1 for i in items) == num_erroneous


def test_load_first_error_items_refuses_a_missing_or_unparsable_file(tmp_path):
    with pytest.raises(DataError, match="first-error-step file not found: .*missing.json"):
        load_first_error_items(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        load_first_error_items(tmp_path / "bad.json")
