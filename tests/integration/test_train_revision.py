"""`ttsearch train-revision`: the examples as the generator reads them, and end to end at toy scale: a
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

import pytest
from ttsearch.pipelines.train_revision import run_train_revision

from tests.fixtures import save_tiny_llama, trajectory, write_revision_data
from ttsearch.config import CONF_DIR, load_config
from ttsearch.search.requests import Prompt, chat_prompt_ids
from ttsearch.training.finetune import TrainReport
from ttsearch.training.labels import is_heldout
from ttsearch.training.revision_train_data import (
    IGNORE_INDEX,
    RevisionSummary,
    RevisionTrainDataError,
    build_examples,
    tokenize,
)


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
    print(trained)
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
    from ttsearch.sweep.jobs import run_sweep

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
