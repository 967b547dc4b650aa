"""Failure handling of the ready queue, with scripted replicas that die, reject, raise or hang.

Every test keeps many problems in flight (max_in_flight >= 8), so a failure that leaked into batch
mates would show up as collateral errors.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures import DyingBackend, HangingBackend, ScriptedBackend, jobs, length_scorer, pools, step_generator
from ttsearch.config import StrategySpec
from ttsearch.search.outcomes import Failure, JobOutcome, ReplicasUnavailable
from ttsearch.search.requests import Generate, Prompt
from ttsearch.search.scheduler import ReplicaFailed, RetryPolicy, Scheduler

FAST = RetryPolicy(max_request_retries=3, replica_wait_s=0.5, health_check_interval_s=0.01, call_timeout_s=5.0)
BEAM = StrategySpec.of(name="beam", beam_width=2)
PROBLEMS = 12


def run_all(scheduler: Scheduler, job_iter, timeout: float = 10.0) -> list[JobOutcome]:
    """Collect every outcome; a hang fails the test instead of blocking the suite."""

    async def collect():
        return [outcome async for outcome in scheduler.run(job_iter)]

    async def bounded():
        return await asyncio.wait_for(collect(), timeout)

    return asyncio.run(bounded())


def fault_free() -> dict[str, JobOutcome]:
    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer)
    return {o.key: o for o in run_all(Scheduler(pools([generator], [verifier]), 8), jobs(PROBLEMS, BEAM))}


def assert_same_as_fault_free(outcomes: list[JobOutcome], failed: str | None = None) -> None:
    """Every problem but `failed` exactly once, each with the candidates of a run without faults."""
    reference = fault_free()
    assert sorted(o.key for o in outcomes) == sorted(key for key in reference if key != failed), "every problem once"
    for outcome in outcomes:
        assert outcome.error is None and outcome.failure is None, outcome.error
        assert outcome.value == reference[outcome.key].value, "a replay is the same sample"


def test_a_replica_that_dies_mid_batch_loses_nothing_and_leaves_the_rotation():
    dying = DyingBackend(step_generator(), results_before_death=5)
    healthy = ScriptedBackend(step_generator())
    scheduler = Scheduler(pools([dying, healthy], [ScriptedBackend(length_scorer)], max_batch=8), 8, retry=FAST)
    outcomes = run_all(scheduler, jobs(PROBLEMS, BEAM))
    assert_same_as_fault_free(outcomes)
    assert dying.dead and dying.calls_while_dead == 0, "a dead replica is never picked again"
    assert dying.checks > 0 and healthy.batches


def test_a_restarted_replica_comes_back_into_rotation():
    dying = DyingBackend(step_generator(), results_before_death=3, checks_to_restart=2)
    slow_healthy = ScriptedBackend(step_generator(), delay=0.005)
    scheduler = Scheduler(pools([dying, slow_healthy], [ScriptedBackend(length_scorer)], max_batch=4), 8, retry=FAST)
    outcomes = run_all(scheduler, jobs(PROBLEMS, BEAM))
    assert_same_as_fault_free(outcomes)
    assert not dying.dead and dying.checks == 3
    assert dying.batches_after_restart > 0, "the restarted replica served again"


def test_a_dead_verifier_replica_is_survived_too():
    verifiers = [DyingBackend(length_scorer, results_before_death=4), ScriptedBackend(length_scorer)]
    scheduler = Scheduler(pools([ScriptedBackend(step_generator())], verifiers, max_batch=4), 8, retry=FAST)
    assert_same_as_fault_free(run_all(scheduler, jobs(PROBLEMS, BEAM)))


def test_a_run_torn_down_while_a_health_check_fails_does_not_hang():
    """The flake of the dead-verifier test, made deterministic: the run ends (cancelling the health-check loop)
    in the same tick as a check fails. With Python 3.11's `asyncio.wait_for` around the check, the check's error
    replaced the cancellation, the loop went on checking a replica that never comes back and `run` hung."""

    class CancelledWhileChecking(DyingBackend):
        async def check(self) -> None:
            self.checks += 1
            for task in asyncio.all_tasks():  # what `Scheduler.run`'s teardown does, at the worst moment
                if task.get_name() == "verifier replica 0 health check":
                    task.cancel()
            raise ReplicaFailed("scripted: actor is restarting")

    dying = CancelledWhileChecking(length_scorer, results_before_death=4)
    slow_healthy = ScriptedBackend(length_scorer, delay=0.005)  # the run outlasts many health-check intervals
    scheduler = Scheduler(pools([ScriptedBackend(step_generator())], [dying, slow_healthy], max_batch=4), 8, retry=FAST)
    assert_same_as_fault_free(run_all(scheduler, jobs(PROBLEMS, BEAM)))
    assert dying.dead and dying.checks == 1, "a cancelled health-check loop stops, it does not check again"


def test_every_replica_gone_stops_the_run_with_a_clear_error_instead_of_hanging():
    generators = [DyingBackend(step_generator(), results_before_death=2) for _ in range(2)]
    scheduler = Scheduler(pools(generators, [ScriptedBackend(length_scorer)], max_batch=4), 8, retry=FAST)
    with pytest.raises(ReplicasUnavailable, match="no generator replica has answered for 0.5 s"):
        run_all(scheduler, jobs(PROBLEMS, BEAM))


def test_retries_are_bounded_and_the_problem_fails_as_infrastructure():
    always_failing = DyingBackend(step_generator(), results_before_death=0, checks_to_restart=0)
    always_failing.check = _revive(always_failing)  # passes every check, dies on every call
    scheduler = Scheduler(pools([always_failing], [ScriptedBackend(length_scorer)]), 8, retry=FAST)
    outcomes = run_all(scheduler, jobs(PROBLEMS, BEAM))
    assert len(outcomes) == PROBLEMS
    for outcome in outcomes:
        assert outcome.failure is Failure.INFRASTRUCTURE and outcome.value is None
        assert "gave up after 4 failed calls (3 retries)" in outcome.error and "actor died" in outcome.error


def _revive(backend: DyingBackend):
    async def check() -> None:
        backend.checks += 1
        backend.dead, backend.results_left = False, 0

    return check


def test_a_rejected_request_fails_only_its_problem_while_its_batch_mates_are_served():
    generator = ScriptedBackend(step_generator(), reject_when=lambda r: r.prompt.user == "question 3")
    scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)]), 8, retry=FAST)
    outcomes = {o.key: o for o in run_all(scheduler, jobs(PROBLEMS, BEAM))}
    assert outcomes["p3"].failure is Failure.PROBLEM and "generator rejected a request" in outcomes["p3"].error
    first = generator.batches[0]
    assert "question 3" in {r.prompt.user for r in first} and len(first) == 8, "the bad request shared a batch"
    assert_same_as_fault_free([o for key, o in outcomes.items() if key != "p3"], failed="p3")


def test_a_request_that_makes_its_call_raise_is_isolated_and_fails_only_its_problem():
    generator = ScriptedBackend(step_generator(), fail_when=lambda r: r.prompt.user == "question 5")
    scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)]), 8, retry=FAST)
    outcomes = {o.key: o for o in run_all(scheduler, jobs(PROBLEMS, BEAM))}
    poison = outcomes.pop("p5")
    assert poison.failure is Failure.PROBLEM
    assert "generator replica 0 raised" in poison.error and "scripted replica failure" in poison.error
    alone = [batch for batch in generator.batches if any(r.prompt.user == "question 5" for r in batch)][1:]
    assert len(alone) == 3 and all(len(batch) == 1 for batch in alone), "replayed alone, within its retries"
    assert_same_as_fault_free(list(outcomes.values()), failed="p5")


def test_a_hung_call_times_out_and_its_requests_are_served_elsewhere():
    hanging = HangingBackend(step_generator(), hangs=1)
    retry = RetryPolicy(max_request_retries=3, replica_wait_s=5, health_check_interval_s=0.01, call_timeout_s=0.05)
    generators = [hanging, ScriptedBackend(step_generator())]
    scheduler = Scheduler(pools(generators, [ScriptedBackend(length_scorer)]), 8, retry=retry)
    assert_same_as_fault_free(run_all(scheduler, jobs(PROBLEMS, BEAM)))
    assert hanging.hangs == 0 and hanging.checks == 1


def test_requests_of_a_failed_problem_leave_the_queue():
    def two_requests(user: str):
        prompt = Prompt(system="", user=user)
        yield [Generate(prompt, n=1, temperature=0, max_tokens=1, stop=("\n\n",), seed=i) for i in range(2)]

    generator = ScriptedBackend(step_generator(), reject_when=lambda r: r.seed == 0 and r.prompt.user == "bad")
    generator_pool = pools([generator], [ScriptedBackend(length_scorer)], max_batch=1, max_outstanding=1)
    outcomes = run_all(Scheduler(generator_pool, 8, retry=FAST), [("bad", two_requests("bad"))])
    assert outcomes[0].failure is Failure.PROBLEM
    assert [r.seed for batch in generator.batches for r in batch] == [0], "its second request was never sent"


def test_an_error_inside_the_scheduler_ends_the_run_loudly():
    class WrongIndex(ScriptedBackend):
        async def submit(self, batch):
            yield len(batch) + 7, self.respond(batch[0])

    class EndsEarly(ScriptedBackend):
        async def submit(self, batch):
            return
            yield

    for backend, error in ((WrongIndex(step_generator()), KeyError), (EndsEarly(step_generator()), RuntimeError)):
        scheduler = Scheduler(pools([backend], [ScriptedBackend(length_scorer)]), 8, retry=FAST)
        with pytest.raises(error):
            run_all(scheduler, jobs(PROBLEMS, BEAM))
