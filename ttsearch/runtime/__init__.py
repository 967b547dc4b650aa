"""Ray at run time: joining or starting a cluster, starting and stopping replicas, the scheduler's backends over
replica handles, metrics and progress, fault injection, and stopping cleanly on SIGINT / SIGTERM.

May import `ttsearch.search`, `ttsearch.config`, `ttsearch.sweep.results` (FLOPs accounting) and Ray; actor modules
only inside functions (they start the actors).
"""
