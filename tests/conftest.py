"""Shared fixtures: one Ray instance and one engine of each kind for the whole test session.

Starting vLLM costs ~30 s and `ray.init` ~3 s on these machines, so integration tests share them.
"""

from __future__ import annotations

import os

import pytest

from ttsearch.config import GeneratorConfig, VerifierConfig, default_cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return default_cache_dir()


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from pipelines.sweep import RAY_ENV

    os.environ.update(RAY_ENV)
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def generator_replicas(ray_session, cache_dir):
    from actors.generator import create_generator_replicas

    return create_generator_replicas(GeneratorConfig(cpu_kv_cache_gib=1.0, max_model_len=2048), cache_dir)


@pytest.fixture(scope="session")
def lm_judge_replicas(ray_session, cache_dir):
    from actors.verifier import create_verifier_replicas

    return create_verifier_replicas(VerifierConfig(kind="lm_judge"), cache_dir)
