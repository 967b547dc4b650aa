"""Qwen2.5-Math-PRM on vLLM's pooling runner, in a Ray replica: the tiny random-init checkpoint in the real layout
(tests/fixtures.py: `build_qwen_prm_checkpoint`) scored on a vLLM-CPU pooling engine and on transformers: the same
scores, incremental scoring equals full rescoring, and the prefix cache serves the earlier steps.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ITEMS, assert_scores_close, build_qwen_prm_checkpoint
from tests.fixtures import qwen_prm_config as prm_config
from ttsearch.search.requests import Score

QUESTION = "Find $x$ if $3x - 4 = 11$."

STEPS = (
    "Add 4 to both sides of the equation: $3x = 15$, since adding the same number keeps it balanced.",
    "Divide both sides by 3 to isolate the variable: $x = 5$, which is the only solution.",
    "Check the result by substitution: $3 \\cdot 5 - 4 = 11$, which holds.",
    "So the answer is $\\boxed{5}$.",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("qwen_prm")
    build_qwen_prm_checkpoint(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def reference(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The transformers scorer, loading the checkpoint's remote code as it loads the real model's."""
    from ttsearch.engines.prm import PRMScorer

    return PRMScorer.load(prm_config(checkpoint, "transformers"), cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def replica(ray_session: Any, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The replica `verifier.backend: vllm` starts for qwen_prm: a Ray actor with a vLLM-CPU pooling engine of
    its own (the engine refuses to start if vLLM turned prefix caching off). In an actor, as in production, so
    the engine's processes and sockets end with it rather than with the test process."""
    from ttsearch.actors.verifier import create_verifier_replicas

    cache = str(tmp_path_factory.mktemp("cache"))
    (handle,) = create_verifier_replicas(replace(prm_config(checkpoint, "vllm"), replicas=1), cache)
    yield handle
    ray_session.kill(handle)


def score(ray: Any, replica: Any, batch: list[Score]) -> dict[int, Any]:
    return dict(ray.get(ref) for ref in replica.score.remote(batch))


@pytest.mark.integration
def test_pooling_scores_equal_the_transformers_scorer(ray_session: Any, replica: Any, reference: Any) -> None:
    assert ray_session.get(replica.score_stats.remote())["num_parameters"] == reference.num_parameters
    batch = [*ITEMS, Score(QUESTION, STEPS), Score("Empty?", ())]
    results = score(ray_session, replica, batch)
    expected = reference.score_batch(batch)
    for index, item in enumerate(batch):
        assert len(results[index].step_scores) == len(item.steps)
        assert_scores_close(results[index].step_scores, expected[index].step_scores, atol=1e-4)
    # Random init must still tell steps apart, or the comparison would prove nothing.
    assert len({round(s, 3) for r in expected for s in r.step_scores}) > 5


@pytest.mark.integration
def test_incremental_scores_equal_full_rescoring_and_hit_the_prefix_cache(ray_session: Any, replica: Any) -> None:
    assert ray_session.get(replica.reset_prefix_cache.remote())
    before = ray_session.get(replica.score_stats.remote())
    steps = [Score(QUESTION, STEPS[:t], scored_steps=t - 1) for t in range(1, len(STEPS) + 1)]
    incremental = [score(ray_session, replica, [item])[0] for item in steps]
    full = score(ray_session, replica, [Score(QUESTION, STEPS)])[0]
    assert [len(r.step_scores) for r in incremental] == [1] * len(STEPS)
    assert_scores_close([r.step_scores[0] for r in incremental], full.step_scores, atol=1e-4)
    # Each read after the first finds the earlier steps in the cache (whole 32-token blocks only) and
    # computes only the new step, its tag and the earlier read's last partly filled block.
    assert incremental[0].cached_tokens == 0
    for previous, r in itertools.pairwise(incremental):
        assert r.cached_tokens > 0 and r.tokens - r.cached_tokens < (r.tokens - previous.tokens) + 32
    assert full.cached_tokens > 0  # the full rescoring's reads all come from the incremental ones' blocks
    stats = ray_session.get(replica.score_stats.remote())
    assert set(stats) == {"calls", "items", "scored_steps", "tokens", "cached_tokens", "busy_s", "num_parameters"}
    assert stats["scored_steps"] - before["scored_steps"] == 2 * len(STEPS)
    assert stats["cached_tokens"] - before["cached_tokens"] == sum(r.cached_tokens for r in [*incremental, full])
