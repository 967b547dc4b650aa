"""A fitted compute-optimal policy as `ttsearch optimize` saves it and `ttsearch solve` uses it, and the one
difficulty-bin rule that fitting, cross-validation and deployment share.

The bin rule (`fit_thresholds` then `bin_of`): sort the fitting questions' scores (higher = easier); each group
of tied scores goes whole into the equal-size rank quantile that holds the group's middle rank; bin numbers
left empty collapse (fewer bins); a bin of fewer than `min_size` questions merges into its harder neighbour
(the last bin into its easier one). The thresholds are the midpoints between the scores on either side of each
bin change, and every question, fitted or new, is binned by `bin_of(score, thresholds)`: 1 + the number of
thresholds above its score, a score on a threshold going to the easier bin. So tied scores always share a bin,
and a question's fitting bin is its deployed bin by construction.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.errors import TTSearchError
from ttsearch.sweep.results import ResultsError, RunStore

POLICY_FILE = "policy.json"
POLICY_VERSION = 2
"""2: thresholds from `fit_thresholds`, the rule the choices were fitted on, and the score's aggregation.
Version 1 fitted its choices on rank bins that its thresholds did not reproduce."""


class SolveError(TTSearchError, ValueError):
    """A question the policy cannot answer as asked (budget too small, a label the sweep lacks, a failed search)."""


def bin_of(score: float, thresholds: Sequence[float]) -> int:
    """Bin 1 (easiest) for scores at or above the first threshold; a score on an edge goes to the easier bin."""
    return 1 + sum(score < edge for edge in thresholds)


def fit_thresholds(scores: Sequence[float], n_bins: int, min_size: int = 1) -> tuple[float, ...]:
    """Descending score edges between consecutive bins, fitted on `scores` (see the module docstring).

    Returns () (one bin) for no scores or a single distinct score. Raises ValueError on NaN scores.
    """
    values = [float(s) for s in scores]
    if any(math.isnan(v) for v in values):
        raise ValueError("difficulty scores must not be NaN")
    if n_bins < 1 or min_size < 1:
        raise ValueError(f"n_bins and min_size must be ≥ 1, got {n_bins}, {min_size}")
    distinct = sorted(Counter(values).items(), reverse=True)  # (score, count), easiest first
    labels, start = [], 0
    for _, count in distinct:  # a tie group goes whole into the rank quantile of its middle rank
        labels.append(int((start + (count - 1) / 2) * n_bins // len(values)))
        start += count
    while len(set(labels)) > 1:  # merge the first undersized bin into its harder neighbour (the last: easier)
        order = sorted(set(labels))
        sizes = Counter()
        for (_, count), label in zip(distinct, labels, strict=True):
            sizes[label] += count
        small = next((label for label in order if sizes[label] < min_size), None)
        if small is None:
            break
        at = order.index(small)
        into = order[at + 1] if at + 1 < len(order) else order[at - 1]
        labels = [into if label == small else label for label in labels]
    edges = []
    for i in range(1, len(distinct)):
        if labels[i - 1] != labels[i]:
            upper, lower = distinct[i - 1][0], distinct[i][0]
            middle = (upper + lower) / 2
            edges.append(middle if middle > lower else upper)  # adjacent floats: the midpoint may round down
    return tuple(edges)


@dataclass(frozen=True)
class Policy:
    """A saved policy: the strategy per (budget, bin) and how to bin a new question from its k-sample score."""

    choices: dict[tuple[int, int], str]
    difficulty: str
    estimation_samples: int
    thresholds: tuple[float, ...]
    """Score edges between consecutive bins, descending (`fit_thresholds` on the fitting questions)."""
    aggregation: str = "last"
    """How a sample's step scores became the score averaged into the difficulty score (`selection.aggregate`)."""

    def bin_of(self, score: float) -> int:
        """The bin of a question with this difficulty score: the rule the choices were fitted with."""
        return bin_of(score, self.thresholds)

    def strategy(self, budget: int, score: float) -> str:
        key = (budget, self.bin_of(score))
        if key not in self.choices:
            raise KeyError(f"no policy for budget {budget}; fitted budgets: {sorted({b for b, _ in self.choices})}")
        return self.choices[key]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": POLICY_VERSION,
                "difficulty": {
                    "kind": self.difficulty,
                    "estimation_samples": self.estimation_samples,
                    "aggregation": self.aggregation,
                    "n_bins": len(self.thresholds) + 1,
                    "thresholds": list(self.thresholds),
                },
                "choices": [
                    {"budget": budget, "bin": b, "strategy_label": label}
                    for (budget, b), label in sorted(self.choices.items())
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> Policy:
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as error:
            raise ResultsError(f"{where}: not a policy file (invalid JSON: {error})") from None
        if data.get("version") != POLICY_VERSION:
            raise ResultsError(
                f"{where}: policy version {data.get('version')!r}, expected {POLICY_VERSION}: re-run `ttsearch "
                "optimize` on the sweep to refit it (version 1 policies binned new questions differently from the fit)"
            )
        try:
            difficulty = data["difficulty"]
            return cls(
                {(int(c["budget"]), int(c["bin"])): c["strategy_label"] for c in data["choices"]},
                difficulty["kind"],
                int(difficulty["estimation_samples"]),
                tuple(difficulty["thresholds"]),
                difficulty.get("aggregation", "last"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ResultsError(
                f"{where}: malformed policy ({type(error).__name__}: {error}); re-run `ttsearch "
                "optimize` to write it again"
            ) from None


def save_policy(policy: Policy, run_dir: str | Path | RunStore) -> Path | str:
    """Write `RUN_DIR/policy.json` (atomically, on any filesystem); return where it went."""
    store = RunStore.of(run_dir)
    store.write_text(policy.to_json(), POLICY_FILE)
    return store.location(POLICY_FILE)


def load_policy(run_dir: str | Path | RunStore) -> Policy:
    """The policy `ttsearch optimize` saved in RUN_DIR."""
    store = RunStore.of(run_dir)
    if not store.exists(POLICY_FILE):
        raise ResultsError(f"no {POLICY_FILE} in {store.location()}: run `ttsearch optimize {store.location()}` first")
    return Policy.from_json(store.read_text(POLICY_FILE), str(store.location(POLICY_FILE)))
