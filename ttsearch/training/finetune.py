"""Fine-tuning a causal LM with transformers' `Trainer` inside Ray Train: what `train-prm` and `train-revision` share.

A task (`FineTuneJob`) names its config section, how a batch is collated and, if the model's own loss is not the
one, the `Trainer` that computes it. The driver reads, tokenises and splits its data before Ray starts
(`Examples`); `fine_tune` then records what the run trains next to its checkpoints (a re-run resumes only the same
training), runs one `Trainer` per Ray Train worker (`TorchTrainer`; CPU here, GPUs with `use_gpu`, same code) on its
shard, and writes `model/` (the newest checkpoint without its training state), `loss_curve.png` and `train.json`.

Checkpoints go to `<output_dir>/checkpoints` (Ray Train storage: shared storage on a multi-node cluster), the two
newest kept. Failure behaviour: Ray Train's default, no automatic retry, so a failed worker stops the run; running
the same command again resumes from the newest checkpoint.

This is Ray Train's v2 API (the default in Ray 2.60; `Result.return_value` is v2's), which watches its controller
through the state API: the cluster needs its dashboard (`ray.init`'s default where `ray[default]` is installed).
The weights train in `dtype` as loaded (no float32 master copy), and are saved so.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ttsearch.config import FineTuneConfig, SweepConfig
from ttsearch.engines.models import resolve_model
from ttsearch.errors import TTSearchError
from ttsearch.runtime.replicas import joins_cluster, start_ray

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RUN_NAME = "train"  # the Ray Train run under <output_dir>/checkpoints; a second run of the same name resumes it
RUN_FINGERPRINT = "run.json"  # next to the run: what it trains, so a re-run resumes only the same training
CHECKPOINTS_KEPT = 2
TRAINER_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")
"""Files of a `Trainer` checkpoint that are training state, not the model (with rng_state*.pth)."""
RESOURCE_KEYS = ("output_dir", "use_gpu", "cpus_per_worker")
"""Config keys a resumed run may change: where it runs, not what it trains."""

Summary = TypeVar("Summary")
"""A task's counts of one split (a dataclass): reported, and part of the run's fingerprint."""


class FineTuneError(TTSearchError):
    """A fine-tuning run that cannot start: its output directory holds a model or another training."""


@dataclass(frozen=True)
class FineTuneJob:
    """What one task's fine-tuning run is, beyond its data; sent to every Ray Train worker (functions by
    reference, so they must be importable module-level functions)."""

    section: str
    """The config section ("prm", "revision"): messages name its keys."""
    settings: FineTuneConfig
    collate: Callable[[Sequence[Any], int], dict[str, torch.Tensor]]
    """(examples, pad token id) -> the batch `Trainer` feeds the loss."""
    title: str
    """The loss plot's title."""
    loss_name: str
    """What the loss is, for the plot's axis."""
    baseline_name: str
    """What the report's baseline loss is, for the plot and the report."""
    label_names: tuple[str, ...] = ("labels",)
    """The batch keys that are targets (`TrainingArguments.label_names`)."""
    make_trainer: Callable[..., Any] | None = None
    """(tokenizer, **Trainer arguments) -> a `Trainer` computing the task's loss; None: transformers' `Trainer`,
    whose loss is the model's own (next-token cross-entropy on `labels`)."""
    evaluate_base: bool = False
    """Evaluate the base model on the held-out split before training: the report's baseline."""


@dataclass(frozen=True)
class Examples(Generic[Summary]):
    """A task's data, tokenised and split on the driver; the summaries are the run's data fingerprint."""

    train: list[Any]
    heldout: list[Any]
    train_summary: Summary
    heldout_summary: Summary
    num_dropped: int
    """Examples left out of both splits (the task says why)."""


@dataclass(frozen=True)
class TrainReport(Generic[Summary]):
    """What a fine-tuning run did; written as `train.json` next to the model."""

    output_dir: str
    model_dir: str
    """The trained model and its tokenizer (chat template included), loadable by transformers and vLLM."""
    checkpoint: str
    """The newest Ray Train checkpoint (a transformers `Trainer` checkpoint in its `checkpoint/` folder)."""
    base_model: str
    train: Summary
    heldout: Summary
    num_dropped: int
    """Examples left out of both splits (the task says why)."""
    num_steps: int
    """Optimizer steps."""
    wall_s: float
    """The whole command, from reading the data to the trained model copied out."""
    first_train_loss: float | None
    final_train_loss: float | None
    """The last logged training loss (the task's loss averaged since the previous log)."""
    final_eval_loss: float | None
    """Held-out loss after the last step; None without a held-out split."""
    baseline_eval_loss: float | None
    """The held-out loss a trained model must beat (the task says which); None without a held-out split."""
    resumed: bool
    """The run went on from an earlier run's checkpoint."""
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """`Trainer.state.log_history`: every logged train and held-out loss, by optimizer step."""
    config: dict[str, Any] = field(default_factory=dict)
    """The task's config section."""


Report = TypeVar("Report", bound="TrainReport[Any]")
"""A task's `TrainReport` subclass: the same fields, printed as its command shows them."""


def output_dir(cfg: SweepConfig, job: FineTuneJob) -> Path:
    """`<section>.output_dir` as an absolute local path without a model in it yet; a relative one only where the
    driver's directory stays. Checked first: a run that cannot write its model should not read its data."""
    key = f"{job.section}.output_dir"
    where = job.settings.output_dir
    if "://" in where:
        raise FineTuneError(
            f"{key}: the model must land in a directory it can be loaded from, got the URI '{where}'; "
            "give a path on shared storage"
        )
    if not Path(where).is_absolute() and joins_cluster(cfg):
        raise FineTuneError(
            f"{key} '{where}' is relative: when joining a cluster (ray job submit, ray_address) it would "
            "land in the job's temporary working directory; give an absolute path on shared storage"
        )
    out = Path(where).expanduser().resolve()
    model_dir = out / "model"
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise FineTuneError(f"{key}: {model_dir} already holds a model; choose another {key} or remove it")
    return out


def fine_tune(
    cfg: SweepConfig,
    job: FineTuneJob,
    out: Path,
    examples: Examples[Any],
    started: float,
    report_type: type[Report],
    baseline_eval_loss: float | None = None,
) -> Report:
    """Train `job` on `examples` in Ray Train and write model/, loss_curve.png and train.json into `out` (from
    `output_dir`); return the report as `report_type`. The baseline is `baseline_eval_loss`, or the base model's
    held-out loss with `evaluate_base`; `started` is the command's start (`time.perf_counter()`), for the report's
    wall time."""
    tune = job.settings
    resumed = _claim(out, job, examples)
    if not examples.heldout:
        logger.warning(
            "no held-out question at %s.heldout_fraction=%s: training without evaluation",
            job.section,
            tune.heldout_fraction,
        )

    start_ray(cfg, extra_cpus=tune.num_workers * tune.cpus_per_worker)
    result = _fit(cfg, job, out, examples)
    model_dir = out / "model"
    checkpoint_dir = _copy_model(result.checkpoint, model_dir)
    history: list[dict[str, Any]] = result.return_value["log_history"]

    train_losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    baseline = result.return_value["base_eval_loss"] if job.evaluate_base else baseline_eval_loss
    report = report_type(
        output_dir=str(out),
        model_dir=str(model_dir),
        checkpoint=checkpoint_dir,
        base_model=tune.base_model,
        train=examples.train_summary,
        heldout=examples.heldout_summary,
        num_dropped=examples.num_dropped,
        num_steps=result.return_value["global_step"],
        wall_s=time.perf_counter() - started,
        first_train_loss=train_losses[0] if train_losses else None,
        final_train_loss=train_losses[-1] if train_losses else None,
        final_eval_loss=eval_losses[-1] if eval_losses else None,
        baseline_eval_loss=baseline,
        resumed=resumed,
        log_history=history,
        config=asdict(tune),
    )
    plot_losses(report, job, out / "loss_curve.png")
    (out / "train.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def _claim(out: Path, job: FineTuneJob, examples: Examples[Any]) -> bool:
    """Record what this run trains next to its checkpoints; True when it resumes an earlier run of the same.

    Ray Train resumes a run of the same name from its newest checkpoint, which is right only for the same data
    and settings: a directory holding another training's checkpoints is refused.
    """
    storage = out / "checkpoints"
    fingerprint = {
        job.section: {key: value for key, value in asdict(job.settings).items() if key not in RESOURCE_KEYS},
        "train": asdict(examples.train_summary),
        "heldout": asdict(examples.heldout_summary),
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
            raise FineTuneError(
                f"{job.section}.output_dir: {storage} holds checkpoints of another training (it differs in: "
                f"{', '.join(changed) or 'no record of it'}); choose another {job.section}.output_dir or remove it"
            )
        return True
    storage.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(fingerprint, indent=2))
    return False


def _fit(cfg: SweepConfig, job: FineTuneJob, out: Path, examples: Examples[Any]) -> Any:
    """Run the Ray Train job; its result carries the newest checkpoint and rank 0's return value."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tune = job.settings
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job, "cache_dir": cfg.cache_dir, "data": ray.put((examples.train, examples.heldout))},
        scaling_config=ScalingConfig(
            num_workers=tune.num_workers, use_gpu=tune.use_gpu, resources_per_worker={"CPU": tune.cpus_per_worker}
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
    Ray Train; it resumes from Ray Train's newest checkpoint when there is one. Returns the log history and, with
    `evaluate_base`, the base model's held-out loss (rank 0's are the run's)."""
    import tempfile

    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    job: FineTuneJob = config["job"]
    tune = job.settings
    train, heldout = ray.get(config["data"])
    path = resolve_model(tune.base_model, config["cache_dir"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, tune.dtype))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with tempfile.TemporaryDirectory(prefix=f"ttsearch-{job.section}-") as workdir:
        args = TrainingArguments(
            output_dir=workdir,  # Trainer's own checkpoints, copied into Ray Train storage as they are saved
            num_train_epochs=tune.epochs,
            learning_rate=tune.learning_rate,
            weight_decay=tune.weight_decay,
            warmup_steps=tune.warmup_ratio,  # < 1: a fraction of the optimizer steps
            per_device_train_batch_size=tune.batch_size,
            per_device_eval_batch_size=tune.batch_size,
            gradient_accumulation_steps=tune.gradient_accumulation_steps,
            eval_strategy="steps" if heldout else "no",
            eval_steps=tune.eval_steps,
            save_strategy="steps",
            save_steps=tune.save_steps,
            save_total_limit=1,
            logging_steps=tune.logging_steps,
            logging_first_step=True,
            prediction_loss_only=True,
            label_names=list(job.label_names),
            remove_unused_columns=False,  # the examples are the task's own; its collate makes the batch
            use_cpu=not tune.use_gpu,
            dataloader_pin_memory=tune.use_gpu,
            seed=tune.seed,
            data_seed=tune.seed,
            report_to="none",
            disable_tqdm=True,
        )
        arguments = {
            "model": model,
            "args": args,
            "train_dataset": train,
            "eval_dataset": heldout or None,
            "data_collator": lambda batch: job.collate(batch, pad_id),
            "processing_class": tokenizer,  # saved with every checkpoint, so the final one loads with its template
            "callbacks": [RayTrainReportCallback(), _final_step_log_callback()],
        }
        trainer = job.make_trainer(tokenizer, **arguments) if job.make_trainer else Trainer(**arguments)
        trainer = prepare_trainer(trainer)
        # Before `train`, which loads a resumed run's weights: the base model's loss, on every run.
        base_eval_loss = trainer.evaluate()["eval_loss"] if job.evaluate_base and heldout else None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            trainer.train()
        else:
            with checkpoint.as_directory() as resume:
                trainer.train(resume_from_checkpoint=str(Path(resume) / RayTrainReportCallback.CHECKPOINT_NAME))
    return {
        "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "base_eval_loss": base_eval_loss,
    }


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
    """Copy the model and tokenizer of the newest checkpoint (saved in `dtype` by `Trainer`), without its training
    state, into `model_dir`; returns the checkpoint's path."""
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


def plot_losses(report: TrainReport[Any], job: FineTuneJob, path: Path) -> None:
    """Train and held-out loss by optimizer step, and the baseline held-out loss for reference."""
    from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for key, name, style in (("loss", "train", "-o"), ("eval_loss", "held-out", "-s")):
        points = [(entry["step"], entry[key]) for entry in report.log_history if key in entry]
        if points:
            ax.plot(*zip(*points, strict=True), style, markersize=3, label=name)
    if report.baseline_eval_loss is not None:
        ax.axhline(report.baseline_eval_loss, color="grey", linestyle="--", label=f"held-out, {job.baseline_name}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(job.loss_name)
    ax.set_title(job.title)
    ax.legend()
    fig.savefig(path, dpi=120)


def _loss(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_train_report(
    report: TrainReport[Summary],
    trained: str,
    split_line: Callable[[Summary], str],
    dropped: str,
    baseline_name: str,
    use: str,
) -> str:
    """The report as `train-prm` / `train-revision` print it: what was `trained`, each split (`split_line`), the
    dropped examples (`dropped` says what they are), the losses with the baseline beside the held-out one, and
    what was written; `use` says how to load the model (e.g. `generator.model=`)."""
    resumed = " (resumed from a checkpoint)" if report.resumed else ""
    lines = [
        f"{trained} from {report.base_model} in {report.wall_s:.1f} s: {report.num_steps} optimizer steps{resumed}",
        f"train:    {split_line(report.train)}",
        f"held-out: {split_line(report.heldout)}",
    ]
    if report.num_dropped:
        lines.append(f"dropped:  {report.num_dropped} {dropped}")
    lines.append(f"train loss: {_loss(report.first_train_loss)} first, {_loss(report.final_train_loss)} last")
    if report.final_eval_loss is not None:
        lines.append(
            f"held-out loss: {_loss(report.final_eval_loss)} ({baseline_name}: {_loss(report.baseline_eval_loss)})"
        )
    out = Path(report.output_dir)
    lines += [
        f"model: {report.model_dir}  (use as {use}{report.model_dir})",
        f"checkpoint: {report.checkpoint}",
        f"loss curve: {out / 'loss_curve.png'}, report: {out / 'train.json'}",
    ]
    return "\n".join(lines)


def padded(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded on the right to one tensor, and the attention mask over their real tokens: each row reads
    as it would alone (the training collates' shared part)."""
    import torch

    width = max(len(row) for row in rows)
    tensor = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tensor[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return tensor, mask
