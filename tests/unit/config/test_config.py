"""Config loading and validation: bad values fail at start, naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.fixtures import mismatches, stated_values
from ttsearch.cli import main
from ttsearch.config import (
    CONF_DIR,
    DEFAULT_DATASET,
    Bound,
    ConfigError,
    DataConfig,
    SweepConfig,
    field_bounds,
    load_config,
    resolve_config_path,
)


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_with_the_values_their_files_set(path):
    layers = [path, CONF_DIR / "revision_prompt.yaml"]  # the revision prompt is layered on, as the Makefile does
    stated = stated_values(layers)
    assert mismatches(stated, load_config(layers)) == []
    # The check has teeth only where a file departs from the defaults: a loader that ignored the file fails here.
    assert mismatches(stated_values([path]), load_config(None)), f"{path.name} only restates defaults"


def test_overrides_apply_on_top_of_the_file():
    cfg = load_config(
        [CONF_DIR / "main.yaml", CONF_DIR / "revision_prompt.yaml"],
        ["data.limit=3", "budgets=[4,8]", "verifier.kind=oracle"],
    )
    assert cfg.data.limit == 3 and cfg.budgets == [4, 8] and cfg.verifier.kind == "oracle"
    assert cfg.strategies[1].name == "beam" and cfg.strategies[1].options.beam_width == 2


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
        (["strategies=[{name: beam, beam_width: 2, colour: red}]"], "strategies[0].colour"),
        (["verifier.kind=astrology"], "verifier.kind"),
        (["generator.backend=llama.cpp"], "generator.backend"),
        (["verifier.backend=tpu"], "verifier.backend"),
        (["verifier.backend=generator", "verifier.model=/models/judge"], "verifier.backend"),
        (["verifier.backend=generator", "generator.backend=transformers"], "verifier.backend"),
        (["verifier.kind=qwen_prm", "verifier.backend=generator"], "verifier.backend"),
        (["verifier.gpu_memory_utilization=0"], "verifier.gpu_memory_utilization"),
        (["verifier.cpu_kv_cache_gib=0"], "verifier.cpu_kv_cache_gib"),
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
    assert cfg.strategies[0].options.revision_length == 2 and cfg.strategies[0].options.revision_window == 4


def test_config_files_layer_in_order_and_errors_name_the_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("budgets: [8]\ndata:\n  limit: 2\n")
    cfg = load_config([CONF_DIR / "main.yaml", CONF_DIR / "revision_prompt.yaml", extra], ["data.limit=3"])
    assert cfg.budgets == [8] and cfg.data.limit == 3 and cfg.search.revision_prompt.instruction
    broken = tmp_path / "broken.yaml"
    broken.write_text("budgets: [4\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config([CONF_DIR / "main.yaml", broken])


def load_error(overrides: list[str], paths: list[Path] | None = None) -> str:
    """The one-line message of the ConfigError these overrides raise."""
    with pytest.raises(ConfigError) as caught:
        load_config(paths, overrides)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


BOUNDS = {key: bound for key, bound, _ in field_bounds(SweepConfig())}
"""Every numeric rule, read from the metadata beside its field."""
GREATER_THAN_ZERO = [key for key, bound in BOUNDS.items() if bound == Bound(0)]
AT_LEAST = [(key, int(bound.low)) for key, bound in BOUNDS.items() if bound.inclusive]


def test_the_rules_beside_the_fields_cover_the_counts_sizes_timeouts_and_fractions():
    assert len(GREATER_THAN_ZERO) >= 60 and len(AT_LEAST) >= 15
    assert {"generator.replicas", "serve.autoscaling.min_replicas", "prm.epochs", "revision.epochs"} <= set(BOUNDS)
    assert BOUNDS["generator.gpu_memory_utilization"] == Bound(0, high=1)


@pytest.mark.parametrize("key", GREATER_THAN_ZERO)
def test_a_zero_count_size_or_timeout_is_refused_with_its_value(key):
    assert re.search(rf"key '{re.escape(key)}': must be > 0, got 0(\.0)?$", load_error([f"{key}=0"]))


@pytest.mark.parametrize(("key", "bound"), AT_LEAST)
def test_a_value_below_its_lower_bound_is_refused_with_its_value(key, bound):
    message = load_error([f"{key}={bound - 1}"])
    assert re.search(rf"key '{re.escape(key)}': must be >= {bound}.*, got {bound - 1}(\.0)?$", message)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seeds=[]"], "key 'seeds': at least one seed is needed, got []"),
        (["search.step_delimiter=''"], "key 'search.step_delimiter': must not be empty"),
        (["generator.gpu_memory_utilization=0"], "key 'generator.gpu_memory_utilization': must be in (0, 1], got 0.0"),
        (["generator.gpu_memory_utilization=1.5"], "must be in (0, 1], got 1.5"),
        (["data.limit=0"], "key 'data.limit': must be > 0 (null: all), got 0"),
        (["data.levels=[0,6]"], "key 'data.levels': MATH levels are 1 to 5, got [0, 6]"),
        (["bench.batch_curve=[1,0]"], "key 'bench.batch_curve[1]': a batch size must be > 0, got 0"),
        (["bench.real_verifier=astrology"], "key 'bench.real_verifier': unknown verifier 'astrology'"),
        (["strategies=[{name: beam, beam_width: 0}]"], "key 'strategies[0].beam_width': must be > 0, got 0"),
        (["strategies=[{name: lookahead, lookahead: -1}]"], "key 'strategies[0].lookahead': must be >= 0, got -1"),
        (["strategies=[{name: best_of_n, selections: []}]"], "key 'strategies[0].selections': at least one"),
        (
            ["strategies=[{name: revisions, revision_length: 2, revision_window: 0}]"],
            "key 'strategies[0].revision_window': must be > 0, got 0",
        ),
        (
            ["strategies=[{name: revisions, revision_length: 2}]", "search.revision_prompt.attempt_format=Try"],
            "key 'search.revision_prompt.attempt_format': must be a str.format template",
        ),
    ],
)
def test_other_bad_values_name_the_key_and_the_value(overrides, expected):
    assert expected in load_error(overrides)


def test_a_wider_request_than_a_replica_takes_is_refused_naming_both():
    message = load_error(["scheduler.max_outstanding_per_replica=8", "budgets=[4,16]"])
    assert "key 'scheduler.max_outstanding_per_replica'" in message
    assert "16 sequences" in message and "budget 16" in message and message.endswith("got 8")
    # a revision attempt is one sequence at any budget
    revisions = "strategies=[{name: revisions, revision_length: 2}]"
    assert (
        load_config(
            CONF_DIR / "revision_prompt.yaml", [revisions, "budgets=[16]", "scheduler.max_outstanding_per_replica=8"]
        ).scheduler.max_outstanding_per_replica
        == 8
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["search.max_solution_tokens=600", "generator.max_model_len=1024"], ["search.max_solution_tokens 600"]),
        (
            [
                "strategies=[{name: lookahead, beam_width: 2, lookahead: 2}]",
                "search.max_steps=10",
                "search.max_step_tokens=150",
            ],
            ["search.max_steps 10", "strategies[0].lookahead 2", "search.max_step_tokens 150"],
        ),
        (
            [
                "strategies=[{name: revisions, revision_length: 4, revision_window: 4}]",
                "search.max_solution_tokens=512",
            ],
            ["3 shown attempts", "strategies[0].revision_window 4", "search.max_solution_tokens 512"],
        ),
    ],
)
def test_a_context_that_can_outgrow_max_model_len_is_refused_naming_the_keys(overrides, named):
    message = load_error(overrides, [CONF_DIR / "revision_prompt.yaml"])
    assert "key 'generator.max_model_len'" in message and "tokens of context" in message
    assert all(part in message for part in named), message
    assert re.search(r"got (1024|2048);", message)


def test_the_context_estimate_counts_only_the_attempts_a_revision_shows():
    revisions = "strategies=[{name: revisions, revision_length: 4, revision_window: 1}]"
    cfg = load_config(CONF_DIR / "revision_prompt.yaml", [revisions, "search.max_solution_tokens=512"])
    assert cfg.generator.max_model_len == 2048, "512 allowance + (1 shown + 1 new) x 512 fits"


def test_gpu_config_fits_its_model_but_the_paper_scale_lengths_would_not():
    gpu = [CONF_DIR / "gpu.yaml", CONF_DIR / "revision_prompt.yaml"]
    assert load_config(gpu).generator.max_model_len == 4096
    message = load_error(["search.max_steps=40", "search.max_step_tokens=512"], gpu)
    assert (
        "strategies[1] beam" in message
        and "search.max_steps 40" in message
        and message.endswith("got 4096; raise it or lower those keys")
    )


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ("data.limit", "expected key=value"),
        ("=3", "expected a dotted key such as data.limit before '=', got ''"),
        ("a==b", "expected one '=' and a value after it (key=null for no value), got value '=b'"),
        ("data.limit=", "got value ''"),
        ("budgets=[4", "value '[4' cannot be parsed (did not find expected ',' or ']')"),
        ("data.limit=${oops", "value '${oops' cannot be parsed"),
        ("data..limit=3", "expected a dotted key"),
    ],
)
def test_a_malformed_override_is_one_line_naming_it(override, rule):
    message = load_error([override])
    assert message.startswith(f"bad override '{override}': ") and rule in message, message


def test_the_cli_prints_a_malformed_override_as_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["sweep", "--config", "conf/main.yaml", "budgets=[4"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ttsearch: error: bad override 'budgets=[4': value '[4' cannot be parsed (did not find expected ',' or ']')"
    ]


def test_an_interpolation_that_does_not_resolve_names_its_key():
    assert "key 'data.limit': Interpolation key 'nope' not found" in load_error(["data.limit=${nope}"])


def test_shipped_config_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no conf/ here: conf/NAME.yaml is the shipped one
    assert resolve_config_path("conf/main.yaml") == CONF_DIR / "main.yaml"
    assert load_config(["conf/main.yaml", "conf/revision_prompt.yaml"]).output_dir == "runs/main"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "main.yaml").write_text("budgets: [8]\n")  # a local conf/ wins
    assert load_config("conf/main.yaml").budgets == [8]
    message = load_error([], [Path("conf/nope.yaml")])
    assert re.search(r"config file not found: conf/nope\.yaml \(shipped configs: .*conf/gpu\.yaml", message)


def test_the_default_dataset_is_the_shipped_one():
    assert Path(DataConfig().path) == DEFAULT_DATASET and DEFAULT_DATASET.is_file()


def test_auto_verifier_backend_prefers_the_generator_engines_then_vllm_then_transformers():
    from ttsearch.config import GeneratorConfig, VerifierConfig, verifier_backend

    judge, same = VerifierConfig(kind="lm_judge"), GeneratorConfig()
    assert verifier_backend(judge, same) == "generator", "same model, vLLM generator: share its engines"
    assert verifier_backend(judge, GeneratorConfig(model="/models/other")) == "vllm"
    assert verifier_backend(judge, GeneratorConfig(backend="transformers")) == "vllm"
    assert verifier_backend(judge, None) == "vllm", "a verifier replica on its own"
    assert verifier_backend(VerifierConfig(kind="skywork"), same) == "transformers", "a value head: no vLLM"
    assert verifier_backend(VerifierConfig(kind="lm_judge", backend="transformers"), same) == "transformers"
    assert load_config(None).verifier.backend == "auto"


def test_naming_another_serve_strategy_in_a_later_layer_starts_from_its_defaults():
    """conf/serve.yaml serves beam with beam_width 2; an override naming best-of-N drops beam's settings, one that
    keeps the strategy keeps them, and a key the named strategy lacks in the same layer is still refused."""
    assert load_config(["conf/serve.yaml"], ["serve.strategy.name=best_of_n"]).serve.strategy.settings == {}
    assert load_config(["conf/serve.yaml"], ["serve.strategy.beam_width=4"]).serve.strategy.settings == {
        "beam_width": 4
    }
    with pytest.raises(ConfigError, match=r"serve\.strategy\.beam_width.*not a setting of strategy 'best_of_n'"):
        load_config(["conf/serve.yaml"], ["serve.strategy={name: best_of_n, beam_width: 2}"])
