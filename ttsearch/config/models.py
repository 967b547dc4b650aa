"""The models a run hosts: the generator and the verifier sections, and where a verifier runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ttsearch.config.base import EMBEDDED_MODEL, FRACTION, POSITIVE, at_least, require
from ttsearch.config.verifiers import AUTO, VERIFIER_BACKENDS, verifier_family

if TYPE_CHECKING:
    from ttsearch.config.sweep import SweepConfig


@dataclass(frozen=True)
class GeneratorConfig:
    model: str = EMBEDDED_MODEL  # "embedded", a Hugging Face id or a local checkpoint path
    backend: str = "vllm"  # `ttsearch.config.generators` names them; "transformers" where vLLM is not installed
    replicas: int = field(default=1, metadata=POSITIVE)
    num_gpus: float = field(default=0.0, metadata=at_least(0))
    num_cpus: float = field(default=1.0, metadata=at_least(0))
    dtype: str = "bfloat16"
    max_model_len: int = field(default=2048, metadata=POSITIVE)
    max_num_seqs: int = field(default=256, metadata=POSITIVE)
    enforce_eager: bool = True  # CPU: skips graph capture, engine starts in ~30 s
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = field(default=0.85, metadata=FRACTION)
    """GPU: fraction of device memory for weights + KV cache"""
    cpu_kv_cache_gib: float = field(default=2.0, metadata=POSITIVE)
    """CPU: RAM reserved for the KV cache (VLLM_CPU_KVCACHE_SPACE)"""
    tensor_parallel_size: int = field(default=1, metadata=POSITIVE)
    seed: int = 0
    max_restarts: int = field(default=3, metadata=at_least(-1, "-1: restart forever"))
    """Ray restarts a dead replica this many times (-1: forever); its work is retried meanwhile"""
    start_timeout_s: float = field(default=1800.0, metadata=POSITIVE)
    """replicas not placed and loaded by then stop the run (new GPU nodes: minutes)"""
    transformers_call_tokens: int = field(default=4096, metadata=POSITIVE)
    """transformers backend: padded tokens (prompt + new) per generate call"""


@dataclass(frozen=True)
class VerifierConfig:
    kind: str = "lm_judge"  # a verifier family: `ttsearch.config.verifiers` names them
    model: str = EMBEDDED_MODEL
    backend: str = "auto"  # "auto", "generator", "vllm" or "transformers"; see `verifier_backend`
    replicas: int = field(default=1, metadata=POSITIVE)
    num_gpus: float = field(default=0.0, metadata=at_least(0))
    num_cpus: float = field(default=1.0, metadata=at_least(0))
    dtype: str = "float32"
    max_batch_tokens: int = field(default=2048, metadata=POSITIVE)
    """padded tokens per forward pass (CPU is fastest at 1-2k)"""
    max_input_tokens: int = field(default=2048, metadata=POSITIVE)
    """longer inputs are truncated from the left of the solution"""
    torch_threads: int = field(default=1, metadata=POSITIVE)  # transformers backend
    cpu_kv_cache_gib: float = field(default=1.0, metadata=POSITIVE)
    """vllm backend on CPU: RAM for the prefix cache / KV cache"""
    gpu_memory_utilization: float = field(default=0.85, metadata=FRACTION)  # vllm backend on GPU
    max_num_seqs: int = field(default=256, metadata=POSITIVE)  # vllm backend: reads scheduled together
    max_restarts: int = field(default=3, metadata=at_least(-1, "-1: restart forever"))
    """Ray restarts a dead replica this many times (-1: forever); its work is retried meanwhile"""
    start_timeout_s: float = field(default=1800.0, metadata=POSITIVE)
    """replicas not placed and loaded by then stop the run (new GPU nodes: minutes)"""


def verifier_backend(verifier: VerifierConfig, generator: GeneratorConfig | None) -> str:
    """The backend a hosted verifier runs on once "auto" is resolved: "" for a model-free family (the driver
    scores it), else `verifier.backend` if it is not "auto", else the first of the family's `backends` that is
    usable here.

    The shipped families list the generator replicas' own engines first where they can (next-token families):
    usable when the verifier is the same model as the generator and the generator runs on vLLM, they leave no
    second engine competing for the same cores or GPU memory, and a judge read costs what one prefill of the new
    step costs (measured faster on 2 cores, see the README); then a vLLM engine of its own, which is also where
    the token-classification families go (vLLM's pooling runner); transformers for families vLLM cannot host.
    Without a `generator` (a verifier replica started on its own) the generator's engines are not an option.
    """
    family = verifier_family(verifier.kind)
    if family.model_free:
        return ""
    if verifier.backend != AUTO:
        return verifier.backend
    usable = (backend for backend in family.backends if backend_usable(backend, verifier, generator))
    return next(usable, family.backends[0])  # none usable: validation says why the first is not


def backend_usable(backend: str, verifier: VerifierConfig, generator: GeneratorConfig | None) -> bool:
    """Whether `backend` can host this verifier beside this generator: the generator's engines only for the same
    model on vLLM; an engine of the verifier's own always."""
    if backend != "generator":
        return True
    return generator is not None and verifier.model == generator.model and generator.backend == "vllm"


def validate_verifier_backend(cfg: SweepConfig) -> None:
    verifier = cfg.verifier
    require(
        verifier.backend in VERIFIER_BACKENDS,
        "verifier.backend",
        f"unknown verifier backend '{verifier.backend}', expected one of {VERIFIER_BACKENDS}",
    )
    family = verifier_family(verifier.kind)
    if family.model_free:
        return
    backend = verifier_backend(verifier, cfg.generator)
    hosts = " or ".join(f"'{b}'" for b in family.backends)
    require(
        backend in family.backends,
        "verifier.backend",
        f"'{backend}' cannot host the verifier family '{verifier.kind}' ({family.layout.value} layout); "
        f"'{verifier.kind}' needs {hosts}",
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
