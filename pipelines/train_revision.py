"""`ttsearch train-revision`: fine-tune the generator into a revision model on `ttsearch revision-data` trajectories.

Supervised fine-tuning (Snell et al. 2024, §6.1): the input is the revisions strategy's prompt (the question and the
earlier wrong attempts), the target the correct attempt that followed them; the loss is the model's own next-token
cross-entropy on the target only (`ttsearch.training.revision_train_data`). The prompt is tokenised exactly as a
generator
replica renders it for vLLM, so the result drops in as `generator.model=<revision.output_dir>/model`. The baseline
is the base model's own held-out loss, evaluated in the workers before training.

The driver reads, tokenises and splits the trajectories before Ray starts; the training itself, its checkpoints,
resumption and outputs are `ttsearch.training.finetune`'s, shared with `train-prm`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ttsearch.config import SweepConfig
from ttsearch.engines.models import resolve_model
from ttsearch.training.finetune import FineTuneJob, TrainReport, fine_tune, format_train_report, output_dir
from ttsearch.training.revision_train_data import RevisionSummary, build_examples, collate, load_trajectories

BASELINE = "the base model before training"


@dataclass(frozen=True)
class RevisionTrainReport(TrainReport[RevisionSummary]):
    """A revision model's `TrainReport` (written as train.json), printed as `ttsearch train-revision` shows it."""

    def __str__(self) -> str:
        dropped = (
            f"trajectories longer than revision.max_input_tokens={self.config['max_input_tokens']} (a cut "
            "prompt is a context inference never shows)"
        )
        return format_train_report(
            self, "fine-tuned a revision model", _split_line, dropped, BASELINE, "generator.model="
        )


def run_train_revision(cfg: SweepConfig) -> RevisionTrainReport:
    """Train the revision model `cfg.revision` describes; write model/, loss_curve.png and train.json into
    `revision.output_dir`."""
    started = time.perf_counter()
    tune = cfg.revision
    job = FineTuneJob(
        section="revision",
        settings=tune,
        collate=collate,
        evaluate_base=True,
        title="Revision model training loss",
        loss_name="cross-entropy per target token",
        baseline_name=BASELINE,
    )
    out = output_dir(cfg, job)
    rows = load_trajectories(tune.data)
    from transformers import AutoTokenizer  # after the checks above: bad input fails without loading it

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tune.base_model, cfg.cache_dir))
    examples = build_examples(rows, tokenizer, tune.heldout_fraction, tune.max_input_tokens)
    return fine_tune(cfg, job, out, examples, started, RevisionTrainReport)


def _split_line(summary: RevisionSummary) -> str:
    return (
        f"{summary.num_questions} questions, {summary.num_trajectories} trajectories, "
        f"{summary.num_target_tokens} target tokens of {summary.num_tokens}"
    )
