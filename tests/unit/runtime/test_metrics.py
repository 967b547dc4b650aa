"""The ttsearch metrics against the Grafana dashboard that shows them, and what each reporter records.

No Ray is started: `ray.util.metrics`' Counter / Gauge / Histogram are replaced, in `ttsearch.runtime.metrics`, by
fakes that record what is created and recorded and refuse what Ray refuses (a missing or unknown tag key, a tag
value that is not a string, a counter increment that is not positive, one name created with two different
definitions).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttsearch.config import StrategySpec
from ttsearch.runtime import metrics
from ttsearch.runtime.metrics import METRICS, LabelMetrics, ServeMetrics, SweepMetrics
from ttsearch.search.outcomes import JobOutcome, Usage

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "ttsearch_dashboard.json"
QUERIED = re.compile(r"\bray_ttsearch_\w+")


@dataclass
class Registry:
    definitions: dict[str, tuple] = field(default_factory=dict)  # name → (kind, description, tag keys, boundaries)
    records: list[tuple[str, str, float, dict[str, str]]] = field(default_factory=list)  # (name, method, value, tags)

    def kind(self, name: str) -> str:
        return self.definitions[name][0]

    def recorded(self, name: str) -> list[tuple[str, float, dict[str, str]]]:
        return [(method, value, tags) for metric, method, value, tags in self.records if metric == name]


@pytest.fixture
def registry(monkeypatch) -> Registry:
    registry = Registry()

    class FakeMetric:
        kind = ""

        def __init__(self, name, description="", tag_keys=None, boundaries=None):
            assert isinstance(tag_keys, tuple), "Ray wants tag_keys as a tuple"
            definition = (self.kind, description, tag_keys, tuple(boundaries) if boundaries is not None else None)
            if self.kind == "histogram":
                assert boundaries and all(b > 0 for b in boundaries) and list(boundaries) == sorted(boundaries)
            previous = registry.definitions.setdefault(name, definition)
            assert previous == definition, f"{name} created as {definition}, earlier as {previous}"
            self.name, self.tag_keys = name, tag_keys

        def record(self, method: str, value, tags) -> None:
            assert isinstance(value, int | float) and not isinstance(value, bool), value
            assert set(tags) == set(self.tag_keys), f"{self.name}: tags {sorted(tags)}, keys {sorted(self.tag_keys)}"
            assert all(isinstance(v, str) for v in tags.values()), f"{self.name}: tag values must be str: {tags}"
            registry.records.append((self.name, method, value, dict(tags)))

    class FakeCounter(FakeMetric):
        kind = "counter"

        def inc(self, value=1.0, tags=None):
            assert value > 0, f"{self.name}: Ray refuses a counter increment of {value}"
            self.record("inc", value, tags or {})

    class FakeGauge(FakeMetric):
        kind = "gauge"

        def set(self, value, tags=None):
            self.record("set", value, tags or {})

    class FakeHistogram(FakeMetric):
        kind = "histogram"

        def observe(self, value, tags=None):
            self.record("observe", value, tags or {})

    monkeypatch.setattr(metrics, "Counter", FakeCounter)
    monkeypatch.setattr(metrics, "Gauge", FakeGauge)
    monkeypatch.setattr(metrics, "Histogram", FakeHistogram)
    return registry


def exported_names(name: str, kind: str) -> set[str]:
    """How Ray 2.60 names a metric on its Prometheus endpoints: `ray_` prefix, `_total` on a counter's samples,
    `_bucket` / `_sum` / `_count` for a histogram (ray/_private/telemetry, prometheus_client's CounterMetricFamily)."""
    base = f"ray_{name}"
    return {
        "counter": {f"{base}_total"},
        "gauge": {base},
        "histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count"},
    }[kind]


def created_metrics(registry: Registry) -> dict[str, str]:
    """name → kind of every metric the sweep's, the labeller's and the Serve ingress's reporters create (all in one
    process, so a name defined twice differently fails here)."""
    SweepMetrics(0)
    LabelMetrics(0)
    ServeMetrics("replica-0")
    return {name: definition[0] for name, definition in registry.definitions.items()}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_every_metric_is_defined_once_in_metrics(registry):
    created = created_metrics(registry)
    assert sorted(created) == sorted(d.name for d in METRICS)
    assert len({d.name for d in METRICS}) == len(METRICS)
    for definition in METRICS:
        assert set(definition.exported) == exported_names(definition.name, created[definition.name])
        assert definition.name.startswith("ttsearch_")


def test_dashboard_queries_every_metric_by_its_exported_name(registry):
    created = created_metrics(registry)
    exported = {series: name for name, kind in created.items() for series in exported_names(name, kind)}
    queried = {series for expr in queries(dashboard()) for series in QUERIED.findall(expr)}
    unknown = queried - set(exported)
    assert not unknown, f"the dashboard queries series no ttsearch metric exports: {sorted(unknown)}"
    # What a panel must read of each kind: a counter's rate, a gauge's value, a histogram's quantiles.
    primary = {"counter": "_total", "gauge": "", "histogram": "_bucket"}
    missing = sorted(name for name, kind in created.items() if f"ray_{name}{primary[kind]}" not in queried)
    assert not missing, f"no dashboard panel shows {missing}"


def test_the_docstring_states_the_exported_names(registry):
    for name, kind in created_metrics(registry).items():
        shown = f"ray_{name}_bucket" if kind == "histogram" else min(exported_names(name, kind))
        assert shown in metrics.__doc__, name


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert board["panels"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target.get("datasource", panel["datasource"]) == panel["datasource"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]


def test_serve_request_counts_status_and_strategy_and_observes_latency(registry):
    serve = ServeMetrics("replica-0")
    serve.on_request(200, "beam", 2.5)
    serve.on_request(503, "best_of_n", 0.01)
    assert registry.kind("ttsearch_serve_requests") == "counter"
    assert registry.recorded("ttsearch_serve_requests") == [
        ("inc", 1, {"status": "200", "strategy": "beam"}),
        ("inc", 1, {"status": "503", "strategy": "best_of_n"}),
    ]
    assert registry.kind("ttsearch_serve_request_latency_seconds") == "histogram"
    assert registry.recorded("ttsearch_serve_request_latency_seconds") == [
        ("observe", 2.5, {"strategy": "beam"}),
        ("observe", 0.01, {"strategy": "best_of_n"}),
    ]
    boundaries = registry.definitions["ttsearch_serve_request_latency_seconds"][3]
    assert boundaries[0] <= 0.1 and boundaries[-1] >= 30 * 60, "buckets span 0.1 s .. 30 min"


def test_serve_queue_gauges_are_tagged_by_replica(registry):
    serve = ServeMetrics("replica-7")
    serve.set_queue(waiting=5, searching=2)
    serve.set_queue(waiting=0, searching=3)
    assert registry.kind("ttsearch_serve_queue_depth") == registry.kind("ttsearch_serve_searches_in_flight") == "gauge"
    assert registry.recorded("ttsearch_serve_queue_depth") == [
        ("set", 5, {"replica": "replica-7"}),
        ("set", 0, {"replica": "replica-7"}),
    ]
    assert registry.recorded("ttsearch_serve_searches_in_flight") == [
        ("set", 2, {"replica": "replica-7"}),
        ("set", 3, {"replica": "replica-7"}),
    ]


def test_dispatch_records_batch_size_and_ready_queue_by_replica_or_shard(registry):
    ServeMetrics("replica-7").on_dispatch("generator", 16, 40)
    SweepMetrics(3).on_dispatch("verifier", 4, 0)
    assert registry.recorded("ttsearch_batch_size") == [
        ("observe", 16, {"target": "generator"}),
        ("observe", 4, {"target": "verifier"}),
    ]
    assert registry.recorded("ttsearch_queue_depth") == [
        ("set", 40, {"target": "generator", "shard": "", "replica": "replica-7"}),
        ("set", 0, {"target": "verifier", "shard": "3", "replica": ""}),
    ]


def test_usage_counts_tokens_and_scored_solutions_and_skips_zero(registry):
    serve = ServeMetrics("replica-0")
    serve.on_usage("beam", generated_tokens=120, scored_solutions=6)
    serve.on_usage("best_of_n", generated_tokens=0, scored_solutions=0)  # Ray refuses a zero increment
    assert registry.recorded("ttsearch_generated_tokens") == [("inc", 120, {"strategy": "beam"})]
    assert registry.recorded("ttsearch_scored_solutions") == [("inc", 6, {"strategy": "beam"})]


def test_sweep_counts_searches_usage_and_graded_rows(registry):
    sweep = SweepMetrics(0)
    beam = StrategySpec.of(name="beam")
    sweep.on_outcome(JobOutcome(key=("p0", beam, 4, 0), value=[], usage=Usage(generated_tokens=50), wall_s=1.0))
    sweep.on_outcome(JobOutcome(key=("p1", beam, 4, 0), value=None, usage=Usage(scored_solutions=4), wall_s=1.0))
    assert registry.recorded("ttsearch_searches_done") == [("inc", 1, {"strategy": "beam"})] * 2
    assert registry.recorded("ttsearch_generated_tokens") == [("inc", 50, {"strategy": "beam"})]
    assert registry.recorded("ttsearch_scored_solutions") == [("inc", 4, {"strategy": "beam"})]
    sweep.on_rows(
        [
            {"strategy_label": "beam", "correct": True},
            {"strategy_label": "beam", "correct": False},
            {"strategy_label": "beam", "correct": None},  # ungraded: in neither
        ]
    )
    assert registry.recorded("ttsearch_graded") == [("inc", 1, {"strategy_label": "beam"})] * 2
    assert registry.recorded("ttsearch_correct") == [("inc", 1, {"strategy_label": "beam"})]


def test_labelling_counts_questions_usage_and_labelled_steps(registry):
    label = LabelMetrics(1)
    label.on_outcome(JobOutcome(key={"unique_id": "q"}, value=[], usage=Usage(generated_tokens=70), wall_s=1.0))
    assert registry.recorded("ttsearch_searches_done") == [("inc", 1, {"strategy": "label"})]
    assert registry.recorded("ttsearch_generated_tokens") == [("inc", 70, {"strategy": "label"})]
    label.on_rows([{"hard_labels": [True, False, None]}, {"hard_labels": [], "error": "boom"}])
    assert registry.recorded("ttsearch_labelled_steps") == [
        ("inc", 1, {"outcome": outcome}) for outcome in ("reachable", "unreachable", "ungraded")
    ]
