"""Qwen2.5-Math-PRM on vLLM's pooling runner: a tiny random-init checkpoint in the real layout (a Qwen2 body,
the `score` head Linear-ReLU-Linear as the remote code and vLLM's qwen2_rm.py name it, architectures
["Qwen2ForProcessRewardModel"] with the remote code beside it), scored on a vLLM-CPU pooling engine and
on transformers: the same scores, incremental scoring equals full rescoring, and the prefix cache serves
the earlier steps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import build_qwen_prm_checkpoint
from tests.fixtures import qwen_prm_config as prm_config
from ttsearch.config import GeneratorConfig, SweepConfig, VerifierConfig, verifier_backend


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("qwen_prm")
    build_qwen_prm_checkpoint(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def reference(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The transformers scorer, loading the checkpoint's remote code as it loads the real model's."""
    from ttsearch.engines.prm import PRMScorer

    return PRMScorer.load(prm_config(checkpoint, "transformers"), cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_qwen_prm_goes_to_its_own_vllm_engine_never_the_generators() -> None:
    from ttsearch.config import ConfigError, load_config

    prm = VerifierConfig(kind="qwen_prm")  # the same model id as the default generator: still not 'generator'
    assert verifier_backend(prm, GeneratorConfig()) == "vllm"
    assert verifier_backend(prm, None) == "vllm"
    assert verifier_backend(replace(prm, backend="transformers"), None) == "transformers"
    assert verifier_backend(VerifierConfig(kind="skywork"), None) == "transformers"
    assert isinstance(load_config(None, ["verifier.kind=qwen_prm", "verifier.backend=vllm"]), SweepConfig)
    with pytest.raises(ConfigError, match="'qwen_prm' needs 'vllm' or 'transformers'"):
        load_config(None, ["verifier.kind=qwen_prm", "verifier.backend=generator"])
    with pytest.raises(ConfigError, match="'skywork' needs 'transformers'"):
        load_config(None, ["verifier.kind=skywork", "verifier.backend=generator"])
    with pytest.raises(ConfigError, match="'skywork' needs 'transformers'"):
        load_config(None, ["verifier.kind=skywork", "verifier.backend=vllm"])


def test_prefix_caching_needs_all_token_pooling() -> None:
    """vLLM's rule (`ModelConfig.is_prefix_caching_supported`): a causal pooling model keeps prefix caching
    under ALL token pooling, not under STEP, the default of its Qwen2ForProcessRewardModel (qwen2_rm.py)."""
    from types import SimpleNamespace

    from vllm.config import ModelConfig, PoolerConfig
    from vllm.model_executor.models.qwen2_rm import Qwen2ForProcessRewardModel

    def supported(tok_pooling_type: str) -> bool:
        pooler = PoolerConfig(seq_pooling_type="LAST", tok_pooling_type=tok_pooling_type)
        return ModelConfig.is_prefix_caching_supported.fget(SimpleNamespace(pooler_config=pooler, attn_type="decoder"))

    assert Qwen2ForProcessRewardModel.default_tok_pooling_type == "STEP" and not supported("STEP")
    assert supported("ALL")


def test_parameter_count_matches_the_loaded_model(checkpoint: Path, reference: Any) -> None:
    from transformers import AutoConfig

    from ttsearch.engines.vllm_scorer import pooling_parameters

    assert pooling_parameters(AutoConfig.from_pretrained(checkpoint)) == reference.num_parameters
