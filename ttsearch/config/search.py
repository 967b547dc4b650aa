"""The search: its sampling settings, the strategies a sweep runs (`StrategySpec`) and their rules and arithmetic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from ttsearch.config.base import POSITIVE, ConfigError, at_least, require


class Selection(StrEnum):
    """How the final answer is picked from a search's candidates (Snell et al. §5.1)."""

    naive = "naive"  # the candidate the verifier scores highest
    weighted = "weighted"  # the answer whose candidates' scores sum highest (best-of-N weighted)
    majority = "majority"  # the most frequent answer; reads no score


class Aggregation(StrEnum):
    """How a solution's step scores become one score."""

    last = "last"  # the last step's score (the paper's choice for its PRM)
    min = "min"  # the weakest step
    prod = "prod"  # the product: every step right


SELECTIONS = tuple(mode.value for mode in Selection)
AGGREGATIONS = tuple(how.value for how in Aggregation)


@dataclass(frozen=True)
class RevisionPromptConfig:
    """How the `revisions` strategy shows a chain's earlier attempts; text in conf/revision_prompt.yaml."""

    system_suffix: str = ""  # appended to system_prompt from a chain's second attempt on
    attempt_format: str = ""  # one shown attempt: str.format template with {number} and {attempt}
    instruction: str = ""  # plain text after the shown attempts


@dataclass(frozen=True)
class SearchConfig:
    """How solutions are sampled; shared by every strategy."""

    system_prompt: str = ""
    step_delimiter: str = "\n\n"
    temperature: float = field(default=0.8, metadata=at_least(0, "0: greedy"))
    max_steps: int = field(default=8, metadata=POSITIVE)
    max_step_tokens: int = field(default=96, metadata=POSITIVE)
    max_solution_tokens: int = field(default=512, metadata=POSITIVE)
    revision_prompt: RevisionPromptConfig = field(default_factory=RevisionPromptConfig)


@dataclass(frozen=True)
class StrategySpec:
    """One strategy configuration of a sweep (an entry of `strategies`) or of a request.

    Its strategy's own settings are flat keys beside `name` in YAML and requests (`{name: beam, beam_width: 4}`);
    here they are `settings`, and `options` is the strategy's settings object built from them by the registry
    (`ttsearch.search.strategies.registry`), so this section never grows with a new strategy.
    """

    name: str = "best_of_n"  # a strategy of the registry (`ttsearch.search.strategies.registry.STRATEGIES`)
    selections: list[str] = field(default_factory=lambda: [Selection.weighted])
    """`Selection` values; checked by `strategy_errors`, so that a bad one is named by its entry's key."""
    aggregation: str = Aggregation.last
    """An `Aggregation` value: how a solution's step scores become one score."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The strategy's own settings as written (the others take their defaults); `strategy_errors` checks them."""

    @classmethod
    def of(
        cls, name: str = "best_of_n", selections: list[str] | None = None, aggregation: str = "last", **settings: Any
    ) -> StrategySpec:
        """A spec from flat settings, as a config entry writes them: `StrategySpec.of("beam", beam_width=2)`."""
        return cls(name, ["weighted"] if selections is None else selections, aggregation, settings)

    def with_settings(self, **changes: Any) -> StrategySpec:
        """This spec with some of its strategy's settings changed: `spec.with_settings(beam_width=2)`."""
        return replace(self, settings=self.settings | changes)

    @cached_property
    def options(self) -> Any:
        """The strategy's settings object (its registry entry's dataclass); a ConfigError if `settings` are bad."""
        from ttsearch.search.strategies.registry import parse_settings

        parsed, errors = parse_settings(self.name, self.settings)
        for key, message in errors:
            raise ConfigError(f"bad strategy settings: key '{key}': {message}")
        return parsed

    def filled_settings(self) -> dict[str, Any]:
        """Every setting of the strategy, as flat keys (defaults filled in): the `settings` result column."""
        from ttsearch.search.strategies.registry import settings_record

        return settings_record(self.name, self.options)

    def record(self) -> dict[str, Any]:
        """The flat mapping a config entry writes for this spec, every setting filled in: what manifests and saved
        configs hold."""
        return {
            "name": self.name,
            "selections": list(self.selections),
            "aggregation": self.aggregation,
            **self.filled_settings(),
        }


SPEC_KEYS = ("name", "selections", "aggregation")
"""The keys of a strategy entry that are not settings of the strategy."""


def entry_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy entry as any version saved it (a manifest's, a run's config.yaml) → today's record (`record`).

    Before the registry, every entry carried every strategy's settings (`beam_width` on a best-of-N entry); the
    keys its strategy does not read are dropped, and settings added since read as their defaults."""
    from ttsearch.search.strategies.registry import settings_keys

    name = entry.get("name", StrategySpec.name)
    flat = {**(entry.get("settings") or {}), **{key: value for key, value in entry.items() if key != "settings"}}
    keys = settings_keys(name, flat)
    settings = {key: value for key, value in flat.items() if key in keys}
    spec = StrategySpec(name, list(flat.get("selections", ["weighted"])), flat.get("aggregation", "last"), settings)
    return spec.record()


def validate_strategy(spec: StrategySpec, key: str, budgets: list[int]) -> None:
    for field_name, message in strategy_errors(spec, budgets):
        require(False, f"{key}.{field_name}", message)


def strategy_errors(spec: StrategySpec, budgets: list[int]) -> list[tuple[str, str]]:
    """What is wrong with running `spec` at these budgets, as (key of the entry, the rule and the value found);
    empty when nothing is. The sweep's config check and the service's request check share these rules; each
    strategy's own come from its settings (`errors`), the inner strategy's too for one that runs another."""
    from ttsearch.search.strategies.registry import parse_settings, strategy_names

    if spec.name not in strategy_names():
        return [("name", f"unknown strategy '{spec.name}', expected one of {strategy_names()}")]
    errors: list[tuple[str, str]] = []
    if not spec.selections:
        errors.append(("selections", "at least one selection mode is needed, got []"))
    for mode in spec.selections:
        if mode not in SELECTIONS:
            errors.append(("selections", f"unknown selection '{mode}', expected one of {SELECTIONS}"))
    if spec.aggregation not in AGGREGATIONS:
        errors.append(("aggregation", f"unknown aggregation '{spec.aggregation}', expected one of {AGGREGATIONS}"))
    options, setting_errors = parse_settings(spec.name, spec.settings)
    return errors + (setting_errors or options.errors(budgets))


def running_strategy(spec: StrategySpec) -> str:
    """The strategy whose settings `spec` searches with: an inner strategy's (early stopping's), else its own."""
    return inner_spec(spec).name


def uses_revision_prompt(spec: StrategySpec) -> bool:
    """Whether the strategy that searches needs `search.revision_prompt`'s texts (revisions does)."""
    from ttsearch.search.strategies.registry import strategy

    return strategy(running_strategy(spec)).uses_revision_prompt


def inner_spec(spec: StrategySpec) -> StrategySpec:
    """The strategy a wrapping strategy (`early_stop`) runs: its inner settings under the inner strategy's name."""
    from ttsearch.search.strategies.registry import settings_record, strategy

    entry = strategy(spec.name)
    if entry.inner is None:
        return spec
    options = spec.options
    name = getattr(options, entry.inner)
    return replace(spec, name=name, settings=settings_record(name, options.inner))


def largest_request(spec: StrategySpec, budget: int) -> int:
    """Sequences of the widest single request the strategy sends at this budget (the scheduler's
    `request_weight`), as its registry entry computes it."""
    from ttsearch.search.strategies.registry import strategy

    return strategy(spec.name).largest_request(spec, budget)


PROMPT_ALLOWANCE_TOKENS = 512
"""What the context check allows for the question, the system prompt, the revision texts and the chat
template. 497 of MATH-500's 500 questions take at most 512 tokens with SmolLM2's chat template (the
longest 928); the generated parts that `worst_case_tokens` adds are upper bounds, rarely all reached
at once."""


def worst_case_tokens(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    """Upper bound on the generated tokens in one request's context (the growing prefix plus what it
    generates), and the sum that makes it, naming the keys; the strategy's registry entry computes it."""
    from ttsearch.search.strategies.registry import strategy

    return strategy(spec.name).worst_case_tokens(spec, budget, search, key)


def validate_revision_prompt(prompt: RevisionPromptConfig) -> None:
    """The texts the revisions strategy needs (a sweep's check, and the service's for a revisions request)."""
    key = "search.revision_prompt"
    try:
        shows_attempt = "\0" in prompt.attempt_format.format(number=1, attempt="\0")
    except (KeyError, IndexError, ValueError):
        shows_attempt = False
    require(
        shows_attempt,
        f"{key}.attempt_format",
        "must be a str.format template showing {attempt} (fields: {number}, {attempt}; write literal braces as "
        f"{{{{ }}}}); merge conf/revision_prompt.yaml for the defaults, got {prompt.attempt_format!r}",
    )
    require(
        bool(prompt.instruction),
        f"{key}.instruction",
        "needed by the revisions strategy (see conf/revision_prompt.yaml), got ''",
    )
