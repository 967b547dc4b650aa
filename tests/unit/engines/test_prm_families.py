"""The `rlhflow` and `skywork` PRM families, and incremental scoring for every family.

Like tests/unit/engines/test_verifier.py: tiny random-init models of the real architectures (a Llama causal LM with a
Llama-3-style chat template; Qwen2 with Skywork's value head, saved in the reference's weight layout),
built and saved here and loaded through `PRMScorer.load`, each score checked against a by-hand
computation in the reference implementation's own style.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from tests.fixtures import ITEMS, assert_incremental_matches_full, assert_scores_close, build_checkpoint, tiny_sizes
from ttsearch.config import VerifierConfig, model_free_names, verifier_names
from ttsearch.engines.prm import PRMScorer, adapter_class
from ttsearch.search.requests import Score

DATA = Path(__file__).resolve().parents[3] / "data" / "math500.jsonl"
# The pre-tokenizer split of Llama 3's and Qwen2's tokenizer.json ("\n\n" stays one piece, "+" another).
SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Llama 3.1's template, cut to what this chat uses: BOS, a system header with the default date, then
# each message as header + trimmed content + <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
TRICKY = Score("Is $1+1=2$? Answer + or -.", ("+", "Yes: $1 + 1 = 2$, so +.", "-"))  # the tag text in the steps


def build_tokenizer(out_dir: Path, kind: str) -> PreTrainedTokenizerFast:
    """A small byte-level BPE with the family's real pre-tokenizer split and special tokens, trained on
    MATH problems and a few chats (so that "\\n\\n" merges, as in Llama 3). Llama 3's tokenizer adds a BOS
    itself; Qwen2's (Skywork's) adds nothing, its BOS is written into the text."""
    problems = [json.loads(line)["problem"] for line in DATA.read_text().splitlines()[:200]]
    tok = Tokenizer(models.BPE())
    split = pre_tokenizers.Split(Regex(SPLIT), behavior="isolated")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    tok.decoder = decoders.ByteLevel()
    if kind == "rlhflow":
        specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        texts = problems + [f"user\n\n{p}\n\nassistant\n\n+\n\n-" for p in problems[:50]]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        texts = problems + [f"{p}\n" for p in problems[:50]]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    if kind == "rlhflow":
        bos = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[(specials[0], 0)])
        tok.post_processor = bos
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|eot_id|>"
        )
        wrapped.chat_template = LLAMA3_TEMPLATE
    else:
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
        )
    wrapped.save_pretrained(out_dir)
    return wrapped


def build_family_checkpoint(out_dir: Path, kind: str, with_value_head: bool = True) -> None:
    """rlhflow: a Llama causal LM (Llama3.1-8B-PRM-*-Data). skywork: what Skywork's `PRM_MODEL` saves, a
    Qwen2 causal LM's weights plus `v_head.summary.{weight,bias}` in one file, declared `Qwen2ForPrmModel`."""
    tokenizer = build_tokenizer(out_dir, kind)
    torch.manual_seed(0)
    if kind == "rlhflow":
        LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **tiny_sizes(len(tokenizer)))).save_pretrained(out_dir)
        return
    config = Qwen2Config(tie_word_embeddings=False, **tiny_sizes(len(tokenizer)))
    weights = {name: tensor.contiguous() for name, tensor in Qwen2ForCausalLM(config).state_dict().items()}
    if with_value_head:
        weights["v_head.summary.weight"] = torch.randn(1, config.hidden_size)
        weights["v_head.summary.bias"] = torch.randn(1)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = ["Qwen2ForPrmModel"]
    config.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for kind in ("rlhflow", "skywork", "qwen_prm", "math_shepherd"):
        dirs[kind] = tmp_path_factory.mktemp(kind)
        (build_family_checkpoint if kind in ("rlhflow", "skywork") else build_checkpoint)(dirs[kind], kind)
    return dirs


def load(kind: str, family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, **cfg: str) -> PRMScorer:
    config = VerifierConfig(kind=kind, model=str(family_dirs[kind]), **{"dtype": "float32", **cfg})
    return PRMScorer.load(config, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def rlhflow(family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> PRMScorer:
    return load("rlhflow", family_dirs, tmp_path_factory)


@pytest.fixture(scope="module")
def skywork(family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> PRMScorer:
    return load("skywork", family_dirs, tmp_path_factory)


# ---- rlhflow ----


def rlhflow_conversation(item: Score, upto: int) -> list[dict[str, str]]:
    """math-rm/prm_evaluate.py's conversation for the first `upto` steps."""
    conversation = []
    for k, step in enumerate(s.strip() for s in item.steps[:upto]):
        conversation.append({"content": item.question + " " + step if k == 0 else step, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
    return conversation


def rlhflow_reference(scorer: PRMScorer, item: Score) -> list[float]:
    """The reference loop: one forward pass per step over the chat so far, logits at -3 over the ids of
    "+" and "-" (`tokenizer.encode(c)[-1]`), softmax, index 0."""
    tokenizer, model = scorer.adapter.tokenizer, scorer.model
    candidates = [tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]]
    scores = []
    for upto in range(1, len(item.steps) + 1):
        ids = tokenizer.apply_chat_template(rlhflow_conversation(item, upto), return_dict=False)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[:, -3, candidates]
        scores.append(logits.softmax(dim=-1)[0, 0].item())
    return scores


def test_rlhflow_layout_is_the_reference_chat(rlhflow: PRMScorer) -> None:
    tokenizer, adapter = rlhflow.adapter.tokenizer, rlhflow.adapter
    plus = tokenizer.encode("+", add_special_tokens=False)
    assert (adapter.good_ids, adapter.bad_ids) == (plus, tokenizer.encode("-", add_special_tokens=False))
    assert adapter.good_ids == [tokenizer.encode("+")[-1]]  # the reference's candidate: no " +" variant
    newline2 = tokenizer.convert_tokens_to_ids("ĊĊ")
    for index, item in enumerate([*ITEMS, TRICKY]):
        conversation = rlhflow_conversation(item, len(item.steps))
        rendered = adapter.render(item)
        assert rendered.text == tokenizer.apply_chat_template(conversation, tokenize=False)
        encoded = adapter.encode(index, item, max_input_tokens=4096)
        ids = tokenizer.apply_chat_template(conversation, return_dict=False)
        assert list(encoded.input_ids) == ids  # one BOS: the template's, none added on top
        assert ids.count(tokenizer.bos_token_id) == 1
        # Each position is the reference's -3 of the chat cut after that step's "+<|eot_id|>".
        cut_lengths = [
            len(tokenizer.apply_chat_template(rlhflow_conversation(item, j + 1), return_dict=False))
            for j in range(len(item.steps))
        ]
        assert list(encoded.positions) == [n - 3 for n in cut_lengths]
        assert [ids[p] for p in encoded.positions] == [newline2] * len(item.steps)
        assert [ids[p + 1] for p in encoded.positions] == plus * len(item.steps)
        assert rendered.text[: rendered.prompt_chars].endswith(item.question + " ")


def test_rlhflow_matches_reference_computation(rlhflow: PRMScorer) -> None:
    results = rlhflow.score_batch([*ITEMS, TRICKY])
    for item, result in zip([*ITEMS, TRICKY], results, strict=True):
        assert_scores_close(result.step_scores, rlhflow_reference(rlhflow, item))
    assert len({round(s, 4) for r in results for s in r.step_scores}) > 3  # random init still tells steps apart


def test_rlhflow_ids_extend_by_prefix(rlhflow: PRMScorer) -> None:
    """The vLLM scorer reads step t from a prompt cut after position t and relies on the next call's
    prompt extending it: the ids for steps 1..t, up to position t, begin the ids for steps 1..t+1."""
    for item in [*ITEMS, TRICKY]:
        for t in range(1, len(item.steps)):
            shorter = rlhflow.adapter.encode(0, replace(item, steps=item.steps[:t]), max_input_tokens=4096)
            longer = rlhflow.adapter.encode(0, replace(item, steps=item.steps[: t + 1]), max_input_tokens=4096)
            end = shorter.positions[-1] + 1
            assert longer.input_ids[:end] == shorter.input_ids[:end]
            assert longer.positions[:t] == shorter.positions


def test_rlhflow_truncation_keeps_reading_before_plus(rlhflow: PRMScorer) -> None:
    item = Score("Find $x$ if $3x - 4 = 11$.", tuple(f"Step {i}: we keep going with $x = {i}$." for i in range(12)))
    full = rlhflow.adapter.encode(0, item, max_input_tokens=4096)
    cut = rlhflow.adapter.encode(0, item, max_input_tokens=len(full.input_ids) // 2)
    assert cut.num_cut > 0 and cut.num_cut + len(cut.positions) == len(item.steps)
    assert [cut.input_ids[p + 1] for p in cut.positions] == rlhflow.adapter.good_ids * len(cut.positions)


# ---- skywork ----


def skywork_prepare_input(tokenizer: PreTrainedTokenizerFast, item: Score) -> tuple[list[int], list[int]]:
    """io_utils.prepare_input with step_token="\\n" on the stripped steps joined by "\\n"."""
    prompt_ids = tokenizer.encode(tokenizer.bos_token + item.question + "\n")
    step_token_id = tokenizer.encode("\n")[-1]
    input_ids, reward_flags = list(prompt_ids), [0] * len(prompt_ids)
    for step in (s.strip() for s in item.steps):
        step_ids = (tokenizer.encode(step) if step != "" else []) + [step_token_id]
        input_ids += step_ids
        reward_flags += [0] * (len(step_ids) - 1) + [1]
    return input_ids, reward_flags


def skywork_reference(checkpoint: Path, tokenizer: PreTrainedTokenizerFast, item: Score) -> list[float]:
    """PRM_MODEL's route: the causal LM's last hidden state, then the value head's weights read from the
    checkpoint file, upcast to float32, sigmoid at the flagged tokens (derive_step_rewards)."""
    from safetensors.torch import load_file

    model = Qwen2ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    weights = load_file(str(checkpoint / "model.safetensors"))
    input_ids, flags = skywork_prepare_input(tokenizer, item)
    with torch.no_grad():
        hidden = model(torch.tensor([input_ids]), output_hidden_states=True).hidden_states[-1][0].float()
    values = hidden @ weights["v_head.summary.weight"].float().T + weights["v_head.summary.bias"].float()
    rewards = torch.sigmoid(values[:, 0])
    return [rewards[i].item() for i, flag in enumerate(flags) if flag == 1]


def test_skywork_layout_is_prepare_input(skywork: PRMScorer) -> None:
    tokenizer = skywork.adapter.tokenizer
    assert tokenizer.encode("x" + tokenizer.bos_token)[-1] == tokenizer.bos_token_id  # BOS is written, not added
    for index, item in enumerate([*ITEMS, TRICKY, Score("Blank step?", ("First.", "   ", "Last."))]):
        input_ids, flags = skywork_prepare_input(tokenizer, item)
        encoded = skywork.adapter.encode(index, item, max_input_tokens=4096)
        assert list(encoded.input_ids) == input_ids and input_ids[0] == tokenizer.bos_token_id
        assert list(encoded.positions) == [i for i, flag in enumerate(flags) if flag == 1]
        assert {input_ids[p] for p in encoded.positions} == {tokenizer.encode("\n")[-1]}


def test_skywork_matches_reference_computation(skywork: PRMScorer, family_dirs: dict[str, Path]) -> None:
    assert type(skywork.model).__name__ == "Qwen2ForPrmModel" and skywork.adapter.good_ids == []
    results = skywork.score_batch([*ITEMS, TRICKY])
    for item, result in zip([*ITEMS, TRICKY], results, strict=True):
        expected = skywork_reference(family_dirs["skywork"], skywork.adapter.tokenizer, item)
        assert_scores_close(result.step_scores, expected)
    assert len({round(s, 4) for r in results for s in r.step_scores}) > 3


def test_skywork_value_head_stays_float32(
    family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    scorer = load("skywork", family_dirs, tmp_path_factory, dtype="bfloat16")
    assert scorer.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert scorer.model.v_head.summary.weight.dtype == torch.float32  # as PRM_MODEL keeps it
    reference = skywork_reference(family_dirs["skywork"], scorer.adapter.tokenizer, ITEMS[2])
    assert_scores_close(scorer.score_batch([ITEMS[2]])[0].step_scores, reference, atol=0.05)


def test_skywork_checkpoint_without_value_head_is_refused(tmp_path: Path) -> None:
    build_family_checkpoint(tmp_path, "skywork", with_value_head=False)
    with pytest.raises(ValueError, match="v_head.summary.bias"):
        PRMScorer.load(VerifierConfig(kind="skywork", model=str(tmp_path)), cache_dir=str(tmp_path / "cache"))


def test_only_value_head_families_lack_candidate_tokens() -> None:
    """vLLM reads next-token distributions: every family but a value head's names its good/bad tokens."""
    value_heads = {
        kind for kind in verifier_names() if kind not in model_free_names() and adapter_class(kind).value_head
    }
    assert value_heads == {"skywork"}


# ---- incremental == full, every family ----


@pytest.mark.parametrize("kind", ["qwen_prm", "math_shepherd", "rlhflow", "skywork"])
def test_incremental_scoring_matches_full(
    kind: str, family_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert_incremental_matches_full(load(kind, family_dirs, tmp_path_factory), [*ITEMS, TRICKY])


@pytest.mark.skipif(not hasattr(VerifierConfig(), "backend"), reason="no verifier.backend key yet")
def test_skywork_is_refused_on_vllm() -> None:
    """vLLM reads next-token distributions and cannot host Skywork's value head."""
    from ttsearch.config import ConfigError, load_config

    for backend in ("vllm", "generator"):
        with pytest.raises(ConfigError, match="verifier.backend"):
            load_config(None, ["verifier.kind=skywork", f"verifier.backend={backend}"])
    assert load_config(None, ["verifier.kind=skywork", "verifier.backend=transformers"]).verifier.kind == "skywork"
    assert load_config(None, ["verifier.kind=rlhflow", "verifier.backend=vllm"]).verifier.kind == "rlhflow"
