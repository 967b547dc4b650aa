"""Verifier tests: tiny random-init PRMs of the real architectures, built and saved locally.

The tiny checkpoints (tests/fixtures.py: `build_checkpoint`) go through the same loading path as real ones
(`PRMScorer.load` on a directory), and every score is checked against a by-hand computation in the reference
implementations' own style (find the tag by id, softmax the logits there).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.fixtures import ITEMS, assert_scores_close, verifier_checkpoints
from tests.fixtures import VERIFIER_KINDS as KINDS
from ttsearch.config import VerifierConfig
from ttsearch.engines.prm import PRMScorer, make_adapter
from ttsearch.search.requests import Score


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return verifier_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module", params=KINDS)
def scorer(
    request: pytest.FixtureRequest, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> PRMScorer:
    cfg = VerifierConfig(kind=request.param, model=str(checkpoints[request.param]), dtype="float32")
    return PRMScorer.load(cfg, cache_dir=str(tmp_path_factory.mktemp("cache")))


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
