"""Sweeps: the problem data, jobs (one search of the sweep), the rows a job's sample pool gives at every budget
(`pools`), shards run through Ray Data, the results store (Parquet rows, fingerprints, what is finished, failed or
missing), and recorded generations imported as a run (`recorded`, `recorded_formats`, `recorded_runs`).

May import `ttsearch.search`, `ttsearch.runtime`, `ttsearch.config`.
"""
