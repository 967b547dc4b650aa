"""Stopping a command cleanly when it is told to: SIGINT or SIGTERM sent to its pid.

A terminal's Ctrl-C signals the whole foreground process group, so Ray's own processes die with the command; a
supervisor, `kill`, a container runtime or a test harness signals the command's pid alone, and then only the command
can clean up. Both signals raise `Interrupted` in the main thread, a `KeyboardInterrupt`, so the command unwinds as
it would on Ctrl-C and every `finally` on the way out runs: the service's app is deleted, a sweep's shards save what
they finished, and the CLI shuts down Ray (a local instance the command started stops with it) and exits 128 + the
signal number, as a shell reports a process ended by that signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first signal unwinds the command; a second one during the clean-up ends it the default way."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Interrupted(signum)


def stop_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise `Interrupted` in the main thread."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def exit_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for SIGINT (or a plain KeyboardInterrupt), 143 for SIGTERM."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


@contextlib.contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """Keep the caller's SIGINT and SIGTERM handlers across a call that replaces them: `ray.init` sets SIGTERM to
    `sys.exit` in the driver, and to a kill of its processes when it starts a local instance."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
