"""Fault benchmark: one sweep run twice, as a user runs it, once clean and once with replicas killed.

Both runs are `ttsearch sweep` processes against one local Ray instance this command starts. In the
faulted run, once every replica is up, one generator and one verifier replica are killed with
SIGKILL (`ttsearch.runtime.faults`) at a fixed fraction of the clean run's search time, the way a preempted
node loses them. Ray restarts them while the scheduler replays their unserved requests elsewhere.
Reported per run: exit code, the sweep's own summary line, rows expected / present / duplicated /
failed / missing, and wall time; then the faulted run's extra wall time relative to the clean run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ttsearch.config import ConfigError, SweepConfig, load_config, verifier_family
from ttsearch.runtime.faults import GENERATOR_CLASS, VERIFIER_CLASS, KilledReplica, kill_replica, wait_for_replicas
from ttsearch.runtime.replicas import start_ray
from ttsearch.sweep.data import load_problems
from ttsearch.sweep.jobs import rows_per_problem
from ttsearch.sweep.results import RunStore

ROW_KEY = ("unique_id", "strategy_label", "budget", "seed")


@dataclass(frozen=True)
class SweepRun:
    """One `ttsearch sweep` process and what it left in its output directory."""

    label: str
    """"clean" or "faulted"."""
    exit_code: int
    """The sweep process's exit code."""
    wall_s: float
    """Process start to exit, replica start-up included."""
    search_s: float
    """Every replica up to exit: the part a fault can slow down."""
    rows_expected: int
    """Problems × rows per problem."""
    rows_present: int
    """Distinct row keys saved."""
    rows_duplicated: int
    """Rows saved more than once (a replayed request must not add a row)."""
    rows_failed: int
    """Error rows."""
    rows_missing: int
    """Expected rows not saved."""
    rows_same_answer: int
    """Rows whose answer equals the clean run's (same key); counted for the faulted run, 0 for the clean one."""
    summary: str
    """The sweep's own one-line summary (its `rows:` line)."""
    faults: list[KilledReplica]
    """The replicas killed during the run; none in the clean run."""


@dataclass(frozen=True)
class FaultReport:
    """What `ttsearch bench --faults` measured: printed as a table, saved as JSON with `--json`."""

    clean: SweepRun
    """The run without faults."""
    faulted: SweepRun
    """The run with one generator and one verifier replica killed."""
    workdir: str
    """Holds clean/, faulted/ and each run's log."""

    @property
    def extra_wall(self) -> float:
        """Faulted wall time ÷ clean wall time − 1."""
        return self.faulted.wall_s / self.clean.wall_s - 1

    @property
    def extra_search(self) -> float:
        return self.faulted.search_s / self.clean.search_s - 1

    def __str__(self) -> str:
        columns = ["run", "exit", "faults injected", "rows expected", "present", "duplicated", "failed", "missing"]
        lines = ["| " + " | ".join([*columns, "wall s", "search s"]) + " |", "|" + "---|" * 10]
        for run in (self.clean, self.faulted):
            faults = ", ".join(f"{f.class_name} pid {f.pid}" for f in run.faults) or "none"
            lines.append(
                f"| {run.label} | {run.exit_code} | {faults} | {run.rows_expected} | {run.rows_present} | "
                f"{run.rows_duplicated} | {run.rows_failed} | {run.rows_missing} | {run.wall_s:.1f} | "
                f"{run.search_s:.1f} |"
            )
        faulted = self.faulted
        lines += [
            "",
            f"clean:   {self.clean.summary}",
            f"faulted: {faulted.summary}",
            f"extra wall time of the faulted run: {self.extra_wall:+.1%} ({self.extra_search:+.1%} of search time)",
            f"faulted rows with the clean run's answer: {faulted.rows_same_answer} of {faulted.rows_present}",
            f"runs in {self.workdir}",
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"extra_wall": self.extra_wall, "extra_search": self.extra_search}, indent=2)


def run_fault_bench(config: Sequence[str], overrides: Sequence[str], kill_at: float) -> FaultReport:
    """Run the sweep clean, then with one generator and one verifier replica killed at `kill_at` (a
    fraction of the clean run's search time after all replicas are up). Both runs write into a new
    directory under `output_dir`, so neither resumes an earlier one."""
    cfg = load_config(config, overrides)
    if verifier_family(cfg.verifier.kind).model_free:
        raise ConfigError(f"bad config: key 'verifier.kind': {cfg.verifier.kind} has no replicas to kill")
    if not 0 < kill_at < 1:
        raise ConfigError(f"--kill-at: a fraction of the clean run's search time in (0, 1), got {kill_at}")
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    workdir = Path(cfg.output_dir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    start_ray(cfg)
    import ray

    address = ray.get_runtime_context().gcs_address
    expected = len(problems) * rows_per_problem(cfg)
    clean, clean_rows = _sweep("clean", config, overrides, cfg, address, workdir, expected, kill_after_s=None)
    faulted, faulted_rows = _sweep(
        "faulted", config, overrides, cfg, address, workdir, expected, kill_after_s=kill_at * clean.search_s
    )
    faulted = replace(faulted, rows_same_answer=_same_answers(clean_rows, faulted_rows))
    return FaultReport(clean, faulted, str(workdir))


def _sweep(
    label: str,
    config: Sequence[str],
    overrides: Sequence[str],
    cfg: SweepConfig,
    address: str,
    workdir: Path,
    expected: int,
    kill_after_s: float | None,
) -> tuple[SweepRun, list[dict]]:
    output_dir = workdir / label
    command = [sys.executable, "-m", "ttsearch.cli", "sweep"]
    command += [arg for path in config for arg in ("--config", str(path))]
    command += [*overrides, f"output_dir={output_dir}", f"ray_address={address}"]
    log_path = workdir / f"{label}.log"
    faults: list[KilledReplica] = []
    up_at: list[float] = []
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        watcher = threading.Thread(
            target=_watch, args=(cfg, address, process, up_at, faults, kill_after_s), daemon=True
        )
        watcher.start()
        exit_code = process.wait()
        watcher.join()
    ended = time.monotonic()
    rows = _read_rows(output_dir)
    keys = Counter(tuple(row[k] for k in ROW_KEY) for row in rows)
    run = SweepRun(
        label=label,
        exit_code=exit_code,
        wall_s=ended - started,
        search_s=ended - (up_at[0] if up_at else started),
        rows_expected=expected,
        rows_present=len(keys),
        rows_duplicated=sum(count - 1 for count in keys.values()),
        rows_failed=sum(row["error"] is not None for row in rows),
        rows_missing=expected - len(keys),
        rows_same_answer=0,
        summary=_summary_line(log_path.read_text()),
        faults=faults,
    )
    return run, rows


def _watch(
    cfg: SweepConfig,
    address: str,
    process: subprocess.Popen,
    up_at: list[float],
    faults: list[KilledReplica],
    kill_after_s: float | None,
) -> None:
    """Note when every replica is up; in the faulted run, kill one of each kind `kill_after_s` later."""
    timeout = cfg.generator.start_timeout_s
    wait_for_replicas(GENERATOR_CLASS, cfg.generator.replicas, timeout, address)
    wait_for_replicas(VERIFIER_CLASS, cfg.verifier.replicas, timeout, address)
    up_at.append(time.monotonic())
    if kill_after_s is None:
        return
    deadline = time.monotonic() + kill_after_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return
        time.sleep(0.1)
    for class_name in (GENERATOR_CLASS, VERIFIER_CLASS):
        faults.append(kill_replica(class_name, address))


def _summary_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("rows:")]
    return lines[-1] if lines else "(no summary line)"


def _read_rows(output_dir: Path) -> list[dict]:
    """The run's row keys, errors and answers; none when it saved nothing."""
    store = RunStore(output_dir)
    return store.read_results().select([*ROW_KEY, "error", "answer"]).to_pylist() if store.exists("results") else []


def _same_answers(clean: list[dict], faulted: list[dict]) -> int:
    """vLLM on CPU is not bit-stable across batch compositions, so a replay may differ; count how often not."""
    answers = {tuple(row[k] for k in ROW_KEY): row["answer"] for row in clean}
    return sum(answers.get(tuple(row[k] for k in ROW_KEY), object()) == row["answer"] for row in faulted)
