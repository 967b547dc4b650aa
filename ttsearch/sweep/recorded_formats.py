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

from collections.abc import Iterator, Mapping
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


def same_length(values: list[Any], count: int, key: str, reference: str, at: str) -> None:
    if len(values) != count:
        raise RecordedError(f"{at}: has {len(values)} entries for {count} {reference}")


def read_search_and_learn(path: Path, verifier: str) -> list[RecordedProblem]:
    """A search-and-learn completions dataset (JSON Lines or Parquet): one row per problem."""
    verifier = verifier_name(verifier, f"{path}: recorded.verifier")
    problems = []
    for line, record in rows(path):
        completions = text_list(record, "completions", where(path, line, "completions"))
        scores = record.get("scores")
        if not isinstance(scores, list):
            raise RecordedError(
                f"{where(path, line, 'scores')}: must be a list of step-score lists, got {scores!r:.80}"
            )
        same_length(scores, len(completions), "scores", "completions", where(path, line, "scores"))
        step_scores = [scores_value(s, where(path, line, f"scores[{i}]")) for i, s in enumerate(scores)]
        tokens = record.get("completion_tokens")
        if isinstance(tokens, list):
            same_length(
                tokens, len(completions), "completion_tokens", "completions", where(path, line, "completion_tokens")
            )
            counts = [count_value(t, where(path, line, f"completion_tokens[{i}]")) for i, t in enumerate(tokens)]
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
        preds = record.get("pred")
        if not isinstance(preds, list) or not all(isinstance(p, str) for p in preds):
            raise RecordedError(f"{where(path, line, 'pred')}: must be a list of strings, got {preds!r:.80}")
        same_length(preds, len(texts), "pred", "code samples", where(path, line, "pred"))
        scores = record.get("pred_score")
        if not isinstance(scores, list):
            raise RecordedError(
                f"{where(path, line, 'pred_score')}: must be a list of [score] lists, got {scores!r:.80}"
            )
        same_length(scores, len(texts), "pred_score", "code samples", where(path, line, "pred_score"))
        outcome = [outcome_score(s, where(path, line, f"pred_score[{i}]")) for i, s in enumerate(scores)]
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
