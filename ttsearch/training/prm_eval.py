"""How good a verifier is at finding wrong steps (`ttsearch eval-prm`), with no Ray and no model in this module.

Two measures, both read from one `Score` of each solution:
- ProcessBench (Zheng et al. 2024, arXiv 2412.06559): the first step scored below a threshold is the predicted
  first error (-1: none). Per subset, the accuracy on erroneous solutions (the predicted step is the labelled
  one) and on error-free ones (nothing predicted), and their harmonic mean, F1: a verifier that flags every
  step or none scores 0 either way.
- Step ROC AUC on the held-out questions of a `ttsearch label` run (the split `train-prm` leaves out): how well
  the step scores rank steps from which some rollout reached the reference answer above those from which none
  did, whatever threshold a search would use.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ttsearch.config import ConfigError, SweepConfig, model_free_names, verifier_backend, verifier_family
from ttsearch.search.requests import Score, ScoreResult
from ttsearch.sweep.data import DataError, FirstErrorItem
from ttsearch.training.labels import is_heldout, read_labels

T = TypeVar("T")
LABELS = "labels"
"""The source name of held-out label solutions; a ProcessBench subset's is "processbench/<file stem>"."""
MAX_LISTED_FAILURES = 20
"""Failed items listed in the Markdown report; eval.json lists all."""

JobKey = tuple[str, int]
"""(source, index in that source): which ProcessBench item or held-out solution a scoring job is."""
ScoreRun = Generator[list[Score], list[ScoreResult], tuple[float, ...]]
"""A scheduler run that reads one solution and returns its step scores."""


@dataclass(frozen=True)
class LabelledSolution:
    """A held-out `ttsearch label` row cut to its labelled steps."""

    unique_id: str
    sample: int
    question: str
    steps: tuple[str, ...]
    """The first `len(hard_labels)` steps of the solution: those with a label (null or not)."""
    hard_labels: tuple[bool | None, ...]
    """Whether some rollout from the step's prefix reached the reference answer; None: no rollout was graded."""


@dataclass(frozen=True)
class SubsetMetrics:
    """ProcessBench's numbers for one subset; accuracies and F1 are fractions in [0, 1]."""

    num_items: int
    """Items scored; failed items are not among them."""
    num_erroneous: int
    num_correct: int
    error_accuracy: float | None
    """Share of erroneous items whose predicted first error is the labelled step; None: the subset has none."""
    correct_accuracy: float | None
    """Share of error-free items with no step below the threshold; None: the subset has none."""
    f1: float | None
    """Harmonic mean of the two accuracies (0 when either is 0); None when either is None."""
    num_failed: int = 0
    """Items the verifier could not score (see `EvalReport.failed`)."""


@dataclass(frozen=True)
class StepAUC:
    """Step-level ROC AUC of the verifier's scores against hard labels."""

    num_steps: int
    """Steps with a label (null labels left out)."""
    positive_share: float | None
    """Share of those steps whose hard label is True; None: no steps."""
    auc: float | None
    """ROC AUC in [0, 1]; None when the steps are all of one class (or there are none)."""


@dataclass(frozen=True)
class FailedItem:
    """An item the verifier did not score; it counts in no metric."""

    source: str
    """"processbench/<subset>" or "labels"."""
    item: str
    """The ProcessBench id, or the held-out solution as "<unique_id>#<sample>"."""
    failure: str
    """`ttsearch.search.outcomes.Failure`: "problem" (the verifier cannot score it) or "infrastructure" (replicas
    failed)."""
    error: str


@dataclass
class EvalReport:
    """Everything eval.md and eval.json say."""

    verifier: str
    model: str
    backend: str
    """The backend the verifier replicas ran on, "auto" resolved."""
    threshold: float
    subsets: dict[str, SubsetMetrics]
    """ProcessBench subset (the file's stem) → its metrics, in the order the files were given."""
    mean_f1: float | None
    """Mean F1 over the subsets, as ProcessBench's "Avg."; None with no subsets or an undefined F1."""
    labels: str | None
    """The `ttsearch label` output the AUC was read from; None: no AUC."""
    heldout_fraction: float
    num_heldout_solutions: int
    step_auc: StepAUC | None
    """None when no `eval_prm.labels` was given."""
    failed: list[FailedItem] = field(default_factory=list)
    verifier_tokens: int = 0
    """Input tokens the verifier read over every item."""
    wall_s: float = 0.0
    """Seconds from the first scoring request to the last result."""


def check_eval_config(cfg: SweepConfig) -> None:
    """Refuse what `eval-prm` cannot do before any replica starts: nothing to evaluate, a verifier without a model,
    a verifier placed on generator engines that this command does not start, two subsets with one name."""
    section = cfg.eval_prm
    if not section.processbench and section.labels is None:
        raise ConfigError(
            "bad config: keys 'eval_prm.processbench' and 'eval_prm.labels': give ProcessBench subset files, "
            "a `ttsearch label` output_dir or both, got neither"
        )
    if verifier_family(cfg.verifier.kind).model_free:
        raise ConfigError(
            f"bad config: key 'verifier.kind': eval-prm evaluates a PRM; '{cfg.verifier.kind}' is model-free "
            f"(one of {model_free_names()}) and does not score steps"
        )
    if cfg.verifier.backend == "generator":
        raise ConfigError(
            "bad config: key 'verifier.backend': eval-prm starts no generator, so the verifier needs an engine "
            "of its own ('auto', 'vllm' or 'transformers'), got 'generator'"
        )
    names = [subset_name(path) for path in section.processbench]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"bad config: key 'eval_prm.processbench': subsets are named by file stem, so each stem may appear "
            f"once; {repeated} appear more than once in {section.processbench}"
        )


def subset_name(path: str | Path) -> str:
    """A ProcessBench subset is named by its file's stem, as the benchmark names its splits."""
    return Path(path).stem


def evenly_spaced(items: Sequence[T], limit: int | None) -> list[T]:
    """`limit` items spread evenly over `items` (all of them when None): ProcessBench's files are ordered (the
    erroneous solutions first), so their first `limit` items would leave one class out and F1 undefined."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def load_heldout_solutions(location: str, fraction: float) -> list[LabelledSolution]:
    """The rows of a `ttsearch label` run whose question `is_heldout` at `fraction` (the split `train-prm` drew),
    cut to their labelled steps; rows without any non-null label are left out (they add no AUC step)."""
    try:
        table = read_labels(location)
    except FileNotFoundError as exc:
        raise DataError(f"eval_prm.labels: {exc}") from None
    solutions = [
        LabelledSolution(
            unique_id=row["unique_id"],
            sample=row["sample"],
            question=row["question"],
            steps=tuple(row["steps"][: len(row["hard_labels"])]),
            hard_labels=tuple(row["hard_labels"]),
        )
        for row in table.to_pylist()
        if row["hard_labels"] and is_heldout(row["unique_id"], fraction)
    ]
    labelled = [solution for solution in solutions if any(label is not None for label in solution.hard_labels)]
    if not labelled:
        questions = len(set(table.column("unique_id").to_pylist()))
        raise DataError(
            f"eval_prm.labels: {location} has no labelled steps among the questions held out at "
            f"prm.heldout_fraction={fraction} ({questions} questions in all); it must be > 0 (the fraction the PRM "
            "was trained with)"
        )
    return labelled


def score_steps(score: Score) -> ScoreRun:
    """The scheduler run of one solution: one read of every step; returns one score per step."""
    [result] = yield [score]
    if len(result.step_scores) != len(score.steps):
        raise ValueError(f"the verifier returned {len(result.step_scores)} step scores for {len(score.steps)} steps")
    return result.step_scores


def scoring_jobs(
    subsets: dict[str, list[FirstErrorItem]], solutions: Sequence[LabelledSolution], system: str
) -> list[tuple[JobKey, ScoreRun]]:
    """One scheduler job per ProcessBench item and held-out solution, so one ready queue batches them all.

    `system` is the system prompt a chat judge reads the solution under: the search's, as in a sweep.
    """
    jobs = [
        ((f"processbench/{name}", index), score_steps(Score(item.problem, item.steps, system=system)))
        for name, items in subsets.items()
        for index, item in enumerate(items)
    ]
    jobs += [
        ((LABELS, index), score_steps(Score(solution.question, solution.steps, system=system)))
        for index, solution in enumerate(solutions)
    ]
    return jobs


def predicted_error(step_scores: Iterable[float], threshold: float) -> int:
    """The first step scored below `threshold` (a score equal to it is not below), or -1 when there is none."""
    return next((index for index, score in enumerate(step_scores) if score < threshold), -1)


def subset_metrics(labels: Sequence[int], predictions: Sequence[int], num_failed: int = 0) -> SubsetMetrics:
    """ProcessBench's accuracies and F1 of one subset from its labelled and predicted first errors (-1: none)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    pairs = list(zip(labels, predictions, strict=True))
    erroneous = [predicted == label for label, predicted in pairs if label != -1]
    correct = [predicted == -1 for label, predicted in pairs if label == -1]
    error_accuracy = sum(erroneous) / len(erroneous) if erroneous else None
    correct_accuracy = sum(correct) / len(correct) if correct else None
    f1 = None
    if error_accuracy is not None and correct_accuracy is not None:
        total = error_accuracy + correct_accuracy
        f1 = 2 * error_accuracy * correct_accuracy / total if total else 0.0
    return SubsetMetrics(
        num_items=len(labels),
        num_erroneous=len(erroneous),
        num_correct=len(correct),
        error_accuracy=error_accuracy,
        correct_accuracy=correct_accuracy,
        f1=f1,
        num_failed=num_failed,
    )


def step_auc(scores: Sequence[float], labels: Sequence[bool]) -> StepAUC:
    """ROC AUC of step scores against hard labels (True: the step can still reach the right answer)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} step scores but {len(labels)} labels")
    if not labels:
        return StepAUC(num_steps=0, positive_share=None, auc=None)
    from sklearn.metrics import roc_auc_score  # seconds to import (SciPy): only the AUC pays for it

    positives = sum(labels)
    auc = float(roc_auc_score(labels, scores)) if 0 < positives < len(labels) else None
    return StepAUC(num_steps=len(labels), positive_share=positives / len(labels), auc=auc)


def prm_eval_report(
    cfg: SweepConfig,
    subsets: dict[str, list[FirstErrorItem]],
    solutions: Sequence[LabelledSolution],
    scores: dict[JobKey, tuple[float, ...]],
    failed: dict[JobKey, tuple[str, str]],
    verifier_tokens: int,
    wall_s: float,
) -> EvalReport:
    """The report from every job's step scores (`scores`) or its (failure, error) (`failed`): a failed item is
    counted as failed, never as a prediction."""
    threshold = cfg.eval_prm.threshold
    metrics = {}
    for name, items in subsets.items():
        source = f"processbench/{name}"
        scored = [(item, scores[source, index]) for index, item in enumerate(items) if (source, index) in scores]
        metrics[name] = subset_metrics(
            [item.label for item, _ in scored],
            [predicted_error(step_scores, threshold) for _, step_scores in scored],
            num_failed=sum(key[0] == source for key in failed),
        )
    f1s = [m.f1 for m in metrics.values() if m.f1 is not None]
    mean_f1 = sum(f1s) / len(f1s) if f1s and len(f1s) == len(metrics) else None
    auc = None
    if cfg.eval_prm.labels is not None:
        pairs = [
            (score, label)
            for index, solution in enumerate(solutions)
            if (LABELS, index) in scores
            for score, label in zip(scores[LABELS, index], solution.hard_labels, strict=True)
            if label is not None
        ]
        auc = step_auc([score for score, _ in pairs], [label for _, label in pairs])
    return EvalReport(
        verifier=cfg.verifier.kind,
        model=cfg.verifier.model,
        backend=verifier_backend(cfg.verifier, None),
        threshold=threshold,
        subsets=metrics,
        mean_f1=mean_f1,
        labels=cfg.eval_prm.labels,
        heldout_fraction=cfg.prm.heldout_fraction,
        num_heldout_solutions=len(solutions),
        step_auc=auc,
        failed=[_failed_item(key, *why, subsets, solutions) for key, why in sorted(failed.items())],
        verifier_tokens=verifier_tokens,
        wall_s=wall_s,
    )


def _failed_item(
    key: JobKey,
    failure: str,
    error: str,
    subsets: dict[str, list[FirstErrorItem]],
    solutions: Sequence[LabelledSolution],
) -> FailedItem:
    source, index = key
    if source == LABELS:
        item = f"{solutions[index].unique_id}#{solutions[index].sample}"
    else:
        item = subsets[source.removeprefix("processbench/")][index].id
    return FailedItem(source=source, item=item, failure=failure, error=error)


def _last_line(error: str) -> str:
    """What a failed run's error says in one line: a traceback's last line is the exception itself."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else "(no message)"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def format_prm_eval(report: EvalReport) -> str:
    """eval.md: ProcessBench's table (values ×100, one decimal, as the paper reports them), then the step AUC."""
    md = [f"# PRM evaluation: {report.verifier} verifier ({report.model}, {report.backend})", ""]
    if report.subsets:
        md += [
            f"ProcessBench: the first step scored below {report.threshold:g} is the predicted first error; "
            "accuracies and F1 in %.",
            "",
            "| subset | n | erroneous | error-free | error acc | correct acc | F1 | failed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in report.subsets.items():
            md.append(
                f"| {name} | {m.num_items} | {m.num_erroneous} | {m.num_correct} | {_percent(m.error_accuracy)} | "
                f"{_percent(m.correct_accuracy)} | {_percent(m.f1)} | {m.num_failed} |"
            )
        if len(report.subsets) > 1:
            md.append(f"| average |  |  |  |  |  | {_percent(report.mean_f1)} |  |")
        md.append("")
    if report.step_auc is not None:
        auc = report.step_auc
        value = "n/a (one class only)" if auc.auc is None else f"{auc.auc:.3f}"
        md += [
            "## Step ROC AUC on held-out labels",
            "",
            f"`{report.labels}`, questions held out at heldout_fraction {report.heldout_fraction:g}: "
            f"{auc.num_steps} labelled steps of {report.num_heldout_solutions} solutions, "
            f"{_percent(auc.positive_share)}% positive (some rollout from the step reached the answer). "
            f"**AUC {value}**.",
            "",
        ]
    md.append(
        f"The verifier read {report.verifier_tokens} tokens in {report.wall_s:.1f} s; "
        f"{len(report.failed)} items failed."
    )
    for failure in report.failed[:MAX_LISTED_FAILURES]:
        md.append(f"- {failure.source} {failure.item} ({failure.failure}): {_last_line(failure.error)}")
    if len(report.failed) > MAX_LISTED_FAILURES:
        md.append(f"- ... and {len(report.failed) - MAX_LISTED_FAILURES} more (eval.json lists all)")
    return "\n".join(md) + "\n"
