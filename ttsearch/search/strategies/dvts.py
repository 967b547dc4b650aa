"""Diverse verifier tree search (DVTS; Beeching et al. 2024, huggingface/search-and-learn).

Budget N, width M: N/M independent subtrees. Each keeps a single path; every step expands it M ways, the verifier
scores the M children, and the path moves to the best one (the highest last-step score, our beam's value and
search-and-learn's default `last` aggregation). A subtree stops once its best child ends the solution. Beam search
lets the N/M best paths of the whole tree crowd into one branch; DVTS keeps N/M branches apart, which is why it
beats beam search at large budgets on easy questions, where diversity matters more than exploitation.

The candidates are, as in search-and-learn, each subtree's last M children (its final path and the M−1
alternatives to its last step): N in all, so the final selection votes over every subtree. One difference:
search-and-learn lets the last iteration run each path to the end of its solution; here a path that reaches
`search.max_steps` ends there, as beam search's do.
"""

from __future__ import annotations

from ttsearch.config import StrategySpec
from ttsearch.search.strategies.beam import BeamSettings
from ttsearch.search.strategies.common import Candidate, SearchContext, StrategyRun, grow, step_value
from ttsearch.search.strategies.registry import Strategy, step_prefix


def dvts(ctx: SearchContext, budget: int, spec: StrategySpec, first: int = 0) -> StrategyRun:
    """The subtrees of `budget` from the one holding candidate `first` on (0: all): each subtree is seeded by its
    index, so a pool extended later grows exactly the subtrees a search of the whole budget would."""
    width = spec.options.beam_width
    subtrees = range(first // width, budget // width)
    paths = {subtree: ctx.candidate((), (), finished=False) for subtree in subtrees}
    last_children: dict[int, list[Candidate]] = {subtree: [] for subtree in subtrees}
    live = list(subtrees)
    for depth in range(ctx.search.max_steps):
        if not live:
            break
        grown = yield from grow(ctx, [paths[i] for i in live], [width] * len(live), depth, live)
        for subtree, children in zip(live, grown, strict=True):
            last_children[subtree] = children
            paths[subtree] = max(children, key=step_value)  # max keeps the first of equals: the earlier sample
        live = [subtree for subtree in live if not paths[subtree].finished]
    return [child for subtree in subtrees for child in last_children[subtree]]


DVTS = Strategy(
    "dvts",
    dvts,
    BeamSettings,
    scores_steps=True,
    label=lambda settings: f"(M={settings.beam_width})",
    largest_request=lambda spec, budget: spec.options.beam_width,  # a subtree's M children
    worst_case_tokens=step_prefix,
    pool_unit=lambda settings: settings.beam_width,  # a subtree's M children, seeded by its index and depth
    pool_extend=dvts,
)
