"""PRM training examples: first-error conversion, label rows, the held-out split and the served layout.

No model and no Ray: a character-level fake tokenizer (one token per character, plus a BOS) is all the
Math-Shepherd adapter needs, and it makes every token position checkable by eye.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pytest
import torch

from ttsearch.engines.prm import MathShepherdAdapter
from ttsearch.sweep.data import DataError
from ttsearch.training.labels import LABEL_SCHEMA, is_heldout, label_store
from ttsearch.training.prm_data import (
    Features,
    PRMDataError,
    StepExample,
    collate,
    constant_loss,
    first_error_labels,
    label_examples,
    load_examples,
    read_first_error_file,
    split_examples,
    summarize,
    tokenize,
    tokenize_all,
)

BOS = 1


class CharTokenizer:
    """One token per character (its code point), after a BOS token when special tokens are asked for."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [ord(c) for c in text]

    def __call__(self, text: str, return_offsets_mapping: bool = False, add_special_tokens: bool = True) -> dict:
        offsets = [(i, i + 1) for i in range(len(text))]
        if add_special_tokens:
            offsets = [(0, 0), *offsets]
        return {"input_ids": self.encode(text, add_special_tokens), "offset_mapping": offsets}


@pytest.fixture
def adapter() -> MathShepherdAdapter:
    return MathShepherdAdapter(CharTokenizer())


def item(label: int, steps: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    steps = ["a", "b", "c"] if steps is None else steps
    return {"id": "pb-0", "problem": "What is 1+1?", "steps": steps, "label": label, **fields}


def label_row(unique_id: str, sample: int, steps: list[str], soft: list[float | None], **fields: Any) -> dict:
    row = {name: None for name in LABEL_SCHEMA.names}
    row.update(
        unique_id=unique_id,
        question=f"Q {unique_id}",
        reference="2",
        source="sample",
        sample=sample,
        steps=steps,
        finished=True,
        soft_labels=soft,
        hard_labels=[None if s is None else s > 0 for s in soft],
        shard=0,
    )
    row.update(fields)
    return row


def test_first_error_labels_rule():
    assert first_error_labels(3, -1) == (1.0, 1.0, 1.0)
    assert first_error_labels(3, 0) == (0.0,)
    assert first_error_labels(4, 2) == (1.0, 1.0, 0.0)  # the steps after the first error are dropped
    assert first_error_labels(3, 2) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="outside -1..2"):
        first_error_labels(3, 3)


def test_first_error_file_json_and_jsonl(tmp_path):
    bench = tmp_path / "gsm8k.json"
    bench.write_text(json.dumps([item(-1), item(1, id="pb-1", final_answer_correct=False)]))
    examples = read_first_error_file(bench)
    assert examples == [
        StepExample("pb-0", "What is 1+1?", ("a", "b", "c"), (1.0, 1.0, 1.0)),
        StepExample("pb-1", "What is 1+1?", ("a", "b"), (1.0, 0.0)),
    ]
    lines = tmp_path / "prm800k.jsonl"
    lines.write_text(json.dumps(item(0, id=7)) + "\n\n" + json.dumps(item(2)) + "\n")
    assert [(e.id, e.steps, e.labels) for e in read_first_error_file(lines)] == [
        ("7", ("a",), (0.0,)),
        ("pb-0", ("a", "b", "c"), (1.0, 1.0, 0.0)),
    ]


def test_first_error_file_errors_come_from_the_shared_loader(tmp_path):
    """The rules themselves are tested with the loader (`tests/unit/sweep/test_data.py`); here: they apply to training
    input."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([item(-1), item(3)]))
    with pytest.raises(DataError, match=r"bench\.json: item 1 \(id 'pb-0'\): 'label' must be -1 .* in 0\.\.2, got 3"):
        read_first_error_file(path)
    lines = tmp_path / "bench.jsonl"
    lines.write_text(json.dumps(item(-1)) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bench\.jsonl:2: not valid JSON"):
        read_first_error_file(lines)


def test_label_rows_soft_and_hard_targets():
    table = pa.Table.from_pylist(
        [label_row("q1", 0, ["s1", "s2", "s3"], [0.5, None, 0.0]), label_row("q1", 1, ["s1"], [1.0])],
        schema=LABEL_SCHEMA,
    )
    soft = label_examples(table, "soft", "labels")
    assert soft[0] == StepExample("q1", "Q q1", ("s1", "s2", "s3"), (0.5, None, 0.0))
    assert soft[1].labels == (1.0,)
    hard = label_examples(table, "hard", "labels")
    assert hard[0].labels == (1.0, None, 0.0)


def test_label_rows_refuse_bad_labels():
    too_many = pa.Table.from_pylist([label_row("q1", 2, ["s1"], [0.5, 0.5])], schema=LABEL_SCHEMA)
    with pytest.raises(PRMDataError, match=r"runs/l: question 'q1' sample 2: 2 soft_labels for 1 steps"):
        label_examples(too_many, "soft", "runs/l")
    out_of_range = pa.Table.from_pylist([label_row("q1", 0, ["s1"], [1.5])], schema=LABEL_SCHEMA)
    with pytest.raises(PRMDataError, match=r"in \[0, 1\], got 1.5"):
        label_examples(out_of_range, "soft", "runs/l")


def test_load_examples_reads_label_dirs_and_files(tmp_path):
    store = label_store(tmp_path / "labels")
    rows = [label_row("q1", 0, ["s1"], [0.25]), label_row("q2", 0, ["s1"], [None], error="boom")]
    store.write_shard(0, 1, pa.Table.from_pylist(rows, schema=LABEL_SCHEMA))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([item(0)]))
    examples = load_examples([str(tmp_path / "labels"), str(bench)], "soft")
    assert [(e.id, e.labels) for e in examples] == [("q1", (0.25,)), ("pb-0", (0.0,))]  # the error row is left out
    with pytest.raises(PRMDataError, match="prm.labels is empty"):
        load_examples([], "soft")
    with pytest.raises(PRMDataError, match="missing does not exist"):
        load_examples([str(tmp_path / "missing")], "soft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PRMDataError, match="not a `ttsearch label` output directory"):
        load_examples([str(tmp_path / "empty")], "soft")


def test_heldout_split_keeps_a_questions_samples_together():
    examples = [StepExample(f"q{q}", "Q", ("s",), (1.0,)) for q in range(200) for _ in range(3)]
    train, heldout = split_examples(examples, 0.25)
    assert 0 < len(heldout) < len(examples)
    assert {e.id for e in train}.isdisjoint({e.id for e in heldout})
    assert all(is_heldout(e.id, 0.25) for e in heldout)
    assert len(heldout) % 3 == 0  # all three samples of a held-out question
    assert split_examples(examples, 0.0) == (examples, [])


def test_positions_are_the_tag_tokens_the_verifier_reads(adapter):
    example = StepExample("q", "What is 1+1?", ("1+1=2", " So 2. "), (1.0, 0.5))
    features = tokenize(example, adapter, max_input_tokens=1024)
    text = "What is 1+1? 1+1=2 ки\nSo 2. ки"
    ids = tuple([BOS] + [ord(c) for c in text])
    assert features == Features("q", ids, (text.index("и") + 1, len(text)), (1.0, 0.5))  # BOS shifts by one
    assert all(features.input_ids[p] == ord("и") for p in features.positions)
    assert adapter.good_ids == [ord("+")] and adapter.bad_ids == [ord("-")]


def test_unlabelled_steps_are_context_only(adapter):
    example = StepExample("q", "Q", ("aa", "bb", "cc", "dd"), (None, 0.5, None))
    features = tokenize(example, adapter, max_input_tokens=1024)
    assert features.labels == (0.5,)
    assert len(features.positions) == 1
    assert "".join(map(chr, features.input_ids[1:])) == "Q aa ки\nbb ки"  # steps after the last label left out
    assert tokenize(StepExample("q", "Q", ("aa",), (None,)), adapter, 1024) is None


def test_truncation_drops_the_cut_steps_labels(adapter):
    example = StepExample("q", "Q", ("a" * 20, "b" * 20, "c" * 20), (1.0, 0.0, 0.5))
    full = tokenize(example, adapter, max_input_tokens=1024)
    assert len(full.input_ids) == 74  # BOS, "Q ", then 23 + 24 + 24 for the steps with their tags
    partly = tokenize(example, adapter, max_input_tokens=60)  # the first step's text is cut, its tag is not
    assert partly.labels == (1.0, 0.0, 0.5)
    cut = tokenize(example, adapter, max_input_tokens=48)  # the first step's tag is cut too
    assert len(cut.input_ids) == 48
    assert cut.labels == (0.0, 0.5)
    assert all(cut.input_ids[p] == ord("и") for p in cut.positions)
    assert cut.input_ids[-20:] == full.input_ids[-20:]
    tiny = tokenize(example, adapter, max_input_tokens=10)  # the end of the last step and its tag, always kept
    assert tiny.labels == (0.5,) and tiny.input_ids[-3:] == tuple(map(ord, " ки"))
    unlabelled = StepExample("q", "Q", ("a",), (None,))
    features, dropped = tokenize_all([example, unlabelled], adapter, 1024)
    assert (features, dropped) == ([full], 1)


def test_summary_counts_and_constant_baseline():
    features = [
        Features("q1", (1,), (0, 0), (0.0, 0.5)),
        Features("q1", (1,), (0,), (1.0,)),
        Features("q2", (1,), (0,), (0.0,)),
    ]
    summary = summarize(features)
    assert (summary.num_questions, summary.num_solutions, summary.num_steps) == (2, 3, 4)
    assert summary.nonzero_share == 0.5 and summary.mean_label == 0.375
    assert summarize([]).num_steps == 0
    assert constant_loss(features, 0.5) == pytest.approx(math.log(2))
    assert constant_loss([], 0.5) is None


def test_collate_pads_right_and_flattens_the_tags():
    batch = collate([Features("a", (5, 6, 7), (1, 2), (1.0, 0.0)), Features("b", (8,), (0,), (0.25,))], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["tag_rows"].tolist() == [0, 0, 1] and batch["tag_cols"].tolist() == [1, 2, 0]
    assert batch["step_labels"].dtype == torch.float32 and batch["step_labels"].tolist() == [1.0, 0.0, 0.25]
