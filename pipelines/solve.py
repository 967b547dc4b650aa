"""`ttsearch solve`: answer one question online with the compute-optimal policy of a past sweep
(`ttsearch.serving.service`: difficulty estimation, then the strategy the policy chose, both counted)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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
    with Grader.from_config(cfg.grading) as grader:
        pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, grader)
        service = SearchService(
            Scheduler.from_config(pools, cfg.scheduler), cfg.search, sizes, grader, policy, cfg.strategies
        )
        try:
            return await service.answer(question, SearchSettings(budget=budget, seed=seed, compute_optimal=True))
        finally:
            await service.close()


@dataclass(frozen=True)
class Solution:
    """What `ttsearch solve` found and what it cost, printed as the command shows it."""

    answer: Answer
    """The service's answer: the policy's difficulty estimate, then the search it chose, both counted."""

    def __str__(self) -> str:
        answer = self.answer
        spent = answer.estimation.samples + answer.search.samples
        tokens = answer.estimation.generated_tokens + answer.search.generated_tokens
        verifier_tokens = answer.estimation.verifier_tokens + answer.search.verifier_tokens
        return "\n".join(
            [
                f"answer: {answer.answer}",
                f"difficulty: bin {answer.difficulty_bin} (predicted score {answer.difficulty_score:.3f}, "
                f"{answer.estimation.samples} samples)",
                f"strategy: {answer.strategy_label} at budget {answer.search_budget}",
                f"compute: {spent} samples, {tokens} generated tokens, {verifier_tokens} verifier tokens, "
                f"{answer.flops:.3g} FLOPs (difficulty estimation included)",
            ]
        )


def run_solve(run_dir: str, question: str, budget: int, overrides: list[str]) -> Solution:
    """Replicas and search settings come from the sweep that fitted the policy (its config.yaml)."""
    cfg, policy = load_policy_run(run_dir, overrides)
    start_ray(cfg)
    generators, verifiers = start_replicas(cfg)
    sizes = model_sizes(generators, verifiers)
    return Solution(asyncio.run(solve_question(question, budget, cfg, policy, generators, verifiers, sizes)))
