"""What the replica actors share about their engines, backend by backend: model resolution (the embedded default),
and the process guard that ends an engine with its replica.

May import `ttsearch.config`, `ttsearch.search.requests` and the engine libraries (vLLM, transformers, torch); not
Ray's actors, the sweep or a pipeline.
"""
