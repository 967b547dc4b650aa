"""SIGINT and SIGTERM sent to a command's pid stop it cleanly (no Ray, no model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ttsearch.runtime.interrupts import Interrupted, exit_status, kept_signal_handlers, stop_on_signals


@pytest.fixture
def restored_handlers():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_either_signal_unwinds_the_command_with_the_shells_exit_status(signum, status, restored_handlers):
    stop_on_signals()
    cleaned_up = False
    with pytest.raises(Interrupted) as stopped:
        try:
            os.kill(os.getpid(), signum)
            signal.pause()  # the handler raises before this returns
        finally:
            cleaned_up = True
    assert cleaned_up and stopped.value.signum == signum
    assert isinstance(stopped.value, KeyboardInterrupt), "code that handles Ctrl-C handles both"
    assert exit_status(stopped.value) == status
    assert exit_status(KeyboardInterrupt()) == 130


def test_a_second_signal_during_the_clean_up_falls_back_to_the_default(restored_handlers):
    stop_on_signals()
    with pytest.raises(Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_handlers_replaced_by_a_call_are_put_back(restored_handlers):
    """What `ray.init` does to a driver's SIGTERM handler, undone."""
    stop_on_signals()
    ours = signal.getsignal(signal.SIGTERM)
    with kept_signal_handlers():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(15))
    assert signal.getsignal(signal.SIGTERM) is ours


def test_the_cli_exits_143_on_sigterm_and_runs_the_commands_finally():
    """A command killed by SIGTERM (a supervisor, `kill`) still runs its clean-up and says so in its exit status."""
    script = textwrap.dedent("""
        import dataclasses, signal
        from ttsearch import cli

        def command(run_dir):
            try:
                print("working", flush=True)
                signal.pause()
            finally:
                print("cleaned up", flush=True)

        cli.COMMANDS["report"] = dataclasses.replace(cli.COMMANDS["report"], handler="__main__:command")
        cli.main(["report", "runs/none"])
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "working\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert out == "cleaned up\n"
    assert err.strip() == "ttsearch: report stopped by SIGTERM"
