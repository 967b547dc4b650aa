"""The generator backend registry: one table, `generator.backend` → the engine class a generator replica hosts.

An engine class is built as `cls(cfg: GeneratorConfig, cache_dir: str)` and offers what the replica calls on it:
`generate_batch(batch)` (an async iterator of (index, GenerateResult | RequestRejected)), `totals` (the token counts
of `stats`), `num_parameters`, `reset_prefix_cache()` (async) and `shutdown()`. The vLLM engine class also exposes
`engine` and `model`, through which a verifier hosted on the generator's engines reads (`verifier.backend:
generator`, which needs `generator.backend: vllm`).

Adding a backend is its engine module plus one line in `GENERATOR_BACKENDS`, or, from another distribution, an entry
point in the group `ENTRY_POINT_GROUP`. Entries are dotted paths imported on first use in a replica, so config
validation reads the names without importing an engine.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from ttsearch.config.base import load_object

GENERATOR_BACKENDS: dict[str, str] = {
    "vllm": "ttsearch.engines.vllm_generator:VLLMGenerator",  # vLLM's AsyncLLM: continuous batching, prefix caching
    "transformers": "ttsearch.engines.transformers_generator:TransformersGenerator",  # where vLLM is not installed
}
"""Every shipped generator backend. Order matters only for listings (error messages, docs)."""

ENTRY_POINT_GROUP = "ttsearch.generator_backends"
"""Other distributions add backends as entry points of this group: `name = "package.module:EngineClass"`."""


@cache
def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def registered() -> dict[str, str]:
    """Name → dotted path of every generator backend: the shipped table, then those of installed plugins."""
    return GENERATOR_BACKENDS | {name: path for name, path in _plugins().items() if name not in GENERATOR_BACKENDS}


def generator_backend_names() -> tuple[str, ...]:
    return tuple(registered())


def generator_class(name: str) -> type:
    """The engine class of backend `name`, its module imported now; a KeyError naming the known backends if none."""
    table = registered()
    if name not in table:
        raise KeyError(f"unknown generator backend '{name}', expected one of {tuple(table)}")
    found = load_object(table[name])
    if not isinstance(found, type):
        raise TypeError(f"generator backend '{name}' = '{table[name]}' is not a class")
    return found
