"""The online search service against scripted backends: a fixed strategy, the compute-optimal plan, and the
refusals that must come before any compute."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures import SameAnswers, ScriptedBackend, length_scorer, pools, step_generator
from ttsearch.analysis.policy import Policy, SolveError
from ttsearch.config import SearchConfig, StrategySpec
from ttsearch.search.outcomes import ModelSizes
from ttsearch.search.scheduler import Scheduler
from ttsearch.serving.service import SearchService, SearchSettings

SEARCH = SearchConfig(system_prompt="sys", max_steps=4)
POLICY = Policy(
    choices={(b, k): ("beam(M=2)/weighted" if k == 2 else "best_of_n/majority") for b in (2, 4) for k in (1, 2)},
    difficulty="predicted",
    estimation_samples=2,
    thresholds=(0.5,),
)
STRATEGIES = [
    StrategySpec.of(name="best_of_n", selections=["majority", "weighted"]),
    StrategySpec.of(name="beam", beam_width=2),
]


def service(policy: Policy | None = POLICY) -> tuple[SearchService, ScriptedBackend]:
    generator = ScriptedBackend(step_generator())
    scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)]), 1)
    sizes = ModelSizes(generator=100, verifier=100)
    return SearchService(scheduler, SEARCH, sizes, SameAnswers(), policy, STRATEGIES), generator  # type: ignore[arg-type]


def answer(svc: SearchService, settings: SearchSettings):
    async def go():
        try:
            return await svc.answer("What is 1 - 1?", settings)
        finally:
            await svc.close()

    return asyncio.run(go())


def test_a_fixed_strategy_returns_the_chosen_solution_and_its_cost():
    svc, _ = service()
    result = answer(svc, SearchSettings(budget=4, strategy=StrategySpec.of(name="beam", beam_width=2)))
    assert result.strategy_label == "beam(M=2)/weighted" and result.search_budget == 4
    assert result.solution and "\\boxed" in result.solution and result.answer in ("0", "1")
    assert result.estimation.samples == 0 and result.search.samples >= 4 and result.search.scored_solutions > 0
    assert result.flops == sum(svc.sizes.flops(result.search)) and result.difficulty_bin is None


def test_compute_optimal_spends_estimation_then_the_policys_choice():
    svc, _ = service()
    result = answer(svc, SearchSettings(budget=6, compute_optimal=True))
    assert result.estimation.samples == 2 and result.search_budget == 4, "6 - 2 estimation samples leaves 4"
    assert result.difficulty_bin == POLICY.bin_of(result.difficulty_score)
    assert result.strategy_label == POLICY.strategy(4, result.difficulty_score)
    assert result.usage.samples == result.estimation.samples + result.search.samples


@pytest.mark.parametrize(("policy", "budget", "message"), [(None, 6, "needs a policy"), (POLICY, 3, "at least 4")])
def test_compute_optimal_refusals_come_before_any_generation(policy, budget, message):
    svc, generator = service(policy)
    with pytest.raises(SolveError, match=message):
        answer(svc, SearchSettings(budget=budget, compute_optimal=True))
    assert generator.batches == [], "nothing was generated for a request refused up front"


def test_a_stopped_ready_queue_is_an_infrastructure_failure_not_a_crash():
    """Every replica gone for too long stops the scheduler: the question fails as INFRASTRUCTURE (a 503 with
    Retry-After in the service), not with the scheduler's own exception."""
    from tests.fixtures import DyingBackend
    from ttsearch.search.outcomes import Failure
    from ttsearch.search.scheduler import ReplicaPool, RetryPolicy
    from ttsearch.serving.service import SearchFailed

    dead = DyingBackend(step_generator(), results_before_death=0)
    limits = {"max_outstanding": 4096, "max_batch": 1024}
    pools_ = {
        "generator": ReplicaPool([dead], **limits),
        "verifier": ReplicaPool([ScriptedBackend(length_scorer)], **limits),
    }
    retry = RetryPolicy(max_request_retries=100, replica_wait_s=0.05, health_check_interval_s=0.01)
    svc = SearchService(Scheduler(pools_, 1, retry=retry), SEARCH, ModelSizes(100, 100), SameAnswers())
    with pytest.raises(SearchFailed, match="ready queue stopped") as caught:
        answer(svc, SearchSettings(budget=2))
    assert caught.value.failure == Failure.INFRASTRUCTURE and svc.scheduler.stopped
