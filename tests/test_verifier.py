"""Verifier tests: tiny random-init PRMs of the real architectures, built and saved locally.

The tiny checkpoints go through the same loading path as real ones (`PRMScorer.load` on a directory),
and every score is checked against a by-hand computation in the reference implementations' own style
(find the tag by id, softmax the logits there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForTokenClassification,
)

from ttsearch.config import EMBEDDED_MODEL, VerifierConfig
from ttsearch.engines.prm import PRMScorer, make_adapter
from ttsearch.search.requests import Score

DATA = Path(__file__).resolve().parents[1] / "data" / "math500.jsonl"
QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
KINDS = ("qwen_prm", "math_shepherd")

ITEMS = [
    Score("What is $2+3$?", ("We add the numbers: $2+3=5$.", "The answer is $\\boxed{5}$.")),
    Score("Compute $7 \\cdot 6$.", ("$7 \\cdot 6 = 42$",)),
    Score(
        "Find $x$ if $3x - 4 = 11$.",
        ("Add 4 to both sides: $3x = 15$.", "Divide by 3: $x = 5$.", "Check: $3 \\cdot 5 - 4 = 11$.", "So $x=5$."),
    ),
    Score("How many primes are below 10?", ("They are 2, 3, 5 and 7.", "  So there are 4.\n\n")),
]


def build_tokenizer(out_dir: Path, kind: str) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained offline on MATH problems, with each format's special tokens:
    Qwen's chat tokens and "<extra_0>"; for Math-Shepherd a BOS (as Mistral adds) and "ки" as one token."""
    texts = [json.loads(line)["problem"] for line in DATA.read_text().splitlines()[:200]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    if kind == "math_shepherd":
        tok.add_tokens([AddedToken("ки")])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    if kind == "qwen_prm":
        wrapped.chat_template = QWEN_TEMPLATE
    wrapped.save_pretrained(out_dir)
    return wrapped


def build_checkpoint(out_dir: Path, kind: str) -> None:
    """Save a tiny random-init model of the real family: Qwen2 with a 2-class token head (the shape of
    Qwen2ForProcessRewardModel's output) or a Mistral causal LM (math-shepherd-mistral-7b-prm)."""
    tokenizer = build_tokenizer(out_dir, kind)
    sizes = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    if kind == "qwen_prm":
        model = Qwen2ForTokenClassification(Qwen2Config(num_labels=2, **sizes))
    else:
        model = MistralForCausalLM(MistralConfig(tie_word_embeddings=False, **sizes))
    model.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for kind in KINDS:
        dirs[kind] = tmp_path_factory.mktemp(kind)
        build_checkpoint(dirs[kind], kind)
    return dirs


@pytest.fixture(scope="module", params=KINDS)
def scorer(
    request: pytest.FixtureRequest, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> PRMScorer:
    cfg = VerifierConfig(kind=request.param, model=str(checkpoints[request.param]), dtype="float32")
    return PRMScorer.load(cfg, cache_dir=str(tmp_path_factory.mktemp("cache")))


def assert_scores_close(actual: Sequence[float], expected: Sequence[float], atol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), atol=atol, rtol=0)


def with_config(scorer: PRMScorer, **changes: int) -> PRMScorer:
    """Another scorer over the same (model, tokenizer) pair: the path for an already-built model."""
    return PRMScorer(replace(scorer.cfg, **changes), scorer.model, scorer.adapter.tokenizer)


def reference_scores(scorer: PRMScorer, item: Score) -> list[float]:
    """The model card recipe, written out independently: build the text by hand, tokenize it, find the
    tag tokens by id, softmax the logits there."""
    tokenizer, model, adapter = scorer.adapter.tokenizer, scorer.model, scorer.adapter
    steps = [s.strip() for s in item.steps]
    if scorer.cfg.kind == "qwen_prm":
        messages = [
            {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": item.question},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        tag_id = tokenizer.convert_tokens_to_ids("<extra_0>")
    else:
        text = f"{item.question} " + "\n".join(f"{step} ки" for step in steps)
        tag_id = tokenizer.convert_tokens_to_ids("ки")
    input_ids = tokenizer.encode(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, input_ids[0] == tag_id]
    probs = torch.softmax(logits[:, adapter.good_ids + adapter.bad_ids].float(), dim=-1)
    return probs[:, : len(adapter.good_ids)].sum(-1).tolist()


def test_model_free_and_unknown_kinds_are_rejected() -> None:
    for kind in ("oracle", "majority"):
        with pytest.raises(ValueError, match="needs no model"):
            make_adapter(kind, tokenizer=None)
    with pytest.raises(ValueError, match="unknown verifier kind"):
        make_adapter("bogus", tokenizer=None)


def test_one_score_per_step_in_unit_interval(scorer: PRMScorer) -> None:
    results = scorer.score_batch([*ITEMS, Score("Empty?", ())])
    for item, result in zip(ITEMS, results, strict=False):
        assert len(result.step_scores) == len(item.steps)
        assert all(0.0 <= s <= 1.0 for s in result.step_scores)
        assert result.tokens > 0
    assert results[-1].step_scores == () and results[-1].tokens == 0
    # Random init must still tell steps apart, or the comparisons below would prove nothing.
    assert len({round(s, 4) for r in results for s in r.step_scores}) > 3


def test_batch_invariance(scorer: PRMScorer) -> None:
    alone = [scorer.score_batch([item])[0] for item in ITEMS]
    mixed = scorer.score_batch(ITEMS[::-1])[::-1]
    split = with_config(scorer, max_batch_tokens=2 * max(r.tokens for r in alone)).score_batch(ITEMS)  # several passes
    for a, m, s in zip(alone, mixed, split, strict=True):
        assert a.tokens == m.tokens == s.tokens
        assert_scores_close(m.step_scores, a.step_scores)
        assert_scores_close(s.step_scores, a.step_scores)


def test_tag_positions_are_the_tag_tokens(scorer: PRMScorer) -> None:
    tag_token = "<extra_0>" if scorer.cfg.kind == "qwen_prm" else "ки"
    tag_id = scorer.adapter.tokenizer.convert_tokens_to_ids(tag_token)
    # A question that mentions the tag must not add a score.
    tricky = Score(f"Why does {tag_token} appear here?", ("First step.", "Second step."))
    for index, item in enumerate([*ITEMS, tricky]):
        encoded = scorer.adapter.encode(index, item, max_input_tokens=4096)
        assert len(encoded.positions) == len(item.steps) and encoded.num_cut == 0
        assert [encoded.input_ids[p] for p in encoded.positions] == [tag_id] * len(item.steps)


def test_matches_reference_computation(scorer: PRMScorer) -> None:
    for item, result in zip(ITEMS, scorer.score_batch(ITEMS), strict=True):
        assert_scores_close(result.step_scores, reference_scores(scorer, item))


def test_candidate_tokens(scorer: PRMScorer) -> None:
    tokenizer = scorer.adapter.tokenizer
    if scorer.cfg.kind == "qwen_prm":  # the 2-class head: index 1 = good
        assert (scorer.adapter.good_ids, scorer.adapter.bad_ids) == ([1], [0])
    else:
        assert scorer.adapter.good_ids == [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("+", " +")]
        assert scorer.adapter.bad_ids == [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("-", " -")]


def test_truncation_keeps_prompt_and_tail(scorer: PRMScorer) -> None:
    item = Score("Find $x$ if $3x - 4 = 11$.", tuple(f"Step {i}: we keep going with $x = {i}$." for i in range(12)))
    full = scorer.adapter.encode(0, item, max_input_tokens=4096)
    budget = len(full.input_ids) // 2
    cut = scorer.adapter.encode(0, item, max_input_tokens=budget)
    assert len(cut.input_ids) == budget and cut.num_cut > 0
    assert cut.num_cut + len(cut.positions) == len(item.steps)
    assert cut.input_ids[:5] == full.input_ids[:5]  # the prompt survives
    assert cut.input_ids[-5:] == full.input_ids[-5:]
    result = with_config(scorer, max_input_tokens=budget).score_batch([item])[0]
    assert result.tokens == budget and len(result.step_scores) == len(item.steps)
    assert len(set(result.step_scores[: cut.num_cut + 1])) == 1  # cut steps inherit the first visible score


@pytest.fixture(scope="module")
def judge(cache_dir: str) -> PRMScorer:
    return PRMScorer.load(VerifierConfig(kind="lm_judge", model=EMBEDDED_MODEL), cache_dir=cache_dir)


@pytest.mark.integration
def test_lm_judge_on_embedded_model(judge: PRMScorer) -> None:
    tokenizer = judge.adapter.tokenizer
    assert {tokenizer.decode([i]) for i in judge.adapter.good_ids} == {"Yes", " Yes"}
    assert {tokenizer.decode([i]) for i in judge.adapter.bad_ids} == {"No", " No"}
    results = judge.score_batch(ITEMS)
    for item, result in zip(ITEMS, results, strict=True):
        assert len(result.step_scores) == len(item.steps)
        assert all(0.0 <= s <= 1.0 for s in result.step_scores)
    alone = judge.score_batch([ITEMS[2]])[0]
    assert_scores_close(alone.step_scores, results[2].step_scores, atol=1e-4)


@pytest.mark.integration
def test_replica_streams_every_item(ray_session: Any, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from ttsearch.actors.verifier import create_verifier_replicas

    model = str(checkpoints["math_shepherd"])
    cfg = VerifierConfig(  # several passes
        kind="math_shepherd", model=model, backend="transformers", num_cpus=1, max_batch_tokens=256
    )
    (replica,) = create_verifier_replicas(cfg, cache_dir=str(tmp_path))
    batch = [*ITEMS, Score("Empty?", ())]
    streamed = [ray_session.get(ref) for ref in replica.score.remote(batch)]
    assert sorted(index for index, _ in streamed) == list(range(len(batch)))
    expected = PRMScorer.load(cfg, cache_dir=str(tmp_path)).score_batch(batch)
    for index, result in streamed:
        assert result.tokens == expected[index].tokens
        assert_scores_close(result.step_scores, expected[index].step_scores)
    stats = ray_session.get(replica.score_stats.remote())
    assert stats["calls"] == 1 and stats["items"] == len(batch)
    assert stats["tokens"] == sum(r.tokens for r in expected) and stats["num_parameters"] > 0
    ray_session.kill(replica)
