"""Training examples for `ttsearch train-prm`: step labels from every source, laid out as the verifier reads them.

Two sources give per-step labels. A `ttsearch label` output directory holds Monte Carlo labels (a soft label, the
share of a step's rollouts that succeed, and a hard one, whether any does). A first-error-step file (ProcessBench
JSON, or PRM800K converted to the same fields as JSON Lines) names the first wrong step of each solution, which
`first_error_labels` turns into per-step labels. Both become `StepExample`s, then `Features` through the
verifier's own `MathShepherdAdapter`, so the positions a training loss reads are the ones a served PRM reads.
Nothing here loads a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from ttsearch.errors import TTSearchError
from ttsearch.search.requests import Score
from ttsearch.sweep.data import load_first_error_items
from ttsearch.training.finetune import padded
from ttsearch.training.labels import is_heldout, read_labels

if TYPE_CHECKING:  # torch and the verifier's adapters load only where features are built
    import torch

    from ttsearch.engines.prm import StepAdapter

Target = Literal["soft", "hard"]


class PRMDataError(TTSearchError):
    """A `prm.labels` entry that cannot be used, named by path and item."""


@dataclass(frozen=True)
class StepExample:
    """One solution with a label for each of its leading steps, before tokenisation."""

    id: str
    """The held-out split's key: the question's unique_id for `ttsearch label` rows (every sample of a question
    falls on the same side), the item's `id` for first-error files."""
    question: str
    steps: tuple[str, ...]
    labels: tuple[float | None, ...]
    """One per leading step (at most len(steps)), in [0, 1]; None: the step has no label (no graded rollout) and
    is kept only as context."""


@dataclass(frozen=True)
class Features:
    """One solution as the model reads it in training: Math-Shepherd input ids, and the labelled tags."""

    id: str
    input_ids: tuple[int, ...]
    positions: tuple[int, ...]
    """Token positions whose next-token logits give the step scores (the end of each labelled step's tag)."""
    labels: tuple[float, ...]
    """The target in [0, 1] at each position."""


@dataclass(frozen=True)
class SplitSummary:
    """Counts of one split (train or held-out), over the steps that are actually trained on or evaluated."""

    num_questions: int
    num_solutions: int
    num_steps: int
    """Labelled steps (positions with a target)."""
    nonzero_share: float
    """Share of the labelled steps whose label is > 0 (a soft label with any success, a hard label of 1); 0 when
    there are none."""
    mean_label: float
    """Mean target over the labelled steps; 0 when there are none."""


def first_error_labels(num_steps: int, first_error: int) -> tuple[float, ...]:
    """Per-step labels of a solution whose first wrong step is `first_error` (0-based; -1: no wrong step).

    The steps before the first error are right (1.0) and the first wrong step is wrong (0.0). The steps after it
    are dropped, not labelled: annotators (ProcessBench, PRM800K) stop at the first error, so nothing says whether
    a later step is right given the mistake. With -1 every step is right. Raises ValueError for any other index.
    """
    if first_error == -1:
        return (1.0,) * num_steps
    if not 0 <= first_error < num_steps:
        raise ValueError(f"first error step {first_error} is outside -1..{num_steps - 1}")
    return (1.0,) * first_error + (0.0,)


def read_first_error_file(path: str | Path) -> list[StepExample]:
    """A first-error-step file's items (`ttsearch.sweep.data.load_first_error_items`: ProcessBench's JSON list, or JSON
    Lines) as examples labelled by `first_error_labels`."""
    examples = []
    for item in load_first_error_items(path):
        labels = first_error_labels(len(item.steps), item.label)
        examples.append(StepExample(item.id, item.problem, item.steps[: len(labels)], labels))
    return examples


def label_examples(table: pa.Table, target: Target, where: str) -> list[StepExample]:
    """`ttsearch label` rows (LABEL_SCHEMA) as examples: the soft labels, or the hard labels as 1.0 / 0.0.

    A null label element means the step had no graded rollout: the step stays in the input as context and is not
    trained on. A row with more labels than steps, or a soft label outside [0, 1], is refused.
    """
    column = "soft_labels" if target == "soft" else "hard_labels"
    examples = []
    for row in table.select(["unique_id", "question", "sample", "steps", column]).to_pylist():
        steps, raw = row["steps"] or [], row[column] or []
        name = f"{where}: question {row['unique_id']!r} sample {row['sample']}"
        if len(raw) > len(steps):
            raise PRMDataError(f"{name}: {len(raw)} {column} for {len(steps)} steps (at most one label per step)")
        labels = tuple(None if value is None else float(value) for value in raw)
        bad = [value for value in labels if value is not None and not 0 <= value <= 1]
        if bad:
            raise PRMDataError(f"{name}: {column} must lie in [0, 1], got {bad[0]}")
        examples.append(StepExample(row["unique_id"], row["question"], tuple(steps), labels))
    return examples


def load_examples(entries: Sequence[str], target: Target) -> list[StepExample]:
    """Every example of the `prm.labels` entries, in order: a directory is a `ttsearch label` output, a file is
    a first-error-step file. Anything missing or unusable raises a PRMDataError naming it."""
    if not entries:
        raise PRMDataError(
            "prm.labels is empty: give `ttsearch label` output directories and/or first-error-step files "
            "(ProcessBench JSON, JSON Lines), e.g. prm.labels=[runs/labels]"
        )
    examples: list[StepExample] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            try:
                table = read_labels(path)
            except (FileNotFoundError, pa.ArrowException) as exc:
                raise PRMDataError(f"prm.labels: {path} is not a `ttsearch label` output directory: {exc}") from None
            examples += label_examples(table, target, str(path))
        elif path.is_file():
            examples += read_first_error_file(path)
        else:
            raise PRMDataError(f"prm.labels: {path} does not exist (expected a `ttsearch label` directory or a file)")
    return examples


def split_examples(
    examples: Sequence[StepExample], heldout_fraction: float
) -> tuple[list[StepExample], list[StepExample]]:
    """(train, held-out) by `ttsearch.training.labels.is_heldout` on each example's id, as `eval-prm` splits them."""
    train: list[StepExample] = []
    heldout: list[StepExample] = []
    for example in examples:
        (heldout if is_heldout(example.id, heldout_fraction) else train).append(example)
    return train, heldout


def tokenize(example: StepExample, adapter: StepAdapter, max_input_tokens: int) -> Features | None:
    """The example laid out by `adapter` (the served format), cut from the left to `max_input_tokens` as the
    verifier cuts it; None when it has no labelled step.

    Steps after the last labelled one are left out (a causal model's earlier scores do not depend on them), so the
    cut never reaches the last labelled tag; an earlier step whose tag it cuts loses its label.
    """
    last = max((i for i, label in enumerate(example.labels) if label is not None), default=-1)
    if last < 0:
        return None
    encoded = adapter.encode(0, Score(example.question, example.steps[: last + 1]), max_input_tokens)
    kept = [
        (position, label)
        for position, label in zip(encoded.positions, example.labels[encoded.num_cut : last + 1], strict=True)
        if label is not None
    ]
    positions, labels = zip(*kept, strict=True)
    return Features(example.id, encoded.input_ids, positions, labels)


def tokenize_all(
    examples: Iterable[StepExample], adapter: StepAdapter, max_input_tokens: int
) -> tuple[list[Features], int]:
    """(features, how many examples had no labelled step: every step of theirs without a graded rollout)."""
    features, dropped = [], 0
    for example in examples:
        item = tokenize(example, adapter, max_input_tokens)
        if item is None:
            dropped += 1
        else:
            features.append(item)
    return features, dropped


def summarize(features: Sequence[Features]) -> SplitSummary:
    """Counts and label shares of one split."""
    labels = [label for item in features for label in item.labels]
    return SplitSummary(
        num_questions=len({item.id for item in features}),
        num_solutions=len(features),
        num_steps=len(labels),
        nonzero_share=sum(label > 0 for label in labels) / len(labels) if labels else 0.0,
        mean_label=sum(labels) / len(labels) if labels else 0.0,
    )


def constant_loss(features: Sequence[Features], p: float) -> float | None:
    """The mean binary cross-entropy of predicting `p` at every labelled step: the loss a PRM that ignores its
    input would reach (with p the train split's mean label), the bar a trained one must beat. None: no steps."""
    labels = [label for item in features for label in item.labels]
    if not labels:
        return None
    p = min(max(p, 1e-7), 1 - 1e-7)
    return -sum(y * math.log(p) + (1 - y) * math.log(1 - p) for y in labels) / len(labels)


def collate(batch: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
    """A training batch: input ids padded on the right with an attention mask (so each row reads as it would
    alone), and the labelled tags flattened across the batch as (row, column) pairs with their targets."""
    import torch

    input_ids, attention_mask = padded([item.input_ids for item in batch], pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "tag_rows": torch.tensor([row for row, item in enumerate(batch) for _ in item.positions], dtype=torch.long),
        "tag_cols": torch.tensor([p for item in batch for p in item.positions], dtype=torch.long),
        "step_labels": torch.tensor([y for item in batch for y in item.labels], dtype=torch.float32),
    }
