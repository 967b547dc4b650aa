"""The load test's arithmetic and its guard rails, without a service."""

from __future__ import annotations

import json

import pytest
from ttsearch.pipelines.loadtest import LoadTestError, LoadTestReport, level_report, percentile, run_loadtest


def test_percentiles_interpolate_and_tolerate_few_values():
    assert percentile([], 0.5) is None and percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5) and percentile(values, 0.95) == pytest.approx(95.05)


def test_a_level_reads_throughput_latency_and_the_generator_batch_from_the_stats_delta():
    before = {"calls": {"generator": 10}, "sequences": {"generator": 40}, "shared_calls": {"generator": 1}}
    after = {"calls": {"generator": 30}, "sequences": {"generator": 240}, "shared_calls": {"generator": 11}}
    level = level_report(16, [10.0, 20.0, 30.0, 40.0], {"503": 1}, 120.0, before, after)
    assert level["requests_per_min"] == 2.0 and level["failed"] == 1
    assert level["p50_latency_s"] == 25.0 and level["mean_generator_batch"] == 10.0
    assert level["shared_generator_calls"] == 0.5
    report = LoadTestReport("http://127.0.0.1:8000", 4, 64, {"strategy": "beam", "budget": 4}, [level], None)
    assert str(report).startswith("requests: strategy=beam, budget=4\n")
    assert str(report).endswith("\n\nthroughput at C=16 / C=1: None")
    assert json.loads(report.to_json())["levels"] == [level]


def test_only_a_service_on_this_machine_is_load_tested():
    with pytest.raises(LoadTestError, match="only targets a service on this machine"):
        run_loadtest(["conf/serve.yaml"], [], [1], 1, url="http://example.com:8000")
    with pytest.raises(LoadTestError, match=">= 1"):
        run_loadtest(["conf/serve.yaml"], [], [0], 1)
