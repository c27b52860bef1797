"""Stop signals, a server run as several processes that listen on one port, and the heap a
serving process settles before it serves.

One Python process serves on one core at a time (the GIL). `Workers` forks processes that each
run a server of their own on the same port (SO_REUSEPORT: the kernel spreads the connections
among them), as grpc's Python multiprocessing example does: the workers are forked before any
gRPC object exists, and this process, their parent, holds none. It forwards SIGTERM and SIGINT
to every worker as SIGTERM, waits for them all, and stops the others when one ends unasked.
A worker whose parent is gone stops by itself.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("aftersales")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def settle_heap() -> int:
    """Collects what starting left as garbage, then puts every object alive (modules, message
    types, the server itself: most of the heap, held for as long as the process lives) out of
    reach of the garbage collector, whose full collections would otherwise walk them all
    while every thread of the process waits: measured under 16 calls in flight, 33 ms about
    once every 10 s, each time stalling the writes queued meanwhile (the writes' 99th
    percentile); 0.2 ms once settled. Run by a process once it is made, before it serves, and
    by a parent before it forks (its workers inherit those objects settled). Returns how many
    objects are now out of reach."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Signals:
    """Stop signals (SIGTERM and SIGINT unless told), each written to a pipe as it arrives, read
    by the main thread with a timeout. Made on the main thread (the one Python runs its signal
    handlers on), once per process.

    The kernel hands a process's signal to any of its threads that does not block it, often one
    of gRPC's. A Python handler then runs only once the main thread runs Python again, and it
    sleeps in select() on this pipe: it would wait for good. So the signal's number is written
    to the pipe by the C handler itself, on whichever thread took it (signal.set_wakeup_fd), and
    the Python handler does nothing but keep the signal from killing the process."""

    def __init__(self, signums: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self._signums = frozenset(signums)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        for signum in signums:
            signal.signal(signum, _caught)
        # (A full pipe holds signals enough.)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def post(self, signum: int) -> None:
        """Acts as if `signum` arrived."""
        try:
            os.write(self._write, bytes([signum]))
        except BlockingIOError:
            pass  # a full pipe holds signals enough

    def fileno(self) -> int:
        return self._read

    def next(self, timeout: float | None = None) -> signal.Signals | None:
        """The next stop signal; None if `timeout` seconds pass first. (The pipe also gets the
        number of any other signal a Python handler was set for: those are passed over.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._read], [], [], left)
            if not ready:
                return None
            signum = os.read(self._read, 1)[0]
            if signum in self._signums:
                return signal.Signals(signum)


def _caught(signum: int, frame: FrameType | None) -> None:
    """A stop signal's Python handler: the signal is on the pipe already (Signals)."""


# What a worker runs: given its index and its stop signals, it serves until they say stop and
# returns its exit code.
Work = Callable[[int, Signals], int]


class Workers:
    """`count` processes forked at once, each running `work(index, signals)`."""

    def __init__(self, count: int, work: Work) -> None:
        # Held open by this process only: a worker that reads its end closed knows the parent is
        # gone, however it went.
        lifeline, self._lifeline = os.pipe()
        fork = multiprocessing.get_context("fork")
        # Blocked until each side has its handlers: a signal meanwhile waits instead of killing.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.processes = [
                fork.Process(
                    target=_run_worker,
                    args=(work, index, lifeline, self._lifeline),
                    name=f"worker-{index}",
                )
                for index in range(count)
            ]
            for process in self.processes:
                process.start()
            self.signals = Signals()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        os.close(lifeline)

    @property
    def pids(self) -> list[int | None]:
        return [process.pid for process in self.processes]

    def supervise(self, on_exit: Callable[[int], None] | None = None) -> int:
        """Waits for every worker to end: 0 when each stopped cleanly on a signal, 1 when one
        ended unasked or failed (the others are then stopped too). A stop signal here is
        forwarded to every worker still running as SIGTERM; a second one too (it ends their
        drain). `on_exit(pid)` is called as each worker ends."""
        running = {process.sentinel: (i, process) for i, process in enumerate(self.processes)}
        stopping = failed = False
        while running:
            ready = multiprocessing.connection.wait([self.signals.fileno(), *running])
            signum = self.signals.next(0) if self.signals.fileno() in ready else None
            if signum is not None:
                stopping = True
                log.info(
                    "stopping the workers",
                    extra={"signal": signum.name, "workers": len(running)},
                )
                _stop(process for _, process in running.values())
            for sentinel in ready:
                if sentinel not in running:
                    continue
                index, process = running.pop(sentinel)
                process.join()
                if on_exit is not None and process.pid is not None:
                    on_exit(process.pid)
                facts = {"worker": index, "worker_pid": process.pid}
                if stopping and process.exitcode == 0:
                    log.info("a worker stopped", extra=facts)
                    continue
                failed = True
                if stopping:
                    log.error(f"a worker {_how_it_ended(process.exitcode)}", extra=facts)
                    continue
                log.error(
                    f"a worker {_how_it_ended(process.exitcode)} unasked: stopping the others",
                    extra=facts,
                )
                stopping = True
                _stop(process for _, process in running.values())
        os.close(self._lifeline)
        return 1 if failed else 0

    def stop(self) -> None:
        """Asks every worker to stop, as a signal would; `supervise()` then waits for them."""
        self.signals.post(signal.SIGTERM)


def _stop(processes: Iterable[BaseProcess]) -> None:
    for process in processes:
        if process.pid is None:
            continue  # never started
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended already: its sentinel says so


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


def _run_worker(work: Work, index: int, lifeline: int, parent_end: int) -> None:
    """A forked worker's life: its own stop signals, then `work`."""
    os.close(parent_end)
    # A terminal's Ctrl-C goes to the whole process group: the parent forwards it once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signals = Signals((signal.SIGTERM,))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    threading.Thread(
        target=_watch_parent, args=(lifeline, signals), name="parent-watch", daemon=True
    ).start()
    sys.exit(work(index, signals))


def _watch_parent(lifeline: int, signals: Signals) -> None:
    """Stops the worker when its parent is gone: nothing would stop it or wait for it."""
    while os.read(lifeline, 1):
        pass
    log.error("the parent process is gone: stopping")
    signals.post(signal.SIGTERM)
