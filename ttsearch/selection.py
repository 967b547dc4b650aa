"""Pick a final answer from a strategy's candidates (Snell et al. §5.1 / search-and-learn).

- naive: the candidate with the highest aggregated verifier score;
- weighted: sum the aggregated scores of candidates per distinct (normalised) final answer and
  pick the answer with the largest sum (best-of-N weighted);
- majority: the most frequent final answer, verifier ignored.
A solution's step scores become one score by its last, minimum or product step score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttsearch.grading import normalize_answer
from ttsearch.strategies.common import Candidate


def aggregate(step_scores: Sequence[float], how: str) -> float:
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    raise ValueError(f"unknown aggregation '{how}'")


def select(candidates: Sequence[Candidate], mode: str, aggregation: str) -> Candidate | None:
    """The chosen candidate; ties go to the earliest candidate so results are reproducible."""
    if not candidates:
        return None
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    if mode == "naive":
        return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
    if mode not in ("weighted", "majority"):
        raise ValueError(f"unknown selection mode '{mode}'")

    totals: dict[str, float] = {}
    best_in_group: dict[str, int] = {}
    for i, candidate in enumerate(candidates):
        answer = candidate.answer
        if answer is None:
            continue
        key = normalize_answer(answer)
        totals[key] = totals.get(key, 0.0) + (scores[i] if mode == "weighted" else 1.0)
        if key not in best_in_group or scores[i] > scores[best_in_group[key]]:
            best_in_group[key] = i
    if not totals:  # nobody answered: fall back to the verifier's favourite
        return select(candidates, "naive", aggregation)
    order = list(totals)  # first-seen order breaks ties
    winner = max(order, key=lambda key: (totals[key], -order.index(key)))
    return candidates[best_in_group[winner]]
