"""Final-answer extraction, normalisation and grading against MATH gold answers.

Model output is untrusted. Grading parses it with math-verify's LaTeX path only (its plain-expression
path runs sympy's `parse_expr`, which evals), inside separate worker processes that also carry an
audit-hook guard against eval/exec of unexpected code and against starting processes, an address-space
cap, and math-verify's own signal timeouts (those only work in a main thread, and our callers live in
Ray actors and asyncio threads). On top, every item has a hard wall-clock timeout: a worker that
exceeds it is killed and replaced. A grading failure (timeout, dead worker, math-verify error) is retried
once with longer limits and is otherwise recorded as *ungraded*, never as a wrong answer, and remembered so for the
grader's lifetime. A problem whose comparisons have used its grading time (`grading.problem_time_s`) gets its new ones
answered *ungraded* at once; `Grader.stats()` counts both for the run's summary.

This module holds the answer extraction and canonical form and the parent side (the `Grader` pool); what runs in
each worker process is `ttsearch.search.grading_worker`. It stays cheap to import: math-verify and sympy are
imported only inside the workers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from ttsearch.config.grading import GradingConfig
from ttsearch.search import grading_worker

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 2000
"""Longer extracted answers are graded wrong without parsing: no real answer is that long."""

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, or None if absent or unbalanced.

    Braces are matched by a regex scan (linear time, no recursion); backslash-escaped braces (`\\{`)
    do not count, so set notation such as `\\boxed{\\{1, 2\\}}` comes out whole. A truncated last box
    gives None rather than an earlier box: the model had not finished its final answer.
    """
    opener, at = max(((opener, text.rfind(opener)) for opener in _BOX_OPENERS), key=lambda found: found[1])
    if at < 0:
        return None
    start = at + len(opener)
    depth = 1
    for match in _BRACE_OR_ESCAPE.finditer(text, start):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[start : match.start()]
    return None


# "... the (final) answer is X" / "answer: X": X is the rest of the line after the last such statement.
_STATED_ANSWER = re.compile(r"answer\s*(?:is|:|=)\s*:?[ \t]*", re.IGNORECASE)
# A whole math expression in delimiters: `$...$`, `$$...$$` or `\(...\)`, read even if the sentence goes on.
_DELIMITED = re.compile(
    r"^(?:\$\$(?P<display>[^$]{1,200})\$\$|\$(?P<inline>[^$]{1,200})\$|\\\((?P<paren>.{1,200}?)\\\))"
)
# A sentence end: `.`, `;`, `!` or `?` followed by a space or the end (so `2.5` keeps its point).
_SENTENCE_END = re.compile(r"[.;!?](?:\s|$)")
# An English word: two or more letters not part of a LaTeX command (`\sqrt`, `\frac`).
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
MAX_STATED_CHARS = 200


def extract_answer(text: str) -> str | None:
    """The solution's final answer: the last `\\boxed{}`, else the whole expression of the last "the answer is X".

    Small models often state an answer without boxing it. The fallback takes the stated expression whole
    (`2x+1`, `2^{10}`, `2\\sqrt{3}`, or anything in `$...$`) up to the end of its sentence, or no answer at
    all when that sentence goes on in words ("the answer is 5 because ..."): a prefix such as the `2` of
    `2x+1` would be graded as if the model had said it. It never takes "the last number".
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    tail = text[-2000:]  # a stated final answer sits at the end; bounds the regex work on huge outputs
    stated = next(reversed(list(_STATED_ANSWER.finditer(tail))), None)
    if stated is None:
        return None
    rest = tail[stated.end() :].split("\n", 1)[0].strip().strip("*").strip()  # markdown bold around the answer
    if delimited := _DELIMITED.match(rest):
        expression = next(group for group in delimited.groups() if group is not None)
    else:
        end = _SENTENCE_END.search(rest)
        expression = rest[: end.start()] if end else rest
        if _WORD.search(expression):
            return None
    expression = expression.strip().rstrip(".").strip().strip("*").strip()
    return expression if expression and len(expression) <= MAX_STATED_CHARS else None


_NORMALIZE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\\(?:left|right)(?![a-zA-Z])", ""),
        (r"\\[!,;:]", ""),
        (r"\\displaystyle(?![a-zA-Z])", ""),
        (r"\\[dt]frac(?![a-zA-Z])", r"\\frac"),
        (r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}"),
        (r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}"),
        (r"\\sqrt\s*(\d)", r"\\sqrt{\1}"),
        (r"\^\s*\{?\\circ\}?", ""),
        (r"\\%", ""),
        (r"\\(?:text|textbf|mbox|mathrm)\{\s*\\\$\s*\}", ""),  # \text{\$}
        (r"\\\$", ""),  # \$ currency
        (r"\{,\}", ","),  # 1{,}000
        (r"^\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}$", r"\1"),
        (r"(\d)\s*\\(?:text|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z ]*\}(?:\^\d)?$", r"\1"),
        (r"(\d)\s+(?:dollars?|cents?|units?|cm|km|inches|feet|meters|degrees)$", r"\1"),
        (r"\s+", ""),
    )
)
# Applied to the whole answer after the rules above: a plain number with thousands separators or trailing zeros.
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TRAILING_ZEROS = re.compile(r"^(-?\d+)(?:\.0+|(\.\d*?[1-9])0+)$")


def canonical_answer(answer: str) -> str:
    """Cheap canonical string of a final answer: equal strings are the same answer, without parsing.

    Pure string rewriting: removes spacing and sizing commands, surrounding `$`, a trailing `.`, degree
    and percent signs, currency (`\\$`, `\\text{\\$}`), unit words after a number and a whole-answer
    `\\text{}` wrapper; maps `\\dfrac`/`\\tfrac` to `\\frac` and expands `\\frac12`, `\\sqrt3`; a plain number
    loses its thousands separators (`276,000`, `1{,}000`) and trailing zeros (`6.00` → `6`). Assignments
    such as `x=5` are kept as they are. The grader compares these forms, and selection groups by them
    before asking math-verify (see `Grader.same_answers`).
    """
    text = answer.strip().strip("$").strip()
    for pattern, replacement in _NORMALIZE_RULES:
        text = pattern.sub(replacement, text)
    text = text.rstrip(".")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return _TRAILING_ZEROS.sub(lambda m: m.group(1) + (m.group(2) or ""), text)


# ---------------------------------------------------------------------------------------------
# Parent side; the worker side (what runs in each spawned process) is `ttsearch.search.grading_worker`.

Verdict = bool | None
"""True right, False wrong, None ungraded: grading failed twice (timeout, crash, math-verify error) or the problem's
grading time bound was used up; no verdict either way."""

Pair = tuple[str, str]
"""One comparison: (prediction, gold), or (answer, other answer) for `Grader.same_answers`."""

WorkerMain = Callable[[Connection, int | None], None]
"""What a grading worker process runs: `grading_worker.worker_main(conn, memory_limit_mb)`, or a stand-in speaking
its protocol."""


@dataclass(frozen=True)
class GradingStats:
    """What a `Grader` did in its lifetime, for a run's summary; `+` adds up shards. A pair asked several times in
    one call is one comparison."""

    num_graded: int = 0
    """comparisons a worker gave a verdict (right or wrong)"""
    num_cache_hits: int = 0
    """comparisons answered from memory at no worker time: a verdict, or a comparison that had failed twice"""
    num_failed_twice: int = 0
    """distinct comparisons that failed twice (timeout, dead worker, math-verify error): ungraded from then on"""
    problems_over_bound: tuple[str, ...] = ()
    """problems whose grading used up `grading.problem_time_s`, in the order they did"""
    num_skipped_over_bound: int = 0
    """distinct comparisons of those problems answered ungraded (None) without being tried"""
    worker_s: float = 0.0
    """seconds grading workers spent on comparisons, retries included, worker start-up not"""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GradingStats:
        """The stats a `dataclasses.asdict` record holds, also after a trip through an Arrow table (which gives
        `problems_over_bound` back as a list)."""
        return cls(**{**record, "problems_over_bound": tuple(record["problems_over_bound"])})

    def __add__(self, other: GradingStats) -> GradingStats:
        return GradingStats(
            num_graded=self.num_graded + other.num_graded,
            num_cache_hits=self.num_cache_hits + other.num_cache_hits,
            num_failed_twice=self.num_failed_twice + other.num_failed_twice,
            problems_over_bound=self.problems_over_bound + other.problems_over_bound,
            num_skipped_over_bound=self.num_skipped_over_bound + other.num_skipped_over_bound,
            worker_s=self.worker_s + other.worker_s,
        )

    def line(self) -> str:
        """`grading: 1204 comparisons graded, 3410 from cache, 2 ungraded after two failures, 1 problem over
        grading.problem_time_s (14 comparisons skipped), 812.4 s in grading workers`."""
        problems = len(self.problems_over_bound)
        return (
            f"grading: {self.num_graded} comparisons graded, {self.num_cache_hits} from cache, "
            f"{self.num_failed_twice} ungraded after two failures, {problems} problem{'' if problems == 1 else 's'} "
            f"over grading.problem_time_s ({self.num_skipped_over_bound} comparisons skipped), "
            f"{self.worker_s:.1f} s in grading workers"
        )


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0
    started: float | None = None
    """When the worker began its job's current attempt (None: no attempt running, or the worker is starting)."""


@dataclass
class _Batch:
    """The new comparisons of one call, all of one problem (or of none): what `_run` works through."""

    pairs: list[Pair]
    problem: str | None
    verdicts: list[Verdict] = field(init=False)
    pending: Iterator[int] = field(init=False)
    retried: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.verdicts = [None] * len(self.pairs)
        self.pending = iter(range(len(self.pairs)))


class Grader:
    """A small pool of math-verify worker processes; safe to call from any thread.

    Jobs go out one per message, so a hung item is identified exactly and only that item is lost when
    its worker is killed; a pipe round trip costs tens of microseconds against milliseconds of sympy.
    Calls are serialised by a lock.

    A grading failure is never a verdict: an item that times out, kills its worker or makes math-verify
    raise is retried once on a fresh worker with `retry_scale` × the limits; if that fails too it is
    *ungraded* (None), logged with the reason, and remembered as ungraded for the grader's lifetime (a run's
    shard), so no later call spends worker time on it again. Verdicts (True/False) are kept in a bounded LRU
    cache, so an answer that N samples share is graded once.

    A caller that names the problem (`problem=` or the `problem(uid)` view) gets a time bound per problem:
    once the problem's comparisons have used `problem_time_s` of worker time, its comparisons not yet graded
    are answered None at once, neither tried nor guessed; remembered verdicts are still answered. `stats()`
    counts all of it for the run's summary.
    """

    def __init__(
        self,
        num_workers: int = 1,
        item_timeout_s: float = GradingConfig.item_timeout_s,
        math_timeout_s: int = GradingConfig.math_timeout_s,
        start_timeout_s: float = 120.0,
        memory_limit_mb: int | None = 4096,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        cache_size: int = 100_000,
        retry_scale: int = 3,
        problem_time_s: float = GradingConfig.problem_time_s,
        worker_main: WorkerMain = grading_worker.worker_main,
    ) -> None:
        """`worker_main` is what each worker process runs; tests pass a scripted stand-in (it must be importable
        by name: workers are spawned)."""
        if num_workers < 1 or item_timeout_s <= 0 or math_timeout_s < 1 or retry_scale < 1 or problem_time_s <= 0:
            raise ValueError(
                "num_workers >= 1, item_timeout_s > 0, math_timeout_s >= 1, retry_scale >= 1 and problem_time_s > 0 "
                f"are required, got {num_workers}, {item_timeout_s}, {math_timeout_s}, {retry_scale}, {problem_time_s}"
            )
        self.num_workers = num_workers
        self.item_timeout_s = item_timeout_s
        self.math_timeout_s = math_timeout_s
        self.start_timeout_s = start_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.max_answer_chars = max_answer_chars
        self.cache_size = cache_size
        self.retry_scale = retry_scale
        self.problem_time_s = problem_time_s
        self.worker_main = worker_main
        self._cache: OrderedDict[Pair, bool] = OrderedDict()
        # Each entry cost two failed attempts of worker time, so the set stays small; it is never evicted.
        self._failed_twice: set[Pair] = set()
        self._problem_worker_s: dict[str, float] = {}
        self._skipped: dict[str, set[Pair]] = {}  # problems over their bound → the comparisons they were denied
        self._num_graded = 0
        self._num_cache_hits = 0
        self._worker_s = 0.0
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: GradingConfig) -> Grader:
        """A grader with a run's `grading` section."""
        return cls(
            item_timeout_s=cfg.item_timeout_s, math_timeout_s=cfg.math_timeout_s, problem_time_s=cfg.problem_time_s
        )

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def grade(self, prediction: str | None, gold: str, problem: str | None = None) -> Verdict:
        """Whether one extracted answer matches the gold answer; None if it could not be graded."""
        return self.grade_many([(prediction, gold)], problem)[0]

    def grade_many(self, pairs: Sequence[tuple[str | None, str]], problem: str | None = None) -> list[Verdict]:
        """Grade (extracted prediction, gold) pairs; None, blank or over-long predictions are wrong. New comparisons
        are charged to `problem`'s time bound (None: no bound)."""
        results: list[Verdict] = [False] * len(pairs)
        positions: dict[Pair, list[int]] = {}
        for i, (prediction, gold) in enumerate(pairs):
            if prediction is not None and prediction.strip() and len(prediction) <= self.max_answer_chars:
                positions.setdefault((prediction, gold), []).append(i)
        with self._lock:
            verdicts = self._verdicts(list(positions), problem)
        for pair, indices in positions.items():
            for i in indices:
                results[i] = verdicts[pair]
        return results

    def same_answers(self, answer: str, others: Sequence[str], problem: str | None = None) -> list[bool]:
        """Which of `others` state the same answer as `answer`, by the grader's own equivalence (`answer` in
        the gold's place); a pair that cannot be graded counts as different. For grouping votes."""
        return [verdict is True for verdict in self.grade_many([(answer, other) for other in others], problem)]

    def problem(self, uid: str) -> ProblemGrader:
        """This grader as one problem's callers see it: the same calls, charged to the problem's time bound."""
        return ProblemGrader(self, uid)

    def stats(self) -> GradingStats:
        """What this grader did so far (waits for a call in progress)."""
        with self._lock:
            return GradingStats(
                num_graded=self._num_graded,
                num_cache_hits=self._num_cache_hits,
                num_failed_twice=len(self._failed_twice),
                problems_over_bound=tuple(self._skipped),
                num_skipped_over_bound=sum(len(skipped) for skipped in self._skipped.values()),
                worker_s=self._worker_s,
            )

    def close(self) -> None:
        """Stop the workers; a later call starts new ones. What the grader remembers stays."""
        with self._lock:
            self._stop_all()

    def _verdicts(self, pairs: list[Pair], problem: str | None) -> dict[Pair, Verdict]:
        """Each distinct pair's verdict: remembered, else graded now within `problem`'s bound. Holds the lock."""
        known = {pair: self._remembered(pair) for pair in pairs if pair in self._cache or pair in self._failed_twice}
        self._num_cache_hits += len(known)
        new = [pair for pair in pairs if pair not in known]
        graded = dict(zip(new, self._run(_Batch(new, problem)), strict=True)) if new else {}
        self._cache.update((pair, verdict) for pair, verdict in graded.items() if verdict is not None)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return known | graded

    def _remembered(self, pair: Pair) -> Verdict:
        if pair in self._cache:
            self._cache.move_to_end(pair)
            return self._cache[pair]
        return None  # it failed twice earlier in the run

    def _run(self, batch: _Batch) -> list[Verdict]:
        if self._over_bound(batch):  # used up earlier: no worker is started or asked
            self._skip_rest(batch)
            return batch.verdicts
        try:
            while len(self._workers) < self.num_workers:
                self._workers.append(self._spawn())
            for worker in self._workers:
                self._dispatch(worker, batch)
            while busy := [w for w in self._workers if w.job is not None]:
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                readable = wait([w.conn for w in busy], timeout)
                for worker in busy:
                    if worker.conn in readable:
                        self._receive(worker, batch)
                    elif time.monotonic() >= worker.deadline:
                        if not worker.ready:
                            raise RuntimeError(f"grading worker did not start within {self.start_timeout_s:.0f} s")
                        limit = self._limit(batch, worker.job)
                        self._failed(worker, batch, f"took over {limit:g} s", dead=True)
        except BaseException:
            self._stop_all()  # in-flight replies would otherwise be read as answers to the next call
            raise
        return batch.verdicts

    def _receive(self, worker: _Worker, batch: _Batch) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            # Killed from outside, out of memory, or (seen with Ray's child-process subreaper in the parent)
            # killed right after it started.
            worker.process.join(timeout=5)
            if not worker.ready and worker.job in batch.retried:
                raise RuntimeError(
                    f"grading worker failed to start twice (exit code {worker.process.exitcode}); see its stderr"
                ) from None
            self._failed(worker, batch, f"worker died (exit code {worker.process.exitcode})", dead=True)
            return
        if message == grading_worker.READY:
            worker.ready = True
            worker.started = time.monotonic()
            worker.deadline = worker.started + self._limit(batch, worker.job)
            return
        if isinstance(message, str):  # math-verify failed; the worker itself is fine
            self._failed(worker, batch, message, dead=False)
            return
        self._charge(worker, batch)
        self._num_graded += 1
        batch.verdicts[worker.job] = message
        self._dispatch(worker, batch)

    def _failed(self, worker: _Worker, batch: _Batch, why: str, dead: bool) -> None:
        """Retry the worker's job once on a fresh worker with longer limits, unless the problem's bound is used
        up; after a second failure it stays ungraded for the grader's lifetime."""
        self._charge(worker, batch)
        job = worker.job
        pair = batch.pairs[job]
        if job not in batch.retried and not self._over_bound(batch):
            batch.retried.add(job)
            logger.warning(
                "grading failed (%s); retrying once with %d× the limits: %.200r", why, self.retry_scale, pair
            )
            self._replace(worker)
            self._send(worker, batch, job)
            return
        if job in batch.retried:
            logger.warning("grading failed twice (%s); ungraded for the rest of the run: %.200r", why, pair)
            self._failed_twice.add(pair)
        else:
            logger.warning("grading failed (%s); not retried, its problem's time bound is used up: %.200r", why, pair)
            self._skip(batch, [pair])
        if dead:
            self._replace(worker)
        self._dispatch(worker, batch)

    def _charge(self, worker: _Worker, batch: _Batch) -> None:
        """Book the worker's attempt that just ended to the run's and the problem's worker time."""
        if worker.started is None:  # it ended before the worker was ready
            return
        elapsed = time.monotonic() - worker.started
        worker.started = None
        self._worker_s += elapsed
        if batch.problem is not None:
            self._problem_worker_s[batch.problem] = self._problem_worker_s.get(batch.problem, 0.0) + elapsed

    def _over_bound(self, batch: _Batch) -> bool:
        """Whether the batch's problem has used its grading time, attempts still running included."""
        if batch.problem is None:
            return False
        now = time.monotonic()
        running = sum(now - w.started for w in self._workers if w.started is not None)
        return self._problem_worker_s.get(batch.problem, 0.0) + running >= self.problem_time_s

    def _skip_rest(self, batch: _Batch) -> None:
        """Answer every comparison the batch has not started: ungraded, its problem's bound is used up."""
        self._skip(batch, [batch.pairs[job] for job in batch.pending])

    def _skip(self, batch: _Batch, pairs: list[Pair]) -> None:
        if not pairs or batch.problem is None:
            return
        if batch.problem not in self._skipped:
            logger.warning(
                "grading of problem %r used its %g s (grading.problem_time_s): its new comparisons stay ungraded",
                batch.problem,
                self.problem_time_s,
            )
        self._skipped.setdefault(batch.problem, set()).update(pairs)

    def _limit(self, batch: _Batch, job: int | None) -> float:
        """The item's wall-clock limit: longer on its retry."""
        return self.item_timeout_s * (self.retry_scale if job in batch.retried else 1)

    def _dispatch(self, worker: _Worker, batch: _Batch) -> None:
        job = None if self._over_bound(batch) else next(batch.pending, None)
        if job is None:
            self._skip_rest(batch)
            worker.job = None
            return
        if not worker.process.is_alive():  # died while idle, e.g. killed from outside
            self._replace(worker)
        self._send(worker, batch, job)

    def _send(self, worker: _Worker, batch: _Batch, job: int) -> None:
        worker.job = job
        math_timeout = self.math_timeout_s * (self.retry_scale if job in batch.retried else 1)
        with contextlib.suppress(OSError):  # it died just now: its pipe then reads as EOF in `_receive`
            worker.conn.send((*batch.pairs[job], math_timeout))
        now = time.monotonic()
        worker.started = now if worker.ready else None
        worker.deadline = now + self._limit(batch, job) + (0.0 if worker.ready else self.start_timeout_s)

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=self.worker_main,
            args=(child_conn, self.memory_limit_mb),
            name="ttsearch-grader",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so that the child's death reads as EOF here
        return _Worker(process, parent_conn)

    def _replace(self, worker: _Worker) -> None:
        """Kill the worker's process and start a fresh one in its place (its job, if any, stays set)."""
        _kill(worker)
        fresh = self._spawn()
        worker.process, worker.conn, worker.ready, worker.started = fresh.process, fresh.conn, False, None

    def _stop_all(self) -> None:
        for worker in self._workers:
            _kill(worker)  # workers hold no state worth a graceful exit, and a SIGKILL cannot be ignored
        self._workers.clear()


@dataclass(frozen=True)
class ProblemGrader:
    """One problem's view of a `Grader` (`Grader.problem(uid)`): `grade_many` and `same_answers` as the grader has
    them, every new comparison charged to the problem's grading time bound. Pass it where a grader is expected."""

    grader: Grader
    uid: str

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        return self.grader.grade_many(pairs, self.uid)

    def same_answers(self, answer: str, others: Sequence[str]) -> list[bool]:
        return self.grader.same_answers(answer, others, self.uid)


def _kill(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join()
    worker.conn.close()


_default_grader: Grader | None = None
_default_lock = threading.Lock()


def grade(prediction: str | None, gold: str) -> Verdict:
    """Grade one extracted answer with a shared module-level `Grader` (started on first use)."""
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = Grader()
            atexit.register(_default_grader.close)
    return _default_grader.grade(prediction, gold)
