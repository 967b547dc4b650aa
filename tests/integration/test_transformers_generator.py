"""The transformers generator backend on the embedded model, in-process and as a Ray replica, checked against the
vLLM replica (its post-processing and call planning: tests/unit/engines/test_transformers_generator.py)."""

from __future__ import annotations

import pytest

from tests.fixtures import ENDINGS, ask
from tests.fixtures import QUESTION_PROMPT as QUESTION
from tests.fixtures import run_batch as run
from ttsearch.config import GeneratorConfig, load_config
from ttsearch.engines.transformers_generator import TransformersGenerator
from ttsearch.search.requests import Generate, Prompt, chat_prompt_ids
from ttsearch.sweep.jobs import run_sweep


@pytest.fixture(scope="module")
def engine(cache_dir) -> TransformersGenerator:
    return TransformersGenerator(GeneratorConfig(backend="transformers", num_cpus=2), cache_dir)


@pytest.mark.integration
def test_samples_stop_at_steps_and_a_batch_replays_from_its_seeds(engine):
    batch = [ask(n=3, seed=1), ask(n=2, max_tokens=6, stop=(), seed=2)]
    first = run(engine, batch)
    steps, capped = first
    assert len(steps.completions) == 3 and steps.prompt_tokens > 0
    for completion in steps.completions:
        assert 0 < completion.num_tokens <= 24 and "\n\n" not in completion.text
        assert (completion.finish_reason, completion.stop_reason) in ENDINGS
    assert [(c.finish_reason, c.num_tokens) for c in capped.completions] == [("length", 6)] * 2
    assert run(engine, batch) == first, "same batch, same seeds: same samples"
    assert run(engine, [ask(n=3, seed=7), batch[1]])[0] != steps, "another seed samples differently"


@pytest.mark.integration
def test_sampling_overrides_the_checkpoints_generation_defaults(engine, monkeypatch):
    """Like vLLM given explicit sampling parameters: whatever top-k, top-p or repetition penalty the
    checkpoint's generation_config sets (transformers would apply them, top_k=50 if unset), sampling
    uses the whole distribution at the request's temperature, and greedy is plain argmax."""
    seen = []
    generate = engine.model.generate

    def recording(**kwargs):
        seen.append(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(engine.model, "generate", recording)
    run(engine, [ask(n=2, temperature=0.7, max_tokens=4), ask(n=2, temperature=0, max_tokens=4)])
    sampled, greedy = sorted(seen, key=lambda kwargs: not kwargs["do_sample"])
    overridden = ("temperature", "top_k", "top_p", "repetition_penalty")
    assert [sampled[key] for key in overridden] == [0.7, 0, 1.0, 1.0]
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1.0


@pytest.mark.integration
def test_greedy_decodes_once_for_n_copies(engine):
    before = engine.totals.generated_tokens
    (result,) = run(engine, [ask(n=3, temperature=0, seed=None)])
    assert len(set(result.completions)) == 1 and len(result.completions) == 3
    assert engine.totals.generated_tokens - before == result.completions[0].num_tokens
    assert result.prompt_tokens == len(chat_prompt_ids(engine.tokenizer, QUESTION)), "one row: one prefill"


@pytest.fixture(scope="module")
def float32_replicas(ray_session, cache_dir):
    """One replica per backend, both in float32: there the two engines' greedy decoding agrees exactly."""
    from ttsearch.actors.generator import create_generator_replicas

    replicas = {
        backend: create_generator_replicas(
            GeneratorConfig(backend=backend, dtype="float32", cpu_kv_cache_gib=0.5), cache_dir
        )[0]
        for backend in ("transformers", "vllm")
    }
    yield replicas
    for replica in replicas.values():
        ray_session.kill(replica)


@pytest.mark.integration
def test_transformers_replica_matches_the_vllm_replica_greedily(ray_session, float32_replicas):
    batch = [
        ask(temperature=0, max_tokens=48),
        ask(temperature=0, max_tokens=7, stop=()),
        Generate(Prompt("", "Say hi."), n=2, temperature=0, max_tokens=64),
        Generate(Prompt("", "What is 2+3? Answer with one number."), n=1, temperature=0, max_tokens=64),
    ]
    answers = {  # index -> (completions, prompt tokens); only vLLM has a prefix cache to hit
        backend: {i: (r.completions, r.prompt_tokens) for i, r in ray_session.get(list(replica.generate.remote(batch)))}
        for backend, replica in float32_replicas.items()
    }
    samples = {backend: {i: c for i, (c, _) in by_index.items()} for backend, by_index in answers.items()}
    assert samples["transformers"] == samples["vllm"]
    # vLLM bills each prompt once; transformers bills what its padded call computed. Requests 2 and 3 share
    # their sampling settings, so they run in one call, each padded to the longer prompt (one row each: greedy).
    prompts = {i: tokens for i, (_, tokens) in answers["vllm"].items()}
    padded = max(prompts[2], prompts[3])
    assert {i: tokens for i, (_, tokens) in answers["transformers"].items()} == prompts | {2: padded, 3: padded}
    reasons = {(c.finish_reason, c.stop_reason) for completions, _ in answers["vllm"].values() for c in completions}
    assert reasons == ENDINGS, "every way a sample ends is compared"
    stats = ray_session.get(float32_replicas["transformers"].stats.remote())
    assert stats["requests"] == len(batch) and 100e6 < stats["num_parameters"] < 200e6


@pytest.mark.integration
def test_a_sweep_runs_on_the_transformers_backend(tmp_path, cache_dir, float32_replicas):
    cfg = load_config(
        None,
        [
            "generator.backend=transformers",
            "verifier.kind=majority",
            "data.limit=2",
            "budgets=[2]",
            "search.max_steps=2",
            "search.max_step_tokens=16",
            "search.max_solution_tokens=32",
            "strategies=[{name: best_of_n, selections: [majority]}, {name: beam, beam_width: 2}]",
            f"output_dir={tmp_path / 'run'}",
            f"cache_dir={cache_dir}",
        ],
    )
    rows = run_sweep(cfg, replicas=([float32_replicas["transformers"]], [])).to_pylist()
    assert len(rows) == 2 * 2
    for row in rows:
        assert row["error"] is None, row["error"]
        assert row["generated_tokens"] > 0 and row["samples"] >= 2
