"""Process reward models (PRMs) that score every step of a (partial) solution: the family adapters and the
transformers scorer (hosted by `ttsearch.actors.verifier`).

One hosting class (`PRMScorer`) runs any PRM; a small *adapter* per scoring format knows how to lay out
(question, steps) with a tag after each step and which output columns mean "good" vs "bad". Every
adapter reads all step scores of a solution in ONE forward pass: the tags stay in the context (as in
Math-Shepherd), so a beam's partial solutions cost one pass each, not one per step.

The token-column formats reduce to the same read-out: at the token that ends a step's tag,
score = sigmoid(logsumexp(logits[good]) - logsumexp(logits[bad])), which is p(good) after a softmax
restricted to the good+bad columns (Qwen's 2-class head, the "+"/"-" of Math-Shepherd and RLHFlow, the
judge's Yes/No). Skywork's PRM has a scalar value head instead: score = sigmoid(value) at the step's end.
"""

from __future__ import annotations

import contextlib
import functools
import re
from abc import ABC
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ttsearch.config import VerifierConfig, verifier_family, verifier_names
from ttsearch.config.base import load_object
from ttsearch.search.requests import RequestRejected, Score, ScoreResult

if TYPE_CHECKING:  # torch loads only where a model runs: drivers that merely create replicas stay light
    import torch


@dataclass(frozen=True)
class Rendered:
    """A model input as text, with the character index of the last character of each step's tag."""

    text: str
    prompt_chars: int  # text[:prompt_chars] is the instruction/question part, kept when truncating
    tag_ends: tuple[int, ...]


@dataclass(frozen=True)
class Encoded:
    """One solution as token ids, ready for a forward pass.

    Truncation drops the start of the solution, so the steps whose tags were cut are always the first
    `num_cut` ones; `positions` holds the tag token positions of the remaining steps, in order.
    """

    index: int  # position in the caller's batch
    input_ids: tuple[int, ...]
    positions: tuple[int, ...]
    num_cut: int
    scored_steps: int = 0  # the caller holds the scores of this many leading steps

    def new_scores(self, visible: Sequence[float]) -> tuple[float, ...]:
        """The scores the caller asked for, from the scores read at the visible (untruncated) tags.

        A step whose tag was truncated away inherits the first visible step's score: a step from which
        the solution can still succeed implies its predecessors could too, so this is a lower bound under
        the PRM's own semantics, and it leaves "last" and "min" aggregation unchanged.
        """
        return tuple([visible[0]] * self.num_cut + list(visible))[self.scored_steps :]


class StepAdapter(ABC):
    """How one PRM family lays out a solution and where/how it reads step scores.

    Subclasses set the tag and separator, the text around the solution (`frame`) and the output
    columns that mean a good or a bad step; `render`, `encode` and `step_probs` are shared. A family
    whose layout is not "text, tag, text, tag" overrides `render` (a chat of turns) or `layout` (token
    ids put together piece by piece) instead.
    """

    tag: str
    separator: str
    trust_remote_code: ClassVar[bool] = False  # the Qwen PRM's head ships as remote code
    add_special_tokens: ClassVar[bool] = True
    """Whether the tokenizer adds its own special tokens (a BOS) to the rendered text; False where a chat
    template already writes them, as `apply_chat_template(tokenize=True)` does."""
    value_head: ClassVar[bool] = False
    """True: the model outputs one scalar per token and a step's score is sigmoid(value) at its position;
    `good_ids`/`bad_ids` are then empty, and vLLM (which reads next-token distributions) cannot host it."""
    model_class: ClassVar[Callable[[], type] | None] = None
    """A factory of the model class this module defines for the family (none exists in transformers);
    None: the class the checkpoint declares."""
    required_weights: ClassVar[tuple[str, ...]] = ()
    """Checkpoint weights whose absence must fail the load instead of leaving a random head."""

    def __init__(self, tokenizer: Any, good_ids: Sequence[int], bad_ids: Sequence[int]) -> None:
        if self.value_head:
            if good_ids or bad_ids:
                raise ValueError(f"{type(self).__name__}: a value head has no candidate ids, got {good_ids} {bad_ids}")
        elif not good_ids or not bad_ids or set(good_ids) & set(bad_ids):
            raise ValueError(f"{type(self).__name__}: bad candidate ids good={good_ids} bad={bad_ids}")
        self.tokenizer = tokenizer
        self.good_ids = list(good_ids)
        self.bad_ids = list(bad_ids)

    def frame(self, score: Score) -> tuple[str, str]:
        """Text before and after the solution; needed by the shared `render` only."""
        raise NotImplementedError(f"{type(self).__name__} renders its own layout")

    def render(self, score: Score) -> Rendered:
        # Steps are stripped: the format's separator owns the whitespace around a tag, and stray
        # whitespace would change how the tag itself tokenizes (e.g. "▁ки" vs "ки").
        head, tail = self.frame(score)
        parts, tag_ends, cursor = [head], [], len(head)
        for i, step in enumerate(score.steps):
            piece = (self.separator if i else "") + step.strip() + self.tag
            parts.append(piece)
            cursor += len(piece)
            tag_ends.append(cursor - 1)
        parts.append(tail)
        return Rendered("".join(parts), len(head), tuple(tag_ends))

    def layout(self, score: Score) -> tuple[list[int], list[int], int]:
        """(token ids, the position read for each step, how many leading tokens are the prompt).

        The whole input is tokenized at once (as the reference implementations do) and each step's
        position is the token covering the last character of its tag, found through the character
        offsets rather than by searching for the tag's id, so a question or step that happens to
        contain the tag text cannot add a spurious score.
        """
        rendered = self.render(score)
        enc = self.tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=self.add_special_tokens)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        owner = np.full(len(rendered.text), -1, dtype=np.int64)  # char -> last token covering it
        for token, (start, end) in enumerate(offsets):
            owner[start:end] = token
        positions = [int(owner[c]) for c in rendered.tag_ends]
        if min(positions) < 0:
            raise ValueError(f"{type(self).__name__}: a step tag maps to no token in {rendered.text!r}")
        prompt_tokens = sum(1 for start, _ in offsets if start < rendered.prompt_chars)
        return list(ids), positions, prompt_tokens

    def encode(self, index: int, score: Score, max_input_tokens: int) -> Encoded:
        """Lay out the solution (`layout`); inputs over `max_input_tokens` keep the prompt (up to half
        the budget) and the end of the solution."""
        ids, positions, prompt_tokens = self.layout(score)
        if len(ids) <= max_input_tokens:
            return Encoded(index, tuple(ids), tuple(positions), 0, score.scored_steps)
        keep_head = min(prompt_tokens, max_input_tokens // 2)
        drop = len(ids) - max_input_tokens  # tokens removed right after the kept head
        kept = [p - drop for p in positions if p >= keep_head + drop]
        if not kept:
            raise ValueError(f"max_input_tokens={max_input_tokens} is too small to keep the last step's tag")
        kept_ids = tuple(ids[:keep_head] + ids[keep_head + drop :])
        return Encoded(index, kept_ids, tuple(kept), len(positions) - len(kept), score.scored_steps)

    def step_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """[k, C] model outputs at the read positions (an LM's or a classifier's logits) -> [k]
        probabilities that the step is good."""
        import torch

        logits = outputs.float()
        good = torch.logsumexp(logits[:, self.good_ids], dim=-1)
        bad = torch.logsumexp(logits[:, self.bad_ids], dim=-1)
        return torch.sigmoid(good - bad)


def single_token_ids(tokenizer: Any, words: Sequence[str], spaced: bool = True) -> list[int]:
    """Ids of the one-token spellings of `words`, with and (if `spaced`) without a leading space.

    Which spelling a tokenizer uses after the tag differs (BPE "ĠYes" vs "Yes", SentencePiece "▁+"), so
    every one-token variant counts; multi-token variants are skipped because their first piece ("▁",
    "Y") says nothing about the word. `spaced=False` keeps the bare spelling only, for formats that fix it.
    """
    ids: list[int] = []
    for word in words:
        for variant in (word, " " + word) if spaced else (word,):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
    if not ids:
        raise ValueError(f"none of {list(words)} is a single token for this tokenizer")
    return ids


class LMJudgeAdapter(StepAdapter):
    """Any causal LM as a judge: after each step ask "Is this step correct (Yes/No)?" and compare
    p(Yes) with p(No) for the next token. Works with the embedded SmolLM2-135M-Instruct.

    A chat model judges inside the conversation the solution was written in: the chat template of the
    solution's system prompt and question, as the generator saw it, then the steps, each followed by the
    question. When judge and generator are the same model on the same engine (`verifier.backend:
    generator`), the judge's input for the first step is the generator's own input plus the tag, so the
    prefix cache serves the prompt and the step the generator just decoded. A model without a chat
    template gets a plain-text frame with an instruction instead.
    """

    separator = "\n"
    DEFAULT_INSTRUCTION = (
        "Below is a math problem and a step-by-step solution. After each step, judge whether that step is correct."
    )
    DEFAULT_TAG = "\nIs this step correct (Yes/No)?"

    def __init__(
        self,
        tokenizer: Any,
        instruction: str = DEFAULT_INSTRUCTION,
        tag: str = DEFAULT_TAG,
        yes: Sequence[str] = ("Yes",),
        no: Sequence[str] = ("No",),
    ) -> None:
        super().__init__(tokenizer, single_token_ids(tokenizer, yes), single_token_ids(tokenizer, no))
        self.instruction = instruction
        self.tag = tag
        self.chat = getattr(tokenizer, "chat_template", None) is not None
        self.add_special_tokens = not self.chat  # the template writes its own special tokens

    def frame(self, score: Score) -> tuple[str, str]:
        if not self.chat:
            return f"{self.instruction}\n\nProblem: {score.question}\n\nSolution:\n", ""
        messages = [{"role": "system", "content": score.system}] if score.system else []
        messages.append({"role": "user", "content": score.question})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), ""


class QwenPRMAdapter(StepAdapter):
    """Qwen2.5-Math-PRM: chat template, steps joined by "<extra_0>" plus a trailing one; the model's
    2-class token head gives p(good) as softmax index 1 at each "<extra_0>"."""

    tag = "<extra_0>"
    separator = ""
    trust_remote_code = True
    SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
    _SLOT = "\x00ttsearch-solution\x00"  # placeholder the template renders verbatim, then split on

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, good_ids=[1], bad_ids=[0])

    def frame(self, score: Score) -> tuple[str, str]:
        messages = [
            {"role": "system", "content": self.SYSTEM},
            {"role": "user", "content": score.question},
            {"role": "assistant", "content": self._SLOT},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        head, slot, tail = text.partition(self._SLOT)
        if not slot:
            raise ValueError("the chat template did not render the assistant message verbatim")
        return head, tail


class MathShepherdAdapter(StepAdapter):
    """Math-Shepherd: f"{question} {step_1} ки\\n{step_2} ки..."; at each "ки" compare the LM's next-token
    logits for "+" (good) and "-" (bad)."""

    tag = " ки"
    separator = "\n"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, single_token_ids(tokenizer, ["+"]), single_token_ids(tokenizer, ["-"]))

    def frame(self, score: Score) -> tuple[str, str]:
        return f"{score.question} ", ""


class RLHFlowAdapter(StepAdapter):
    """RLHFlow/Llama3.1-8B-PRM-{Deepseek,Mistral}-Data: a chat in which each step is a user turn (the
    first one is f"{question} {step_1}") answered by an assistant turn "+", rendered by the tokenizer's
    chat template; step j's score is p("+") vs p("-") for the next token at the token just before its
    assistant "+" (Llama 3: the "\\n\\n" that ends the assistant header).

    Reference: RLHFlow/RLHF-Reward-Modeling, math-rm/prm_evaluate.py (`select_sample`, `worker`) and
    math-rm/README.md, https://github.com/RLHFlow/RLHF-Reward-Modeling/tree/main/math-rm. It renders the
    chat up to step j with `apply_chat_template` (the template writes the BOS), reads `logits[:, -3]`
    (the tokens end "\\n\\n", "+", "<|eot_id|>") over the ids of "+" and "-" and softmaxes those two. The
    chat for steps 1..j is a prefix of the chat for 1..j+1 and the model is causal, so one pass over the
    whole chat reads every step at once.
    """

    GOOD, BAD = "+", "-"
    add_special_tokens = False
    _STEP = "\x00ttsearch-step\x00"  # placeholders the template renders verbatim, then replaced
    _REPLY = "\x00ttsearch-reply\x00"

    def __init__(self, tokenizer: Any) -> None:
        good = single_token_ids(tokenizer, [self.GOOD], spaced=False)
        super().__init__(tokenizer, good, single_token_ids(tokenizer, [self.BAD], spaced=False))

    def render(self, score: Score) -> Rendered:
        """The template's text with each step put in its user turn and "+" in each assistant turn; a
        step is read at the character before its "+"."""
        messages, steps = [], score.steps
        for i in range(len(steps)):
            messages.append({"role": "user", "content": f"{score.question} {self._STEP}" if i == 0 else self._STEP})
            messages.append({"role": "assistant", "content": self._REPLY})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        pieces = re.split(f"({re.escape(self._STEP)}|{re.escape(self._REPLY)})", text)
        if pieces[1::2] != [self._STEP, self._REPLY] * len(steps):
            raise ValueError("the chat template did not render each step and reply once, verbatim and in order")
        out, tag_ends, steps_left = [pieces[0]], [], iter(steps)
        cursor = len(pieces[0])  # the prompt: the template's head, the question and a space
        for slot, after in zip(pieces[1::2], pieces[2::2], strict=True):
            if slot == self._STEP:
                piece = next(steps_left).strip()
            else:
                tag_ends.append(cursor - 1)
                piece = self.GOOD
            out += [piece, after]
            cursor += len(piece) + len(after)
        return Rendered("".join(out), len(pieces[0]), tuple(tag_ends))

    def layout(self, score: Score) -> tuple[list[int], list[int], int]:
        ids, positions, prompt_tokens = super().layout(score)
        if any(p + 1 >= len(ids) or ids[p + 1] not in self.good_ids for p in positions):
            raise ValueError(f"{type(self).__name__}: an assistant '{self.GOOD}' is not a token of its own")
        return ids, positions, prompt_tokens


@functools.cache
def qwen2_prm_model_class() -> type:
    """`Qwen2ForPrmModel`, Skywork's PRM as a transformers model: Qwen2Model plus a value head.

    Transformers has no class for it (Skywork loads it through `PRM_MODEL`, a trl-style wrapper, and
    registers `Qwen2ForPrmModel` with vLLM 0.6 as a plugin). Its checkpoint holds `model.*`, maybe
    `lm_head.weight` (unused here) and `v_head.summary.{weight,bias}`. `logits` is [b, s, 1]: the value.
    Built on first use so that importing this module does not import torch.
    """
    import torch
    from transformers import Qwen2Model, Qwen2PreTrainedModel
    from transformers.modeling_outputs import TokenClassifierOutput

    class ValueHead(torch.nn.Module):
        """Linear(hidden, 1) kept in float32 whatever the model's dtype, as the reference's head is
        (`PRM_MODEL` leaves it in float32 and upcasts the hidden states to it)."""

        def __init__(self, hidden_size: int) -> None:
            super().__init__()
            self.summary = torch.nn.Linear(hidden_size, 1)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.summary(hidden.to(self.summary.weight.dtype))

        def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> ValueHead:
            # Follow moves to another device (`model.to(device, dtype)`), but not casts to another dtype.
            for param in self.parameters():
                param.data = param.data.to(fn(param.data).device)
            return self

    class Qwen2ForPrmModel(Qwen2PreTrainedModel):
        _keep_in_fp32_modules_strict = ["v_head"]
        _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.v_head = ValueHead(config.hidden_size)
            self.post_init()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            return TokenClassifierOutput(logits=self.v_head(hidden))

    return Qwen2ForPrmModel


class SkyworkPRMAdapter(StepAdapter):
    """Skywork/Skywork-o1-Open-PRM-Qwen-2.5-{1.5B,7B}: the ids of BOS + question + "\\n", then each step's
    ids followed by the id of "\\n" (each step tokenized on its own); a Linear(hidden, 1) value head on
    the last hidden state gives step j's score as sigmoid(value) at its "\\n".

    Reference: SkyworkAI/skywork-o1-prm-inference, model_utils/io_utils.py (`prepare_input` with
    step_token="\\n", `derive_step_rewards`) and model_utils/prm_model.py (`PRM_MODEL`, `ValueHead`: weights
    `v_head.summary.weight`/`.bias`, applied in float32, then sigmoid under `return_probs=True`),
    https://github.com/SkyworkAI/skywork-o1-prm-inference. The reference splits a response on "\\n"; here
    a step is the caller's step (stripped), whatever newlines it contains.
    """

    STEP_TOKEN = "\n"
    value_head = True
    model_class = staticmethod(qwen2_prm_model_class)
    required_weights = ("v_head.summary.weight", "v_head.summary.bias")

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.bos_token is None:
            raise ValueError("SkyworkPRMAdapter: the tokenizer has no bos_token, which the input starts with")
        super().__init__(tokenizer, good_ids=[], bad_ids=[])
        self.step_token_id = tokenizer.encode(self.STEP_TOKEN)[-1]

    def layout(self, score: Score) -> tuple[list[int], list[int], int]:
        prompt = self.tokenizer.encode(self.tokenizer.bos_token + score.question + "\n")
        ids, positions = list(prompt), []
        for step in score.steps:
            text = step.strip()
            ids += (self.tokenizer.encode(text) if text else []) + [self.step_token_id]
            positions.append(len(ids) - 1)
        return ids, positions, len(prompt)

    def step_probs(self, outputs: torch.Tensor) -> torch.Tensor:
        """[k, 1] values at the step ends -> [k] sigmoid(value)."""
        import torch

        return torch.sigmoid(outputs[:, 0].float())


def adapter_class(kind: str) -> type[StepAdapter]:
    """The adapter class of verifier family `kind`, as its registry entry names it (`ttsearch.config.verifiers`)."""
    if kind not in verifier_names():
        raise ValueError(f"unknown verifier kind '{kind}', expected one of {verifier_names()}")
    family = verifier_family(kind)
    if family.adapter is None:
        raise ValueError(f"verifier '{kind}' needs no model: the scheduler scores it in-process, no replica hosts it")
    found = load_object(family.adapter)
    if not (isinstance(found, type) and issubclass(found, StepAdapter)):
        raise TypeError(f"verifier family '{kind}': adapter '{family.adapter}' is not a StepAdapter subclass")
    return found


def make_adapter(kind: str, tokenizer: Any, **options: Any) -> StepAdapter:
    """Build the adapter for `kind`; `options` go to its constructor (e.g. the judge's texts)."""
    return adapter_class(kind)(tokenizer, **options)


def _model_class(config: Any, adapter: type[StepAdapter]) -> Any:
    """The family's own class if this module defines one (Skywork's value-head PRM); else the architecture
    the checkpoint declares (a causal LM, a token classifier, ...); otherwise AutoModel, which finds a
    remote-code class through the checkpoint's auto_map (how Qwen2.5-Math-PRM ships
    Qwen2ForProcessRewardModel)."""
    import transformers

    if adapter.model_class is not None:
        return adapter.model_class()
    for name in config.architectures or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


@contextlib.contextmanager
def project_only_at(head: torch.nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """Make `head` project only the hidden states at (rows, cols): scoring, and training a PRM (`train-prm`).

    A causal LM's output projection over every position of a micro-batch would be [b, s, vocab]
    (8192 tokens x 49k vocab = 1.6 GB in float32, and as much again for its gradient in training) when we
    need a few positions per solution. Hooking
    the head's input (rather than calling the base model and the head ourselves) keeps whatever the
    model does after the head (logit scaling, soft-capping) exact. Logits come back as [1, k, vocab].
    """

    def pre_hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0][rows, cols].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def _logits(output: Any) -> torch.Tensor:
    """Transformers models return `.logits`; remote-code PRMs may return a plain tuple."""
    return output.logits if hasattr(output, "logits") else output[0]


class PRMScorer:
    """Hosts one PRM (model + tokenizer + adapter) and scores batches of `Score` requests; no Ray here."""

    def __init__(self, cfg: VerifierConfig, model: Any, tokenizer: Any, **adapter_options: Any) -> None:
        import torch

        torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.adapter = make_adapter(cfg.kind, tokenizer, **adapter_options)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(device=self.device, dtype=getattr(torch, cfg.dtype)).eval()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.num_parameters = sum(p.numel() for p in self.model.parameters())

    @classmethod
    def load(cls, cfg: VerifierConfig, cache_dir: str, **adapter_options: Any) -> PRMScorer:
        """Load the checkpoint `cfg.model` names ("embedded", a local directory or a Hugging Face id)."""
        import torch
        from transformers import AutoConfig, AutoTokenizer

        from ttsearch.engines.models import resolve_model

        adapter = adapter_class(cfg.kind)  # fails fast for model-free kinds
        trust = adapter.trust_remote_code
        path = resolve_model(cfg.model, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model_cls = _model_class(AutoConfig.from_pretrained(path, trust_remote_code=trust), adapter)
        # Straight onto the GPU in its dtype (accelerate's device_map, from the `gpu` extra): a 7B PRM staged
        # in host RAM first would not fit a GPU node's RAM.
        placement = {"device_map": "cuda"} if torch.cuda.is_available() else {}
        model, info = model_cls.from_pretrained(
            path, dtype=getattr(torch, cfg.dtype), trust_remote_code=trust, output_loading_info=True, **placement
        )
        missing = sorted(set(adapter.required_weights) & set(info["missing_keys"]))
        if missing:
            raise ValueError(f"verifier '{cfg.kind}': checkpoint {path} lacks {missing}, the head would be random")
        return cls(cfg, model, tokenizer, **adapter_options)

    def score_batch(self, batch: Sequence[Score]) -> list[ScoreResult | RequestRejected]:
        """Score every item; results in the order of `batch`."""
        results: dict[int, ScoreResult | RequestRejected] = {}
        for chunk in self.iter_scores(batch):
            results.update(chunk)
        return [results[i] for i in range(len(batch))]

    def iter_scores(self, batch: Sequence[Score]) -> Iterator[list[tuple[int, ScoreResult | RequestRejected]]]:
        """Yield (index, result) pairs one micro-batch at a time, so a caller can stream them out.

        Items are sorted by length (longest first: an out-of-memory shows up on the first pass) and
        packed so that rows x longest row stays within `max_batch_tokens`; right padding plus an
        attention mask keeps each row's scores independent of its batch mates. An item that cannot be
        laid out (its last step alone exceeds `max_input_tokens`) is rejected on its own.
        """
        encoded = []
        settled: list[tuple[int, ScoreResult | RequestRejected]] = []
        for index, item in enumerate(batch):
            if item.scored_steps == len(item.steps):  # nothing new to score
                settled.append((index, ScoreResult((), 0)))
                continue
            try:
                encoded.append(self.adapter.encode(index, item, self.cfg.max_input_tokens))
            except ValueError as exc:
                settled.append((index, RequestRejected(str(exc))))
        if settled:
            yield settled
        encoded.sort(key=lambda e: len(e.input_ids), reverse=True)
        micro: list[Encoded] = []
        for item in encoded:
            if micro and (len(micro) + 1) * len(micro[0].input_ids) > self.cfg.max_batch_tokens:
                yield self._forward(micro)
                micro = []
            micro.append(item)
        if micro:
            yield self._forward(micro)

    def _forward(self, micro: list[Encoded]) -> list[tuple[int, ScoreResult]]:
        import torch

        width = max(len(e.input_ids) for e in micro)
        input_ids = torch.full((len(micro), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(micro), width), dtype=torch.long)
        for row, e in enumerate(micro):
            input_ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
        rows = torch.tensor([row for row, e in enumerate(micro) for _ in e.positions], device=self.device)
        cols = torch.tensor([p for e in micro for p in e.positions], device=self.device)
        head = self.model.get_output_embeddings()
        with torch.inference_mode():
            inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
            if head is None:  # a classifier or value head: [b, s, 2] or [b, s, 1] is small, gather afterwards
                logits = _logits(self.model(**inputs))[rows, cols]
            else:
                with project_only_at(head, rows, cols):
                    logits = _logits(self.model(**inputs))[0]
            if logits.shape[0] != rows.numel():
                raise RuntimeError(f"expected logits for {rows.numel()} tag tokens, got shape {tuple(logits.shape)}")
            # The family's read-out of the outputs at its positions: good/bad columns, or a value head's value.
            probs = self.adapter.step_probs(logits).tolist()
        results, start = [], 0
        for e in micro:
            scores = probs[start : start + len(e.positions)]
            start += len(e.positions)
            results.append((e.index, ScoreResult(e.new_scores(scores), len(e.input_ids))))
        return results
