"""Does revising help? pass@1 of revision attempt t, and revisions vs best-of-N at equal budget (Snell et al. §6),
from a sweep's rows alone: no Ray, no model in this module. The attempt curves are `ttsearch.analysis.revisions`'
(`ttsearch report` draws them too); this adds the comparison at equal budget and `ttsearch eval-revision`'s report.
Error rows are left out of everything; ungraded candidates (null flags) and ungraded rows out of every mean
(`ttsearch.analysis.curves`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ttsearch.analysis.curves import as_frame, covered, finished_rows, graded_rows, mean_curves, search_jobs
from ttsearch.analysis.render import markdown_table, mean_se_text
from ttsearch.analysis.revisions import attempt_accuracy, attempt_table
from ttsearch.config import EMBEDDED_MODEL, ConfigError, StrategySpec, SweepConfig, validate

COMPARED = ("revisions", "best_of_n")
EVAL_SELECTIONS = ["majority", "naive"]
"""What eval-revision's sweeps select with: majority reads no verifier score; naive is the verifier's pick."""
CURVE = "revision_curve.png"


def revisions_vs_best_of_n(rows: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Accuracy and coverage (%) of each revisions and best-of-N configuration, at every budget and selection that
    both strategies ran.

    Columns: budget, selection, strategy, strategy_config, accuracy, accuracy_se, coverage, coverage_se,
    questions. Accuracy over graded rows, coverage (any candidate right) over every finished job; standard
    errors as `mean_curves` takes them (across seeds when there are several, else across questions).
    """
    frame, _ = finished_rows(as_frame(rows))
    frame = frame[frame["strategy"].isin(COMPARED)]
    graded, _ = graded_rows(frame)
    jobs = search_jobs(frame)
    accuracy = (
        mean_curves(graded, "correct", "strategy_label")
        .drop(columns="x")
        .rename(columns={"label": "strategy_label", "mean": "accuracy", "se": "accuracy_se"})
    )
    coverage = (
        mean_curves(jobs.assign(covered=jobs["candidate_correct"].map(covered)), "covered", "strategy_config")
        .drop(columns="x")
        .rename(columns={"label": "strategy_config", "mean": "coverage", "se": "coverage_se"})
    )
    labels = frame[["strategy_label", "strategy", "strategy_config", "selection"]].drop_duplicates("strategy_label")
    questions = frame.groupby(["strategy_config", "budget"])["unique_id"].nunique().rename("questions").reset_index()
    table = (
        accuracy.merge(labels, on="strategy_label")
        .merge(coverage, on=["strategy_config", "budget"])
        .merge(questions, on=["strategy_config", "budget"])
    )
    both = table.groupby(["budget", "selection"])["strategy"].transform("nunique") == len(COMPARED)
    columns = [
        "budget",
        "selection",
        "strategy",
        "strategy_config",
        "accuracy",
        "accuracy_se",
        "coverage",
        "coverage_se",
        "questions",
    ]
    return table[both][columns].sort_values(["budget", "selection", "strategy"]).reset_index(drop=True)


# ---------------------------------------------------------------- `ttsearch eval-revision`


def model_directory(index: int, model: str) -> str:
    """A model's sweep directory name under `eval_revision.output`: its position and a slug of its name, so a
    changed model list never resumes another model's sweep."""
    return f"model-{index}-{re.sub(r'[^A-Za-z0-9._]+', '-', model).strip('-.') or 'model'}"


def _why_not_loadable(model: str) -> str | None:
    """Why `model` cannot be loaded, or None: "embedded", a saved model directory or a Hugging Face hub id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    local = Path(model).expanduser()
    if model == EMBEDDED_MODEL or (local / "config.json").is_file():
        return None
    if local.exists():
        return f"'{model}' exists but is not a saved model (no config.json in it)"
    try:
        validate_repo_id(model)
    except HFValidationError:
        return f"'{model}' does not exist (and is not a Hugging Face hub id)"
    return None


def model_sweeps(cfg: SweepConfig) -> list[SweepConfig]:
    """One sweep per `eval_revision.models` entry: `cfg` with that generator, revisions (T, window) and best-of-N,
    both selecting by `EVAL_SELECTIONS`, at `eval_revision.budget`, into `model_directory` under `eval_revision.output`.

    Every model is checked (and every sweep validated) here, before anything starts: a model that cannot be loaded
    raises a ConfigError naming `eval_revision.models[i]`.
    """
    section = cfg.eval_revision
    strategies = [
        StrategySpec.of(
            "revisions",
            list(EVAL_SELECTIONS),
            revision_length=section.revision_length,
            revision_window=section.revision_window,
        ),
        StrategySpec(name="best_of_n", selections=list(EVAL_SELECTIONS)),
    ]
    sweeps = []
    for i, model in enumerate(section.models):
        key = f"eval_revision.models[{i}]"
        problem = _why_not_loadable(model)
        if problem is not None:
            raise ConfigError(
                f"bad config: key '{key}': {problem}; give 'embedded', a model directory (`ttsearch "
                "train-revision` saves one in runs/revision/model) or a hub id"
            )
        sweep = replace(
            cfg,
            generator=replace(cfg.generator, model=model),
            strategies=strategies,
            budgets=[section.budget],
            output_dir=f"{section.output.rstrip('/')}/{model_directory(i, model)}",
        )
        try:
            validate(sweep)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in the sweep of {key})") from None
        sweeps.append(sweep)
    return sweeps


@dataclass(frozen=True)
class AttemptPoint:
    """pass@1 of attempt t of one model's revision chains."""

    attempt: int
    accuracy: float
    """% of graded attempt-t candidates that are right."""
    se: float | None
    """Standard error over the questions' shares (%); None with one question."""
    candidates: int
    questions: int


@dataclass(frozen=True)
class StrategyPoint:
    """One strategy under one selection at the eval's budget."""

    selection: str
    strategy: str
    """"revisions" or "best_of_n"."""
    strategy_config: str
    accuracy: float
    """% of graded rows whose selected answer is right."""
    accuracy_se: float | None
    coverage: float
    """% of jobs with a right answer among the candidates (pass@N: what a perfect verifier would pick)."""
    coverage_se: float | None


@dataclass(frozen=True)
class ModelEval:
    """One model's sweep, as eval.md and eval.json report it."""

    model: str
    run_dir: str
    questions: int
    """Questions with at least one finished row."""
    rows: dict[str, int]
    """The sweep's row counts: done, ungraded, failed, missing (`ttsearch.sweep.jobs.RowCounts`)."""
    attempts: list[AttemptPoint]
    strategies: list[StrategyPoint]


@dataclass(frozen=True)
class RevisionEvalReport:
    """Everything eval.md, eval.json and revision_curve.png say; `models[0]` is the base."""

    budget: int
    revision_length: int
    revision_window: int
    verifier: str
    models: list[ModelEval]


def _number(value: float) -> float | None:
    """NaN (an undefined standard error) as None, which JSON can hold."""
    return None if pd.isna(value) else float(value)


def model_eval(model: str, run_dir: str, rows: pa.Table | pd.DataFrame, counts: dict[str, int]) -> ModelEval:
    """A model's per-attempt pass@1 and its revisions vs best-of-N points, from its sweep's rows."""
    frame = as_frame(rows)
    attempts = [
        AttemptPoint(int(p.attempt), float(p.mean), _number(p.se), int(p.candidates), int(p.questions))
        for p in attempt_accuracy(frame).itertuples()
    ]
    strategies = [
        StrategyPoint(
            p.selection,
            p.strategy,
            p.strategy_config,
            float(p.accuracy),
            _number(p.accuracy_se),
            float(p.coverage),
            _number(p.coverage_se),
        )
        for p in revisions_vs_best_of_n(frame).itertuples()
    ]
    questions = finished_rows(frame)[0]["unique_id"].nunique()
    return ModelEval(model, run_dir, int(questions), counts, attempts, strategies)


def _label(report: RevisionEvalReport, index: int) -> str:
    model = report.models[index].model
    return f"{model} (base)" if index == 0 else model


def attempt_curves(report: RevisionEvalReport) -> pd.DataFrame:
    """Every model's per-attempt points, labelled by model: what revision_curve.png plots."""
    return pd.DataFrame(
        [
            {"label": _label(report, i), "attempt": p.attempt, "mean": p.accuracy, "se": p.se}
            for i, result in enumerate(report.models)
            for p in result.attempts
        ],
        columns=["label", "attempt", "mean", "se"],
    )


def curve_title(report: RevisionEvalReport) -> str:
    return f"pass@1 of revision attempt t (budget {report.budget}, chains of T={report.revision_length})"


def _trend(label: str, result: ModelEval) -> str:
    """How pass@1 moves from the first attempt to the last, and whether that is more than noise (the two points'
    standard errors combined as if independent)."""
    if len(result.attempts) < 2:
        return f"- {label}: fewer than two graded attempts per chain, no trend to read."
    first, last = result.attempts[0], result.attempts[-1]
    change = last.accuracy - first.accuracy
    spread = math.hypot(first.se or 0.0, last.se or 0.0)
    verdict = (
        "within twice the standard errors, i.e. no measurable change"
        if abs(change) <= 2 * spread
        else "rising"
        if change > 0
        else "falling"
    )
    return (
        f"- {label}: attempt {first.attempt} {first.accuracy:.1f} % → attempt {last.attempt} "
        f"{last.accuracy:.1f} % ({change:+.1f} points, {verdict})."
    )


def format_revision_eval(report: RevisionEvalReport) -> str:
    """eval.md: the per-attempt table, revisions vs best-of-N per selection, the rows behind them, and caveats."""
    chains, window = report.budget // report.revision_length, report.revision_window
    counts = sorted({result.questions for result in report.models})
    questions = f"{counts[0]} questions" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} questions (see Rows)"
    md = [
        "# Revision evaluation: does revising help?",
        "",
        f"Per model: {questions}, budget {report.budget} samples each way: sequential revisions in {chains} "
        f"chain{'s' if chains > 1 else ''} of T={report.revision_length} attempts (each attempt after the first is "
        f"shown the chain's last {window} attempt{'s' if window > 1 else ''}) vs best-of-N with {report.budget} "
        f"independent samples; verifier `{report.verifier}` for every model.",
        "",
        f"![{curve_title(report)}]({CURVE})",
        "",
        "## pass@1 of attempt t (%, ± s.e. over questions)",
        "",
    ]
    curves = attempt_curves(report)
    if curves.empty:
        md += ["No graded revision attempts: nothing to plot.", ""]
    else:
        table = attempt_table(curves)
        table.index.name = "model"
        trends = [_trend(_label(report, i), result) for i, result in enumerate(report.models)]
        md += [
            markdown_table(table),
            "",
            *trends,
            "",
            "Attempt t is the t-th attempt of every chain (t = 1 is sampled from the plain prompt, like a best-of-N "
            "sample); its pass@1 is the share of those graded attempts that are right.",
            "",
        ]
    md += [
        f"## Revisions vs best-of-N at budget {report.budget} (%, ± s.e.)",
        "",
        "| model | selection | revisions accuracy | best-of-N accuracy | revisions coverage | best-of-N coverage |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for i, result in enumerate(report.models):
        by_selection: dict[str, dict[str, StrategyPoint]] = {}
        for point in result.strategies:
            by_selection.setdefault(point.selection, {})[point.strategy] = point
        for selection, pair in by_selection.items():
            points = [pair[strategy] for strategy in COMPARED]
            cells = [
                *(mean_se_text(p.accuracy, p.accuracy_se) for p in points),
                *(mean_se_text(p.coverage, p.coverage_se) for p in points),
            ]
            md.append("| " + " | ".join([_label(report, i), selection, *cells]) + " |")
    md += [
        "",
        "Coverage is the share of questions with a right answer among the candidates: what a perfect verifier "
        "would pick from the same samples.",
        "",
        "## Rows",
        "",
        "| model | sweep | questions | done | ungraded | failed | missing |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, result in enumerate(report.models):
        rows = result.rows
        md.append(
            f"| {_label(report, i)} | `{result.run_dir}` | {result.questions} | {rows['done']} | "
            f"{rows['ungraded']} | {rows['failed']} | {rows['missing']} |"
        )
    md += ["", "## How to read this", "", " ".join(_caveats(report))]
    return "\n".join(md) + "\n"


def _caveats(report: RevisionEvalReport) -> list[str]:
    notes = []
    fewest = min(result.questions for result in report.models)
    if fewest:
        notes.append(
            f"With {fewest} questions one question moves an accuracy by {100 / fewest:.1f} points: "
            "differences within about twice the standard errors are noise."
        )
    if report.verifier == "majority":
        notes.append(
            "The `majority` verifier scores every step 1, so `naive` selection takes the first candidate: "
            "for revisions chain 1's first attempt, which saw no earlier attempt, for best-of-N the first "
            "sample; only `majority` voting reads every attempt."
        )
    if any(result.rows["missing"] or result.rows["failed"] for result in report.models):
        notes.append(
            "Some rows are missing or failed (see Rows): re-run `ttsearch eval-revision` to compute the "
            "missing ones; failed rows are left out of every number."
        )
    ungraded = sum(result.rows["ungraded"] for result in report.models)
    if ungraded:
        notes.append(
            f"{ungraded} ungraded rows (grading failed twice) are left out of accuracy; ungraded candidates "
            "out of pass@1 and coverage."
        )
    return notes
