"""The process guard ends a replica's process group when the replica dies, however it dies (no Ray, no model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil

from ttsearch.engines.process_guard import end_group, group_alive

# A stand-in replica: it guards its group, starts two "engine" processes in it (one of them deaf to SIGTERM, as a
# stuck engine would be), prints their pids, and waits to be killed.
REPLICA = textwrap.dedent("""
    import subprocess, sys, time
    from ttsearch.engines.process_guard import guard_process_group
    guard = guard_process_group(grace_s=float(sys.argv[1]))
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    deaf = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('deaf', flush=True); "
            "time.sleep(600)")
    stubborn = subprocess.Popen([sys.executable, "-c", deaf], stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()
    print(polite.pid, stubborn.pid, guard.pid, flush=True)
    time.sleep(600)
""")


def start_replica(grace_s: float) -> tuple[subprocess.Popen, list[int], int]:
    replica = subprocess.Popen(
        [sys.executable, "-c", REPLICA, str(grace_s)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    polite, stubborn, guard = map(int, replica.stdout.readline().split())
    return replica, [polite, stubborn], guard


def gone_within(pids: list[int], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        if not alive:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_a_killed_replica_takes_its_engine_processes_with_it():
    replica, engines, guard = start_replica(grace_s=1.0)
    try:
        assert os.getpgid(engines[0]) == os.getpgid(engines[1]) == replica.pid  # the replica leads their group
        assert os.getpgid(guard) != replica.pid  # the guard is outside the group it ends
        replica.kill()  # SIGKILL: no clean-up of its own runs, as under `ray stop --force`
        replica.wait()
        seconds = gone_within([*engines, guard], timeout_s=10)
        assert seconds is not None, "engine processes outlived their replica"
        assert seconds >= 1.0  # the stubborn one needed the SIGKILL after the grace period
    finally:
        for pid in engines:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_guard_waits_quietly_while_the_replica_lives():
    replica, engines, guard = start_replica(grace_s=1.0)
    try:
        time.sleep(1.0)
        assert all(psutil.Process(pid).status() != "zombie" for pid in [*engines, guard])
        assert psutil.Process(guard).cpu_times().user < 0.5  # it blocks on a pidfd, it does not poll
    finally:
        os.killpg(replica.pid, signal.SIGKILL)
        replica.wait()
        assert gone_within([guard], timeout_s=10) is not None


def test_end_group_stops_at_once_when_every_member_obeys_sigterm():
    member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    started = time.monotonic()
    ending = threading.Thread(target=end_group, args=(member.pid, 30))  # member's exit is reaped meanwhile
    ending.start()
    member.wait(timeout=5)
    ending.join(timeout=5)
    assert not ending.is_alive()
    assert time.monotonic() - started < 5
    assert member.returncode == -signal.SIGTERM
    assert not group_alive(member.pid)


def test_end_group_of_a_group_already_gone_is_a_no_op():
    member = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    member.wait()
    end_group(member.pid, grace_s=30)  # returns at once: nothing to signal


def test_a_guard_whose_replica_is_already_gone_ends_the_group_at_once():
    """The replica may die before its guard has even started waiting: the guard still ends the group."""
    script = textwrap.dedent("""
        import os, subprocess, sys
        from ttsearch.engines.process_guard import guard_process_group
        engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(engine.pid, flush=True)
        guard_process_group(grace_s=0.5)
        os._exit(0)
    """)
    replica = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, start_new_session=True)
    engine = int(replica.stdout.split()[0])
    assert gone_within([engine], timeout_s=10) is not None
