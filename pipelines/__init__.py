"""Thin workflows over the library, one per `ttsearch` command: they wire the library's pieces together, write what
they produce and return a typed result that the CLI prints. Imported as `ttsearch.pipelines`; nothing imports a
pipeline: the CLI's command table (`ttsearch.cli.COMMANDS`) names each by its `module:function` path. A command whose
work is one library call names that function instead (`report`, `optimize`: `ttsearch.analysis`).
"""

import warnings


def warn_bare_name() -> None:
    """The old, bare `pipelines` name works for one more release (Serve configs that name
    `pipelines.serve:build_app`), with this warning."""
    warnings.warn(
        "the top-level `pipelines` package is deprecated and goes in the next release: import `ttsearch.pipelines` "
        "(a Serve import_path: `ttsearch.pipelines.serve:build_app`)",
        DeprecationWarning,
        stacklevel=3,
    )


if __name__ == "pipelines":  # imported by its bare name from a source tree (the wheel ships compat/pipelines)
    warn_bare_name()
