"""What the report and the compute-optimal analysis compute from a sweep's rows: accuracy curves, difficulty bins,
the policy, cost at equal accuracy.

Reads results only (`ttsearch.sweep.results`); imports no Ray and no engine.
"""
