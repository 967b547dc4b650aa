"""`ttsearch train-revision`: the examples as the generator reads them (unit), and end to end at toy scale: a
random-init tiny Llama with the embedded tokenizer fine-tuned in Ray Train on a revision-data directory, then
served by a real vLLM generator replica running the revisions strategy.

The tokenisation tests need no Ray, but the embedded tokenizer comes from the model cache (its GGUF takes 10 s
to 2 min to parse on a loaded machine), so the conftest guard marks them integration with the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from ttsearch.pipelines.train_revision import format_report, run_train_revision

from tests.test_train_prm import save_tiny_llama
from ttsearch.config import CONF_DIR, load_config
from ttsearch.search.requests import Prompt, chat_prompt_ids
from ttsearch.search.strategies.revisions import revision_prompt
from ttsearch.training.finetune import TrainReport
from ttsearch.training.labels import is_heldout
from ttsearch.training.revision_data import REVISION_SCHEMA, revision_store
from ttsearch.training.revision_train_data import (
    IGNORE_INDEX,
    RevisionFeatures,
    RevisionSummary,
    RevisionTrainDataError,
    build_examples,
    collate,
    load_trajectories,
    tokenize,
)

CFG = load_config(CONF_DIR / "revision_prompt.yaml", [])


def trajectory(q: int, number: int = 0) -> dict[str, Any]:
    """A trajectory of question `toy/q`: one wrong attempt shown, rendered by the revisions strategy, then the
    right one; the answers follow from the question, so a model can fit them."""
    question = f"What is {q} + {q}?"
    wrong = f"{q} + {q} = {2 * q + 1}.\n\nThe answer is $\\boxed{{{2 * q + 1}}}$."
    prompt = revision_prompt(CFG.search.system_prompt, question, [wrong], 2, CFG.search.revision_prompt)
    return {name: None for name in REVISION_SCHEMA.names} | {
        "unique_id": f"toy/{q}",
        "question": question,
        "reference": str(2 * q),
        "trajectory": number,
        "attempts": [wrong],
        "attempt_answers": [str(2 * q + 1)],
        "distances": [0.1],
        "target_source": "sample",
        "target_answer": str(2 * q),
        "target": f"{q} + {q} = {2 * q}.\n\nThe answer is $\\boxed{{{2 * q}}}$.",
        "system": prompt.system,
        "user": prompt.user,
        "samples": 2,
        "correct_samples": 1,
        "ungraded_samples": 0,
        "shard": 0,
    }


def write_revision_data(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A `ttsearch revision-data` output directory holding `rows` and a question without a trajectory."""
    empty = {name: None for name in REVISION_SCHEMA.names} | {"unique_id": "toy/none", "samples": 2, "shard": 0}
    revision_store(path).write_shard(0, 1, pa.Table.from_pylist([*rows, empty], schema=REVISION_SCHEMA))
    return path


@pytest.fixture(scope="module")
def tokenizer(cache_dir) -> Any:
    from transformers import AutoTokenizer

    from ttsearch.engines.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded", cache_dir))


@pytest.mark.integration
def test_prompt_ids_are_the_generators_and_the_loss_is_on_the_target_only(tokenizer):
    row = trajectory(3)
    item = tokenize(row, tokenizer, max_input_tokens=1024)
    prompt = chat_prompt_ids(tokenizer, Prompt(system=row["system"], user=row["user"]))
    target = tokenizer.encode(row["target"], add_special_tokens=False)
    assert item.id == "toy/3" and item.num_prompt_tokens == len(prompt)
    assert item.input_ids == (*prompt, *target, tokenizer.eos_token_id)
    assert item.labels == (IGNORE_INDEX,) * len(prompt) + (*target, tokenizer.eos_token_id)
    assert tokenizer.decode(item.input_ids[len(prompt) :]) == row["target"] + "<|im_end|>"


@pytest.mark.integration
def test_too_long_is_dropped_not_cut(tokenizer):
    length = len(tokenize(trajectory(3), tokenizer, max_input_tokens=1024).input_ids)
    assert tokenize(trajectory(3), tokenizer, max_input_tokens=length) is not None
    assert tokenize(trajectory(3), tokenizer, max_input_tokens=length - 1) is None
    examples = build_examples([trajectory(3), trajectory(30000)], tokenizer, 0.0, length)
    assert [item.id for item in examples.train] == ["toy/3"] and examples.num_dropped == 1
    with pytest.raises(RevisionTrainDataError, match=r"2 trajectories read, .* 2 longer than .*max_input_tokens=10"):
        build_examples([trajectory(3), trajectory(4)], tokenizer, 0.0, 10)


@pytest.mark.integration
def test_split_by_question_and_summaries(tokenizer):
    rows = [trajectory(q, number) for q in range(16) for number in range(2)]
    examples = build_examples(rows, tokenizer, 0.25, 1024)
    held = {f"toy/{q}" for q in range(16) if is_heldout(f"toy/{q}", 0.25)}
    assert 0 < len(held) < 16
    assert {item.id for item in examples.heldout} == held and not held & {item.id for item in examples.train}
    assert examples.heldout_summary.num_trajectories == 2 * len(held) == len(examples.heldout)
    assert examples.train_summary.num_questions == 16 - len(held)
    trained_tokens = sum(label != IGNORE_INDEX for item in examples.train for label in item.labels)
    assert examples.train_summary.num_target_tokens == trained_tokens
    assert examples.train_summary.num_tokens == sum(len(item.input_ids) for item in examples.train)


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


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, cache_dir) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), cache_dir)


@pytest.fixture(scope="module")
def trained(ray_session, base_model, tmp_path_factory) -> TrainReport[RevisionSummary]:
    """One Ray Train CPU worker (train-prm's test runs two) overfitting 12 questions' trajectories at a high learning
    rate."""
    data = write_revision_data(tmp_path_factory.mktemp("revision_data"), [trajectory(q) for q in range(12)])
    cfg = load_config(
        None,
        [
            f"revision.data=[{data}]",
            f"revision.base_model={base_model}",
            f"revision.output_dir={tmp_path_factory.mktemp('revision_run')}",
            "revision.heldout_fraction=0.25",
            "revision.epochs=8",
            "revision.learning_rate=0.03",
            "revision.batch_size=4",
            "revision.num_workers=1",
            "revision.logging_steps=4",
            "revision.eval_steps=8",
            "revision.save_steps=16",
            "revision.max_input_tokens=512",
        ],
    )
    return run_train_revision(cfg)


@pytest.mark.integration
def test_training_fits_the_targets_and_writes_its_outputs(trained):
    out = Path(trained.output_dir)
    print(format_report(trained))
    assert trained.train.num_trajectories + trained.heldout.num_trajectories == 12 and trained.heldout.num_questions
    assert trained.num_dropped == 0 and not trained.resumed
    uniform = math.log(json.loads((Path(trained.model_dir) / "config.json").read_text())["vocab_size"])
    assert trained.first_train_loss == pytest.approx(uniform, abs=1.0)  # a random init predicts next to uniformly
    assert trained.final_train_loss < 0.5 * trained.first_train_loss
    assert trained.baseline_eval_loss == pytest.approx(uniform, abs=1.0)  # the base model, before training
    assert trained.final_eval_loss < 0.5 * trained.baseline_eval_loss  # the held-out targets share their form
    assert trained.log_history[-1]["step"] == trained.num_steps
    assert (out / "loss_curve.png").stat().st_size > 0
    assert json.loads((out / "train.json").read_text())["baseline_eval_loss"] == trained.baseline_eval_loss
    assert not list(Path(trained.model_dir).glob("optimizer*"))
    from transformers import AutoTokenizer

    saved, base = (AutoTokenizer.from_pretrained(path) for path in (trained.model_dir, trained.base_model))
    assert saved.chat_template == base.chat_template, "vLLM renders the prompts with the saved template"


@pytest.mark.integration
def test_the_model_serves_the_revisions_strategy_on_vllm(trained, ray_session, cache_dir, tmp_path):
    from ttsearch.actors.generator import create_generator_replicas

    from ttsearch.runtime.replicas import stop_replicas
    from ttsearch.sweep.cells import run_sweep

    cfg = load_config(
        CONF_DIR / "revision_prompt.yaml",
        [
            f"generator.model={trained.model_dir}",
            "generator.max_model_len=1024",
            "generator.cpu_kv_cache_gib=0.25",
            "generator.dtype=float32",
            "verifier.kind=majority",
            "data.limit=1",
            "data.shards=1",
            "budgets=[2]",
            "seeds=[0]",
            "search.max_solution_tokens=16",
            f"output_dir={tmp_path / 'sweep'}",
            f"cache_dir={cache_dir}",
            "strategies=[{name: revisions, revision_length: 2, revision_window: 2, selections: [majority]}]",
        ],
    )
    replicas = create_generator_replicas(cfg.generator, cache_dir)
    try:
        [row] = run_sweep(cfg, replicas=(replicas, [])).to_pylist()
    finally:
        stop_replicas(replicas, [])
    assert row["error"] is None, row["error"]
    assert row["strategy_label"] == "revisions(T=2,w=2)/majority"
    assert row["samples"] == 2 and row["generated_tokens"] > 0 and row["prompt_tokens"] > 0
