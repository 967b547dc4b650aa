"""`ttsearch label` end to end at toy scale: Ray Data shards, the session's vLLM generator replicas, real grading."""

from __future__ import annotations

import json

import pytest
from ttsearch.pipelines.label import run_label

from ttsearch.config import load_config
from ttsearch.training.labels import label_store, read_labels

pytestmark = pytest.mark.integration

TOY = [
    "data.path=data/gsm8k_train.jsonl",  # the shipped copy (a relative data/ path resolves to the package's)
    "data.limit=3",
    "data.shards=2",
    r'search.step_delimiter="\n"',
    "search.max_solution_tokens=32",
    "label.samples=2",
    "label.rollouts=2",
    "label.max_steps=2",
    "label.reference_prefixes=true",
]


def test_label_writes_resumable_sharded_step_labels(tmp_path, cache_dir, generator_replicas):
    cfg = load_config(None, [*TOY, f"output_dir={tmp_path}", f"cache_dir={cache_dir}"])
    summary = run_label(cfg, generators=generator_replicas)
    store = label_store(tmp_path)
    assert store.finished_shards(2) == {0, 1}
    assert json.loads(store.read_text("sweep.json"))["label"]["rollouts"] == 2
    saved = read_labels(tmp_path)
    rows = saved.to_pylist()
    assert len(rows) == summary.solutions == 3 * (2 + 1)  # K samples and the reference per question
    for row in rows:
        labelled = len(row["soft_labels"])
        assert labelled == min(len(row["steps"]), 2)
        for soft, hard, wins, count in zip(
            row["soft_labels"], row["hard_labels"], row["successes"], row["rollouts"], strict=True
        ):
            assert count >= 1 and soft == wins / count and hard == (wins > 0)
    references = [row for row in rows if row["source"] == "reference"]
    # A GSM8K reference is a step per line, ending with the answer line the loader writes.
    assert all(row["steps"][-1].startswith("The answer is") for row in references)
    assert summary.labelled_questions == 3 and summary.missing_questions == 0 and summary.steps > 0

    again = run_label(cfg, generators=generator_replicas)  # nothing left to compute: no replica is called
    assert again == summary
    assert read_labels(tmp_path).sort_by("unique_id").equals(saved.sort_by("unique_id"))
