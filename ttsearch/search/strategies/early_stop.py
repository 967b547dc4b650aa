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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ttsearch.config import SearchConfig, StrategySpec, inner_spec
from ttsearch.search.grading import canonical_answer
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun
from ttsearch.search.strategies.registry import Errors, Strategy, multiple_errors, strategy


@dataclass(frozen=True)
class EarlyStopSettings:
    early_stop_inner: str = "best_of_n"
    """The strategy run in rounds; its settings are keys of the same entry."""
    early_stop_round: int = 4
    """Budget of one round of the inner strategy; divides the budget."""
    early_stop_share: float = 0.75
    """Stop once the leading answer holds this share of the candidates, in (0, 1]."""
    inner: Any = None
    """The inner strategy's settings object (built from the entry's other keys)."""

    def errors(self, budgets: list[int]) -> Errors:
        if self.early_stop_round <= 0:
            return [("early_stop_round", f"must be > 0, got {self.early_stop_round}")]
        errors = multiple_errors("early_stop_round", self.early_stop_round, budgets)
        if not 0 < self.early_stop_share <= 1:
            errors.append(("early_stop_share", f"a share of the candidates is in (0, 1], got {self.early_stop_share}"))
        return errors + self.inner.errors([self.early_stop_round])

    def label(self) -> str:
        inner = self.early_stop_inner + strategy(self.early_stop_inner).label(self.inner)
        return f"({inner},r={self.early_stop_round},s={self.early_stop_share:g})"


def early_stop(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    inner, size = inner_spec(spec), spec.options.early_stop_round
    run = strategy(inner.name).run
    candidates: list[Candidate] = []
    for round_ in range(budget // size):
        candidates += yield from run(replace(ctx, round=round_), size, inner)
        if leading_share(candidates) >= spec.options.early_stop_share:
            break
    return candidates


def in_rounds_request(spec: StrategySpec, budget: int) -> int:
    """What the inner strategy sends at the round budget."""
    inner = inner_spec(spec)
    return strategy(inner.name).largest_request(inner, spec.options.early_stop_round)


def in_rounds_context(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    inner = inner_spec(spec)
    return strategy(inner.name).worst_case_tokens(inner, spec.options.early_stop_round, search, key)


def leading_share(candidates: Sequence[Candidate]) -> float:
    """The most frequent final answer's share of the candidates (0 when none has an answer)."""
    return leading_answer_share([c.answer for c in candidates])


def leading_answer_share(answers: Sequence[str | None]) -> float:
    """The most frequent answer's share of `answers`, grouped by canonical form (0 when none is an answer)."""
    forms = Counter(canonical_answer(answer) for answer in answers if answer is not None and answer.strip())
    return max(forms.values()) / len(answers) if forms else 0.0


def spent_in_rounds(settings: EarlyStopSettings, answers: Sequence[str | None]) -> int:
    """How many of `answers` (samples in sampling order) the search spends: whole rounds until the leading answer
    holds `early_stop_share` of the samples so far, as `early_stop` decides. Replays the rule over a sample pool."""
    size = settings.early_stop_round
    for end in range(size, len(answers), size):
        if leading_answer_share(answers[:end]) >= settings.early_stop_share:
            return end
    return len(answers)


EARLY_STOP = Strategy(
    "early_stop",
    early_stop,
    EarlyStopSettings,
    label=EarlyStopSettings.label,
    largest_request=in_rounds_request,
    worst_case_tokens=in_rounds_context,
    inner="early_stop_inner",
    # Over best-of-N, rounds of independent samples: replayable from one pool of the largest budget's samples.
    pool_unit=lambda settings: 1 if settings.early_stop_inner == "best_of_n" else None,
    pool_replay=spent_in_rounds,
)
