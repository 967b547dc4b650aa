"""The service's request rules and response shape, without Ray or a model: every bad request is a 4xx naming
its field, before any compute."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion

from ttsearch.config import RevisionPromptConfig, SearchConfig, ServeConfig, StrategySpec, SweepConfig
from ttsearch.search.outcomes import Usage
from ttsearch.serving.api import ApiError, chat_completion, parse_chat_request
from ttsearch.serving.service import Answer

SERVE = ServeConfig(max_budget=16, max_body_bytes=2048, max_question_chars=200, budget=4)
SEARCH = SearchConfig(max_steps=4, max_step_tokens=48, max_solution_tokens=192)
QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]


def parse(body, serve=SERVE, has_policy=False, search=SEARCH):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_chat_request(raw, SweepConfig(serve=serve, search=search), has_policy)


def refused(body, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(body, **kwargs)
    return caught.value


def test_a_plain_request_gets_the_configured_default_search():
    request = parse({"model": "ttsearch", "messages": QUESTION})
    assert request.question == "What is 3 + 4?"
    settings = request.settings
    assert (settings.budget, settings.strategy.name, settings.selection, settings.seed) == (
        4,
        "best_of_n",
        "weighted",
        0,
    )
    assert not settings.compute_optimal


def test_search_settings_ride_in_the_body():
    settings = parse(
        {
            "messages": QUESTION,
            "strategy": "beam",
            "budget": 8,
            "beam_width": 2,
            "selection": "majority",
            "aggregation": "min",
            "seed": 7,
        }
    ).settings
    assert (settings.strategy.name, settings.strategy.options.beam_width, settings.strategy.aggregation) == (
        "beam",
        2,
        "min",
    )
    assert (settings.budget, settings.selection, settings.seed) == (8, "majority", 7)
    lookahead = parse({"messages": QUESTION, "strategy": "lookahead", "beam_width": 2, "lookahead": 1}).settings
    assert lookahead.strategy.options.lookahead == 1


def test_text_parts_and_earlier_turns_are_accepted():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]},
    ]
    assert parse({"messages": messages}).question == "What is 2+2?"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": "What is 3 + 4?"}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]"),
        ({"messages": [*QUESTION, {"role": "assistant", "content": "7"}]}, 400, "messages[1].role"),
        ({"messages": [{"role": "user", "content": "   "}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x" * 201}]}, 400, "messages[0].content"),
        ({"messages": QUESTION, "strategy": "mcts"}, 400, "strategy"),
        ({"messages": QUESTION, "selection": "best"}, 400, "selection"),
        ({"messages": QUESTION, "aggregation": "mean"}, 400, "aggregation"),
        ({"messages": QUESTION, "budget": 0}, 400, "budget"),
        ({"messages": QUESTION, "budget": -4}, 400, "budget"),
        ({"messages": QUESTION, "budget": 32}, 400, "budget"),
        ({"messages": QUESTION, "budget": "8"}, 400, "budget"),
        ({"messages": QUESTION, "budget": True}, 400, "budget"),
        ({"messages": QUESTION, "strategy": "beam", "budget": 6, "beam_width": 4}, 400, "beam_width"),
        ({"messages": QUESTION, "strategy": "beam", "budget": 2}, 400, "budget"),  # default M=4 > 2
        ({"messages": QUESTION, "strategy": "beam", "beam_width": 0}, 400, "beam_width"),
        ({"messages": QUESTION, "lookahead": 2}, 400, "lookahead"),  # best-of-N does not roll out
        ({"messages": QUESTION, "seed": -1}, 400, "seed"),
        ({"messages": QUESTION, "temperature": 2.0}, 400, "temperature"),
        ({"messages": QUESTION, "model": "gpt-4o"}, 404, "model"),
        ({"messages": QUESTION, "stream": True}, 400, "stream"),
        ({"messages": QUESTION, "n": 3}, 400, "n"),
        ({"messages": QUESTION, "compute_optimal": True}, 400, "compute_optimal"),  # no policy configured
        ({"messages": QUESTION, "compute_optimal": "yes"}, 400, "compute_optimal"),
        ([QUESTION], 400, None),
    ],
)
def test_bad_requests_are_refused_naming_the_field(body, status, param):
    error = refused(body)
    assert (error.status, error.param) == (status, param), error.message
    shape = error.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"} and shape["message"]


def test_body_limits_and_invalid_json():
    assert refused(b"{not json").status == 400
    big = json.dumps({"messages": QUESTION, "user": "x" * 4096}).encode()
    assert refused(big).status == 413


def test_compute_optimal_leaves_the_strategy_to_the_policy():
    settings = parse({"messages": QUESTION, "compute_optimal": True, "budget": 8}, has_policy=True).settings
    assert settings.compute_optimal and settings.budget == 8
    error = refused({"messages": QUESTION, "compute_optimal": True, "strategy": "beam"}, has_policy=True)
    assert (error.status, error.param) == (400, "strategy")


def test_a_search_longer_than_the_models_context_is_refused():
    error = refused({"messages": QUESTION, "strategy": "lookahead", "beam_width": 2, "lookahead": 40})
    assert (error.status, error.param, error.code) == (400, "lookahead", "context_length_exceeded")


def test_revisions_need_the_revision_prompt_configured():
    error = refused({"messages": QUESTION, "strategy": "revisions", "budget": 4})
    assert (error.status, error.param) == (400, "strategy") and "attempt_format" in error.message
    prompt = RevisionPromptConfig(attempt_format="Attempt {number}:\n{attempt}", instruction="Write a new solution.")
    search = SearchConfig(max_steps=4, max_step_tokens=48, max_solution_tokens=192, revision_prompt=prompt)
    settings = parse({"messages": QUESTION, "strategy": "revisions", "budget": 4}, search=search).settings
    assert settings.strategy.name == "revisions" and settings.strategy.options.revision_length == 4


def test_the_configured_default_strategy_keeps_its_settings():
    serve = ServeConfig(
        budget=4, strategy=StrategySpec.of(name="beam", beam_width=2, aggregation="min", selections=["majority"])
    )
    settings = parse({"messages": QUESTION}, serve=serve).settings
    assert (settings.strategy.options.beam_width, settings.strategy.aggregation, settings.selection) == (
        2,
        "min",
        "majority",
    )


def test_the_response_is_an_openai_chat_completion_with_the_search_cost():
    search = Usage(
        generated_tokens=120,
        prompt_tokens=300,
        cached_prompt_tokens=200,
        samples=4,
        verifier_tokens=90,
        cached_verifier_tokens=60,
        scored_solutions=4,
    )
    estimation = Usage(generated_tokens=30, prompt_tokens=40, samples=2)
    answer = Answer(
        solution="3 + 4 = 7.\n\n$\\boxed{7}$",
        answer="7",
        strategy_label="best_of_n/weighted",
        search_budget=4,
        search=search,
        estimation=estimation,
        flops=1.5e12,
        wall_s=2.0,
    )
    body = chat_completion(answer, "ttsearch")
    parsed = ChatCompletion.model_validate(body)  # the official client's own model of the response
    assert parsed.choices[0].message.content == answer.solution and parsed.model == "ttsearch"
    assert parsed.usage.completion_tokens == 150 and parsed.usage.prompt_tokens == 340
    assert body["usage"]["samples"] == 6 and body["usage"]["verifier_tokens"] == 90 and body["answer"] == "7"
    assert body["search"]["estimation_samples"] == 2


def test_the_newer_strategies_take_their_settings_from_the_body():
    dvts = parse({"messages": QUESTION, "strategy": "dvts", "budget": 8, "beam_width": 2}).settings.strategy
    assert (dvts.name, dvts.options.beam_width) == ("dvts", 2)
    rebase = parse({"messages": QUESTION, "strategy": "rebase", "rebase_temperature": 0.5}).settings.strategy
    assert (rebase.name, rebase.options.rebase_temperature) == ("rebase", 0.5)
    particles = parse({"messages": QUESTION, "strategy": "particle_filter", "particle_temperature": 2}).settings
    assert particles.strategy.options.particle_temperature == 2.0 and isinstance(
        particles.strategy.options.particle_temperature, float
    )
    body = {
        "messages": QUESTION,
        "strategy": "early_stop",
        "budget": 8,
        "early_stop_inner": "beam",
        "beam_width": 2,
        "early_stop_round": 4,
        "early_stop_share": 1,
        "selection": "majority",
    }
    early = parse(body).settings
    assert early.strategy == StrategySpec.of(
        name="early_stop",
        early_stop_inner="beam",
        beam_width=2,
        early_stop_round=4,
        early_stop_share=1.0,
        selections=["majority"],
    )
    assert (early.budget, early.selection) == (8, "majority")


def test_unset_settings_of_the_newer_strategies_are_the_configured_defaults():
    default = StrategySpec.of(
        name="early_stop",
        early_stop_inner="lookahead",
        beam_width=2,
        lookahead=1,
        early_stop_round=4,
        early_stop_share=0.5,
    )
    serve = ServeConfig(budget=8, max_budget=16, strategy=default)
    assert parse({"messages": QUESTION}, serve=serve).settings.strategy.record() == default.record()
    rebase = parse({"messages": QUESTION, "strategy": "rebase"}, serve=serve).settings.strategy
    assert (rebase.name, rebase.options.rebase_temperature) == ("rebase", 0.2), (
        "its own default: not a key of the default"
    )
    assert not hasattr(rebase.options, "lookahead"), "k only for lookahead"
    lookahead = parse({"messages": QUESTION, "strategy": "lookahead"}, serve=serve).settings.strategy
    assert (lookahead.options.beam_width, lookahead.options.lookahead) == (2, 1)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"strategy": "rebase", "rebase_temperature": 0}, "rebase_temperature"),
        ({"strategy": "rebase", "rebase_temperature": -0.5}, "rebase_temperature"),
        ({"strategy": "particle_filter", "particle_temperature": "1.0"}, "particle_temperature"),
        ({"strategy": "particle_filter", "particle_temperature": True}, "particle_temperature"),
        ({"strategy": "early_stop", "early_stop_round": 3}, "early_stop_round"),  # does not divide budget 4
        ({"strategy": "early_stop", "early_stop_round": 0}, "early_stop_round"),
        ({"strategy": "early_stop", "early_stop_round": 2.0}, "early_stop_round"),
        ({"strategy": "early_stop", "budget": 2}, "budget"),  # the default round of 4 > 2
        ({"strategy": "early_stop", "early_stop_share": 1.5}, "early_stop_share"),
        ({"strategy": "early_stop", "early_stop_share": 0}, "early_stop_share"),
        ({"strategy": "early_stop", "early_stop_inner": "early_stop"}, "early_stop_inner"),
        ({"strategy": "early_stop", "early_stop_inner": "mcts"}, "early_stop_inner"),
        # the inner strategy is checked at the round's budget: beam's default M=4 does not fit a round of 2
        ({"strategy": "early_stop", "early_stop_inner": "beam", "early_stop_round": 2}, "early_stop_round"),
        ({"strategy": "early_stop", "early_stop_inner": "beam", "budget": 8, "beam_width": 8}, "beam_width"),
        ({"strategy": "early_stop", "lookahead": 1}, "lookahead"),  # best-of-N rounds do not roll out
        ({"strategy": "dvts", "budget": 6, "beam_width": 4}, "beam_width"),
    ],
)
def test_bad_settings_of_the_newer_strategies_are_refused_naming_the_field(extra, param):
    error = refused({"messages": QUESTION, **extra})
    assert (error.status, error.param) == (400, param), error.message
    assert "unsupported" not in error.message, "refused for its value, not as an unknown field"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e400"])
def test_numbers_that_are_no_setting_are_refused(literal):
    raw = b'{"messages": [{"role": "user", "content": "x"}], "strategy": "rebase", "rebase_temperature": ' + literal
    error = refused(raw + b"}")
    assert (error.status, error.param) == (400, "rebase_temperature") and "finite" in error.message, error.message


@pytest.mark.parametrize(
    "extra",
    [
        {"rebase_temperature": 0.5},
        {"particle_temperature": 1.0},
        {"early_stop_inner": "beam"},
        {"early_stop_round": 2},
        {"early_stop_share": 0.5},
    ],
)
def test_compute_optimal_refuses_the_newer_strategies_settings(extra):
    error = refused({"messages": QUESTION, "compute_optimal": True, **extra}, has_policy=True)
    assert (error.status, error.param) == (400, next(iter(extra))) and "policy chooses" in error.message


def test_early_stopping_revisions_needs_the_revision_prompt_configured():
    body = {"messages": QUESTION, "strategy": "early_stop", "early_stop_inner": "revisions", "budget": 8}
    error = refused(body)
    assert (error.status, error.param) == (400, "early_stop_inner") and "attempt_format" in error.message
    prompt = RevisionPromptConfig(attempt_format="Attempt {number}:\n{attempt}", instruction="Write a new solution.")
    search = SearchConfig(max_steps=4, max_step_tokens=48, max_solution_tokens=192, revision_prompt=prompt)
    spec = parse(body, search=search).settings.strategy
    assert (spec.name, spec.options.early_stop_inner, spec.options.early_stop_round) == ("early_stop", "revisions", 4)
    # A service whose default is revisions lends its chain settings, which a request cannot set, to early stopping.
    serve = ServeConfig(max_budget=16, budget=4, strategy=StrategySpec.of(name="revisions", revision_length=2))
    assert parse(body, serve=serve, search=search).settings.strategy.options.inner.revision_length == 2


def test_early_stopping_lookahead_longer_than_the_context_names_lookahead():
    error = refused(
        {
            "messages": QUESTION,
            "strategy": "early_stop",
            "early_stop_inner": "lookahead",
            "beam_width": 2,
            "lookahead": 40,
        }
    )
    assert (error.status, error.param, error.code) == (400, "lookahead", "context_length_exceeded")
