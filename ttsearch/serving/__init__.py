"""Serving the search online: the OpenAI-compatible request and response protocol and the long-lived search
service over one ready queue. The Ray Serve deployment itself is a pipeline (`ttsearch.pipelines.serve`).

May import `ttsearch.search`, `ttsearch.runtime`, `ttsearch.analysis`, `ttsearch.sweep`.
"""
