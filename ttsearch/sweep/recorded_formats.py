"""Other projects' recorded generations, read as `RecordedProblem`s (`ttsearch.sweep.recorded`).

- **search-and-learn** (huggingface/search-and-learn, read at commit 6f81cac8b1ca4c4be9fabefc27a856c928f3ae7f):
  `scripts/test_time_compute.py` maps an approach over the problem dataset (HuggingFaceH4/MATH-500: `problem`,
  `answer`, `solution`, `subject`, `level`, `unique_id`) and saves it with `save_dataset` (src/sal/utils/data.py):
  pushed to the Hub (Parquet) or written by `dataset.to_json(lines=True)`. `best_of_n` (src/sal/search/best_of_n.py)
  adds `completions` (N texts), `scores` (N lists of PRM step scores, steps split at blank lines) and
  `completion_tokens` (N token counts; DVTS writes one -1); `score()` (src/sal/utils/score.py) adds `agg_scores`
  and `pred_{naive,weighted,maj}@n`, which are selections, not per-sample answers, so they are not read: each
  sample's answer is ttsearch's extraction from its completion. The PRM is not named in the rows; `verifier`
  names it.
- **Qwen2.5-Math `rm_maj`** (QwenLM/Qwen2.5-Math, read at commit a45202bd16f1ec06f433442dc1152d0074773465):
  `evaluation/rm_maj_eval.py` reads JSON Lines written by `evaluation/math_eval.py` (`idx`, `question`, `gt`,
  `level`, ..., `code`: the N sampled texts, `pred`: the answer Qwen's parser extracted from each, `score`: Qwen's
  verdicts) plus `pred_score`: one reward-model score per sample, as `[[s], [s], ...]`. That is an *outcome*
  score, read here as a one-step score. `pred` is the recorded answer ('' when Qwen's parser found none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttsearch.sweep.recorded import (
    RecordedError,
    RecordedProblem,
    RecordedSample,
    count_value,
    json_lines,
    level_value,
    scores_value,
    text_value,
    verifier_name,
    where,
)

SEARCH_AND_LEARN_COMMIT = "6f81cac8b1ca4c4be9fabefc27a856c928f3ae7f"
QWEN_MATH_COMMIT = "a45202bd16f1ec06f433442dc1152d0074773465"


def rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """('line N' or 'row N', record) of a JSON Lines or Parquet file."""
    if path.suffix != ".parquet":
        yield from ((str(number), record) for number, record in json_lines(path))
        return
    if not path.is_file():
        raise RecordedError(f"recorded file not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise RecordedError(f"{path}: not a readable Parquet file ({exc})") from None
    yield from ((f"row {number}", record) for number, record in enumerate(table.to_pylist(), start=1))


def text_list(record: Mapping[str, Any], key: str, at: str) -> list[str]:
    value = record.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(text, str) for text in value):
        raise RecordedError(f"{at}: must be a non-empty list of strings, got {value!r:.80}")
    return value


def per_sample(
    record: Mapping[str, Any],
    key: str,
    samples: tuple[int, str],
    shape: str,
    parse: Callable[[Any, str], Any],
    at: Callable[[str], str],
) -> list[Any]:
    """`record[key]`: a list with one entry per sample (`samples`: their count and what they are), each entry read by
    `parse`; the errors name the key (`at(key)`) or the entry (`at("key[i]")`)."""
    values = record.get(key)
    if not isinstance(values, list):
        raise RecordedError(f"{at(key)}: must be a list of {shape}, got {values!r:.80}")
    count, what = samples
    if len(values) != count:
        raise RecordedError(f"{at(key)}: has {len(values)} entries for {count} {what}")
    return [parse(value, at(f"{key}[{i}]")) for i, value in enumerate(values)]


def answer_text(value: Any, at: str) -> str:
    """A recorded answer: a string ('' when the recorder's parser found none)."""
    if not isinstance(value, str):
        raise RecordedError(f"{at}: must be a string, got {value!r:.80}")
    return value


def read_search_and_learn(path: Path, verifier: str) -> list[RecordedProblem]:
    """A search-and-learn completions dataset (JSON Lines or Parquet): one row per problem."""
    verifier = verifier_name(verifier, f"{path}: recorded.verifier")
    problems = []
    for line, record in rows(path):
        completions = text_list(record, "completions", where(path, line, "completions"))
        samples, at = (len(completions), "completions"), partial(where, path, line)
        step_scores = per_sample(record, "scores", samples, "step-score lists", scores_value, at)
        if isinstance(record.get("completion_tokens"), list):
            counts = per_sample(record, "completion_tokens", samples, "token counts", count_value, at)
        else:  # DVTS records one -1: not counted
            counts = [None] * len(completions)
        uid = record.get("unique_id")
        problems.append(
            RecordedProblem(
                text_value(record, "unique_id", where(path, line, "unique_id"))
                if uid is not None
                else f"{path.stem}:{line}",
                text_value(record, "problem", where(path, line, "problem")),
                text_value(record, "answer", where(path, line, "answer"), numbers=True),
                tuple(
                    RecordedSample((text,), None, {verifier: s}, n)
                    for text, s, n in zip(completions, step_scores, counts, strict=True)
                ),
                level_value(record.get("level"), where(path, line, "level")),
                str(record.get("subject") or ""),
            )
        )
    if not problems:
        raise RecordedError(f"{path}: holds no rows")
    return problems


def read_qwen_rm_maj(path: Path, verifier: str) -> list[RecordedProblem]:
    """Qwen2.5-Math `rm_maj` input: one line per problem with `code`, `pred` and `pred_score`."""
    verifier = verifier_name(verifier, f"{path}: recorded.verifier")
    problems = []
    for line, record in rows(path):
        texts = text_list(record, "code", where(path, line, "code"))
        samples, at = (len(texts), "code samples"), partial(where, path, line)
        preds = per_sample(record, "pred", samples, "strings", answer_text, at)
        outcome = per_sample(record, "pred_score", samples, "[score] lists", outcome_score, at)
        uid = record.get("unique_id", record.get("idx"))
        key = "unique_id" if "unique_id" in record else "idx"
        problems.append(
            RecordedProblem(
                text_value(record, key, where(path, line, key)) if uid is not None else f"{path.stem}:{line}",
                text_value(record, "question", where(path, line, "question")),
                text_value(record, "gt", where(path, line, "gt"), numbers=True),
                tuple(
                    RecordedSample((text,), pred, {verifier: score})
                    for text, pred, score in zip(texts, preds, outcome, strict=True)
                ),
                level_value(record.get("level"), where(path, line, "level")),
                str(record.get("subject") or record.get("type") or ""),
            )
        )
    if not problems:
        raise RecordedError(f"{path}: holds no rows")
    return problems


def outcome_score(value: Any, at: str) -> tuple[float]:
    """One outcome score: `[s]` as rm_maj_eval.py flattens it (a bare number is read too)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    scores = scores_value(value, at)
    if len(scores) != 1:
        raise RecordedError(f"{at}: an outcome score is one number, got {len(scores)}")
    return (scores[0],)
