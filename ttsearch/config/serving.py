"""The online service (`ttsearch serve`): its HTTP limits, autoscaling and default search."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttsearch.config.base import POSITIVE, require
from ttsearch.config.search import StrategySpec, strategy_errors

PROXY_LOCATIONS = ("EveryNode", "HeadOnly", "Disabled")  # Ray Serve's ProxyLocation values


@dataclass(frozen=True)
class ServeAutoscalingConfig:
    """Ray Serve autoscaling of the ingress replicas; each ingress replica owns its generator (and verifier)
    replicas, so scaling it out adds engines too. min_replicas == max_replicas: a fixed count."""

    min_replicas: int = field(default=1, metadata=POSITIVE)
    max_replicas: int = 1
    target_ongoing_requests: float = field(default=16.0, metadata=POSITIVE)
    """requests per ingress replica Serve aims for when it scales"""


@dataclass(frozen=True)
class ServeConfig:
    """`ttsearch serve`: the HTTP service (see conf/serve.yaml)."""

    host: str = "127.0.0.1"  # localhost only unless you say otherwise (0.0.0.0 in a pod behind a Service)
    port: int = field(default=8000, metadata=POSITIVE)
    proxy_location: str = "EveryNode"  # Serve's HTTP proxies: EveryNode, HeadOnly or Disabled
    model_name: str = "ttsearch"  # the `model` clients name; any other is a 404
    api_key: str | None = None  # a bearer key clients must send; the TTSEARCH_API_KEY variable also sets it
    autoscaling: ServeAutoscalingConfig = field(default_factory=ServeAutoscalingConfig)
    max_pending_requests: int = field(default=64, metadata=POSITIVE)
    """per ingress replica, searching or waiting; more get 503 + Retry-After"""
    max_concurrent_searches: int = field(default=32, metadata=POSITIVE)
    """per ingress replica: questions in the ready queue at once"""
    retry_after_s: int = field(default=5, metadata=POSITIVE)
    max_budget: int = field(default=64, metadata=POSITIVE)
    max_body_bytes: int = field(default=65536, metadata=POSITIVE)
    max_question_chars: int = field(default=4000, metadata=POSITIVE)
    budget: int = field(default=4, metadata=POSITIVE)  # a request's budget when it names none
    strategy: StrategySpec = field(default_factory=StrategySpec)  # its strategy when it names none (selections[0])
    policy_dir: str | None = None  # a sweep output_dir holding policy.json (`ttsearch optimize`): compute_optimal


def validate_serve(serve: ServeConfig) -> None:
    scaling = serve.autoscaling
    require(
        scaling.max_replicas >= scaling.min_replicas,
        "serve.autoscaling.max_replicas",
        f"must be >= serve.autoscaling.min_replicas {scaling.min_replicas}, got {scaling.max_replicas}",
    )
    require(serve.port < 65536, "serve.port", f"must be a TCP port (1-65535), got {serve.port}")
    require(
        serve.proxy_location in PROXY_LOCATIONS,
        "serve.proxy_location",
        f"expected one of {PROXY_LOCATIONS}, got '{serve.proxy_location}'",
    )
    require(
        serve.budget <= serve.max_budget,
        "serve.budget",
        f"must be <= serve.max_budget {serve.max_budget}, got {serve.budget}",
    )
    for field_name, message in strategy_errors(serve.strategy, [serve.budget]):
        require(False, f"serve.strategy.{field_name}", message)
