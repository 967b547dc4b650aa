"""The whole run's config: `SweepConfig` (every section), loading YAML layers and overrides, and the checks
across sections that run before anything is claimed or started."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from ttsearch.config.base import CONF_DIR, POSITIVE, ConfigError, check_bounds, default_cache_dir, require
from ttsearch.config.generators import generator_backend_names
from ttsearch.config.grading import GradingConfig
from ttsearch.config.models import GeneratorConfig, VerifierConfig, validate_verifier_backend
from ttsearch.config.recorded import RecordedConfig, validate_recorded
from ttsearch.config.run import BenchConfig, DataConfig, SchedulerConfig
from ttsearch.config.search import (
    PROMPT_ALLOWANCE_TOKENS,
    SPEC_KEYS,
    SearchConfig,
    StrategySpec,
    largest_request,
    uses_revision_prompt,
    validate_revision_prompt,
    validate_strategy,
    worst_case_tokens,
)
from ttsearch.config.serving import ServeConfig, validate_serve
from ttsearch.config.training import (
    EvalPRMConfig,
    EvalRevisionConfig,
    LabelConfig,
    PRMTrainConfig,
    RevisionDataConfig,
    RevisionTrainConfig,
    validate_prm,
    validate_revision,
)
from ttsearch.config.verifiers import verifier_names


@dataclass(frozen=True)
class SweepConfig:
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    strategies: list[StrategySpec] = field(default_factory=lambda: [StrategySpec()])
    bench: BenchConfig = field(default_factory=BenchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    prm: PRMTrainConfig = field(default_factory=PRMTrainConfig)
    eval_prm: EvalPRMConfig = field(default_factory=EvalPRMConfig)
    revision_data: RevisionDataConfig = field(default_factory=RevisionDataConfig)
    revision: RevisionTrainConfig = field(default_factory=RevisionTrainConfig)
    eval_revision: EvalRevisionConfig = field(default_factory=EvalRevisionConfig)
    recorded: RecordedConfig = field(default_factory=RecordedConfig)
    budgets: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0])
    pool_subsets: int = field(default=256, metadata=POSITIVE)
    """Subsets of a sample pool averaged for each smaller budget (`ttsearch.search.pool`); every subset when there
    are fewer. More lowers the Monte Carlo error (reported per row) at a little CPU."""
    output_dir: str = "runs/sweep"
    cache_dir: str = field(default_factory=default_cache_dir)
    ray_address: str | None = None


def load_config(paths: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()) -> SweepConfig:
    """Merge defaults ← each YAML file in order ← each `key=value` override, then validate.

    Each layer is merged onto the schema on its own, so an error names the file or override that caused it.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, str | Path):
        paths = [paths]
    files = [resolve_config_path(path) for path in paths]
    layers = [(f" in {path}", _load_yaml(path)) for path in files]
    return _merged(layers + [("", _parse_override(item)) for item in overrides])  # an override's error names it


def load_config_text(text: str, where: str = "a saved config") -> SweepConfig:
    """A config from YAML text (a run directory's config.yaml, wherever its filesystem is), validated."""
    try:
        layer = OmegaConf.create(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad config in {where}: {exc}") from None
    return _merged([(f" in {where}", layer)])


def _merged(layers: list[tuple[str, DictConfig]]) -> SweepConfig:
    """Defaults ← each (where it comes from, layer) in order, then validated."""
    merged: DictConfig = OmegaConf.structured(SweepConfig)
    for where, layer in layers:
        try:
            nested = nest_strategy_settings(layer)
            renamed = OmegaConf.select(nested, "serve.strategy.name")
            if renamed is not None and renamed != merged.serve.strategy.name:
                # Naming another strategy starts from its defaults: earlier layers' settings were the old one's.
                with read_write(merged.serve.strategy):
                    merged.serve.strategy.settings = {}
            merged = OmegaConf.merge(merged, nested)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"bad config{where}: key '{exc.full_key}': {exc.msg.splitlines()[0]}") from None
    try:
        cfg: SweepConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve
        raise ConfigError(f"bad config: key '{exc.full_key}': {exc.msg.splitlines()[0]}") from None
    validate(cfg)
    return cfg


def nest_strategy_settings(layer: DictConfig) -> DictConfig:
    """A layer whose strategy entries (`strategies[i]`, `serve.strategy`) hold their strategy's own keys under
    `settings`, as the schema does: entries are written flat (`{name: beam, beam_width: 4}`), and the registry,
    not the schema, knows which keys a strategy has. A `settings` mapping in an entry is read too."""
    plain = OmegaConf.to_container(layer)
    if isinstance(plain.get("strategies"), list):
        plain["strategies"] = [_nested(entry) for entry in plain["strategies"]]
    serve = plain.get("serve")
    if isinstance(serve, dict) and isinstance(serve.get("strategy"), dict):
        serve["strategy"] = _nested(serve["strategy"])
    return OmegaConf.create(plain)


def _nested(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    flat = {key: value for key, value in entry.items() if key not in (*SPEC_KEYS, "settings")}
    spec = {key: value for key, value in entry.items() if key in SPEC_KEYS}
    return spec | {"settings": {**(entry.get("settings") or {}), **flat}} if flat or "settings" in entry else spec


def resolve_config_path(path: str | Path) -> Path:
    """`path` as given; a `conf/NAME.yaml` that the working directory lacks is the shipped NAME.yaml.

    So the documented `--config conf/main.yaml` works from any directory and from an installed wheel.
    """
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("conf",):
        return path
    shipped = CONF_DIR.joinpath(*path.parts[1:])
    return shipped if shipped.is_file() else path


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        shipped = ", ".join(sorted(f"conf/{p.name}" for p in CONF_DIR.glob("*.yaml")))
        raise ConfigError(f"config file not found: {path} (shipped configs: {shipped or 'none'})")
    try:
        return OmegaConf.load(path)  # type: ignore[return-value]
    except Exception as exc:  # a YAML syntax error, with its line
        raise ConfigError(f"bad config in {path}: {exc}") from None


OVERRIDE_KEY = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")
"""A dotted key as `OmegaConf.from_dotlist` reads it: `data.limit`, `search.revision_prompt.instruction`."""


def _parse_override(item: str) -> DictConfig:
    """One `key=value` override as a config layer; anything else is a one-line error naming it.

    OmegaConf would read `data.limit` (no `=`) as `data.limit=null` and raise a YAML scanner
    traceback for `budgets=[4`; an empty value is refused too, as an unset shell variable
    would silently null a key (write `key=null` for that).
    """
    key, equals, value = item.partition("=")
    if not equals:
        raise ConfigError(f"bad override '{item}': expected key=value (key=null for no value)")
    if not OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"bad override '{item}': expected a dotted key such as data.limit before '=', got '{key}'")
    if not value.strip() or value.startswith("="):
        raise ConfigError(
            f"bad override '{item}': expected one '=' and a value after it (key=null for no value), got value '{value}'"
        )
    try:
        return OmegaConf.from_dotlist([item])
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"bad override '{item}': value '{value}' cannot be parsed ({reason})") from None


def validate(cfg: SweepConfig) -> None:
    """Check what the types cannot, before anything is claimed or started; the first bad key raises a
    ConfigError that names it, the rule and the value."""
    require(bool(cfg.budgets), "budgets", "at least one budget is needed, got []")
    for i, budget in enumerate(cfg.budgets):
        require(budget > 0, f"budgets[{i}]", f"a budget must be > 0, got {budget}")
    require(bool(cfg.seeds), "seeds", "at least one seed is needed, got []")
    require(bool(cfg.strategies), "strategies", "at least one strategy is needed, got []")
    for i, spec in enumerate(cfg.strategies):
        validate_strategy(spec, f"strategies[{i}]", cfg.budgets)
    if any(uses_revision_prompt(spec) for spec in cfg.strategies):
        validate_revision_prompt(cfg.search.revision_prompt)
    for key, kind in (("verifier.kind", cfg.verifier.kind), ("bench.real_verifier", cfg.bench.real_verifier)):
        require(kind in verifier_names(), key, f"unknown verifier '{kind}', expected one of {verifier_names()}")
    validate_verifier_backend(cfg)
    backends = generator_backend_names()
    require(
        cfg.generator.backend in backends,
        "generator.backend",
        f"unknown generator backend '{cfg.generator.backend}', expected one of {backends}",
    )
    check_bounds(cfg)  # every numeric rule written beside its field (`Bound`)
    require(
        bool(cfg.search.step_delimiter),
        "search.step_delimiter",
        "must not be empty (steps are split at it and beam search stops a step there), got ''",
    )
    levels = cfg.data.levels
    require(all(1 <= level <= 5 for level in levels), "data.levels", f"MATH levels are 1 to 5, got {levels}")
    require(
        cfg.data.limit is None or cfg.data.limit > 0, "data.limit", f"must be > 0 (null: all), got {cfg.data.limit}"
    )
    for i, size in enumerate(cfg.bench.batch_curve):
        require(size > 0, f"bench.batch_curve[{i}]", f"a batch size must be > 0, got {size}")
    _validate_request_fits_replica(cfg)
    _validate_context_fits(cfg)
    validate_serve(cfg.serve)
    validate_prm(cfg)
    validate_revision(cfg)
    validate_recorded(cfg.recorded)


def _validate_request_fits_replica(cfg: SweepConfig) -> None:
    """A request wider than a replica's room could never be dispatched: the sweep would wait forever."""
    limit = cfg.scheduler.max_outstanding_per_replica
    width, budget, i = max(
        (largest_request(search, budget), budget, i)
        for i, spec in enumerate(cfg.strategies)
        for search, budget in searches(spec, cfg.budgets)
    )
    require(
        width <= limit,
        "scheduler.max_outstanding_per_replica",
        f"must be >= the widest request, {width} sequences (strategies[{i}] {cfg.strategies[i].name} samples "
        f"all of budget {budget} in one request), got {limit}",
    )


def searches(spec: StrategySpec, budgets: list[int]) -> list[tuple[StrategySpec, int]]:
    """The (search, budget) pairs a sweep runs for `spec`: a pooled strategy searches its pool (early stopping: its
    inner strategy) at the largest budget only (`ttsearch.sweep.pools`)."""
    from ttsearch.search.strategies.registry import pool_search, pooled

    if pooled(spec, budgets):
        return [(pool_search(spec), max(budgets))]
    return [(spec, budget) for budget in budgets]


def _validate_context_fits(cfg: SweepConfig) -> None:
    """A prompt plus generation longer than the engine's context would fail mid-sweep; refuse it now."""
    limit = cfg.generator.max_model_len
    for i, spec in enumerate(cfg.strategies):
        for budget in cfg.budgets:
            tokens, how = worst_case_tokens(spec, budget, cfg.search, f"strategies[{i}]")
            needed = PROMPT_ALLOWANCE_TOKENS + tokens
            require(
                needed <= limit,
                "generator.max_model_len",
                f"strategies[{i}] {spec.name} at budget {budget} can need {needed} tokens of context "
                f"({PROMPT_ALLOWANCE_TOKENS} for the question and prompt texts + {how}), got {limit}; "
                "raise it or lower those keys",
            )
