"""`ttsearch train-prm`: train a Math-Shepherd-format PRM on step labels, with transformers' `Trainer` in Ray Train.

The PRM is a causal LM read at a tag after each step: score = sigmoid(logsumexp(logits["+"]) - logsumexp(logits["-"]))
at the tag (`actors.verifier.MathShepherdAdapter`, which also lays out the training inputs), trained with binary
cross-entropy of that margin against the step label. The result serves as `verifier.kind=math_shepherd
verifier.model=<prm.output_dir>/model`, prefix caching included.

The driver reads and checks every input, tokenises and splits it before Ray starts; each Ray Train worker
(`TorchTrainer`; CPU here, GPUs with `prm.use_gpu`, same code) loads the base model and runs `Trainer` on its
shard. Checkpoints go to `<prm.output_dir>/checkpoints` (Ray Train storage: shared storage on a multi-node
cluster), the two newest kept. Failure behaviour: Ray Train's default, no automatic retry, so a failed worker
stops the run; running the same command again resumes from the newest checkpoint.

This is Ray Train's v2 API (the default in Ray 2.60; `Result.return_value` is v2's), which watches its controller
through the state API: the cluster needs its dashboard (`ray.init`'s default where `ray[default]` is installed).
The weights train in `prm.dtype` as loaded (no float32 master copy), and are saved so.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsearch.config import PRMTrainConfig, SweepConfig
from ttsearch.errors import TTSearchError
from ttsearch.models import resolve_model
from ttsearch.prm_data import (
    Features,
    SplitSummary,
    collate,
    constant_loss,
    load_examples,
    split_examples,
    summarize,
    tokenize_all,
)
from ttsearch.runtime import joins_cluster, start_ray

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RUN_NAME = "train"  # the Ray Train run under <output_dir>/checkpoints; a second run of the same name resumes it
RUN_FINGERPRINT = "run.json"  # next to the run: what it trains, so a re-run resumes only the same training
CHECKPOINTS_KEPT = 2
TRAINER_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")
"""Files of a `Trainer` checkpoint that are training state, not the model (with rng_state*.pth)."""
RESOURCE_KEYS = ("output_dir", "use_gpu", "cpus_per_worker")
"""`prm` keys a resumed run may change: where it runs, not what it trains."""


class TrainPRMError(TTSearchError):
    """A `ttsearch train-prm` run that cannot start: no data to train on, or an output directory in use."""


@dataclass(frozen=True)
class TrainReport:
    """What `train-prm` did; written as `train.json` next to the model."""

    output_dir: str
    model_dir: str
    """The trained PRM, for `verifier.kind=math_shepherd verifier.model=<model_dir>`."""
    checkpoint: str
    """The newest Ray Train checkpoint (a transformers `Trainer` checkpoint in its `checkpoint/` folder)."""
    base_model: str
    train: SplitSummary
    heldout: SplitSummary
    num_dropped: int
    """Solutions without a labelled step (none of their steps had a graded rollout)."""
    num_steps: int
    """Optimizer steps."""
    wall_s: float
    """The whole command, from reading the labels to the trained model copied out."""
    first_train_loss: float | None
    final_train_loss: float | None
    """The last logged training loss (mean binary cross-entropy per labelled step since the previous log)."""
    final_eval_loss: float | None
    """Held-out loss after the last step; None without a held-out split."""
    baseline_eval_loss: float | None
    """Held-out loss of always predicting the train split's mean label: what a PRM must beat; None without one."""
    resumed: bool
    """The run went on from an earlier run's checkpoint."""
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """`Trainer.state.log_history`: every logged train and held-out loss, by optimizer step."""
    config: dict[str, Any] = field(default_factory=dict)
    """The `prm` config section."""


def run_train_prm(cfg: SweepConfig) -> TrainReport:
    """Train the PRM `cfg.prm` describes and write model/, loss_curve.png and train.json into `prm.output_dir`."""
    started = time.perf_counter()
    prm = cfg.prm
    out = _output_dir(cfg)
    model_dir = out / "model"
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise TrainPRMError(
            f"prm.output_dir: {model_dir} already holds a model; choose another prm.output_dir or remove it"
        )
    train, heldout, num_dropped = _features(cfg)
    train_summary, heldout_summary = summarize(train), summarize(heldout)
    resumed = _claim(out, prm, train_summary, heldout_summary)
    if not heldout:
        logger.warning("no held-out question at prm.heldout_fraction=%s: training without evaluation",
                       prm.heldout_fraction)

    start_ray(cfg, extra_cpus=prm.num_workers * prm.cpus_per_worker)
    result = _fit(cfg, out, train, heldout)
    checkpoint_dir = _copy_model(result.checkpoint, model_dir)
    history: list[dict[str, Any]] = result.return_value["log_history"]

    train_losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    baseline = constant_loss(heldout, train_summary.mean_label)
    report = TrainReport(
        output_dir=str(out),
        model_dir=str(model_dir),
        checkpoint=checkpoint_dir,
        base_model=prm.base_model,
        train=train_summary,
        heldout=heldout_summary,
        num_dropped=num_dropped,
        num_steps=result.return_value["global_step"],
        wall_s=time.perf_counter() - started,
        first_train_loss=train_losses[0] if train_losses else None,
        final_train_loss=train_losses[-1] if train_losses else None,
        final_eval_loss=eval_losses[-1] if eval_losses else None,
        baseline_eval_loss=baseline,
        resumed=resumed,
        log_history=history,
        config=asdict(prm),
    )
    plot_losses(history, baseline, out / "loss_curve.png")
    (out / "train.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def _output_dir(cfg: SweepConfig) -> Path:
    """`prm.output_dir` as an absolute local path; a relative one only where the driver's directory stays."""
    where = cfg.prm.output_dir
    if "://" in where:
        raise TrainPRMError(
            f"prm.output_dir: the model must land in a directory the verifier can load, got the URI '{where}'; "
            "give a path on shared storage"
        )
    if not Path(where).is_absolute() and joins_cluster(cfg):
        raise TrainPRMError(
            f"prm.output_dir '{where}' is relative: when joining a cluster (ray job submit, ray_address) it would "
            "land in the job's temporary working directory; give an absolute path on shared storage"
        )
    return Path(where).expanduser().resolve()


def _features(cfg: SweepConfig) -> tuple[list[Features], list[Features], int]:
    """(train, held-out, dropped) from the `prm.labels` entries, laid out with the base model's tokenizer."""
    prm = cfg.prm
    examples = load_examples(prm.labels, prm.target)  # type: ignore[arg-type]  # validated: "soft" or "hard"
    train_examples, heldout_examples = split_examples(examples, prm.heldout_fraction)
    from transformers import AutoTokenizer  # after the checks above: bad input fails without loading it

    from actors.verifier import MathShepherdAdapter

    adapter = MathShepherdAdapter(AutoTokenizer.from_pretrained(resolve_model(prm.base_model, cfg.cache_dir)))
    train, dropped_train = tokenize_all(train_examples, adapter, prm.max_input_tokens)
    heldout, dropped_heldout = tokenize_all(heldout_examples, adapter, prm.max_input_tokens)
    if not train:
        raise TrainPRMError(
            f"prm.labels: no training example: {len(examples)} solutions read, {len(heldout_examples)} held out "
            f"(prm.heldout_fraction={prm.heldout_fraction}), {dropped_train} of the rest without a labelled step"
        )
    return train, heldout, dropped_train + dropped_heldout


def _claim(out: Path, prm: PRMTrainConfig, train: SplitSummary, heldout: SplitSummary) -> bool:
    """Record what this run trains next to its checkpoints; True when it resumes an earlier run of the same.

    Ray Train resumes a run of the same name from its newest checkpoint, which is right only for the same data
    and settings: a directory holding another training's checkpoints is refused.
    """
    storage = out / "checkpoints"
    fingerprint = {
        "prm": {key: value for key, value in asdict(prm).items() if key not in RESOURCE_KEYS},
        "train": asdict(train),
        "heldout": asdict(heldout),
    }
    saved_path = storage / RUN_FINGERPRINT
    if (storage / RUN_NAME).exists():
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
        if saved != fingerprint:
            changed = sorted(
                f"{part}.{key}"
                for part in fingerprint
                for key in fingerprint[part].keys() | saved.get(part, {}).keys()
                if fingerprint[part].get(key) != saved.get(part, {}).get(key)
            )
            raise TrainPRMError(
                f"prm.output_dir: {storage} holds checkpoints of another training (it differs in: "
                f"{', '.join(changed) or 'no record of it'}); choose another prm.output_dir or remove it"
            )
        return True
    storage.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(fingerprint, indent=2))
    return False


def _fit(cfg: SweepConfig, out: Path, train: list[Features], heldout: list[Features]) -> Any:
    """Run the Ray Train job; its result carries the newest checkpoint and rank 0's return value."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    prm = cfg.prm
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"prm": prm, "cache_dir": cfg.cache_dir, "data": ray.put((train, heldout))},
        scaling_config=ScalingConfig(
            num_workers=prm.num_workers, use_gpu=prm.use_gpu, resources_per_worker={"CPU": prm.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(out / "checkpoints"),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )
    return trainer.fit()


def _train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: the base model, `Trainer` on this worker's share of the data, checkpoints reported to
    Ray Train; it resumes from Ray Train's newest checkpoint when there is one. Returns the log history (rank 0's
    is the run's)."""
    import tempfile

    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from actors.verifier import MathShepherdAdapter

    prm: PRMTrainConfig = config["prm"]
    train, heldout = ray.get(config["data"])
    path = resolve_model(prm.base_model, config["cache_dir"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, prm.dtype))
    adapter = MathShepherdAdapter(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with tempfile.TemporaryDirectory(prefix="ttsearch-prm-") as workdir:
        args = TrainingArguments(
            output_dir=workdir,  # Trainer's own checkpoints, copied into Ray Train storage as they are saved
            num_train_epochs=prm.epochs,
            learning_rate=prm.learning_rate,
            weight_decay=prm.weight_decay,
            warmup_steps=prm.warmup_ratio,  # < 1: a fraction of the optimizer steps
            per_device_train_batch_size=prm.batch_size,
            per_device_eval_batch_size=prm.batch_size,
            gradient_accumulation_steps=prm.gradient_accumulation_steps,
            eval_strategy="steps" if heldout else "no",
            eval_steps=prm.eval_steps,
            save_strategy="steps",
            save_steps=prm.save_steps,
            save_total_limit=1,
            logging_steps=prm.logging_steps,
            logging_first_step=True,
            prediction_loss_only=True,
            label_names=["step_labels"],  # our batch keys pass through to `compute_loss` untouched
            remove_unused_columns=False,
            use_cpu=not prm.use_gpu,
            dataloader_pin_memory=prm.use_gpu,
            seed=prm.seed,
            data_seed=prm.seed,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = _step_label_trainer_class()(
            good_ids=adapter.good_ids,
            bad_ids=adapter.bad_ids,
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=heldout or None,
            data_collator=lambda batch: collate(batch, pad_id),
            processing_class=tokenizer,  # saved with every checkpoint, so the final one loads as a verifier
            callbacks=[RayTrainReportCallback(), _final_step_log_callback()],
        )
        trainer = prepare_trainer(trainer)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            trainer.train()
        else:
            with checkpoint.as_directory() as resume:
                trainer.train(resume_from_checkpoint=str(Path(resume) / RayTrainReportCallback.CHECKPOINT_NAME))
    return {"global_step": trainer.state.global_step, "log_history": trainer.state.log_history}


def _step_label_trainer_class() -> type:
    """`Trainer` with the Math-Shepherd step loss (defined on demand: transformers loads only in the workers).

    The batch's labels are `step_labels` (one per labelled tag), not token labels, so `Trainer` counts no
    `num_items_in_batch` and the loss is each micro-batch's mean over its labelled steps, which `Trainer` divides by
    the gradient-accumulation steps (`loss_is_scaled_for_ga = False`).
    """
    import torch
    from transformers import Trainer

    from actors.verifier import project_only_at

    class StepLabelTrainer(Trainer):
        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, good_ids: list[int], bad_ids: list[int], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.good_ids, self.bad_ids = good_ids, bad_ids

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
            margin = torch.logsumexp(logits[:, self.good_ids], -1) - torch.logsumexp(logits[:, self.bad_ids], -1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, inputs["step_labels"].float())
            return (loss, {"margins": margin}) if return_outputs else loss

    return StepLabelTrainer


def _final_step_log_callback() -> Any:
    """A callback that logs the training loss at the last step too (`Trainer` logs every `logging_steps`), so the
    final checkpoint and the report hold the loss the model ended with."""
    from transformers import TrainerCallback

    class FinalStepLog(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return FinalStepLog()


def _copy_model(checkpoint: Any, model_dir: Path) -> str:
    """Copy the model and tokenizer of the newest checkpoint (saved in `prm.dtype` by `Trainer`), without its
    training state, into `model_dir`; returns the checkpoint's path."""
    from ray.train.huggingface.transformers import RayTrainReportCallback

    if checkpoint is None:
        raise RuntimeError("Ray Train reported no checkpoint; the final save of `Trainer` should have made one")
    with checkpoint.as_directory() as local:
        source = Path(local) / RayTrainReportCallback.CHECKPOINT_NAME
        model_dir.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.name in TRAINER_STATE_FILES or item.name.startswith("rng_state"):
                continue
            if item.is_dir():
                shutil.copytree(item, model_dir / item.name)
            else:
                shutil.copy2(item, model_dir / item.name)
    return str(checkpoint.path)


def plot_losses(history: list[dict[str, Any]], baseline: float | None, path: Path) -> None:
    """Train and held-out loss by optimizer step, and the held-out loss of a constant prediction for reference."""
    from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for key, name, style in (("loss", "train", "-o"), ("eval_loss", "held-out", "-s")):
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if points:
            ax.plot(*zip(*points, strict=True), style, markersize=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="held-out, constant train-mean prediction")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("binary cross-entropy per labelled step")
    ax.set_title("PRM training loss")
    ax.legend()
    fig.savefig(path, dpi=120)


def _loss(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _split_line(name: str, summary: SplitSummary) -> str:
    return (
        f"{name:<9} {summary.num_questions} questions, {summary.num_solutions} solutions, {summary.num_steps} "
        f"labelled steps ({summary.nonzero_share:.0%} with a label > 0, mean label {summary.mean_label:.3f})"
    )


def format_report(report: TrainReport) -> str:
    """The report as the CLI prints it."""
    resumed = " (resumed from a checkpoint)" if report.resumed else ""
    lines = [
        f"trained a Math-Shepherd PRM from {report.base_model} in {report.wall_s:.1f} s: "
        f"{report.num_steps} optimizer steps{resumed}",
        _split_line("train:", report.train),
        _split_line("held-out:", report.heldout),
    ]
    if report.num_dropped:
        lines.append(f"dropped:  {report.num_dropped} solutions without a labelled step (no graded rollout)")
    lines.append(f"train loss: {_loss(report.first_train_loss)} first, {_loss(report.final_train_loss)} last")
    if report.final_eval_loss is not None:
        lines.append(
            f"held-out loss: {_loss(report.final_eval_loss)} "
            f"(a constant train-mean prediction: {_loss(report.baseline_eval_loss)})"
        )
    out = Path(report.output_dir)
    lines += [
        f"model: {report.model_dir}  (use as verifier.kind=math_shepherd verifier.model={report.model_dir})",
        f"checkpoint: {report.checkpoint}",
        f"loss curve: {out / 'loss_curve.png'}, report: {out / 'train.json'}",
    ]
    return "\n".join(lines)
