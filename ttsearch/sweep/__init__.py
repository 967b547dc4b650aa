"""Sweeps: the problem data, jobs (one search of the sweep), shards run through Ray Data, and the results store
(Parquet rows, fingerprints, what is finished, failed or missing).

May import `ttsearch.search`, `ttsearch.runtime`, `ttsearch.config`.
"""
