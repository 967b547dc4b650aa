"""The documented local-cluster commands ("`ray job submit` and the dashboard" in docs/guides/cluster.md) run as
written.

The fenced bash block under that heading is read from the cluster guide, with `\\` continuations joined, and
each line runs with bash, in order, under `set -e`, from the repository root. Only two things are
changed, both on the `ttsearch sweep` line:
  (a) overrides are appended so that the sweep finishes in about a minute on 2 cores: one problem,
      budget 2, best-of-N with majority selection (no verifier replica), 32-token solutions, and a
      0.5 GiB KV cache;
  (b) `output_dir=` is pointed into the test's tmp_path. A later override wins, so the guide's own
      `output_dir=$PWD/runs/job` stays on the line.
Nothing else is replaced. The block uses a fixed `--submission-id`, the default ports and a
machine-wide `ray stop`, and all of them run verbatim. To make that safe, the block runs in new PID,
mount and network namespaces (`unshare`, which needs root or CAP_SYS_ADMIN; the test skips
without it):
  - the network namespace has only its own loopback, so ports 6379, 8265, 10001 and 52365 are free
    even while the session's test cluster (tests/conftest.py) or someone else's Ray holds them on the
    host;
  - in the PID namespace, `ray stop` sees and stops only this block's processes, never the session's
    cluster or another engineer's. `--kill-child` ends the whole namespace if the test times out;
  - `/tmp/ray` and `~/.ray` are bind-mounted from tmp_path. The head's session files then never
    touch the host's `/tmp/ray`, whose `ray_current_cluster` `address="auto"` reads. The block
    starts like a fresh machine, with no auth token, so its `ray get-auth-token --generate` makes
    one, and the user's real `~/.ray/auth_token` is left alone.
The model cache (`~/.cache/ttsearch`, filled by `make model`) is not masked, so the job's vLLM
replica loads the embedded model from it. RAY_* variables of the pytest process are dropped, as in a
fresh shell, and RAY_USAGE_STATS_ENABLED=0 is added back.

Between the guide's last job command and its `ray stop`, the test adds one check of its own: the
job's status, asked *without* `RAY_AUTH_MODE`, must be refused for a missing token. That shows the
head really enforced authentication and that the guide's `export` is what lets its clients in.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stop_harness import isolation_available

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/guides/cluster.md"
HEADING = "## `ray job submit` and the dashboard"
# (a): a sweep that finishes in about a minute on 2 cores (keys: ttsearch/config/).
SMALL_SWEEP = [
    "data.limit=1",
    "data.shards=1",
    "budgets=[2]",
    "strategies=[{name: best_of_n, selections: [majority]}]",
    "verifier.kind=majority",
    "search.max_solution_tokens=32",
    "generator.cpu_kv_cache_gib=0.5",
]
TIMEOUT_S = 900


def documented_cluster_commands() -> list[str]:
    """The bash block under HEADING in PAGE, one command per line, `\\` continuations joined."""
    text = (ROOT / PAGE).read_text()
    assert HEADING in text, f"{PAGE} has no heading {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no ```bash block under {HEADING!r}"
    joined = re.sub(r"\\\n\s*", " ", block[1])
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_the_documented_cluster_block_runs_without_placeholders():
    """A cheap check that the block can be run as written, as the integration test below does."""
    commands = documented_cluster_commands()
    assert not [c for c in commands if re.search(r"<[^>]+>", c)], "a placeholder a user must replace"
    programs = [shlex.split(c, comments=True)[:2] for c in commands]
    assert ["ray", "start"] in programs and ["ray", "stop"] in programs
    sweeps = [c for c in commands if "ttsearch sweep" in c]
    assert len(sweeps) == 1 and "#" not in sweeps[0], "one sweep line, no comment after it (overrides go at its end)"
    assert "--submission-id" in sweeps[0]


def harness_script(commands: list[str], tmp_path: Path) -> str:
    """The guide's commands, with the two stated changes, between the namespace set-up and checks."""
    output_dir = tmp_path / "job"
    extra = " ".join(shlex.quote(o) for o in [*SMALL_SWEEP, f"output_dir={output_dir}"])
    (tmp_path / "ray").mkdir()
    (tmp_path / "dotray").mkdir()
    submission_id = re.search(r"--submission-id\s+(\S+)", " ".join(commands))[1]
    lines = [
        "set -euo pipefail",
        "# --- test harness: the namespace's loopback, private /tmp/ray and ~/.ray ---",
        "ip link set lo up",
        'mkdir -p /tmp/ray "$HOME/.ray"',
        f"mount --bind {shlex.quote(str(tmp_path / 'ray'))} /tmp/ray",
        f'mount --bind {shlex.quote(str(tmp_path / "dotray"))} "$HOME/.ray"',
        f"cd {shlex.quote(str(ROOT))}",
        "set -x",
        "# --- the guide's block ---",
    ]
    for command in commands:
        if command.startswith("ray stop"):
            lines += [
                "# --- test harness: a client without RAY_AUTH_MODE is refused ---",
                "set +e",
                f"env -u RAY_AUTH_MODE ray job status --address http://127.0.0.1:8265 {submission_id}"
                f" > {shlex.quote(str(tmp_path / 'no_token.log'))} 2>&1",
                'echo "no-token status exit code: $?"',
                "set -e",
                "# --- the guide's block, continued ---",
            ]
        if "ttsearch sweep" in command:
            command = f"{command} {extra}"  # (a) and (b)
        lines.append(command)
    lines += [
        "set +x",
        "# --- test harness: `ray stop` left no Ray process in this namespace ---",
        f'{shlex.quote(sys.executable)} -c "import psutil; '
        "left = [p.info['name'] for p in psutil.process_iter(['name']) "
        "if p.info['name'] in ('raylet', 'gcs_server') or 'ray::' in (p.info['name'] or '')]; "
        "print('ray processes left:', left)\"",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.integration
def test_documented_cluster_commands_run_verbatim(tmp_path: Path) -> None:
    if not isolation_available():
        pytest.skip("needs PID, mount and network namespaces (util-linux unshare and iproute2 ip, as root)")

    commands = documented_cluster_commands()
    script = harness_script(commands, tmp_path)
    (tmp_path / "script.sh").write_text(script)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # .venv/bin, as the guide assumes
    log_path = tmp_path / "commands.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        # --kill-child: if this test times out, killing unshare kills the namespace's init, hence all of it.
        proc = subprocess.run(
            ["unshare", "--pid", "--mount-proc", "--net", "--kill-child", "bash", str(tmp_path / "script.sh")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=TIMEOUT_S,
            cwd=ROOT,
        )
    elapsed = time.monotonic() - started
    log_text = log_path.read_text()
    tail = "\n".join(log_text.splitlines()[-80:])
    print(f"{PAGE} cluster block: exit {proc.returncode} after {elapsed:.0f} s")
    assert proc.returncode == 0, f"the guide's commands failed (exit {proc.returncode}):\n{tail}"

    submission_id = re.search(r"--submission-id\s+(\S+)", " ".join(commands))[1]
    # Both `ray job submit` (it tails the logs) and `ray job logs --follow` end with the job's status.
    assert log_text.count(f"Job '{submission_id}' succeeded") >= 2, tail
    assert (tmp_path / "dotray" / "auth_token").is_file(), "`ray get-auth-token --generate` wrote no token"
    refused = (tmp_path / "no_token.log").read_text()
    assert "Missing authentication token" in refused, f"a client without the token was not refused:\n{refused}"
    assert "ray processes left: []" in log_text, tail

    import pyarrow.parquet as pq

    shards = sorted((tmp_path / "job" / "results").glob("shard-*.parquet"))
    assert shards, f"no result shards in {tmp_path / 'job'}:\n{tail}"
    rows = pq.read_table([str(shard) for shard in shards]).to_pylist()
    assert len(rows) == 1, rows  # one problem x best-of-N/majority x budget 2 x seed 0
    assert all(not row["error"] for row in rows), [row["error"] for row in rows]
    assert rows[0]["budget"] == 2 and rows[0]["samples"] >= 2 and rows[0]["generated_tokens"] > 0, rows[0]
