"""Verifier tests on the embedded model and in a Ray replica; the tiny random-init PRMs of the real architectures
are built by tests/fixtures.py (`build_checkpoint`), as in tests/unit/engines/test_verifier.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ITEMS, assert_scores_close, verifier_checkpoints
from ttsearch.config import EMBEDDED_MODEL, VerifierConfig
from ttsearch.engines.prm import PRMScorer
from ttsearch.search.requests import Score


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return verifier_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def judge(cache_dir: str) -> PRMScorer:
    return PRMScorer.load(VerifierConfig(kind="lm_judge", model=EMBEDDED_MODEL), cache_dir=cache_dir)


@pytest.mark.integration
def test_lm_judge_on_embedded_model(judge: PRMScorer) -> None:
    tokenizer = judge.adapter.tokenizer
    assert {tokenizer.decode([i]) for i in judge.adapter.good_ids} == {"Yes", " Yes"}
    assert {tokenizer.decode([i]) for i in judge.adapter.bad_ids} == {"No", " No"}
    results = judge.score_batch(ITEMS)
    for item, result in zip(ITEMS, results, strict=True):
        assert len(result.step_scores) == len(item.steps)
        assert all(0.0 <= s <= 1.0 for s in result.step_scores)
    alone = judge.score_batch([ITEMS[2]])[0]
    assert_scores_close(alone.step_scores, results[2].step_scores, atol=1e-4)


@pytest.mark.integration
def test_replica_streams_every_item(ray_session: Any, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from ttsearch.actors.verifier import create_verifier_replicas

    model = str(checkpoints["math_shepherd"])
    cfg = VerifierConfig(  # several passes
        kind="math_shepherd", model=model, backend="transformers", num_cpus=1, max_batch_tokens=256
    )
    (replica,) = create_verifier_replicas(cfg, cache_dir=str(tmp_path))
    batch = [*ITEMS, Score("Empty?", ())]
    streamed = [ray_session.get(ref) for ref in replica.score.remote(batch)]
    assert sorted(index for index, _ in streamed) == list(range(len(batch)))
    expected = PRMScorer.load(cfg, cache_dir=str(tmp_path)).score_batch(batch)
    for index, result in streamed:
        assert result.tokens == expected[index].tokens
        assert_scores_close(result.step_scores, expected[index].step_scores)
    stats = ray_session.get(replica.score_stats.remote())
    assert stats["calls"] == 1 and stats["items"] == len(batch)
    assert stats["tokens"] == sum(r.tokens for r in expected) and stats["num_parameters"] > 0
    ray_session.kill(replica)
