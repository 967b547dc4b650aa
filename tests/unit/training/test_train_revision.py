"""`ttsearch train-revision`'s parts that need no model: the collator, and revision-data input read or refused
before Ray starts."""

from __future__ import annotations

import pytest
from ttsearch.pipelines.train_revision import run_train_revision

from tests.fixtures import trajectory, write_revision_data
from ttsearch.config import load_config
from ttsearch.training.revision_train_data import (
    IGNORE_INDEX,
    RevisionFeatures,
    RevisionTrainDataError,
    collate,
    load_trajectories,
)


def test_collate_pads_and_masks_the_prompt():
    short = RevisionFeatures("a", (5, 6, 7, 2), num_prompt_tokens=2)
    long = RevisionFeatures("b", (5, 6, 7, 8, 9, 2), num_prompt_tokens=3)
    assert short.labels == (IGNORE_INDEX, IGNORE_INDEX, 7, 2)
    batch = collate([short, long], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 0, 0], [5, 6, 7, 8, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert batch["labels"].tolist() == [[*short.labels, IGNORE_INDEX, IGNORE_INDEX], [*[IGNORE_INDEX] * 3, 8, 9, 2]]


def test_reads_revision_data_and_refuses_missing_input_before_ray(tmp_path):
    data = write_revision_data(tmp_path / "data", [trajectory(1), trajectory(2)])
    assert [row["unique_id"] for row in load_trajectories([str(data)])] == ["toy/1", "toy/2"]  # no empty row
    (tmp_path / "empty").mkdir()
    with pytest.raises(RevisionTrainDataError, match="empty is not a `ttsearch revision-data` output directory"):
        load_trajectories([str(data), str(tmp_path / "empty")])
    missing = tmp_path / "missing"
    with pytest.raises(RevisionTrainDataError, match=f"revision.data: {missing} does not exist"):
        run_train_revision(load_config(None, [f"revision.data=[{missing}]", f"revision.output_dir={tmp_path}/out"]))
    with pytest.raises(RevisionTrainDataError, match="revision.data is empty"):
        run_train_revision(load_config(None, [f"revision.output_dir={tmp_path}/out"]))
