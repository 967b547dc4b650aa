"""Fault injection: kill replica processes the way a preempted node or an OOM killer does.

Used by the fault tests and `ttsearch bench --faults`. Replicas are found through Ray's state API
and killed with SIGKILL by pid, so Ray sees an unexpected death (and restarts the actor) exactly as
it would in production; `ray.kill` would instead be an orderly, announced exit.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from ttsearch.errors import TTSearchError

GENERATOR_CLASS = "GeneratorReplica"
VERIFIER_CLASS = "VerifierReplica"


@dataclass(frozen=True)
class KilledReplica:
    """A replica process that was sent SIGKILL."""

    class_name: str
    actor_id: str
    pid: int
    job_id: str
    killed_at: float  # time.time() of the kill


def alive_replicas(class_name: str, address: str | None = None, exclude_job_id: str | None = None) -> list[dict]:
    """ALIVE actors of `class_name` (state API records as dicts), oldest job first, optionally leaving out
    one job's actors (e.g. the caller's own shared replicas)."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], detail=True, limit=1000
    )
    records = [actor if isinstance(actor, dict) else vars(actor) for actor in actors]
    return sorted((r for r in records if r.get("job_id") != exclude_job_id and r.get("pid")), key=lambda r: r["job_id"])


def kill_replica(class_name: str, address: str | None = None, exclude_job_id: str | None = None) -> KilledReplica:
    """SIGKILL the process of one ALIVE replica of `class_name` (the newest job's first); it must run on
    this machine, as every node of a local test cluster does."""
    candidates = alive_replicas(class_name, address, exclude_job_id)
    if not candidates:
        raise TTSearchError(f"no ALIVE {class_name} actor to kill")
    target = candidates[-1]
    try:
        os.kill(target["pid"], signal.SIGKILL)
    except ProcessLookupError:
        raise TTSearchError(
            f"{class_name} {target['actor_id']} (pid {target['pid']}) is not a process on this machine"
        ) from None
    return KilledReplica(class_name, target["actor_id"], target["pid"], target["job_id"], time.time())


def wait_for_replicas(
    class_name: str, count: int, timeout_s: float, address: str | None = None, exclude_job_id: str | None = None
) -> list[dict]:
    """Wait until `count` replicas of `class_name` are ALIVE (their engines loaded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = alive_replicas(class_name, address, exclude_job_id)
        if len(alive) >= count:
            return alive
        if time.monotonic() > deadline:
            raise TTSearchError(f"only {len(alive)} of {count} {class_name} actors ALIVE after {timeout_s:g} s")
        time.sleep(0.5)
