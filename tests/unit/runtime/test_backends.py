"""The model-free verifiers the driver runs in-process."""

from __future__ import annotations

import asyncio

import pytest

from ttsearch.runtime.backends import ModelFreeVerifier
from ttsearch.search.requests import Score


def scores(kind: str, batch: list[Score]) -> list[tuple[float, ...]]:
    async def collect():
        return dict([item async for item in ModelFreeVerifier(kind).submit(batch)])

    results = asyncio.run(collect())
    return [results[i].step_scores for i in range(len(batch))]


def test_oracle_scores_by_the_final_answer_and_majority_scores_one():
    batch = [
        Score(question="q", steps=("a", "so \\boxed{\\frac12}"), reference="0.5"),
        Score(question="q", steps=("\\boxed{3}",), reference="4"),
        Score(question="q", steps=("no answer yet",), reference="4"),
    ]
    assert scores("oracle", batch) == [(1.0, 1.0), (0.0,), (0.0,)]
    assert scores("majority", batch) == [(1.0, 1.0), (1.0,), (1.0,)]


def test_hash_scores_are_deterministic_prefix_scores_in_unit_interval():
    a, b = Score(question="q", steps=("x", "y")), Score(question="q", steps=("x", "z"))
    first, second = scores("hash", [a, b])
    assert first[0] == second[0] and first[1] != second[1], "a step's score depends only on its prefix"
    assert all(0.0 <= s < 1.0 for s in first + second)
    assert scores("hash", [a]) == [first]


def test_oracle_needs_the_reference_and_model_kinds_are_refused():
    with pytest.raises(ValueError, match="reference answer"):
        scores("oracle", [Score(question="q", steps=("\\boxed{1}",))])
    with pytest.raises(ValueError, match="not a model-free verifier"):
        ModelFreeVerifier("lm_judge")
