"""Particle filtering (Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs
using Particle-Based Monte Carlo Methods"; Red-Hat-AI-Innovation-Team/its_hub's `ParticleFiltering`).

Budget N: N particles (partial solutions). Every round each unfinished particle samples one next step and the
verifier scores it; a finished particle keeps its last weight. Then all N are resampled: multinomial, N draws with
replacement, with probabilities softmax(logit(score) / `particle_temperature`), the score being the verifier's
score of the particle's last step (its_hub's weight: the inverse sigmoid of the PRM score, scores clipped to
[1e-7, 1 − 1e-7], temperature 1). Copies of one particle then sample different next steps (each particle index
has its own seed). The draws use a generator seeded by (problem, seed, round), so a re-run is a replay. The filter
stops when every particle has finished or at `search.max_steps`; there is no resampling after the last round
(its draws would only duplicate candidates). The candidates are the N particles, duplicates included: a
resampled copy counts in the weighted and majority votes as the filter's posterior does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ttsearch.config import StrategySpec
from ttsearch.search.strategies.common import SearchContext, StrategyRun, grow, softmax, step_value
from ttsearch.search.strategies.registry import Errors, Strategy, one_sequence, positive_errors, step_prefix


@dataclass(frozen=True)
class ParticleFilterSettings:
    particle_temperature: float = 1.0
    """Resampling weights are softmax(logit(score) / this) over the particles."""

    def errors(self, budgets: list[int]) -> Errors:
        return positive_errors(self, "particle_temperature")


CLIP = 1e-7


def particle_filter(ctx: SearchContext, budget: int, spec: StrategySpec) -> StrategyRun:
    temperature = spec.options.particle_temperature
    particles = [ctx.candidate((), (), finished=False)] * budget
    for depth in range(ctx.search.max_steps):
        live = [i for i, particle in enumerate(particles) if not particle.finished]
        if not live:
            break
        grown = yield from grow(ctx, [particles[i] for i in live], [1] * len(live), depth, live)
        for i, [child] in zip(live, grown, strict=True):
            particles[i] = child
        if depth < ctx.search.max_steps - 1 and not all(particle.finished for particle in particles):
            weights = softmax([logit(step_value(particle)) / temperature for particle in particles])
            particles = random.Random(ctx.request_seed("resample", depth)).choices(particles, weights, k=budget)
    return particles


def logit(score: float) -> float:
    clipped = min(max(score, CLIP), 1 - CLIP)
    return math.log(clipped / (1 - clipped))


PARTICLE_FILTER = Strategy(
    "particle_filter",
    particle_filter,
    ParticleFilterSettings,
    scores_steps=True,
    label=lambda settings: f"(T={settings.particle_temperature:g})",
    largest_request=one_sequence,  # a particle's step
    worst_case_tokens=step_prefix,
)
