"""Backends the scheduler dispatches to: Ray actor replicas and the model-free verifiers."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any

from ttsearch.config import MODEL_FREE_VERIFIERS, SchedulerConfig
from ttsearch.grading import Grader, extract_answer
from ttsearch.requests import Request, Result, Score, ScoreResult
from ttsearch.scheduler import Backend, ReplicaPool


class ActorBackend:
    """One Ray actor replica whose `method` is an async generator of `(index, result)`.

    Ray streams each yielded pair back as soon as the replica produces it, so a finished request
    is routed to its problem without waiting for the rest of its batch.
    """

    def __init__(self, handle: Any, method: str):
        self.handle = handle
        self.method = method

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result]]:
        async for ref in getattr(self.handle, self.method).remote(batch):
            yield await ref


class ModelFreeVerifier:
    """`majority` scores every step 1 (weighted selection becomes a vote); `oracle` scores every
    step of a solution 1 if its final answer is right (ground truth, for coverage curves); `hash`
    maps each step prefix's text to [0, 1) (a free, deterministic stand-in for benchmarks)."""

    def __init__(self, kind: str, grader: Grader | None = None):
        if kind not in MODEL_FREE_VERIFIERS:
            raise ValueError(f"'{kind}' is not a model-free verifier; expected one of {MODEL_FREE_VERIFIERS}")
        self.kind = kind
        self.grader = grader

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result]]:
        scores = [1.0] * len(batch)
        if self.kind == "oracle":
            pairs = [(extract_answer("\n\n".join(_steps(r))), _reference(r)) for r in batch]
            grader = self.grader or Grader()
            scores = [float(ok) for ok in await asyncio.to_thread(grader.grade_many, pairs)]
        for index, (request, score) in enumerate(zip(batch, scores, strict=True)):
            steps = _steps(request)
            if self.kind == "hash":
                yield index, ScoreResult(step_scores=_hash_scores(request.question, steps))
            else:
                yield index, ScoreResult(step_scores=(score,) * len(steps))


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
    """Pools over actor handles; a model-free verifier runs in the driver instead of on replicas."""
    verifier_backends: list[Backend] = (
        [ModelFreeVerifier(verifier_kind, grader)]
        if verifier_kind in MODEL_FREE_VERIFIERS
        else [ActorBackend(handle, "score") for handle in verifiers]
    )
    return {
        "generator": ReplicaPool(
            [ActorBackend(handle, "generate") for handle in generators],
            max_outstanding=cfg.max_outstanding_per_replica,
            max_batch=cfg.max_batch_sequences,
        ),
        "verifier": ReplicaPool(
            verifier_backends, max_outstanding=cfg.max_outstanding_per_replica, max_batch=cfg.max_batch_scores
        ),
    }
