"""`ttsearch serve`: think-harder as an OpenAI-compatible service on Ray Serve.

Each ingress replica owns its generator (and verifier) replicas and one long-lived `SearchService`: every
request in flight on it is a run in the same ready queue, so concurrent users' step expansions land in the
same generator calls. Serve autoscales the ingress replicas (`serve.autoscaling`), and each new one brings its
engines, which the cluster autoscaler places.

`build_app` is the import path for `serve run` / `serve deploy` / a KubeRay RayService
(`ttsearch.pipelines.serve:build_app`, args `{config: [...], overrides: [...]}`); `run_serve` is the command.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from ttsearch.analysis.policy import Policy, SolveError
from ttsearch.config import StrategySpec, SweepConfig, load_config
from ttsearch.runtime.backends import replica_pools
from ttsearch.runtime.replicas import model_sizes, start_ray, start_replicas
from ttsearch.search.grading import Grader
from ttsearch.search.outcomes import Failure
from ttsearch.search.scheduler import Scheduler
from ttsearch.serving.api import ApiError, chat_completion, parse_chat_request
from ttsearch.serving.service import SearchFailed, SearchService, check_usable_verifier, load_policy_run

APP_NAME = "ttsearch"
API_KEY_ENV = "TTSEARCH_API_KEY"
api = FastAPI(title="ttsearch", description="Compute-optimal test-time search, OpenAI-compatible")


def served_policy(cfg: SweepConfig) -> tuple[Policy | None, list[StrategySpec]]:
    """The compute-optimal policy the service may use, checked against the models it serves: a policy fitted
    with another generator or verifier would pick strategies for the wrong models."""
    if cfg.serve.policy_dir is None:
        return None, []
    fitted, policy = load_policy_run(cfg.serve.policy_dir)
    for key in ("generator.model", "verifier.kind", "verifier.model"):
        section, name = key.split(".")
        ours, theirs = getattr(getattr(cfg, section), name), getattr(getattr(fitted, section), name)
        if ours != theirs:
            raise SolveError(
                f"serve.policy_dir: the policy was fitted with {key}={theirs}, this service serves {key}={ours}"
            )
    return policy, fitted.strategies


@serve.deployment
@serve.ingress(api)
class SearchServer:
    """One ingress replica: its engines, its ready queue, and the bounded queue of requests in front of it."""

    def __init__(self, cfg: SweepConfig, policy: Policy | None, strategies: list[StrategySpec]):
        """`policy` and the `strategies` its labels name come from `build_app`, which read them where the app was
        built, so the replica reads no file."""
        from ttsearch.runtime.metrics import ServeMetrics

        self.cfg = cfg
        self.api_key = cfg.serve.api_key or os.environ.get(API_KEY_ENV) or None
        self.policy = policy
        generators, verifiers = start_replicas(cfg)
        self.grader = Grader.from_config(cfg.grading)
        self.metrics = ServeMetrics(serve.get_replica_context().replica_id.unique_id)
        pools = replica_pools(generators, verifiers, cfg.verifier.kind, cfg.scheduler, self.grader)
        scheduler = Scheduler.from_config(pools, cfg.scheduler, on_dispatch=self.metrics.on_dispatch)
        self.service = SearchService(
            scheduler, cfg.search, model_sizes(generators, verifiers), self.grader, self.policy, strategies
        )
        self.pending = 0  # accepted requests, searching or waiting for a search slot
        self.searching = 0
        self._slots: asyncio.Semaphore | None = None  # made on the replica's event loop

    # -- routes ---------------------------------------------------------------------------------
    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> JSONResponse:
        started, strategy = time.perf_counter(), "-"
        try:
            self._authorize(request)
            parsed = parse_chat_request(await request.body(), self.cfg, self.policy is not None)
            strategy = "compute_optimal" if parsed.settings.compute_optimal else parsed.settings.strategy.name
            answer = await self._search(parsed.question, parsed.settings)
            self.metrics.on_usage(strategy, answer.usage.generated_tokens, answer.usage.scored_solutions)
            response = JSONResponse(chat_completion(answer, self.cfg.serve.model_name))
        except ApiError as error:
            response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        self.metrics.on_request(response.status_code, strategy, time.perf_counter() - started)
        return response

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except ApiError as error:
            return JSONResponse(error.body(), status_code=error.status)
        model = {"id": self.cfg.serve.model_name, "object": "model", "created": 0, "owned_by": "ttsearch"}
        return JSONResponse({"object": "list", "data": [model]})

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """200 while the ready queue runs and a generator replica is in rotation (no key needed: probes)."""
        generators = self.service.scheduler.pools["generator"].in_rotation
        healthy = not self.service.scheduler.stopped and any(generators)
        body = {
            "status": "ok" if healthy else "unavailable",
            "generator_replicas_in_rotation": sum(generators),
            "pending_requests": self.pending,
            "searching": self.searching,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @api.get("/v1/stats")
    async def stats(self, request: Request) -> JSONResponse:
        """The ready queue's batch statistics (calls, requests and sequences per target, calls shared by several
        requests): what the load test reads."""
        try:
            self._authorize(request)
        except ApiError as error:
            return JSONResponse(error.body(), status_code=error.status)
        stats = vars(self.service.scheduler.stats)
        return JSONResponse({**stats, "pending_requests": self.pending, "searching": self.searching})

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: the grading worker processes go with it (the engines are
        this replica's actors and go with it anyway)."""
        self.grader.close()

    def check_health(self) -> None:
        """Serve restarts a replica whose ready queue stopped (a scheduler error, or no replica for too long)."""
        if self.service.scheduler.stopped:
            raise RuntimeError("the ready queue stopped; this replica must be restarted")

    # -- the bounded queue ----------------------------------------------------------------------
    async def _search(self, question: str, settings: Any) -> Any:
        """Admit the request if the bounded queue has room (else 503 + Retry-After), wait for a search slot,
        search. A client that disconnects cancels this coroutine, and with it the search's requests."""
        limits = self.cfg.serve
        if self.pending >= limits.max_pending_requests:
            raise ApiError(
                503,
                f"the service is at its limit of {limits.max_pending_requests} pending requests; "
                f"retry after {limits.retry_after_s} s",
                code="overloaded",
                headers={"Retry-After": str(limits.retry_after_s)},
            )
        if self._slots is None:
            self._slots = asyncio.Semaphore(limits.max_concurrent_searches)
        self.pending += 1
        self._report_queue()
        try:
            async with self._slots:
                self.searching += 1
                self._report_queue()
                try:
                    return await self.service.answer(question, settings)
                finally:
                    self.searching -= 1
        except SearchFailed as failed:
            if failed.failure == Failure.INFRASTRUCTURE:
                raise ApiError(
                    503, str(failed), code="replicas_unavailable", headers={"Retry-After": str(limits.retry_after_s)}
                ) from None
            raise ApiError(422, str(failed), code="search_failed") from None
        except SolveError as error:
            raise ApiError(400, str(error), "budget") from None
        finally:
            self.pending -= 1
            self._report_queue()

    def _report_queue(self) -> None:
        self.metrics.set_queue(waiting=self.pending - self.searching, searching=self.searching)

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")


def deployment_options(cfg: SweepConfig) -> dict[str, Any]:
    """Serve's own limits sit above the service's bounded queue, so its 503 (with Retry-After) is the one
    clients see; replica counts and autoscaling come from `serve.autoscaling`."""
    scaling = cfg.serve.autoscaling
    options: dict[str, Any] = {
        "max_ongoing_requests": cfg.serve.max_pending_requests + 16,  # + health and stats calls
        "ray_actor_options": {"num_cpus": 0},  # the ingress mostly waits; the engines hold the cores
        "health_check_period_s": 10,
    }
    if scaling.min_replicas == scaling.max_replicas:
        options["num_replicas"] = scaling.min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    return options


def build_app(args: dict[str, Any]) -> Application:
    """The application for `serve run` / `serve deploy`: args `config` (a path or a list, layered) and
    `overrides` (key=value strings). The config is checked here, before any replica starts."""
    config = args.get("config") or []
    cfg = load_config([config] if isinstance(config, str) else list(config), list(args.get("overrides") or []))
    return application(cfg)


def application(cfg: SweepConfig) -> Application:
    """The app for a loaded config; the verifier and the policy are checked here, before any replica starts."""
    check_usable_verifier(cfg.verifier.kind)
    policy, strategies = served_policy(cfg)  # a policy that does not fit the served models is refused now
    return SearchServer.options(**deployment_options(cfg)).bind(cfg, policy, strategies)


def run_serve(cfg: SweepConfig, block: bool = True) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy on serve.host:serve.port and deploy the app; with
    `block`, serve until interrupted (SIGINT or SIGTERM), then delete the app. Returns the base URL.

    While it blocks it prints the URL it serves at: a command that never returns has no result to print."""
    app = application(cfg)
    start_ray(cfg)
    serve.start(proxy_location=cfg.serve.proxy_location, http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
        if block:
            print(f"serving '{cfg.serve.model_name}' at {url}/v1 (Ctrl-C or SIGTERM stops it)", flush=True)
            while True:
                time.sleep(3600)
    except BaseException:  # stopped (`ttsearch.runtime.interrupts`) or failed while deploying or serving: no app stays
        serve.delete(APP_NAME)
        raise
    return url
