"""Deprecated: the bare `pipelines` name of `ttsearch.pipelines`, kept for one release for the RayService and Serve
config files that name `pipelines.serve:build_app`. The wheel installs only this shim under the bare name."""

from ttsearch.pipelines import warn_bare_name

warn_bare_name()
