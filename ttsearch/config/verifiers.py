"""The verifier family registry: one table, name → everything the rest of the system asks of a verifier family.

A family is how a verifier turns (question, steps) into step scores: the adapter class that lays out its input and
reads its outputs (`ttsearch.engines.prm`), the input layout that decides which engines can read it, the backends
that can host it, and whether it can score a question it has no ground truth for. Config validation, the "auto"
backend, the engines, the replicas, `eval-prm`, the benchmark and the service all read families from here only.

Adding a PRM family is an adapter class plus one `VerifierFamily` in `VERIFIER_FAMILIES`, or, from another
distribution, an entry point in the group `ENTRY_POINT_GROUP` naming a `VerifierFamily` object. Adapters are dotted
paths imported only where a model runs, so the config layer reads this table without torch or the engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import cache
from importlib.metadata import entry_points

from ttsearch.config.base import load_object


class Layout(Enum):
    """What a family's model outputs at a step's tag, which decides the engines that can read it."""

    NEXT_TOKEN = "next_token"
    """A causal LM's next-token distribution at the tag: p(good word) against the bad ones. vLLM serves it (one
    1-token read per step, prefix-cached) on an engine of its own or on the generator's, if it is the same model."""
    TOKEN_CLASSIFICATION = "token_classification"
    """A classification head over every token (2 classes): p(good) at the tag. vLLM serves it on its pooling
    runner, on an engine of its own only (the generator's engine generates)."""
    VALUE_HEAD = "value_head"
    """One scalar per token: sigmoid(value) at the step's end. No vLLM model class: transformers only."""
    NONE = "none"
    """No model: the driver scores it in-process (`ttsearch.runtime.backends.ModelFreeVerifier`)."""


class VerifierBackend(StrEnum):
    """The values of `verifier.backend`: where a hosted verifier runs."""

    auto = "auto"  # the first of the family's backends this run allows (`ttsearch.config.models.verifier_backend`)
    generator = "generator"  # the generator replicas' own vLLM engines (the same model only)
    vllm = "vllm"  # a vLLM engine of its own
    transformers = "transformers"  # a transformers model


HOSTS = tuple(backend.value for backend in VerifierBackend if backend != VerifierBackend.auto)
"""Where a hosted verifier can run (every backend but "auto")."""

LAYOUT_HOSTS: dict[Layout, tuple[str, ...]] = {
    Layout.NEXT_TOKEN: HOSTS,
    Layout.TOKEN_CLASSIFICATION: ("vllm", "transformers"),
    Layout.VALUE_HEAD: ("transformers",),
    Layout.NONE: (),
}
"""The hosts able to read each layout; a family's `backends` are some of its layout's."""

AUTO = VerifierBackend.auto.value
VERIFIER_BACKENDS = tuple(backend.value for backend in VerifierBackend)


@dataclass(frozen=True)
class VerifierFamily:
    """A registry entry: one verifier family."""

    name: str
    """The `verifier.kind` (and `bench.real_verifier`) value that selects it."""
    adapter: str | None
    """"module:Class" of its `ttsearch.engines.prm.StepAdapter` subclass; None for a model-free family, which the
    driver scores itself (oracle, majority, hash)."""
    layout: Layout
    """What its model outputs at a step's tag, which decides the hosts that can read it (`LAYOUT_HOSTS`)."""
    backends: tuple[str, ...]
    """The backends that can host it, in the order "auto" tries them; empty for a model-free family."""
    scores_new_questions: bool = True
    """False where it cannot score a question the service is asked: the oracle needs the ground truth, hash is a
    benchmark device (a deterministic stand-in score)."""

    def __post_init__(self) -> None:
        if (self.adapter is None) != (self.layout is Layout.NONE):
            raise ValueError(f"verifier family '{self.name}': an adapter goes with a model layout, none with NONE")
        wrong = [backend for backend in self.backends if backend not in LAYOUT_HOSTS[self.layout]]
        if wrong or (self.layout is not Layout.NONE and not self.backends):
            raise ValueError(
                f"verifier family '{self.name}': backends {self.backends} must be some of {LAYOUT_HOSTS[self.layout]} "
                f"(those that read the {self.layout.name} layout), at least one"
            )

    @property
    def model_free(self) -> bool:
        """Scored in the driver: no replica hosts it."""
        return self.adapter is None


VERIFIER_FAMILIES: dict[str, VerifierFamily] = {
    family.name: family
    for family in (
        VerifierFamily(  # an LM asked "is this step correct? Yes/No" after each step (any causal LM)
            name="lm_judge",
            adapter="ttsearch.engines.prm:LMJudgeAdapter",
            layout=Layout.NEXT_TOKEN,
            backends=("generator", "vllm", "transformers"),
        ),
        VerifierFamily(  # Qwen2.5-Math-PRM: <extra_0> after each step, read by a 2-class head
            name="qwen_prm",
            adapter="ttsearch.engines.prm:QwenPRMAdapter",
            layout=Layout.TOKEN_CLASSIFICATION,
            backends=("vllm", "transformers"),
        ),
        VerifierFamily(  # Math-Shepherd: "ки" after each step, +/- as its next token
            name="math_shepherd",
            adapter="ttsearch.engines.prm:MathShepherdAdapter",
            layout=Layout.NEXT_TOKEN,
            backends=("generator", "vllm", "transformers"),
        ),
        VerifierFamily(  # RLHFlow's PRMs: a chat of steps, +/- as the assistant's answer to each
            name="rlhflow",
            adapter="ttsearch.engines.prm:RLHFlowAdapter",
            layout=Layout.NEXT_TOKEN,
            backends=("generator", "vllm", "transformers"),
        ),
        VerifierFamily(  # Skywork-o1-Open-PRM: a value head
            name="skywork",
            adapter="ttsearch.engines.prm:SkyworkPRMAdapter",
            layout=Layout.VALUE_HEAD,
            backends=("transformers",),
        ),
        # Model-free: scored in the driver, no replica hosts them.
        VerifierFamily(  # a step scores 1 if the solution's final answer is graded right, else 0
            name="oracle", adapter=None, layout=Layout.NONE, backends=(), scores_new_questions=False
        ),
        VerifierFamily(  # every step scores 1: weighted selection becomes a vote
            name="majority", adapter=None, layout=Layout.NONE, backends=()
        ),
        VerifierFamily(  # a benchmark device, not a verifier: a zero-cost deterministic score (scheduling alone)
            name="hash", adapter=None, layout=Layout.NONE, backends=(), scores_new_questions=False
        ),
    )
}
"""Every shipped family. Order matters only for listings (error messages, docs)."""

ENTRY_POINT_GROUP = "ttsearch.verifiers"
"""Other distributions add families as entry points of this group: `name = "package.module:FAMILY"`, naming a
`VerifierFamily` whose `name` is the entry point's name and whose adapter is a `StepAdapter` subclass."""


@cache
def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def _plugin(name: str, path: str) -> VerifierFamily:
    found = load_object(path)
    if not isinstance(found, VerifierFamily) or found.name != name:
        raise TypeError(f"verifier family entry point '{name}' = '{path}' is not a VerifierFamily named '{name}'")
    if found.model_free:
        raise TypeError(
            f"verifier family entry point '{name}' = '{path}' names no adapter: model-free families are scored by "
            "the driver's own code, a plugin adds a model family"
        )
    return found


def verifier_names() -> tuple[str, ...]:
    """Every family: the shipped table, then those of installed plugins."""
    return (*VERIFIER_FAMILIES, *(name for name in _plugins() if name not in VERIFIER_FAMILIES))


def verifier_family(name: str) -> VerifierFamily:
    """The registry entry of `name`; a KeyError naming the known families if there is none."""
    if name in VERIFIER_FAMILIES:
        return VERIFIER_FAMILIES[name]
    plugins = _plugins()
    if name not in plugins:
        raise KeyError(f"unknown verifier '{name}', expected one of {verifier_names()}")
    return _plugin(name, plugins[name])


def model_free_names() -> tuple[str, ...]:
    """The families the driver scores itself, no replica hosting them: shipped ones only (a plugin adds a model
    family, `_plugin`)."""
    return tuple(name for name, family in VERIFIER_FAMILIES.items() if family.model_free)
