"""ttsearch: compute-optimal test-time search for LLM math reasoning, on Ray.

Subpackages by role (each `__init__` says what it holds and may import): `config`, `search` (the core: requests,
strategies, selection, grading, scheduler), `engines`, `runtime`, `sweep`, `analysis`, `training`, `serving`, and
`actors` (the replicas that host engines) and `pipelines` (one workflow per command).

What a Python user calls is here too, each name loaded on first use (`import ttsearch` loads no Ray, model or
pandas): `load_config`, `SweepConfig`, `StrategySpec`, `run_sweep`, `load_results`, `build_report`,
`build_optimize_report`, `SearchService`, and `__version__`. For example, a config as `--config` files and
overrides give it, and a strategy configuration:

    >>> import ttsearch
    >>> files = ["conf/main.yaml", "conf/revision_prompt.yaml"]
    >>> cfg = ttsearch.load_config(files, ["budgets=[4,16]", "output_dir=runs/bigger"])
    >>> cfg.budgets, cfg.output_dir, [spec.name for spec in cfg.strategies]
    ([4, 16], 'runs/bigger', ['best_of_n', 'beam', 'revisions'])
    >>> ttsearch.StrategySpec.of("beam", beam_width=4).settings
    {'beam_width': 4}

docs/getting-started.md ("Python API") goes on to read a sweep's results and write its report.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

_EXPORTS = {
    "load_config": "ttsearch.config",
    "SweepConfig": "ttsearch.config",
    "StrategySpec": "ttsearch.config",
    "run_sweep": "ttsearch.sweep.jobs",
    "load_results": "ttsearch.sweep.results",
    "build_report": "ttsearch.analysis.report",
    "build_optimize_report": "ttsearch.analysis.compute_optimal_report",
    "SearchService": "ttsearch.serving.service",
}
"""Public name → the module that defines it, imported when the name is first read (PEP 562)."""
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        try:
            return importlib.metadata.version(__name__)
        except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # read once: later reads do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_PACKAGE = Path(__file__).resolve().parent
BESIDE_THE_PACKAGE = ("actors", "pipelines")
"""Subpackages whose source sits at the top of the repository (the folders the product names), beside `ttsearch/`."""


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Finds `ttsearch.actors` and `ttsearch.pipelines` in a source tree (a checkout, a `ray job submit
    --working-dir .` upload), where they are top-level folders; an installed wheel holds them inside the package
    (pyproject's package-dir), and then this finder is never installed."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != __name__ or name not in BESIDE_THE_PACKAGE:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(_PACKAGE.parent)])


if not (_PACKAGE / "actors").is_dir() and (_PACKAGE.parent / "actors" / "__init__.py").is_file():
    # First: an editable install elsewhere on the machine maps these names too, to its own checkout.
    sys.meta_path.insert(0, _SourceTreeFinder())
