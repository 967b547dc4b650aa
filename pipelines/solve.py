"""`ttsearch solve`: answer one question online with the compute-optimal policy of a past sweep.

Part of the budget (the policy's k samples of best-of-N) estimates the question's difficulty
without ground truth — the mean verifier score of the sampled solutions, binned by the thresholds and
rule the policy was fitted and cross-validated with — then the strategy the policy chose for that bin
runs with what is left of the budget (the largest fitted budget that fits).
Both parts are counted in the compute it reports.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ttsearch.backends import replica_pools
from ttsearch.config import StrategySpec, SweepConfig, load_config
from ttsearch.grading import Grader
from ttsearch.policy import Policy, SolveError, load_policy
from ttsearch.results import CONFIG, RunStore
from ttsearch.runtime import ModelSizes, model_sizes, start_ray, start_replicas
from ttsearch.scheduler import JobOutcome, RetryPolicy, Scheduler, Usage
from ttsearch.selection import aggregate, select
from ttsearch.strategies import SearchContext, start, strategy_label

# Verifiers that cannot score a new question: `oracle` grades against the ground truth, `hash` is a benchmark device.
UNUSABLE_VERIFIERS = ("oracle", "hash")


@dataclass
class Solution:
    answer: str | None
    strategy_label: str
    difficulty_bin: int
    difficulty_score: float
    search_budget: int
    estimation: Usage
    search: Usage
    flops: float


def policy_plan(policy: Policy, budget: int, score: float) -> tuple[int, str]:
    """The fitted budget to spend after estimation, and the label the policy chose there."""
    left = budget - policy.estimation_samples
    fitted = sorted({b for b, _ in policy.choices if b <= left})
    if not fitted:
        smallest = min(b for b, _ in policy.choices)
        raise SolveError(
            f"budget {budget} leaves {left} after {policy.estimation_samples} estimation samples; "
            f"the policy's smallest budget is {smallest}: ask for at least {smallest + policy.estimation_samples}"
        )
    return fitted[-1], policy.strategy(fitted[-1], score)


def spec_for(label: str, cfg: SweepConfig) -> tuple[StrategySpec, str]:
    """The sweep's strategy configuration and selection mode behind a policy label."""
    for spec in cfg.strategies:
        for selection in spec.selections:
            if strategy_label(spec, selection) == label:
                return spec, selection
    raise SolveError(f"the policy chose '{label}', which the sweep's config.yaml does not define")


async def _one(scheduler: Scheduler, ctx: SearchContext, budget: int, spec: StrategySpec) -> JobOutcome:
    [outcome] = [o async for o in scheduler.run([("q", start(ctx, budget, spec))])]
    if outcome.error:
        raise SolveError(f"search failed: {outcome.error.strip().splitlines()[-1]}")
    return outcome


async def solve_question(
    question: str,
    budget: int,
    cfg: SweepConfig,
    policy: Policy,
    generators: list[Any],
    verifiers: list[Any],
    sizes: ModelSizes,
    seed: int = 0,
) -> Solution:
    with Grader() as grader:
        pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        scheduler = Scheduler(pools, 1, retry=RetryPolicy.from_config(cfg.scheduler))
        ctx = SearchContext(uid=question, question=question, search=cfg.search, seed=seed)
        estimation = await _one(scheduler, ctx, policy.estimation_samples, StrategySpec(name="best_of_n"))
        # The policy's own score: its aggregation, averaged, binned by `policy.bin_of` (the rule it was fitted with).
        scores = [aggregate(c.step_scores, policy.aggregation) for c in estimation.candidates or []]
        score = sum(scores) / len(scores) if scores else 0.0
        search_budget, label = policy_plan(policy, budget, score)
        spec, selection = spec_for(label, cfg)
        searched = await _one(scheduler, replace(ctx, seed=seed + 1), search_budget, spec)
        chosen = select(searched.candidates or [], selection, spec.aggregation, grader.same_answers)
    flops = sum(sum(sizes.flops(usage)) for usage in (estimation.usage, searched.usage))
    return Solution(
        chosen.answer if chosen else None,
        label,
        policy.bin_of(score),
        score,
        search_budget,
        estimation.usage,
        searched.usage,
        flops,
    )


def run_solve(run_dir: str, question: str, budget: int, overrides: list[str]) -> Solution:
    """Replicas and search settings come from the sweep that fitted the policy (its config.yaml)."""
    store = RunStore(run_dir)
    policy = load_policy(store.uri)
    with tempfile.TemporaryDirectory(prefix="ttsearch-") as tmp:  # the config may live on a remote filesystem
        path = Path(tmp) / CONFIG
        path.write_text(store.read_text(CONFIG))
        cfg = load_config(path, overrides)
    if cfg.verifier.kind in UNUSABLE_VERIFIERS:
        raise SolveError(
            f"verifier.kind={cfg.verifier.kind} cannot score a new question (oracle needs the ground truth, hash is a "
            "benchmark device): pass a model verifier, e.g. verifier.kind=lm_judge"
        )
    start_ray(cfg)
    generators, verifiers = start_replicas(cfg)
    sizes = model_sizes(generators, verifiers)
    return asyncio.run(solve_question(question, budget, cfg, policy, generators, verifiers, sizes))
