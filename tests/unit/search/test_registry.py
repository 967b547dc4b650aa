"""The strategy registry: the shipped table is the one place strategies are named, and a new strategy is one new
module plus one registry entry, picked up with no other edit by config validation, a sweep's rows, the report,
the policy and a serve request (scripted backends: no Ray, no model)."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from tests.fixtures import (
    FakeScheduler,
    SameAnswers,
    ScriptedBackend,
    install_entry_points,
    length_scorer,
    pools,
    step_generator,
)
from ttsearch.analysis.compute_optimal import fit_policy, policy_of
from ttsearch.analysis.curves import estimate_difficulty
from ttsearch.analysis.report import build_report
from ttsearch.config import ConfigError, entry_record, load_config
from ttsearch.search.outcomes import ModelSizes
from ttsearch.search.scheduler import Scheduler
from ttsearch.search.strategies import registry, strategy_config, strategy_names
from ttsearch.serving.api import ApiError, parse_chat_request
from ttsearch.serving.service import SearchService, SearchSettings, spec_for
from ttsearch.sweep.jobs import SweepWork
from ttsearch.sweep.results import RunStore, sweep_fingerprint
from ttsearch.sweep.sharded import run_shard

TOY_MODULE = '''
"""A toy strategy: `budget` whole solutions, sampled `toy_width` to a request."""

from dataclasses import dataclass

from ttsearch.search.strategies.registry import Strategy, multiple_errors


@dataclass(frozen=True)
class ToySettings:
    toy_width: int = 2
    """Solutions per request; divides the budget."""

    def errors(self, budgets):
        return multiple_errors("toy_width", self.toy_width, budgets)


def toy(ctx, budget, spec):
    width = spec.options.toy_width
    sampled = yield [ctx.solve(ctx.prompt(()), width, 0, i) for i in range(budget // width)]
    solutions = [(ctx.split_steps(c.text), c) for result in sampled for c in result.completions]
    scored = yield [ctx.score(steps) for steps, _ in solutions]
    return [
        ctx.candidate(steps, result.step_scores, c.ended_solution, c.num_tokens, result.tokens)
        for (steps, c), result in zip(solutions, scored)
    ]


TOY = Strategy(
    "toy", toy, ToySettings, label=lambda s: f"(w={s.toy_width})", largest_request=lambda s, n: s.options.toy_width
)
'''
PROBLEMS = [
    {
        "unique_id": f"p{i}",
        "problem": f"What is {i} + 0?",
        "answer": str(i % 2),
        "subject": "Algebra",
        "level": 1 + i % 5,
    }
    for i in range(10)
]
SIZES = ModelSizes(generator=100, verifier=10)


@pytest.fixture(params=["table", "entry_point"])
def toy(request, tmp_path, monkeypatch):
    """The toy module on the path, and one registry entry: a line in the shipped table, or a plugin's entry point."""
    (tmp_path / "toy_strategy.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    if request.param == "table":
        monkeypatch.setitem(registry.STRATEGIES, "toy", "toy_strategy:TOY")
    else:
        install_entry_points(monkeypatch, registry, {"toy": "toy_strategy:TOY"})
    yield
    registry._plugins.cache_clear()


def test_the_shipped_registry_is_one_table_of_modules_that_load():
    assert strategy_names()[:8] == tuple(registry.STRATEGIES)
    for name in registry.STRATEGIES:
        entry = registry.strategy(name)
        assert entry.name == name and callable(entry.run)
        if entry.inner is None:  # a wrapper's defaults hold no inner settings until parsed
            assert entry.settings().errors([16]) == []


def test_unknown_strategies_and_settings_are_named():
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.name.*unknown strategy 'toy'"):
        load_config(None, ["strategies=[{name: toy}]"])
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.beam_widht.*not a setting of strategy 'beam'"):
        load_config(None, ["strategies=[{name: beam, beam_widht: 2}]"])


def test_entries_saved_before_the_registry_read_as_todays_records():
    """Manifests and config.yaml files of older runs carried every strategy's settings in every entry."""
    old = {"name": "best_of_n", "selections": ["naive"], "aggregation": "last", "beam_width": 4, "lookahead": 0}
    assert entry_record(old) == {"name": "best_of_n", "selections": ["naive"], "aggregation": "last"}
    old_stop = old | {"name": "early_stop", "early_stop_inner": "beam", "early_stop_round": 4, "revision_window": 4}
    assert entry_record(old_stop) == {
        "name": "early_stop",
        "selections": ["naive"],
        "aggregation": "last",
        "early_stop_inner": "beam",
        "early_stop_round": 4,
        "early_stop_share": 0.75,
        "beam_width": 4,
    }


def sweep(store: RunStore, overrides: list[str]):
    cfg = load_config(None, ["budgets=[2,4]", "seeds=[0]", "verifier.kind=majority", *overrides])
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    scheduler = FakeScheduler()
    asyncio.run(run_shard(store, 0, 1, PROBLEMS, SweepWork(cfg, SIZES), lambda grader: scheduler, node_id="n"))
    return cfg


def test_a_toy_strategy_is_one_module_and_one_registry_entry(toy, tmp_path):
    """Picked up by config validation, a sweep's rows, the report, the policy and a serve request."""
    # config validation: its settings are keys of the entry, checked by its own rule
    entry = "{name: toy, toy_width: 2, selections: [majority, weighted]}"
    with pytest.raises(ConfigError, match=r"strategies\[1\]\.toy_width.*budget 2 is not a positive multiple"):
        load_config(None, ["budgets=[2,4]", f"strategies=[{{name: best_of_n}}, {entry.replace('2', '4', 1)}]"])

    # a sweep's rows: its label and its settings column
    store = RunStore(tmp_path / "run")
    cfg = sweep(store, [f"strategies=[{{name: best_of_n, selections: [majority, weighted]}}, {entry}]"])
    rows = store.read_results().to_pandas()
    mine = rows[rows["strategy"] == "toy"]
    assert set(mine["strategy_label"]) == {"toy(w=2)/majority", "toy(w=2)/weighted"}
    assert {json.loads(s)["toy_width"] for s in mine["settings"]} == {2}
    assert (mine["samples"] == mine["budget"]).all() and mine["error"].isna().all()

    # the report
    report = build_report(store)
    assert "toy(w=2)/weighted" in report.path.read_text()

    # the policy: fitted on rows where the toy strategy is the one that is right, it chooses it everywhere
    toy = (rows["strategy"] == "toy").astype(float)
    frame = rows.assign(correct=rows["strategy"] == "toy", accuracy=toy, accuracy_low=toy, accuracy_high=toy)
    difficulty = estimate_difficulty(frame, "predicted", 2, min_size=2)
    choices = fit_policy(frame, difficulty.bins)
    assert set(choices.values()) <= {"toy(w=2)/majority", "toy(w=2)/weighted"} and choices
    policy = policy_of(choices, difficulty)

    # a serve request: the strategy and its setting by name, and the policy's choice resolved to the toy's spec
    body = {"messages": [{"role": "user", "content": "What is 1 - 1?"}], "strategy": "toy", "toy_width": 2}
    settings = parse_chat_request(json.dumps(body | {"budget": 4}).encode(), cfg, has_policy=False).settings
    assert strategy_config(settings.strategy) == "toy(w=2)"
    refused = body | {"toy_width": 3}
    with pytest.raises(ApiError, match="toy_width 3"):
        parse_chat_request(json.dumps(refused).encode(), cfg, has_policy=False)
    spec, selection = spec_for(choices[max(choices)], cfg.strategies)
    assert spec.name == "toy" and selection in ("majority", "weighted")
    fixed = ask(service_for(cfg, None), settings)
    assert fixed.strategy_label == "toy(w=2)/weighted" and fixed.search.samples == 4
    chosen = ask(service_for(cfg, policy), SearchSettings(budget=6, compute_optimal=True))
    assert chosen.strategy_label.startswith("toy(w=2)/") and chosen.search_budget == 4


def service_for(cfg, policy) -> SearchService:
    scheduler = Scheduler(pools([ScriptedBackend(step_generator())], [ScriptedBackend(length_scorer)]), 1)
    return SearchService(scheduler, cfg.search, SIZES, SameAnswers(), policy, cfg.strategies)  # type: ignore[arg-type]


def ask(service: SearchService, request: SearchSettings):
    async def go():
        try:
            return await service.answer("What is 1 - 1?", request)
        finally:
            await service.close()

    return asyncio.run(go())
