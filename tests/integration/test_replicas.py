"""Several generator and verifier replicas on CPU: the load spreads and the content does not change."""

from __future__ import annotations

import asyncio

import pytest

from ttsearch.config import DataConfig, SchedulerConfig, SearchConfig, StrategySpec
from ttsearch.runtime.backends import ActorBackend, replica_pools
from ttsearch.search.requests import Generate, Prompt, Score
from ttsearch.search.scheduler import Scheduler
from ttsearch.search.strategies import SearchContext, start
from ttsearch.sweep.data import load_problems

pytestmark = pytest.mark.integration

SEARCH = SearchConfig(max_steps=2, max_step_tokens=24, max_solution_tokens=48)


def collect(backend, batch):
    async def run():
        return dict([item async for item in backend.submit(batch)])

    return asyncio.run(run())


def stats(ray, handles, method="stats"):
    return [ray.get(getattr(h, method).remote()) for h in handles]


def test_search_spreads_over_two_generator_and_two_verifier_replicas(
    ray_session, generator_replicas, lm_judge_replicas
):
    before_g, before_v = stats(ray_session, generator_replicas), stats(ray_session, lm_judge_replicas, "score_stats")
    problems = load_problems(DataConfig().path, limit=4)
    pools = replica_pools(generator_replicas, lm_judge_replicas, "lm_judge", SchedulerConfig(max_batch_sequences=4))
    jobs = [
        (
            p["unique_id"],
            start(
                SearchContext(p["unique_id"], p["problem"], SEARCH, 0), 4, StrategySpec.of(name="beam", beam_width=2)
            ),
        )
        for p in problems
    ]

    async def run():
        return [o async for o in Scheduler(pools, max_in_flight=4).run(jobs)]

    outcomes = asyncio.run(run())
    assert len(outcomes) == 4 and all(o.error is None and o.value for o in outcomes)
    after_g, after_v = stats(ray_session, generator_replicas), stats(ray_session, lm_judge_replicas, "score_stats")
    assert all(a["requests"] > b["requests"] for a, b in zip(after_g, before_g, strict=True)), "both generators served"
    assert all(a["items"] > b["items"] for a, b in zip(after_v, before_v, strict=True)), "both verifiers served"


def test_two_verifier_replicas_score_exactly_like_one(lm_judge_replicas):
    batch = [Score(question="What is 2+3?", steps=("2+3 = 5", f"So the answer is \\boxed{{{k}}}")) for k in range(8)]
    first, second = (ActorBackend(handle, "score") for handle in lm_judge_replicas)
    by_one = collect(first, batch)
    by_two = {**collect(first, batch[:4]), **{i + 4: r for i, r in collect(second, batch[4:]).items()}}
    for i in range(len(batch)):
        assert by_one[i].step_scores == pytest.approx(by_two[i].step_scores, abs=1e-5)


def test_two_generator_replicas_sample_the_same_text_for_the_same_seed(generator_replicas):
    """Seeded single samples match across replicas. (On CPU, vLLM's numerics depend on batch composition and
    prefix-cache state, so this is as far as "identical content" goes: see README, Throughput benchmark.)"""
    batch = [
        Generate(
            prompt=Prompt(system="", user="Count to five."),
            n=1,
            temperature=0.8,
            max_tokens=24,
            seed=seed,
            stop=("\n\n",),
        )
        for seed in (11, 12, 13)
    ]
    backends = [ActorBackend(handle, "generate") for handle in generator_replicas]
    texts = []
    for backend in backends:
        for request in batch:  # one at a time, after a warm-up: the same conditions on both replicas
            collect(backend, [request])
        texts.append([collect(backend, [request])[0].completions[0].text for request in batch])
    assert texts[0] == texts[1]
