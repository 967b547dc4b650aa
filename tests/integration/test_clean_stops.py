"""Clean stops on real engines: no vLLM engine outlives its replica, and commands stop when signalled by pid.

Each scenario runs in namespaces of its own (`tests/stop_harness.py`): its own Ray cluster, stopped with a real
`ray stop --force` that cannot reach the test run's shared cluster, and every process left afterwards is counted.
"""

from __future__ import annotations

import pytest

from tests.stop_harness import isolation_available, run_isolated
from ttsearch.sweep.jobs import row_job_key
from ttsearch.sweep.results import RunStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not isolation_available(), reason="needs PID and network namespaces (unshare, as root)"),
]
SCENARIO_TIMEOUT_S = 900


def assert_clean(result: dict, within_s: float) -> None:
    assert "error" not in result, result["error"]
    assert result["leftover_engines"] == 0, f"engine processes outlived their replicas: {result['leftover']}"
    assert result["leftover"] == [], f"processes left behind: {result['leftover']}"
    assert result["seconds_until_clean"] <= within_s


def test_ray_stop_force_ends_the_engines_of_loaded_replicas():
    """A generator and a vLLM verifier replica, both loaded; `ray stop --force` kills their actors outright."""
    result = run_isolated(["ray-stop", "--phase", "ready"], SCENARIO_TIMEOUT_S)
    assert result.get("engines_before", 0) >= 4, result  # EngineCore + Worker per engine
    assert result["loaded_before_stop"]
    assert_clean(result, within_s=20)


def test_ray_stop_force_ends_an_engine_that_is_still_loading():
    result = run_isolated(["ray-stop", "--phase", "loading"], SCENARIO_TIMEOUT_S)
    assert result.get("engines_before", 0) >= 1, result
    assert not result["loaded_before_stop"], "the stop came after the engine had loaded"
    assert_clean(result, within_s=20)


def test_serve_stops_within_30_s_on_sigint_to_its_pid_and_leaves_nothing():
    """`kill -INT <pid>` (not a terminal's Ctrl-C, which signals Ray's processes too): the command deletes its app,
    shuts down the Ray instance it started, and its replicas' engines end with them."""
    result = run_isolated(
        ["command", "--signal", "INT", "--started", "serving '", "--", "serve", "serve.port=8011"], SCENARIO_TIMEOUT_S
    )
    assert "error" not in result, result["error"]
    assert result["engines_before"] >= 4, "two generator replicas were serving"
    assert result["exit_code"] == 130, result["output"][-3000:]
    assert result["exit_s"] <= 30
    assert "Deleting app ['ttsearch']" in result["output"]
    assert_clean(result, within_s=30)


SWEEP = [
    "data.limit=6",
    "data.shards=1",  # one shard: what survives the stop is its partial record, saved on the way out
    "budgets=[2]",
    "seeds=[0]",
    "verifier.kind=majority",
    "search.temperature=0",
    "search.max_solution_tokens=32",
    "scheduler.max_in_flight=1",  # one problem at a time, so the stop lands between jobs
    "strategies=[{name: best_of_n, selections: [majority]}]",
]


def test_sweep_stops_on_sigterm_to_its_pid_keeps_its_finished_work_and_a_rerun_computes_only_the_rest(tmp_path):
    """The same command twice, as a user would: stopped by SIGTERM, then run again to the end."""
    out = tmp_path / "stopped"
    sweep = ["sweep", *SWEEP, f"output_dir={out}", "generator.replicas=1", "generator.cpu_kv_cache_gib=0.25"]
    result = run_isolated(
        ["command", "--signal", "TERM", "--started", r"searches:.*\| [1-5]/6 ", "--", *sweep], SCENARIO_TIMEOUT_S
    )
    assert "error" not in result, result["error"]
    assert result["exit_code"] == 143, result["output"][-3000:]
    assert result["exit_s"] <= 30
    assert "re-run the same command to compute the rest" in result["output"]
    assert_clean(result, within_s=30)

    store = RunStore(str(out))
    saved = store.read_partial(0, 1)
    assert saved is not None, f"the interrupted shard saved no partial record:\n{result['output'][-3000:]}"
    kept = {row_job_key(row): row["wall_s"] for row in saved.to_pylist()}
    assert 1 <= len(kept) < 6, f"the stop landed mid-sweep: {len(kept)} of 6 jobs kept"

    rerun = run_isolated(["command", "--signal", "none", "--", *sweep], SCENARIO_TIMEOUT_S)
    assert "error" not in rerun, rerun["error"]
    assert rerun["exit_code"] == 0, rerun["output"][-3000:]
    rows = store.read_results().to_pylist()
    assert len(rows) == 6 and store.finished_shards(1) == {0}
    # A job computed again would carry its new wall time: the kept ones carry the first run's.
    assert {key: wall for key, wall in ((row_job_key(r), r["wall_s"]) for r in rows) if key in kept} == kept
