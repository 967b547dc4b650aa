"""Problem loading: shipped MATH-500, Parquet, and errors that name the file and line."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttsearch.config import DataConfig
from ttsearch.data import DataError, load_problems


def test_shipped_math500_loads_with_its_fields():
    rows = load_problems(DataConfig().path)
    assert len(rows) == 500
    assert set(rows[0]) == {"unique_id", "problem", "answer", "subject", "level"}
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
