"""The GPU tier: the transformers generator engine and the PRM scorer on CUDA, each against the same engine on CPU.

Tiny random-init models of real architectures are built in a temporary directory (their tokenizers trained offline on
the shipped MATH-500 problems, tests/fixtures.py), so the tier needs no network, no model cache, no Ray and no vLLM:
torch, transformers and the small wheelhouse of tests/gpu/README.md. Neither engine has a device setting; each runs on
CUDA whenever `torch.cuda.is_available()`, so the CPU references are built with CUDA hidden (`on_cpu`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from tests.fixtures import (
    ENDINGS,
    ITEMS,
    QUESTION_PROMPT,
    STEP,
    VERIFIER_KINDS,
    ask,
    assert_incremental_matches_full,
    assert_scores_close,
    build_checkpoint,
    build_qwen_prm_checkpoint,
    build_tokenizer,
    run_batch,
)
from ttsearch.config import GeneratorConfig, VerifierConfig
from ttsearch.engines.prm import PRMScorer
from ttsearch.engines.transformers_generator import TransformersGenerator
from ttsearch.search.requests import Generate, Prompt, Score, chat_prompt_ids

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: torch.cuda.is_available() is False"),
]

T = TypeVar("T")
DELIMITER = STEP[0]
WORDS = (" x", " =", " 5", ".")


def on_cpu(build: Callable[[], T]) -> T:
    """Build an engine as it is built on a machine without a GPU: both engines pick CUDA when torch reports one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        return build()


def build_tiny_generator(out_dir: Path) -> Path:
    """A random-init Llama (2 layers, hidden size 64) with a byte-level BPE whose step delimiter "\\n\\n" is one token,
    as in Llama 3's and Qwen2's tokenizers. Its weights lean toward a few words, the delimiter and EOS: every token
    embedding has a constant first component, which the final norm passes on as a constant, so the output layer's
    first column acts as a bias. Samples then end every way a sample can (delimiter, EOS, the token cap) within a
    few dozen tokens, and which token comes next still depends on the context (the other 63 dimensions)."""
    from tokenizers import AddedToken
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(out_dir, "qwen_prm")  # Qwen's chat template, EOS "<|im_end|>"
    tokenizer.add_tokens([AddedToken(DELIMITER, normalized=False)])
    tokenizer.save_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    bias = {tokenizer.encode(word, add_special_tokens=False)[0]: 8.0 for word in WORDS}
    bias |= {tokenizer.convert_tokens_to_ids(DELIMITER): 7.0, tokenizer.eos_token_id: 3.5}
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight.normal_(0.0, 0.2)
        model.lm_head.weight[:, 0] = 0.0
        for token, value in bias.items():
            model.lm_head.weight[token, 0] = value
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_generator(tmp_path_factory.mktemp("tiny_generator"))


def generator_config(model: Path) -> GeneratorConfig:
    return GeneratorConfig(model=str(model), backend="transformers", dtype="float32", max_model_len=1024)


@pytest.fixture(scope="module")
def engine(generator_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    return TransformersGenerator(generator_config(generator_dir), str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def cpu_engine(generator_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    cache = str(tmp_path_factory.mktemp("cache"))
    return on_cpu(lambda: TransformersGenerator(generator_config(generator_dir), cache))


def test_the_generator_runs_on_cuda(engine: TransformersGenerator) -> None:
    assert engine.device.type == "cuda"
    assert {p.device.type for p in engine.model.parameters()} == {"cuda"}


def test_samples_stop_at_steps_and_a_batch_replays_from_its_seeds(engine: TransformersGenerator) -> None:
    batch = [ask(n=4, seed=1), ask(n=4, seed=2), ask(n=4, max_tokens=6, stop=(), seed=3), ask(n=4, seed=4)]
    first = run_batch(engine, batch)
    endings = []
    for request, result in zip(batch, first, strict=True):
        assert len(result.completions) == request.n
        for completion in result.completions:
            assert 0 < completion.num_tokens <= request.max_tokens and DELIMITER not in completion.text
            ending = (completion.finish_reason, completion.stop_reason)
            assert ending in ENDINGS and (ending != ("stop", DELIMITER) or request.stop == STEP)
            assert ending != ("length", None) or completion.num_tokens == request.max_tokens
            endings.append(ending)
    assert ("stop", DELIMITER) in endings, "no sample ended at the step delimiter"
    assert run_batch(engine, batch) == first, "same batch, same seeds: same samples"
    assert run_batch(engine, [ask(n=4, seed=7), *batch[1:]])[0] != first[0], "another seed samples differently"


def test_usage_counts_the_padded_prompts_and_the_generated_tokens(engine: TransformersGenerator) -> None:
    prompt_length = len(chat_prompt_ids(engine.tokenizer, QUESTION_PROMPT))
    before = (engine.totals.requests, engine.totals.prompt_tokens, engine.totals.generated_tokens)
    batch = [ask(n=3, seed=5), ask(n=3, temperature=0, seed=None)]  # one call each: their sampling settings differ
    sampled, greedy = run_batch(engine, batch)
    assert sampled.prompt_tokens == 3 * prompt_length and sampled.cached_prompt_tokens == 0
    assert greedy.prompt_tokens == prompt_length, "greedy: one row decoded for n copies"
    assert len(set(greedy.completions)) == 1 and len(greedy.completions) == 3
    generated = sum(c.num_tokens for c in sampled.completions) + greedy.completions[0].num_tokens
    after = (engine.totals.requests, engine.totals.prompt_tokens, engine.totals.generated_tokens)
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 4 * prompt_length, generated]


def test_greedy_decoding_on_cuda_equals_cpu(engine: TransformersGenerator, cpu_engine: TransformersGenerator) -> None:
    assert cpu_engine.device.type == "cpu"
    batch = [
        ask(n=2, temperature=0, max_tokens=24, seed=None),
        ask(temperature=0, max_tokens=7, stop=()),
        Generate(Prompt("", "Say hi."), n=1, temperature=0, max_tokens=24, stop=STEP),
        Generate(Prompt("", "What is 2+3? Answer with one number."), n=1, temperature=0, max_tokens=24, stop=STEP),
    ]
    assert run_batch(engine, batch) == run_batch(cpu_engine, batch)
    # The logits themselves, wherever the argmax is: float32 on both devices, equal up to rounding.
    ids = torch.tensor([chat_prompt_ids(engine.tokenizer, QUESTION_PROMPT)])
    with torch.inference_mode():
        on_gpu = engine.model(input_ids=ids.to(engine.device)).logits.cpu()
        on_host = cpu_engine.model(input_ids=ids).logits
    torch.testing.assert_close(on_gpu, on_host, atol=1e-4, rtol=1e-4)


PRM_KINDS = (*VERIFIER_KINDS, "qwen_prm_remote_code")


@pytest.fixture(scope="module")
def prm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint per PRM family: Qwen2 with a 2-class token head and Mistral (math-shepherd) as transformers
    classes, and Qwen2.5-Math-PRM's own layout loaded through its remote code."""
    dirs = {kind: tmp_path_factory.mktemp(kind) for kind in PRM_KINDS}
    for kind in VERIFIER_KINDS:
        build_checkpoint(dirs[kind], kind)
    build_qwen_prm_checkpoint(dirs["qwen_prm_remote_code"])
    return dirs


def load_prm(kind: str, prm_dirs: dict[str, Path], cache: Path) -> PRMScorer:
    family = "qwen_prm" if kind == "qwen_prm_remote_code" else kind
    return PRMScorer.load(VerifierConfig(kind=family, model=str(prm_dirs[kind]), dtype="float32"), str(cache))


@pytest.mark.parametrize("kind", PRM_KINDS)
def test_prm_scores_on_cuda_equal_cpu(kind: str, prm_dirs: dict[str, Path], tmp_path: Path) -> None:
    scorer = load_prm(kind, prm_dirs, tmp_path)
    assert scorer.device.type == "cuda" and {p.device.type for p in scorer.model.parameters()} == {"cuda"}
    batch = [*ITEMS, Score("Empty?", ())]
    results = scorer.score_batch(batch)
    for item, result in zip(batch, results, strict=True):
        assert len(result.step_scores) == len(item.steps) and all(0.0 <= s <= 1.0 for s in result.step_scores)
        assert result.tokens > 0 or not item.steps
    # Random init must still tell steps apart, or the comparison would prove nothing.
    assert len({round(s, 4) for r in results for s in r.step_scores}) > 3
    reference = on_cpu(lambda: load_prm(kind, prm_dirs, tmp_path))
    assert reference.device.type == "cpu"
    for result, expected in zip(results, reference.score_batch(batch), strict=True):
        assert result.tokens == expected.tokens
        assert_scores_close(result.step_scores, expected.step_scores, atol=1e-4)
    assert_incremental_matches_full(scorer, ITEMS[2:4])
