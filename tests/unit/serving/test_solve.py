"""The online compute-optimal solve: planning from a policy (one real question end to end: tests/integration)."""

from __future__ import annotations

import pytest

from tests.fixtures import STRATEGIES, write_policy
from ttsearch.config import load_config
from ttsearch.search.strategies import strategy_label
from ttsearch.serving.service import policy_plan, spec_for


def test_plan_spends_the_rest_of_the_budget_on_the_bins_strategy(tmp_path):
    policy = write_policy(tmp_path)
    assert policy_plan(policy, 6, 0.9) == (4, "best_of_n/majority"), "6 - 2 estimation samples leaves 4"
    assert policy_plan(policy, 5, 0.05) == (2, "beam(M=2)/weighted"), "3 left: the largest fitted budget ≤ 3"
    with pytest.raises(ValueError, match="ask for at least 4"):
        policy_plan(policy, 3, 0.5)


def test_labels_map_back_to_the_sweeps_strategy_configuration():
    cfg = load_config(None, [STRATEGIES, "budgets=[2,4]"])
    spec, selection = spec_for("beam(M=2)/weighted", cfg.strategies)
    assert spec.name == "beam" and spec.options.beam_width == 2 and selection == "weighted"
    with pytest.raises(ValueError, match="does not define"):
        spec_for("lookahead(M=2,k=1)/weighted", cfg.strategies)


NEWER_STRATEGIES = (
    "strategies=[{name: dvts, beam_width: 2}, {name: rebase, rebase_temperature: 0.5}, {name: rebase}, "
    "{name: particle_filter, particle_temperature: 2.0, selections: [majority, weighted]}, "
    "{name: early_stop}, {name: early_stop, early_stop_share: 0.5}, "
    "{name: early_stop, early_stop_inner: beam, beam_width: 2, early_stop_round: 2, aggregation: min}, "
    "{name: early_stop, early_stop_inner: particle_filter, particle_temperature: 0.5}]"
)


def test_labels_of_the_newer_strategies_map_back_to_their_configuration():
    """A policy names a configuration by its label: every configuration must get a label of its own back."""
    cfg = load_config(None, [NEWER_STRATEGIES, "budgets=[4,8]"])
    pairs = [(spec, selection) for spec in cfg.strategies for selection in spec.selections]
    assert len(pairs) == 9 and {spec.name for spec, _ in pairs} == {"dvts", "rebase", "particle_filter", "early_stop"}
    for spec, selection in pairs:
        assert spec_for(strategy_label(spec, selection), cfg.strategies) == (spec, selection)
