"""Online search: questions from many callers through one long-lived ready queue.

A `SearchService` holds one `Scheduler` for its lifetime and every question in flight is a job in it, so
the step expansions of concurrent users land in the same replica calls: 16 users cost far less than 16
searches one after the other. `ttsearch solve` (one question) and `ttsearch serve` (an HTTP service) both
answer through it.

With `compute_optimal`, part of the budget (the policy's k best-of-N samples) estimates the question's
difficulty without ground truth — the mean verifier score of the samples, binned by the rule the policy was
fitted and cross-validated with — and the strategy the policy chose for that bin runs with what is left (the
largest fitted budget that fits). Both parts are counted in the usage the answer reports.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ttsearch.analysis.policy import Policy, SolveError, load_policy
from ttsearch.config import SearchConfig, StrategySpec, SweepConfig, load_config, verifier_family, verifier_names
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import Failure, JobOutcome, ModelSizes, Usage
from ttsearch.search.scheduler import Scheduler
from ttsearch.search.selection import aggregate, select, selection_seed
from ttsearch.search.strategies import SearchContext, start, strategy_label
from ttsearch.sweep.results import CONFIG, RunStore, run_config_text


@dataclass(frozen=True)
class SearchSettings:
    """How one question is searched: a strategy at a budget, or (`compute_optimal`) the fitted policy's choice."""

    budget: int
    strategy: StrategySpec = field(default_factory=StrategySpec)
    selection: str = "weighted"
    seed: int = 0
    compute_optimal: bool = False


@dataclass
class Answer:
    """The chosen solution and what finding it cost."""

    solution: str | None
    """The selected candidate's text; None when the search returned no candidate."""
    answer: str | None
    strategy_label: str
    search_budget: int
    search: Usage
    estimation: Usage
    """The compute-optimal difficulty estimation; empty for a fixed strategy."""
    flops: float
    wall_s: float
    difficulty_bin: int | None = None
    difficulty_score: float | None = None

    @property
    def usage(self) -> Usage:
        total = Usage()
        total.merge(self.estimation)
        total.merge(self.search)
        return total


class SearchFailed(SolveError):
    """The search of a question failed: `failure` says whether the request (PROBLEM) or the replicas
    (INFRASTRUCTURE) were at fault."""

    def __init__(self, message: str, failure: Failure | None):
        super().__init__(message)
        self.failure = failure


def search_budget(policy: Policy, budget: int) -> int:
    """The largest fitted budget that fits in what `budget` leaves after the estimation samples; known before
    any compute, so a budget too small is refused up front."""
    left = budget - policy.estimation_samples
    fitted = sorted({b for b, _ in policy.choices if b <= left})
    if not fitted:
        smallest = min(b for b, _ in policy.choices)
        raise SolveError(
            f"budget {budget} leaves {left} after {policy.estimation_samples} estimation samples; "
            f"the policy's smallest budget is {smallest}: ask for at least {smallest + policy.estimation_samples}"
        )
    return fitted[-1]


def policy_plan(policy: Policy, budget: int, score: float) -> tuple[int, str]:
    """The fitted budget to spend after estimation, and the label the policy chose there."""
    fitted = search_budget(policy, budget)
    return fitted, policy.strategy(fitted, score)


def spec_for(label: str, strategies: list[StrategySpec]) -> tuple[StrategySpec, str]:
    """The sweep's strategy configuration and selection mode behind a policy label."""
    for spec in strategies:
        for selection in spec.selections:
            if strategy_label(spec, selection) == label:
                return spec, selection
    raise SolveError(f"the policy chose '{label}', which the sweep's config.yaml does not define")


def check_usable_verifier(kind: str) -> None:
    """Refuse a verifier that cannot score a new question (its family's `scores_new_questions`), before any replica
    starts."""
    if not verifier_family(kind).scores_new_questions:
        usable = tuple(name for name in verifier_names() if verifier_family(name).scores_new_questions)
        raise SolveError(
            f"verifier.kind={kind} cannot score a new question (oracle needs the ground truth, hash is a benchmark "
            f"device): pass a verifier that can, one of {usable}, e.g. verifier.kind=lm_judge"
        )


def load_policy_run(run_dir: str, overrides: list[str] = ()) -> tuple[SweepConfig, Policy]:
    """The policy in `run_dir` and the config of the sweep it was fitted on (its replicas, search settings and
    the strategy configurations its labels name), `overrides` applied."""
    store = RunStore(run_dir)
    policy = load_policy(store.uri)
    with tempfile.TemporaryDirectory(prefix="ttsearch-") as tmp:  # the config may live on a remote filesystem
        path = Path(tmp) / CONFIG
        path.write_text(run_config_text(store.read_text(CONFIG)))
        cfg = load_config(path, list(overrides))
    check_usable_verifier(cfg.verifier.kind)
    return cfg, policy


class SearchService:
    """Answers questions concurrently on one scheduler; the owner starts the replicas and calls `close`."""

    def __init__(
        self,
        scheduler: Scheduler,
        search: SearchConfig,
        sizes: ModelSizes,
        grader: Grader,
        policy: Policy | None = None,
        policy_strategies: list[StrategySpec] | None = None,
    ):
        self.scheduler = scheduler
        self.search = search
        self.sizes = sizes
        self.grader = grader
        self.policy = policy
        self.policy_strategies = policy_strategies or []
        """The strategy configurations of the sweep the policy was fitted on (its labels name them)."""

    async def answer(self, question: str, settings: SearchSettings) -> Answer:
        """Search `question` as `settings` say; raises `SolveError` for a budget the policy cannot split or a
        search that failed. Cancelling the caller stops the search's requests."""
        started = time.perf_counter()
        ctx = SearchContext(uid=question, question=question, search=self.search, seed=settings.seed)
        estimation, score, difficulty_bin = Usage(), None, None
        budget, spec, selection = settings.budget, settings.strategy, settings.selection
        if settings.compute_optimal:
            if self.policy is None:
                raise SolveError("compute_optimal needs a policy fitted by `ttsearch optimize`; none is configured")
            search_budget(self.policy, settings.budget)  # before the estimation samples are spent
            estimated = await self._run(ctx, self.policy.estimation_samples, StrategySpec(name="best_of_n"))
            estimation = estimated.usage
            # The policy's own score: its aggregation, averaged, binned by `policy.bin_of` (its fitting rule).
            scores = [aggregate(c.step_scores, self.policy.aggregation) for c in estimated.value or []]
            score = sum(scores) / len(scores) if scores else 0.0
            difficulty_bin = self.policy.bin_of(score)
            budget, label = policy_plan(self.policy, settings.budget, score)
            spec, selection = spec_for(label, self.policy_strategies)
            ctx = replace(ctx, seed=settings.seed + 1)
        searched = await self._run(ctx, budget, spec)
        # Majority voting compares answers with math-verify in worker processes: off the event loop.
        chosen = await asyncio.to_thread(
            select,
            searched.value or [],
            selection,
            spec.aggregation,
            self.grader.same_answers,
            selection_seed(ctx.uid, ctx.seed),  # ties by the sweeps' rule: the draw their accuracy averages
        )
        flops = sum(sum(self.sizes.flops(usage)) for usage in (estimation, searched.usage))
        return Answer(
            solution=chosen.text if chosen else None,
            answer=chosen.answer if chosen else None,
            strategy_label=strategy_label(spec, selection),
            search_budget=budget,
            search=searched.usage,
            estimation=estimation,
            flops=flops,
            wall_s=time.perf_counter() - started,
            difficulty_bin=difficulty_bin,
            difficulty_score=score,
        )

    async def _run(self, ctx: SearchContext, budget: int, spec: StrategySpec) -> JobOutcome:
        try:
            outcome = await self.scheduler.search(ctx.uid, start(ctx, budget, spec))
        except Exception as exc:  # the ready queue itself stopped (no replica for too long, or its own error)
            if not self.scheduler.stopped:
                raise
            raise SearchFailed(f"the ready queue stopped: {exc}", Failure.INFRASTRUCTURE) from exc
        if outcome.error:
            raise SearchFailed(f"search failed: {outcome.error.strip().splitlines()[-1]}", outcome.failure)
        return outcome

    async def close(self) -> None:
        await self.scheduler.close()
