"""`ttsearch train-prm`: train a Math-Shepherd-format PRM on step labels, with transformers' `Trainer` in Ray Train.

The PRM is a causal LM read at a tag after each step: score = sigmoid(logsumexp(logits["+"]) - logsumexp(logits["-"]))
at the tag (`ttsearch.engines.prm.MathShepherdAdapter`, which also lays out the training inputs), trained with
binary
cross-entropy of that margin against the step label. The result serves as `verifier.kind=math_shepherd
verifier.model=<prm.output_dir>/model`, prefix caching included.

The driver reads and checks every input, tokenises and splits it before Ray starts; the training itself, its
checkpoints, resumption and outputs are `ttsearch.training.finetune`'s, shared with `train-revision`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ttsearch.config import SweepConfig
from ttsearch.engines.models import resolve_model
from ttsearch.training.finetune import Examples, FineTuneJob, TrainReport, fine_tune, format_train_report, output_dir
from ttsearch.training.prm_data import (
    PRMDataError,
    SplitSummary,
    collate,
    constant_loss,
    load_examples,
    split_examples,
    summarize,
    tokenize_all,
)

BASELINE = "a constant train-mean prediction"


def _job(cfg: SweepConfig) -> FineTuneJob:
    """The PRM's fine-tuning: step labels as targets, the Math-Shepherd step loss."""
    return FineTuneJob(
        section="prm",
        settings=cfg.prm,
        collate=collate,
        label_names=("step_labels",),  # our batch keys pass through to `compute_loss` untouched
        make_trainer=_step_label_trainer,
        title="PRM training loss",
        loss_name="binary cross-entropy per labelled step",
        baseline_name=BASELINE,
    )


@dataclass(frozen=True)
class PRMTrainReport(TrainReport[SplitSummary]):
    """A PRM's `TrainReport` (written as train.json), printed as `ttsearch train-prm` shows it."""

    def __str__(self) -> str:
        return format_train_report(
            self,
            "trained a Math-Shepherd PRM",
            _split_line,
            "solutions without a labelled step (no graded rollout)",
            BASELINE,
            "verifier.kind=math_shepherd verifier.model=",
        )


def run_train_prm(cfg: SweepConfig) -> PRMTrainReport:
    """Train the PRM `cfg.prm` describes and write model/, loss_curve.png and train.json into `prm.output_dir`."""
    started = time.perf_counter()
    job = _job(cfg)
    out = output_dir(cfg, job)
    examples = _examples(cfg)
    baseline = constant_loss(examples.heldout, examples.train_summary.mean_label)
    return fine_tune(cfg, job, out, examples, started, PRMTrainReport, baseline)


def _examples(cfg: SweepConfig) -> Examples[SplitSummary]:
    """The `prm.labels` entries laid out with the base model's tokenizer, split by question; the dropped are
    solutions without a labelled step."""
    prm = cfg.prm
    examples = load_examples(prm.labels, prm.target)  # type: ignore[arg-type]  # validated: "soft" or "hard"
    train_examples, heldout_examples = split_examples(examples, prm.heldout_fraction)
    from transformers import AutoTokenizer  # after the checks above: bad input fails without loading it

    from ttsearch.engines.prm import MathShepherdAdapter

    adapter = MathShepherdAdapter(AutoTokenizer.from_pretrained(resolve_model(prm.base_model, cfg.cache_dir)))
    train, dropped_train = tokenize_all(train_examples, adapter, prm.max_input_tokens)
    heldout, dropped_heldout = tokenize_all(heldout_examples, adapter, prm.max_input_tokens)
    if not train:
        raise PRMDataError(
            f"prm.labels: no training example: {len(examples)} solutions read, {len(heldout_examples)} held out "
            f"(prm.heldout_fraction={prm.heldout_fraction}), {dropped_train} of the rest without a labelled step"
        )
    return Examples(train, heldout, summarize(train), summarize(heldout), dropped_train + dropped_heldout)


def _step_label_trainer(tokenizer: Any, **arguments: Any) -> Any:
    """`Trainer` with the Math-Shepherd step loss (defined on demand: transformers loads only in the workers).

    The batch's labels are `step_labels` (one per labelled tag), not token labels, so `Trainer` counts no
    `num_items_in_batch` and the loss is each micro-batch's mean over its labelled steps, which `Trainer` divides by
    the gradient-accumulation steps (`loss_is_scaled_for_ga = False`).
    """
    import torch
    from transformers import Trainer

    from ttsearch.engines.prm import MathShepherdAdapter, project_only_at

    adapter = MathShepherdAdapter(tokenizer)

    class StepLabelTrainer(Trainer):
        loss_is_scaled_for_ga = False

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, torch.Tensor],
            return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> Any:
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            with project_only_at(head, inputs["tag_rows"], inputs["tag_cols"]):
                output = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            logits = output.logits[0].float()  # [k, vocab]: one row per labelled tag
            margin = torch.logsumexp(logits[:, adapter.good_ids], -1) - torch.logsumexp(logits[:, adapter.bad_ids], -1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, inputs["step_labels"].float())
            return (loss, {"margins": margin}) if return_outputs else loss

    return StepLabelTrainer(**arguments)


def _split_line(summary: SplitSummary) -> str:
    return (
        f"{summary.num_questions} questions, {summary.num_solutions} solutions, {summary.num_steps} labelled steps "
        f"({summary.nonzero_share:.0%} with a label > 0, mean label {summary.mean_label:.3f})"
    )
