"""Throughput benchmark: the ready queue against the offline ceiling and a synchronous baseline.

All measurements share one generator engine, in one run:
- offline ceiling: every generation request the ready-queue search made, replayed as ONE batch
  (same prompts, n, stop strings, seeds, hence the same token mix) with no dependencies between them;
- ready queue: the search with all problems in flight (this project's scheduler);
- synchronous: one problem at a time with a barrier per step (huggingface/search-and-learn's
  behaviour), run on the first `sync_problems` problems; rates are per token, so a subset is fair.
Efficiency = ready-queue tok/s ÷ offline tok/s; speed-up = ready-queue tok/s ÷ synchronous tok/s.
The prefix cache is reset before every measurement so none inherits another's cached blocks.

Cases with a model verifier also report what the verifier cost, from its replicas' counters: prompt
tokens it read, the share its prefix cache served, tokens it computed per scored step, the fraction of
wall time it was busy, and the ready queue's tok/s as a fraction of the same strategy's ready queue with
the zero-cost `hash` scorer in the same run (`vs_hash`: 1.0 would mean the verifier costs nothing).
Each of `bench.real_verifier_backends` is measured, so the run also says which backend is fastest here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

from ttsearch.config import StrategySpec, SweepConfig, verifier_backend, verifier_family
from ttsearch.runtime.backends import ActorBackend, replica_pools
from ttsearch.runtime.replicas import start_ray
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import Usage
from ttsearch.search.requests import Generate, Prompt, Request, RequestRejected, Result
from ttsearch.search.scheduler import RetryPolicy, Scheduler
from ttsearch.sweep.data import load_problems
from ttsearch.sweep.jobs import shard_jobs


@dataclass
class Measurement:
    strategy: str
    verifier_kind: str
    mode: str  # offline | ready_queue | synchronous
    problems: int
    wall_s: float
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    driver_busy_s: float = 0.0
    max_generator_batch: int = 0
    verifier_cost: VerifierCost | None = None  # None for a model-free verifier and the offline replay

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def problems_per_min(self) -> float:
        return 60 * self.problems / self.wall_s

    @property
    def prefix_hit_rate(self) -> float:
        return self.cached_prompt_tokens / max(self.prompt_tokens, 1)


@dataclass(frozen=True)
class VerifierCost:
    """What the verifier replicas did during one measurement (differences of their `score_stats`)."""

    backend: str
    busy_s: float
    scored_steps: int
    prompt_tokens: int
    cached_tokens: int

    @classmethod
    def between(cls, backend: str, before: list[dict], after: list[dict]) -> VerifierCost:
        def delta(key: str) -> float:
            return sum(a[key] - b[key] for a, b in zip(after, before, strict=True))

        return cls(
            backend, delta("busy_s"), int(delta("scored_steps")), int(delta("tokens")), int(delta("cached_tokens"))
        )

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / max(self.prompt_tokens, 1)

    @property
    def computed_per_step(self) -> float:
        return (self.prompt_tokens - self.cached_tokens) / max(self.scored_steps, 1)


class RecordingBackend:
    """Passes requests through and keeps every one it served, for the offline replay."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.requests: list[Request] = []

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result | RequestRejected]]:
        self.requests.extend(batch)
        async for item in self.inner.submit(batch):
            yield item

    async def check(self) -> None:
        await self.inner.check()


async def _reset_prefix_caches(replicas: list[Any]) -> None:
    await asyncio.gather(*(replica.reset_prefix_cache.remote() for replica in replicas))


async def _score_stats(verifiers: list[Any]) -> list[dict]:
    return list(await asyncio.gather(*(v.score_stats.remote() for v in verifiers)))


async def measure_search(
    problems: list[dict[str, Any]],
    cfg: SweepConfig,
    spec: StrategySpec,
    budget: int,
    generators: list[Any],
    verifiers: list[Any],
    max_in_flight: int,
    mode: str,
    grader: Grader,
    verifier_backend: str = "",
) -> tuple[Measurement, list[Request]]:
    pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader)
    recorders = [RecordingBackend(b) for b in pools["generator"].backends]
    pools["generator"].backends = recorders
    scheduler = Scheduler(pools, max_in_flight, retry=RetryPolicy.from_config(cfg.scheduler))
    jobs = shard_jobs(problems, replace(cfg, strategies=[spec], budgets=[budget], seeds=[0]))
    await _reset_prefix_caches([*generators, *(v for v in verifiers if v not in generators)])
    stats_before = await _score_stats(verifiers)
    began = time.perf_counter()
    usage = Usage()
    async for outcome in scheduler.run(jobs):
        if outcome.error:
            raise RuntimeError(f"benchmark problem {outcome.key[0]['unique_id']} failed: {outcome.error}")
        usage.merge(outcome.usage)
    wall = time.perf_counter() - began
    measurement = Measurement(
        strategy=spec.name,
        verifier_kind=cfg.verifier.kind,
        mode=mode,
        problems=len(problems),
        wall_s=wall,
        generated_tokens=usage.generated_tokens,
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        driver_busy_s=scheduler.stats.driver_busy_s,
        max_generator_batch=scheduler.stats.max_batch.get("generator", 0),
        verifier_cost=(
            VerifierCost.between(verifier_backend, stats_before, await _score_stats(verifiers)) if verifiers else None
        ),
    )
    return measurement, [r for rec in recorders for r in rec.requests]


async def measure_offline(requests: list[Request], generators: list[Any], strategy: str) -> Measurement:
    """The same generation requests as one batch per replica: the engine's best case for this mix."""
    await _reset_prefix_caches(generators)
    shares = [requests[i :: len(generators)] for i in range(len(generators))]
    usage = Usage()

    async def drain(generator: Any, share: list[Request]) -> None:
        async for index, result in ActorBackend(generator, "generate").submit(share):
            usage.add(share[index], result)

    began = time.perf_counter()
    await asyncio.gather(*(drain(g, share) for g, share in zip(generators, shares, strict=True) if share))
    wall = time.perf_counter() - began
    return Measurement(
        strategy=strategy,
        verifier_kind="-",
        mode="offline",
        problems=0,
        wall_s=wall,
        generated_tokens=usage.generated_tokens,
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )


async def measure_batch_curve(generator: Any, question: str, sizes: list[int], max_tokens: int) -> list[dict]:
    """Generated tok/s of the bare engine at several batch sizes: why batching pays, and how much."""
    curve = []
    for size in sizes:
        request = Generate(
            prompt=Prompt(system="", user=question), n=size, temperature=1.0, max_tokens=max_tokens, seed=size
        )
        usage = Usage()
        began = time.perf_counter()
        async for _, result in ActorBackend(generator, "generate").submit([request]):
            usage.add(request, result)
        wall = time.perf_counter() - began
        curve.append({"batch": size, "tokens_per_s": round(usage.generated_tokens / wall, 1)})
    return curve


@dataclass(frozen=True)
class Case:
    """One benchmarked search: a strategy with a verifier kind and, for a hosted verifier, its backend."""

    spec: StrategySpec
    verifier: str
    backend: str = ""

    @property
    def config_backend(self) -> str:
        return self.backend or "auto"


@dataclass(frozen=True)
class BenchReport:
    """What `ttsearch bench` measured: printed as tables, saved as JSON with `--json`."""

    budget: int
    """The budget every case searched at (`budgets[0]`)."""
    generator_replicas: int
    """Generator replicas every measurement shared."""
    rows: list[dict[str, Any]]
    """One row per case and mode (offline, ready_queue, synchronous), as `_row` lays it out."""
    batch_curve: list[dict[str, Any]]
    """The bare engine's generated tok/s at each `bench.batch_curve` batch size."""

    def __str__(self) -> str:
        import pandas as pd

        table = pd.DataFrame(self.rows).to_string(index=False)
        curve = "  ".join(f"{p['batch']}: {p['tokens_per_s']}" for p in self.batch_curve)
        return f"{table}\n\nengine tok/s by batch size (bare generation): {curve}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


async def run_benchmark(
    cfg: SweepConfig, generators: list[Any], verifiers_by_case: dict[tuple[str, str], list[Any]]
) -> BenchReport:
    """Every case of `benchmark_cases`, then the bare engine's batch-size curve."""
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    budget = cfg.budgets[0]
    rows: list[dict[str, Any]] = []
    free_tok_s: dict[str, float] = {}  # ready-queue tok/s per strategy with the configured model-free scorer
    cases = benchmark_cases(cfg)
    with Grader.from_config(cfg.grading) as grader:
        for number, case in enumerate(cases, 1):
            case_cfg = replace(cfg, verifier=replace(cfg.verifier, kind=case.verifier, backend=case.config_backend))
            verifiers = verifiers_by_case[(case.verifier, case.backend)]

            measure = partial(
                measure_search,
                cfg=case_cfg,
                spec=case.spec,
                budget=budget,
                generators=generators,
                verifiers=verifiers,
                grader=grader,
                verifier_backend=case.backend,
            )
            ready, requests = await measure(problems, max_in_flight=cfg.scheduler.max_in_flight, mode="ready_queue")
            sync, _ = await measure(problems[: cfg.bench.sync_problems], max_in_flight=1, mode="synchronous")
            generated = [r for r in requests if isinstance(r, Generate)]
            offline = await measure_offline(generated, generators, case.spec.name)
            if verifier_family(case.verifier).model_free:
                free_tok_s.setdefault(case.spec.name, ready.tokens_per_s)
            free = free_tok_s.get(case.spec.name)
            case_rows = [_row(m, offline, sync, free) for m in (offline, ready, sync)]
            rows.extend(case_rows)
            _print_progress(f"case {number}/{len(cases)}: {case.spec.name}, {case.verifier} {case.backend}", case_rows)
    curve = await measure_batch_curve(
        generators[0], problems[0]["problem"], cfg.bench.batch_curve, cfg.search.max_step_tokens
    )
    return BenchReport(budget, len(generators), rows, curve)


def benchmark_cases(cfg: SweepConfig) -> list[Case]:
    """Every strategy with the configured verifier (scheduling alone when it is `hash`), then the chosen
    strategies again with the real verifier on each of `bench.real_verifier_backends`."""
    configured = verifier_backend(cfg.verifier, cfg.generator)  # "" for a model-free verifier
    cases = [Case(spec, cfg.verifier.kind, configured) for spec in cfg.strategies]
    if cfg.bench.real_verifier != cfg.verifier.kind:
        real = replace(cfg.verifier, kind=cfg.bench.real_verifier)
        backends = [verifier_backend(replace(real, backend=b), cfg.generator) for b in cfg.bench.real_verifier_backends]
        cases += [
            Case(spec, real.kind, backend)
            for spec in cfg.strategies
            if spec.name in cfg.bench.real_verifier_strategies
            for backend in dict.fromkeys(backends)
        ]
    return cases


def _row(m: Measurement, offline: Measurement, sync: Measurement, free_tok_s: float | None) -> dict[str, Any]:
    cost = m.verifier_cost
    return {
        "strategy": m.strategy,
        "verifier": m.verifier_kind,
        "backend": cost.backend if cost else None,
        "mode": m.mode,
        "problems": m.problems,
        "wall_s": round(m.wall_s, 1),
        "gen_tokens": m.generated_tokens,
        "tok_per_s": round(m.tokens_per_s, 1),
        "problems_per_min": round(m.problems_per_min, 2) if m.problems else None,
        "efficiency": round(m.tokens_per_s / offline.tokens_per_s, 3),
        "speedup_vs_sync": round(m.tokens_per_s / sync.tokens_per_s, 2),
        "prefix_hit": round(m.prefix_hit_rate, 3),
        "sched_overhead": round(m.driver_busy_s / m.wall_s, 4),
        "verifier_busy": round(cost.busy_s / m.wall_s, 3) if cost else None,
        "verifier_prompt_tokens": cost.prompt_tokens if cost else None,
        "verifier_cache_hit": round(cost.cache_hit_rate, 3) if cost else None,
        "verifier_computed_per_step": round(cost.computed_per_step, 1) if cost else None,
        "vs_hash": round(m.tokens_per_s / free_tok_s, 3) if cost and free_tok_s and m.mode == "ready_queue" else None,
        "max_gen_batch": m.max_generator_batch,
    }


def _print_progress(title: str, rows: list[dict[str, Any]]) -> None:
    """A case's rows as soon as it is measured (to stderr): a full run takes long enough to watch."""
    import pandas as pd

    table = pd.DataFrame(rows).dropna(axis=1, how="all").to_string(index=False)
    print(f"{title}\n{table}", file=sys.stderr, flush=True)


def run_bench(cfg: SweepConfig) -> BenchReport:
    """Start Ray and the replicas the cases need, run the benchmark, return the report.

    With a `generator`-backend case the generator replicas are started with the judge on their engines; a
    generator-hosted judge only adds a scoring method, so the other cases run on the same engines unchanged.
    """
    from ttsearch.actors.generator import create_generator_replicas
    from ttsearch.actors.verifier import create_verifier_replicas

    cases = benchmark_cases(cfg)
    hosted = {(c.verifier, c.backend) for c in cases if not verifier_family(c.verifier).model_free}
    dedicated = [key for key in hosted if key[1] != "generator"]
    start_ray(cfg, extra_cpus=len(dedicated) * cfg.verifier.replicas * cfg.verifier.num_cpus)
    judges = [kind for kind, backend in hosted if backend == "generator"]
    if len(judges) > 1:
        raise ValueError(f"one verifier at most can run on the generator replicas, the cases ask for {judges}")
    judge = replace(cfg.verifier, kind=judges[0], backend="generator") if judges else None
    generators = create_generator_replicas(cfg.generator, cfg.cache_dir, judge=judge)
    verifiers_by_case: dict[tuple[str, str], list[Any]] = {
        (c.verifier, c.backend): [] for c in cases if verifier_family(c.verifier).model_free
    }
    for kind, backend in hosted:
        verifier = replace(cfg.verifier, kind=kind, backend=backend)
        verifiers_by_case[(kind, backend)] = (
            generators if backend == "generator" else create_verifier_replicas(verifier, cfg.cache_dir)
        )
    return asyncio.run(run_benchmark(cfg, generators, verifiers_by_case))
