"""Making the verifier and the reviser: Monte Carlo step labels, PRM training data and evaluation, fine-tuning in
Ray Train, revision trajectories and their evaluation.

May import `ttsearch.search`, `ttsearch.sweep`, `ttsearch.runtime`, `ttsearch.engines`, `ttsearch.analysis`.
"""
