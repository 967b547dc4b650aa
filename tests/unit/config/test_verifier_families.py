"""The verifier family registry (`ttsearch.config.verifiers`): the shipped table is the only source, "auto" takes a
family's first usable backend, plugins join through entry points, unknown names fail validation naming the key."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

import ttsearch.config.verifiers as verifiers
from tests.fixtures import TOY_PRM_FAMILY, ToyPRMAdapter, install_entry_points
from ttsearch.config import (
    ConfigError,
    GeneratorConfig,
    VerifierConfig,
    load_config,
    model_free_names,
    verifier_backend,
    verifier_family,
    verifier_names,
)
from ttsearch.config.verifiers import LAYOUT_HOSTS, VERIFIER_FAMILIES, Layout, VerifierFamily

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def toy_prm(monkeypatch: pytest.MonkeyPatch) -> Iterator[VerifierFamily]:
    """`toy_prm` installed as a plugin family (an entry point of group `ttsearch.verifiers`)."""
    install_entry_points(monkeypatch, verifiers, {"toy_prm": "tests.fixtures:TOY_PRM_FAMILY"})
    yield TOY_PRM_FAMILY
    verifiers._plugins.cache_clear()


# ---- the shipped table ----


def test_the_table_is_every_family_in_its_order():
    assert verifier_names() == (
        "lm_judge",
        "qwen_prm",
        "math_shepherd",
        "rlhflow",
        "skywork",
        "oracle",
        "majority",
        "hash",
    )
    assert all(verifier_family(name) is VERIFIER_FAMILIES[name] for name in verifier_names())
    assert model_free_names() == ("oracle", "majority", "hash")
    assert [name for name in verifier_names() if not verifier_family(name).scores_new_questions] == ["oracle", "hash"]


@pytest.mark.parametrize("name", list(VERIFIER_FAMILIES))
def test_every_family_is_consistent(name: str):
    family = VERIFIER_FAMILIES[name]
    assert family.name == name
    if family.model_free:
        assert family.layout is Layout.NONE and family.backends == ()
    else:
        assert family.adapter.startswith("ttsearch.engines.prm:")
        assert family.backends and set(family.backends) <= set(LAYOUT_HOSTS[family.layout])


@pytest.mark.skipif(not HAS_TORCH, reason="the engines need torch")
@pytest.mark.parametrize("name", [name for name, family in VERIFIER_FAMILIES.items() if not family.model_free])
def test_every_adapter_path_imports_a_step_adapter_of_its_layout(name: str):
    from ttsearch.engines.prm import StepAdapter, adapter_class

    adapter = adapter_class(name)
    assert issubclass(adapter, StepAdapter)
    assert f"{adapter.__module__}:{adapter.__qualname__}" == VERIFIER_FAMILIES[name].adapter
    assert adapter.value_head == (VERIFIER_FAMILIES[name].layout is Layout.VALUE_HEAD)


def test_an_inconsistent_family_is_refused():
    with pytest.raises(ValueError, match="backends"):
        VerifierFamily("x", "m:C", Layout.VALUE_HEAD, ("vllm",))
    with pytest.raises(ValueError, match="backends"):
        VerifierFamily("x", "m:C", Layout.NEXT_TOKEN, ())
    with pytest.raises(ValueError, match="adapter"):
        VerifierFamily("x", None, Layout.NEXT_TOKEN, ("vllm",))


# ---- "auto" ----


@pytest.mark.parametrize(
    ("kind", "same_model_vllm", "other_model", "alone"),
    [
        ("lm_judge", "generator", "vllm", "vllm"),
        ("math_shepherd", "generator", "vllm", "vllm"),
        ("rlhflow", "generator", "vllm", "vllm"),
        ("qwen_prm", "vllm", "vllm", "vllm"),
        ("skywork", "transformers", "transformers", "transformers"),
        ("oracle", "", "", ""),
        ("majority", "", "", ""),
        ("hash", "", "", ""),
    ],
)
def test_auto_takes_the_first_usable_backend_of_the_family(kind, same_model_vllm, other_model, alone):
    verifier = VerifierConfig(kind=kind)
    assert verifier_backend(verifier, GeneratorConfig()) == same_model_vllm
    assert verifier_backend(verifier, GeneratorConfig(model="/models/other")) == other_model
    assert verifier_backend(verifier, None) == alone
    transformers_generator = GeneratorConfig(backend="transformers")
    assert verifier_backend(verifier, transformers_generator) == other_model, "the generator's engines need vLLM"


# ---- validation ----


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["verifier.kind=astrology"], "key 'verifier.kind': unknown verifier 'astrology', expected one of"),
        (["bench.real_verifier=astrology"], "key 'bench.real_verifier': unknown verifier 'astrology'"),
        (["verifier.backend=tpu"], "key 'verifier.backend': unknown verifier backend 'tpu'"),
        (["generator.backend=tpu"], "key 'generator.backend': unknown generator backend 'tpu', expected one of"),
        (
            ["verifier.kind=skywork", "verifier.backend=vllm"],
            "key 'verifier.backend': 'vllm' cannot host the verifier family 'skywork' (value_head layout); "
            "'skywork' needs 'transformers'",
        ),
        (
            ["verifier.kind=qwen_prm", "verifier.backend=generator"],
            "'generator' cannot host the verifier family 'qwen_prm' (token_classification layout); "
            "'qwen_prm' needs 'vllm' or 'transformers'",
        ),
    ],
)
def test_unknown_names_and_unfit_backends_are_errors_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert expected in str(caught.value)


def test_the_unknown_verifier_error_lists_the_registry():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["verifier.kind=astrology"])
    assert str(verifier_names()) in str(caught.value)


# ---- a plugin family ----


def test_a_plugin_family_joins_through_its_entry_point(toy_prm: VerifierFamily):
    assert verifier_names()[-1] == "toy_prm"
    assert verifier_family("toy_prm") is toy_prm
    cfg = load_config(None, ["verifier.kind=toy_prm", "verifier.model=/models/toy"])
    assert cfg.verifier.kind == "toy_prm"
    assert verifier_backend(cfg.verifier, cfg.generator) == "vllm", "its first backend: it does not list 'generator'"
    cfg = load_config(None, ["verifier.kind=toy_prm", "verifier.backend=transformers"])
    assert verifier_backend(cfg.verifier, cfg.generator) == "transformers"
    with pytest.raises(ConfigError, match="'toy_prm' needs 'vllm' or 'transformers'"):
        load_config(None, ["verifier.kind=toy_prm", "verifier.backend=generator"])


@pytest.mark.skipif(not HAS_TORCH, reason="the engines need torch")
def test_the_engines_find_a_plugin_familys_adapter(toy_prm: VerifierFamily):
    from ttsearch.engines.prm import adapter_class

    assert adapter_class("toy_prm") is ToyPRMAdapter


def test_a_plugin_is_gone_with_its_entry_point(toy_prm: VerifierFamily, monkeypatch: pytest.MonkeyPatch):
    install_entry_points(monkeypatch, verifiers, {})
    assert "toy_prm" not in verifier_names()
    with pytest.raises(KeyError, match="unknown verifier 'toy_prm'"):
        verifier_family("toy_prm")


def test_a_plugin_entry_point_must_name_a_model_family_of_its_name(monkeypatch: pytest.MonkeyPatch):
    install_entry_points(
        monkeypatch,
        verifiers,
        {"renamed": "tests.fixtures:TOY_PRM_FAMILY", "free": "ttsearch.config.verifiers:VERIFIER_FAMILIES"},
    )
    try:
        with pytest.raises(TypeError, match="not a VerifierFamily named 'renamed'"):
            verifier_family("renamed")
        with pytest.raises(TypeError, match="not a VerifierFamily named 'free'"):
            verifier_family("free")
    finally:
        verifiers._plugins.cache_clear()


def test_a_shipped_name_wins_over_a_plugin_of_the_same_name(monkeypatch: pytest.MonkeyPatch):
    install_entry_points(monkeypatch, verifiers, {"lm_judge": "tests.fixtures:TOY_PRM_FAMILY"})
    try:
        assert verifier_family("lm_judge") is VERIFIER_FAMILIES["lm_judge"]
        assert verifier_names().count("lm_judge") == 1
    finally:
        verifiers._plugins.cache_clear()
