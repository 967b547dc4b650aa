"""The OpenAI-compatible chat-completions API of `ttsearch serve`: request checking and response shapes.

Pure functions of the request body and the service's config, so every rule is unit-tested without Ray or a
model. A request is untrusted data: anything it may set is named here (the search settings ride in the body
as extra fields, as the `openai` client's `extra_body` sends them), every value is checked before any compute
is spent, and a bad one is a 4xx in OpenAI's error shape naming the field. Nothing a request says can make the
service load a model or read a file: the model name is only compared with the configured one.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ttsearch.config import (
    AGGREGATIONS,
    PROMPT_ALLOWANCE_TOKENS,
    SELECTIONS,
    ConfigError,
    StrategySpec,
    SweepConfig,
    running_strategy,
    strategy_errors,
    uses_revision_prompt,
    validate_revision_prompt,
    worst_case_tokens,
)
from ttsearch.search.strategies.registry import setting_names, setting_type, settings_keys, strategy, strategy_names
from ttsearch.serving.service import Answer, SearchSettings

# Fields a request may carry: OpenAI's that the service honours or checks, then the search's own.
OPENAI_FIELDS = ("model", "messages", "n", "stream", "user")
# What a request may choose of its search; the policy chooses all of it when `compute_optimal` is asked for, and
# each strategy's own settings (the registry's: `beam_width`, `early_stop_round`, ...) are fields too.
SEARCH_CHOICES = ("strategy", "selection", "aggregation")
SEARCH_FIELDS = (*SEARCH_CHOICES, "budget", "seed", "compute_optimal")


def setting_fields() -> tuple[str, ...]:
    """Every registered strategy's settings: the fields a request may set beside `SEARCH_FIELDS`."""
    names = (setting_names(strategy(name)) for name in strategy_names())
    return tuple(dict.fromkeys(key for keys in names for key in keys))


ROLES = ("system", "user", "assistant")


@dataclass
class ApiError(Exception):
    """A request the service refuses; `body()` is OpenAI's error object."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status == 404:
            return "not_found_error"
        if self.status == 503:
            return "overloaded_error"
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    question: str
    settings: SearchSettings


def parse_chat_request(raw: bytes, service: SweepConfig, has_policy: bool) -> ChatRequest:
    """Check a `POST /v1/chat/completions` body against the service's config (`serve` limits, the engine's
    context, the search settings); raise `ApiError` on the first problem."""
    cfg = service.serve
    if len(raw) > cfg.max_body_bytes:
        raise ApiError(413, f"request body of {len(raw)} bytes is over the limit of {cfg.max_body_bytes}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
    known = (*OPENAI_FIELDS, *SEARCH_FIELDS, *setting_fields())
    unknown = sorted(set(body) - set(known))
    if unknown:
        allowed = ", ".join(known)
        raise ApiError(400, f"unsupported field '{unknown[0]}'; this service reads {allowed}", unknown[0])
    model = body.get("model")
    if model is not None and model != cfg.model_name:
        raise ApiError(
            404, f"model '{model}' does not exist; this service serves '{cfg.model_name}'", "model", "model_not_found"
        )
    if body.get("stream"):
        raise ApiError(400, "streaming is not supported: a search returns its chosen solution once", "stream")
    if body.get("n", 1) != 1:
        raise ApiError(400, f"n must be 1 (the search returns one chosen solution), got {body.get('n')!r}", "n")
    question = _question(body.get("messages"), cfg.max_question_chars)
    return ChatRequest(question, _settings(body, service, has_policy))


def _question(messages: Any, max_chars: int) -> str:
    """The question is the last message, which must be the user's; earlier turns are not part of the search."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] must be an object with a role in {ROLES}", f"messages[{i}]")
    last = messages[-1]
    if last["role"] != "user":
        raise ApiError(
            400,
            f"the last message must be the user's question, got role '{last['role']}'",
            f"messages[{len(messages) - 1}].role",
        )
    text = _text(last.get("content"), f"messages[{len(messages) - 1}].content")
    if not text.strip():
        raise ApiError(400, "the question (the last user message) is empty", f"messages[{len(messages) - 1}].content")
    if len(text) > max_chars:
        raise ApiError(
            400,
            f"the question has {len(text)} characters, over the limit of {max_chars}",
            f"messages[{len(messages) - 1}].content",
            "context_length_exceeded",
        )
    return text


def _text(content: Any, param: str) -> str:
    """A message's text: a string, or OpenAI's list of {type: text, text} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "".join(part["text"] for part in content)
    raise ApiError(400, "content must be a string or a list of {type: 'text', text} parts", param)


def _integer(body: dict[str, Any], name: str, default: int, minimum: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, got {value!r}", name)
    if value < minimum:
        raise ApiError(400, f"'{name}' must be >= {minimum}, got {value}", name)
    return value


def _number(body: dict[str, Any], name: str, default: float, above: float, at_most: float | None = None) -> float:
    """A real number in (above, at_most]. Python's JSON reader takes NaN and Infinity, which no setting means."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # JSON true is a Python int
        raise ApiError(400, f"'{name}' must be a number, got {value!r}", name)
    number = float(value) if abs(value) < 1e300 else math.inf  # an integer too large for a float overflows
    if not math.isfinite(number):
        raise ApiError(400, f"'{name}' must be a finite number, got {value!r}", name)
    if at_most is None and not number > above:
        raise ApiError(400, f"'{name}' must be > {above}, got {number:g}", name)
    if at_most is not None and not above < number <= at_most:
        raise ApiError(400, f"'{name}' must be in ({above}, {at_most}], got {number:g}", name)
    return number


def _setting_value(body: dict[str, Any], name: str) -> str | int | float:
    """A strategy setting's JSON value, of the type its settings declare (an integer, a finite number, a string)."""
    value, kind = body[name], setting_type(name)
    if kind == "str":
        if not isinstance(value, str):
            raise ApiError(400, f"'{name}' must be a string, got {value!r}", name)
        return value
    if kind == "int":
        return _integer(body, name, value, -sys.maxsize)
    return _number(body, name, value, -math.inf)


def _choice(body: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise ApiError(400, f"unknown {name} {value!r}, expected one of {allowed}", name)
    return value


def _settings(body: dict[str, Any], service: SweepConfig, has_policy: bool) -> SearchSettings:
    cfg = service.serve
    budget = _integer(body, "budget", cfg.budget, 1)
    if budget > cfg.max_budget:
        raise ApiError(400, f"budget {budget} is over this service's maximum of {cfg.max_budget}", "budget")
    seed = _integer(body, "seed", 0, 0)
    compute_optimal = body.get("compute_optimal", False)
    if not isinstance(compute_optimal, bool):
        raise ApiError(400, f"'compute_optimal' must be true or false, got {compute_optimal!r}", "compute_optimal")
    if compute_optimal:
        if not has_policy:
            raise ApiError(
                400,
                "compute_optimal needs a policy fitted by `ttsearch optimize`; this service has none "
                "(serve.policy_dir)",
                "compute_optimal",
            )
        chosen = [name for name in (*SEARCH_CHOICES, *setting_fields()) if name in body]
        if chosen:
            raise ApiError(400, f"'{chosen[0]}' cannot be set with compute_optimal: the policy chooses it", chosen[0])
        return SearchSettings(budget=budget, seed=seed, compute_optimal=True)
    default = cfg.strategy
    name = _choice(body, "strategy", default.name, strategy_names())
    asked = {key: _setting_value(body, key) for key in setting_fields() if key in body}
    # A request sets some settings; the others are the service default's, those the requested strategy reads.
    defaults = default.filled_settings()
    lent = settings_keys(name, defaults | asked)
    spec = StrategySpec(
        name,
        [_choice(body, "selection", default.selections[0], SELECTIONS)],
        _choice(body, "aggregation", default.aggregation, AGGREGATIONS),
        {key: value for key, value in defaults.items() if key in lent} | asked,
    )
    for field_name, message in strategy_errors(spec, [budget]):
        raise ApiError(400, message, _param(field_name, body, name))
    runs = running_strategy(spec)
    chooser = "strategy" if runs == name else strategy(name).inner
    if uses_revision_prompt(spec):
        try:
            validate_revision_prompt(service.search.revision_prompt)
        except ConfigError as error:
            raise ApiError(400, f"this service is not configured for revisions: {error}", chooser) from None
    max_model_len = service.generator.max_model_len
    needed = PROMPT_ALLOWANCE_TOKENS + worst_case_tokens(spec, budget, service.search, "request")[0]
    if needed > max_model_len:
        what = name if runs == name else f"{name} over {runs}"
        raise ApiError(
            400,
            f"{what} at budget {budget} can need {needed} tokens of context, over the model's {max_model_len}",
            "lookahead" if runs == "lookahead" else chooser,
            "context_length_exceeded",
        )
    return SearchSettings(budget=budget, strategy=spec, selection=spec.selections[0], seed=seed)


def _param(field_name: str, body: dict[str, Any], name: str) -> str:
    """The request field to blame for a rule `strategy_errors` found broken on the spec's `field_name`: that field
    if the request set it, else what sized the check: the budget, or for early stopping's inner strategy (checked
    at the round's budget) the round."""
    if field_name in body:
        return field_name
    return "early_stop_round" if name == "early_stop" and not field_name.startswith("early_stop") else "budget"


def chat_completion(answer: Answer, model: str) -> dict[str, Any]:
    """The OpenAI chat-completion object for an answer; `usage` carries the search's whole cost."""
    usage = answer.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.solution or ""},
                "finish_reason": "stop",
            }
        ],
        "answer": answer.answer,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.generated_tokens,
            "total_tokens": usage.prompt_tokens + usage.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
            "samples": usage.samples,
            "verifier_tokens": usage.verifier_tokens,
            "cached_verifier_tokens": usage.cached_verifier_tokens,
            "flops": answer.flops,
            "wall_s": round(answer.wall_s, 3),
        },
        "search": {
            "strategy": answer.strategy_label,
            "search_budget": answer.search_budget,
            "estimation_samples": answer.estimation.samples,
            "difficulty_bin": answer.difficulty_bin,
            "difficulty_score": answer.difficulty_score,
        },
    }
