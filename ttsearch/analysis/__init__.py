"""What the report and the compute-optimal analysis compute from a sweep's rows: accuracy curves, difficulty bins,
the policy, cost at equal accuracy, pass@1 by revision attempt; and the two reports built from them (`report`,
`compute_optimal_report`: Markdown with its plots, written into the run directory).

Reads results only (`ttsearch.sweep.results`); imports no Ray and no engine.
"""
