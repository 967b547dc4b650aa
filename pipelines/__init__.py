"""Thin workflows over the strategies, the scheduler and the replica actors."""
