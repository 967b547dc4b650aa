"""Sequential revisions (Snell et al. §6): the model sees its earlier attempts and writes a new one.

Budget N, revision length T: N/T independent chains of T attempts each (T=N: one fully sequential
chain; T=1: best-of-N). T is set directly, or as N/P for a fixed number P of parallel chains, which
keeps the paper's sequential:parallel split the same across budgets. Attempt 1 of a chain is sampled
from the plain prompt; attempt t+1 from a prompt showing the chain's last `window` attempts, oldest
first, and an instruction to revise. The chains advance in lockstep, so each round is one list of
N/T requests that the scheduler batches with every other problem's.

Every attempt of every chain is a candidate, so the final pick (naive, weighted, majority) runs
across all N attempts, as in the paper. Attempts do not depend on scores, so all N are scored in
one request list after the last round: T+1 round trips per problem instead of 2T.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ttsearch.config import SearchConfig, StrategySpec
from ttsearch.search.requests import Prompt
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun
from ttsearch.search.strategies.registry import Errors, Strategy, multiple_errors, one_sequence

BLOCK_SEPARATOR = "\n\n"  # between the question, the shown attempts and the instruction


class RevisionPrompt(Protocol):
    """The templates of `search.revision_prompt`; conf/revision_prompt.yaml documents each one."""

    system_suffix: str  # appended to search.system_prompt from attempt 2 on
    attempt_format: str  # str.format template with the fields {number} and {attempt}
    instruction: str  # plain text after the shown attempts


@dataclass(frozen=True)
class RevisionSettings:
    revision_length: int = 4
    """T: attempts per chain; budget N runs N/T chains in parallel."""
    revision_chains: int = 0
    """P > 0 fixes the number of parallel chains instead (T = N/P, overriding revision_length), so one sweep holds
    the same sequential:parallel split at every budget; P=1 is fully sequential."""
    revision_window: int = 4
    """Earlier attempts of its chain a revision sees, most recent last."""

    @property
    def divisor(self) -> str:
        """The setting that splits a budget: a fixed chain count P if set, else the chain length T."""
        return "revision_chains" if self.revision_chains > 0 else "revision_length"

    def chain_length(self, budget: int) -> int:
        """T, attempts per chain, at this budget."""
        return budget // self.revision_chains if self.revision_chains > 0 else self.revision_length

    def errors(self, budgets: list[int]) -> Errors:
        errors = multiple_errors(self.divisor, getattr(self, self.divisor), budgets)
        if self.revision_window <= 0:
            errors.append(("revision_window", f"must be > 0, got {self.revision_window}"))
        if self.revision_chains < 0:
            errors.append(("revision_chains", f"must be >= 0 (0: use revision_length), got {self.revision_chains}"))
        return errors


def revisions(ctx: SearchContext, budget: int, spec: StrategySpec, first: int = 0) -> StrategyRun:
    """Registry entry: T and the window from the strategy spec, the templates from the search config; the chains
    from the one holding attempt `first` on (a pool extended later: chains are seeded by their index)."""
    settings: RevisionSettings = spec.options
    length = settings.chain_length(budget)
    return revision_chains(ctx, budget, length, settings.revision_window, ctx.search.revision_prompt, first)


def shown_attempts(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    """A revision's context: up to `window` earlier attempts shown, then the new attempt."""
    settings: RevisionSettings = spec.options
    shown = min(settings.revision_window, settings.chain_length(budget) - 1)
    how = f"({shown} shown attempts ({key}.revision_window {settings.revision_window}) + 1 new)"
    size = search.max_solution_tokens
    return (shown + 1) * size, f"{how} x search.max_solution_tokens {size}"


def revisions_label(settings: RevisionSettings) -> str:
    split = f"P={settings.revision_chains}" if settings.revision_chains else f"T={settings.revision_length}"
    return f"({split},w={settings.revision_window})"


def revision_chains(
    ctx: SearchContext, budget: int, length: int, window: int, templates: RevisionPrompt, first: int = 0
) -> StrategyRun:
    """`budget // length` chains of `length` attempts, from the chain holding attempt `first` on; returns their
    attempts, chain by chain, scored."""
    if length < 1 or budget < length or budget % length:
        raise ValueError(f"budget {budget} is not a positive multiple of revision_length {length}")
    if window < 1:
        raise ValueError(f"revision_window must be >= 1, got {window}")
    offset = first // length
    chains: list[list[Candidate]] = [[] for _ in range(offset, budget // length)]
    for round_ in range(length):
        prompts = [
            revision_prompt(ctx.search.system_prompt, ctx.question, [a.text for a in chain], window, templates)
            for chain in chains
        ]
        sampled = yield [ctx.solve(prompt, 1, round_, index) for index, prompt in enumerate(prompts, start=offset)]
        for chain, result in zip(chains, sampled, strict=True):
            [completion] = result.completions
            steps = ctx.split_steps(completion.text)
            chain.append(ctx.candidate(steps, (), completion.ended_solution, completion.num_tokens))
    attempts = [attempt for chain in chains for attempt in chain]
    scored = yield [ctx.score(attempt.steps) for attempt in attempts]
    return [
        ctx.candidate(attempt.steps, result.step_scores, attempt.finished, attempt.generated_tokens, result.tokens)
        for attempt, result in zip(attempts, scored, strict=True)
    ]


def revision_prompt(
    system_prompt: str, question: str, attempts: Sequence[str], window: int, templates: RevisionPrompt
) -> Prompt:
    """The prompt for the attempt after `attempts` (oldest first): the plain prompt when there are none, else one
    showing the last `window` of them. The one rendering that inference and the revision model's training data
    (`ttsearch revision-data`) share, so the model is trained on exactly the text it is later shown."""
    if not attempts:
        return Prompt(system=system_prompt, user=question)
    first_shown = max(len(attempts) - window, 0)
    shown = [
        templates.attempt_format.format(number=number, attempt=attempt)
        for number, attempt in enumerate(attempts[first_shown:], start=first_shown + 1)
    ]
    return Prompt(
        system=_join(system_prompt, templates.system_suffix), user=_join(question, *shown, templates.instruction)
    )


def _join(*blocks: str) -> str:
    return BLOCK_SEPARATOR.join(block for block in blocks if block)


REVISIONS = Strategy(
    "revisions",
    revisions,
    RevisionSettings,
    label=revisions_label,
    largest_request=one_sequence,  # one attempt
    worst_case_tokens=shown_attempts,
    uses_revision_prompt=True,
    # A chain of T attempts, seeded by its index and round; with a fixed chain count P, T changes with the budget.
    pool_unit=lambda settings: None if settings.revision_chains > 0 else settings.revision_length,
    pool_extend=revisions,
)
