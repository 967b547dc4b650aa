"""Labelling throughput (`ttsearch bench --label`): the ready queue against one prefix at a time, on one engine.

- ready queue: the questions' labelling jobs go through the scheduler together (`scheduler.max_in_flight` at
  once), so every prefix's rollouts of every question share the engine's batches;
- one prefix at a time: the same jobs, one question at a time, each prefix's R rollouts sent and awaited before
  the next prefix's (how a labeller that loops over prefixes calling `generate` works), on the first
  `bench.sync_problems` questions; rates are per labelled step, so a subset is fair.

Both modes grade their rollouts the same way, inside the timed section, and use the first generator replica
only, with its prefix cache reset before each.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from ttsearch.config import SweepConfig
from ttsearch.runtime.backends import replica_pools
from ttsearch.runtime.replicas import start_generator_replicas, start_ray
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import Usage
from ttsearch.search.scheduler import RequestRun, Scheduler
from ttsearch.sweep.data import load_problems
from ttsearch.training.labels import LabelWork


@dataclass(frozen=True)
class LabelMeasurement:
    mode: str  # ready_queue | one_prefix_at_a_time
    questions: int
    labelled_steps: int
    generated_tokens: int
    generator_calls: int
    wall_s: float

    @property
    def steps_per_min(self) -> float:
        return self.labelled_steps / self.wall_s * 60

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s


def one_prefix_at_a_time(run: RequestRun) -> RequestRun:
    """`run` with the requests of each round sent one by one, each awaited before the next: the baseline."""
    results = None
    while True:
        try:
            requests = run.send(results)
        except StopIteration as stop:
            return stop.value
        results = []
        for request in requests:
            [result] = yield [request]
            results.append(result)


async def measure(
    cfg: SweepConfig, problems: list[dict[str, Any]], generator: Any, grader: Grader, sequential: bool
) -> LabelMeasurement:
    """Label `problems` on `generator` in one mode, grading included; the prefix cache starts empty."""
    await generator.reset_prefix_cache.remote()
    work = LabelWork(cfg)
    scheduler_cfg = replace(cfg.scheduler, max_in_flight=1) if sequential else cfg.scheduler
    scheduler = Scheduler.from_config(replica_pools([generator], [], cfg.verifier.kind, scheduler_cfg), scheduler_cfg)
    jobs = ((key, one_prefix_at_a_time(run) if sequential else run) for key, run in work.jobs(problems, ()))
    started = time.perf_counter()
    outcomes = [outcome async for outcome in scheduler.run(jobs)]
    steps = sum(len(row["soft_labels"]) for outcome in outcomes for row in work.rows(outcome, grader))
    wall = time.perf_counter() - started
    usage = Usage()
    for outcome in outcomes:
        usage.merge(outcome.usage)
    mode = "one_prefix_at_a_time" if sequential else "ready_queue"
    calls = scheduler.stats.calls.get("generator", 0)
    return LabelMeasurement(mode, len(problems), steps, usage.generated_tokens, calls, wall)


@dataclass(frozen=True)
class LabelBenchReport:
    """What `ttsearch bench --label` measured: printed as a table, saved as JSON with `--json`."""

    label: dict[str, Any]
    """The `label` config section the runs labelled with."""
    max_solution_tokens: int
    """`search.max_solution_tokens`: how long a sample or rollout may get."""
    max_in_flight: int
    """`scheduler.max_in_flight`: questions the ready queue ran at once."""
    measurements: list[dict[str, Any]]
    """The ready queue's `LabelMeasurement`, then one prefix at a time's, with their rates."""
    speedup_steps_per_min: float
    """Labelled steps per minute of the ready queue ÷ those of one prefix at a time."""

    def __str__(self) -> str:
        label = self.label
        lines = [
            f"labelling: K={label['samples']} samples, R={label['rollouts']} rollouts, max_steps={label['max_steps']}, "
            f"reference prefixes {'on' if label['reference_prefixes'] else 'off'}, one generator replica",
            "| mode | questions | labelled steps | generated tokens | generator calls | wall s | steps/min | tok/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in self.measurements:
            lines.append(
                f"| {m['mode']} | {m['questions']} | {m['labelled_steps']} | {m['generated_tokens']} | "
                f"{m['generator_calls']} | {m['wall_s']:.1f} | {m['steps_per_min']:.1f} | "
                f"{m['tokens_per_s']:.1f} |"
            )
        lines.append(
            f"\nready queue ÷ one prefix at a time: {self.speedup_steps_per_min:.2f}x labelled steps per minute"
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def run_label_bench(cfg: SweepConfig) -> LabelBenchReport:
    """Label `cfg`'s questions on one generator replica in both modes, the ready queue first."""
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    start_ray(cfg)
    generator = start_generator_replicas(replace(cfg, generator=replace(cfg.generator, replicas=1)))[0]

    async def both() -> list[LabelMeasurement]:
        with Grader() as grader:
            ready = await measure(cfg, problems, generator, grader, sequential=False)
            alone = await measure(cfg, problems[: cfg.bench.sync_problems], generator, grader, sequential=True)
        return [ready, alone]

    ready, alone = asyncio.run(both())
    return LabelBenchReport(
        label=asdict(cfg.label),
        max_solution_tokens=cfg.search.max_solution_tokens,
        max_in_flight=cfg.scheduler.max_in_flight,
        measurements=[
            asdict(m) | {"steps_per_min": m.steps_per_min, "tokens_per_s": m.tokens_per_s} for m in (ready, alone)
        ],
        speedup_steps_per_min=ready.steps_per_min / alone.steps_per_min,
    )
