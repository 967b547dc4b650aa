"""What every config module shares: where the shipped files are, the config error, the rule check."""

from __future__ import annotations

import importlib
import os
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
