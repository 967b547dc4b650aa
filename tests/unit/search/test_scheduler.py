"""The ready queue against scripted backends: batching across problems, routing, isolation."""

from __future__ import annotations

import asyncio

from tests.fixtures import SEARCH, ScriptedBackend, completions, jobs, length_scorer, pools, step_generator
from ttsearch.config import StrategySpec
from ttsearch.search.outcomes import JobOutcome, Usage
from ttsearch.search.requests import Completion, Generate, GenerateResult, Prompt, Request, Score, ScoreResult
from ttsearch.search.scheduler import ReplicaPool, Scheduler
from ttsearch.search.strategies import SearchContext, start

BEAM = StrategySpec.of(name="beam", beam_width=2)


def run_all(scheduler: Scheduler, job_iter) -> list[JobOutcome]:
    async def collect():
        return [outcome async for outcome in scheduler.run(job_iter)]

    return asyncio.run(collect())


def test_requests_of_different_problems_share_one_generator_call():
    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer)
    scheduler = Scheduler(pools([generator], [verifier]), max_in_flight=8)
    outcomes = run_all(scheduler, jobs(5, StrategySpec.of(name="beam", beam_width=2)))
    assert sorted(o.key for o in outcomes) == [f"p{i}" for i in range(5)]
    first = generator.batches[0]
    assert len(first) == 5 and len({r.prompt.user for r in first}) == 5, "one call carries all 5 problems' first step"
    assert all(o.error is None and o.value for o in outcomes)
    assert scheduler.stats.max_batch["generator"] == 5


def test_results_match_running_each_problem_alone():
    spec = StrategySpec.of(name="lookahead", beam_width=2, lookahead=1)
    together = run_all(
        Scheduler(pools([ScriptedBackend(step_generator())], [ScriptedBackend(length_scorer)]), 16), jobs(6, spec)
    )
    alone = run_all(
        Scheduler(pools([ScriptedBackend(step_generator())], [ScriptedBackend(length_scorer)]), 1), jobs(6, spec)
    )
    by_key = {o.key: o for o in alone}
    for outcome in together:
        assert outcome.value == by_key[outcome.key].value
        assert outcome.usage == by_key[outcome.key].usage


def test_max_in_flight_bounds_problems_and_batches_are_capped():
    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer)
    scheduler = Scheduler(pools([generator], [verifier], max_batch=8), max_in_flight=3)
    outcomes = run_all(scheduler, jobs(10, StrategySpec.of(name="best_of_n")))
    assert len(outcomes) == 10
    assert all(len({r.prompt.user for r in batch}) <= 3 for batch in generator.batches)
    assert all(sum(r.n for r in batch) <= 8 for batch in generator.batches)


def test_least_loaded_dispatch_spreads_over_replicas():
    generators = [ScriptedBackend(step_generator()) for _ in range(2)]
    verifiers = [ScriptedBackend(length_scorer) for _ in range(2)]
    scheduler = Scheduler(pools(generators, verifiers, max_batch=4), max_in_flight=8)
    run_all(scheduler, jobs(8, StrategySpec.of(name="best_of_n")))
    assert all(g.batches for g in generators) and all(v.batches for v in verifiers)


def problem_of(request: Request) -> str:
    return request.prompt.user if isinstance(request, Generate) else request.question


def problems_served(backend: ScriptedBackend, kind: type) -> set[str]:
    return {problem_of(r) for batch in backend.batches for r in batch if isinstance(r, kind)}


def test_each_problem_stays_on_one_replica_while_it_has_room():
    """Prefix affinity: a job's requests go where its prompt and beams are cached, and new jobs still spread."""
    generators = [ScriptedBackend(step_generator(), delay=0.001) for _ in range(2)]
    verifiers = [ScriptedBackend(length_scorer, delay=0.001) for _ in range(2)]
    run_all(Scheduler(pools(generators, verifiers, max_batch=8), max_in_flight=8), jobs(8, BEAM))
    for replicas in (generators, verifiers):
        served = [problems_served(r, Generate if replicas is generators else Score) for r in replicas]
        assert all(served), "both replicas serve"
        assert not served[0] & served[1], "no problem is split over two replicas"


def test_the_judge_on_the_generator_replicas_scores_where_the_step_was_generated():
    def respond(request: Request):
        return step_generator()(request) if isinstance(request, Generate) else length_scorer(request)

    replicas = [ScriptedBackend(respond, delay=0.001) for _ in range(2)]
    colocated = {
        "generator": ReplicaPool(replicas, max_outstanding=4096, max_batch=8),
        "verifier": ReplicaPool(replicas, max_outstanding=4096, max_batch=8, homes="generator"),
    }
    outcomes = run_all(Scheduler(colocated, max_in_flight=8), jobs(8, BEAM))
    assert all(o.error is None and o.value for o in outcomes)
    for replica in replicas:
        assert problems_served(replica, Score) <= problems_served(replica, Generate)
    assert all(problems_served(r, Score) for r in replicas)


def test_a_job_leaves_its_home_only_when_that_pays():
    pool = ReplicaPool([ScriptedBackend(length_scorer) for _ in range(3)], max_outstanding=100, max_batch=100)
    pool.load = [60, 20, 40]
    assert pool.may_serve(0, home=0, taking=0), "home always serves its own jobs"
    assert pool.may_serve(1, home=0, taking=0), "home 40 sequences beyond: move"
    assert not pool.may_serve(1, home=0, taking=10), "not once this call brings the gap within the slack"
    assert not pool.may_serve(2, home=0, taking=0), "20 beyond: the cache is worth the wait"
    # Without a usable home a job goes where the load is lowest, give or take the slack.
    assert pool.may_serve(1, home=None, taking=0) and pool.may_serve(2, home=None, taking=0)
    assert not pool.may_serve(0, home=None, taking=0)
    pool.in_rotation[2] = False
    assert pool.may_serve(1, home=2, taking=0), "a home out of rotation is no home"
    pool.load[0] = 100
    assert pool.may_serve(1, home=0, taking=90), "a full home is no home"


def test_a_full_home_replica_hands_its_jobs_to_one_with_room():
    """Each beam step asks for 2 beams x 2 samples = 4 sequences, a replica's whole room: three jobs on two
    replicas cannot all wait for their homes, and none waits while another replica has room."""
    generators = [ScriptedBackend(step_generator(), delay=0.001) for _ in range(2)]
    scheduler = Scheduler(pools(generators, [ScriptedBackend(length_scorer)], max_outstanding=4), max_in_flight=3)
    outcomes = run_all(scheduler, jobs(3, BEAM))
    assert all(o.error is None and o.value for o in outcomes)
    assert problems_served(generators[0], Generate) & problems_served(generators[1], Generate)


def test_usage_counts_every_sample_and_token():
    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer)
    [outcome] = run_all(
        Scheduler(pools([generator], [verifier]), 4), jobs(1, StrategySpec.of(name="beam", beam_width=2))
    )
    samples = sum(r.n for batch in generator.batches for r in batch)
    scored = sum(len(batch) for batch in verifier.batches)
    assert outcome.usage.samples == samples
    assert outcome.usage.generated_tokens == 5 * samples  # the fake gives 5 tokens per completion
    assert outcome.usage.prompt_tokens == 10 * sum(len(b) for b in generator.batches)
    assert outcome.usage.scored_solutions == scored and outcome.usage.verifier_tokens == 3 * scored


def test_a_greedy_request_is_billed_the_one_sample_decoded_and_counts_its_n_generations():
    """An engine decodes a greedy request once and copies it n times (`Generate.as_requested`): the copies cost
    nothing, so they are not billed, but they are generations the strategy asked for."""

    def engine(request: Request):
        assert isinstance(request, Generate)
        decoded = tuple(Completion(f"s{i}", 7 + i, "stop") for i in range(request.decoded_samples))
        return GenerateResult(request.as_requested(decoded), prompt_tokens=10, cached_prompt_tokens=4)

    def one_step():
        prompt = Prompt(system="", user="q")
        yield [Generate(prompt, n=4, temperature=0, max_tokens=8), Generate(prompt, n=2, temperature=0.8, max_tokens=8)]
        return []

    [outcome] = run_all(
        Scheduler(pools([ScriptedBackend(engine)], [ScriptedBackend(length_scorer)]), 1), [("q", one_step())]
    )
    assert outcome.error is None
    usage = outcome.usage
    assert usage.generated_tokens == 7 + (7 + 8), "greedy: one decoded sample of 7 tokens, not 4 × 7"
    assert usage.samples == 4 + 2, "samples are the generations asked for"
    assert (usage.prompt_tokens, usage.cached_prompt_tokens) == (20, 8)


def test_usage_carries_the_verifiers_cached_tokens():
    usage = Usage()
    score = Score(question="q", steps=("a", "b"))
    usage.add(score, ScoreResult(step_scores=(0.5, 0.5), tokens=30, cached_tokens=20))
    usage.add(score, ScoreResult(step_scores=(0.5, 0.5), tokens=12))
    assert (usage.verifier_tokens, usage.cached_verifier_tokens, usage.scored_solutions) == (42, 20, 2)


def test_a_failing_problem_or_replica_call_does_not_take_the_others_down():
    def broken_strategy():
        yield [Generate(prompt=Prompt(system="", user="broken"), n=1, temperature=0, max_tokens=1, stop=("\n\n",))]
        raise ValueError("strategy bug")

    def fail_on_p2(request: Request) -> bool:
        return isinstance(request, Score) and request.question == "question 2"

    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer, fail_when=fail_on_p2)
    all_jobs = [*jobs(4, StrategySpec.of(name="best_of_n")), ("broken", broken_strategy())]
    outcomes = {o.key: o for o in run_all(Scheduler(pools([generator], [verifier], max_batch=4), 1), all_jobs)}
    assert "strategy bug" in outcomes["broken"].error
    assert "verifier replica 0 raised" in outcomes["p2"].error
    assert {k for k, o in outcomes.items() if o.error is None} == {"p0", "p1", "p3"}


def test_unknown_target_and_empty_request_lists_fail_the_job_only():
    def empty():
        yield []

    outcomes = run_all(
        Scheduler({"generator": ReplicaPool([ScriptedBackend(step_generator())], 8, 8)}, 2),
        [("empty", empty()), *jobs(1, StrategySpec.of(name="best_of_n"))],
    )
    errors = {o.key: o.error for o in outcomes}
    assert "empty list" in errors["empty"]
    assert "no replicas serve target 'verifier'" in errors["p0"]


def test_no_jobs_ends_immediately():
    assert run_all(Scheduler(pools([ScriptedBackend(step_generator())], [ScriptedBackend(length_scorer)]), 4), []) == []


def test_dispatch_observer_sees_every_call():
    seen: list[tuple[str, int, int]] = []
    generator, verifier = ScriptedBackend(step_generator()), ScriptedBackend(length_scorer)
    scheduler = Scheduler(pools([generator], [verifier], max_batch=4), 8, on_dispatch=lambda *call: seen.append(call))
    run_all(scheduler, jobs(6, StrategySpec.of(name="best_of_n")))
    assert [c for c in seen if c[0] == "generator"] and [c for c in seen if c[0] == "verifier"]
    assert len(seen) == len(generator.batches) + len(verifier.batches)
    assert seen[0] == ("generator", 1, 5), "a batch of 4 sequences holds one n=4 request; 5 wait"


def contexts(n: int):
    return [SearchContext(uid=f"p{i}", question=f"question {i}", search=SEARCH, seed=0) for i in range(n)]


def test_concurrent_search_callers_share_replica_calls_and_match_a_batch_run():
    """A long-lived scheduler (the service): callers arriving together land in the same generator calls, and
    each gets the outcome a `run` of the same jobs gives."""
    generator, verifier = ScriptedBackend(step_generator(), delay=0.001), ScriptedBackend(length_scorer)
    scheduler = Scheduler(pools([generator], [verifier]), max_in_flight=1)

    async def users():
        outcomes = await asyncio.gather(*(scheduler.search(ctx.uid, start(ctx, 4, BEAM)) for ctx in contexts(4)))
        await scheduler.close()
        return outcomes

    served = asyncio.run(users())
    alone = {
        o.key: o
        for o in run_all(
            Scheduler(pools([ScriptedBackend(step_generator())], [ScriptedBackend(length_scorer)]), 1), jobs(4, BEAM)
        )
    }
    assert [o.key for o in served] == ["p0", "p1", "p2", "p3"]
    assert all(o.value == alone[o.key].value and o.usage == alone[o.key].usage for o in served)
    stats = scheduler.stats
    assert stats.shared_calls["generator"] >= 1 and stats.max_runs_per_call["generator"] == 4
    assert stats.sequences["generator"] == sum(r.n for batch in generator.batches for r in batch)


def test_a_cancelled_search_leaves_the_queue_and_the_others_finish():
    generator = ScriptedBackend(step_generator(depth_to_finish=4), delay=0.01)
    scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)], max_batch=2), max_in_flight=1)
    first, second = contexts(2)

    async def one_user_leaves():
        leaving = asyncio.create_task(scheduler.search("p0", start(first, 4, BEAM)))
        staying = asyncio.create_task(scheduler.search("p1", start(second, 4, BEAM)))
        await asyncio.sleep(0.03)
        sent_before = sum(problem_of(r) == "question 0" for batch in generator.batches for r in batch)
        leaving.cancel()
        outcome = await staying
        await scheduler.close()
        sent_after = sum(problem_of(r) == "question 0" for batch in generator.batches for r in batch)
        return leaving, outcome, sent_before, sent_after

    leaving, outcome, sent_before, sent_after = asyncio.run(one_user_leaves())
    assert leaving.cancelled() and scheduler.stats.cancelled_runs == 1
    assert outcome.error is None and outcome.value
    assert sent_after == sent_before, "no request of the cancelled search was sent after it was cancelled"
    assert all(not queue for queue in scheduler._queues.values())


def test_a_cancelled_search_aborts_a_call_that_carries_only_its_requests():
    class Slow(ScriptedBackend):
        """Records each call that ended before all its results were out (the scheduler closed it)."""

        aborted = 0

        async def submit(self, batch):
            served = 0
            try:
                async for item in super().submit(batch):
                    served += 1
                    yield item
            finally:
                Slow.aborted += served < len(batch)

    generator = Slow(step_generator(), delay=0.5)
    scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)]), 1)
    [ctx] = contexts(1)

    async def leave_mid_call():
        search = asyncio.create_task(scheduler.search("p0", start(ctx, 4, StrategySpec.of(name="best_of_n"))))
        await asyncio.sleep(0.05)
        search.cancel()
        await asyncio.sleep(0.05)
        in_flight = len(scheduler._calls)
        await scheduler.close()
        return in_flight

    assert asyncio.run(leave_mid_call()) == 0 and Slow.aborted == 1, "the call was cancelled, not served to the end"
    assert scheduler.pools["generator"].load == [0]


def test_a_fatal_scheduler_error_fails_every_search_caller():
    def broken(request):
        raise AssertionError("not reached")

    class Crashing(ScriptedBackend):
        async def submit(self, batch):
            self.batches.append(batch)
            yield 99, completions("x")  # an index outside the call: a scheduler bug surfaces as its error

    scheduler = Scheduler(pools([Crashing(broken)], [ScriptedBackend(length_scorer)]), max_in_flight=1)

    async def users():
        results = await asyncio.gather(
            *(scheduler.search(ctx.uid, start(ctx, 4, BEAM)) for ctx in contexts(2)), return_exceptions=True
        )
        await scheduler.close()
        return results

    results = asyncio.run(users())
    assert all(isinstance(r, KeyError) for r in results)


def test_a_batch_window_lets_requests_arriving_apart_share_a_call():
    def first_calls(window: float) -> list[list[Request]]:
        generator = ScriptedBackend(step_generator())
        scheduler = Scheduler(pools([generator], [ScriptedBackend(length_scorer)]), 1, batch_window_s=window)

        async def two_users_5ms_apart():
            first, second = contexts(2)
            one = asyncio.create_task(scheduler.search("p0", start(first, 2, StrategySpec.of(name="best_of_n"))))
            await asyncio.sleep(0.005)
            await asyncio.gather(one, scheduler.search("p1", start(second, 2, StrategySpec.of(name="best_of_n"))))
            await scheduler.close()

        asyncio.run(two_users_5ms_apart())
        return generator.batches

    assert [len(batch) for batch in first_calls(0.0)] == [1, 1], "no window: each request goes out as it comes"
    assert [len(batch) for batch in first_calls(0.05)] == [2], "a 50 ms window: both users in one call"
