"""`ttsearch train-prm` end to end at toy scale: a random-init tiny Llama with the embedded tokenizer, trained in
Ray Train on a `ttsearch label` directory and a ProcessBench-style file, then loaded and read by the serving path.

One training run (two data-parallel CPU workers) serves every test here; the checks that need no model and fail
before Ray starts are in tests/unit/training/test_train_prm.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from ttsearch.pipelines.train_prm import run_train_prm

from tests.fixtures import save_tiny_llama
from tests.fixtures import train_prm_overrides as overrides
from ttsearch.config import VerifierConfig, load_config
from ttsearch.search.requests import Score
from ttsearch.training.finetune import FineTuneError, TrainReport
from ttsearch.training.labels import LABEL_SCHEMA, label_store

RIGHT, WRONG = "so the step is right", "so the step is wrong"


def label_rows(num_questions: int) -> pa.Table:
    """Two samples per question; a step's label is told by its text, so a model can fit it."""
    rows = []
    for q in range(num_questions):
        for sample, (soft, text) in enumerate([((1.0, 0.75), (RIGHT, RIGHT)), ((0.0, None, 0.0), (WRONG,) * 3)]):
            rows.append(
                {name: None for name in LABEL_SCHEMA.names}
                | {
                    "unique_id": f"toy/{q}",
                    "question": f"What is {q} + {q}?",
                    "reference": str(2 * q),
                    "source": "sample",
                    "sample": sample,
                    "finished": True,
                    "shard": 0,
                    "steps": [f"Step {i}: {q} + {q}, {t}." for i, t in enumerate(text)],
                    "soft_labels": list(soft),
                    "hard_labels": [None if s is None else s > 0 for s in soft],
                }
            )
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


def first_error_items(num_items: int) -> list[dict]:
    return [
        {
            "id": f"bench-{i}",
            "problem": f"What is {i} times 3?",
            "label": i % 3 - 1,
            "steps": [f"Multiply {i} by 3, {RIGHT if j < i % 3 - 1 or i % 3 == 0 else WRONG}." for j in range(2)],
        }
        for i in range(num_items)
    ]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, cache_dir) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), cache_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[Path]:
    """12 questions x 2 samples of `ttsearch label` rows and 6 first-error items."""
    root = tmp_path_factory.mktemp("prm_data")
    label_store(root / "labels").write_shard(0, 1, label_rows(12))
    (root / "bench.json").write_text(json.dumps(first_error_items(6)))
    return [root / "labels", root / "bench.json"]


@pytest.fixture(scope="module")
def trained(ray_session, base_model, data, tmp_path_factory) -> TrainReport:
    """One data-parallel run on two CPU workers, long enough (36 steps at a high learning rate) to overfit."""
    cfg = load_config(
        None,
        overrides(
            data,
            base_model,
            tmp_path_factory.mktemp("prm_run"),
            "prm.heldout_fraction=0.25",
            "prm.epochs=12",
            "prm.learning_rate=0.03",
            "prm.batch_size=4",
            "prm.num_workers=2",
            "prm.logging_steps=4",
            "prm.eval_steps=12",
            "prm.save_steps=18",
        ),
    )
    return run_train_prm(cfg)


@pytest.mark.integration
def test_refuses_another_trainings_checkpoints(base_model, data, tmp_path):
    """Ray Train would resume the newest checkpoint under the same run name: only the same training may."""
    (tmp_path / "checkpoints" / "train").mkdir(parents=True)
    (tmp_path / "checkpoints" / "run.json").write_text(json.dumps({"prm": {"seed": 1}}))
    with pytest.raises(FineTuneError, match=r"holds checkpoints of another training \(it differs in: .*prm.seed"):
        run_train_prm(load_config(None, overrides(data, base_model, tmp_path)))


@pytest.mark.integration
def test_outputs_and_serving(trained, cache_dir):
    from ttsearch.engines.prm import PRMScorer

    out = Path(trained.output_dir)
    assert (trained.train.num_solutions, trained.heldout.num_solutions) == (17, 13)  # the stable hash split of ids
    assert trained.train.num_steps + trained.heldout.num_steps == 12 * 4 + 10  # no null or post-error label
    assert trained.num_dropped == 0 and not trained.resumed
    assert trained.num_steps == 12 * 3  # epochs x ceil(ceil(17 solutions / 2 workers) / batch of 4)
    assert (out / "loss_curve.png").stat().st_size > 0
    saved = json.loads((out / "train.json").read_text())
    assert saved["num_steps"] == trained.num_steps and saved["config"]["num_workers"] == 2
    assert all(math.isfinite(entry["loss"]) for entry in trained.log_history if "loss" in entry)
    assert trained.final_eval_loss is not None and math.isfinite(trained.final_eval_loss)
    assert trained.log_history[-1]["step"] == trained.num_steps  # the final step's losses are logged
    assert len(list((out / "checkpoints" / "train").glob("checkpoint_*/checkpoint/model.safetensors"))) == 2
    assert not list((out / "model").glob("optimizer*"))
    print(trained)

    cfg = VerifierConfig(kind="math_shepherd", model=trained.model_dir, backend="transformers")
    scorer = PRMScorer.load(cfg, cache_dir)
    question = "What is 3 + 3?"
    steps = tuple(f"Step {i}: 3 + 3, {text}." for i, text in enumerate((RIGHT, RIGHT, WRONG)))
    [result] = scorer.score_batch([Score(question, steps)])
    assert len(result.step_scores) == 3 and all(0 <= s <= 1 for s in result.step_scores)
    # Served at the positions and tokens training fitted: the labels' direction shows in the scores.
    assert min(result.step_scores[:2]) > result.step_scores[2]


@pytest.mark.integration
def test_training_fits_the_labels(trained):
    """Overfitting a handful of solutions: the train loss must fall well below where it started (ln 2 at init)."""
    assert trained.first_train_loss == pytest.approx(math.log(2), abs=0.1)
    assert trained.final_train_loss < 0.5 * trained.first_train_loss
