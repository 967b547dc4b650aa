"""`ttsearch serve` for real: the Ray Serve app on the session's Ray cluster with the embedded model, called over
HTTP with the official `openai` client (and raw HTTP where the client cannot send the bad request)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from omegaconf import OmegaConf

from tests.fixtures import STRATEGIES, free_port, write_policy
from ttsearch.config import load_config
from ttsearch.sweep.results import CONFIG

KEY = "test-key"
QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]
SHORT = ["search.max_steps=2", "search.max_step_tokens=24", "search.max_solution_tokens=48"]


@pytest.fixture(scope="module")
def service(ray_session, cache_dir, tmp_path_factory):
    """The app with a fitted policy, an API key, a small bounded queue and a batch window; yields its base URL."""
    from ray import serve
    from ttsearch.pipelines.serve import APP_NAME, build_app

    policy_dir = tmp_path_factory.mktemp("policy_run")
    fitted = load_config(None, [STRATEGIES, "budgets=[2,4]", "verifier.kind=lm_judge", *SHORT])
    (policy_dir / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.structured(fitted)))
    write_policy(policy_dir)
    port = free_port()
    overrides = [
        *SHORT,
        "generator.replicas=1",
        "generator.cpu_kv_cache_gib=1",
        f"cache_dir={cache_dir}",
        f"serve.api_key={KEY}",
        f"serve.policy_dir={policy_dir}",
        "serve.budget=2",
        "serve.strategy.name=best_of_n",
        "serve.max_budget=16",
        "serve.max_pending_requests=4",
        "serve.max_concurrent_searches=4",
        "serve.max_body_bytes=4096",
        "serve.max_question_chars=1000",
        "scheduler.batch_window_s=0.2",
    ]
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config": ["conf/serve.yaml"], "overrides": overrides}), name=APP_NAME, route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def client(url: str, key: str = KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **kwargs)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()


@pytest.mark.integration
def test_models_and_health(service):
    assert [m.id for m in client(service).models.list().data] == ["ttsearch"]
    health = httpx.get(f"{service}/health", timeout=30)
    assert health.status_code == 200 and health.json()["generator_replicas_in_rotation"] == 1


@pytest.mark.integration
def test_a_plain_question_is_answered_with_its_search_cost(service):
    completion = client(service).chat.completions.create(model="ttsearch", messages=QUESTION)
    assert completion.choices[0].message.role == "assistant" and completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    extra = completion.usage.model_extra
    assert extra["samples"] == 2 and extra["verifier_tokens"] > 0 and extra["flops"] > 0
    assert completion.model_extra["search"]["strategy"] == "best_of_n/weighted"
    assert "answer" in completion.model_extra


@pytest.mark.integration
def test_beam_and_compute_optimal_requests(service):
    beam = client(service).chat.completions.create(
        model="ttsearch", messages=QUESTION, extra_body={"strategy": "beam", "budget": 4, "beam_width": 2}
    )
    assert beam.model_extra["search"]["strategy"] == "beam(M=2)/weighted" and beam.usage.model_extra["samples"] >= 4
    stop = client(service).chat.completions.create(
        model="ttsearch",
        messages=QUESTION,
        extra_body={"strategy": "early_stop", "budget": 4, "early_stop_round": 2, "early_stop_share": 0.5},
    )
    assert stop.model_extra["search"]["strategy"] == "early_stop(best_of_n,r=2,s=0.5)/weighted"
    assert stop.usage.model_extra["samples"] in (2, 4), "one or two rounds of 2 samples"
    particles = client(service).chat.completions.create(
        model="ttsearch", messages=QUESTION, extra_body={"strategy": "particle_filter", "budget": 2}
    )
    assert particles.model_extra["search"]["strategy"] == "particle_filter(T=1)/weighted"
    assert particles.usage.model_extra["samples"] >= 2, "two particles, a step each per round"
    optimal = client(service).chat.completions.create(
        model="ttsearch", messages=QUESTION, extra_body={"compute_optimal": True, "budget": 6}
    )
    search = optimal.model_extra["search"]
    assert search["estimation_samples"] == 2 and search["search_budget"] == 4, "6 - 2 estimation samples leaves 4"
    assert search["strategy"] in ("best_of_n/majority", "beam(M=2)/weighted") and search["difficulty_bin"] >= 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "messages", "status"),
    [
        ({}, [], 400),  # empty messages
        ({}, [*QUESTION, {"role": "assistant", "content": "7"}], 400),  # the last message is not the user's
        ({"strategy": "mcts"}, QUESTION, 400),
        ({"selection": "best"}, QUESTION, 400),
        ({"budget": 0}, QUESTION, 400),
        ({"budget": 32}, QUESTION, 400),  # above serve.max_budget
        ({"strategy": "beam", "budget": 6, "beam_width": 4}, QUESTION, 400),  # does not split into beams
        ({"compute_optimal": True, "budget": 3}, QUESTION, 400),  # leaves 1 after 2 estimation samples
        ({"user": "x" * 5000}, QUESTION, 413),  # oversized body
        ({}, [{"role": "user", "content": "x" * 2000}], 400),  # oversized prompt (serve.max_question_chars)
    ],
)
def test_bad_requests_get_their_status_in_openais_error_shape(service, extra, messages, status):
    with pytest.raises(openai.APIStatusError) as caught:
        client(service).chat.completions.create(model="ttsearch", messages=messages, extra_body=extra)
    assert caught.value.status_code == status
    assert caught.value.body["message"] and caught.value.body["type"]


@pytest.mark.integration
def test_missing_fields_wrong_model_wrong_key_and_bad_json(service):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    missing = httpx.post(f"{service}/v1/chat/completions", json={"model": "ttsearch"}, headers=headers, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    garbage = httpx.post(f"{service}/v1/chat/completions", content=b"{nope", headers=headers, timeout=30)
    assert garbage.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client(service).chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        client(service, key="wrong").chat.completions.create(model="ttsearch", messages=QUESTION)
    assert httpx.get(f"{service}/v1/stats", timeout=30).status_code == 401


@pytest.mark.integration
def test_concurrent_users_share_generator_calls(service):
    """Three users at once: the scheduler's statistics show requests of several users in one generator call."""
    before = stats(service)

    async def three_users():
        async with openai.AsyncOpenAI(base_url=f"{service}/v1", api_key=KEY, max_retries=0) as users:
            return await asyncio.gather(
                *(
                    users.chat.completions.create(
                        model="ttsearch",
                        messages=[{"role": "user", "content": q}],
                        extra_body={"strategy": "beam", "budget": 2, "beam_width": 2},
                    )
                    for q in ("What is 3 + 4?", "What is 10 - 6?", "What is 2 * 5?")
                )
            )

    answers = asyncio.run(three_users())
    after = stats(service)
    assert all(a.choices[0].message.content is not None for a in answers)
    assert after["shared_calls"]["generator"] > before.get("shared_calls", {}).get("generator", 0)
    assert after["max_runs_per_call"]["generator"] >= 2


@pytest.mark.integration
def test_overload_gets_503_with_retry_after_and_a_cancelled_request_stops(service):
    """serve.max_pending_requests=4: of 8 requests at once some are turned away; none of the admitted fail."""

    async def eight_users():
        async with httpx.AsyncClient(timeout=600) as http:
            body = {"model": "ttsearch", "messages": QUESTION, "strategy": "beam", "budget": 4, "beam_width": 2}
            return await asyncio.gather(
                *(
                    http.post(f"{service}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
                    for _ in range(8)
                )
            )

    responses = asyncio.run(eight_users())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(503) >= 4 and set(statuses) == {200, 503}, statuses
    turned_away = next(r for r in responses if r.status_code == 503)
    assert turned_away.headers["retry-after"] == "5" and json.loads(turned_away.content)["error"]["code"]

    cancelled_before = stats(service)["cancelled_runs"]
    with pytest.raises(openai.APITimeoutError):  # the client gives up and disconnects
        client(service, timeout=1.0).chat.completions.create(
            model="ttsearch", messages=QUESTION, extra_body={"strategy": "beam", "budget": 16, "beam_width": 4}
        )
    deadline = time.monotonic() + 60
    while stats(service)["cancelled_runs"] == cancelled_before and time.monotonic() < deadline:
        time.sleep(1)
    assert stats(service)["cancelled_runs"] == cancelled_before + 1, "the disconnect cancelled the search"
