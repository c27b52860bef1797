"""A stop signal reaches the server's main thread, sleeping on the signals' pipe, at once,
whichever of the process's threads the kernel hands it to (server.processes.Signals)."""

from __future__ import annotations

import subprocess
import sys

# Run in a process of its own: the signals' handlers and wake-up pipe are the process's.
_WAIT = """
import os, signal, sys, threading, time
from server.processes import Signals

signals = Signals()
signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # a handler of another signal


def send():
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGUSR1)  # not a stop signal: passed over
    # This thread takes it, as one of gRPC's often does: the main thread runs no Python until
    # its select() returns.
    signal.pthread_kill(threading.get_ident(), signal.SIG{name})
    time.sleep(60)


threading.Thread(target=send, daemon=True).start()
started = time.monotonic()
got = signals.next(30)
print(got.name if got else None, round(time.monotonic() - started, 1))
"""


def waited_for(name: str) -> tuple[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _WAIT.replace("{name}", name)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    got, seconds = done.stdout.split()
    return got, float(seconds)


def test_a_stop_signal_another_thread_takes_wakes_the_main_thread_at_once():
    for name in ("TERM", "INT"):
        got, seconds = waited_for(name)
        assert got == f"SIG{name}"
        assert seconds < 10  # not the 30 s of the wait: the signal woke it
