"""The benchmark's plan and its figures (the measurements themselves need engines: `ttsearch bench`)."""

from __future__ import annotations

from pipelines.bench import Measurement, _row, benchmark_cases
from ttsearch.config import CONF_DIR, load_config


def test_cases_measure_scheduling_alone_then_the_real_verifier_for_chosen_strategies():
    cfg = load_config(CONF_DIR / "bench.yaml")
    cases = [(spec.name, kind) for spec, kind in benchmark_cases(cfg)]
    assert cases == [("beam", "hash"), ("lookahead", "hash"), ("best_of_n", "hash"), ("beam", "lm_judge")]
    assert cfg.data.limit >= 32 and cfg.budgets == [16] and cfg.strategies[0].beam_width == 4


def test_figures_are_ratios_to_the_offline_and_synchronous_runs():
    def m(mode: str, wall: float, tokens: int, **extra) -> Measurement:
        return Measurement("beam", "hash", mode, 8, wall, tokens, 1000, 600, **extra)

    offline, sync = m("offline", 10.0, 10_000), m("synchronous", 10.0, 2_000)
    ready = m("ready_queue", 10.0, 9_000, driver_busy_s=0.1)
    row = _row(ready, offline, sync)
    assert row["efficiency"] == 0.9 and row["speedup_vs_sync"] == 4.5
    assert row["prefix_hit"] == 0.6 and row["sched_overhead"] == 0.01 and row["problems_per_min"] == 48.0
