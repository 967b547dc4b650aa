"""How a run is laid out: its data, the ready queue's scheduler and the throughput bench."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttsearch.config.base import DEFAULT_DATASET


@dataclass(frozen=True)
class DataConfig:
    path: str = str(DEFAULT_DATASET)
    levels: list[int] = field(default_factory=list)  # keep only these MATH levels (1-5); empty keeps all
    limit: int | None = None  # first `limit` problems (after `offset`, after the level filter)
    offset: int = 0
    shards: int = 1  # Ray Data blocks; each is one driver loop against the shared replicas
    shard_num_cpus: float = 0.25  # logical CPUs a shard task reserves (it mostly waits on replicas)


@dataclass(frozen=True)
class SchedulerConfig:
    max_in_flight: int = 64  # jobs (searches) in flight at once, per shard
    max_batch_sequences: int = 256  # sequences per generator call
    max_batch_scores: int = 64  # solutions per verifier call
    max_outstanding_per_replica: int = 512  # sequences queued on one replica before we hold back
    affinity_slack: int = 32  # sequences a job's home replica may carry beyond another before the job moves
    max_request_retries: int = 3  # a request whose replica died is served again at most this many times
    replica_wait_s: float = 600.0  # with no healthy replica of a target for this long, the sweep stops
    health_check_interval_s: float = 5.0  # how often a replica taken out of rotation is asked to answer again
    call_timeout_s: float = 1800.0  # a replica call that streams no result for this long counts as a failure
    batch_window_s: float = 0.0  # a dispatch waits this long for more requests to join its calls (serve: a few ms)


@dataclass(frozen=True)
class BenchConfig:
    """`ttsearch bench` only: what to compare besides the ready-queue search itself."""

    sync_problems: int = 8  # the synchronous baseline runs on this many of the problems
    real_verifier: str = "lm_judge"  # measured again with this hosted verifier ...
    real_verifier_strategies: list[str] = field(default_factory=lambda: ["beam"])  # ... for these strategies
    real_verifier_backends: list[str] = field(default_factory=lambda: ["auto"])  # ... on each of these backends
    batch_curve: list[int] = field(default_factory=lambda: [1, 16, 64, 256])  # bare engine tok/s at these batches
