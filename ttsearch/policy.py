"""A fitted compute-optimal policy as `ttsearch optimize` saves it and `ttsearch solve` uses it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.errors import TTSearchError
from ttsearch.results import ResultsError, RunStore

POLICY_FILE = "policy.json"
POLICY_VERSION = 1


class SolveError(TTSearchError, ValueError):
    """A question the policy cannot answer as asked (budget too small, a label the sweep lacks, a failed search)."""


@dataclass(frozen=True)
class Policy:
    """A saved policy: the strategy per (budget, bin) and how to bin a new question from its k-sample score."""

    choices: dict[tuple[int, int], str]
    difficulty: str
    estimation_samples: int
    thresholds: tuple[float, ...]
    """Score edges between consecutive bins, descending."""

    def bin_of(self, score: float) -> int:
        """Bin 1 (easiest) for scores above the first threshold; a score on an edge goes to the easier bin."""
        return 1 + sum(score < edge for edge in self.thresholds)

    def strategy(self, budget: int, score: float) -> str:
        key = (budget, self.bin_of(score))
        if key not in self.choices:
            raise KeyError(f"no policy for budget {budget}; fitted budgets: {sorted({b for b, _ in self.choices})}")
        return self.choices[key]

    def to_json(self) -> str:
        return json.dumps({
            "version": POLICY_VERSION,
            "difficulty": {"kind": self.difficulty, "estimation_samples": self.estimation_samples,
                           "n_bins": len(self.thresholds) + 1, "thresholds": list(self.thresholds)},
            "choices": [{"budget": budget, "bin": b, "strategy_label": label}
                        for (budget, b), label in sorted(self.choices.items())],
        }, indent=2)  # fmt: skip

    @classmethod
    def from_json(cls, text: str, where: str) -> Policy:
        data: dict[str, Any] = json.loads(text)
        if data.get("version") != POLICY_VERSION:
            raise ResultsError(f"{where}: policy version {data.get('version')!r}, expected {POLICY_VERSION}")
        difficulty = data["difficulty"]
        return cls({(int(c["budget"]), int(c["bin"])): c["strategy_label"] for c in data["choices"]},
                   difficulty["kind"], int(difficulty["estimation_samples"]), tuple(difficulty["thresholds"]))


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
