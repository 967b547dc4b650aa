"""The models a run hosts: the generator and the verifier sections, and where a verifier runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttsearch.config.base import EMBEDDED_MODEL, require

if TYPE_CHECKING:
    from ttsearch.config.sweep import SweepConfig

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
VERIFIERS = ("lm_judge", "qwen_prm", "math_shepherd", "rlhflow", "skywork", *MODEL_FREE_VERIFIERS)


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


def validate_verifier_backend(cfg: SweepConfig) -> None:
    verifier = cfg.verifier
    require(
        verifier.backend in VERIFIER_BACKENDS,
        "verifier.backend",
        f"unknown verifier backend '{verifier.backend}', expected one of {VERIFIER_BACKENDS}",
    )
    if verifier.kind in MODEL_FREE_VERIFIERS:
        return
    backend = verifier_backend(verifier, cfg.generator)
    if backend == "vllm":
        servable = (*VLLM_VERIFIERS, *VLLM_POOLING_VERIFIERS)
        require(
            verifier.kind in servable,
            "verifier.backend",
            f"'vllm' serves the PRM families {servable}; '{verifier.kind}' needs 'transformers'",
        )
    if backend == "generator":
        instead = "'vllm' or 'transformers'" if verifier.kind in VLLM_POOLING_VERIFIERS else "'transformers'"
        require(
            verifier.kind in VLLM_VERIFIERS,
            "verifier.backend",
            f"'generator' serves the next-token PRM families {VLLM_VERIFIERS}; '{verifier.kind}' needs {instead}",
        )
    if backend == "generator":
        require(
            verifier.model == cfg.generator.model,
            "verifier.backend",
            f"'generator' runs the verifier on the generator's engine, so verifier.model must equal generator.model "
            f"('{verifier.model}' vs '{cfg.generator.model}')",
        )
        require(
            cfg.generator.backend == "vllm",
            "verifier.backend",
            f"'generator' needs generator.backend=vllm, got '{cfg.generator.backend}'",
        )
