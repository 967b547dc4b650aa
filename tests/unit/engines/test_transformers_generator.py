"""The transformers generator backend: vLLM's result semantics without vLLM.

These tests pin the post-processing (stop strings, EOS, padding) and the call planning; the embedded model,
in-process and as a Ray replica, is in tests/integration/test_transformers_generator.py, and on CUDA a tiny
random-init model in tests/gpu/test_cuda_engines.py.
"""

from __future__ import annotations

import pytest

from tests.fixtures import STEP, ask
from ttsearch.engines.transformers_generator import calls, finish, prefill_tokens
from ttsearch.search.requests import Completion

VOCAB = {0: "</s>", 1: "a", 2: "b", 3: "\n\n", 4: "c\n\nd", 5: "x##"}


def decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids if i != 0)


@pytest.mark.parametrize(
    ("tokens", "stop", "expected"),
    [
        ([1, 2, 3, 0, 0], STEP, Completion("ab", 3, "stop", "\n\n")),  # end ids after a stop string are padding
        ([1, 2, 0, 0], STEP, Completion("ab", 3, "stop")),  # EOS ends the answer and is counted
        ([1, 2, 1], STEP, Completion("aba", 3, "length")),
        ([1, 4, 0], STEP, Completion("ac", 2, "stop", "\n\n")),  # a stop string inside a token cuts the text there
        ([1, 5, 3], ("\n\n", "##"), Completion("ax", 2, "stop", "##")),  # the earliest stop string wins
        ([0], STEP, Completion("", 1, "stop")),
    ],
)
def test_finish_reports_rows_as_vllm_does(tokens, stop, expected):
    assert finish(tokens, {0}, stop, decode) == expected


def test_calls_group_sampling_settings_sort_by_prompt_and_cap_padded_tokens():
    batch = [ask(n=2), ask(n=2, max_tokens=8), ask(n=2), ask(n=1), ask(n=6), ask(n=3, temperature=0)]
    lengths = [30, 10, 6, 20, 8, 40]
    # Padded tokens of a call: rows × (longest prompt + max_tokens); the greedy request is one row.
    # Requests 2+4 would pad to 8 rows × 32 = 256 > 200, 4+3 to 7 × 44 = 308, 3+0 only to 3 × 54 = 162.
    assert list(calls(batch, lengths, max_call_tokens=200)) == [[2], [4], [3, 0], [1], [5]]
    assert list(calls(batch, lengths, max_call_tokens=10_000)) == [[2, 4, 3, 0], [1], [5]]


def test_a_padded_call_bills_each_request_its_rows_of_the_longest_prompt():
    # Rows are decoded samples: the greedy request is one row whatever its n; every row is padded to 40 tokens.
    batch = [ask(n=2), ask(n=3, temperature=0), ask(n=1)]
    assert prefill_tokens(batch, [12, 40, 7]) == [2 * 40, 1 * 40, 1 * 40]
    assert prefill_tokens([ask(n=4)], [9]) == [4 * 9], "alone in its call: no padding, still one prefill per row"
