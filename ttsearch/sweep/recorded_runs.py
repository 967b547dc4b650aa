"""`ttsearch import` and `ttsearch export`: recorded generations in and out of a run directory.

Import: every problem's recorded samples are one best-of-N pool. For each verifier that scored them, the pool
becomes the rows of `best_of_n[VERIFIER]` at every budget (`ttsearch.sweep.pools.pool_rows`: the pool size exactly,
smaller budgets as expectations over subsets of the pool), so one `ttsearch report` compares the verifiers. The
run directory is claimed through the results store like a sweep's (`RunStore.claim`): its fingerprint holds the
recorded samples' content, so importing another recording into the same directory is refused, and importing the
same one again rewrites the same rows. The problems' texts are kept in `recorded/problems.jsonl`, for export.

What a recording does not hold is not invented: prompt tokens read 0 (not recorded), the verifier is billed the
solution's tokens (it read at least those; the question's are not recorded), FLOPs use the parameter counts given
in `recorded` (0: unknown), wall time reads 0. A sample without an answer (none recorded and none extracted) is
graded wrong and counted in the summary.

Export: the candidates of every pool's largest-budget rows, written in the generic format (`generic_lines`): their
answers, each verifier's aggregated score as a one-step score, their token counts. Importing that file again
gives the same rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from omegaconf import OmegaConf

from ttsearch.config import RecordedConfig, StrategySpec, SweepConfig, require
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import ModelSizes, Usage
from ttsearch.search.strategies import Candidate
from ttsearch.sweep.data import load_problems
from ttsearch.sweep.pools import pool_rows
from ttsearch.sweep.recorded import (
    AnswerSource,
    RecordedError,
    RecordedProblem,
    RecordedSample,
    generic_lines,
    read_recorded,
)
from ttsearch.sweep.results import CONFIG, RESULT_SCHEMA, ResultsError, RunStore, load_results, sweep_fingerprint

PROBLEMS_FILE = ("recorded", "problems.jsonl")
"""Where an imported run keeps its problems' texts (a sweep's are in its `data.path`)."""
RECORDED_MODEL = "recorded"
"""The generator and verifier model an imported run's config names: the recording's models, not any of ours."""
SHOWN_MISSING = 5
"""Samples without an answer that the import summary names (all are counted)."""


def default_budgets(pool_size: int) -> list[int]:
    """1, 2, 4, ... up to `pool_size`, and `pool_size` itself."""
    budgets = [1 << i for i in range(pool_size.bit_length()) if 1 << i <= pool_size]
    return budgets if budgets[-1] == pool_size else [*budgets, pool_size]


def verifier_label(label: str, verifier: str) -> str:
    """`label` (a strategy configuration or label) with the verifier named after its configuration:
    `best_of_n/weighted` → `best_of_n[prm]/weighted`."""
    configuration, slash, rest = label.partition("/")
    return f"{configuration}[{verifier}]{slash}{rest}"


@dataclass(frozen=True)
class ImportSummary:
    """What `ttsearch import` wrote: what the command prints."""

    run_dir: str
    problems: int
    samples: int
    pool_sizes: tuple[int, int]
    """The smallest and the largest pool."""
    verifiers: tuple[str, ...]
    budgets: tuple[int, ...]
    answers: dict[str, int]
    """`AnswerSource` value → samples: the recorded answer used, ttsearch's extraction, or no answer."""
    missing: tuple[str, ...]
    """The first `SHOWN_MISSING` samples without an answer, as `problem_id#sample`."""
    rows: int
    seconds: float

    def __str__(self) -> str:
        low, high = self.pool_sizes
        pools = f"{low}" if low == high else f"{low} to {high}"
        lines = [
            f"imported {self.problems} problems × {pools} samples ({self.samples} samples) into {self.run_dir}",
            f"verifiers: {', '.join(self.verifiers) or 'none (majority only)'}; budgets: "
            + ", ".join(map(str, self.budgets)),
            f"answers: {self.answers.get(AnswerSource.recorded, 0)} recorded, "
            f"{self.answers.get(AnswerSource.extracted, 0)} extracted by ttsearch, "
            f"{self.answers.get(AnswerSource.none, 0)} without an answer (graded wrong)",
        ]
        if self.missing:
            more = self.answers[AnswerSource.none] - len(self.missing)
            lines.append("without an answer: " + ", ".join(self.missing) + (f" and {more} more" if more else ""))
        lines.append(f"{self.rows} rows in {self.seconds:.1f} s")
        return "\n".join(lines)


def import_recorded(cfg: SweepConfig, source: str | Path, run_dir: str) -> ImportSummary:
    """Read `source` in `cfg.recorded.format`, check it whole, claim `run_dir` and write its rows."""
    started = time.perf_counter()
    section = cfg.recorded
    require(len(cfg.seeds) == 1, "seeds", f"an import is one recording, so one seed, got {cfg.seeds}")
    problems = read_recorded(source, section.format, section.verifier)
    sizes = [len(problem.samples) for problem in problems]
    budgets = sorted(set(section.budgets)) or default_budgets(min(sizes))
    smallest = min(range(len(problems)), key=sizes.__getitem__)
    require(
        budgets[-1] <= sizes[smallest],
        "recorded.budgets",
        f"every budget must be at most the smallest pool, {sizes[smallest]} samples of problem "
        f"'{problems[smallest].unique_id}', got {budgets[-1]}",
    )
    spec = StrategySpec.of("best_of_n", list(section.selections), section.aggregation)
    run_cfg = replace(
        cfg,
        budgets=budgets,
        strategies=[spec],
        output_dir=run_dir,
        data=replace(cfg.data, path=str(source), shards=1, limit=None, offset=0, levels=[]),
        generator=replace(cfg.generator, model=RECORDED_MODEL),
        verifier=replace(cfg.verifier, model=RECORDED_MODEL),
    )
    store = RunStore(run_dir)
    fingerprint = sweep_fingerprint(run_cfg, [problem.as_problem() for problem in problems])
    store.claim(fingerprint | {"recorded": recording_fingerprint(problems, section)}, run_cfg)
    store.write_text("".join(problem_line(problem) for problem in problems), *PROBLEMS_FILE)
    rows = recorded_rows(problems, run_cfg, spec, budgets)
    store.write_shard(0, 1, pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
    sources = Counter(sample.answer_source for problem in problems for sample in problem.samples)
    missing = [
        f"{problem.unique_id}#{index}"
        for problem in problems
        for index, sample in enumerate(problem.samples)
        if sample.answer_source is AnswerSource.none
    ]
    return ImportSummary(
        str(store.location()),
        len(problems),
        sum(sizes),
        (min(sizes), max(sizes)),
        problems[0].verifiers,
        tuple(budgets),
        {str(key): count for key, count in sources.items()},
        tuple(missing[:SHOWN_MISSING]),
        len(rows),
        time.perf_counter() - started,
    )


def recording_fingerprint(problems: list[RecordedProblem], section: RecordedConfig) -> dict[str, Any]:
    """The recording's content (every sample as the generic format writes it) and how it was read (the `recorded`
    section: format, parameter counts, ...): a different recording, or the same one read otherwise, is another run."""
    content = hashlib.sha256()
    for line in generic_lines(problems):
        content.update(line.encode())
    return OmegaConf.to_container(OmegaConf.structured(section)) | {"samples": content.hexdigest()}


def problem_line(problem: RecordedProblem) -> str:
    return json.dumps(problem.as_problem(), ensure_ascii=False) + "\n"


def recorded_rows(
    problems: list[RecordedProblem], cfg: SweepConfig, spec: StrategySpec, budgets: list[int]
) -> list[dict[str, Any]]:
    """Every verifier's rows of every problem's pool (`pool_rows`); a recording without scores gives majority
    rows under the plain configuration."""
    section, seed = cfg.recorded, cfg.seeds[0]
    rows: list[dict[str, Any]] = []
    with Grader.from_config(cfg.grading) as grader:
        for problem in problems:
            verifiers: tuple[str | None, ...] = problem.verifiers or (None,)
            for verifier in verifiers:
                scored = spec if verifier is not None else replace(spec, selections=["majority"])
                candidates = [candidate(sample, verifier) for sample in problem.samples]
                sizes = ModelSizes(section.generator_parameters, section.verifier_parameters.get(verifier or "", 0))
                made = pool_rows(
                    problem.as_problem(),
                    scored,
                    seed,
                    budgets,
                    candidates,
                    pool_usage(problem.samples),
                    0.0,
                    grader,
                    sizes,
                    cfg.pool_subsets,
                    pool_budget=len(candidates),
                )
                if verifier is not None:
                    for row in made:
                        row["strategy_config"] = verifier_label(row["strategy_config"], verifier)
                        row["strategy_label"] = verifier_label(row["strategy_label"], verifier)
                rows += made
    return rows


def candidate(sample: RecordedSample, verifier: str | None) -> Candidate:
    """A sample as the pool's candidate: its answer fixed (recorded or extracted once, here), `verifier`'s scores.
    A sample without an answer keeps no text, so nothing extracts one from it later."""
    answer = sample.answer
    return Candidate(
        sample.steps if answer is not None else (),
        sample.step_scores[verifier] if verifier is not None else (),
        True,
        generated_tokens=sample.num_tokens,
        verifier_tokens=sample.num_tokens if verifier is not None else None,
        recorded_answer=answer,
    )


def pool_usage(samples: tuple[RecordedSample, ...]) -> Usage:
    """What generating and scoring the pool consumed, as far as the recording says (the module docstring)."""
    tokens = sum(sample.num_tokens or 0 for sample in samples)
    return Usage(
        generated_tokens=tokens,
        samples=len(samples),
        verifier_tokens=tokens,
        scored_solutions=len(samples),
    )


# ---------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportSummary:
    """What `ttsearch export` wrote."""

    path: str
    problems: int
    samples: int
    verifiers: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"exported {self.problems} pools ({self.samples} samples, verifiers: {', '.join(self.verifiers)}) "
            f"to {self.path}"
        )


def export_pools(run_dir: str, destination: str | Path, seed: int | None = None) -> ExportSummary:
    """Write the best-of-N pools of `run_dir` (each configuration's largest-budget row per problem, one seed: the
    smallest unless given) to `destination` in the generic format."""
    store = RunStore.of(run_dir)
    frame = load_results(store)
    pools = frame[(frame["strategy"] == "best_of_n") & frame["error"].isna()]
    if pools.empty:
        raise ResultsError(f"{store.location()} holds no best-of-N rows without errors: no pools to export")
    seed = int(pools["seed"].min()) if seed is None else seed
    pools = pools[pools["seed"] == seed]
    if pools.empty:
        raise ResultsError(f"{store.location()} has no best-of-N rows of seed {seed}")
    largest = pools.groupby(["unique_id", "strategy_config"])["budget"].transform("max")
    pools = pools[pools["budget"] == largest].drop_duplicates(["unique_id", "strategy_config"])
    texts, imported = problem_texts(store), store.exists(*PROBLEMS_FILE)
    problems = [exported_problem(uid, group, texts, imported) for uid, group in pools.groupby("unique_id", sort=False)]
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    Path(destination).write_text("".join(line + "\n" for line in generic_lines(problems)))
    verifiers = sorted({name for problem in problems for name in problem.verifiers})
    return ExportSummary(str(destination), len(problems), sum(len(p.samples) for p in problems), tuple(verifiers))


def problem_texts(store: RunStore) -> dict[str, str]:
    """unique_id → question: an import's `recorded/problems.jsonl`, else the sweep's problem set (its config)."""
    if store.exists(*PROBLEMS_FILE):
        lines = store.read_text(*PROBLEMS_FILE).splitlines()
        return {row["unique_id"]: row["problem"] for row in map(json.loads, lines)}
    from ttsearch.config import load_config_text

    cfg = load_config_text(store.read_text(CONFIG), str(store.location(CONFIG)))
    return {problem["unique_id"]: problem["problem"] for problem in load_problems(cfg.data.path)}


def exported_problem(uid: str, rows: pd.DataFrame, texts: dict[str, str], imported: bool) -> RecordedProblem:
    """One problem's pool from its configurations' rows: a configuration `best_of_n[NAME]` is verifier NAME, any
    other its configuration string with `/` as `.` (a sweep's `best_of_n/min`)."""
    if uid not in texts:
        raise RecordedError(f"no question text for problem '{uid}' (its problem set no longer holds it)")
    first = rows.iloc[0]
    answers = list(first["candidate_answers"])
    tokens = first["candidate_generated_tokens"]
    scores: dict[str, list[float]] = {}
    for _, row in rows.iterrows():
        if list(row["candidate_answers"]) != answers:
            raise RecordedError(
                f"problem '{uid}': configurations {rows['strategy_config'].tolist()} hold different pools"
            )
        verifier = verifier_of(row["strategy_config"], imported)
        if verifier is not None:
            scores[verifier] = [float(s) for s in row["candidate_scores"]]
    samples = tuple(
        RecordedSample(
            (),
            "" if answer is None else answer,
            {name: (values[i],) for name, values in scores.items()},
            None if tokens is None or pd.isna(tokens[i]) else int(tokens[i]),
        )
        for i, answer in enumerate(answers)
    )
    level = 0 if pd.isna(first["level"]) else int(first["level"])
    return RecordedProblem(uid, texts[uid], str(first["reference"]), samples, level, str(first["subject"] or ""))


TAGGED = re.compile(r"best_of_n\[(?P<verifier>[^\]]+)\]")


def verifier_of(configuration: str, imported: bool) -> str | None:
    """The verifier whose scores a configuration's rows hold: NAME of an import's `best_of_n[NAME]` (an import's
    untagged configuration had no verifier: None); a sweep's configuration itself, `/` as `.` (`best_of_n.min`)."""
    tagged = TAGGED.match(configuration)
    if tagged:
        return tagged["verifier"]
    return None if imported else configuration.replace("/", ".")
