"""Ray start-up and the replica actors every command shares; parameter counts for the FLOPs model.

Only this module and `ttsearch.runtime.backends` touch actor handles; the pipelines call these functions.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ttsearch.config import SweepConfig, VerifierConfig, verifier_backend, verifier_family
from ttsearch.errors import TTSearchError
from ttsearch.runtime.interrupts import kept_signal_handlers
from ttsearch.search.outcomes import ModelSizes


class OutputDirError(TTSearchError):
    """An `output_dir` the shard tasks could not all write to, or that would vanish with a job."""


def joins_cluster(cfg: SweepConfig) -> bool:
    """True when the run joins a running cluster (`ray_address`, or RAY_ADDRESS as `ray job submit` sets it)."""
    return bool(cfg.ray_address or os.environ.get("RAY_ADDRESS"))


def check_output_dir(cfg: SweepConfig) -> None:
    """Refuse a relative `output_dir` wherever the driver's working directory is not shared storage.

    The rule: a relative path is accepted only for a local, single-node run (Ray started by this process,
    or already initialised with one node). Joining a cluster (`ray_address` / RAY_ADDRESS) is refused
    because under `ray job submit` the driver's cwd is the job's temporary working_dir, deleted with
    the job, and on several nodes the shard tasks would each write to their own disk.
    """
    if "://" in cfg.output_dir or Path(cfg.output_dir).is_absolute():
        return
    import ray

    several_nodes = ray.is_initialized() and sum(node["Alive"] for node in ray.nodes()) > 1
    if joins_cluster(cfg) or several_nodes:
        where = "on a multi-node cluster" if several_nodes else "when joining a cluster (ray job submit, ray_address)"
        raise OutputDirError(
            f"output_dir '{cfg.output_dir}' is relative: {where} it would land in the driver's temporary or "
            "node-local working directory; give an absolute path on shared storage or an s3:// / gs:// URI"
        )


def start_ray(cfg: SweepConfig, extra_cpus: float = 0.0) -> None:
    """Join the cluster (`ray_address`, or RAY_ADDRESS as set by `ray job submit`), or start a local
    instance with enough logical CPUs for every actor.

    Replicas and shard tasks mostly wait on each other, so on a small machine the logical CPUs are
    oversubscribed on purpose rather than leaving a shard task unschedulable.
    """
    import ray

    if ray.is_initialized():
        return
    if joins_cluster(cfg):
        with kept_signal_handlers():
            ray.init(address=cfg.ray_address or os.environ["RAY_ADDRESS"])
        return
    verifier = hosted_verifier(cfg)
    hosted_verifiers = 0 if verifier is None or verifier.backend == "generator" else cfg.verifier.replicas
    wanted = (
        cfg.generator.replicas * cfg.generator.num_cpus
        + hosted_verifiers * cfg.verifier.num_cpus
        + cfg.data.shards * cfg.data.shard_num_cpus
        + extra_cpus
        + 1  # Ray Data's own tasks
    )
    with kept_signal_handlers():  # SIGTERM stays a clean stop (`ttsearch.runtime.interrupts`), not Ray's exit
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(wanted)))


def hosted_verifier(cfg: SweepConfig) -> VerifierConfig | None:
    """The verifier replicas must host, its "auto" backend resolved; None for a model-free verifier."""
    if verifier_family(cfg.verifier.kind).model_free:
        return None
    return replace(cfg.verifier, backend=verifier_backend(cfg.verifier, cfg.generator))


def start_replicas(cfg: SweepConfig) -> tuple[list[Any], list[Any]]:
    """The generator replicas and the handles that serve `Score` requests: verifier replicas, the generator
    replicas themselves (`verifier.backend: generator`), or none for a model-free verifier."""
    from ttsearch.actors.generator import create_generator_replicas
    from ttsearch.actors.verifier import create_verifier_replicas

    verifier = hosted_verifier(cfg)
    if verifier is not None and verifier.backend == "generator":
        generators = create_generator_replicas(cfg.generator, cfg.cache_dir, judge=verifier)
        return generators, generators
    generators = create_generator_replicas(cfg.generator, cfg.cache_dir)
    verifiers = create_verifier_replicas(verifier, cfg.cache_dir) if verifier is not None else []
    return generators, verifiers


def start_generator_replicas(cfg: SweepConfig) -> list[Any]:
    """The generator replicas alone, for commands that sample without scoring (`ttsearch label`)."""
    from ttsearch.actors.generator import create_generator_replicas

    return create_generator_replicas(cfg.generator, cfg.cache_dir)


def start_verifier_replicas(cfg: SweepConfig) -> list[Any]:
    """The verifier replicas alone, for commands that score solutions without generating any (`ttsearch
    eval-prm`): "auto" resolves without a generator, so a hosted verifier gets an engine of its own."""
    from ttsearch.actors.verifier import create_verifier_replicas

    if verifier_family(cfg.verifier.kind).model_free:
        raise TTSearchError(f"verifier.kind '{cfg.verifier.kind}' is model-free: it has no replicas to start")
    verifier = replace(cfg.verifier, backend=verifier_backend(cfg.verifier, None))
    return create_verifier_replicas(verifier, cfg.cache_dir)


def model_sizes(generators: list[Any], verifiers: list[Any]) -> ModelSizes:
    """Parameter counts as the first replica of each model reports them."""
    import ray

    generator = ray.get(generators[0].stats.remote())["num_parameters"]
    verifier = ray.get(verifiers[0].score_stats.remote())["num_parameters"] if verifiers else 0
    return ModelSizes(generator=int(generator), verifier=int(verifier))


REPLICA_STOP_TIMEOUT_S = 120.0
"""How long `stop_replicas` waits for Ray to report the killed replicas dead."""
STOP_POLL_S = 0.2


def stop_replicas(generators: list[Any], verifiers: list[Any], timeout_s: float = REPLICA_STOP_TIMEOUT_S) -> None:
    """Stop replica actors and wait until Ray reports each dead.

    Generator engines are shut down first, in order (their processes have exited and their memory is free when
    that returns, and no engine logs its own death as an error); then every actor is killed without restart, a
    verifier's engine processes dying with it (`ttsearch.engines.process_guard`). A generator replica that also serves
    the verifier is stopped once.
    """
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

    deadline = time.monotonic() + timeout_s
    ray.wait([generator.shutdown.remote() for generator in generators], num_returns=len(generators), timeout=timeout_s)
    distinct = list(dict.fromkeys([*generators, *verifiers]))  # actor handles hash and compare by actor id
    for handle in distinct:
        ray.kill(handle, no_restart=True)
    for handle in distinct:
        # The kill reaches the actor asynchronously, so a call may still be answered: ask until one fails as dead.
        while time.monotonic() < deadline:
            try:
                ray.get(handle.ready.remote(), timeout=max(0.0, deadline - time.monotonic()))
            except ActorDiedError:
                break
            except (GetTimeoutError, ActorUnavailableError):
                pass
            time.sleep(STOP_POLL_S)
        else:
            raise TTSearchError(f"a replica was killed but not reported dead within {timeout_s:g} s")
