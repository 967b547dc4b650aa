"""Recorded generations: how `ttsearch import` reads another run's samples and turns them into rows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from ttsearch.config.base import require
from ttsearch.config.search import AGGREGATIONS, SELECTIONS


class RecordedFormat(StrEnum):
    """The layouts `ttsearch import` reads (docs/guides/importing.md)."""

    generic = "generic"  # ours: JSON Lines, one line per sample
    search_and_learn = "search_and_learn"  # huggingface/search-and-learn's completion datasets, a row per problem
    qwen_rm_maj = "qwen_rm_maj"  # QwenLM/Qwen2.5-Math's rm_maj evaluation input, a line per problem


RECORDED_FORMATS = tuple(fmt.value for fmt in RecordedFormat)

VERIFIER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A verifier's name becomes part of its rows' strategy labels (`best_of_n[NAME]/weighted`): no `/`, brackets or
spaces."""


@dataclass(frozen=True)
class RecordedConfig:
    """`ttsearch import` (and `export`): every problem's recorded samples are one best-of-N pool, and each verifier
    that scored them gives its own strategy rows (`best_of_n[NAME]/naive`, ...), so one report compares them. The
    run's `seeds` (one) and `pool_subsets` apply as in a sweep."""

    format: str = "generic"
    """the layout of the recorded file, a `RecordedFormat`: generic, search_and_learn or qwen_rm_maj"""
    verifier: str = "prm"
    """the name of the one verifier of the formats that do not name theirs (search-and-learn's `scores`, Qwen's
    `pred_score`); the generic format names each verifier itself"""
    budgets: list[int] = field(default_factory=list)
    """budgets of the rows, each at most the smallest pool; empty: 1, 2, 4, ... up to the smallest pool, and the
    pool size itself"""
    selections: list[str] = field(default_factory=lambda: ["naive", "weighted", "majority"])
    """the selections (`Selection` values) of every verifier's rows"""
    aggregation: str = "last"
    """how a sample's step scores become its score (one score, an outcome verifier's, reads the same either way)"""
    generator_parameters: int = 0
    """the recorded generator's parameter count, for FLOPs = 2 × parameters × tokens; 0: unknown, FLOPs read 0"""
    verifier_parameters: dict[str, int] = field(default_factory=dict)
    """verifier name → parameter count, for its rows' verifier FLOPs; a verifier not named: 0 (unknown)"""


def validate_recorded(section: RecordedConfig) -> None:
    """The checks a type cannot express; a ConfigError names the key, the rule and the value."""
    require(
        section.format in RECORDED_FORMATS,
        "recorded.format",
        f"unknown format '{section.format}', expected one of {RECORDED_FORMATS}",
    )
    require(
        bool(VERIFIER_NAME.fullmatch(section.verifier)),
        "recorded.verifier",
        f"letters, digits, '_', '.' or '-' (it names strategy labels), got {section.verifier!r}",
    )
    for i, budget in enumerate(section.budgets):
        require(budget > 0, f"recorded.budgets[{i}]", f"a budget must be > 0, got {budget}")
    require(bool(section.selections), "recorded.selections", "at least one selection is needed, got []")
    for i, mode in enumerate(section.selections):
        require(
            mode in SELECTIONS, f"recorded.selections[{i}]", f"unknown selection '{mode}', expected one of {SELECTIONS}"
        )
    require(
        section.aggregation in AGGREGATIONS,
        "recorded.aggregation",
        f"unknown aggregation '{section.aggregation}', expected one of {AGGREGATIONS}",
    )
    require(
        section.generator_parameters >= 0,
        "recorded.generator_parameters",
        f"must be >= 0, got {section.generator_parameters}",
    )
    for name, count in section.verifier_parameters.items():
        require(count >= 0, f"recorded.verifier_parameters.{name}", f"must be >= 0, got {count}")
