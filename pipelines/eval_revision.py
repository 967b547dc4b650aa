"""`ttsearch eval-revision`: does revising help? For each model (the base first, then e.g. the fine-tuned revision
model), a sweep of the revisions strategy and best-of-N at one budget, then pass@1 of attempt t by t.

Each model's sweep is an ordinary resumable sweep in its own directory under `eval_revision.output`, so a re-run
computes only what is missing; one model's replicas are stopped before the next model's start
(`ttsearch.sweep.sharded.run_shards`). The numbers are `ttsearch.training.revision_eval`'s; this writes
revision_curve.png, eval.md
and eval.json next to the sweeps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ttsearch.analysis.revisions import plot_attempt_curves
from ttsearch.config import SweepConfig
from ttsearch.sweep.jobs import row_counts, run_sweep
from ttsearch.sweep.results import RunStore
from ttsearch.training.revision_eval import (
    CURVE,
    RevisionEvalReport,
    attempt_curves,
    curve_title,
    format_revision_eval,
    model_eval,
    model_sweeps,
)


@dataclass(frozen=True)
class RevisionEvaluation:
    """What `ttsearch eval-revision` did: the report it printed, and where it wrote it."""

    report: RevisionEvalReport
    """Everything eval.md, eval.json and the attempt curves say."""
    output: str
    """The directory holding the models' sweeps, eval.md, eval.json and the curves (`eval_revision.output`)."""

    def __str__(self) -> str:
        return f"{format_revision_eval(self.report)}\n\nwritten to {self.output}/eval.md, eval.json and {CURVE}"


def run_eval_revision(cfg: SweepConfig) -> RevisionEvaluation:
    """Sweep every model in turn (all checked before the first starts) and write the report."""
    section = cfg.eval_revision
    models = []
    for model, sweep in zip(section.models, model_sweeps(cfg), strict=True):
        table = run_sweep(sweep)
        models.append(model_eval(model, sweep.output_dir, table, asdict(row_counts(sweep, table))))
    report = RevisionEvalReport(
        section.budget, section.revision_length, section.revision_window, cfg.verifier.kind, models
    )
    store = RunStore(section.output)
    with store.local_dir() as out:
        plot_attempt_curves(out / CURVE, curve_title(report), attempt_curves(report))
    store.write_text(json.dumps(asdict(report), indent=2), "eval.json")
    store.write_text(format_revision_eval(report), "eval.md")
    return RevisionEvaluation(report, section.output)
