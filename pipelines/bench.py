"""Throughput benchmark: the ready queue against the offline ceiling and a synchronous baseline.

All measurements share one generator engine, in one run:
- offline ceiling: every generation request the ready-queue search made, replayed as ONE batch
  (same prompts, n, stop strings, seeds, hence the same token mix) with no dependencies between them;
- ready queue: the search with all problems in flight (this project's scheduler);
- synchronous: one problem at a time with a barrier per step (huggingface/search-and-learn's
  behaviour), run on the first `sync_problems` problems; rates are per token, so a subset is fair.
Efficiency = ready-queue tok/s ÷ offline tok/s; speed-up = ready-queue tok/s ÷ synchronous tok/s.
The prefix cache is reset before every measurement so none inherits another's cached blocks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ttsearch.backends import ActorBackend, replica_pools
from ttsearch.cells import shard_jobs
from ttsearch.config import MODEL_FREE_VERIFIERS, StrategySpec, SweepConfig
from ttsearch.data import load_problems
from ttsearch.grading import Grader
from ttsearch.requests import Generate, Prompt, Request, RequestRejected, Result
from ttsearch.runtime import start_ray, start_replicas
from ttsearch.scheduler import RetryPolicy, Scheduler, Usage


@dataclass
class Measurement:
    strategy: str
    verifier: str
    mode: str  # offline | ready_queue | synchronous
    problems: int
    wall_s: float
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    driver_busy_s: float = 0.0
    verifier_busy_s: float = 0.0
    max_generator_batch: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def problems_per_min(self) -> float:
        return 60 * self.problems / self.wall_s

    @property
    def prefix_hit_rate(self) -> float:
        return self.cached_prompt_tokens / max(self.prompt_tokens, 1)


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


async def _verifier_busy(verifiers: list[Any]) -> float:
    stats = await asyncio.gather(*(v.stats.remote() for v in verifiers))
    return sum(s["busy_s"] for s in stats)


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
) -> tuple[Measurement, list[Request]]:
    pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader)
    recorders = [RecordingBackend(b) for b in pools["generator"].backends]
    pools["generator"].backends = recorders
    scheduler = Scheduler(pools, max_in_flight, retry=RetryPolicy.from_config(cfg.scheduler))
    jobs = shard_jobs(problems, replace(cfg, strategies=[spec], budgets=[budget], seeds=[0]))
    await asyncio.gather(*(g.reset_prefix_cache.remote() for g in generators))
    busy_before = await _verifier_busy(verifiers)
    began = time.perf_counter()
    usage = Usage()
    async for outcome in scheduler.run(jobs):
        if outcome.error:
            raise RuntimeError(f"benchmark problem {outcome.key[0]['unique_id']} failed: {outcome.error}")
        usage.merge(outcome.usage)
    wall = time.perf_counter() - began
    measurement = Measurement(
        strategy=spec.name,
        verifier=cfg.verifier.kind,
        mode=mode,
        problems=len(problems),
        wall_s=wall,
        generated_tokens=usage.generated_tokens,
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        driver_busy_s=scheduler.stats.driver_busy_s,
        verifier_busy_s=await _verifier_busy(verifiers) - busy_before,
        max_generator_batch=scheduler.stats.max_batch.get("generator", 0),
    )
    return measurement, [r for rec in recorders for r in rec.requests]


async def measure_offline(requests: list[Request], generators: list[Any], strategy: str) -> Measurement:
    """The same generation requests as one batch per replica: the engine's best case for this mix."""
    await asyncio.gather(*(g.reset_prefix_cache.remote() for g in generators))
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
        verifier="-",
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


async def run_benchmark(cfg: SweepConfig, generators: list[Any], verifiers_by_kind: dict[str, list[Any]]) -> dict:
    """Every case of `benchmark_cases`, then the bare engine's batch-size curve."""
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    budget = cfg.budgets[0]
    rows: list[dict[str, Any]] = []
    with Grader() as grader:
        for spec, kind in benchmark_cases(cfg):
            case_cfg = replace(cfg, verifier=replace(cfg.verifier, kind=kind))
            verifiers = verifiers_by_kind[kind]
            ready, requests = await measure_search(
                problems,
                case_cfg,
                spec,
                budget,
                generators,
                verifiers,
                cfg.scheduler.max_in_flight,
                "ready_queue",
                grader,
            )
            sync, _ = await measure_search(
                problems[: cfg.bench.sync_problems],
                case_cfg,
                spec,
                budget,
                generators,
                verifiers,
                1,
                "synchronous",
                grader,
            )
            offline = await measure_offline([r for r in requests if isinstance(r, Generate)], generators, spec.name)
            rows.extend(_row(m, offline, sync) for m in (offline, ready, sync))
    curve = await measure_batch_curve(
        generators[0], problems[0]["problem"], cfg.bench.batch_curve, cfg.search.max_step_tokens
    )
    return {"budget": budget, "generator_replicas": len(generators), "rows": rows, "batch_curve": curve}


def benchmark_cases(cfg: SweepConfig) -> list[tuple[StrategySpec, str]]:
    """(strategy, verifier kind): every strategy with the configured verifier (scheduling alone when
    it is `hash`), then the chosen strategies again with the real verifier."""
    cases = [(spec, cfg.verifier.kind) for spec in cfg.strategies]
    if cfg.bench.real_verifier != cfg.verifier.kind:
        cases += [(s, cfg.bench.real_verifier) for s in cfg.strategies if s.name in cfg.bench.real_verifier_strategies]
    return cases


def _row(m: Measurement, offline: Measurement, sync: Measurement) -> dict[str, Any]:
    return {
        "strategy": m.strategy,
        "verifier": m.verifier,
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
        "verifier_busy": round(m.verifier_busy_s / m.wall_s, 3),
        "max_gen_batch": m.max_generator_batch,
    }


def format_report(report: dict[str, Any]) -> str:
    import pandas as pd

    table = pd.DataFrame(report["rows"]).to_string(index=False)
    curve = "  ".join(f"{p['batch']}: {p['tokens_per_s']}" for p in report["batch_curve"])
    return f"{table}\n\nengine tok/s by batch size (bare generation): {curve}"


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2))


def run_bench(cfg: SweepConfig) -> dict[str, Any]:
    """Start Ray and the replicas the cases need, run the benchmark, return the report."""
    from actors.verifier import create_verifier_replicas

    extra = {kind for _, kind in benchmark_cases(cfg)} - {cfg.verifier.kind} - set(MODEL_FREE_VERIFIERS)
    start_ray(cfg, extra_cpus=len(extra) * cfg.verifier.replicas * cfg.verifier.num_cpus)
    generators, configured = start_replicas(cfg)
    verifiers_by_kind = {cfg.verifier.kind: configured}
    for _, kind in benchmark_cases(cfg):
        if kind not in verifiers_by_kind:
            hosted = kind not in MODEL_FREE_VERIFIERS
            verifiers_by_kind[kind] = (
                create_verifier_replicas(replace(cfg.verifier, kind=kind), cfg.cache_dir) if hosted else []
            )
    return asyncio.run(run_benchmark(cfg, generators, verifiers_by_kind))
