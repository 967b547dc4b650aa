"""ttsearch's metrics for the Ray dashboard / Prometheus (`ray.util.metrics`), and the sweep's progress bar.

Sweep shard tasks (`SweepMetrics`) and the Ray Serve ingress (`ServeMetrics`) report into Ray's per-node metrics
agents, which serve them in Prometheus format on each node's metrics export port. Every metric is defined once,
in `METRICS`, so that a name is always created with the same kind, description, tag keys and boundaries wherever
it is created (Ray requires it), and `deploy/grafana/ttsearch_dashboard.json` queries exactly the names below
(`tests/unit/runtime/test_metrics.py` keeps the two in step).

Exported names (Ray 2.60, its default OpenTelemetry export): Ray prefixes each metric name with `ray_`; the
Prometheus exposition appends `_total` to a Counter's samples; a Histogram becomes `_bucket` (with `le`),
`_sum` and `_count` series; a Gauge keeps its name. Besides the tags below each series carries Ray's own labels
(`SessionName`, `WorkerId`, ...), one series per reporting worker process, so queries aggregate with
`sum by (...)`. Under the older OpenCensus export (`RAY_enable_open_telemetry=0`) a counter is also exported,
deprecated, as a gauge without `_total`; the dashboard reads only the `_total` form.

Sweep (per-strategy compute, counted as each search ends):
- `ray_ttsearch_searches_done_total{strategy}`: searches finished, one per job.
- `ray_ttsearch_generated_tokens_total{strategy}`: tokens the generator decoded.
- `ray_ttsearch_scored_solutions_total{strategy}`: solutions the verifier scored (one per scored solution,
  not per verifier call: a replica call scores a batch of them).
- `ray_ttsearch_graded_total{strategy_label}`, `ray_ttsearch_correct_total{strategy_label}`: rows with a
  graded final answer, and those graded correct. Incremented when a shard writes its rows, i.e. when the shard
  ends, so `correct / graded` is the accuracy of the shards finished so far, not of the searches done so far;
  both stay flat while a shard runs.
Labelling (`ttsearch label`, whose questions also count as searches of strategy "label"):
- `ray_ttsearch_labelled_steps_total{outcome}`: step prefixes labelled: `reachable` (some rollout reached the
  reference answer), `unreachable`, `ungraded` (no rollout could be graded). Counted when a shard ends.
Scheduler (sweep, label and serve):
- `ray_ttsearch_queue_depth{target, shard, replica}`: requests in the scheduler's ready queue after a replica
  call was dispatched; a sweep sets `shard` (and `replica=""`), the Serve ingress `replica` (and `shard=""`).
- `ray_ttsearch_batch_size_bucket/_sum/_count{target}`: requests per replica call. Ray rebuilds a histogram
  from its bucket counts, so `_sum` (and `_sum / _count`) is approximated with bucket midpoints.
Serve ingress:
- `ray_ttsearch_serve_requests_total{status, strategy}`: requests answered, by HTTP status code.
- `ray_ttsearch_serve_request_latency_seconds_bucket/_sum/_count{strategy}`: request latency, arrival to
  response.
- `ray_ttsearch_serve_queue_depth{replica}`: requests accepted and waiting for a search slot.
- `ray_ttsearch_serve_searches_in_flight{replica}`: searches running.
- plus `ray_ttsearch_generated_tokens_total` and `ray_ttsearch_scored_solutions_total` per strategy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import ray
from ray.util.metrics import Counter, Gauge, Histogram

from ttsearch.search.outcomes import JobOutcome

BATCH_BOUNDARIES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BOUNDARIES = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800)  # seconds


@dataclass(frozen=True)
class MetricDef:
    """One metric as Ray must see it wherever it is created: kind, name, description, tag keys, boundaries."""

    kind: Literal["counter", "gauge", "histogram"]
    name: str
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> tuple[str, ...]:
        """The Prometheus series names Ray 2.60 exports it under (see the module docstring)."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return (f"{base}_total",)
        if self.kind == "histogram":
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)

    def create(self) -> Any:
        if self.kind == "counter":
            return Counter(self.name, self.description, tag_keys=self.tag_keys)
        if self.kind == "gauge":
            return Gauge(self.name, self.description, tag_keys=self.tag_keys)
        return Histogram(self.name, self.description, boundaries=list(self.boundaries), tag_keys=self.tag_keys)


SEARCHES_DONE = MetricDef("counter", "ttsearch_searches_done", "Searches finished", ("strategy",))
GENERATED_TOKENS = MetricDef("counter", "ttsearch_generated_tokens", "Tokens decoded by the generator", ("strategy",))
SCORED_SOLUTIONS = MetricDef(
    "counter", "ttsearch_scored_solutions", "Solutions the verifier scored (not verifier calls)", ("strategy",)
)
GRADED = MetricDef(
    "counter", "ttsearch_graded", "Rows with a graded final answer, counted when their shard ends", ("strategy_label",)
)
CORRECT = MetricDef(
    "counter", "ttsearch_correct", "Rows answered correctly, counted when their shard ends", ("strategy_label",)
)
LABELLED_STEPS = MetricDef(
    "counter",
    "ttsearch_labelled_steps",
    "Step prefixes `ttsearch label` labelled, by outcome (reachable: some rollout reached the answer), counted "
    "when their shard ends",
    ("outcome",),
)
QUEUE_DEPTH = MetricDef(
    "gauge",
    "ttsearch_queue_depth",
    "Requests in the scheduler's ready queue after a replica call was dispatched",
    ("target", "shard", "replica"),
)
BATCH_SIZE = MetricDef(
    "histogram", "ttsearch_batch_size", "Requests per replica call", ("target",), boundaries=BATCH_BOUNDARIES
)
SERVE_REQUESTS = MetricDef(
    "counter", "ttsearch_serve_requests", "Requests the Serve ingress answered, by HTTP status", ("status", "strategy")
)
SERVE_LATENCY = MetricDef(
    "histogram",
    "ttsearch_serve_request_latency_seconds",
    "Serve request latency from arrival to response, in seconds",
    ("strategy",),
    boundaries=LATENCY_BOUNDARIES,
)
SERVE_QUEUE_DEPTH = MetricDef(
    "gauge", "ttsearch_serve_queue_depth", "Serve requests accepted and waiting for a search slot", ("replica",)
)
SERVE_IN_FLIGHT = MetricDef("gauge", "ttsearch_serve_searches_in_flight", "Serve searches running", ("replica",))

METRICS: tuple[MetricDef, ...] = (
    SEARCHES_DONE,
    GENERATED_TOKENS,
    SCORED_SOLUTIONS,
    GRADED,
    CORRECT,
    LABELLED_STEPS,
    QUEUE_DEPTH,
    BATCH_SIZE,
    SERVE_REQUESTS,
    SERVE_LATENCY,
    SERVE_QUEUE_DEPTH,
    SERVE_IN_FLIGHT,
)
"""Every ttsearch metric; the Grafana dashboard shows each of them."""


class _SearchMetrics:
    """What a sweep shard and a Serve replica both report: the scheduler's replica calls and the compute used.

    `shard` / `replica` say which of the two is reporting; the other is left empty (Prometheus drops empty labels).
    """

    def __init__(self, *, shard: str = "", replica: str = ""):
        self._reporter = {"shard": shard, "replica": replica}
        self.generated_tokens = GENERATED_TOKENS.create()
        self.scored_solutions = SCORED_SOLUTIONS.create()
        self.queue_depth = QUEUE_DEPTH.create()
        self.batch_size = BATCH_SIZE.create()

    def on_dispatch(self, target: str, size: int, queued: int) -> None:
        """A replica call of `size` requests went to `target`, leaving `queued` requests in the ready queue."""
        self.batch_size.observe(size, tags={"target": target})
        self.queue_depth.set(queued, tags={"target": target, **self._reporter})

    def on_usage(self, strategy: str, generated_tokens: int, scored_solutions: int) -> None:
        """A search of `strategy` used this much compute (Ray counters only take positive increments)."""
        tags = {"strategy": strategy}
        if generated_tokens > 0:
            self.generated_tokens.inc(generated_tokens, tags=tags)
        if scored_solutions > 0:
            self.scored_solutions.inc(scored_solutions, tags=tags)


class SweepMetrics(_SearchMetrics):
    """One shard's reporters; tags say which strategy, target or shard a sample belongs to."""

    def __init__(self, shard: int):
        self.shard = str(shard)
        super().__init__(shard=self.shard)
        self.searches_done = SEARCHES_DONE.create()
        self.graded = GRADED.create()
        self.correct = CORRECT.create()

    def on_outcome(self, outcome: JobOutcome) -> None:
        """A job ended; its key is (problem, strategy spec, budget, seed)."""
        strategy = outcome.key[1].name
        self.searches_done.inc(1, tags={"strategy": strategy})
        self.on_usage(strategy, outcome.usage.generated_tokens, outcome.usage.scored_solutions)

    def on_rows(self, rows: list[dict[str, Any]]) -> None:
        """A shard wrote its rows (it has ended): count its graded and correct answers."""
        for row in rows:
            if row["correct"] is None:  # ungraded: neither right nor wrong
                continue
            tags = {"strategy_label": row["strategy_label"]}
            self.graded.inc(1, tags=tags)
            if row["correct"]:
                self.correct.inc(1, tags=tags)


class QuestionMetrics(_SearchMetrics):
    """One shard's reporters for work done a question at a time (`ttsearch label`, `revision-data`): questions
    finished (as searches of the work's name) and their compute."""

    def __init__(self, shard: int, work: str):
        super().__init__(shard=str(shard))
        self.work = work
        self.searches_done = SEARCHES_DONE.create()

    def on_outcome(self, outcome: JobOutcome) -> None:
        self.searches_done.inc(1, tags={"strategy": self.work})
        self.on_usage(self.work, outcome.usage.generated_tokens, outcome.usage.scored_solutions)

    def on_rows(self, rows: list[dict[str, Any]]) -> None:
        """A shard wrote its rows (nothing more to count by default)."""


class LabelMetrics(QuestionMetrics):
    """`ttsearch label`'s reporters, with the labelled steps by outcome."""

    def __init__(self, shard: int):
        super().__init__(shard, "label")
        self.labelled_steps = LABELLED_STEPS.create()

    def on_rows(self, rows: list[dict[str, Any]]) -> None:
        """A shard wrote its rows: count its labelled steps by whether a rollout succeeded from them."""
        for row in rows:
            for hard in row.get("hard_labels") or ():
                outcome = "ungraded" if hard is None else "reachable" if hard else "unreachable"
                self.labelled_steps.inc(1, tags={"outcome": outcome})


class ServeMetrics(_SearchMetrics):
    """One Serve ingress replica's reporters: requests, latency and queue, and the searches' scheduler and compute."""

    def __init__(self, replica: str):
        self.replica = replica
        super().__init__(replica=replica)
        self.requests = SERVE_REQUESTS.create()
        self.latency = SERVE_LATENCY.create()
        self.waiting = SERVE_QUEUE_DEPTH.create()
        self.in_flight = SERVE_IN_FLIGHT.create()

    def on_request(self, status: int, strategy: str, latency_s: float) -> None:
        """A request for `strategy` was answered with HTTP `status` after `latency_s` seconds."""
        self.requests.inc(1, tags={"status": str(status), "strategy": strategy})
        self.latency.observe(latency_s, tags={"strategy": strategy})

    def set_queue(self, waiting: int, searching: int) -> None:
        """`waiting` requests are accepted and wait for a search slot; `searching` searches are running."""
        tags = {"replica": self.replica}
        self.waiting.set(waiting, tags=tags)
        self.in_flight.set(searching, tags=tags)


STOP_TIMEOUT_S = 20.0
"""How long an interrupted run waits for its shard tasks to save their finished jobs and end."""
STOP_POLL_S = 0.2


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Jobs finished so far over all shards, for the driver's progress bar; the driver's request that the shards
    stop, which each shard task polls, and the shards still working, which the driver waits for before it shuts Ray
    down (`ttsearch.sweep.sharded`).

    Counted by job key, so a job that Ray computed twice (a retried shard task) counts once.
    """

    def __init__(self) -> None:
        self.done: set[Any] = set()
        self.stopping = False
        self.working: set[int] = set()

    def add(self, keys: list[Any]) -> None:
        self.done.update(keys)

    def value(self) -> int:
        return len(self.done)

    def request_stop(self) -> None:
        self.stopping = True

    def stop_requested(self) -> bool:
        return self.stopping

    def shard_started(self, shard: int) -> None:
        self.working.add(shard)

    def shard_ended(self, shard: int) -> None:
        """Called by a shard task once it has saved, however it ended (`ttsearch.sweep.sharded`)."""
        self.working.discard(shard)

    def shards_working(self) -> int:
        return len(self.working)


def run_with_progress(
    work: Callable[[], Any], counter: Any, total: int, initial: int, desc: str, job_name: str = "search"
) -> Any:
    """Run `work` in a thread while a tqdm bar follows `counter` (jobs done / total, with ETA; the bar calls a job
    `job_name`).

    Interrupted (Ctrl-C, SIGINT or SIGTERM), it asks the shard tasks to stop through `counter` and waits up to
    `STOP_TIMEOUT_S` for every shard task to say it has saved what it finished, before the command shuts Ray down.
    """
    from tqdm import tqdm

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="sweep", daemon=True)
    thread.start()
    with tqdm(total=total, initial=initial, desc=desc, unit=job_name, dynamic_ncols=True) as bar:
        try:
            while thread.is_alive():
                thread.join(timeout=1.0)
                bar.update(initial + ray.get(counter.value.remote()) - bar.n)
        except KeyboardInterrupt:
            bar.write("stopping: each shard saves what it finished; re-run the same command to compute the rest")
            ray.get(counter.request_stop.remote())
            # Ray Data may cancel the shard tasks itself and end `work` before they have saved: wait for the shards.
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while ray.get(counter.shards_working.remote()) and time.monotonic() < deadline:
                time.sleep(STOP_POLL_S)
            bar.update(initial + ray.get(counter.value.remote()) - bar.n)
            raise
        bar.update(initial + ray.get(counter.value.remote()) - bar.n)
    if "error" in result:
        raise result["error"]
    return result.get("value")
