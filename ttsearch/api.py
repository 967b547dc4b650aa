"""The OpenAI-compatible chat-completions API of `ttsearch serve`: request checking and response shapes.

Pure functions of the request body and the service's config, so every rule is unit-tested without Ray or a
model. A request is untrusted data: anything it may set is named here (the search settings ride in the body
as extra fields, as the `openai` client's `extra_body` sends them), every value is checked before any compute
is spent, and a bad one is a 4xx in OpenAI's error shape naming the field. Nothing a request says can make the
service load a model or read a file: the model name is only compared with the configured one.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from ttsearch.config import (
    PROMPT_ALLOWANCE_TOKENS,
    SELECTIONS,
    STRATEGIES,
    ConfigError,
    StrategySpec,
    SweepConfig,
    strategy_errors,
    validate_revision_prompt,
    worst_case_tokens,
)
from ttsearch.service import Answer, SearchSettings

# Fields a request may carry: OpenAI's that the service honours or checks, then the search's own.
OPENAI_FIELDS = ("model", "messages", "n", "stream", "user")
SEARCH_FIELDS = ("strategy", "budget", "beam_width", "lookahead", "selection", "aggregation", "seed", "compute_optimal")
CHOSEN_BY_POLICY = ("strategy", "beam_width", "lookahead", "selection", "aggregation")
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
    unknown = sorted(set(body) - set(OPENAI_FIELDS) - set(SEARCH_FIELDS))
    if unknown:
        allowed = ", ".join((*OPENAI_FIELDS, *SEARCH_FIELDS))
        raise ApiError(400, f"unsupported field '{unknown[0]}'; this service reads {allowed}", unknown[0])
    model = body.get("model")
    if model is not None and model != cfg.model_name:
        raise ApiError(404, f"model '{model}' does not exist; this service serves '{cfg.model_name}'", "model",
                       "model_not_found")  # fmt: skip
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
        raise ApiError(400, f"the last message must be the user's question, got role '{last['role']}'",
                       f"messages[{len(messages) - 1}].role")  # fmt: skip
    text = _text(last.get("content"), f"messages[{len(messages) - 1}].content")
    if not text.strip():
        raise ApiError(400, "the question (the last user message) is empty", f"messages[{len(messages) - 1}].content")
    if len(text) > max_chars:
        raise ApiError(400, f"the question has {len(text)} characters, over the limit of {max_chars}",
                       f"messages[{len(messages) - 1}].content", "context_length_exceeded")  # fmt: skip
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
            raise ApiError(400, "compute_optimal needs a policy fitted by `ttsearch optimize`; this service has none "
                                "(serve.policy_dir)", "compute_optimal")  # fmt: skip
        chosen = [name for name in CHOSEN_BY_POLICY if name in body]
        if chosen:
            raise ApiError(400, f"'{chosen[0]}' cannot be set with compute_optimal: the policy chooses it", chosen[0])
        return SearchSettings(budget=budget, seed=seed, compute_optimal=True)
    default = cfg.strategy
    name = _choice(body, "strategy", default.name, STRATEGIES)
    spec = replace(
        default if name == default.name else StrategySpec(name=name),
        beam_width=_integer(body, "beam_width", default.beam_width, 1),
        lookahead=_integer(body, "lookahead", default.lookahead if name == "lookahead" else 0, 0),
        aggregation=_choice(body, "aggregation", default.aggregation, ("last", "min", "prod")),
    )
    selection = _choice(body, "selection", default.selections[0], SELECTIONS)
    spec = replace(spec, selections=[selection])
    for field_name, message in strategy_errors(spec, [budget]):
        raise ApiError(400, message, field_name if field_name in body else "budget")
    if name == "revisions":
        try:
            validate_revision_prompt(service.search.revision_prompt)
        except ConfigError as error:
            raise ApiError(400, f"this service is not configured for revisions: {error}", "strategy") from None
    max_model_len = service.generator.max_model_len
    needed = PROMPT_ALLOWANCE_TOKENS + worst_case_tokens(spec, budget, service.search, "request")[0]
    if needed > max_model_len:
        raise ApiError(400, f"{name} at budget {budget} can need {needed} tokens of context, over the model's "
                            f"{max_model_len}", "lookahead" if name == "lookahead" else "strategy",
                       "context_length_exceeded")  # fmt: skip
    return SearchSettings(budget=budget, strategy=spec, selection=selection, seed=seed)


def chat_completion(answer: Answer, model: str) -> dict[str, Any]:
    """The OpenAI chat-completion object for an answer; `usage` carries the search's whole cost."""
    usage = answer.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.solution or ""},
            "finish_reason": "stop",
        }],
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
    }  # fmt: skip
