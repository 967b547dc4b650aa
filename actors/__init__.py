"""Ray actors that only host engines: generator replicas (vLLM or transformers) and verifier (PRM) replicas.

Imported as `ttsearch.actors`. May import `ttsearch.engines` (what the engines need), `ttsearch.config` and
`ttsearch.search.requests` (the request and result values they serve); nothing else of the library, and no pipeline.
"""
