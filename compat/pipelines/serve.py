"""Deprecated path of `ttsearch.pipelines.serve:build_app` (see `pipelines/__init__.py` here)."""

from ttsearch.pipelines.serve import build_app

__all__ = ["build_app"]
