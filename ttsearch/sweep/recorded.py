"""Recorded generations: solutions some other run sampled, read into one normalized shape for `ttsearch import`.

Every format becomes a list of `RecordedProblem`s, each holding its problem (id, question, gold answer, level and
subject where known) and its samples: a best-of-N *pool*. A sample keeps its text (as steps), the answer its
recorder extracted if it stored one, the per-step scores of every verifier that scored it, and its token count.

Formats (`RecordedFormat`): our generic JSON Lines (one line per sample, below, documented in
docs/guides/importing.md), search-and-learn's completion datasets and Qwen2.5-Math's `rm_maj` evaluation output
(`ttsearch.sweep.recorded_formats`). Every input is checked before anything is written; a `RecordedError` names
the file, the line and the key.

The generic format, one JSON object per line and sample:

    problem_id        string (or integer): the problem's unique_id                          required
    question          string: the problem as the generator saw it                           required
    gold              string (or number): the reference answer                              required
    steps | text      a list of strings (the solution's steps; [] when no text was kept),   one of the two
                      or one string (the whole solution)
    sample_index      integer >= 0: the sample's place in its pool (unique per problem)     optional
    extracted_answer  string: the answer the recorder extracted; absent or null: ttsearch   optional
                      extracts it from the text
    step_scores       {verifier name: [score of each step, ...]}                            optional
    num_tokens        integer >= 0: tokens the generator sampled for this solution          optional
    level, subject    integer 1-5 (or "Level N") / string                                   optional

Other keys (`is_correct`, `temperature`, `model_name`, ...) are ignored. Every line of a problem repeats the same
question, gold, level and subject, and every line of the file has the same verifiers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ttsearch.config import RecordedFormat
from ttsearch.config.recorded import VERIFIER_NAME
from ttsearch.search.grading import extract_answer
from ttsearch.sweep.data import DataError, json_objects


class RecordedError(DataError):
    """Recorded generations that cannot be imported: the message names the file, the line (or row) and the key."""


class AnswerSource(StrEnum):
    """Where a sample's final answer came from."""

    recorded = "recorded"  # the recorder's extracted answer
    extracted = "extracted"  # ttsearch's extraction from the text (`ttsearch.search.grading.extract_answer`)
    none = "none"  # neither: no answer, graded wrong and counted in the import's summary


@dataclass(frozen=True)
class RecordedSample:
    """One recorded solution of a problem's pool."""

    steps: tuple[str, ...]
    """The solution's steps (one step holding the whole text for formats that record text); () when none was kept."""
    recorded_answer: str | None = None
    """The answer the recorder extracted ('' when it found none); None: it stored none, so ttsearch extracts one
    from the steps."""
    step_scores: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Verifier name → its score of each step (one score for an outcome verifier); empty when none scored it."""
    num_tokens: int | None = None
    """Tokens the generator sampled for it; None: not recorded."""

    @property
    def text(self) -> str:
        return "\n\n".join(self.steps)

    @property
    def answer(self) -> str | None:
        """The recorded answer when the recorder stored one, else ttsearch's extraction; None: no answer (a blank
        recorded answer is the recorder saying it found none)."""
        if self.recorded_answer is not None:
            return self.recorded_answer if self.recorded_answer.strip() else None
        return extract_answer(self.text)

    @property
    def answer_source(self) -> AnswerSource:
        if self.answer is None:
            return AnswerSource.none
        return AnswerSource.extracted if self.recorded_answer is None else AnswerSource.recorded


@dataclass(frozen=True)
class RecordedProblem:
    """A problem and its pool of recorded samples."""

    unique_id: str
    question: str
    gold: str
    samples: tuple[RecordedSample, ...]
    level: int = 0
    """MATH level 1-5; 0 when unknown (GSM8K)."""
    subject: str = ""

    @property
    def verifiers(self) -> tuple[str, ...]:
        """The verifiers that scored every sample, in the order the first sample names them."""
        return tuple(self.samples[0].step_scores) if self.samples else ()

    def as_problem(self) -> dict[str, Any]:
        """The problem as the sweep's rows and fingerprints read it (`ttsearch.sweep.data.load_problems`)."""
        return {
            "unique_id": self.unique_id,
            "problem": self.question,
            "answer": self.gold,
            "level": self.level,
            "subject": self.subject,
        }


# ---------------------------------------------------------------- checking values, naming where they were found
def where(path: Path | str, line: int | str, key: str) -> str:
    """`file:line: key 'k'`, the prefix of every reader's error."""
    return f"{path}:{line}: key '{key}'"


def text_value(record: Mapping[str, Any], key: str, at: str, *, numbers: bool = False) -> str:
    """`record[key]` as a non-empty string (an integer too, or any number if `numbers`)."""
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and (numbers or isinstance(value, int)):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        kinds = "a non-empty string or a number" if numbers else "a non-empty string"
        raise RecordedError(f"{at}: must be {kinds}, got {value!r:.80}")
    return value


def count_value(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordedError(f"{at}: must be an integer >= 0, got {value!r:.80}")
    return value


def scores_value(value: Any, at: str) -> tuple[float, ...]:
    """A non-empty list of finite numbers."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise RecordedError(f"{at}: must be a non-empty list of finite numbers, got {value!r:.80}")
    return tuple(float(v) for v in value)


def verifier_name(name: Any, at: str) -> str:
    if not isinstance(name, str) or not VERIFIER_NAME.fullmatch(name):
        raise RecordedError(f"{at}: a verifier name is letters, digits, '_', '.' or '-', got {name!r:.80}")
    return name


def level_value(value: Any, at: str) -> int:
    """A MATH level: 1-5, or "Level N"; absent or null is 0 (unknown)."""
    if value is None:
        return 0
    found = re.fullmatch(r"(?:Level\s*)?([1-5])", str(value).strip()) if not isinstance(value, bool) else None
    if found is None:
        raise RecordedError(f"{at}: must be a MATH level 1-5 or 'Level N', got {value!r:.80}")
    return int(found.group(1))


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; a RecordedError names a line that is not a JSON object."""
    if not path.is_file():
        raise RecordedError(f"recorded file not found: {path}")
    yield from json_objects(path, RecordedError)


# ---------------------------------------------------------------- the generic format
def read_generic(path: Path) -> list[RecordedProblem]:
    """Problems of a generic JSON Lines file, in the order they first appear; samples by `sample_index` (else in
    file order)."""
    problems: dict[str, dict[str, Any]] = {}
    verifiers: tuple[tuple[str, ...], int] | None = None
    for number, record in json_lines(path):
        uid = text_value(record, "problem_id", where(path, number, "problem_id"))
        head = {
            "question": text_value(record, "question", where(path, number, "question")),
            "gold": text_value(record, "gold", where(path, number, "gold"), numbers=True),
            "level": level_value(record.get("level"), where(path, number, "level")),
            "subject": str(record.get("subject") or ""),
        }
        sample = generic_sample(record, path, number)
        names = tuple(sample.step_scores)
        if verifiers is None:
            verifiers = (names, number)
        elif set(names) != set(verifiers[0]):
            raise RecordedError(
                f"{where(path, number, 'step_scores')}: every line needs the same verifiers; line {verifiers[1]} "
                f"has {sorted(verifiers[0])}, this one {sorted(names)}"
            )
        problem = problems.setdefault(uid, {"head": head, "line": number, "samples": [], "indices": {}})
        for key, value in head.items():
            if value != problem["head"][key]:
                raise RecordedError(
                    f"{where(path, number, key)}: differs from line {problem['line']} of problem '{uid}' "
                    f"({problem['head'][key]!r:.60} there, {value!r:.60} here)"
                )
        index = record.get("sample_index")
        if index is not None:
            count_value(index, where(path, number, "sample_index"))
            if index in problem["indices"]:
                raise RecordedError(
                    f"{where(path, number, 'sample_index')}: problem '{uid}' already has sample {index} "
                    f"(line {problem['indices'][index]})"
                )
            problem["indices"][index] = number
        problem["samples"].append((len(problem["samples"]) if index is None else index, sample))
    if not problems:
        raise RecordedError(f"{path}: holds no samples")
    return [
        RecordedProblem(
            uid,
            head["question"],
            head["gold"],
            tuple(s for _, s in sorted(p["samples"], key=lambda x: x[0])),
            head["level"],
            head["subject"],
        )
        for uid, p in problems.items()
        for head in [p["head"]]
    ]


def generic_sample(record: Mapping[str, Any], path: Path, number: int) -> RecordedSample:
    """One line's sample: its steps or text, recorded answer, verifier scores and token count."""
    if ("steps" in record) == ("text" in record):
        raise RecordedError(f"{where(path, number, 'steps')}: a sample needs 'steps' (a list) or 'text', not both")
    if "steps" in record:
        steps = record["steps"]
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise RecordedError(f"{where(path, number, 'steps')}: must be a list of strings, got {steps!r:.80}")
        steps = tuple(steps)
    else:
        text = record["text"]
        if not isinstance(text, str):
            raise RecordedError(f"{where(path, number, 'text')}: must be a string, got {text!r:.80}")
        steps = (text,) if text else ()
    answer = record.get("extracted_answer")
    if isinstance(answer, bool) or not isinstance(answer, str | int | float | None):
        raise RecordedError(f"{where(path, number, 'extracted_answer')}: must be a string or null, got {answer!r:.80}")
    scores = record.get("step_scores") or {}
    if not isinstance(scores, dict):
        raise RecordedError(f"{where(path, number, 'step_scores')}: must be an object, got {scores!r:.80}")
    step_scores = {
        verifier_name(name, where(path, number, "step_scores")): scores_value(
            value, where(path, number, f"step_scores.{name}")
        )
        for name, value in scores.items()
    }
    tokens = record.get("num_tokens")
    return RecordedSample(
        steps,
        None if answer is None else str(answer),
        step_scores,
        None if tokens is None else count_value(tokens, where(path, number, "num_tokens")),
    )


def generic_lines(problems: Iterable[RecordedProblem]) -> Iterator[str]:
    """The generic format's lines of `problems` (what `ttsearch export` writes): one per sample, its answer as
    `extracted_answer` (null: it has none), its steps as recorded."""
    for problem in problems:
        for index, sample in enumerate(problem.samples):
            record: dict[str, Any] = {
                "problem_id": problem.unique_id,
                "question": problem.question,
                "gold": problem.gold,
                "sample_index": index,
                "steps": list(sample.steps),
                "extracted_answer": sample.answer,
                "step_scores": {name: list(scores) for name, scores in sample.step_scores.items()},
            }
            if sample.num_tokens is not None:
                record["num_tokens"] = sample.num_tokens
            if problem.level:
                record["level"] = problem.level
            if problem.subject:
                record["subject"] = problem.subject
            yield json.dumps(record, ensure_ascii=False)


def read_recorded(path: str | Path, fmt: RecordedFormat | str, verifier: str = "prm") -> list[RecordedProblem]:
    """The problems and pools of a recorded file in format `fmt`; `verifier` names the scores of the formats that
    record one unnamed verifier (search-and-learn's `scores`, Qwen's `pred_score`)."""
    from ttsearch.sweep.recorded_formats import read_qwen_rm_maj, read_search_and_learn

    path = Path(path)
    fmt = RecordedFormat(fmt)
    if fmt is RecordedFormat.generic:
        problems = read_generic(path)
    elif fmt is RecordedFormat.search_and_learn:
        problems = read_search_and_learn(path, verifier)
    else:
        problems = read_qwen_rm_maj(path, verifier)
    check_pools(problems, path)
    return problems


def check_pools(problems: list[RecordedProblem], path: Path) -> None:
    """Every problem has a sample and unique id (readers that build ids from rows could repeat one)."""
    seen: set[str] = set()
    for problem in problems:
        if problem.unique_id in seen:
            raise RecordedError(f"{path}: problem '{problem.unique_id}' appears twice")
        seen.add(problem.unique_id)
        if not problem.samples:
            raise RecordedError(f"{path}: problem '{problem.unique_id}' has no samples")
