"""Incremental scoring on the embedded model's LM judge: the check tests/unit/engines/test_prm_families.py runs for
every tiny PRM family."""

from __future__ import annotations

import pytest

from tests.fixtures import ITEMS, assert_incremental_matches_full
from ttsearch.config import VerifierConfig
from ttsearch.engines.prm import PRMScorer


@pytest.mark.integration
def test_incremental_scoring_matches_full_lm_judge(cache_dir: str) -> None:
    judge = PRMScorer.load(VerifierConfig(kind="lm_judge"), cache_dir=cache_dir)
    assert_incremental_matches_full(judge, [ITEMS[2]])
