"""Making the verifier and the reviser: step labels, fine-tuning, revision data and the evaluations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ttsearch.config.base import EMBEDDED_MODEL, POSITIVE, at_least, require

if TYPE_CHECKING:
    from ttsearch.config.sweep import SweepConfig

FINE_TUNE_SECTIONS = ("prm", "revision")
"""The config sections that are a `FineTuneConfig`."""


@dataclass(frozen=True)
class LabelConfig:
    """`ttsearch label`: Monte Carlo step labels (Snell et al.'s Algorithm 1, Math-Shepherd's estimator).

    For each question, `samples` solutions are sampled and split into steps at `search.step_delimiter`; from
    every step prefix `rollouts` completions run to the end and are graded. A step's soft label is the share
    of its rollouts that reach the reference answer (the paper's and Math-Shepherd's SE), its hard label
    whether any does (Math-Shepherd's HE). Samples and rollouts are drawn at `search.temperature`.
    """

    samples: int = field(default=4, metadata=POSITIVE)  # K: solutions sampled per question
    rollouts: int = field(default=4, metadata=POSITIVE)  # R: completions from every step prefix
    max_steps: int = field(default=8, metadata=POSITIVE)
    """label at most this many leading step prefixes of a solution (later steps get no label)"""
    reference_prefixes: bool = False  # also roll out from prefixes of the question's reference solution
    seed: int = 0  # every sample and rollout is seeded from (question, seed, position): a re-run is a replay


@dataclass(frozen=True)
class FineTuneConfig:
    """What `train-prm` and `train-revision` share: fine-tuning a causal LM with transformers' `Trainer` inside
    Ray Train, checkpointed and resumable."""

    base_model: str = EMBEDDED_MODEL  # any Hugging Face causal LM: "embedded", a local directory or a hub id
    output_dir: str = "runs/model"  # checkpoints/, model/, loss_curve.png, train.json
    heldout_fraction: float = 0.1  # questions kept out of training, by a hash of their id (evaluations draw the same)
    epochs: float = field(default=1.0, metadata=POSITIVE)
    learning_rate: float = field(default=2e-5, metadata=POSITIVE)
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    warmup_ratio: float = field(default=0.0, metadata=at_least(0))
    batch_size: int = field(default=8, metadata=POSITIVE)
    """examples per device and optimizer step (before gradient accumulation)"""
    gradient_accumulation_steps: int = field(default=1, metadata=POSITIVE)
    max_input_tokens: int = field(default=1024, metadata=POSITIVE)
    dtype: str = "float32"  # the weights trained and saved; bfloat16 on GPUs that have it
    num_workers: int = field(default=1, metadata=POSITIVE)  # Ray Train workers (data-parallel)
    use_gpu: bool = False
    cpus_per_worker: float = field(default=1.0, metadata=POSITIVE)
    eval_steps: int = field(default=50, metadata=POSITIVE)
    """held-out loss every this many optimizer steps (and at the end)"""
    save_steps: int = field(default=200, metadata=POSITIVE)
    """a Ray Train checkpoint every this many optimizer steps (and at the end)"""
    logging_steps: int = field(default=5, metadata=POSITIVE)
    seed: int = 0


@dataclass(frozen=True)
class PRMTrainConfig(FineTuneConfig):
    """`ttsearch train-prm`: a Math-Shepherd-format PRM (a tag after each step, p("+") vs p("-") at the tag,
    binary cross-entropy on the step labels). Longer solutions than `max_input_tokens` are cut from the left, as
    the verifier cuts them."""

    labels: list[str] = field(default_factory=list)  # `ttsearch label` output_dirs and/or first-error-step files
    output_dir: str = "runs/prm"
    target: str = "soft"  # which `ttsearch label` label to fit: "soft" (success share) or "hard" (any success)


@dataclass(frozen=True)
class RevisionDataConfig:
    """`ttsearch revision-data`: training trajectories for a revision model (Snell et al. §6.1).

    For each question, `samples` attempts are sampled from the plain prompt and graded. Each correct attempt
    (at most `trajectories_per_question`, distinct texts) ends one trajectory whose earlier attempts are wrong
    ones of the same question: the nearest to it by normalised character edit distance, ordered by increasing
    similarity (the nearest last, just before the correct one). Their number is drawn uniformly from
    `min_wrong`..min(`window`, wrong attempts available), seeded by the question, so training covers every chain
    position the revisions strategy reaches; each trajectory is rendered in the strategy's prompt format.
    """

    samples: int = field(default=16, metadata=POSITIVE)  # attempts sampled per question
    window: int = field(default=4, metadata=POSITIVE)
    """the most wrong attempts before the correct one: the revisions strategy's revision_window"""
    min_wrong: int = field(default=1, metadata=at_least(0, "0: trajectories without a wrong attempt too"))
    """the fewest; 0 also trains first attempts (plain prompt -> correct attempt)"""
    trajectories_per_question: int = field(default=4, metadata=POSITIVE)
    """correct attempts used per question, each ending its own trajectory"""
    reference_fallback: bool = False  # a question without a correct attempt: its reference solution ends one
    # trajectory instead (not the paper's recipe; for a generator that rarely gets a question right)
    seed: int = 0  # sampling and the draws are seeded from (question, seed): a re-run is a replay


@dataclass(frozen=True)
class RevisionTrainConfig(FineTuneConfig):
    """`ttsearch train-revision`: supervised fine-tuning of the generator on `ttsearch revision-data`
    trajectories, the loss on the final (correct) attempt only. The result drops in as `generator.model`."""

    data: list[str] = field(default_factory=list)  # `ttsearch revision-data` output_dirs
    output_dir: str = "runs/revision"


@dataclass(frozen=True)
class EvalRevisionConfig:
    """`ttsearch eval-revision`: does revising help? For each model, the revisions strategy (chains of
    `revision_length` attempts) and best-of-N at the same budget over `data`, then pass@1 of attempt t by t."""

    models: list[str] = field(default_factory=lambda: [EMBEDDED_MODEL, "runs/revision/model"])  # the first is the base
    budget: int = field(default=8, metadata=POSITIVE)  # samples per question for each strategy
    revision_length: int = field(default=4, metadata=POSITIVE)  # T: attempts per chain (budget / T chains)
    revision_window: int = field(default=4, metadata=POSITIVE)  # earlier attempts shown when writing the next
    output: str = "runs/eval_revision"  # a sweep directory per model, revision_curve.png, eval.md and eval.json


@dataclass(frozen=True)
class EvalPRMConfig:
    """`ttsearch eval-prm`: ProcessBench's protocol, and step ROC AUC on held-out `ttsearch label` steps."""

    # ProcessBench subset files; the GSM8K and MATH subsets ship with the package (Apache-2.0)
    processbench: list[str] = field(
        default_factory=lambda: ["data/processbench/gsm8k.json", "data/processbench/math.json"]
    )
    limit: int | None = None  # `limit` items of each subset, evenly spaced over its file (null: all)
    labels: str | None = None  # a `ttsearch label` output_dir: the steps of its questions held out of training
    # (`prm.heldout_fraction`, the split train-prm used) give the AUC
    threshold: float = 0.5  # the first step scored below this is the predicted first error
    output: str = "runs/eval_prm"  # eval.md and eval.json go here


PRM_TARGETS = ("soft", "hard")


def validate_prm(cfg: SweepConfig) -> None:
    """`ttsearch train-prm` and `eval-prm` settings."""
    require(cfg.prm.target in PRM_TARGETS, "prm.target", f"expected one of {PRM_TARGETS}, got '{cfg.prm.target}'")
    for section in FINE_TUNE_SECTIONS:
        tune: FineTuneConfig = getattr(cfg, section)
        fraction = tune.heldout_fraction
        require(0 <= fraction < 1, f"{section}.heldout_fraction", f"must be in [0, 1), got {fraction}")
        require(tune.warmup_ratio < 1, f"{section}.warmup_ratio", f"must be < 1, got {tune.warmup_ratio}")
    threshold = cfg.eval_prm.threshold
    require(0 <= threshold <= 1, "eval_prm.threshold", f"a step score threshold is in [0, 1], got {threshold}")
    limit = cfg.eval_prm.limit
    require(limit is None or limit > 0, "eval_prm.limit", f"must be > 0 (null: all), got {limit}")


def validate_revision(cfg: SweepConfig) -> None:
    """`ttsearch revision-data`, `train-revision` and `eval-revision` settings."""
    data = cfg.revision_data
    require(
        data.min_wrong <= data.window,
        "revision_data.min_wrong",
        f"must be <= revision_data.window ({data.window}), got {data.min_wrong}",
    )
    evaluation = cfg.eval_revision
    require(
        evaluation.budget % evaluation.revision_length == 0,
        "eval_revision.budget",
        f"must be a multiple of eval_revision.revision_length ({evaluation.revision_length}), got {evaluation.budget}",
    )
    require(bool(evaluation.models), "eval_revision.models", "at least one model is needed, got []")
