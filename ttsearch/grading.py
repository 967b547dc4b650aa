"""Final-answer extraction, normalisation and grading against MATH gold answers.

Model output is untrusted. Grading parses it with math-verify's LaTeX path only (its plain-expression
path runs sympy's `parse_expr`, which evals), inside separate worker processes that also carry an
audit-hook guard against eval/exec of unexpected code and against starting processes, an address-space
cap, and math-verify's own signal timeouts (those only work in a main thread, and our callers live in
Ray actors and asyncio threads). On top, every item has a hard wall-clock timeout: a worker that
exceeds it is killed and replaced and the item is graded wrong.

This module stays cheap to import: math-verify and sympy are imported only inside the workers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

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


# "... the (final) answer is $x$" / "answer: 12" at the end of a solution, for models that rarely box.
_STATED_ANSWER = re.compile(
    r"answer\s*(?:is|:|=)\s*:?\s*(?:\$(?P<math>[^$]{1,200})\$|(?P<number>-?\d[\d,]*(?:\.\d+)?(?:/\d+)?))",
    re.IGNORECASE,
)


def extract_answer(text: str) -> str | None:
    """The solution's final answer: the last `\\boxed{}`, else the last "the answer is X" statement.

    Small models often state an answer without boxing it; the fallback reads only an explicit
    statement (never "the last number"), so a solution that concludes nothing has no answer.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    tail = text[-2000:]  # a stated final answer sits at the end; bounds the regex work on huge outputs
    stated = next(reversed(list(_STATED_ANSWER.finditer(tail))), None)
    if stated is None:
        return None
    if stated.group("math") is not None:
        return stated.group("math").strip().rstrip(".") or None
    return stated.group("number").replace(",", "")


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
        (r"^\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}$", r"\1"),
        (r"(\d)\s*\\(?:text|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z ]*\}$", r"\1"),
        (r"\s+", ""),
    )
)


def normalize_answer(answer: str) -> str:
    """Cheap canonical string for grouping equal final answers in majority/weighted voting.

    Pure string rewriting (no parsing): removes spacing and sizing commands, surrounding `$`,
    a trailing `.`, degree and percent signs, unit words after a number and a whole-answer `\\text{}`
    wrapper; maps `\\dfrac`/`\\tfrac` to `\\frac` and expands `\\frac12`, `\\sqrt3` shorthands.
    Assignments such as `x=5` are kept as they are.
    """
    text = answer.strip().strip("$").strip()
    for pattern, replacement in _NORMALIZE_RULES:
        text = pattern.sub(replacement, text)
    return text.rstrip(".")


# ---------------------------------------------------------------------------------------------
# Worker side: runs in a spawned process, so signal-based timeouts and the audit hook are ours.

_READY = "ready"
_PROCESS_EVENTS = frozenset(
    {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn"}
)
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_SAFE_NAMES = frozenset({"Integer", "Float", "Rational", "Symbol", "E", "I", "pi", "oo", "zoo", "nan"})


def _is_expected_dynamic_code(source: object) -> bool:
    """Whether a `compile` is one of the few that sympy does while grading, none of them carrying user text.

    Allowed: anything compiled while a module is being imported (sympy imports lazily, and module code
    such as dataclass creation is fixed text), sympy's `from sympy import *` prelude of `parse_expr`,
    its generated monomial arithmetic, and number/symbol constructors such as `Integer (12 )`, which is
    what `sympy.Number("12")` in latex2sympy's `parse_number` evals. Any other source is refused.
    """
    if _inside_import():
        return True
    if isinstance(source, bytes):
        source = source.decode("utf-8", "replace")
    if not isinstance(source, str):
        return False
    if source == "from sympy import *":
        return True
    if source.startswith("def monomial_"):
        return "__" not in source and "import" not in source
    code = _STRING_LITERAL.sub("''", source)
    return "__" not in code and set(_IDENTIFIER.findall(code)) <= _SAFE_NAMES


def _inside_import() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _audit_guard(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook of grading workers: refuse unexpected dynamic code and any process creation."""
    if event == "compile" and not _is_expected_dynamic_code(args[0]):
        raise RuntimeError("ttsearch.grading: refused to compile dynamic code in a grading worker")
    if event in _PROCESS_EVENTS:
        raise RuntimeError(f"ttsearch.grading: refused {event} in a grading worker")


def _install_guard() -> None:
    """Install the worker's audit hook. Irreversible for the process, so only workers call it."""
    sys.addaudithook(_audit_guard)


def _worker_main(conn: Connection, math_timeout_s: int, memory_limit_mb: int | None) -> None:
    """Grade (prediction, gold) jobs one at a time and send back one bool per job."""
    if memory_limit_mb is not None:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from functools import lru_cache

    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    # Only the LaTeX extractor: ExprExtractionConfig would hand raw text to sympy's parse_expr (eval).
    latex_only = [LatexExtractionConfig()]

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str) -> list[Any]:
        return parse(f"${gold}$", latex_only, parsing_timeout=math_timeout_s)

    def grade_one(prediction: str, gold: str) -> bool:
        # Stripped because math-verify's unit removal is anchored at the end: "5 \text{ cm} " would not match.
        try:
            target = parse(f"${prediction.strip()}$", latex_only, parsing_timeout=math_timeout_s)
            return bool(verify(parse_gold(gold.strip()), target, timeout_seconds=math_timeout_s))
        except (Exception, TimeoutException):
            return False

    grade_one("\\frac{1}{2}", "0.5")  # warm-up: first-use imports happen before the guard
    _install_guard()
    conn.send(_READY)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent has gone
            return
        conn.send(grade_one(*job))


# ---------------------------------------------------------------------------------------------
# Parent side.


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0


class Grader:
    """A small pool of math-verify worker processes; safe to call from any thread.

    Jobs go out one per message, so a hung item is identified exactly and only that item is lost when
    its worker is killed; a pipe round trip costs tens of microseconds against milliseconds of sympy.
    Calls are serialised by a lock. Verdicts are kept in a bounded LRU cache, so an answer that N samples
    share is graded once, including a pathological one that costs a full timeout.
    """

    def __init__(
        self,
        num_workers: int = 1,
        item_timeout_s: float = 20.0,
        math_timeout_s: int = 3,
        start_timeout_s: float = 120.0,
        memory_limit_mb: int | None = 4096,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        cache_size: int = 100_000,
    ) -> None:
        if num_workers < 1 or item_timeout_s <= 0 or math_timeout_s < 1:
            raise ValueError("num_workers >= 1, item_timeout_s > 0 and math_timeout_s >= 1 are required")
        self.num_workers = num_workers
        self.item_timeout_s = item_timeout_s
        self.math_timeout_s = math_timeout_s
        self.start_timeout_s = start_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.max_answer_chars = max_answer_chars
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def grade(self, prediction: str | None, gold: str) -> bool:
        """Whether one extracted answer matches the gold answer."""
        return self.grade_many([(prediction, gold)])[0]

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[bool]:
        """Grade (extracted prediction, gold) pairs; None, blank or over-long predictions are wrong."""
        results = [False] * len(pairs)
        positions: dict[tuple[str, str], list[int]] = {}
        for i, (prediction, gold) in enumerate(pairs):
            if prediction is not None and prediction.strip() and len(prediction) <= self.max_answer_chars:
                positions.setdefault((prediction, gold), []).append(i)
        with self._lock:
            jobs = [job for job in positions if job not in self._cache]
            if jobs:
                self._cache.update(zip(jobs, self._run(jobs), strict=True))
            for job, indices in positions.items():
                self._cache.move_to_end(job)
                for i in indices:
                    results[i] = self._cache[job]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return results

    def close(self) -> None:
        """Stop the workers; a later call starts new ones."""
        with self._lock:
            self._stop_all()

    def _run(self, jobs: list[tuple[str, str]]) -> list[bool]:
        verdicts = [False] * len(jobs)
        pending = iter(range(len(jobs)))
        self._retried: set[int] = set()
        try:
            while len(self._workers) < self.num_workers:
                self._workers.append(self._spawn())
            for worker in self._workers:
                self._dispatch(worker, jobs, pending)
            while busy := [w for w in self._workers if w.job is not None]:
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                readable = wait([w.conn for w in busy], timeout)
                for worker in busy:
                    if worker.conn in readable:
                        self._receive(worker, jobs, verdicts, pending)
                    elif time.monotonic() >= worker.deadline:
                        self._time_out(worker, jobs, pending)
        except BaseException:
            self._stop_all()  # in-flight replies would otherwise be read as answers to the next call
            raise
        return verdicts

    def _time_out(self, worker: _Worker, jobs: list[tuple[str, str]], pending: Iterator[int]) -> None:
        if not worker.ready:
            raise RuntimeError(f"grading worker did not start within {self.start_timeout_s:.0f} s")
        logger.warning("grading took over %.0f s; graded wrong: %.200r", self.item_timeout_s, jobs[worker.job])
        self._replace(worker)
        self._dispatch(worker, jobs, pending)

    def _receive(
        self, worker: _Worker, jobs: list[tuple[str, str]], verdicts: list[bool], pending: Iterator[int]
    ) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            # Killed from outside, out of memory, or (seen with Ray's child-process subreaper in the parent)
            # killed right after it started: one more try on a fresh worker before giving up.
            job, started = worker.job, worker.ready
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            self._replace(worker)
            if job not in self._retried:
                self._retried.add(job)
                logger.warning("grading worker died (exit code %s); retrying once: %.200r", code, jobs[job])
                self._send(worker, jobs, job)
                return
            if not started:
                raise RuntimeError(f"grading worker failed to start twice (exit code {code}); see its stderr") from None
            logger.warning("grading worker died twice on one item; graded wrong: %.200r", jobs[job])
            self._dispatch(worker, jobs, pending)
            return
        if message == _READY:
            worker.ready = True
            worker.deadline = time.monotonic() + self.item_timeout_s
            return
        verdicts[worker.job] = message
        worker.job = None
        self._dispatch(worker, jobs, pending)

    def _dispatch(self, worker: _Worker, jobs: list[tuple[str, str]], pending: Iterator[int]) -> None:
        job = next(pending, None)
        if job is None:
            worker.job = None
            return
        if not worker.process.is_alive():  # died while idle, e.g. killed from outside
            self._replace(worker)
        self._send(worker, jobs, job)

    def _send(self, worker: _Worker, jobs: list[tuple[str, str]], job: int) -> None:
        worker.job = job
        with contextlib.suppress(OSError):  # it died just now: its pipe then reads as EOF in `_receive`
            worker.conn.send(jobs[job])
        startup = 0.0 if worker.ready else self.start_timeout_s
        worker.deadline = time.monotonic() + self.item_timeout_s + startup

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, self.math_timeout_s, self.memory_limit_mb),
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
        worker.process, worker.conn, worker.ready = fresh.process, fresh.conn, False

    def _stop_all(self) -> None:
        for worker in self._workers:
            _kill(worker)  # workers hold no state worth a graceful exit, and a SIGKILL cannot be ignored
        self._workers.clear()


def _kill(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join()
    worker.conn.close()


_default_grader: Grader | None = None
_default_lock = threading.Lock()


def grade(prediction: str | None, gold: str) -> bool:
    """Grade one extracted answer with a shared module-level `Grader` (started on first use)."""
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = Grader()
            atexit.register(_default_grader.close)
    return _default_grader.grade(prediction, gold)
