"""Shared fakes and helpers of the test suite: test modules import them from here, never from one another.

Module-level imports stay light (the standard library, PyYAML, and ttsearch modules that load no pyarrow, Ray or
torch), so that the GPU tier (tests/gpu) can import this module on a machine that has only torch and transformers;
the helpers that need pyarrow, torch, tokenizers or transformers import them where they run.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from enum import Enum
from functools import cache
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ttsearch.config import CONF_DIR, SearchConfig, StrategySpec, SweepConfig, VerifierConfig, load_config
from ttsearch.config.verifiers import Layout, VerifierFamily
from ttsearch.engines.prm import StepAdapter, single_token_ids
from ttsearch.search.outcomes import Failure, JobOutcome, ReplicasUnavailable, Usage
from ttsearch.search.requests import (
    Completion,
    Generate,
    GenerateResult,
    Prompt,
    Request,
    RequestRejected,
    Result,
    Score,
    ScoreResult,
)
from ttsearch.search.scheduler import ReplicaFailed, ReplicaPool
from ttsearch.search.strategies import Candidate, SearchContext, StrategyRun, start

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from ttsearch.analysis.policy import Policy
    from ttsearch.engines.prm import PRMScorer
    from ttsearch.engines.transformers_generator import TransformersGenerator
    from ttsearch.sweep.jobs import JobKey

ROOT = Path(__file__).resolve().parents[1]
"""The repository."""
MATH500 = ROOT / "data" / "math500.jsonl"


# ---- ports ----


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- scripted in-process backends: strategies and the scheduler run against them in milliseconds ----


class ScriptedBackend:
    """Answers each request with `respond(request)`; records every batch it was sent.

    `fail_when(request)` makes the call raise when it reaches that request (a replica that answers with
    an error); `reject_when(request)` answers that one request with `RequestRejected`; `delay` is the
    seconds each request takes.
    """

    def __init__(
        self,
        respond: Callable[[Request], Result],
        fail_when: Callable[[Request], bool] | None = None,
        reject_when: Callable[[Request], bool] | None = None,
        delay: float = 0.0,
    ):
        self.respond = respond
        self.fail_when = fail_when
        self.reject_when = reject_when
        self.delay = delay
        self.batches: list[list[Request]] = []
        self.checks = 0

    async def submit(self, batch: list[Request]) -> AsyncIterator[tuple[int, Result | RequestRejected]]:
        self.batches.append(list(batch))
        for index, request in enumerate(batch):
            await asyncio.sleep(self.delay)  # let other calls interleave, as a real replica would
            if self.fail_when and self.fail_when(request):
                raise RuntimeError("scripted replica failure")
            if self.reject_when and self.reject_when(request):
                yield index, RequestRejected("scripted rejection")
            else:
                yield index, self.respond(request)

    async def check(self) -> None:
        self.checks += 1


class DyingBackend(ScriptedBackend):
    """Dies after serving `results_before_death` results: the call in progress and every later one fail
    with `ReplicaFailed`, as a killed Ray actor's would. It answers a health check again after
    `checks_to_restart` failed checks (Ray restarted it), or never (None)."""

    def __init__(self, respond, results_before_death: int, checks_to_restart: int | None = None):
        super().__init__(respond)
        self.results_left = results_before_death
        self.checks_to_restart = checks_to_restart
        self.dead = False
        self.batches_after_restart = 0
        self.calls_while_dead = 0

    async def submit(self, batch):
        if self.dead:
            self.calls_while_dead += 1
            raise ReplicaFailed("scripted: actor died")
        self.batches_after_restart += self.checks > 0
        async for index, result in super().submit(batch):
            if self.results_left == 0:
                self.dead = True
                raise ReplicaFailed("scripted: actor died")
            self.results_left -= 1
            yield index, result

    async def check(self) -> None:
        await super().check()
        if self.dead:
            if self.checks_to_restart is None or self.checks <= self.checks_to_restart:
                raise ReplicaFailed("scripted: actor is restarting")
            self.dead, self.results_left = False, -1  # restarted: serves forever


class HangingBackend(ScriptedBackend):
    """Its first `hangs` calls never stream a result (a wedged engine); later calls are served."""

    def __init__(self, respond, hangs: int = 1):
        super().__init__(respond)
        self.hangs = hangs

    async def submit(self, batch):
        if self.hangs > 0:
            self.hangs -= 1
            self.batches.append(list(batch))
            await asyncio.Event().wait()
        async for item in super().submit(batch):
            yield item


def completions(*texts: str, eos: bool = False, tokens: int = 5) -> GenerateResult:
    """A result whose completions stopped at the step delimiter (or at EOS with `eos=True`)."""
    stop = None if eos else "\n\n"
    return GenerateResult(
        completions=tuple(Completion(text=t, num_tokens=tokens, finish_reason="stop", stop_reason=stop) for t in texts),
        prompt_tokens=10,
        cached_prompt_tokens=4,
    )


def step_generator(depth_to_finish: int = 2) -> Callable[[Request], Result]:
    """Writes `step<depth>.<i>` and ends with a boxed answer at `depth_to_finish`."""

    def respond(request: Request) -> Result:
        assert isinstance(request, Generate)
        depth = request.prompt.assistant_prefix.count("\n\n")
        if depth >= depth_to_finish or not request.stop:
            return completions(*(f"so \\boxed{{{i % 2}}}" for i in range(request.n)), eos=True)
        return completions(*(f"step{depth}.{i}" for i in range(request.n)))

    return respond


def length_scorer(request: Request) -> Result:
    """Scores step j of a solution 1/(1+j): deterministic and easy to reason about."""
    assert isinstance(request, Score)
    scores = tuple(1.0 / (1 + j) for j in range(request.scored_steps, len(request.steps)))
    return ScoreResult(step_scores=scores, tokens=3)


def drive(run, respond: Callable[[Request], Result]):
    """Run a strategy to its end without a scheduler; returns (candidates, all request batches)."""
    batches: list[list[Request]] = []
    results = None
    while True:
        try:
            requests = run.send(results)
        except StopIteration as stop:
            return stop.value, batches
        batches.append(requests)
        results = [respond(r) for r in requests]


class Grades:
    """A grader whose verdicts are scripted per answer (None: a grading failure; unlisted answers are wrong)."""

    def __init__(self, verdicts: dict[str | None, bool | None]):
        self.verdicts = verdicts

    def grade_many(self, pairs):
        return [self.verdicts.get(answer, False) for answer, _ in pairs]


def forms_only(answer: str, others: Sequence[str]) -> list[bool]:
    """A `SameAnswers` without math-verify: answers are the same only when their canonical forms are."""
    return [False] * len(others)


# ---- configs: what the YAML files state, against what the loader holds ----


def merge_layers(base: dict, layer: dict) -> dict:
    """`layer` on top of `base`: mappings merge key by key, anything else (lists included) is replaced."""
    merged = dict(base)
    for key, value in layer.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_layers(merged[key], value) if both_maps else value
    return merged


def stated_values(paths: list[str | Path], overrides: Sequence[str] = ()) -> dict:
    """What the YAML files and `key=value` overrides say, read with PyYAML rather than the loader under test;
    later layers win, as `load_config` documents."""
    stated: dict = {}
    for path in paths:
        stated = merge_layers(stated, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides:
        key, _, value = item.partition("=")
        layer = yaml.safe_load(value)
        for part in reversed(key.split(".")):
            layer = {part: layer}
        stated = merge_layers(stated, layer)
    return stated


def mismatches(stated: Any, loaded: Any, where: str = "") -> list[str]:
    """Every value `stated` gives that `loaded` (a config dataclass tree) does not hold, as 'key: stated != loaded'.
    A strategy entry is compared as the flat record it is written as (its settings beside `name`)."""
    if isinstance(loaded, StrategySpec):
        loaded = loaded.record()
    if isinstance(stated, dict):
        found = []
        for key, value in stated.items():
            inner = loaded.get(key) if isinstance(loaded, dict) else getattr(loaded, key, "<missing>")
            found += mismatches(value, inner, f"{where}.{key}" if where else key)
        return found
    if isinstance(stated, list):
        if not isinstance(loaded, list | tuple) or len(loaded) != len(stated):
            return [f"{where}: {stated!r} != {loaded!r}"]
        pairs = enumerate(zip(stated, loaded, strict=True))
        return [found for i, (s, v) in pairs for found in mismatches(s, v, f"{where}[{i}]")]
    value = loaded.value if isinstance(loaded, Enum) else loaded
    same = value is stated if bool in (type(value), type(stated)) else value == stated  # True is not 1 here
    return [] if same else [f"{where}: {stated!r} != {loaded!r}"]


# ---- scheduler jobs and replica pools ----


SEARCH = SearchConfig(system_prompt="sys", max_steps=4)


def jobs(n: int, spec: StrategySpec, budget: int = 4):
    for i in range(n):
        ctx = SearchContext(uid=f"p{i}", question=f"question {i}", search=SEARCH, seed=0)
        yield f"p{i}", start(ctx, budget, spec)


def pools(generators, verifiers, max_batch=1024, max_outstanding=4096, affinity_slack=32):
    limits = {"max_outstanding": max_outstanding, "max_batch": max_batch, "affinity_slack": affinity_slack}
    return {"generator": ReplicaPool(generators, **limits), "verifier": ReplicaPool(verifiers, **limits)}


# ---- candidates and grading ----


def boxed(answer: str | None, score: float = 0.5, generated: int | None = None) -> Candidate:
    text = "no answer" if answer is None else f"so \\boxed{{{answer}}}"
    return Candidate(steps=(text,), step_scores=(score,), generated_tokens=generated, verifier_tokens=generated)


class ScriptedGrader:
    """`grade_many` from a table of verdicts per answer (None: ungraded); equivalence by canonical form."""

    def __init__(self, verdicts: dict[str, bool | None]):
        self.verdicts = verdicts

    def grade_many(self, pairs):
        return [False if answer is None else self.verdicts[answer] for answer, _ in pairs]

    same_answers = staticmethod(forms_only)

    def problem(self, uid: str) -> ScriptedGrader:
        """One problem's view (`Grader.problem`): the scripted verdicts have no time bound."""
        return self


PROBLEM = {"unique_id": "q", "level": 1, "subject": "Algebra", "answer": "5"}


# ---- synthetic sweep result rows ----


QUESTIONS = [f"q{i:02d}" for i in range(20)]
BUDGETS = [1, 2, 4, 8]
SEEDS = [0, 1]
BEST_OF_N_SELECTIONS = ("naive", "weighted", "majority")
# Question i has 16 best-of-N samples (2 seeds × the 8 of its largest budget; a smaller budget's are the first of
# those, as a pooled sweep's are); 16 - 3i//4 of them are right: ties only inside each group of 4, q00 easiest.
RIGHT = {uid: 16 - 3 * i // 4 for i, uid in enumerate(QUESTIONS)}


def row_settings(strategy: str, **settings: Any) -> str:
    """The `settings` column of a row of `strategy`: its defaults (beam width 2 where it has one), `settings` set."""
    spec = StrategySpec.of(strategy, **settings)
    if "beam_width" in spec.filled_settings() and "beam_width" not in settings:
        spec = spec.with_settings(beam_width=2)
    return json.dumps(spec.filled_settings())


ESTIMATE_COLUMNS = (
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "accuracy_se",
    "coverage",
    "pool_budget",
    "pool_subsets",
)


def realised_estimates(correct: bool | None, flags: list[bool], budget: int) -> dict[str, Any]:
    """The sample-pool columns of a row that searched its budget alone: its realisation, no tie."""
    accuracy = None if correct is None else float(correct)
    return {
        "accuracy": accuracy,
        "accuracy_low": accuracy,
        "accuracy_high": accuracy,
        "accuracy_se": 0.0,
        "coverage": float(any(flag is True for flag in flags)),
        "pool_budget": budget,
        "pool_subsets": 1,
    }


def result_row(
    uid: str,
    strategy: str,
    label: str,
    budget: int,
    seed: int,
    flags: list[bool],
    correct: bool,
    selection: str = "weighted",
    **extra,
) -> dict:
    """A row with every column the sweep writes; `flags` are the candidates' correctness."""
    level = 1 + QUESTIONS.index(uid) // 4 if uid in QUESTIONS else 0
    return {
        "unique_id": uid,
        "level": level,
        "subject": "Algebra",
        "strategy": strategy,
        "strategy_label": label,
        "selection": selection,
        "aggregation": "last",
        "settings": row_settings(strategy),
        "budget": budget,
        "seed": seed,
        "answer": "1" if correct else "2",
        "reference": "1",
        "correct": correct,
        **realised_estimates(correct, flags, budget),
        "score": 0.5,
        "samples": budget,
        "generated_tokens": 100 * budget if strategy == "best_of_n" else 150 * budget,
        "prompt_tokens": 50,
        "cached_prompt_tokens": 40,
        "verifier_tokens": 80 * budget,
        "wall_s": 0.1 * budget,
        "candidate_answers": ["1" if flag else "2" for flag in flags],
        "candidate_scores": [0.5] * len(flags),
        "candidate_correct": flags,
        "error": None,
    } | extra


def best_of_n_rows(uid: str) -> list[dict]:
    """Sample j of the question's 16 is right iff (5j mod 16) < RIGHT[uid]: pass@1 is RIGHT/16 exactly."""
    rows, largest = [], max(BUDGETS)
    for seed in SEEDS:
        pool = [(5 * (largest * seed + c)) % 16 < RIGHT[uid] for c in range(largest)]
        for budget in BUDGETS:
            flags = pool[:budget]
            picks = {"naive": flags[0], "weighted": 2 * sum(flags) >= budget, "majority": 2 * sum(flags) > budget}
            rows += [
                result_row(
                    uid, "best_of_n", f"best_of_n/{sel}", budget, seed, flags, picks[sel], selection=sel, pool_budget=8
                )
                for sel in BEST_OF_N_SELECTIONS
            ]
    return rows


def beam_rows(uid: str) -> list[dict]:
    rows = []
    for seed in SEEDS:
        for budget in BUDGETS:
            right = RIGHT[uid] > 15 + seed + budget
            rows.append(result_row(uid, "beam", "beam(M=2)/weighted", budget, seed, [right, False], right))
    return rows


# ---- compute-optimal policies ----


STRATEGIES = "strategies=[{name: best_of_n, selections: [majority, weighted]}, {name: beam, beam_width: 2}]"


def write_policy(run_dir, estimation_samples=2, thresholds=(0.7, 0.5, 0.3, 0.1)) -> Policy:
    from ttsearch.analysis.policy import POLICY_FILE, POLICY_VERSION, load_policy

    choices = [
        {"budget": b, "bin": k, "strategy_label": "beam(M=2)/weighted" if k >= 4 else "best_of_n/majority"}
        for b in (2, 4)
        for k in range(1, 6)
    ]
    (run_dir / POLICY_FILE).write_text(
        json.dumps(
            {
                "version": POLICY_VERSION,
                "difficulty": {
                    "kind": "predicted",
                    "estimation_samples": estimation_samples,
                    "n_bins": 5,
                    "thresholds": list(thresholds),
                },
                "choices": choices,
            }
        )
    )
    return load_policy(run_dir)


# ---- first-error benchmark files and `ttsearch label` rows ----


def processbench_item(index: int, label: int, num_steps: int = 3) -> dict[str, Any]:
    """A ProcessBench item as the benchmark's files hold it."""
    return {
        "id": f"toy-{index}",
        "generator": "hand",
        "problem": f"What is {index} + 1?",
        "steps": [f"Step {step} of item {index}." for step in range(num_steps)],
        "final_answer_correct": label == -1,
        "label": label,
    }


def write_subset(path: Path, items: list[Any]) -> Path:
    path.write_text(json.dumps(items))
    return path


def label_row(unique_id: str, steps: list[str], hard_labels: list[bool | None], sample: int = 0) -> dict[str, Any]:
    """A `ttsearch label` row (LABEL_SCHEMA) whose first len(hard_labels) steps are labelled."""
    return {
        "unique_id": unique_id,
        "question": f"Question {unique_id}?",
        "reference": "2",
        "source": "sample",
        "sample": sample,
        "steps": steps,
        "finished": True,
        "answer": "2",
        "solution_correct": True,
        "soft_labels": [None if hard is None else float(hard) for hard in hard_labels],
        "hard_labels": hard_labels,
        "successes": [int(bool(hard)) for hard in hard_labels],
        "rollouts": [1] * len(hard_labels),
        "generated_tokens": 10,
        "wall_s": 0.1,
        "error": None,
        "shard": 0,
        "node_id": "node",
    }


def write_labels(directory: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa

    from ttsearch.training.labels import LABEL_SCHEMA, label_store

    label_store(directory).write_shard(0, 1, pa.Table.from_pylist(rows, schema=LABEL_SCHEMA))
    return directory


def question_ids(fraction: float, held_out: bool, count: int) -> list[str]:
    """The first `count` ids "q0", "q1", ... that `is_heldout` does (or does not) hold out at `fraction`."""
    from ttsearch.training.labels import is_heldout

    ids = (f"q{i}" for i in range(10_000))
    return [uid for uid in ids if is_heldout(uid, fraction) == held_out][:count]


# ---- revision-model training data (`ttsearch revision-data` output) ----


@cache
def revision_prompt_config() -> SweepConfig:
    """conf/revision_prompt.yaml, loaded once."""
    return load_config(CONF_DIR / "revision_prompt.yaml", [])


def trajectory(q: int, number: int = 0) -> dict[str, Any]:
    """A trajectory of question `toy/q`: one wrong attempt shown, rendered by the revisions strategy, then the
    right one; the answers follow from the question, so a model can fit them."""
    from ttsearch.search.strategies.revisions import revision_prompt
    from ttsearch.training.revision_data import REVISION_SCHEMA

    cfg = revision_prompt_config()
    question = f"What is {q} + {q}?"
    wrong = f"{q} + {q} = {2 * q + 1}.\n\nThe answer is $\\boxed{{{2 * q + 1}}}$."
    prompt = revision_prompt(cfg.search.system_prompt, question, [wrong], 2, cfg.search.revision_prompt)
    return {name: None for name in REVISION_SCHEMA.names} | {
        "unique_id": f"toy/{q}",
        "question": question,
        "reference": str(2 * q),
        "trajectory": number,
        "attempts": [wrong],
        "attempt_answers": [str(2 * q + 1)],
        "distances": [0.1],
        "target_source": "sample",
        "target_answer": str(2 * q),
        "target": f"{q} + {q} = {2 * q}.\n\nThe answer is $\\boxed{{{2 * q}}}$.",
        "system": prompt.system,
        "user": prompt.user,
        "samples": 2,
        "correct_samples": 1,
        "ungraded_samples": 0,
        "shard": 0,
    }


def write_revision_data(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A `ttsearch revision-data` output directory holding `rows` and a question without a trajectory."""
    import pyarrow as pa

    from ttsearch.training.revision_data import REVISION_SCHEMA, revision_store

    empty = {name: None for name in REVISION_SCHEMA.names} | {"unique_id": "toy/none", "samples": 2, "shard": 0}
    revision_store(path).write_shard(0, 1, pa.Table.from_pylist([*rows, empty], schema=REVISION_SCHEMA))
    return path


# ---- tiny random-init models ----


def train_prm_overrides(labels: list[Path], base_model: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        f"prm.labels=[{','.join(map(str, labels))}]",
        f"prm.base_model={base_model}",
        f"prm.output_dir={output_dir}",
        *extra,
    ]


def save_tiny_llama(path: Path, cache_dir: str) -> Path:
    """A random-init Llama small enough to train in seconds, with the embedded model's tokenizer; heads of 32
    dimensions, the smallest vLLM-CPU's attention takes, so it also serves as a generator."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ttsearch.engines.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded", cache_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---- plugins: registry entries that another distribution would add through an entry point ----


class ToyPRMAdapter(StepAdapter):
    """A third-party PRM family's adapter: f"{question} {step_1} ки\n{step_2} ки", "+"/"-" as the next token."""

    tag = " ки"
    separator = "\n"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, single_token_ids(tokenizer, ["+"]), single_token_ids(tokenizer, ["-"]))

    def frame(self, score: Score) -> tuple[str, str]:
        return f"{score.question} ", ""


TOY_PRM_FAMILY = VerifierFamily(
    name="toy_prm", adapter="tests.fixtures:ToyPRMAdapter", layout=Layout.NEXT_TOKEN, backends=("vllm", "transformers")
)
"""What a plugin's entry point `toy_prm = "tests.fixtures:TOY_PRM_FAMILY"` (group `ttsearch.verifiers`) names."""


def install_entry_points(monkeypatch: Any, module: Any, entries: dict[str, str]) -> None:
    """Make `module`'s registry see `entries` (name → "package.module:OBJECT") as installed entry points of its
    group: its `entry_points` replaced, its cached plugin list cleared (clear it again after the test)."""

    def entry_points(group: str) -> list[EntryPoint]:
        mine = group == module.ENTRY_POINT_GROUP
        return [EntryPoint(name, value, group) for name, value in entries.items()] if mine else []

    monkeypatch.setattr(module, "entry_points", entry_points)
    module._plugins.cache_clear()


# ---- tiny random-init PRMs of the real architectures, built and saved locally ----


QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

VERIFIER_KINDS = ("qwen_prm", "math_shepherd")
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
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["problem"] for line in MATH500.read_text().splitlines()[:200]]
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


def tiny_sizes(vocab_size: int) -> dict[str, int | float]:
    """The sizes of every tiny random-init model of a real architecture: 2 layers, hidden 32, large initial weights
    (so that random scores spread)."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,
    )


def build_checkpoint(out_dir: Path, kind: str) -> None:
    """Save a tiny random-init model of the real family: Qwen2 with a 2-class token head (the shape of
    Qwen2ForProcessRewardModel's output) or a Mistral causal LM (math-shepherd-mistral-7b-prm)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForTokenClassification

    tokenizer = build_tokenizer(out_dir, kind)
    sizes = tiny_sizes(len(tokenizer))
    torch.manual_seed(0)
    if kind == "qwen_prm":
        model = Qwen2ForTokenClassification(Qwen2Config(num_labels=2, **sizes))
    else:
        model = MistralForCausalLM(MistralConfig(tie_word_embeddings=False, **sizes))
    model.save_pretrained(out_dir)


def verifier_checkpoints(tmp_path_factory: Any) -> dict[str, Path]:
    """One tiny checkpoint of each of `VERIFIER_KINDS`, each in a directory of its own."""
    dirs = {}
    for kind in VERIFIER_KINDS:
        dirs[kind] = tmp_path_factory.mktemp(kind)
        build_checkpoint(dirs[kind], kind)
    return dirs


def assert_scores_close(actual: Sequence[float], expected: Sequence[float], atol: float = 1e-5) -> None:
    import torch

    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), atol=atol, rtol=0)


def assert_incremental_matches_full(scorer: PRMScorer, items: Sequence[Score], atol: float = 1e-4) -> None:
    """Scores asked for from step k on are the full scores from k on, and scoring a solution as it grows,
    one new step per call, gives the full scores: no score depends on a later step."""
    for item in items:
        full = scorer.score_batch([item])[0].step_scores
        tails = scorer.score_batch([replace(item, scored_steps=k) for k in range(len(item.steps))])
        for k, tail in enumerate(tails):
            assert_scores_close(tail.step_scores, full[k:], atol=atol)
        grown = [Score(item.question, item.steps[: k + 1], scored_steps=k) for k in range(len(item.steps))]
        newest = [result.step_scores for result in scorer.score_batch(grown)]
        assert all(len(scores) == 1 for scores in newest)
        assert_scores_close([s for scores in newest for s in scores], full, atol=atol)


# The architecture of Qwen/Qwen2.5-Math-PRM-7B's remote code (modeling_qwen2_rm.py), cut to what scoring uses.
QWEN_PRM_REMOTE_CODE = """
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


def build_qwen_prm_checkpoint(out_dir: Path) -> None:
    """Save a tiny Qwen2.5-Math-PRM: the tokenizer of `build_tokenizer` (chat template, "<extra_0>"), a Qwen2
    body whose head size (32) the vLLM-CPU attention kernel takes, the 2-class head in float32."""
    import importlib.util

    import torch
    from transformers import Qwen2Config

    tokenizer = build_tokenizer(out_dir, "qwen_prm")
    (out_dir / "modeling_qwen2_rm.py").write_text(QWEN_PRM_REMOTE_CODE)
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


def qwen_prm_config(checkpoint: Path, backend: str) -> VerifierConfig:
    model = str(checkpoint)
    return VerifierConfig(kind="qwen_prm", model=model, backend=backend, dtype="float32", cpu_kv_cache_gib=0.25)


# ---- transformers generator requests ----


STEP = ("\n\n",)
ENDINGS = {("stop", "\n\n"), ("stop", None), ("length", None)}  # a step delimiter, EOS, the token cap
QUESTION_PROMPT = Prompt(system="Solve step by step, separating steps with a blank line.", user="What is 2+3?")


def ask(n: int = 1, temperature: float = 0.8, max_tokens: int = 24, stop=STEP, seed: int | None = 0) -> Generate:
    return Generate(QUESTION_PROMPT, n=n, temperature=temperature, max_tokens=max_tokens, stop=stop, seed=seed)


def run_batch(engine: TransformersGenerator, batch: list[Generate]) -> list[GenerateResult]:
    async def collect():
        return dict([item async for item in engine.generate_batch(batch)])

    results = asyncio.run(collect())
    assert sorted(results) == list(range(len(batch))), "every request answered once"
    return [results[i] for i in range(len(batch))]


# ---- a scheduler that runs strategies to their end against scripted results ----


SCRIPTED_STEPS = step_generator()


def scripted_result(request: Request) -> Result:
    """A step generator's sample or a length scorer's scores: what `FakeScheduler` answers each request with."""
    return SCRIPTED_STEPS(request) if isinstance(request, Generate) else length_scorer(request)


class FakeScheduler:
    """Runs each strategy to its end against scripted results, one job at a time (a scheduler's `run`).

    `fail(key)` names jobs that end with a failure of the given kind; `stop_after` raises the way a
    scheduler does when a target's replicas stay gone.
    """

    def __init__(
        self,
        fail: Callable[[JobKey], Failure | None] = lambda key: None,
        stop_after: int | None = None,
        respond: Callable[[Request], Result] = scripted_result,
    ):
        self.fail = fail
        self.stop_after = stop_after
        self.respond = respond
        self.ran: list[JobKey] = []
        self.samples = 0
        """Generations requested over every job (`Generate.n`)."""

    async def run(self, jobs: Iterable[tuple[Any, StrategyRun]]) -> AsyncIterator[JobOutcome]:
        from ttsearch.sweep.jobs import job_key  # pyarrow: only where a sweep is run

        for key, steps in jobs:
            if self.stop_after is not None and len(self.ran) == self.stop_after:
                raise ReplicasUnavailable("no healthy generator replica for 600 s")
            self.ran.append(job_key(*key))
            failure = self.fail(job_key(*key))
            if failure is not None:
                steps.close()
                yield JobOutcome(key, None, Usage(), 0.5, f"{failure} failure", failure)
                continue
            usage, results = Usage(), None
            while True:
                try:
                    requests = steps.send(results)
                except StopIteration as stop:
                    yield JobOutcome(key, stop.value, usage, 0.5)
                    break
                results = [self.respond(request) for request in requests]
                self.samples += sum(request.n for request in requests if isinstance(request, Generate))
                for request, result in zip(requests, results, strict=True):
                    usage.add(request, result)


class SameAnswers:
    """The grader's interface for majority selection, without math-verify."""

    same_answers = staticmethod(forms_only)


def seeded_answers(request: Request) -> Result:
    """Sample i of a `Generate` answers by its seed + i, as vLLM seeds a request's samples: a request for the rest
    of a budget with its seed moved on (`best_of_n(first=)`) samples exactly the rest of the whole request."""
    if isinstance(request, Generate):
        return completions(*(f"so \\boxed{{{(request.seed + i) % 3}}}" for i in range(request.n)), eos=True)
    return length_scorer(request)
