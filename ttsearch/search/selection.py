"""Pick a final answer from a strategy's candidates (Snell et al. §5.1 / search-and-learn).

- naive: the candidate with the highest aggregated verifier score;
- weighted: sum the aggregated scores of candidates per distinct final answer and pick the answer
  with the largest sum (best-of-N weighted);
- majority: the most frequent final answer, verifier ignored.
A solution's step scores become one score by its last, minimum or product step score. Ties at the top (equal
scores, equal vote totals) are broken by a seeded uniform draw (`draw_tied`), whose expectation is what a sweep
reports as accuracy (`ttsearch.search.pool`).

"Distinct answers" are told apart by mathematical equivalence, the grader's own: first the cheap
canonical form (`canonical_answer`: "276,000", "\\$276,000" and "276000" are one string), then
math-verify between one representative per group ("6" and "6.00", "\\frac12" and "0.5"), so that equal
answers written differently never split their votes.
"""

from __future__ import annotations

import math
import random
import zlib
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


def selection_seed(uid: str, seed: int) -> int:
    """The seed that breaks a problem's score ties (`select`): fixed per (problem, sweep seed), so a sweep's row, a
    re-run and the service answering the same question with the same seed pick the same tied candidate."""
    return zlib.crc32(f"{uid}|{seed}|select".encode())


def tied_choices(
    scores: Sequence[float], groups: Sequence[int | None], mode: Selection | str, among: Sequence[int] | None = None
) -> list[int]:
    """Every candidate `mode` could choose among `among` (default: all), ties included, in candidate order.

    naive: each candidate with the top score. weighted / majority: for each answer group tied at the top total
    (summed scores / votes), its highest-scored member (the first of equals). Nobody answered: naive. `groups`
    are `answer_groups` of all candidates, computed once, so every subset of a sample pool reuses them.
    """
    among = range(len(scores)) if among is None else among
    if mode == Selection.naive:
        top = max(scores[i] for i in among)
        return [i for i in among if scores[i] == top]
    if mode not in (Selection.weighted, Selection.majority):
        raise ValueError(f"unknown selection mode '{mode}'")
    totals: dict[int, float] = {}
    best_in_group: dict[int, int] = {}
    for i in among:
        group = groups[i]
        if group is None:
            continue
        totals[group] = totals.get(group, 0.0) + (scores[i] if mode == Selection.weighted else 1.0)
        if group not in best_in_group or scores[i] > scores[best_in_group[group]]:
            best_in_group[group] = i
    if not totals:  # nobody answered: fall back to the verifier's favourite
        return tied_choices(scores, groups, Selection.naive, among)
    top = max(totals.values())
    return sorted(best_in_group[group] for group, total in totals.items() if total == top)


def select(
    candidates: Sequence[Candidate],
    mode: Selection | str,
    aggregation: str,
    same: SameAnswers,
    tie_seed: int = 0,
) -> Candidate | None:
    """The chosen candidate: one of `tied_choices`, drawn uniformly with `tie_seed` (`selection_seed`).

    Ties are broken by chance, not by position, so a sweep's accuracy is the expectation over the tied choices
    (`ttsearch.search.pool`), the same rule the service draws from; the draw is seeded, so results reproduce.
    """
    if not candidates:
        return None
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    groups = answer_groups([c.answer for c in candidates], same) if mode != Selection.naive else [None] * len(scores)
    return candidates[draw_tied(tied_choices(scores, groups, mode), tie_seed)]


def draw_tied(tied: Sequence[int], tie_seed: int) -> int:
    """One of the tied choices, uniformly, seeded: the one tie rule of sweeps and the service."""
    return tied[0] if len(tied) == 1 else random.Random(tie_seed).choice(list(tied))
