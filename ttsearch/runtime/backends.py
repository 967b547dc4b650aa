"""Backends the scheduler dispatches to: Ray actor replicas and the model-free verifiers."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any

from ttsearch.config import SchedulerConfig, model_free_names
from ttsearch.errors import TTSearchError
from ttsearch.search.grading import Grader, extract_answer
from ttsearch.search.requests import Request, RequestRejected, Result, Score, ScoreResult
from ttsearch.search.scheduler import Backend, ReplicaFailed, ReplicaPool


class ActorBackend:
    """One Ray actor replica whose `method` is an async generator of `(index, result)`.

    Ray streams each yielded pair back as soon as the replica produces it, so a finished request
    is routed to its problem without waiting for the rest of its batch. Ray's errors for a dead,
    restarting or unreachable actor (or its node) become `ReplicaFailed`, which the scheduler answers
    by replaying the call's unserved requests; an exception the replica's code raised stays as it is.
    A call the scheduler abandons (a timeout, a failed job) is cancelled on the replica too.
    """

    def __init__(self, handle: Any, method: str):
        self.handle = handle
        self.method = method

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result | RequestRejected]]:
        import ray

        stream = getattr(self.handle, self.method).remote(batch)
        finished = False
        try:
            async for ref in stream:
                yield await ref
            finished = True
        except _replica_errors() as exc:
            raise ReplicaFailed(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        finally:
            if not finished:
                ray.cancel(stream)

    async def check(self) -> None:
        try:
            await self.handle.ready.remote()
        except _replica_errors() as exc:
            raise ReplicaFailed(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _replica_errors() -> tuple[type[Exception], ...]:
    """Ray's errors that say the replica (its process, node or objects) is gone, not that its code failed."""
    from ray import exceptions as ray_errors

    return (
        ray_errors.RayActorError,  # died, restarting, or unreachable (ActorDiedError, ActorUnavailableError)
        ray_errors.WorkerCrashedError,
        ray_errors.NodeDiedError,
        ray_errors.LocalRayletDiedError,
        ray_errors.ObjectLostError,
        ray_errors.OutOfMemoryError,  # Ray's memory monitor killed the worker
        ray_errors.TaskCancelledError,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


class ReplicaStartError(TTSearchError):
    """Replicas were not placed or not loaded in time: the resources they ask for may not exist."""


def wait_ready(handles: list[Any], timeout_s: float, key: str, num_gpus: float, num_cpus: float) -> None:
    """Wait until every replica's constructor (its model load) has finished; after `timeout_s` kill them
    and fail, naming what they asked for and what the cluster has (a GPU replica on a GPU-less cluster
    would otherwise wait forever)."""
    import ray

    refs = [handle.ready.remote() for handle in handles]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        for handle in handles:
            ray.kill(handle)
        total = ray.cluster_resources()
        raise ReplicaStartError(
            f"{len(pending)} of {len(refs)} {key} replicas did not start within {timeout_s:g} s "
            f"({key}.start_timeout_s): each asks for num_gpus={num_gpus:g}, num_cpus={num_cpus:g}; the cluster has "
            f"{total.get('GPU', 0):g} GPUs and {total.get('CPU', 0):g} CPUs in all (an autoscaler adds nodes only "
            f"for resources its node types offer)"
        )
    ray.get(refs)  # a constructor that raised (a bad model path, out of memory) surfaces here


class ModelFreeVerifier:
    """`majority` scores every step 1 (weighted selection becomes a vote); `oracle` scores every
    step of a solution 1 if its final answer is graded right, else 0 (ground truth, for coverage curves); `hash`
    maps each step prefix's text to [0, 1) (a free, deterministic stand-in for benchmarks)."""

    def __init__(self, kind: str, grader: Grader | None = None):
        if kind not in model_free_names():
            raise ValueError(f"'{kind}' is not a model-free verifier; expected one of {model_free_names()}")
        self.kind = kind
        self.grader = grader

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result]]:
        scores = [1.0] * len(batch)
        if self.kind == "oracle":
            pairs = [(extract_answer("\n\n".join(_steps(r))), _reference(r)) for r in batch]
            grader = self.grader or Grader()
            # An ungraded answer (None) scores 0: the oracle vouches only for answers it could grade.
            scores = [1.0 if ok is True else 0.0 for ok in await asyncio.to_thread(grader.grade_many, pairs)]
        for index, (request, score) in enumerate(zip(batch, scores, strict=True)):
            steps = _steps(request)
            new = slice(request.scored_steps, None)
            if self.kind == "hash":
                yield index, ScoreResult(step_scores=_hash_scores(request.question, steps)[new])
            else:
                yield index, ScoreResult(step_scores=(score,) * len(steps[new]))

    async def check(self) -> None:
        """Runs in the driver: always there."""


def _hash_scores(question: str, steps: tuple[str, ...]) -> tuple[float, ...]:
    state = zlib.crc32(question.encode())
    scores = []
    for step in steps:
        state = zlib.crc32(step.encode(), state)
        scores.append(state / 2**32)
    return tuple(scores)


def _steps(request: Request) -> tuple[str, ...]:
    if not isinstance(request, Score):
        raise TypeError(f"a verifier cannot serve {type(request).__name__}")
    return request.steps


def _reference(request: Request) -> str:
    if not isinstance(request, Score) or request.reference is None:
        raise ValueError("the oracle verifier needs the reference answer in every Score request")
    return request.reference


def replica_pools(
    generators: list[Any], verifiers: list[Any], verifier_kind: str, cfg: SchedulerConfig, grader: Grader | None = None
) -> dict[str, ReplicaPool]:
    """Pools over actor handles; a model-free verifier runs in the driver instead of on replicas, and a verifier
    hosted on the generator replicas follows each job to the replica that generated its steps. A target without
    replicas gets no pool (labelling needs no verifier, `eval-prm` no generator): a request for it fails its job."""
    verifier_backends: list[Backend] = (
        [ModelFreeVerifier(verifier_kind, grader)]
        if verifier_kind in model_free_names()
        else [ActorBackend(handle, "score") for handle in verifiers]
    )
    pools = {}
    if generators:
        pools["generator"] = ReplicaPool(
            [ActorBackend(handle, "generate") for handle in generators],
            max_outstanding=cfg.max_outstanding_per_replica,
            max_batch=cfg.max_batch_sequences,
            affinity_slack=cfg.affinity_slack,
        )
    if verifier_backends:
        pools["verifier"] = ReplicaPool(
            verifier_backends,
            max_outstanding=cfg.max_outstanding_per_replica,
            max_batch=cfg.max_batch_scores,
            homes="generator" if list(verifiers) == list(generators) else None,
            affinity_slack=cfg.affinity_slack,
        )
    return pools
