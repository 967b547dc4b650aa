"""Shared fixtures: one Ray cluster and one set of replicas for the whole test session.

Starting vLLM costs ~30 s and a Ray node a few seconds on these machines, so integration tests
share them. The session's Ray cluster has two nodes (`ray.cluster_utils.Cluster`, both on this
machine) and a dashboard, so multi-node scheduling and `ray job submit` are tested for real.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures import free_port
from ttsearch.config import GeneratorConfig, VerifierConfig, default_cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No usage reporting from test clusters (Ray Data's collector also polls a Prometheus that isn't there).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


HEAVY_FIXTURES = {"cache_dir", "ray_cluster"}
"""Every embedded-model load takes the model cache (`cache_dir`), every Ray test the session's cluster."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that loads the embedded model or starts Ray must be marked `integration`, so that
    `-m "not integration"` is the quick suite the README says it is; checked before any fixture starts."""
    heavy = HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if heavy and item.get_closest_marker("integration") is None:
        pytest.fail(f"{item.nodeid} uses {sorted(heavy)} (the embedded model or Ray) but is not marked integration")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return default_cache_dir()


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 6,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "metrics_export_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
        },
    )
    # Both nodes live in one session directory here, unlike on a real cluster. Each node's runtime-env
    # agent unpacks a job's working_dir by deleting and re-extracting it, so a shared directory would
    # let the second node pull the files from under a `ray job` driver running on the first.
    # Every port a node listens on is a free one: Ray's fixed defaults (the dashboard agent's 52365) collide
    # with any other Ray instance on the machine, and a node whose agent cannot bind takes no `ray job`.
    cluster.add_node(
        num_cpus=6,
        metrics_export_port=free_port(),
        dashboard_agent_listen_port=free_port(),
        runtime_env_dir_name="runtime_resources_node2",
    )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    import ray

    return ray


@pytest.fixture(scope="session")
def generator_replicas(ray_session, cache_dir):
    """Two vLLM replicas (small KV caches): tests that want one use `[0]`."""
    from ttsearch.actors.generator import create_generator_replicas

    return create_generator_replicas(GeneratorConfig(replicas=2, cpu_kv_cache_gib=1.0), cache_dir)


@pytest.fixture(scope="session")
def lm_judge_replicas(ray_session, cache_dir):
    from ttsearch.actors.verifier import create_verifier_replicas

    return create_verifier_replicas(VerifierConfig(kind="lm_judge", replicas=2, backend="transformers"), cache_dir)
