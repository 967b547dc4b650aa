"""The search: its sampling settings, the strategies a sweep runs (`StrategySpec`) and their rules and arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ttsearch.config.base import require

STRATEGIES = ("best_of_n", "beam", "lookahead", "revisions", "dvts", "rebase", "particle_filter", "early_stop")
EARLY_STOP_INNER = tuple(name for name in STRATEGIES if name != "early_stop")
"""What `early_stop` can wrap: every strategy but itself."""
STEP_SEARCHES = frozenset({"beam", "lookahead", "dvts", "rebase", "particle_filter"})
"""Strategies that grow solutions a step at a time, steered by the verifier's score of each step. The others
(best-of-N, revisions) sample whole solutions and read the verifier only to select a final answer."""
SELECTIONS = ("naive", "weighted", "majority")
AGGREGATIONS = ("last", "min", "prod")


@dataclass
class RevisionPromptConfig:
    """How the `revisions` strategy shows a chain's earlier attempts; text in conf/revision_prompt.yaml."""

    system_suffix: str = ""  # appended to system_prompt from a chain's second attempt on
    attempt_format: str = ""  # one shown attempt: str.format template with {number} and {attempt}
    instruction: str = ""  # plain text after the shown attempts


@dataclass
class SearchConfig:
    """How solutions are sampled; shared by every strategy."""

    system_prompt: str = ""
    step_delimiter: str = "\n\n"
    temperature: float = 0.8
    max_steps: int = 8
    max_step_tokens: int = 96
    max_solution_tokens: int = 512
    revision_prompt: RevisionPromptConfig = field(default_factory=RevisionPromptConfig)


@dataclass
class StrategySpec:
    name: str = "best_of_n"  # one of STRATEGIES
    selections: list[str] = field(default_factory=lambda: ["weighted"])
    aggregation: str = "last"  # how a solution's step scores become one score
    beam_width: int = 4  # M: beam search keeps N/M beams and expands each M times; dvts: N/M subtrees, M ways each
    lookahead: int = 0  # k: rollout steps at temperature 0 (lookahead only)
    revision_length: int = 4  # T: attempts per chain; budget N runs N/T chains in parallel (revisions only)
    # P > 0 fixes the number of parallel chains instead (T = N/P, overriding revision_length), so one sweep
    # holds the same sequential:parallel split at every budget; P=1 is fully sequential (revisions only).
    revision_chains: int = 0
    revision_window: int = 4  # earlier attempts of its chain a revision sees, most recent last (revisions only)
    rebase_temperature: float = 0.2  # rebase: a node's share of the width is softmax(score / this) over live nodes
    particle_temperature: float = 1.0  # particle_filter: resampling weights are softmax(logit(score) / this)
    early_stop_inner: str = "best_of_n"  # early_stop: the strategy run in rounds (its settings are this spec's)
    early_stop_round: int = 4  # early_stop: budget of one round of the inner strategy (divides the budget)
    early_stop_share: float = 0.75  # early_stop: stop once the leading answer holds this share of the candidates


def validate_strategy(spec: StrategySpec, key: str, budgets: list[int]) -> None:
    for field_name, message in strategy_errors(spec, budgets):
        require(False, f"{key}.{field_name}", message)


def strategy_errors(spec: StrategySpec, budgets: list[int]) -> list[tuple[str, str]]:
    """What is wrong with running `spec` at these budgets, as (field of the spec, the rule and the value found);
    empty when nothing is. The sweep's config check and the service's request check share these rules."""
    errors: list[tuple[str, str]] = []
    if spec.name not in STRATEGIES:
        return [("name", f"unknown strategy '{spec.name}', expected one of {STRATEGIES}")]
    if spec.name == "early_stop":
        return _early_stop_errors(spec, budgets)
    if not spec.selections:
        errors.append(("selections", "at least one selection mode is needed, got []"))
    for mode in spec.selections:
        if mode not in SELECTIONS:
            errors.append(("selections", f"unknown selection '{mode}', expected one of {SELECTIONS}"))
    if spec.aggregation not in AGGREGATIONS:
        errors.append(("aggregation", f"unknown aggregation '{spec.aggregation}', expected one of {AGGREGATIONS}"))
    divisor = {
        "beam": "beam_width",
        "lookahead": "beam_width",
        "dvts": "beam_width",
        "revisions": revision_divisor(spec),
    }.get(spec.name)
    if divisor is not None:  # the budget must split into whole beams / whole revision chains
        size = getattr(spec, divisor)
        if size <= 0:
            errors.append((divisor, f"must be > 0, got {size}"))
        else:
            errors += [
                (divisor, f"budget {budget} is not a positive multiple of {divisor} {size}")
                for budget in budgets
                if budget % size != 0 or budget < size
            ]
    if spec.name == "revisions":
        if spec.revision_window <= 0:
            errors.append(("revision_window", f"must be > 0, got {spec.revision_window}"))
        if spec.revision_chains < 0:
            errors.append(("revision_chains", f"must be >= 0 (0: use revision_length), got {spec.revision_chains}"))
    for name, key in (("rebase", "rebase_temperature"), ("particle_filter", "particle_temperature")):
        if spec.name == name and getattr(spec, key) <= 0:
            errors.append((key, f"must be > 0, got {getattr(spec, key)}"))
    if spec.lookahead < 0:
        errors.append(("lookahead", f"must be >= 0, got {spec.lookahead}"))
    elif spec.name != "lookahead" and spec.lookahead != 0:
        errors.append(
            (
                "lookahead",
                f"only the lookahead strategy rolls out, got lookahead {spec.lookahead} for strategy '{spec.name}'",
            )
        )
    return errors


def _early_stop_errors(spec: StrategySpec, budgets: list[int]) -> list[tuple[str, str]]:
    """`early_stop`'s own settings, then its inner strategy's at the round budget (named by this spec's fields)."""
    errors: list[tuple[str, str]] = []
    if spec.early_stop_inner not in EARLY_STOP_INNER:
        return [
            (
                "early_stop_inner",
                f"unknown strategy '{spec.early_stop_inner}' to stop early, expected one of {EARLY_STOP_INNER}",
            )
        ]
    size = spec.early_stop_round
    if size <= 0:
        return [("early_stop_round", f"must be > 0, got {size}")]
    errors += [
        ("early_stop_round", f"budget {budget} is not a positive multiple of early_stop_round {size}")
        for budget in budgets
        if budget % size != 0 or budget < size
    ]
    if not 0 < spec.early_stop_share <= 1:
        errors.append(("early_stop_share", f"a share of the candidates is in (0, 1], got {spec.early_stop_share}"))
    return errors + strategy_errors(inner_spec(spec), [size])


def running_strategy(spec: StrategySpec) -> str:
    """The strategy whose settings `spec` searches with: early stopping's inner strategy, else its own."""
    return spec.early_stop_inner if spec.name == "early_stop" else spec.name


def inner_spec(spec: StrategySpec) -> StrategySpec:
    """The strategy `early_stop` runs in rounds: this spec's settings under the inner strategy's name."""
    return replace(spec, name=spec.early_stop_inner)


def largest_request(spec: StrategySpec, budget: int) -> int:
    """Sequences of the widest single request the strategy sends at this budget (the scheduler's
    `request_weight`): best-of-N samples all N solutions in one request, beam/lookahead search and REBASE all N
    first steps, a DVTS subtree its M children; a revision attempt, a particle's step and a score are one
    sequence each; early stopping sends what its inner strategy sends at the round budget."""
    if spec.name == "early_stop":
        return largest_request(inner_spec(spec), spec.early_stop_round)
    if spec.name == "dvts":
        return spec.beam_width
    return 1 if spec.name in ("revisions", "particle_filter") else budget


PROMPT_ALLOWANCE_TOKENS = 512
"""What the context check allows for the question, the system prompt, the revision texts and the chat
template. 497 of MATH-500's 500 questions take at most 512 tokens with SmolLM2's chat template (the
longest 928); the generated parts that `worst_case_tokens` adds are upper bounds, rarely all reached
at once."""


def worst_case_tokens(spec: StrategySpec, budget: int, search: SearchConfig, key: str) -> tuple[int, str]:
    """Upper bound on the generated tokens in one request's context (the growing prefix plus what it
    generates), and the sum that makes it, naming the keys."""
    if spec.name == "early_stop":
        return worst_case_tokens(inner_spec(spec), spec.early_stop_round, search, key)
    if spec.name in STEP_SEARCHES:  # a prefix of steps, then k rollout steps after the last one (lookahead)
        steps = search.max_steps + spec.lookahead
        how = f"(search.max_steps {search.max_steps} + {key}.lookahead {spec.lookahead})"
        return steps * search.max_step_tokens, f"{how} x search.max_step_tokens {search.max_step_tokens}"
    if spec.name == "revisions":  # up to `window` earlier attempts shown, then the new attempt
        shown = min(spec.revision_window, revision_length(spec, budget) - 1)
        how = f"({shown} shown attempts ({key}.revision_window {spec.revision_window}) + 1 new)"
        size = search.max_solution_tokens
        return (shown + 1) * size, f"{how} x search.max_solution_tokens {size}"
    return search.max_solution_tokens, f"search.max_solution_tokens {search.max_solution_tokens}"


def revision_divisor(spec: StrategySpec) -> str:
    """The field that splits a revisions budget: a fixed chain count P if set, else the chain length T."""
    return "revision_chains" if spec.revision_chains > 0 else "revision_length"


def revision_length(spec: StrategySpec, budget: int) -> int:
    """T, attempts per chain, at this budget."""
    return budget // spec.revision_chains if spec.revision_chains > 0 else spec.revision_length


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
