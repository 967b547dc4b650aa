"""`ttsearch eval-prm`: how well the verifier finds wrong steps, on ProcessBench and on held-out `ttsearch label` steps.

Every ProcessBench item and held-out solution is one scheduler job of one `Score`, and all of them go through one
run of the ready queue, so the verifier replicas get the batches a sweep gives them (the protocol is in
`ttsearch.training.prm_eval`). Writes eval.md and eval.json to `eval_prm.output`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from tqdm import tqdm

from ttsearch.config import SweepConfig
from ttsearch.runtime.backends import replica_pools
from ttsearch.runtime.replicas import start_ray, start_verifier_replicas
from ttsearch.search.scheduler import Scheduler
from ttsearch.sweep.data import load_first_error_items
from ttsearch.sweep.results import RunStore
from ttsearch.training.prm_eval import (
    EvalReport,
    JobKey,
    ScoreRun,
    check_eval_config,
    evenly_spaced,
    format_prm_eval,
    load_heldout_solutions,
    prm_eval_report,
    scoring_jobs,
    subset_name,
)


@dataclass(frozen=True)
class PRMEvaluation:
    """What `ttsearch eval-prm` did: the report it printed, and where it wrote it."""

    report: EvalReport
    """Everything eval.md and eval.json say."""
    output: str
    """The directory holding eval.md and eval.json (`eval_prm.output`)."""

    def __str__(self) -> str:
        return f"{format_prm_eval(self.report)}\n\nwritten to {self.output}/eval.md and eval.json"


def run_eval_prm(cfg: SweepConfig, verifiers: list[Any] | None = None) -> PRMEvaluation:
    """Score every item on `verifiers` (None: start `cfg.verifier`'s replicas) and write the report.

    Every input is read and checked before Ray or a replica starts, so a bad file costs no model load.
    """
    check_eval_config(cfg)
    section = cfg.eval_prm
    subsets = {
        subset_name(path): evenly_spaced(load_first_error_items(path), section.limit) for path in section.processbench
    }
    solutions = load_heldout_solutions(section.labels, cfg.prm.heldout_fraction) if section.labels is not None else []
    store = RunStore(section.output)
    if verifiers is None:
        start_ray(cfg)
        verifiers = start_verifier_replicas(cfg)
    jobs = scoring_jobs(subsets, solutions, cfg.search.system_prompt)
    scores, failed, tokens, wall_s = asyncio.run(_score(jobs, verifiers, cfg))
    report = prm_eval_report(cfg, subsets, solutions, scores, failed, tokens, wall_s)
    store.write_text(json.dumps(asdict(report), indent=2), "eval.json")
    store.write_text(format_prm_eval(report), "eval.md")
    return PRMEvaluation(report, section.output)


async def _score(
    jobs: list[tuple[JobKey, ScoreRun]], verifiers: list[Any], cfg: SweepConfig
) -> tuple[dict[JobKey, tuple[float, ...]], dict[JobKey, tuple[str, str]], int, float]:
    """(step scores of each finished job, (failure, error) of each failed one, verifier tokens read, wall seconds)."""
    pools = replica_pools([], verifiers, cfg.verifier.kind, cfg.scheduler)  # a verifier pool only
    scheduler = Scheduler.from_config(pools, cfg.scheduler)
    scores: dict[JobKey, tuple[float, ...]] = {}
    failed: dict[JobKey, tuple[str, str]] = {}
    tokens = 0
    started = time.perf_counter()
    with tqdm(total=len(jobs), desc="scored", unit="solution", dynamic_ncols=True) as progress:
        async for outcome in scheduler.run(jobs):
            progress.update()
            tokens += outcome.usage.verifier_tokens
            if outcome.value is None:
                failed[outcome.key] = (str(outcome.failure), outcome.error or "(no message)")
            else:
                scores[outcome.key] = outcome.value  # `score_steps` returns the step scores
    return scores, failed, tokens, time.perf_counter() - started
