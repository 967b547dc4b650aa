"""The generator replica on the embedded model: step expansion, sampling controls, prefix cache, streaming."""

from __future__ import annotations

import pytest

from ttsearch.config import EMBEDDED_MODEL
from ttsearch.engines.models import resolve_model
from ttsearch.search.requests import Generate, GenerateResult, Prompt

QUESTION = "What is the sum of the first five positive integers? Solve it step by step."
STEP = ("\n\n",)


@pytest.fixture(scope="module")
def replica(generator_replicas):
    """The session's shared engine (tests/conftest.py): other modules may have warmed its prefix cache."""
    return generator_replicas[0]


def generate(replica, *requests: Generate) -> list[GenerateResult]:
    """Run a batch and return the results in request order."""
    import ray

    results = dict(ray.get(ref) for ref in replica.generate.remote(list(requests)))
    return [results[i] for i in range(len(requests))]


def ask(user: str = QUESTION, prefix: str = "", **kwargs) -> Generate:
    sampling = {"n": 1, "temperature": 0.8, "max_tokens": 48} | kwargs
    return Generate(prompt=Prompt(system="", user=user, assistant_prefix=prefix), **sampling)


@pytest.mark.integration
def test_step_expansion_returns_n_completions_with_counts_and_reasons(replica):
    (result,) = generate(replica, ask(prefix="Step 1:", n=4, max_tokens=64, stop=STEP, seed=0))
    assert len(result.completions) == 4
    assert result.prompt_tokens > 0
    for completion in result.completions:
        assert 0 < completion.num_tokens <= 64
        assert completion.finish_reason in ("stop", "length")
        assert completion.stop_reason in (None, "\n\n")
        if completion.finish_reason == "length":
            assert completion.num_tokens == 64 and completion.stop_reason is None
        if completion.stop_reason == "\n\n":
            assert "\n\n" not in completion.text  # the delimiter is left out of the text


def warm(replica, request: Generate) -> None:
    """Put the prompt in the prefix cache, so the calls after this one all compute it the same way.

    Whether a prompt was cached, and which requests share the batch, change the bf16 logits in the last
    bits; at a near tie that changes the token picked, greedy or seeded. Reproducibility tests need both fixed.
    """
    generate(replica, Generate(request.prompt, n=1, temperature=0.0, max_tokens=1))


@pytest.mark.integration
def test_temperature_zero_is_deterministic(replica):
    request = ask(n=3, temperature=0.0)
    warm(replica, request)
    (first,) = generate(replica, request)
    (second,) = generate(replica, request)
    assert len(first.completions) == 3
    assert len({c.text for c in first.completions + second.completions}) == 1


@pytest.mark.integration
def test_fixed_seed_reproduces_samples(replica):
    warm(replica, ask())
    (a,) = generate(replica, ask(temperature=1.0, seed=123))
    (b,) = generate(replica, ask(temperature=1.0, seed=123))
    (c,) = generate(replica, ask(temperature=1.0, seed=124))
    assert a.completions == b.completions
    assert a.completions != c.completions


@pytest.mark.integration
def test_repeated_prompt_hits_the_prefix_cache(replica):
    user = "Read the problem twice before answering. " * 12 + QUESTION  # spans several KV blocks
    (first,) = generate(replica, ask(user, max_tokens=4))
    (second,) = generate(replica, ask(user, max_tokens=4))
    assert first.prompt_tokens == second.prompt_tokens > 64
    assert 0 < second.cached_prompt_tokens <= second.prompt_tokens


@pytest.mark.integration
def test_batch_streams_every_index_once_in_completion_order(replica):
    import ray

    questions = [QUESTION, "What is 7 times 8?", "Name a prime number larger than 10.", "Simplify 6/8."]
    batch = [ask(q, n=1 + i % 3, max_tokens=32, stop=STEP, seed=i) for i, q in enumerate(questions * 3)]
    batch.append(ask(questions[1], max_tokens=1))  # submitted last, finishes first
    before = ray.get(replica.stats.remote())

    streamed = [ray.get(ref) for ref in replica.generate.remote(batch)]

    indices = [index for index, _ in streamed]
    assert sorted(indices) == list(range(len(batch)))
    assert indices[-1] != len(batch) - 1
    for index, result in streamed:
        assert len(result.completions) == batch[index].n
    after = ray.get(replica.stats.remote())
    assert after["requests"] - before["requests"] == len(batch)
    assert after["generated_tokens"] - before["generated_tokens"] == sum(
        c.num_tokens for _, r in streamed for c in r.completions
    )
    assert 100e6 < after["num_parameters"] < 200e6


@pytest.mark.integration
def test_converted_checkpoint_answers_in_transformers(replica, cache_dir):
    """The dequantized checkpoint is a working model outside vLLM too (the verifier loads it this way)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(EMBEDDED_MODEL, cache_dir)  # prepared by the replica
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert "4" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
