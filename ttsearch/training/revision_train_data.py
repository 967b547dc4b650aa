"""Training examples for `ttsearch train-revision`: `ttsearch revision-data` trajectories as the generator reads them.

A trajectory's prompt (the question and its earlier wrong attempts, rendered by the revisions strategy's
`revision_prompt` when the data was made) becomes exactly the ids a generator replica gives vLLM for it
(`ttsearch.search.requests.chat_prompt_ids`: the model's chat template and its generation prompt); the correct attempt
follows, ended by EOS, as the model must write it. The loss is on the correct attempt only: the prompt's labels are
-100. A trajectory longer than `max_input_tokens` is dropped, not cut: a cut prompt is a context inference never
shows. Nothing here loads a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ttsearch.errors import TTSearchError
from ttsearch.search.requests import Prompt, chat_prompt_ids
from ttsearch.training.finetune import Examples, padded
from ttsearch.training.labels import is_heldout
from ttsearch.training.revision_data import read_trajectories

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
"""transformers' label for a position without loss."""
COLUMNS = ["unique_id", "system", "user", "target"]


class RevisionTrainDataError(TTSearchError):
    """A `revision.data` entry that cannot be used, or nothing left to train on."""


@dataclass(frozen=True)
class RevisionFeatures:
    """One trajectory as the model reads it in training: the prompt's ids, then the target's."""

    id: str
    """The question's unique_id: the held-out split's key (every trajectory of a question on one side)."""
    input_ids: tuple[int, ...]
    num_prompt_tokens: int

    @property
    def labels(self) -> tuple[int, ...]:
        """Token targets: none over the prompt, the target's own ids (EOS included) after it."""
        return (IGNORE_INDEX,) * self.num_prompt_tokens + self.input_ids[self.num_prompt_tokens :]


@dataclass(frozen=True)
class RevisionSummary:
    """Counts of one split (train or held-out)."""

    num_questions: int
    num_trajectories: int
    num_tokens: int
    """Prompt and target tokens."""
    num_target_tokens: int
    """The tokens the loss is on (each target's EOS included)."""


def load_trajectories(entries: Sequence[str]) -> list[dict[str, Any]]:
    """The trajectories (`COLUMNS`) of every `revision.data` directory, in order; anything missing or unusable
    raises a RevisionTrainDataError naming it."""
    if not entries:
        raise RevisionTrainDataError(
            "revision.data is empty: give `ttsearch revision-data` output directories, "
            "e.g. revision.data=[runs/revision_data]"
        )
    rows: list[dict[str, Any]] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise RevisionTrainDataError(
                f"revision.data: {path} does not exist (expected a `ttsearch revision-data` output directory)"
            )
        try:
            table = read_trajectories(path)
        except (FileNotFoundError, pa.ArrowException) as exc:
            raise RevisionTrainDataError(
                f"revision.data: {path} is not a `ttsearch revision-data` output directory: {exc}"
            ) from None
        rows += table.select(COLUMNS).to_pylist()
    return rows


def tokenize(row: dict[str, Any], tokenizer: Any, max_input_tokens: int) -> RevisionFeatures | None:
    """The trajectory `row` (`COLUMNS`) as the generator's prompt ids then the target's ids and EOS; None when
    longer than `max_input_tokens`."""
    prompt = chat_prompt_ids(tokenizer, Prompt(system=row["system"], user=row["user"]))
    target = [*tokenizer.encode(row["target"], add_special_tokens=False), tokenizer.eos_token_id]
    if len(prompt) + len(target) > max_input_tokens:
        return None
    return RevisionFeatures(row["unique_id"], (*prompt, *target), len(prompt))


def summarize(features: Sequence[RevisionFeatures]) -> RevisionSummary:
    """Counts of one split: reported, and the run's data fingerprint (a re-run resumes only the same data)."""
    return RevisionSummary(
        num_questions=len({item.id for item in features}),
        num_trajectories=len(features),
        num_tokens=sum(len(item.input_ids) for item in features),
        num_target_tokens=sum(len(item.input_ids) - item.num_prompt_tokens for item in features),
    )


def build_examples(
    rows: Iterable[dict[str, Any]], tokenizer: Any, heldout_fraction: float, max_input_tokens: int
) -> Examples[RevisionSummary]:
    """The trajectories tokenised and split by `ttsearch.training.labels.is_heldout` on the question id; the dropped are
    those longer than `max_input_tokens`."""
    train: list[RevisionFeatures] = []
    heldout: list[RevisionFeatures] = []
    read = dropped = 0
    for row in rows:
        read += 1
        item = tokenize(row, tokenizer, max_input_tokens)
        if item is None:
            dropped += 1
        else:
            (heldout if is_heldout(item.id, heldout_fraction) else train).append(item)
    if not train:
        raise RevisionTrainDataError(
            f"revision.data: no training example: {read} trajectories read, {len(heldout)} held out "
            f"(revision.heldout_fraction={heldout_fraction}), {dropped} longer than "
            f"revision.max_input_tokens={max_input_tokens}"
        )
    return Examples(train, heldout, summarize(train), summarize(heldout), dropped)


def collate(batch: Sequence[RevisionFeatures], pad_id: int) -> dict[str, torch.Tensor]:
    """A training batch: input ids padded on the right with an attention mask, labels padded with -100 (so each
    row reads as it would alone, and padding carries no loss)."""
    input_ids, attention_mask = padded([item.input_ids for item in batch], pad_id)
    labels, _ = padded([item.labels for item in batch], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
