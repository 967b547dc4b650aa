"""Verifier replicas: a process reward model (PRM) that scores every step of a (partial) solution.

One hosting class (`PRMScorer`) runs any PRM; a small *adapter* per scoring format knows how to lay out
(question, steps) with a tag after each step and which output columns mean "good" vs "bad". Every
adapter reads all step scores of a solution in ONE forward pass: the tags stay in the context (as in
Math-Shepherd), so a beam's partial solutions cost one pass each, not one per step.

All three formats reduce to the same read-out: at the token that ends a step's tag,
score = sigmoid(logsumexp(logits[good]) - logsumexp(logits[bad])), which is p(good) after a softmax
restricted to the good+bad columns (Qwen's 2-class head, Math-Shepherd's "+"/"-", the judge's Yes/No).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import ray

from ttsearch.backends import wait_ready
from ttsearch.config import MODEL_FREE_VERIFIERS, VerifierConfig
from ttsearch.requests import RequestRejected, Score, ScoreResult

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
    columns that mean a good or a bad step; `render`, `encode` and `step_probs` are shared.
    """

    tag: str
    separator: str
    trust_remote_code: ClassVar[bool] = False  # the Qwen PRM's head ships as remote code

    def __init__(self, tokenizer: Any, good_ids: Sequence[int], bad_ids: Sequence[int]) -> None:
        if not good_ids or not bad_ids or set(good_ids) & set(bad_ids):
            raise ValueError(f"{type(self).__name__}: bad candidate ids good={good_ids} bad={bad_ids}")
        self.tokenizer = tokenizer
        self.good_ids = list(good_ids)
        self.bad_ids = list(bad_ids)

    @abstractmethod
    def frame(self, question: str) -> tuple[str, str]:
        """Text before and after the solution."""

    def render(self, question: str, steps: Sequence[str]) -> Rendered:
        # Steps are stripped: the format's separator owns the whitespace around a tag, and stray
        # whitespace would change how the tag itself tokenizes (e.g. "▁ки" vs "ки").
        head, tail = self.frame(question)
        parts, tag_ends, cursor = [head], [], len(head)
        for i, step in enumerate(steps):
            piece = (self.separator if i else "") + step.strip() + self.tag
            parts.append(piece)
            cursor += len(piece)
            tag_ends.append(cursor - 1)
        parts.append(tail)
        return Rendered("".join(parts), len(head), tuple(tag_ends))

    def encode(self, index: int, score: Score, max_input_tokens: int) -> Encoded:
        """Tokenize the whole input at once (as the reference implementations do) and locate the tags.

        The tag token is found through the character offsets, not by searching for its id, so a
        question or step that happens to contain the tag text cannot add a spurious score. Inputs over
        `max_input_tokens` keep the prompt (up to half the budget) and the end of the solution.
        """
        rendered = self.render(score.question, score.steps)
        enc = self.tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        owner = np.full(len(rendered.text), -1, dtype=np.int64)  # char -> last token covering it
        for token, (start, end) in enumerate(offsets):
            owner[start:end] = token
        positions = [int(owner[c]) for c in rendered.tag_ends]
        if min(positions) < 0:
            raise ValueError(f"{type(self).__name__}: a step tag maps to no token in {rendered.text!r}")
        if len(ids) <= max_input_tokens:
            return Encoded(index, tuple(ids), tuple(positions), 0, score.scored_steps)
        prompt_tokens = sum(1 for start, _ in offsets if start < rendered.prompt_chars)
        keep_head = min(prompt_tokens, max_input_tokens // 2)
        drop = len(ids) - max_input_tokens  # tokens removed right after the kept head
        kept = [p - drop for p in positions if p >= keep_head + drop]
        if not kept:
            raise ValueError(f"max_input_tokens={max_input_tokens} is too small to keep the last step's tag")
        kept_ids = tuple(ids[:keep_head] + ids[keep_head + drop :])
        return Encoded(index, kept_ids, tuple(kept), len(positions) - len(kept), score.scored_steps)

    def step_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """[k, C] logits at tag tokens -> [k] probabilities that the step is good."""
        import torch

        logits = logits.float()
        good = torch.logsumexp(logits[:, self.good_ids], dim=-1)
        bad = torch.logsumexp(logits[:, self.bad_ids], dim=-1)
        return torch.sigmoid(good - bad)


def single_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Ids of the one-token spellings of `words`, with and without a leading space.

    Which spelling a tokenizer uses after the tag differs (BPE "ĠYes" vs "Yes", SentencePiece "▁+"), so
    every one-token variant counts; multi-token variants are skipped because their first piece ("▁",
    "Y") says nothing about the word.
    """
    ids: list[int] = []
    for word in words:
        for variant in (word, " " + word):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
    if not ids:
        raise ValueError(f"none of {list(words)} is a single token for this tokenizer")
    return ids


class LMJudgeAdapter(StepAdapter):
    """Any causal LM as a judge: after each step ask "Is this step correct (Yes/No)?" and compare
    p(Yes) with p(No) for the next token. Works with the embedded SmolLM2-135M-Instruct."""

    separator = "\n"
    DEFAULT_INSTRUCTION = (
        "Below is a math problem and a step-by-step solution. After each step, judge whether that step "
        "is correct."
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

    def frame(self, question: str) -> tuple[str, str]:
        return f"{self.instruction}\n\nProblem: {question}\n\nSolution:\n", ""


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

    def frame(self, question: str) -> tuple[str, str]:
        messages = [
            {"role": "system", "content": self.SYSTEM},
            {"role": "user", "content": question},
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

    def frame(self, question: str) -> tuple[str, str]:
        return f"{question} ", ""


ADAPTERS: dict[str, type[StepAdapter]] = {
    "lm_judge": LMJudgeAdapter,
    "qwen_prm": QwenPRMAdapter,
    "math_shepherd": MathShepherdAdapter,
}


def adapter_class(kind: str) -> type[StepAdapter]:
    if kind in MODEL_FREE_VERIFIERS:
        raise ValueError(f"verifier '{kind}' needs no model: the scheduler scores it in-process, no replica hosts it")
    if kind not in ADAPTERS:
        raise ValueError(f"unknown verifier kind '{kind}', expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[kind]


def make_adapter(kind: str, tokenizer: Any, **options: Any) -> StepAdapter:
    """Build the adapter for `kind`; `options` go to its constructor (e.g. the judge's texts)."""
    return adapter_class(kind)(tokenizer, **options)


def _model_class(config: Any) -> Any:
    """The architecture the checkpoint declares (a causal LM, a token classifier, ...); otherwise
    AutoModel, which finds a remote-code class through the checkpoint's auto_map (how
    Qwen2.5-Math-PRM ships Qwen2ForProcessRewardModel)."""
    import transformers

    for name in config.architectures or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


@contextlib.contextmanager
def _gather_before(head: torch.nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """Make `head` project only the hidden states at (rows, cols).

    A causal LM's output projection over every position of a micro-batch would be [b, s, vocab]
    (8192 tokens x 49k vocab = 1.6 GB in float32) when we need a few positions per solution. Hooking
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

        from ttsearch.models import resolve_model

        trust = adapter_class(cfg.kind).trust_remote_code  # fails fast for model-free kinds
        path = resolve_model(cfg.model, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model_cls = _model_class(AutoConfig.from_pretrained(path, trust_remote_code=trust))
        # Straight onto the GPU in its dtype (accelerate's device_map, from the `gpu` extra): a 7B PRM staged
        # in host RAM first would not fit a GPU node's RAM.
        placement = {"device_map": "cuda"} if torch.cuda.is_available() else {}
        model = model_cls.from_pretrained(path, dtype=getattr(torch, cfg.dtype), trust_remote_code=trust, **placement)
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
            if head is None:  # a classifier head (Qwen PRM): [b, s, 2] is small, gather afterwards
                logits = _logits(self.model(**inputs))[rows, cols]
            else:
                with _gather_before(head, rows, cols):
                    logits = _logits(self.model(**inputs))[0]
            if logits.shape[0] != rows.numel():
                raise RuntimeError(f"expected logits for {rows.numel()} tag tokens, got shape {tuple(logits.shape)}")
            probs = self.adapter.step_probs(logits).tolist()
        results, start = [], 0
        for e in micro:
            scores = probs[start : start + len(e.positions)]
            start += len(e.positions)
            results.append((e.index, ScoreResult(e.new_scores(scores), len(e.input_ids))))
        return results


@ray.remote
class VerifierReplica:
    """A Ray actor hosting one `PRMScorer`.

    `score` is an async generator, so Ray streams each (index, result) to the caller as soon as its
    micro-batch is done. Forward passes run in a worker thread, one at a time (a lock; concurrent
    passes would only fight for the same cores/GPU), so `stats` and `ready` answer while it works.

    Failure behaviour: created with `max_restarts=verifier.max_restarts` and `max_task_retries=0`; Ray
    restarts a dead replica (the model loads again) while the scheduler replays the unserved scores of
    its calls on other replicas. Scoring is deterministic, so a replay gives the same scores.
    """

    def __init__(self, cfg: VerifierConfig, cache_dir: str) -> None:
        self._scorer = PRMScorer.load(cfg, cache_dir)
        self._lock = asyncio.Lock()
        self._stats = {"calls": 0, "items": 0, "tokens": 0, "busy_s": 0.0}

    def ready(self) -> bool:
        return True

    async def score(self, batch: list[Score]) -> AsyncIterator[tuple[int, ScoreResult | RequestRejected]]:
        """Yield `(index, ScoreResult)` for every item of `batch`, in completion order."""
        self._stats["calls"] += 1
        chunks = self._scorer.iter_scores(batch)
        while True:
            async with self._lock:
                started = time.perf_counter()
                chunk = await asyncio.to_thread(next, chunks, None)
                self._stats["busy_s"] += time.perf_counter() - started
            if chunk is None:
                return
            for index, result in chunk:
                if isinstance(result, ScoreResult):
                    self._stats["items"] += 1
                    self._stats["tokens"] += result.tokens
                yield index, result

    def stats(self) -> dict[str, float]:
        return {**self._stats, "num_parameters": self._scorer.num_parameters}


def create_verifier_replicas(cfg: VerifierConfig, cache_dir: str) -> list[Any]:
    """Start `cfg.replicas` verifier actors placed by their resources and wait until all are loaded (at most
    `cfg.start_timeout_s`)."""
    options = {"max_restarts": cfg.max_restarts, "max_task_retries": 0}
    replicas = [
        VerifierReplica.options(num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus, **options).remote(cfg, cache_dir)
        for _ in range(cfg.replicas)
    ]
    wait_ready(replicas, cfg.start_timeout_s, "verifier", cfg.num_gpus, cfg.num_cpus)
    return replicas
