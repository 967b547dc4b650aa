"""The benchmark's plan and its figures (the measurements themselves need engines: `ttsearch bench`)."""

from __future__ import annotations

from ttsearch.pipelines.bench import Measurement, VerifierCost, _row, benchmark_cases

from ttsearch.cli import COMMANDS
from ttsearch.config import load_config
from ttsearch.search.strategies import strategy_names

BENCH_CONFIGS = COMMANDS["bench"].configs


def test_cases_measure_scheduling_alone_for_every_strategy_then_the_real_verifier_on_each_backend():
    cfg = load_config(BENCH_CONFIGS)
    cases = [(case.spec.name, case.verifier, case.backend) for case in benchmark_cases(cfg)]
    assert cases == [
        *(
            (name, "hash", "")
            for name in (
                "beam",
                "lookahead",
                "best_of_n",
                "revisions",
                "dvts",
                "rebase",
                "particle_filter",
                "early_stop",
            )
        ),
        ("beam", "lm_judge", "generator"),
        ("beam", "lm_judge", "vllm"),
        ("lookahead", "lm_judge", "generator"),
        ("lookahead", "lm_judge", "vllm"),
    ]
    assert {spec.name for spec in cfg.strategies} == set(strategy_names()), "every strategy is benchmarked"
    assert cfg.data.limit >= 32 and cfg.budgets == [16] and cfg.strategies[0].options.beam_width == 4


def test_auto_backends_resolve_and_repeat_once():
    cfg = load_config(BENCH_CONFIGS, ["bench.real_verifier_backends=[auto,generator,transformers]"])
    backends = [case.backend for case in benchmark_cases(cfg) if case.verifier == "lm_judge"]
    assert backends == ["generator", "transformers", "generator", "transformers"], "auto is the generator here"


def test_figures_are_ratios_to_the_offline_and_synchronous_runs():
    def m(mode: str, wall: float, tokens: int, **extra) -> Measurement:
        return Measurement("beam", "hash", mode, 8, wall, tokens, 1000, 600, **extra)

    offline, sync = m("offline", 10.0, 10_000), m("synchronous", 10.0, 2_000)
    ready = m("ready_queue", 10.0, 9_000, driver_busy_s=0.1)
    row = _row(ready, offline, sync, free_tok_s=None)
    assert row["efficiency"] == 0.9 and row["speedup_vs_sync"] == 4.5
    assert row["prefix_hit"] == 0.6 and row["sched_overhead"] == 0.01 and row["problems_per_min"] == 48.0


def test_verifier_cost_figures():
    cost = VerifierCost.between(
        "vllm",
        [{"busy_s": 1.0, "scored_steps": 10, "tokens": 1000, "cached_tokens": 500}],
        [{"busy_s": 6.0, "scored_steps": 110, "tokens": 21_000, "cached_tokens": 16_500}],
    )
    assert (cost.busy_s, cost.scored_steps, cost.prompt_tokens, cost.cached_tokens) == (5.0, 100, 20_000, 16_000)
    assert cost.cache_hit_rate == 0.8 and cost.computed_per_step == 40.0

    def m(mode: str, tokens: int, verifier_cost: VerifierCost | None = None) -> Measurement:
        return Measurement("beam", "lm_judge", mode, 8, 10.0, tokens, 1000, 600, verifier_cost=verifier_cost)

    offline, sync = m("offline", 10_000), m("synchronous", 2_000, cost)
    row = _row(m("ready_queue", 6_000, cost), offline, sync, free_tok_s=900.0)
    assert row["backend"] == "vllm" and row["verifier_busy"] == 0.5 and row["verifier_prompt_tokens"] == 20_000
    assert row["verifier_cache_hit"] == 0.8 and row["verifier_computed_per_step"] == 40.0
    assert row["vs_hash"] == round(600 / 900, 3)
    assert _row(sync, offline, sync, free_tok_s=900.0)["vs_hash"] is None, "the ratio is of ready-queue runs"
    assert _row(m("ready_queue", 6_000), offline, sync, free_tok_s=900.0)["verifier_busy"] is None
