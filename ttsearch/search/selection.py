"""Pick a final answer from a strategy's candidates (Snell et al. §5.1 / search-and-learn).

- naive: the candidate with the highest aggregated verifier score;
- weighted: sum the aggregated scores of candidates per distinct final answer and pick the answer
  with the largest sum (best-of-N weighted);
- majority: the most frequent final answer, verifier ignored.
A solution's step scores become one score by its last, minimum or product step score.

"Distinct answers" are told apart by mathematical equivalence, the grader's own: first the cheap
canonical form (`canonical_answer`: "276,000", "\\$276,000" and "276000" are one string), then
math-verify between one representative per group ("6" and "6.00", "\\frac12" and "0.5"), so that equal
answers written differently never split their votes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ttsearch.config import Aggregation, Selection
from ttsearch.search.grading import canonical_answer
from ttsearch.search.strategies.common import Candidate

SameAnswers = Callable[[str, Sequence[str]], list[bool]]
"""`same(answer, others)`: which of `others` state the same answer as `answer` (`Grader.same_answers`)."""


def aggregate(step_scores: Sequence[float], how: Aggregation | str) -> float:
    """One score for a solution from its step scores."""
    if not step_scores:
        return 0.0
    if how == Aggregation.last:
        return float(step_scores[-1])
    if how == Aggregation.min:
        return float(min(step_scores))
    if how == Aggregation.prod:
        return float(math.prod(step_scores))
    raise ValueError(f"unknown aggregation '{how}'")


def answer_groups(answers: Sequence[str | None], same: SameAnswers) -> list[int | None]:
    """Group number per answer (None for no answer); groups are numbered in first-seen order.

    Answers with the same canonical form share a group without asking `same`; a new canonical form joins
    the first group whose representative (its first answer) `same` calls equal, else opens a new group.
    One `same` call per new canonical form, so N samples with G distinct forms cost at most G·(G−1)/2
    comparisons, each cached by the grader.
    """
    by_form: dict[str, int] = {}
    representatives: list[str] = []
    groups: list[int | None] = []
    for answer in answers:
        if answer is None or not answer.strip():
            groups.append(None)
            continue
        form = canonical_answer(answer)
        if form not in by_form:
            matches = same(answer, representatives) if representatives else []
            by_form[form] = matches.index(True) if True in matches else len(representatives)
            if by_form[form] == len(representatives):
                representatives.append(answer)
        groups.append(by_form[form])
    return groups


def select(
    candidates: Sequence[Candidate],
    mode: Selection | str,
    aggregation: str,
    same: SameAnswers,
) -> Candidate | None:
    """The chosen candidate; ties go to the earliest candidate (or group) so results are reproducible."""
    if not candidates:
        return None
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    if mode == Selection.naive:
        return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
    if mode not in (Selection.weighted, Selection.majority):
        raise ValueError(f"unknown selection mode '{mode}'")

    totals: dict[int, float] = {}
    best_in_group: dict[int, int] = {}
    for i, group in enumerate(answer_groups([c.answer for c in candidates], same)):
        if group is None:
            continue
        totals[group] = totals.get(group, 0.0) + (scores[i] if mode == Selection.weighted else 1.0)
        if group not in best_in_group or scores[i] > scores[best_in_group[group]]:
            best_in_group[group] = i
    if not totals:  # nobody answered: fall back to the verifier's favourite
        return select(candidates, Selection.naive, aggregation, same)
    winner = max(totals, key=lambda group: (totals[group], -group))  # groups are numbered first-seen
    return candidates[best_in_group[winner]]
