"""`ttsearch solve`: answer one question online with the compute-optimal policy of a past sweep
(`ttsearch.serving.service`: difficulty estimation, then the strategy the policy chose, both counted)."""

from __future__ import annotations

import asyncio

from ttsearch.analysis.policy import Policy
from ttsearch.config import SweepConfig
from ttsearch.runtime.backends import replica_pools
from ttsearch.runtime.replicas import model_sizes, start_ray, start_replicas
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import ModelSizes
from ttsearch.search.scheduler import Scheduler
from ttsearch.serving.service import Answer, SearchService, SearchSettings, load_policy_run


async def solve_question(
    question: str,
    budget: int,
    cfg: SweepConfig,
    policy: Policy,
    generators: list,
    verifiers: list,
    sizes: ModelSizes,
    seed: int = 0,
) -> Answer:
    with Grader() as grader:
        pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        service = SearchService(
            Scheduler.from_config(pools, cfg.scheduler), cfg.search, sizes, grader, policy, cfg.strategies
        )
        try:
            return await service.answer(question, SearchSettings(budget=budget, seed=seed, compute_optimal=True))
        finally:
            await service.close()


def run_solve(run_dir: str, question: str, budget: int, overrides: list[str]) -> Answer:
    """Replicas and search settings come from the sweep that fitted the policy (its config.yaml)."""
    cfg, policy = load_policy_run(run_dir, overrides)
    start_ray(cfg)
    generators, verifiers = start_replicas(cfg)
    sizes = model_sizes(generators, verifiers)
    return asyncio.run(solve_question(question, budget, cfg, policy, generators, verifiers, sizes))
