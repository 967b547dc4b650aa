"""How a run is laid out: its data, the ready queue's scheduler and the throughput bench."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttsearch.config.base import DEFAULT_DATASET, POSITIVE, at_least


@dataclass(frozen=True)
class DataConfig:
    path: str = str(DEFAULT_DATASET)
    levels: list[int] = field(default_factory=list)  # keep only these MATH levels (1-5); empty keeps all
    limit: int | None = None  # first `limit` problems (after `offset`, after the level filter)
    offset: int = field(default=0, metadata=at_least(0))
    shards: int = field(default=1, metadata=POSITIVE)
    """Ray Data blocks; each is one driver loop against the shared replicas"""
    shard_num_cpus: float = field(default=0.25, metadata=at_least(0))
    """logical CPUs a shard task reserves (it mostly waits on replicas)"""


@dataclass(frozen=True)
class SchedulerConfig:
    max_in_flight: int = field(default=64, metadata=POSITIVE)  # jobs (searches) in flight at once, per shard
    max_batch_sequences: int = field(default=256, metadata=POSITIVE)  # sequences per generator call
    max_batch_scores: int = field(default=64, metadata=POSITIVE)  # solutions per verifier call
    max_outstanding_per_replica: int = field(default=512, metadata=POSITIVE)
    """sequences queued on one replica before we hold back"""
    affinity_slack: int = field(
        default=32, metadata=at_least(0, "0: a job moves whenever its home replica carries more")
    )
    """sequences a job's home replica may carry beyond another before the job moves"""
    max_request_retries: int = field(default=3, metadata=at_least(0, "0: never retry"))
    """a request whose replica died is served again at most this many times"""
    replica_wait_s: float = field(default=600.0, metadata=POSITIVE)
    """with no healthy replica of a target for this long, the sweep stops"""
    health_check_interval_s: float = field(default=5.0, metadata=POSITIVE)
    """how often a replica taken out of rotation is asked to answer again"""
    call_timeout_s: float = field(default=1800.0, metadata=POSITIVE)
    """a replica call that streams no result for this long counts as a failure"""
    batch_window_s: float = field(
        default=0.0, metadata=at_least(0, "0: no wait, requests of one event-loop tick share a call")
    )
    """a dispatch waits this long for more requests to join its calls (serve: a few ms)"""


@dataclass(frozen=True)
class BenchConfig:
    """`ttsearch bench` only: what to compare besides the ready-queue search itself."""

    sync_problems: int = field(default=8, metadata=POSITIVE)
    """the synchronous baseline runs on this many of the problems"""
    real_verifier: str = "lm_judge"  # measured again with this hosted verifier ...
    real_verifier_strategies: list[str] = field(default_factory=lambda: ["beam"])  # ... for these strategies
    real_verifier_backends: list[str] = field(default_factory=lambda: ["auto"])  # ... on each of these backends
    batch_curve: list[int] = field(default_factory=lambda: [1, 16, 64, 256])  # bare engine tok/s at these batches
