"""Certainty-based early stopping (Dynasor, Fu et al. 2024: stop spending on a question once its answers agree).

Budget N, round size r: the inner strategy (`early_stop_inner`, best-of-N by default, with this spec's settings)
runs N/r times at budget r, one round after another, each round with seeds of its own (round 0 replays the plain
inner strategy at budget r). After each round the search stops if the leading final answer holds at least
`early_stop_share` of all candidates so far, candidates without an answer counting against it. Answers are grouped
by the grader's canonical form (`canonical_answer`, pure string rewriting), the certainty measure being the
consistency of the sampled answers, as Dynasor's. The budget of the rounds not run is saved: a result row's
`samples` is what was spent, below N when the search stopped early. The candidates are every round's, so the final
selection runs across all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

from ttsearch.config import StrategySpec, inner_spec
from ttsearch.search.grading import canonical_answer
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun

StrategyStart = Callable[[SearchContext, int, StrategySpec], StrategyRun]


def early_stop(ctx: SearchContext, budget: int, spec: StrategySpec, start: StrategyStart) -> StrategyRun:
    """`start` starts the inner strategy (the registry's, passed in since the registry holds this function too)."""
    inner, size = inner_spec(spec), spec.early_stop_round
    candidates: list[Candidate] = []
    for round_ in range(budget // size):
        candidates += yield from start(replace(ctx, round=round_), size, inner)
        if leading_share(candidates) >= spec.early_stop_share:
            break
    return candidates


def leading_share(candidates: Sequence[Candidate]) -> float:
    """The most frequent final answer's share of the candidates (0 when none has an answer)."""
    forms = Counter(canonical_answer(c.answer) for c in candidates if c.answer is not None and c.answer.strip())
    return max(forms.values()) / len(candidates) if forms else 0.0
