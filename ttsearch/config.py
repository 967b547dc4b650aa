"""Structured configuration: YAML in conf/ merged onto these dataclasses, then dot-list overrides.

OmegaConf's structured mode rejects unknown keys and wrongly-typed values by name; `validate`
adds the checks a type cannot express (known strategy names, positive budgets, ...), so a bad
sweep fails before any engine starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ttsearch.errors import TTSearchError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"

EMBEDDED_MODEL = "embedded"
STRATEGIES = ("best_of_n", "beam", "lookahead", "revisions")
SELECTIONS = ("naive", "weighted", "majority")
AGGREGATIONS = ("last", "min", "prod")
# Scored in the driver, no replica hosts them. `hash` is a benchmark device, not a verifier: a
# zero-cost deterministic score that lets the benchmark measure scheduling alone.
MODEL_FREE_VERIFIERS = ("oracle", "majority", "hash")
GENERATOR_BACKENDS = ("vllm", "transformers")
VERIFIERS = ("lm_judge", "qwen_prm", "math_shepherd", *MODEL_FREE_VERIFIERS)


class ConfigError(TTSearchError):
    """A configuration problem, named by its key."""


def default_cache_dir() -> str:
    return os.environ.get("TTSEARCH_CACHE", str(Path.home() / ".cache" / "ttsearch"))


@dataclass
class GeneratorConfig:
    model: str = EMBEDDED_MODEL  # "embedded", a Hugging Face id or a local checkpoint path
    backend: str = "vllm"  # one of GENERATOR_BACKENDS; "transformers" where vLLM is not installed
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    max_num_seqs: int = 256
    enforce_eager: bool = True  # CPU: skips graph capture, engine starts in ~30 s
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = 0.85  # GPU: fraction of device memory for weights + KV cache
    cpu_kv_cache_gib: float = 2.0  # CPU: RAM reserved for the KV cache (VLLM_CPU_KVCACHE_SPACE)
    tensor_parallel_size: int = 1
    seed: int = 0
    max_restarts: int = 3  # Ray restarts a dead replica this many times (-1: forever); its work is retried meanwhile
    start_timeout_s: float = 1800.0  # replicas not placed and loaded by then stop the run (a new GPU node takes minutes)
    transformers_call_tokens: int = 4096  # transformers backend: padded tokens (prompt + new) per generate call


@dataclass
class VerifierConfig:
    kind: str = "lm_judge"  # one of VERIFIERS
    model: str = EMBEDDED_MODEL
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    dtype: str = "float32"
    max_batch_tokens: int = 2048  # padded tokens per forward pass (CPU is fastest at 1-2k)
    max_input_tokens: int = 2048  # longer inputs are truncated from the left of the solution
    torch_threads: int = 1
    max_restarts: int = 3  # Ray restarts a dead replica this many times (-1: forever); its work is retried meanwhile
    start_timeout_s: float = 1800.0  # replicas not placed and loaded by then stop the run (a new GPU node takes minutes)


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
    beam_width: int = 4  # M: beam search keeps N/M beams and expands each M times
    lookahead: int = 0  # k: rollout steps at temperature 0 (lookahead only)
    revision_length: int = 4  # T: attempts per chain; budget N runs N/T chains in parallel (revisions only)
    # P > 0 fixes the number of parallel chains instead (T = N/P, overriding revision_length), so one sweep
    # holds the same sequential:parallel split at every budget; P=1 is fully sequential (revisions only).
    revision_chains: int = 0
    revision_window: int = 4  # earlier attempts of its chain a revision sees, most recent last (revisions only)


@dataclass
class DataConfig:
    path: str = str(PROJECT_ROOT / "data" / "math500.jsonl")
    levels: list[int] = field(default_factory=list)  # keep only these MATH levels (1-5); empty keeps all
    limit: int | None = None  # first `limit` problems (after `offset`, after the level filter)
    offset: int = 0
    shards: int = 1  # Ray Data blocks; each is one driver loop against the shared replicas
    shard_num_cpus: float = 0.25  # logical CPUs a shard task reserves (it mostly waits on replicas)


@dataclass
class SchedulerConfig:
    max_in_flight: int = 64  # problems being searched at once, per shard
    max_batch_sequences: int = 256  # sequences per generator call
    max_batch_scores: int = 64  # solutions per verifier call
    max_outstanding_per_replica: int = 512  # sequences queued on one replica before we hold back
    max_request_retries: int = 3  # a request whose replica died is served again at most this many times
    replica_wait_s: float = 600.0  # with no healthy replica of a target for this long, the sweep stops
    health_check_interval_s: float = 5.0  # how often a replica taken out of rotation is asked to answer again
    call_timeout_s: float = 1800.0  # a replica call that streams no result for this long counts as a failure


@dataclass
class BenchConfig:
    """`ttsearch bench` only: what to compare besides the ready-queue search itself."""

    sync_problems: int = 8  # the synchronous baseline runs on this many of the problems
    real_verifier: str = "lm_judge"  # measured again with this hosted verifier ...
    real_verifier_strategies: list[str] = field(default_factory=lambda: ["beam"])  # ... for these strategies
    batch_curve: list[int] = field(default_factory=lambda: [1, 16, 64, 256])  # bare engine tok/s at these batches


@dataclass
class SweepConfig:
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    strategies: list[StrategySpec] = field(default_factory=lambda: [StrategySpec()])
    bench: BenchConfig = field(default_factory=BenchConfig)
    budgets: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0])
    output_dir: str = "runs/sweep"
    cache_dir: str = field(default_factory=default_cache_dir)
    ray_address: str | None = None


def load_config(
    paths: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()
) -> SweepConfig:
    """Merge defaults ← each YAML file in order ← `key=value` overrides, then validate.

    Each layer is merged onto the schema on its own, so an error names the file that caused it.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, str | Path):
        paths = [paths]
    merged: DictConfig = OmegaConf.structured(SweepConfig)
    layers = [(f" in {path}", _load_yaml(Path(path))) for path in paths]
    layers.append(("", OmegaConf.from_dotlist(list(overrides))))
    for where, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"bad config{where}: key '{exc.full_key}': {exc.msg.splitlines()[0]}") from None
    cfg: SweepConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(cfg)
    return cfg


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return OmegaConf.load(path)  # type: ignore[return-value]
    except Exception as exc:  # a YAML syntax error, with its line
        raise ConfigError(f"bad config in {path}: {exc}") from None


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"bad config: key '{key}': {message}")


def validate(cfg: SweepConfig) -> None:
    _require(bool(cfg.budgets), "budgets", "at least one budget is needed")
    for i, budget in enumerate(cfg.budgets):
        _require(budget > 0, f"budgets[{i}]", f"a budget must be > 0, got {budget}")
    _require(bool(cfg.strategies), "strategies", "at least one strategy is needed")
    for i, spec in enumerate(cfg.strategies):
        key = f"strategies[{i}]"
        _require(
            spec.name in STRATEGIES, f"{key}.name", f"unknown strategy '{spec.name}', expected one of {STRATEGIES}"
        )
        _require(bool(spec.selections), f"{key}.selections", "at least one selection mode is needed")
        for mode in spec.selections:
            _require(
                mode in SELECTIONS, f"{key}.selections", f"unknown selection '{mode}', expected one of {SELECTIONS}"
            )
        _require(
            spec.aggregation in AGGREGATIONS,
            f"{key}.aggregation",
            f"unknown aggregation '{spec.aggregation}', expected one of {AGGREGATIONS}",
        )
        divisor = {"beam": "beam_width", "lookahead": "beam_width", "revisions": revision_divisor(spec)}.get(spec.name)
        if divisor is not None:  # the budget must split into whole beams / whole revision chains
            size = getattr(spec, divisor)
            _require(size > 0, f"{key}.{divisor}", "must be > 0")
            for budget in cfg.budgets:
                _require(budget % size == 0 and budget >= size, f"{key}.{divisor}",
                         f"budget {budget} is not a positive multiple of {divisor} {size}")
        if spec.name == "revisions":
            _require(spec.revision_window > 0, f"{key}.revision_window", "must be > 0")
            _require(spec.revision_chains >= 0, f"{key}.revision_chains", "must be >= 0 (0: use revision_length)")
        _require(spec.lookahead >= 0, f"{key}.lookahead", "must be >= 0")
        _require(
            spec.name == "lookahead" or spec.lookahead == 0, f"{key}.lookahead", "only the lookahead strategy rolls out"
        )
    if any(spec.name == "revisions" for spec in cfg.strategies):
        _validate_revision_prompt(cfg.search.revision_prompt)
    _require(
        cfg.verifier.kind in VERIFIERS,
        "verifier.kind",
        f"unknown verifier '{cfg.verifier.kind}', expected one of {VERIFIERS}",
    )
    _require(
        cfg.generator.backend in GENERATOR_BACKENDS,
        "generator.backend",
        f"unknown generator backend '{cfg.generator.backend}', expected one of {GENERATOR_BACKENDS}",
    )
    for name in ("generator", "verifier"):
        _require(getattr(cfg, name).replicas > 0, f"{name}.replicas", "must be > 0")
    _require(cfg.data.shards > 0, "data.shards", "must be > 0")
    _require(all(1 <= level <= 5 for level in cfg.data.levels), "data.levels", "MATH levels are 1 to 5")
    _require(cfg.data.limit is None or cfg.data.limit > 0, "data.limit", "must be > 0")
    _require(cfg.scheduler.max_in_flight > 0, "scheduler.max_in_flight", "must be > 0")
    _require(cfg.search.max_steps > 0, "search.max_steps", "must be > 0")


def revision_divisor(spec: StrategySpec) -> str:
    """The field that splits a revisions budget: a fixed chain count P if set, else the chain length T."""
    return "revision_chains" if spec.revision_chains > 0 else "revision_length"


def revision_length(spec: StrategySpec, budget: int) -> int:
    """T, attempts per chain, at this budget."""
    return budget // spec.revision_chains if spec.revision_chains > 0 else spec.revision_length


def _validate_revision_prompt(prompt: RevisionPromptConfig) -> None:
    key = "search.revision_prompt"
    try:
        shows_attempt = "\0" in prompt.attempt_format.format(number=1, attempt="\0")
    except (KeyError, IndexError, ValueError):
        shows_attempt = False
    _require(
        shows_attempt,
        f"{key}.attempt_format",
        "must be a str.format template showing {attempt} (fields: {number}, {attempt}; write literal braces as "
        "{{ }}); merge conf/revision_prompt.yaml for the defaults",
    )
    _require(
        bool(prompt.instruction),
        f"{key}.instruction",
        "needed by the revisions strategy; see conf/revision_prompt.yaml",
    )
