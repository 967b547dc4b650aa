"""The generator backend registry (`ttsearch.config.generators`): `generator.backend` → the engine class a generator
replica builds (`actors/generator.py` calls `generator_class`), shipped table plus entry points."""

from __future__ import annotations

import pytest

import ttsearch.config.generators as generators
from tests.fixtures import install_entry_points
from ttsearch.config import GENERATOR_BACKENDS, ConfigError, generator_backend_names, generator_class, load_config


def test_generator_backends_are_one_table_of_engine_classes():
    from ttsearch.engines.transformers_generator import TransformersGenerator
    from ttsearch.engines.vllm_generator import VLLMGenerator

    assert generator_backend_names() == ("vllm", "transformers") == tuple(GENERATOR_BACKENDS)
    assert generator_class("vllm") is VLLMGenerator
    assert generator_class("transformers") is TransformersGenerator
    with pytest.raises(KeyError, match=r"unknown generator backend 'tpu', expected one of \('vllm', 'transformers'\)"):
        generator_class("tpu")


def test_a_plugin_generator_backend_joins_through_its_entry_point(monkeypatch: pytest.MonkeyPatch):
    from ttsearch.engines.transformers_generator import TransformersGenerator

    path = "ttsearch.engines.transformers_generator:TransformersGenerator"
    install_entry_points(monkeypatch, generators, {"toy_engine": path, "vllm": "tests.fixtures:ToyPRMAdapter"})
    try:
        assert generator_backend_names() == ("vllm", "transformers", "toy_engine")
        assert generator_class("toy_engine") is TransformersGenerator
        assert generator_class("vllm").__name__ == "VLLMGenerator", "a shipped name wins"
        assert load_config(None, ["generator.backend=toy_engine"]).generator.backend == "toy_engine"
    finally:
        generators._plugins.cache_clear()


def test_an_unknown_backend_is_a_config_error_listing_the_names():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["generator.backend=tpu"])
    message = str(caught.value)
    assert "key 'generator.backend': unknown generator backend 'tpu'" in message
    assert str(generator_backend_names()) in message
