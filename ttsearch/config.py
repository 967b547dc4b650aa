"""Structured configuration: YAML in conf/ merged onto these dataclasses, then dot-list overrides.

OmegaConf's structured mode rejects unknown keys and wrongly-typed values by name; `validate`
adds the checks a type cannot express (known strategy names, positive budgets, ...), so a bad
sweep fails before any engine starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ttsearch.errors import TTSearchError


def _shipped(packaged: str, source: str) -> Path:
    """A folder shipped with the code: inside the installed package (a wheel puts it there, see
    pyproject.toml), else at the top of the source tree (a checkout or an editable install)."""
    package = Path(__file__).resolve().parent
    inside = package / packaged
    return inside if inside.is_dir() else package.parent / source


CONF_DIR = _shipped("conf", "conf")
"""The shipped configs; `--config conf/NAME.yaml` finds NAME here when the working directory has no conf/."""
DEFAULT_DATASET = _shipped("datasets", "data") / "math500.jsonl"
"""MATH-500, shipped with the package: the default `data.path`."""

EMBEDDED_MODEL = "embedded"
STRATEGIES = ("best_of_n", "beam", "lookahead", "revisions", "dvts", "rebase", "particle_filter", "early_stop")
EARLY_STOP_INNER = tuple(name for name in STRATEGIES if name != "early_stop")
"""What `early_stop` can wrap: every strategy but itself."""
STEP_SEARCHES = frozenset({"beam", "lookahead", "dvts", "rebase", "particle_filter"})
"""Strategies that grow solutions a step at a time, steered by the verifier's score of each step. The others
(best-of-N, revisions) sample whole solutions and read the verifier only to select a final answer."""
SELECTIONS = ("naive", "weighted", "majority")
AGGREGATIONS = ("last", "min", "prod")
# Scored in the driver, no replica hosts them. `hash` is a benchmark device, not a verifier: a
# zero-cost deterministic score that lets the benchmark measure scheduling alone.
MODEL_FREE_VERIFIERS = ("oracle", "majority", "hash")
GENERATOR_BACKENDS = ("vllm", "transformers")
# PRM families whose step score is a next-token probability at a tag: a vLLM engine can serve them (one
# 1-token read per step, prefix-cached), on an engine of their own or the generator's.
VLLM_VERIFIERS = ("lm_judge", "math_shepherd", "rlhflow")
# PRM families with a token-classification head that vLLM hosts on its pooling runner (one read of the
# logits at each new step's tag, prefix-cached), on an engine of their own only. `skywork`'s value head has
# no vLLM model class and runs on transformers.
VLLM_POOLING_VERIFIERS = ("qwen_prm",)
# Where a hosted verifier runs: on the generator replicas' own engines (same model only), on a vLLM engine
# of its own, or on transformers; "auto" takes the first of these the verifier and generator allow.
VERIFIER_BACKENDS = ("auto", "generator", "vllm", "transformers")
PROXY_LOCATIONS = ("EveryNode", "HeadOnly", "Disabled")  # Ray Serve's ProxyLocation values
VERIFIERS = ("lm_judge", "qwen_prm", "math_shepherd", "rlhflow", "skywork", *MODEL_FREE_VERIFIERS)


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
    start_timeout_s: float = 1800.0  # replicas not placed and loaded by then stop the run (new GPU nodes: minutes)
    transformers_call_tokens: int = 4096  # transformers backend: padded tokens (prompt + new) per generate call


@dataclass
class VerifierConfig:
    kind: str = "lm_judge"  # one of VERIFIERS
    model: str = EMBEDDED_MODEL
    backend: str = "auto"  # one of VERIFIER_BACKENDS; see `verifier_backend`
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    dtype: str = "float32"
    max_batch_tokens: int = 2048  # padded tokens per forward pass (CPU is fastest at 1-2k)
    max_input_tokens: int = 2048  # longer inputs are truncated from the left of the solution
    torch_threads: int = 1  # transformers backend
    cpu_kv_cache_gib: float = 1.0  # vllm backend on CPU: RAM for the prefix cache / KV cache
    gpu_memory_utilization: float = 0.85  # vllm backend on GPU
    max_num_seqs: int = 256  # vllm backend: reads scheduled together
    max_restarts: int = 3  # Ray restarts a dead replica this many times (-1: forever); its work is retried meanwhile
    start_timeout_s: float = 1800.0  # replicas not placed and loaded by then stop the run (new GPU nodes: minutes)


def verifier_backend(verifier: VerifierConfig, generator: GeneratorConfig | None) -> str:
    """The backend a hosted verifier runs on once "auto" is resolved.

    "auto" prefers the generator replicas' own engines when the verifier is the same model as the generator
    and a vLLM-servable family: no second engine competing for the same cores or GPU memory, and a judge
    read costs what one prefill of the new step costs (measured faster on 2 cores, see the README); then a
    vLLM engine of its own, which is also where the token-classification families (`VLLM_POOLING_VERIFIERS`,
    on vLLM's pooling runner) go; transformers for families vLLM cannot host. Without a `generator` (a
    verifier replica started on its own) the generator's engines are not an option.
    """
    if verifier.backend != "auto":
        return verifier.backend
    if verifier.kind in VLLM_POOLING_VERIFIERS:
        return "vllm"
    if verifier.kind not in VLLM_VERIFIERS:
        return "transformers"
    if generator is not None and verifier.model == generator.model and generator.backend == "vllm":
        return "generator"
    return "vllm"


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


@dataclass
class DataConfig:
    path: str = str(DEFAULT_DATASET)
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
    affinity_slack: int = 32  # sequences a run's home replica may carry beyond another before the run moves
    max_request_retries: int = 3  # a request whose replica died is served again at most this many times
    replica_wait_s: float = 600.0  # with no healthy replica of a target for this long, the sweep stops
    health_check_interval_s: float = 5.0  # how often a replica taken out of rotation is asked to answer again
    call_timeout_s: float = 1800.0  # a replica call that streams no result for this long counts as a failure
    batch_window_s: float = 0.0  # a dispatch waits this long for more requests to join its calls (serve: a few ms)


@dataclass
class BenchConfig:
    """`ttsearch bench` only: what to compare besides the ready-queue search itself."""

    sync_problems: int = 8  # the synchronous baseline runs on this many of the problems
    real_verifier: str = "lm_judge"  # measured again with this hosted verifier ...
    real_verifier_strategies: list[str] = field(default_factory=lambda: ["beam"])  # ... for these strategies
    real_verifier_backends: list[str] = field(default_factory=lambda: ["auto"])  # ... on each of these backends
    batch_curve: list[int] = field(default_factory=lambda: [1, 16, 64, 256])  # bare engine tok/s at these batches


@dataclass
class ServeAutoscalingConfig:
    """Ray Serve autoscaling of the ingress replicas; each ingress replica owns its generator (and verifier)
    replicas, so scaling it out adds engines too. min_replicas == max_replicas: a fixed count."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 16.0  # requests per ingress replica Serve aims for when it scales


@dataclass
class ServeConfig:
    """`ttsearch serve`: the HTTP service (see conf/serve.yaml)."""

    host: str = "127.0.0.1"  # localhost only unless you say otherwise (0.0.0.0 in a pod behind a Service)
    port: int = 8000
    proxy_location: str = "EveryNode"  # Serve's HTTP proxies: EveryNode, HeadOnly or Disabled
    model_name: str = "ttsearch"  # the `model` clients name; any other is a 404
    api_key: str | None = None  # a bearer key clients must send; the TTSEARCH_API_KEY variable also sets it
    autoscaling: ServeAutoscalingConfig = field(default_factory=ServeAutoscalingConfig)
    max_pending_requests: int = 64  # per ingress replica, searching or waiting; more get 503 + Retry-After
    max_concurrent_searches: int = 32  # per ingress replica: questions in the ready queue at once
    retry_after_s: int = 5
    max_budget: int = 64
    max_body_bytes: int = 65536
    max_question_chars: int = 4000
    budget: int = 4  # a request's budget when it names none
    strategy: StrategySpec = field(default_factory=StrategySpec)  # its strategy when it names none (selections[0])
    policy_dir: str | None = None  # a sweep output_dir holding policy.json (`ttsearch optimize`): compute_optimal


@dataclass
class LabelConfig:
    """`ttsearch label`: Monte Carlo step labels (Snell et al.'s Algorithm 1, Math-Shepherd's estimator).

    For each question, `samples` solutions are sampled and split into steps at `search.step_delimiter`; from
    every step prefix `rollouts` completions run to the end and are graded. A step's soft label is the share
    of its rollouts that reach the reference answer (the paper's and Math-Shepherd's SE), its hard label
    whether any does (Math-Shepherd's HE). Samples and rollouts are drawn at `search.temperature`.
    """

    samples: int = 4  # K: solutions sampled per question
    rollouts: int = 4  # R: completions from every step prefix
    max_steps: int = 8  # label at most this many leading step prefixes of a solution (later steps get no label)
    reference_prefixes: bool = False  # also roll out from prefixes of the question's reference solution
    seed: int = 0  # every sample and rollout is seeded from (question, seed, position): a re-run is a replay


@dataclass
class FineTuneConfig:
    """What `train-prm` and `train-revision` share: fine-tuning a causal LM with transformers' `Trainer` inside
    Ray Train, checkpointed and resumable."""

    base_model: str = EMBEDDED_MODEL  # any Hugging Face causal LM: "embedded", a local directory or a hub id
    output_dir: str = "runs/model"  # checkpoints/, model/, loss_curve.png, train.json
    heldout_fraction: float = 0.1  # questions kept out of training, by a hash of their id (evaluations draw the same)
    epochs: float = 1.0
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    batch_size: int = 8  # examples per device and optimizer step (before gradient accumulation)
    gradient_accumulation_steps: int = 1
    max_input_tokens: int = 1024
    dtype: str = "float32"  # the weights trained and saved; bfloat16 on GPUs that have it
    num_workers: int = 1  # Ray Train workers (data-parallel)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    eval_steps: int = 50  # held-out loss every this many optimizer steps (and at the end)
    save_steps: int = 200  # a Ray Train checkpoint every this many optimizer steps (and at the end)
    logging_steps: int = 5
    seed: int = 0


@dataclass
class PRMTrainConfig(FineTuneConfig):
    """`ttsearch train-prm`: a Math-Shepherd-format PRM (a tag after each step, p("+") vs p("-") at the tag,
    binary cross-entropy on the step labels). Longer solutions than `max_input_tokens` are cut from the left, as
    the verifier cuts them."""

    labels: list[str] = field(default_factory=list)  # `ttsearch label` output_dirs and/or first-error-step files
    output_dir: str = "runs/prm"
    target: str = "soft"  # which `ttsearch label` label to fit: "soft" (success share) or "hard" (any success)


@dataclass
class RevisionDataConfig:
    """`ttsearch revision-data`: training trajectories for a revision model (Snell et al. §6.1).

    For each question, `samples` attempts are sampled from the plain prompt and graded. Each correct attempt
    (at most `trajectories_per_question`, distinct texts) ends one trajectory whose earlier attempts are wrong
    ones of the same question: the nearest to it by normalised character edit distance, ordered by increasing
    similarity (the nearest last, just before the correct one). Their number is drawn uniformly from
    `min_wrong`..min(`window`, wrong attempts available), seeded by the question, so training covers every chain
    position the revisions strategy reaches; each trajectory is rendered in the strategy's prompt format.
    """

    samples: int = 16  # attempts sampled per question
    window: int = 4  # the most wrong attempts before the correct one: the revisions strategy's revision_window
    min_wrong: int = 1  # the fewest; 0 also trains first attempts (plain prompt -> correct attempt)
    trajectories_per_question: int = 4  # correct attempts used per question, each ending its own trajectory
    reference_fallback: bool = False  # a question without a correct attempt: its reference solution ends one
    # trajectory instead (not the paper's recipe; for a generator that rarely gets a question right)
    seed: int = 0  # sampling and the draws are seeded from (question, seed): a re-run is a replay


@dataclass
class RevisionTrainConfig(FineTuneConfig):
    """`ttsearch train-revision`: supervised fine-tuning of the generator on `ttsearch revision-data`
    trajectories, the loss on the final (correct) attempt only. The result drops in as `generator.model`."""

    data: list[str] = field(default_factory=list)  # `ttsearch revision-data` output_dirs
    output_dir: str = "runs/revision"


@dataclass
class EvalRevisionConfig:
    """`ttsearch eval-revision`: does revising help? For each model, the revisions strategy (chains of
    `revision_length` attempts) and best-of-N at the same budget over `data`, then pass@1 of attempt t by t."""

    models: list[str] = field(default_factory=lambda: [EMBEDDED_MODEL, "runs/revision/model"])  # the first is the base
    budget: int = 8  # samples per question for each strategy
    revision_length: int = 4  # T: attempts per chain (budget / T chains)
    revision_window: int = 4  # earlier attempts shown when writing the next
    output: str = "runs/eval_revision"  # a sweep directory per model, revision_curve.png, eval.md and eval.json


@dataclass
class EvalPRMConfig:
    """`ttsearch eval-prm`: ProcessBench's protocol, and step ROC AUC on held-out `ttsearch label` steps."""

    # ProcessBench subset files; the GSM8K and MATH subsets ship with the package (Apache-2.0)
    processbench: list[str] = field(
        default_factory=lambda: ["data/processbench/gsm8k.json", "data/processbench/math.json"]
    )
    limit: int | None = None  # `limit` items of each subset, evenly spaced over its file (null: all)
    labels: str | None = None  # a `ttsearch label` output_dir: the steps of its questions held out of training
    # (`prm.heldout_fraction`, the split train-prm used) give the AUC
    threshold: float = 0.5  # the first step scored below this is the predicted first error
    output: str = "runs/eval_prm"  # eval.md and eval.json go here


@dataclass
class SweepConfig:
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    strategies: list[StrategySpec] = field(default_factory=lambda: [StrategySpec()])
    bench: BenchConfig = field(default_factory=BenchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    prm: PRMTrainConfig = field(default_factory=PRMTrainConfig)
    eval_prm: EvalPRMConfig = field(default_factory=EvalPRMConfig)
    revision_data: RevisionDataConfig = field(default_factory=RevisionDataConfig)
    revision: RevisionTrainConfig = field(default_factory=RevisionTrainConfig)
    eval_revision: EvalRevisionConfig = field(default_factory=EvalRevisionConfig)
    budgets: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0])
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
    merged: DictConfig = OmegaConf.structured(SweepConfig)
    files = [resolve_config_path(path) for path in paths]
    layers = [(f" in {path}", _load_yaml(path)) for path in files]
    layers += [("", _parse_override(item)) for item in overrides]  # the error names the key
    for where, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"bad config{where}: key '{exc.full_key}': {exc.msg.splitlines()[0]}") from None
    try:
        cfg: SweepConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve
        raise ConfigError(f"bad config: key '{exc.full_key}': {exc.msg.splitlines()[0]}") from None
    validate(cfg)
    return cfg


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


def _require(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming `key`; `message` gives the rule and the value found."""
    if not condition:
        raise ConfigError(f"bad config: key '{key}': {message}")


FINE_TUNE_SECTIONS = ("prm", "revision")
"""The config sections that are a `FineTuneConfig`."""

GREATER_THAN_ZERO = (
    "generator.replicas",
    "generator.max_model_len",
    "generator.max_num_seqs",
    "generator.cpu_kv_cache_gib",
    "generator.tensor_parallel_size",
    "generator.start_timeout_s",
    "generator.transformers_call_tokens",
    "verifier.replicas",
    "verifier.max_batch_tokens",
    "verifier.max_input_tokens",
    "verifier.torch_threads",
    "verifier.start_timeout_s",
    "verifier.cpu_kv_cache_gib",
    "verifier.max_num_seqs",
    "search.max_steps",
    "search.max_step_tokens",
    "search.max_solution_tokens",
    "data.shards",
    "scheduler.max_in_flight",
    "scheduler.max_batch_sequences",
    "scheduler.max_batch_scores",
    "scheduler.max_outstanding_per_replica",
    "scheduler.replica_wait_s",
    "scheduler.health_check_interval_s",
    "scheduler.call_timeout_s",
    "bench.sync_problems",
    "serve.port",
    "serve.max_pending_requests",
    "serve.max_concurrent_searches",
    "serve.retry_after_s",
    "serve.max_budget",
    "serve.max_body_bytes",
    "serve.max_question_chars",
    "serve.budget",
    "serve.autoscaling.min_replicas",
    "serve.autoscaling.target_ongoing_requests",
    "label.samples",
    "label.rollouts",
    "label.max_steps",
    *(
        f"{section}.{key}"
        for section in FINE_TUNE_SECTIONS
        for key in (
            "epochs",
            "learning_rate",
            "batch_size",
            "gradient_accumulation_steps",
            "max_input_tokens",
            "num_workers",
            "cpus_per_worker",
            "eval_steps",
            "save_steps",
            "logging_steps",
        )
    ),
    "revision_data.samples",
    "revision_data.window",
    "revision_data.trajectories_per_question",
    "eval_revision.budget",
    "eval_revision.revision_length",
    "eval_revision.revision_window",
)
"""Numeric keys that must be > 0 (a count, a size or a timeout of zero would hang or do nothing)."""

AT_LEAST: dict[str, tuple[float, str]] = {
    "generator.num_gpus": (0, ""),
    "generator.num_cpus": (0, ""),
    "verifier.num_gpus": (0, ""),
    "verifier.num_cpus": (0, ""),
    "generator.max_restarts": (-1, " (-1: restart forever)"),
    "verifier.max_restarts": (-1, " (-1: restart forever)"),
    "search.temperature": (0, " (0: greedy)"),
    "data.offset": (0, ""),
    "data.shard_num_cpus": (0, ""),
    "scheduler.max_request_retries": (0, " (0: never retry)"),
    "scheduler.affinity_slack": (0, " (0: a run moves whenever its home replica carries more)"),
    "scheduler.batch_window_s": (0, " (0: no wait, requests of one event-loop tick share a call)"),
    **{f"{section}.{key}": (0, "") for section in FINE_TUNE_SECTIONS for key in ("weight_decay", "warmup_ratio")},
    "revision_data.min_wrong": (0, " (0: trajectories without a wrong attempt too)"),
}
"""Numeric keys with a lower bound that is itself allowed, and what the bound means."""


def validate(cfg: SweepConfig) -> None:
    """Check what the types cannot, before anything is claimed or started; the first bad key raises a
    ConfigError that names it, the rule and the value."""
    _require(bool(cfg.budgets), "budgets", "at least one budget is needed, got []")
    for i, budget in enumerate(cfg.budgets):
        _require(budget > 0, f"budgets[{i}]", f"a budget must be > 0, got {budget}")
    _require(bool(cfg.seeds), "seeds", "at least one seed is needed, got []")
    _require(bool(cfg.strategies), "strategies", "at least one strategy is needed, got []")
    for i, spec in enumerate(cfg.strategies):
        _validate_strategy(spec, f"strategies[{i}]", cfg.budgets)
    if any(running_strategy(spec) == "revisions" for spec in cfg.strategies):
        validate_revision_prompt(cfg.search.revision_prompt)
    _require(
        cfg.verifier.kind in VERIFIERS,
        "verifier.kind",
        f"unknown verifier '{cfg.verifier.kind}', expected one of {VERIFIERS}",
    )
    _require(
        cfg.bench.real_verifier in VERIFIERS,
        "bench.real_verifier",
        f"unknown verifier '{cfg.bench.real_verifier}', expected one of {VERIFIERS}",
    )
    _validate_verifier_backend(cfg)
    _require(
        cfg.generator.backend in GENERATOR_BACKENDS,
        "generator.backend",
        f"unknown generator backend '{cfg.generator.backend}', expected one of {GENERATOR_BACKENDS}",
    )
    for key in GREATER_THAN_ZERO:
        value = attrgetter(key)(cfg)
        _require(value > 0, key, f"must be > 0, got {value}")
    for key, (bound, meaning) in AT_LEAST.items():
        value = attrgetter(key)(cfg)
        _require(value >= bound, key, f"must be >= {bound}{meaning}, got {value}")
    for key in ("generator.gpu_memory_utilization", "verifier.gpu_memory_utilization"):
        utilization = attrgetter(key)(cfg)
        _require(0 < utilization <= 1, key, f"must be in (0, 1], got {utilization}")
    _require(
        bool(cfg.search.step_delimiter),
        "search.step_delimiter",
        "must not be empty (steps are split at it and beam search stops a step there), got ''",
    )
    levels = cfg.data.levels
    _require(all(1 <= level <= 5 for level in levels), "data.levels", f"MATH levels are 1 to 5, got {levels}")
    _require(
        cfg.data.limit is None or cfg.data.limit > 0, "data.limit", f"must be > 0 (null: all), got {cfg.data.limit}"
    )
    for i, size in enumerate(cfg.bench.batch_curve):
        _require(size > 0, f"bench.batch_curve[{i}]", f"a batch size must be > 0, got {size}")
    _validate_request_fits_replica(cfg)
    _validate_context_fits(cfg)
    _validate_serve(cfg.serve)
    _validate_prm(cfg)
    _validate_revision(cfg)


PRM_TARGETS = ("soft", "hard")


def _validate_prm(cfg: SweepConfig) -> None:
    """`ttsearch train-prm` and `eval-prm` settings."""
    _require(cfg.prm.target in PRM_TARGETS, "prm.target", f"expected one of {PRM_TARGETS}, got '{cfg.prm.target}'")
    for section in FINE_TUNE_SECTIONS:
        tune: FineTuneConfig = getattr(cfg, section)
        fraction = tune.heldout_fraction
        _require(0 <= fraction < 1, f"{section}.heldout_fraction", f"must be in [0, 1), got {fraction}")
        _require(tune.warmup_ratio < 1, f"{section}.warmup_ratio", f"must be < 1, got {tune.warmup_ratio}")
    threshold = cfg.eval_prm.threshold
    _require(0 <= threshold <= 1, "eval_prm.threshold", f"a step score threshold is in [0, 1], got {threshold}")
    limit = cfg.eval_prm.limit
    _require(limit is None or limit > 0, "eval_prm.limit", f"must be > 0 (null: all), got {limit}")


def _validate_revision(cfg: SweepConfig) -> None:
    """`ttsearch revision-data`, `train-revision` and `eval-revision` settings."""
    data = cfg.revision_data
    _require(
        data.min_wrong <= data.window,
        "revision_data.min_wrong",
        f"must be <= revision_data.window ({data.window}), got {data.min_wrong}",
    )
    evaluation = cfg.eval_revision
    _require(
        evaluation.budget % evaluation.revision_length == 0,
        "eval_revision.budget",
        f"must be a multiple of eval_revision.revision_length ({evaluation.revision_length}), got {evaluation.budget}",
    )
    _require(bool(evaluation.models), "eval_revision.models", "at least one model is needed, got []")


def _validate_serve(serve: ServeConfig) -> None:
    scaling = serve.autoscaling
    _require(
        scaling.max_replicas >= scaling.min_replicas,
        "serve.autoscaling.max_replicas",
        f"must be >= serve.autoscaling.min_replicas {scaling.min_replicas}, got {scaling.max_replicas}",
    )
    _require(serve.port < 65536, "serve.port", f"must be a TCP port (1-65535), got {serve.port}")
    _require(
        serve.proxy_location in PROXY_LOCATIONS,
        "serve.proxy_location",
        f"expected one of {PROXY_LOCATIONS}, got '{serve.proxy_location}'",
    )
    _require(
        serve.budget <= serve.max_budget,
        "serve.budget",
        f"must be <= serve.max_budget {serve.max_budget}, got {serve.budget}",
    )
    for field_name, message in strategy_errors(serve.strategy, [serve.budget]):
        _require(False, f"serve.strategy.{field_name}", message)


def _validate_verifier_backend(cfg: SweepConfig) -> None:
    verifier = cfg.verifier
    _require(
        verifier.backend in VERIFIER_BACKENDS,
        "verifier.backend",
        f"unknown verifier backend '{verifier.backend}', expected one of {VERIFIER_BACKENDS}",
    )
    if verifier.kind in MODEL_FREE_VERIFIERS:
        return
    backend = verifier_backend(verifier, cfg.generator)
    if backend == "vllm":
        servable = (*VLLM_VERIFIERS, *VLLM_POOLING_VERIFIERS)
        _require(
            verifier.kind in servable,
            "verifier.backend",
            f"'vllm' serves the PRM families {servable}; '{verifier.kind}' needs 'transformers'",
        )
    if backend == "generator":
        instead = "'vllm' or 'transformers'" if verifier.kind in VLLM_POOLING_VERIFIERS else "'transformers'"
        _require(
            verifier.kind in VLLM_VERIFIERS,
            "verifier.backend",
            f"'generator' serves the next-token PRM families {VLLM_VERIFIERS}; '{verifier.kind}' needs {instead}",
        )
    if backend == "generator":
        _require(
            verifier.model == cfg.generator.model,
            "verifier.backend",
            f"'generator' runs the verifier on the generator's engine, so verifier.model must equal generator.model "
            f"('{verifier.model}' vs '{cfg.generator.model}')",
        )
        _require(
            cfg.generator.backend == "vllm",
            "verifier.backend",
            f"'generator' needs generator.backend=vllm, got '{cfg.generator.backend}'",
        )


def _validate_strategy(spec: StrategySpec, key: str, budgets: list[int]) -> None:
    for field_name, message in strategy_errors(spec, budgets):
        _require(False, f"{key}.{field_name}", message)


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


def _validate_request_fits_replica(cfg: SweepConfig) -> None:
    """A request wider than a replica's room could never be dispatched: the sweep would wait forever."""
    limit = cfg.scheduler.max_outstanding_per_replica
    width, budget, i = max(
        (largest_request(spec, budget), budget, i) for i, spec in enumerate(cfg.strategies) for budget in cfg.budgets
    )
    _require(
        width <= limit,
        "scheduler.max_outstanding_per_replica",
        f"must be >= the widest request, {width} sequences (strategies[{i}] {cfg.strategies[i].name} samples "
        f"all of budget {budget} in one request), got {limit}",
    )


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


def _validate_context_fits(cfg: SweepConfig) -> None:
    """A prompt plus generation longer than the engine's context would fail mid-sweep; refuse it now."""
    limit = cfg.generator.max_model_len
    for i, spec in enumerate(cfg.strategies):
        for budget in cfg.budgets:
            tokens, how = worst_case_tokens(spec, budget, cfg.search, f"strategies[{i}]")
            needed = PROMPT_ALLOWANCE_TOKENS + tokens
            _require(
                needed <= limit,
                "generator.max_model_len",
                f"strategies[{i}] {spec.name} at budget {budget} can need {needed} tokens of context "
                f"({PROMPT_ALLOWANCE_TOKENS} for the question and prompt texts + {how}), got {limit}; "
                "raise it or lower those keys",
            )


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
    _require(
        shows_attempt,
        f"{key}.attempt_format",
        "must be a str.format template showing {attempt} (fields: {number}, {attempt}; write literal braces as "
        f"{{{{ }}}}); merge conf/revision_prompt.yaml for the defaults, got {prompt.attempt_format!r}",
    )
    _require(
        bool(prompt.instruction),
        f"{key}.instruction",
        "needed by the revisions strategy (see conf/revision_prompt.yaml), got ''",
    )
