"""The online compute-optimal solve: one real question end to end on the session's replicas."""

from __future__ import annotations

import asyncio

import pytest
from ttsearch.pipelines.solve import solve_question

from tests.fixtures import STRATEGIES, write_policy
from ttsearch.config import load_config
from ttsearch.runtime.replicas import model_sizes


@pytest.mark.integration
def test_solve_one_question_counts_estimation_and_search(tmp_path, cache_dir, generator_replicas, lm_judge_replicas):
    cfg = load_config(
        None,
        [
            STRATEGIES,
            "budgets=[2,4]",
            "search.max_steps=2",
            "search.max_step_tokens=24",
            "search.max_solution_tokens=48",
            f"cache_dir={cache_dir}",
        ],
    )
    policy = write_policy(tmp_path)
    sizes = model_sizes(generator_replicas, lm_judge_replicas)
    solution = asyncio.run(
        solve_question("What is 3 + 4?", 6, cfg, policy, generator_replicas, lm_judge_replicas, sizes)
    )
    assert solution.estimation.samples == 2 and solution.search_budget == 4
    assert solution.strategy_label in ("best_of_n/majority", "beam(M=2)/weighted")
    assert solution.difficulty_bin == policy.bin_of(solution.difficulty_score)
    assert solution.search.samples >= 4 and solution.flops > 2 * sizes.generator * solution.search.generated_tokens
