"""End to end: a real (tiny) sweep through Ray Data shards, real Ray actors, real vLLM, real PRM."""

from __future__ import annotations

import pytest

from pipelines.sweep import run_sweep, summary
from ttsearch.config import load_config

TINY = [
    "data.limit=2",
    "data.shards=2",
    "budgets=[2]",
    "seeds=[0]",
    "search.max_steps=2",
    "search.max_step_tokens=24",
    "search.max_solution_tokens=48",
    "strategies=[{name: best_of_n, selections: [naive, weighted, majority]},"
    " {name: beam, beam_width: 2}, {name: lookahead, beam_width: 2, lookahead: 1}]",
]


@pytest.mark.integration
def test_tiny_sweep_runs_every_strategy_through_real_replicas(
    tmp_path, cache_dir, generator_replicas, lm_judge_replicas
):
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}"])
    table = run_sweep(cfg, replicas=(generator_replicas, lm_judge_replicas))
    rows = table.to_pylist()
    assert len(rows) == 2 * (3 + 1 + 1)
    keys = {(r["unique_id"], r["strategy_label"], r["budget"], r["seed"]) for r in rows}
    assert len(keys) == len(rows), "one row per (problem, strategy, budget, seed)"
    assert {r["strategy_label"] for r in rows} == {
        "best_of_n/naive",
        "best_of_n/weighted",
        "best_of_n/majority",
        "beam(M=2)/weighted",
        "lookahead(M=2,k=1)/weighted",
    }
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["generated_tokens"] > 0 and row["prompt_tokens"] > 0 and row["verifier_tokens"] > 0
        assert row["samples"] >= 2 and len(row["candidate_scores"]) >= 1
        assert all(0.0 <= s <= 1.0 for s in row["candidate_scores"])
    lookahead = [r for r in rows if r["strategy"] == "lookahead"]
    beam = [r for r in rows if r["strategy"] == "beam"]
    assert sum(r["samples"] for r in lookahead) > sum(r["samples"] for r in beam), "rollouts cost samples"
    assert "best_of_n/weighted" in summary(table)

    with pytest.raises(FileExistsError, match="already holds results"):
        run_sweep(cfg, replicas=(generator_replicas, lm_judge_replicas))
