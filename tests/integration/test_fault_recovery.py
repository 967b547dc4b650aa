"""Real faults on the session's Ray cluster: replica processes SIGKILLed and a node removed mid-sweep.

Each test runs `ttsearch sweep` as a user does (a separate driver process joining the cluster) and
checks what the issue asks of it: exit 0, every row exactly once, no error rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures import free_port
from ttsearch.config import DataConfig
from ttsearch.runtime.faults import GENERATOR_CLASS, VERIFIER_CLASS, alive_replicas, kill_replica, wait_for_replicas
from ttsearch.sweep.results import RunStore

pytestmark = pytest.mark.integration

SMALL = [
    "data.limit=6",
    "data.shards=3",
    "budgets=[2]",
    "seeds=[0]",
    "generator.replicas=2",
    "generator.cpu_kv_cache_gib=0.5",
    "search.max_steps=2",
    "search.max_step_tokens=24",
    "search.max_solution_tokens=48",
    "scheduler.health_check_interval_s=1",
    "strategies=[{name: best_of_n, selections: [weighted, majority]}, {name: beam, beam_width: 2}]",
]
ROWS = 6 * 3  # problems x (2 best-of-N selections + beam)
DATASET = DataConfig().path


def start_sweep(cluster, tmp_path: Path, cache_dir: str, *overrides: str) -> tuple[subprocess.Popen, Path, Path]:
    output_dir, log_path = tmp_path / "run", tmp_path / "sweep.log"
    command = [sys.executable, "-m", "ttsearch.cli", "sweep", *SMALL, *overrides]
    command += [f"output_dir={output_dir}", f"cache_dir={cache_dir}", f"ray_address={cluster.address}"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return process, output_dir, log_path


def assert_every_row_once_and_no_errors(process: subprocess.Popen, output_dir: Path, log_path: Path) -> None:
    exit_code = process.wait(timeout=900)
    log = log_path.read_text()
    assert exit_code == 0, log[-4000:]
    rows = RunStore(output_dir).read_results().to_pylist()
    keys = Counter((r["unique_id"], r["strategy_label"], r["budget"], r["seed"]) for r in rows)
    assert len(keys) == ROWS and max(keys.values()) == 1, "every row exactly once"
    assert [r["error"] for r in rows if r["error"] is not None] == []
    assert f"rows: {ROWS} done (0 ungraded), 0 failed" in log and ", 0 missing" in log, "the sweep's own summary agrees"


def test_replicas_sigkilled_mid_sweep_lose_no_row(ray_session, ray_cluster, tmp_path, cache_dir):
    own_job = ray_session.get_runtime_context().get_job_id()  # the session's shared replicas stay alive
    process, output_dir, log_path = start_sweep(
        ray_cluster,
        tmp_path,
        cache_dir,
        "verifier.kind=lm_judge",
        "verifier.replicas=2",
        "verifier.backend=transformers",  # replicas of their own, to kill
    )
    try:
        wait_for_replicas(GENERATOR_CLASS, 2, 300, ray_cluster.address, exclude_job_id=own_job)
        wait_for_replicas(VERIFIER_CLASS, 2, 300, ray_cluster.address, exclude_job_id=own_job)
        time.sleep(2)  # the search is under way
        assert process.poll() is None, "the sweep ended before any fault could be injected"
        killed = [kill_replica(name, ray_cluster.address, own_job) for name in (GENERATOR_CLASS, VERIFIER_CLASS)]
        assert_every_row_once_and_no_errors(process, output_dir, log_path)
    finally:
        process.kill()
    from ray.util.state import get_actor

    for replica in killed:
        assert get_actor(replica.actor_id, address=ray_cluster.address).num_restarts >= 1, "Ray restarted it"


def test_losing_a_worker_node_mid_sweep_keeps_every_row_once(ray_session, ray_cluster, tmp_path, cache_dir):
    from ray.util.state import list_actors, list_tasks

    own_job = ray_session.get_runtime_context().get_job_id()
    process, output_dir, log_path = start_sweep(ray_cluster, tmp_path, cache_dir, "verifier.kind=majority")
    try:
        # The node joins once the sweep's driver is connected: every node here shares one IP, so a driver
        # started earlier could attach to this node's raylet, and on a real cluster the driver's node stays.
        deadline = time.monotonic() + 120
        created = [("class_name", "=", GENERATOR_CLASS), ("state", "!=", "DEAD")]
        while not [a for a in list_actors(address=ray_cluster.address, filters=created) if a.job_id != own_job]:
            assert time.monotonic() < deadline, "the sweep created no generator replica"
            time.sleep(0.2)
        node = ray_cluster.add_node(num_cpus=4, metrics_export_port=free_port(), runtime_env_dir_name="runtime_node3")
        ray_cluster.wait_for_nodes()
        wait_for_replicas(GENERATOR_CLASS, 2, 300, ray_cluster.address, exclude_job_id=own_job)

        deadline = time.monotonic() + 120
        while not _work_on(node.node_id, ray_cluster.address, own_job, list_tasks) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _work_on(node.node_id, ray_cluster.address, own_job, list_tasks), "nothing ran on the node to lose"
        assert process.poll() is None, "the sweep ended before the node could be removed"
        ray_cluster.remove_node(node)
        assert_every_row_once_and_no_errors(process, output_dir, log_path)
    finally:
        process.kill()


def _work_on(node_id: str, address: str, own_job: str, list_tasks) -> bool:
    """A shard task running or a sweep replica living on the node."""
    tasks = list_tasks(address=address, filters=[("node_id", "=", node_id), ("state", "=", "RUNNING")], limit=1000)
    replicas = [r for r in alive_replicas(GENERATOR_CLASS, address, own_job) if r.get("node_id") == node_id]
    return bool(replicas) or any(getattr(task, "job_id", own_job) != own_job for task in tasks)


def test_one_over_long_prompt_fails_only_its_problem(tmp_path, cache_dir, ray_session, generator_replicas):
    from ttsearch.config import load_config
    from ttsearch.sweep.data import load_problems
    from ttsearch.sweep.jobs import row_counts, run_sweep

    problems = load_problems(DATASET, limit=3)
    problems.insert(1, problems[0] | {"unique_id": "too-long", "problem": "Add these numbers: " + "1 + " * 3000 + "1."})
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(problem) + "\n" for problem in problems))
    overrides = [
        f"data.path={path}",
        "data.shards=1",
        "budgets=[2]",
        "seeds=[0]",
        "verifier.kind=majority",
        "search.max_steps=2",
        "search.max_step_tokens=24",
        "search.max_solution_tokens=48",
        "strategies=[{name: best_of_n, selections: [majority]}, {name: beam, beam_width: 2}]",
        f"output_dir={tmp_path / 'run'}",
        f"cache_dir={cache_dir}",
    ]
    cfg = load_config(None, overrides)
    table = run_sweep(cfg, replicas=(generator_replicas, []))
    rows = table.to_pylist()
    failed = [row for row in rows if row["error"] is not None]
    assert {row["unique_id"] for row in failed} == {"too-long"} and len(failed) == 2
    assert all("leaves no room to generate within generator.max_model_len=2048" in row["error"] for row in failed)
    normal = [row for row in rows if row["unique_id"] != "too-long"]
    assert len(normal) == 6 and all(row["samples"] >= 2 and row["generated_tokens"] > 0 for row in normal)
    counts = row_counts(cfg, table)
    assert (counts.done, counts.failed, counts.missing) == (6, 2, 0)


def test_gpu_replicas_on_a_cluster_without_gpus_fail_after_a_bounded_wait(ray_session, cache_dir):
    from ttsearch.actors.generator import create_generator_replicas

    from ttsearch.config import GeneratorConfig
    from ttsearch.runtime.backends import ReplicaStartError

    started = time.monotonic()
    with pytest.raises(ReplicaStartError, match=r"each asks for num_gpus=1, .* the cluster has 0 GPUs"):
        create_generator_replicas(GeneratorConfig(num_gpus=1, start_timeout_s=3), cache_dir)
    assert time.monotonic() - started < 30
