"""ttsearch: compute-optimal test-time search for LLM math reasoning, on Ray.

Subpackages by role (each `__init__` says what it holds and may import): `config`, `search` (the core: requests,
strategies, selection, grading, scheduler), `engines`, `runtime`, `sweep`, `analysis`, `training`, `serving`, and
`actors` (the replicas that host engines) and `pipelines` (one workflow per command).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

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
