"""The strategy registry: one table, name → the module object that says everything about a strategy.

A strategy is one module under `ttsearch/search/strategies/` (or in another package) that defines a frozen
settings dataclass, its state machine, and a `Strategy` naming them with its arithmetic; adding it is that module
plus one line in `STRATEGIES` (or an entry point in the group `ENTRY_POINT_GROUP` from another distribution).
Config validation, the sweep's rows, the report, the policy and the service all read strategies from here only.

Entries are dotted paths imported on first use, so the table costs nothing to import and an entry whose module is
missing fails only when that strategy is named.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

if TYPE_CHECKING:
    from ttsearch.config import SearchConfig, StrategySpec
    from ttsearch.search.strategies.common import SearchContext, StrategyRun

STRATEGIES: dict[str, str] = {
    "best_of_n": "ttsearch.search.strategies.best_of_n:BEST_OF_N",  # N whole solutions, one request
    "beam": "ttsearch.search.strategies.beam:BEAM",  # keep N/M beams, expand each M ways, per step
    "lookahead": "ttsearch.search.strategies.beam:LOOKAHEAD",  # beam search valuing a step after a k-step rollout
    "revisions": "ttsearch.search.strategies.revisions:REVISIONS",  # N/T chains of T sequential attempts
    "dvts": "ttsearch.search.strategies.dvts:DVTS",  # N/M independent subtrees, each following its best child
    "rebase": "ttsearch.search.strategies.rebase:REBASE",  # width N shared over live nodes by softmax of scores
    "particle_filter": "ttsearch.search.strategies.particle_filter:PARTICLE_FILTER",  # resampled by weight
    "early_stop": "ttsearch.search.strategies.early_stop:EARLY_STOP",  # an inner strategy in rounds, stopping early
}
"""Every shipped strategy. Order matters only for listings (error messages, docs)."""

ENTRY_POINT_GROUP = "ttsearch.strategies"
"""Other distributions add strategies as entry points of this group: `name = "package.module:OBJECT"`."""

Errors = list[tuple[str, str]]
"""(setting, the rule and the value found) pairs; empty when nothing is wrong."""


@dataclass(frozen=True)
class NoSettings:
    """A strategy without settings of its own (best-of-N)."""

    def errors(self, budgets: list[int]) -> Errors:
        return []


def whole_budget(spec: StrategySpec, budget: int) -> int:
    """The widest request samples the whole budget at once (best-of-N's N solutions, a tree's N first steps)."""
    return budget


def one_sequence(spec: StrategySpec, budget: int) -> int:
    """Every request is one sequence (a revision attempt, a particle's step)."""
    return 1


def whole_solution(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    """A request's context holds one solution at most."""
    return search.max_solution_tokens, f"search.max_solution_tokens {search.max_solution_tokens}"


def step_prefix(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    """A step search's context: a prefix of steps, then k rollout steps after the last one (lookahead only)."""
    lookahead = getattr(spec.options, "lookahead", None)
    if lookahead is None:
        how = f"search.max_steps {search.max_steps}"
        return search.max_steps * search.max_step_tokens, f"{how} x search.max_step_tokens {search.max_step_tokens}"
    how = f"(search.max_steps {search.max_steps} + {key}.lookahead {lookahead})"
    return (search.max_steps + lookahead) * search.max_step_tokens, f"{how} x search.max_step_tokens " + str(
        search.max_step_tokens
    )


def multiple_errors(name: str, size: int, budgets: list[int]) -> Errors:
    """The budget must split into whole units of `size` (beams, chains, rounds): `name` is the setting."""
    if size <= 0:
        return [(name, f"must be > 0, got {size}")]
    return [
        (name, f"budget {budget} is not a positive multiple of {name} {size}")
        for budget in budgets
        if budget % size != 0 or budget < size
    ]


def positive_errors(settings: Any, *names: str) -> Errors:
    return [(name, f"must be > 0, got {getattr(settings, name)}") for name in names if getattr(settings, name) <= 0]


@dataclass(frozen=True)
class Strategy:
    """A registry entry: everything the rest of the system asks of a strategy."""

    name: str
    run: Callable[[SearchContext, int, StrategySpec], StrategyRun]
    """The state machine: yields request lists, receives their results, returns the candidates."""
    settings: type = NoSettings
    """A frozen dataclass: its fields are the strategy's config/request keys, each documented in place; its
    `errors(budgets)` method gives what is wrong with the values at these budgets."""
    scores_steps: bool = False
    """Whether the search reads verifier scores of steps as it goes (tree searches); if not, a selection that reads
    no score (majority) costs no verifier compute."""
    label: Callable[[Any], str] = lambda settings: ""
    """The settings as they appear in a configuration's name: `(M=4)` makes `beam(M=4)`."""
    largest_request: Callable[[StrategySpec, int], int] = whole_budget
    """Sequences of the widest single request at a budget (the scheduler's `request_weight`)."""
    worst_case_tokens: Callable[[StrategySpec, int, SearchConfig, str], tuple[int, str]] = whole_solution
    """Upper bound on the generated tokens in one request's context, and the sum that makes it, naming the keys
    (the last argument is the spec's config key)."""
    inner: str | None = None
    """A strategy that runs another (early stopping): the setting naming it. The entry's keys then include the
    inner strategy's settings, parsed by that strategy, held in the settings' `inner` field."""
    uses_revision_prompt: bool = False
    """Whether it needs `search.revision_prompt`'s texts (checked before a sweep or a request starts)."""
    pool_unit: Callable[[Any], int | None] | None = None
    """Given the settings, the candidates per unit when a budget-k search is k/unit independent, identically
    distributed units (samples, subtrees, chains), so any k/unit units of a larger budget's are distributed as a
    budget-k search's: a sweep then generates only its largest budget and derives the smaller ones from that pool
    (`ttsearch.search.pool`). None (or a None result): every budget searches alone."""
    pool_shared_prompt: bool = False
    """The pool is one request whose prompt every unit shares (best-of-N's n samples): a smaller budget run alone
    pays the same prompt, so a derived row is billed the pool's prompt tokens rather than a share of them."""
    pool_extend: Callable[[SearchContext, int, StrategySpec, int], StrategyRun] | None = None
    """`run` from candidate `first` on: the units a search of the whole budget would add to a pool of `first`
    candidates (units are seeded by their position), so raising a sweep's largest budget extends its pools."""
    pool_replay: Callable[[Any, Sequence[str | None]], int] | None = None
    """For a strategy that spends its budget unit by unit and may stop early (early stopping over best-of-N): given
    the settings and the final answers of units in sampling order, how many units it spends. Its pool is then its
    inner strategy's search at the largest budget (`pool_search`), and each budget's rows replay this rule over
    ordered draws from the pool."""


def pool_search(spec: StrategySpec) -> StrategySpec:
    """The search that makes `spec`'s pool: its inner strategy for one that replays a stopping rule, else itself."""
    from ttsearch.config import inner_spec

    return inner_spec(spec) if strategy(spec.name).pool_replay is not None else spec


def pool_unit(spec: StrategySpec) -> int | None:
    """Candidates per pool unit of `spec` (`Strategy.pool_unit`), or None when each budget searches alone."""
    entry = strategy(spec.name)
    return None if entry.pool_unit is None else entry.pool_unit(spec.options)


def pooled(spec: StrategySpec, budgets: Sequence[int]) -> bool:
    """Whether a sweep over `budgets` derives `spec`'s smaller budgets from its largest one's samples."""
    return len(budgets) > 1 and pool_unit(spec) is not None


@cache
def _load(name: str, path: str) -> Strategy:
    """Imported once per entry: `strategy()` is asked for every job and row, so it must not re-import."""
    module, _, attribute = path.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, Strategy) or found.name != name:
        raise TypeError(f"strategy registry entry '{name}' = '{path}' is not a Strategy named '{name}'")
    return found


@cache
def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def registered() -> dict[str, str]:
    """Name → dotted path of every strategy: the shipped table, then those of installed plugins."""
    return STRATEGIES | {name: path for name, path in _plugins().items() if name not in STRATEGIES}


def strategy_names() -> tuple[str, ...]:
    return tuple(registered())


def strategy(name: str) -> Strategy:
    """The registry entry of `name`; a KeyError naming the known strategies if there is none."""
    table = registered()
    if name not in table:
        raise KeyError(f"unknown strategy '{name}', expected one of {tuple(table)}")
    return _load(name, table[name])


def setting_names(entry: Strategy) -> tuple[str, ...]:
    """The keys of a strategy's own settings, in declaration order (an inner strategy's excluded)."""
    return tuple(field.name for field in dataclasses.fields(entry.settings) if field.name != "inner")


def settings_keys(name: str, flat: Mapping[str, Any]) -> set[str]:
    """The keys an entry of `name` reads among `flat`: its settings, and its inner strategy's (named in `flat`, else
    the default) for one that runs another."""
    entry = strategy(name)
    keys = set(setting_names(entry))
    if entry.inner is not None:
        inner = flat.get(entry.inner, getattr(entry.settings(), entry.inner))
        if inner in registered():
            keys |= set(setting_names(strategy(inner)))
    return keys


def setting_type(key: str) -> str | None:
    """The declared type of a setting key (`int`, `float`, `str`) in the first strategy that has it."""
    for name in strategy_names():
        for field in dataclasses.fields(strategy(name).settings):
            if field.name == key:
                return field.type if isinstance(field.type, str) else field.type.__name__
    return None


def parse_settings(name: str, raw: Mapping[str, Any]) -> tuple[Any, Errors]:
    """`raw` keys (flat, as a config entry or a request writes them) → the strategy's settings object, and what is
    wrong with them as (key, message); the settings are None when they cannot be built."""
    entry = strategy(name)
    own = set(setting_names(entry))
    values = {key: value for key, value in raw.items() if key in own}
    rest = {key: value for key, value in raw.items() if key not in own}
    errors: Errors = []
    inner = None
    if entry.inner is not None:
        default = next(f.default for f in dataclasses.fields(entry.settings) if f.name == entry.inner)
        inner_name = values.get(entry.inner, default)
        allowed = tuple(n for n in strategy_names() if strategy(n).inner is None)
        if inner_name not in allowed:
            return None, [
                (entry.inner, f"unknown strategy '{inner_name}' to run inside {name}, expected one of {allowed}")
            ]
        inner, errors = parse_settings(inner_name, rest)
        rest = {}
    for key in rest:
        owners = [n for n in strategy_names() if key in setting_names(strategy(n))]
        whose = f"; it is a setting of {', '.join(owners)}" if owners else ""
        errors.append((key, f"not a setting of strategy '{name}' (its settings: {list(own) or 'none'}){whose}"))
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(entry.settings), values))
    except OmegaConfBaseException as exc:
        return None, [*errors, (str(exc.full_key or exc.key), exc.msg.splitlines()[0])]
    if inner is not None:
        typed = dataclasses.replace(typed, inner=inner)
    return typed, errors


def settings_record(name: str, settings: Any) -> dict[str, Any]:
    """The settings as flat keys, as a config entry writes them (an inner strategy's merged in): what the
    `settings` result column, the manifest and a saved config hold."""
    entry = strategy(name)
    record = {key: getattr(settings, key) for key in setting_names(entry)}
    if entry.inner is not None:
        record |= settings_record(record[entry.inner], settings.inner)
    return record
