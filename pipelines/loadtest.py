"""`ttsearch loadtest`: a closed loop of C concurrent clients against the service, at several C.

Each client sends its requests one after another (MATH questions from `data.path`, the service's default
search), so C is the number of requests in flight. Per level: requests/min, p50/p95 latency, failures by
status, and the ready queue's generator batch size read from the service's `/v1/stats` before and after the
level (sequences per generator call, and the share of calls that carried several users' requests). Without
`--url` it starts `ttsearch serve` from the same config in a child process, as a user would, and stops it at
the end; it only ever talks to that service.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ttsearch.config import SweepConfig, load_config
from ttsearch.errors import TTSearchError
from ttsearch.sweep.data import load_problems

API_KEY_ENV = "TTSEARCH_API_KEY"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class LoadTestError(TTSearchError):
    """The service could not be started or reached."""


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def level_report(
    concurrency: int,
    latencies: list[float],
    failures: dict[str, int],
    wall_s: float,
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """One level's figures from its latencies and the service's stats around it."""

    def delta(key: str) -> int:
        return after.get(key, {}).get("generator", 0) - before.get(key, {}).get("generator", 0)

    calls = delta("calls")
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failed": sum(failures.values()),
        "failures": failures,
        "wall_s": round(wall_s, 2),
        "requests_per_min": round(60 * len(latencies) / wall_s, 2) if wall_s > 0 else None,
        "p50_latency_s": _round(percentile(latencies, 0.5)),
        "p95_latency_s": _round(percentile(latencies, 0.95)),
        "generator_calls": calls,
        "mean_generator_batch": round(delta("sequences") / calls, 2) if calls else None,
        "shared_generator_calls": round(delta("shared_calls") / calls, 3) if calls else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def _level(
    url: str,
    key: str,
    questions: list[str],
    concurrency: int,
    per_client: int,
    search: dict[str, Any],
    timeout_s: float,
) -> dict[str, Any]:
    from openai import APIStatusError, AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout_s)
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def one_client(index: int) -> None:
        for j in range(per_client):
            question = questions[(index * per_client + j) % len(questions)]
            started = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": question}], extra_body={**search, "seed": j}
                )
                latencies.append(time.perf_counter() - started)
            except APIStatusError as error:
                failures[str(error.status_code)] = failures.get(str(error.status_code), 0) + 1
            except Exception as error:  # a timeout or a dropped connection is a failed request too
                failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1

    model = (await client.models.list()).data[0].id
    before = await _stats(url, key)
    started = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    report = level_report(concurrency, latencies, failures, wall, before, await _stats(url, key))
    await client.close()
    return report


async def _stats(url: str, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()


async def _measure(
    url: str,
    key: str,
    questions: list[str],
    levels: list[int],
    per_client: int,
    search: dict[str, Any],
    timeout_s: float,
) -> list[dict[str, Any]]:
    # One request first, uncounted: the engines' first batches compile and warm their caches.
    await _level(url, key, questions[-1:], 1, 1, search, timeout_s)
    reports = []
    for concurrency in levels:
        reports.append(await _level(url, key, questions, concurrency, per_client, search, timeout_s))
        print(_line(reports[-1]), file=sys.stderr, flush=True)
    return reports


def _line(level: dict[str, Any]) -> str:
    return (
        f"C={level['concurrency']}: {level['requests']} ok, {level['failed']} failed, "
        f"{level['requests_per_min']} req/min, p50 {level['p50_latency_s']} s, p95 {level['p95_latency_s']} s, "
        f"generator batch {level['mean_generator_batch']}"
    )


def start_service(config: list[str], overrides: list[str], cfg: SweepConfig, timeout_s: float) -> subprocess.Popen:
    """`ttsearch serve` in a child process; returns once its health route answers 200."""
    command = [sys.executable, "-m", "ttsearch.cli", "serve", *sum((["--config", c] for c in config), []), *overrides]
    process = subprocess.Popen(command, start_new_session=True)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LoadTestError(f"`ttsearch serve` exited with code {process.returncode} before it served")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop_service(process)
    raise LoadTestError(f"the service did not answer {url}/health within {timeout_s:g} s")


def stop_service(process: subprocess.Popen) -> None:
    """Ctrl-C for the service's process group (the command deletes its app), then a kill if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass(frozen=True)
class LoadTestReport:
    """What `ttsearch loadtest` measured: printed as a table, saved as JSON with `--json`."""

    url: str
    """The service's base URL."""
    requests_per_client: int
    """Requests each client sent per level."""
    max_pending_requests: int
    """The service's bounded queue (`serve.max_pending_requests`): beyond it a request gets 503."""
    search: dict[str, Any]
    """The search every request asked for: the service's default strategy and budget, then the fields sent."""
    levels: list[dict[str, Any]]
    """One `level_report` per concurrency, in the order run."""
    throughput_16_vs_1: float | None
    """Requests per minute at C=16 ÷ at C=1; None unless both levels ran."""

    def __str__(self) -> str:
        import pandas as pd

        columns = [
            "concurrency",
            "requests",
            "failed",
            "requests_per_min",
            "p50_latency_s",
            "p95_latency_s",
            "mean_generator_batch",
            "shared_generator_calls",
        ]
        table = pd.DataFrame(self.levels)[columns].to_string(index=False)
        search = ", ".join(f"{k}={v}" for k, v in self.search.items())
        return f"requests: {search}\n{table}\n\nthroughput at C=16 / C=1: {self.throughput_16_vs_1}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run_loadtest(
    config: list[str],
    overrides: list[str],
    concurrency: list[int],
    requests_per_client: int,
    url: str | None = None,
    strategy: str | None = None,
    budget: int | None = None,
    beam_width: int | None = None,
    timeout_s: float = 1800.0,
) -> LoadTestReport:
    """`requests_per_client` requests from each of `concurrency` clients, level by level, against the service at
    `url` (None: start one from `config` and `overrides`). `strategy`, `budget` and `beam_width` are what every
    request asks for; None: the service's default."""
    search = {
        name: value
        for name, value in (("strategy", strategy), ("budget", budget), ("beam_width", beam_width))
        if value is not None
    }
    if any(c < 1 for c in concurrency) or requests_per_client < 1:
        raise LoadTestError(
            f"concurrency levels and requests per client must be >= 1, got {concurrency}, {requests_per_client}"
        )
    if url is not None and urlsplit(url).hostname not in LOCAL_HOSTS:
        raise LoadTestError(
            f"the load test only targets a service on this machine ({', '.join(LOCAL_HOSTS)}), got {url}"
        )
    cfg = load_config(config, overrides)
    problems = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
    questions = [p["problem"] for p in problems]
    key = cfg.serve.api_key or os.environ.get(API_KEY_ENV) or "none"
    process = None
    if url is None:
        process = start_service(config, overrides, cfg, timeout_s)
        url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    try:
        reports = asyncio.run(
            _measure(url.rstrip("/"), key, questions, concurrency, requests_per_client, search, timeout_s)
        )
    finally:
        if process is not None:
            stop_service(process)
    by_level = {r["concurrency"]: r for r in reports}
    ratio = None
    if 1 in by_level and 16 in by_level and by_level[1]["requests_per_min"]:
        ratio = round(by_level[16]["requests_per_min"] / by_level[1]["requests_per_min"], 2)
    default = {"strategy": cfg.serve.strategy.name, "budget": cfg.serve.budget}
    return LoadTestReport(
        url=url,
        requests_per_client=requests_per_client,
        max_pending_requests=cfg.serve.max_pending_requests,
        search={**default, **search},
        levels=reports,
        throughput_16_vs_1=ratio,
    )
