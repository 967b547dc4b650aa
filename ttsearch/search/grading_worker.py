"""The grading worker process: what runs in each spawned worker of a `ttsearch.search.grading.Grader`.

`worker_main` is the process's entry (spawned by module path, so it lives at module level here): it caps the
address space, imports math-verify and sympy (never in the parent), warms them up, installs the audit-hook guard
(`install_guard`: no eval/exec of unexpected code, no process creation) and then grades one
(prediction, gold, math timeout) job per message, replying a bool or a string saying why grading failed. It
replies `READY` once, before its first job. The parent side (pool, timeouts, retries, cache) is in
`ttsearch.search.grading`; this module imports nothing of it at module level, so a worker imports it only inside
`worker_main` (for `canonical_answer`).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from multiprocessing.connection import Connection
from typing import Any

READY = "ready"
"""The worker's first message: imports done, guard installed, ready for jobs."""

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
        raise RuntimeError("ttsearch.search.grading: refused to compile dynamic code in a grading worker")
    if event in _PROCESS_EVENTS:
        raise RuntimeError(f"ttsearch.search.grading: refused {event} in a grading worker")


def install_guard() -> None:
    """Install the worker's audit hook. Irreversible for the process, so only workers call it."""
    sys.addaudithook(_audit_guard)


def worker_main(conn: Connection, memory_limit_mb: int | None) -> None:
    """Grade (prediction, gold, math timeout) jobs one at a time; reply a bool, or a string saying why it failed."""
    if memory_limit_mb is not None:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    from ttsearch.search.grading import canonical_answer

    # Only the LaTeX extractor: ExprExtractionConfig would hand raw text to sympy's parse_expr (eval).
    latex_only = [LatexExtractionConfig()]

    @functools.lru_cache(maxsize=4096)  # one answer meets many others when votes are grouped
    def parsed(answer: str, timeout_s: int) -> list[Any]:
        """math-verify's parse; a text it cannot parse is no answer (a verdict), a timeout is not (it raises)."""
        try:
            return parse(f"${answer}$", latex_only, parsing_timeout=timeout_s, raise_on_error=True)
        except TimeoutException:
            raise
        except Exception:
            return []

    def grade_one(prediction: str, gold: str, timeout_s: int) -> bool | str:
        # Canonical forms first: math-verify misreads e.g. "168,000 \, \text{\$}" (and its unit removal is
        # anchored at the end, so stripping matters too).
        prediction, gold = canonical_answer(prediction), canonical_answer(gold)
        if prediction == gold:
            return True
        try:
            return bool(
                verify(
                    parsed(gold, timeout_s),
                    parsed(prediction, timeout_s),
                    timeout_seconds=timeout_s,
                    raise_on_error=True,
                )
            )
        except TimeoutException:
            return f"math-verify timed out after {timeout_s} s"
        except Exception as error:  # a sympy failure while comparing: no verdict either way
            return f"math-verify failed: {type(error).__name__}: {str(error)[:200]}"

    grade_one("\\frac{1}{2}", "0.5", 5)  # warm-up: first-use imports happen before the guard
    install_guard()
    conn.send(READY)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent has gone
            return
        conn.send(grade_one(*job))
