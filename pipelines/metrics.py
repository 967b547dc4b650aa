"""Sweep metrics for the Ray dashboard / Prometheus (`ray.util.metrics`), and the progress bar.

Shard tasks on every node report into Ray's metrics agents; Ray exports them as `ray_ttsearch_*`
on each node's metrics port, which the dashboard's Grafana panels and any Prometheus scrape read.
Accuracy so far is `ray_ttsearch_correct_total / ray_ttsearch_graded_total` per strategy label.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram

from ttsearch.scheduler import JobOutcome

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class SweepMetrics:
    """One shard's reporters; tags say which strategy, target or shard a sample belongs to."""

    def __init__(self, shard: int):
        self.shard = str(shard)
        self.searches_done = Counter("ttsearch_searches_done", "Finished searches", tag_keys=("strategy",))
        self.generated_tokens = Counter(
            "ttsearch_generated_tokens", "Tokens sampled by the generator", tag_keys=("strategy",)
        )
        self.verifier_calls = Counter(
            "ttsearch_verifier_calls", "Solutions sent to the verifier", tag_keys=("strategy",)
        )
        self.graded = Counter("ttsearch_graded", "Graded final answers", tag_keys=("strategy_label",))
        self.correct = Counter("ttsearch_correct", "Correct final answers", tag_keys=("strategy_label",))
        self.queue_depth = Gauge(
            "ttsearch_queue_depth", "Requests waiting in the ready queue", tag_keys=("target", "shard")
        )
        self.batch_size = Histogram(
            "ttsearch_batch_size", "Requests per replica call", boundaries=BATCH_BOUNDARIES, tag_keys=("target",)
        )

    def on_dispatch(self, target: str, size: int, queued: int) -> None:
        self.batch_size.observe(size, tags={"target": target})
        self.queue_depth.set(queued, tags={"target": target, "shard": self.shard})

    def on_outcome(self, strategy: str, outcome: JobOutcome) -> None:
        tags = {"strategy": strategy}
        self.searches_done.inc(1, tags=tags)
        if outcome.usage.generated_tokens:
            self.generated_tokens.inc(outcome.usage.generated_tokens, tags=tags)
        if outcome.usage.scored_solutions:
            self.verifier_calls.inc(outcome.usage.scored_solutions, tags=tags)

    def on_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["correct"] is None:  # ungraded: neither right nor wrong
                continue
            tags = {"strategy_label": row["strategy_label"]}
            self.graded.inc(1, tags=tags)
            if row["correct"]:
                self.correct.inc(1, tags=tags)


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Cells finished so far over all shards, for the driver's progress bar.

    Counted by cell key, so a cell that Ray computed twice (a retried shard task) counts once.
    """

    def __init__(self) -> None:
        self.done: set[Any] = set()

    def add(self, keys: list[Any]) -> None:
        self.done.update(keys)

    def value(self) -> int:
        return len(self.done)


def run_with_progress(work: Callable[[], Any], counter: Any, total: int, initial: int, desc: str) -> Any:
    """Run `work` in a thread while a tqdm bar follows `counter` (searches done / total, with ETA)."""
    from tqdm import tqdm

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="sweep", daemon=True)
    thread.start()
    with tqdm(total=total, initial=initial, desc=desc, unit="search", dynamic_ncols=True) as bar:
        while thread.is_alive():
            thread.join(timeout=1.0)
            bar.update(initial + ray.get(counter.value.remote()) - bar.n)
        bar.update(initial + ray.get(counter.value.remote()) - bar.n)
    if "error" in result:
        raise result["error"]
    return result.get("value")
