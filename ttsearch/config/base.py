"""What every config module shares: where the shipped files are, the config error, the rule check."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from ttsearch.errors import TTSearchError


def _shipped(packaged: str, source: str) -> Path:
    """A folder shipped with the code: inside the installed package (a wheel puts it there, see
    pyproject.toml), else at the top of the source tree (a checkout or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    inside = package / packaged
    return inside if inside.is_dir() else package.parent / source


CONF_DIR = _shipped("conf", "conf")
"""The shipped configs; `--config conf/NAME.yaml` finds NAME here when the working directory has no conf/."""
DEFAULT_DATASET = _shipped("datasets", "data") / "math500.jsonl"
"""MATH-500, shipped with the package: the default `data.path`."""

EMBEDDED_MODEL = "embedded"


class ConfigError(TTSearchError):
    """A configuration problem, named by its key."""


def default_cache_dir() -> str:
    return os.environ.get("TTSEARCH_CACHE", str(Path.home() / ".cache" / "ttsearch"))


def require(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming `key`; `message` gives the rule and the value found."""
    if not condition:
        raise ConfigError(f"bad config: key '{key}': {message}")


def load_object(path: str) -> Any:
    """The object a registry's dotted path names, "package.module:NAME", importing its module."""
    module, colon, attribute = path.partition(":")
    if not colon or not module or not attribute:
        raise ValueError(f"'{path}' is not a dotted path 'package.module:NAME'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Bound:
    """A numeric field's rule, written beside the field (`field(default=..., metadata=POSITIVE)`) and checked by
    `check_bounds` before anything runs: a count, size or timeout of zero would hang or do nothing."""

    low: float
    inclusive: bool = False
    """False: the value must be > low; True: >= low."""
    high: float | None = None
    """An upper bound the value may reach (a fraction's 1)."""
    meaning: str = ""
    """What the bound itself means where it is allowed (`-1: restart forever`)."""

    def holds(self, value: float) -> bool:
        if self.high is not None:
            return self.low < value <= self.high
        return value >= self.low if self.inclusive else value > self.low

    def rule(self) -> str:
        """The rule in words: `must be > 0`, `must be >= -1 (-1: restart forever)`, `must be in (0, 1]`."""
        if self.high is not None:
            return f"must be in ({self.low:g}, {self.high:g}]"
        if self.inclusive:
            return f"must be >= {self.low:g}" + (f" ({self.meaning})" if self.meaning else "")
        return f"must be > {self.low:g}"

    def error(self, value: float) -> str | None:
        """The rule and the value, if `value` breaks it."""
        return None if self.holds(value) else f"{self.rule()}, got {value}"


POSITIVE = {"bound": Bound(0)}
FRACTION = {"bound": Bound(0, high=1)}


def at_least(low: float, meaning: str = "") -> dict[str, Bound]:
    return {"bound": Bound(low, inclusive=True, meaning=meaning)}


def field_bounds(section: Any, prefix: str = "") -> Iterator[tuple[str, Bound, Any]]:
    """(dotted key, its rule, its value) of every bounded field of a config section and the sections inside it."""
    for item in fields(section):
        key, value = f"{prefix}{item.name}", getattr(section, item.name)
        if "bound" in item.metadata:
            yield key, item.metadata["bound"], value
        elif is_dataclass(value):
            yield from field_bounds(value, f"{key}.")


def check_bounds(section: Any, prefix: str = "") -> None:
    """A ConfigError naming the first bounded key whose value breaks its rule (`Bound`)."""
    for key, bound, value in field_bounds(section, prefix):
        message = bound.error(value)
        require(message is None, key, message or "")
