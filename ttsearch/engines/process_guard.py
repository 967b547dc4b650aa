"""An engine never outlives the replica that started it.

vLLM runs its engine in child processes (`VLLM::EngineCore`, `VLLM::Worker`) that hold gigabytes of RAM or a GPU's
memory. When the replica actor ends without shutting its engine down — `ray stop --force`, a lost raylet, a crash or
a kill while the engine is still loading — those children are orphaned and keep running, and the next replica on the
node cannot get the memory. Ray's own clean-up of a worker's children needs a live raylet, so it cannot cover the
case where the raylet is what died.

The guard is a small watchdog process per replica. The replica leads its own process group (Ray already gives each
worker one; otherwise the guard makes one), so every engine process it starts is in that group. The watchdog sits in
a session of its own, outside the group and outside Ray's process names (so `ray stop` leaves it alone), waits on a
pidfd of the replica, and when the replica is gone by whatever means it sends the group SIGTERM (vLLM's engine core
shuts down cleanly on it, and its workers follow through their death pipe), then SIGKILL to whatever is left after
`GRACE_S`. It imports nothing but the standard library, so it costs a few MiB and starts in milliseconds.

Run as `python .../ttsearch/process_guard.py PID GRACE_S` (what `guard_process_group` starts: by file, so it runs
wherever the replica's code came from, an installed wheel or a job's working_dir).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 5.0
"""How long the engine processes get to exit on SIGTERM before the rest of the group is SIGKILLed."""
POLL_S = 0.1


def guard_process_group(grace_s: float = GRACE_S) -> subprocess.Popen:
    """Make this process lead its own process group and start the watchdog that ends the group when this process
    ends. Call it first thing in a replica's constructor, before any engine process is started."""
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)
    return subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), str(grace_s)],
        start_new_session=True,  # outside the group it ends, and deaf to the terminal's Ctrl-C
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def end_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to the group, then SIGKILL once `grace_s` has passed with any member still there."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_for_exit(pid: int) -> None:
    """Block until `pid`, this process's parent, has exited (at once if it already has)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    # The pid could have been reused before pidfd_open: it is still our parent only if it never exited.
    if os.getppid() != pid:
        return
    select.select([pidfd], [], [])


def main(argv: list[str] | None = None) -> None:
    pid_text, grace_text = argv or sys.argv[1:]
    pid = int(pid_text)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the replica's end ends the guard
    wait_for_exit(pid)
    end_group(pid, float(grace_text))


if __name__ == "__main__":
    main()
