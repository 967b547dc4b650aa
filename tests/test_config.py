"""Config loading and validation: bad values fail at start, naming the key."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from ttsearch.config import CONF_DIR, ConfigError, load_config


def test_shipped_configs_load():
    for path in sorted(CONF_DIR.glob("*.yaml")):  # the revision prompt is layered on, as the Makefile does
        cfg = load_config([path, CONF_DIR / "revision_prompt.yaml"])
        assert cfg.strategies and cfg.budgets, path


def test_overrides_apply_on_top_of_the_file():
    cfg = load_config([CONF_DIR / "main.yaml", CONF_DIR / "revision_prompt.yaml"],
                      ["data.limit=3", "budgets=[4,8]", "verifier.kind=oracle"])
    assert cfg.data.limit == 3 and cfg.budgets == [4, 8] and cfg.verifier.kind == "oracle"
    assert cfg.strategies[1].name == "beam" and cfg.strategies[1].beam_width == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.limt=3"], "data.limt"),
        (["nonsense=1"], "nonsense"),
        (["generator.replicas=two"], "generator.replicas"),
        (["budgets=[4,0]"], "budgets[1]"),
        (["strategies=[{name: sorcery}]"], "strategies[0].name"),
        (["strategies=[{name: best_of_n, selections: [vibes]}]"], "strategies[0].selections"),
        (["strategies=[{name: best_of_n, aggregation: mean}]"], "strategies[0].aggregation"),
        (["strategies=[{name: beam, beam_width: 3}]", "budgets=[4]"], "strategies[0].beam_width"),
        (["strategies=[{name: beam, lookahead: 2, beam_width: 2}]"], "strategies[0].lookahead"),
        (["strategies=[{name: beam, beam_width: 2, colour: red}]"], "colour"),
        (["verifier.kind=astrology"], "verifier.kind"),
        (["generator.backend=llama.cpp"], "generator.backend"),
        (["strategies=[{name: revisions, revision_length: 3}]", "budgets=[4]"], "strategies[0].revision_length"),
        (["strategies=[{name: revisions, revision_length: 2, revision_window: 0}]"], "strategies[0].revision_window"),
        (["strategies=[{name: revisions, revision_chains: 3}]", "budgets=[2,4]"], "strategies[0].revision_chains"),
        (["strategies=[{name: revisions, revision_chains: -1}]"], "strategies[0].revision_chains"),
        (["strategies=[{name: revisions, revision_length: 2}]"], "search.revision_prompt.attempt_format"),
        (
            ["strategies=[{name: revisions, revision_length: 2}]", "search.revision_prompt.attempt_format='{attempt'"],
            "search.revision_prompt.attempt_format",
        ),
    ],
)
def test_bad_values_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}")):
        load_config(None, overrides)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_key_in_a_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'search\.max_stepz'"):
        load_config(path)


def test_revision_prompt_snippet_merges_into_a_sweep_config(tmp_path):
    snippet = OmegaConf.load(CONF_DIR / "revision_prompt.yaml")
    strategy = OmegaConf.create({"strategies": [{"name": "revisions", "revision_length": 2}]})
    path = tmp_path / "revisions.yaml"
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(CONF_DIR / "main.yaml"), snippet, strategy), path)
    cfg = load_config(path)
    assert cfg.search.revision_prompt.attempt_format == snippet.search.revision_prompt.attempt_format
    assert cfg.strategies[0].revision_length == 2 and cfg.strategies[0].revision_window == 4


def test_config_files_layer_in_order_and_errors_name_the_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("budgets: [8]\ndata:\n  limit: 2\n")
    cfg = load_config([CONF_DIR / "main.yaml", CONF_DIR / "revision_prompt.yaml", extra], ["data.limit=3"])
    assert cfg.budgets == [8] and cfg.data.limit == 3 and cfg.search.revision_prompt.instruction
    broken = tmp_path / "broken.yaml"
    broken.write_text("budgets: [4\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config([CONF_DIR / "main.yaml", broken])
