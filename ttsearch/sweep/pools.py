"""A job's result rows: one per selection mode at its budget and, for a pooled strategy, at every smaller budget,
derived from the job's candidates as a sample pool (`ttsearch.search.pool`).

Every sweep row and every imported recorded run (`ttsearch import`) is made here, so a row means the same
wherever it came from:
- `answer`, `correct`, `score` and the `candidate_*` columns are the *realisation*: the first units of the pool,
  what the budget's search alone samples (seeds depend on a unit's position, never on the budget), the chosen
  answer drawn among score ties with the problem's `selection_seed`;
- `accuracy` (with `accuracy_low`/`accuracy_high`, ties broken worst/best, and `accuracy_se`) is the expectation
  over subsets of the pool and over the tied choices: what the report averages;
- `coverage` is the exact pass@k of the budget over the pool's units;
- the costs are those of the budget's search run alone: the pool's usage times the budget's share of its units
  (its expectation over subsets), except a prompt every unit shares (best-of-N's one request), billed whole;
- `pool_budget` names the job whose samples the row was computed from (its own budget when it searched alone),
  `pool_subsets` how many subsets it averaged.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsearch.config import Selection, StrategySpec
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import ModelSizes, Usage
from ttsearch.search.pool import Pool, estimate, ordered_draws, subset_seed, unit_subsets
from ttsearch.search.selection import aggregate, answer_groups, draw_tied, selection_seed, tied_choices
from ttsearch.search.strategies import (
    Candidate,
    StrategyRun,
    search_reads_verifier,
    strategy,
    strategy_config,
    strategy_label,
)
from ttsearch.search.strategies.registry import pool_unit

SHARED_PROMPT_FIELDS = ("prompt_tokens", "cached_prompt_tokens")


@dataclass(frozen=True)
class SavedPool:
    """A pool an earlier run of the sweep saved, read back from its row at the pool's own budget, whose realisation
    holds every candidate (answers, aggregated scores, own tokens: all that rows are derived from)."""

    budget: int
    candidates: list[Candidate]
    usage: Usage
    wall_s: float


PoolKey = tuple[str, str, int]
"""(unique_id, strategy_config, seed): a pool, whatever its budget."""


def saved_pools(rows: Sequence[dict[str, Any]]) -> dict[PoolKey, SavedPool]:
    """The pools that `rows` (an earlier run's rows of jobs the sweep no longer has) saved whole: a finished job's
    row at its own budget whose candidates are all of that budget's (early stopping's stops early unless it spent
    everything). Usage is the job's, its verifier part from a row that was billed the verifier."""
    pools: dict[PoolKey, SavedPool] = {}
    for row in rows:
        answers = row["candidate_answers"] or []
        if row["error"] is not None or row["budget"] != row["pool_budget"] or len(answers) != row["budget"]:
            continue
        key = (row["unique_id"], row["strategy_config"], row["seed"])
        if key in pools and pools[key].usage.verifier_tokens >= row["verifier_tokens"]:
            continue
        candidates = [
            Candidate((), (score,), True, generated_tokens=generated, verifier_tokens=verifier, recorded_answer=answer)
            for answer, score, generated, verifier in zip(
                answers,
                row["candidate_scores"],
                row["candidate_generated_tokens"] or [None] * len(answers),
                row["candidate_verifier_tokens"] or [None] * len(answers),
                strict=True,
            )
        ]
        usage = Usage(
            **{name: int(row[name] or 0) for name in vars(Usage()) if name in row and name != "scored_solutions"}
        )
        pools[key] = SavedPool(row["budget"], candidates, usage, row["wall_s"] or 0.0)
    return pools


def after(saved: SavedPool, run: StrategyRun) -> StrategyRun:
    """A pool extended: `run` samples the units after the saved ones (`Strategy.pool_extend`)."""
    added = yield from run
    return [*saved.candidates, *added]


def merged_usage(saved: SavedPool, added: Usage, shared_prompt: bool) -> Usage:
    """The extended pool's usage: both parts; a prompt every unit shares counted once (a budget run alone sends
    one request), the saved part's."""
    total = Usage()
    total.merge(saved.usage)
    total.merge(added)
    for name in SHARED_PROMPT_FIELDS if shared_prompt else ():
        setattr(total, name, getattr(saved.usage, name))
    return total


def share_of(usage: Usage, fraction: float, shared_prompt: bool) -> Usage:
    """What `fraction` of a pool's units cost run alone: every count scaled, the shared prompt kept whole."""
    counts = {
        name: value if shared_prompt and name in SHARED_PROMPT_FIELDS else round(value * fraction)
        for name, value in vars(usage).items()
    }
    return dataclasses.replace(usage, **counts)


def pool_rows(
    problem: dict[str, Any],
    spec: StrategySpec,
    seed: int,
    budgets: Sequence[int],
    candidates: Sequence[Candidate],
    usage: Usage,
    wall_s: float,
    grader: Grader,
    sizes: ModelSizes,
    subsets: int,
    *,
    pool_budget: int | None = None,
    error: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for each of `budgets` × `spec.selections` from one job's candidates (budget `pool_budget`, default the
    largest of `budgets`). A budget below the pool's needs a pooled strategy (`Strategy.pool_unit`).

    `correct` (and each `candidate_correct`) is True, False or None: None is *ungraded*, a grading failure, never
    a verdict. A selection that reads no verifier score (majority, for strategies whose search does not read the
    verifier either) is billed no verifier compute.
    """
    pool_budget = max(budgets) if pool_budget is None else pool_budget
    answers = [c.answer for c in candidates]
    graded = grader.problem(problem["unique_id"])  # charged to the problem's grading time bound
    correct = graded.grade_many([(answer, problem["answer"]) for answer in answers])
    scores = [aggregate(c.step_scores, spec.aggregation) for c in candidates]
    groups = answer_groups(answers, graded.same_answers)  # once per pool: every budget and subset reuses them
    derives = list(budgets) != [pool_budget]
    unit = pool_unit(spec) if derives else max(len(candidates), 1)
    if unit is None:
        raise ValueError(f"{spec.name} searches each budget alone: cannot derive budgets {budgets} from one job")
    pool = Pool.of(scores, groups, correct, unit) if candidates else None
    config, tie_seed = strategy_config(spec), selection_seed(problem["unique_id"], seed)
    entry = strategy(spec.name)
    replay = (lambda ordered: entry.pool_replay(spec.options, ordered)) if derives and entry.pool_replay else None
    rows = []
    for budget in budgets:
        units = budget * pool.units // pool_budget if pool else 0
        if pool and (units < 1 or units * pool_budget != budget * pool.units):
            raise ValueError(f"budget {budget} is not a whole number of {spec.name}'s units of pool {pool_budget}")
        seed_of_draws = subset_seed(problem["unique_id"], config, budget, seed)
        drawn = _draws(pool, answers, units, subsets, seed_of_draws, replay) if pool else None
        taken = drawn.taken if drawn else 0
        cost = share_of(usage, drawn.share, entry.pool_shared_prompt) if drawn else usage
        generator_flops, verifier_flops = sizes.flops(cost)
        base = {
            "unique_id": problem["unique_id"],
            "level": problem.get("level"),
            "subject": problem.get("subject"),
            "strategy": spec.name,
            "strategy_config": config,
            "aggregation": spec.aggregation,
            "settings": json.dumps(spec.filled_settings()),
            "budget": budget,
            "seed": seed,
            "reference": problem["answer"],
            "samples": cost.samples,
            "generated_tokens": cost.generated_tokens,
            "prompt_tokens": cost.prompt_tokens,
            "cached_prompt_tokens": cost.cached_prompt_tokens,
            "generator_flops": generator_flops,
            "wall_s": wall_s,
            "candidate_answers": answers[:taken],
            "candidate_scores": scores[:taken],
            "candidate_correct": correct[:taken],
            "candidate_generated_tokens": [c.generated_tokens for c in candidates[:taken]],
            "candidate_verifier_tokens": [c.verifier_tokens for c in candidates[:taken]],
            "coverage": drawn.coverage if drawn else (None if error else 0.0),
            "pool_budget": pool_budget,
            "error": error,
        }
        for selection in spec.selections:
            billed = search_reads_verifier(spec) or selection != Selection.majority
            verifier_cost = {
                "verifier_tokens": cost.verifier_tokens if billed else 0,
                "cached_verifier_tokens": cost.cached_verifier_tokens if billed else 0,
                "verifier_flops": verifier_flops if billed else 0.0,
                "total_flops": generator_flops + (verifier_flops if billed else 0.0),
            }
            rows.append(
                base
                | verifier_cost
                | _choice(pool, answers, selection, drawn, tie_seed, error)
                | {"strategy_label": strategy_label(spec, selection), "selection": selection}
            )
    return rows


@dataclass(frozen=True)
class _Draws:
    """How one budget reads the pool."""

    units: np.ndarray
    """The drawn (or every) subset of units, one per row."""
    spent: np.ndarray | None
    """Units each row's search spent before stopping (a replayed stopping rule); None: all of them."""
    taken: int
    """Candidates of the realisation: the first units in pool order (as many as the rule spends on them)."""
    share: float
    """The budget's expected share of the pool's units: what it costs run alone."""
    coverage: float


def _draws(
    pool: Pool,
    answers: list[str | None],
    units: int,
    subsets: int,
    seed: int,
    replay: Callable[[list[str | None]], int] | None,
) -> _Draws:
    if replay is None:
        chosen = unit_subsets(pool.units, units, subsets, seed)
        return _Draws(chosen, None, units * pool.unit, units / pool.units, pool.coverage(units))
    chosen = ordered_draws(pool.units, units, subsets, seed)
    members = [[i * pool.unit + m for i in row for m in range(pool.unit)] for row in chosen.tolist()]
    spent = np.array([replay([answers[i] for i in row]) // pool.unit for row in members])
    right = np.nan_to_num(pool.correct) > 0
    covered = [right[row[: n * pool.unit]].any() for row, n in zip(members, spent, strict=True)]
    taken = replay(answers[: units * pool.unit])
    return _Draws(chosen, spent, taken, float(spent.mean()) / pool.units, float(np.mean(covered)))


def _choice(
    pool: Pool | None,
    answers: list[str | None],
    selection: Selection,
    drawn: _Draws | None,
    tie_seed: int,
    error: str | None,
) -> dict[str, Any]:
    """The realised choice among the first `drawn.taken` candidates, and the expectation over the pool's draws."""
    if pool is None:  # the search returned no candidate (or failed): nothing chosen is a wrong answer
        nothing = None if error else 0.0
        return {
            "answer": None,
            "correct": False,
            "score": None,
            "accuracy": nothing,
            "accuracy_low": nothing,
            "accuracy_high": nothing,
            "accuracy_se": None if error else 0.0,
            "pool_subsets": 0,
        }
    scores, groups = pool.scores.tolist(), [None if g < 0 else int(g) for g in pool.groups]
    index = draw_tied(tied_choices(scores, groups, selection, range(drawn.taken)), tie_seed)
    verdict = pool.correct[index]
    found = estimate(pool, selection, drawn.units, drawn.spent)
    return {
        "answer": answers[index],
        "correct": None if math.isnan(verdict) else bool(verdict),
        "score": scores[index],
        "accuracy": found.accuracy,
        "accuracy_low": found.accuracy_low,
        "accuracy_high": found.accuracy_high,
        "accuracy_se": found.accuracy_se,
        "pool_subsets": found.subsets,
    }
