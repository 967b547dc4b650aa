"""The online compute-optimal solve: planning from a policy, and one real question end to end."""

from __future__ import annotations

import asyncio
import json

import pytest
from ttsearch.pipelines.solve import solve_question

from ttsearch.analysis.policy import POLICY_FILE, POLICY_VERSION, load_policy
from ttsearch.config import load_config
from ttsearch.runtime.replicas import model_sizes
from ttsearch.search.strategies import strategy_label
from ttsearch.serving.service import policy_plan, spec_for

STRATEGIES = "strategies=[{name: best_of_n, selections: [majority, weighted]}, {name: beam, beam_width: 2}]"


def write_policy(run_dir, estimation_samples=2, thresholds=(0.7, 0.5, 0.3, 0.1)):
    choices = [
        {"budget": b, "bin": k, "strategy_label": "beam(M=2)/weighted" if k >= 4 else "best_of_n/majority"}
        for b in (2, 4)
        for k in range(1, 6)
    ]
    (run_dir / POLICY_FILE).write_text(
        json.dumps(
            {
                "version": POLICY_VERSION,
                "difficulty": {
                    "kind": "predicted",
                    "estimation_samples": estimation_samples,
                    "n_bins": 5,
                    "thresholds": list(thresholds),
                },
                "choices": choices,
            }
        )
    )
    return load_policy(run_dir)


def test_plan_spends_the_rest_of_the_budget_on_the_bins_strategy(tmp_path):
    policy = write_policy(tmp_path)
    assert policy_plan(policy, 6, 0.9) == (4, "best_of_n/majority"), "6 - 2 estimation samples leaves 4"
    assert policy_plan(policy, 5, 0.05) == (2, "beam(M=2)/weighted"), "3 left: the largest fitted budget ≤ 3"
    with pytest.raises(ValueError, match="ask for at least 4"):
        policy_plan(policy, 3, 0.5)


def test_labels_map_back_to_the_sweeps_strategy_configuration():
    cfg = load_config(None, [STRATEGIES, "budgets=[2,4]"])
    spec, selection = spec_for("beam(M=2)/weighted", cfg.strategies)
    assert spec.name == "beam" and spec.beam_width == 2 and selection == "weighted"
    with pytest.raises(ValueError, match="does not define"):
        spec_for("lookahead(M=2,k=1)/weighted", cfg.strategies)


NEWER_STRATEGIES = (
    "strategies=[{name: dvts, beam_width: 2}, {name: rebase, rebase_temperature: 0.5}, {name: rebase}, "
    "{name: particle_filter, particle_temperature: 2.0, selections: [majority, weighted]}, "
    "{name: early_stop}, {name: early_stop, early_stop_share: 0.5}, "
    "{name: early_stop, early_stop_inner: beam, beam_width: 2, early_stop_round: 2, aggregation: min}, "
    "{name: early_stop, early_stop_inner: particle_filter, particle_temperature: 0.5}]"
)


def test_labels_of_the_newer_strategies_map_back_to_their_configuration():
    """A policy names a configuration by its label: every configuration must get a label of its own back."""
    cfg = load_config(None, [NEWER_STRATEGIES, "budgets=[4,8]"])
    pairs = [(spec, selection) for spec in cfg.strategies for selection in spec.selections]
    assert len(pairs) == 9 and {spec.name for spec, _ in pairs} == {"dvts", "rebase", "particle_filter", "early_stop"}
    for spec, selection in pairs:
        assert spec_for(strategy_label(spec, selection), cfg.strategies) == (spec, selection)


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
