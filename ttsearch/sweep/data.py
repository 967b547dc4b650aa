"""Problem sets: MATH-style or GSM8K-style rows from JSON Lines or Parquet, checked before any compute.

MATH rows carry `problem`, `answer` and a reference `solution`; GSM8K rows carry `question` and an `answer` that is
the reference reasoning followed by `#### N`, read here as problem, answer N and solution (the reasoning, its
`<<48/2=24>>` calculator notes dropped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttsearch.config import DEFAULT_DATASET
from ttsearch.errors import TTSearchError

REQUIRED_FIELDS = ("problem", "answer")
GSM8K_ANSWER = re.compile(r"\n?####\s*(?P<answer>[^\n]+?)\s*$")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


class DataError(TTSearchError):
    """A problem file that cannot be used, named by file and line (or row)."""


def load_problems(
    path: str | Path, limit: int | None = None, offset: int = 0, levels: list[int] | None = None
) -> list[dict[str, Any]]:
    """Rows with unique_id, problem, answer, subject, level (int, 0 when unknown); a DataError names the
    file and line (or row) of anything unusable, and a selection that leaves no rows."""
    path = resolve_data_path(path)
    if not path.is_file():
        raise DataError(f"dataset not found: {path}")
    if offset < 0:
        raise DataError(f"data.offset must be >= 0, got {offset}")
    if path.suffix == ".parquet":
        records = enumerate(_read_parquet(path), start=1)
        where = "row"
    else:
        records = json_objects(path)
        where = "line"
    rows = [_normalise(record, path, where, number) for number, record in records]
    if not rows:
        raise DataError(f"dataset is empty: {path}")
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if row["unique_id"] in seen:
            raise DataError(
                f"{path}: duplicate unique_id '{row['unique_id']}' in rows {seen[row['unique_id']]} and {number}"
            )
        seen[row["unique_id"]] = number
    at_levels = [row for row in rows if row["level"] in levels] if levels else rows
    end = None if limit is None else offset + limit
    selected = at_levels[offset:end]
    if not selected:  # caught here, before a sweep claims its output directory or starts a replica
        chosen = [f"data.levels={levels}"] if levels else []
        chosen += [f"data.offset={offset}"] if offset else []
        chosen += [f"data.limit={limit}"] if limit is not None else []
        counts = f"{len(rows)} rows, {len(at_levels)} at those levels" if levels else f"{len(rows)} rows"
        verb = "leave" if len(chosen) > 1 else "leaves"
        raise DataError(f"{' and '.join(chosen)} {verb} no problems in {path} ({counts})")
    return selected


def resolve_data_path(path: str | Path) -> Path:
    """`path` as given; a `data/NAME` that the working directory lacks is the shipped NAME (the package's datasets),
    so the documented configs work from any directory, under `ray job submit` and from an installed wheel."""
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("data",):
        return path
    shipped = DEFAULT_DATASET.parent.joinpath(*path.parts[1:])
    return shipped if shipped.exists() else path


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def json_objects(path: Path, error: type[DataError] = DataError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of a JSON Lines file; `error` names a line that is not UTF-8
    text or not a JSON object (problem files and recorded generations read alike)."""
    with path.open("rb") as raw:
        for number, data in enumerate(raw, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(
                    f"{path}:{number}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def _normalise(record: dict[str, Any], path: Path, where: str, number: int) -> dict[str, Any]:
    if "problem" not in record and isinstance(record.get("question"), str):
        record = _from_gsm8k(record, path, where, number)
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}: {where} {number}: missing or empty field '{name}'")
    level = re.search(r"\d+", str(record.get("level") or ""))
    return {
        "unique_id": str(record.get("unique_id") or f"{path.name}:{number}"),
        "problem": record["problem"],
        "answer": record["answer"],
        "subject": str(record.get("subject") or ""),
        "level": int(level.group()) if level else 0,
        "solution": str(record.get("solution") or ""),
    }


def _from_gsm8k(record: dict[str, Any], path: Path, where: str, number: int) -> dict[str, Any]:
    """A GSM8K row as a MATH-style one: the number after `####` is the answer, the reasoning the solution."""
    answer = record.get("answer")
    found = GSM8K_ANSWER.search(answer) if isinstance(answer, str) else None
    if found is None:
        raise DataError(f"{path}: {where} {number}: a GSM8K row's 'answer' must end with '#### <answer>'")
    reasoning = CALCULATOR_NOTE.sub("", answer[: found.start()]).strip()
    final = found["answer"].replace(",", "")
    return {
        **record,
        "problem": record["question"],
        "answer": final,
        "solution": f"{reasoning}\nThe answer is $\\boxed{{{final}}}$.",
    }


@dataclass(frozen=True)
class FirstErrorItem:
    """A solution annotated with its first wrong step: a ProcessBench item, or PRM800K converted to its fields."""

    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    """0-based index of the first wrong step; -1: every step is right."""


FIRST_ERROR_KEYS = ("id", "problem", "steps", "label")


def load_first_error_items(path: str | Path, limit: int | None = None) -> list[FirstErrorItem]:
    """The first `limit` items (None: all) of a first-error-step file: a JSON list (ProcessBench's subset files) or
    JSON Lines (one item a line), each with id, problem, steps and label; a DataError names the file, the item (or
    line) and the key of anything unusable."""
    path = resolve_data_path(path)
    if not path.is_file():
        raise DataError(f"first-error-step file not found: {path}")
    if path.suffix == ".jsonl":
        records = [(f"line {number}", record) for number, record in json_objects(path)]
    else:
        try:
            listed = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(listed, list):
            raise DataError(f"{path}: expected a JSON list of first-error items, got a {type(listed).__name__}")
        records = [(f"item {index}", record) for index, record in enumerate(listed)]
    if not records:
        raise DataError(f"{path}: holds no items")
    return [_first_error_item(record, f"{path}: {where}") for where, record in records[:limit]]


def _first_error_item(record: Any, where: str) -> FirstErrorItem:
    """One item, checked key by key (a bool is not an index, though Python counts it as an int)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got a {type(record).__name__}")
    missing = [key for key in FIRST_ERROR_KEYS if key not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing} (an item needs {list(FIRST_ERROR_KEYS)})")
    item_id, problem, steps, label = (record[key] for key in FIRST_ERROR_KEYS)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {item_id!r}")
    where = f"{where} (id '{item_id}')"
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{where}: 'problem' must be a non-empty string, got {problem!r:.80}")
    if not isinstance(steps, list) or not steps or not all(isinstance(step, str) for step in steps):
        raise DataError(f"{where}: 'steps' must be a non-empty list of strings, got {steps!r:.80}")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise DataError(
            f"{where}: 'label' must be -1 (no wrong step) or the index of the first wrong step in "
            f"0..{len(steps) - 1}, got {label!r}"
        )
    return FirstErrorItem(str(item_id), problem, tuple(steps), label)


def require_solutions(problems: list[dict[str, Any]], path: str, key: str) -> None:
    """Refuse, before anything runs, problems without a reference solution where `key` needs one for each."""
    lacking = [problem["unique_id"] for problem in problems if not problem["solution"].strip()]
    if lacking:
        raise DataError(
            f"{key} needs a reference 'solution' for every question; {path} has none for "
            f"{len(lacking)}, e.g. {lacking[0]}"
        )
