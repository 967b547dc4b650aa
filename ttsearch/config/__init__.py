"""Structured configuration: YAML in conf/ merged onto these dataclasses, then dot-list overrides.

OmegaConf's structured mode rejects unknown keys and wrongly-typed values by name; `validate` adds the checks a type
cannot express (known strategy names, positive budgets, ...), so a bad sweep fails before any engine starts.

One module per group of sections, each section's rules beside it: `models` (generator, verifier), `search` (sampling and
the strategy specs), `run` (data, scheduler, bench), `grading`, `serving`, `training`, `recorded` (`ttsearch import`),
and `sweep` (the whole `SweepConfig`, loading and the checks across sections); and the registries the sections name
entries of: `verifiers` (verifier families) and `generators` (generator backends). Imports only `ttsearch.errors` at
module level; a registry imports the module of an entry when that entry is used, and a strategy entry's rules are read
from the strategy registry (`ttsearch.search.strategies.registry`) inside the functions that check them. Everything else
imports config.
"""

from ttsearch.config.base import (
    CONF_DIR,
    DEFAULT_DATASET,
    EMBEDDED_MODEL,
    Bound,
    ConfigError,
    default_cache_dir,
    field_bounds,
    require,
)
from ttsearch.config.generators import GENERATOR_BACKENDS, generator_backend_names, generator_class
from ttsearch.config.grading import GradingConfig
from ttsearch.config.models import GeneratorConfig, VerifierConfig, verifier_backend
from ttsearch.config.recorded import RECORDED_FORMATS, RecordedConfig, RecordedFormat
from ttsearch.config.run import BenchConfig, DataConfig, SchedulerConfig
from ttsearch.config.search import (
    AGGREGATIONS,
    PROMPT_ALLOWANCE_TOKENS,
    SELECTIONS,
    SPEC_KEYS,
    Aggregation,
    RevisionPromptConfig,
    SearchConfig,
    Selection,
    StrategySpec,
    entry_record,
    inner_spec,
    largest_request,
    running_strategy,
    strategy_errors,
    uses_revision_prompt,
    validate_revision_prompt,
    worst_case_tokens,
)
from ttsearch.config.serving import PROXY_LOCATIONS, ServeAutoscalingConfig, ServeConfig
from ttsearch.config.sweep import (
    OVERRIDE_KEY,
    SweepConfig,
    load_config,
    load_config_text,
    resolve_config_path,
    searches,
    validate,
)
from ttsearch.config.training import (
    FINE_TUNE_SECTIONS,
    PRM_TARGETS,
    EvalPRMConfig,
    EvalRevisionConfig,
    FineTuneConfig,
    LabelConfig,
    PRMTrainConfig,
    RevisionDataConfig,
    RevisionTrainConfig,
)
from ttsearch.config.verifiers import (
    VERIFIER_BACKENDS,
    VERIFIER_FAMILIES,
    model_free_names,
    verifier_family,
    verifier_names,
)

__all__ = [
    "Bound",
    "field_bounds",
    "AGGREGATIONS",
    "CONF_DIR",
    "DEFAULT_DATASET",
    "EMBEDDED_MODEL",
    "FINE_TUNE_SECTIONS",
    "GENERATOR_BACKENDS",
    "OVERRIDE_KEY",
    "PRM_TARGETS",
    "PROMPT_ALLOWANCE_TOKENS",
    "PROXY_LOCATIONS",
    "SELECTIONS",
    "SPEC_KEYS",
    "Aggregation",
    "Selection",
    "VERIFIER_BACKENDS",
    "VERIFIER_FAMILIES",
    "BenchConfig",
    "ConfigError",
    "DataConfig",
    "EvalPRMConfig",
    "EvalRevisionConfig",
    "FineTuneConfig",
    "GeneratorConfig",
    "GradingConfig",
    "RECORDED_FORMATS",
    "RecordedConfig",
    "RecordedFormat",
    "LabelConfig",
    "PRMTrainConfig",
    "RevisionDataConfig",
    "RevisionPromptConfig",
    "RevisionTrainConfig",
    "SchedulerConfig",
    "SearchConfig",
    "ServeAutoscalingConfig",
    "ServeConfig",
    "StrategySpec",
    "SweepConfig",
    "VerifierConfig",
    "default_cache_dir",
    "entry_record",
    "generator_backend_names",
    "generator_class",
    "inner_spec",
    "largest_request",
    "load_config",
    "load_config_text",
    "model_free_names",
    "require",
    "resolve_config_path",
    "running_strategy",
    "searches",
    "strategy_errors",
    "uses_revision_prompt",
    "validate",
    "validate_revision_prompt",
    "verifier_backend",
    "verifier_family",
    "verifier_names",
    "worst_case_tokens",
]
