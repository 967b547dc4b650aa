"""How final answers are graded: the limits of one comparison and the time one problem's grading may take."""

from __future__ import annotations

from dataclasses import dataclass, field

from ttsearch.config.base import POSITIVE


@dataclass(frozen=True)
class GradingConfig:
    """The sandboxed grader (`ttsearch.search.grading.Grader`) of each shard, the service and `solve`. A comparison
    that fails (timeout, dead worker, math-verify error) is retried once with 3× the limits below; one that fails
    twice is ungraded (None) for the rest of the run, never retried per row (docs/failure-handling.md)."""

    item_timeout_s: float = field(default=20.0, metadata=POSITIVE)
    """hard wall-clock limit of one comparison in seconds: past it its worker process is killed"""
    math_timeout_s: int = field(default=3, metadata=POSITIVE)
    """math-verify's own parse and verify timeout of one comparison, in seconds"""
    problem_time_s: float = field(default=300.0, metadata=POSITIVE)
    """grading-worker seconds one problem's comparisons may use in a shard (retries included, worker start-up not);
    past it the problem's comparisons not yet graded are answered ungraded (None) at once, and counted in the
    sweep's summary. A comparison already running finishes within its own limit"""
