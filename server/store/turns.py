"""SQLite's writers take turns, in a queue, instead of sleeping in SQLite's busy handler.

SQLite has one writer at a time. A writer that finds the database locked sleeps and retries in
its busy handler, with a back-off that made multi-second tails under load. So every write
transaction first takes its turn here: the threads of a process on a lock of their own, and the
one thread holding it then takes the processes' turn, an exclusive `flock` of a file beside the
database (`<database>-writer`), in which the waiting processes sleep until the kernel wakes them
as the holder lets go (no order among them is promised, but none sleeps longer than needed).
Several server processes (`--processes`) then serve one database file, and a migration
(SqlStore.migrate) waits its turn too. The lock of a process that dies is let go by the kernel.

`flock` has no timeout: a process waiting for its turn waits in a thread of its own, which the
writer waits for at most its timeout; a turn that comes after the writer gave up is let go at
once unless another writer of the process wants it by then. A writer ending its turn while
another of its process waits passes the file's lock on to it (whether or not another process
waits), for up to PASSED_ON_AT_MOST turns in a row, then lets go: a hand-over between processes
costs both a wake-up.

The observers of a process's turns (WriterTurns.observe: the server's metrics) are told how long
each turn was held, once it is let go, a turn passed on from the moment it was: all of them
together are the time the database's one writer was taken, its writing capacity in use.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable

# Turns in a row a process may pass the file's lock on to its own writers.
PASSED_ON_AT_MOST = 4

log = logging.getLogger(__name__)


class WriterTurns:
    """The turns of the writers of one SQLite database. Re-entrant: a thread holding its turn
    (a unit of work inside another, a savepoint) takes it again at once."""

    def __init__(self, path: str | None) -> None:
        """`path`: the database file, beside which the processes' lock file lives; None for a
        database of this process alone (in memory)."""
        self._threads = threading.RLock()
        self._depth = threading.local()
        self._file = None if path is None else _FileTurn(f"{path}-writer")
        # Threads of this process waiting for their turn (under _count).
        self._count = threading.Lock()
        self._waiting = 0
        # While a thread holds the threads' lock: whether this process holds the file's, and
        # for how many turns in a row it passed it on to its own next writer.
        self._file_held = False
        self._passed_on = 0
        # While a thread holds its turn: when it took it; and when the file's lock was passed on
        # to this process's next writer (other processes are shut out from then: its turn's).
        self._taken_at = 0.0
        self._passed_at: float | None = None
        self._observers: list[Callable[[float], None]] = []

    def observe(self, observer: Callable[[float], None]) -> None:
        """From now on, `observer` is told the seconds each turn of this process was held, on
        the thread that held it once it let it go. Its failure is logged, never the writer's."""
        if observer not in self._observers:
            self._observers.append(observer)

    def acquire(self, timeout: float) -> bool:
        """Takes this thread's turn within `timeout` seconds; False if it did not come."""
        deadline = time.monotonic() + timeout
        with self._count:
            self._waiting += 1
        got = False
        try:
            got = self._threads.acquire(timeout=timeout)
        finally:
            with self._count:
                self._waiting -= 1
            if not got:  # timed out, or interrupted
                self._let_go_if_unused()
        if not got:
            return False
        if self._file is not None and self._file.closed:  # (read without its lock: set once)
            self._threads.release()
            return False
        depth: int = getattr(self._depth, "value", 0)
        if depth == 0 and self._file is not None and not self._file_held:
            try:
                self._file_held = self._file.acquire(max(0.0, deadline - time.monotonic()))
            finally:
                if not self._file_held:
                    self._threads.release()
            if not self._file_held:
                return False
        self._depth.value = depth + 1
        if depth == 0:
            passed_at, self._passed_at = self._passed_at, None
            self._taken_at = time.perf_counter() if passed_at is None else passed_at
        return True

    def held(self) -> bool:
        """Whether this thread holds its turn."""
        return bool(getattr(self._depth, "value", 0))

    def release(self) -> None:
        depth: int = self._depth.value - 1
        self._depth.value = depth
        now = time.perf_counter()
        held = now - self._taken_at if depth == 0 else None
        passed_on = False
        try:
            if depth == 0 and self._file is not None:
                with self._count:
                    waiting = self._waiting
                if waiting and self._passed_on < PASSED_ON_AT_MOST:
                    # Another writer of this process is next: the file's lock goes on to it,
                    # which spares a hand-over between processes for each write.
                    self._passed_on += 1
                    self._passed_at = now
                    passed_on = True
                else:
                    self._passed_on = 0
                    self._file_held = False
                    self._file.release()
        finally:
            self._threads.release()
        if passed_on:
            # The writer it was kept for may have given up meanwhile, before it could see it
            # kept (its own check found the threads' lock still held).
            with self._count:
                waiting = self._waiting
            if not waiting:
                self._let_go_if_unused()
        if held is not None:
            for observer in self._observers:
                try:
                    observer(held)
                except Exception:
                    log.exception("an observer of the writer's turns failed")

    def _let_go_if_unused(self) -> None:
        """After a wait that timed out: the file's lock may have been passed on to this thread,
        and would then be held with no writer to use it."""
        if self._file is None or not self._threads.acquire(blocking=False):
            return
        try:
            if self._file_held and not getattr(self._depth, "value", 0):
                self._passed_on = 0
                self._passed_at = None
                self._file_held = False
                self._file.release()
        finally:
            self._threads.release()

    def __enter__(self) -> WriterTurns:
        if not self.acquire(threading.TIMEOUT_MAX):
            raise RuntimeError("no turn to write: the turns are closed")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _FileTurn:
    """The processes' turn: an exclusive flock of a file, held by one thread of this process at
    a time (the one holding the threads' turn)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._state = threading.Condition()
        self._held = False  # this process holds the lock
        self._wanted = False  # a writer of this process waits for it
        self._in_flock = False  # the waiting thread is blocked in flock
        self._waiter: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self, timeout: float) -> bool:
        with self._state:
            if self._closed:
                return False
            if not self._in_flock:
                # The common case: nobody holds it, taken at once. (Not while the waiting
                # thread is in flock on this same file: its lock would be this one.)
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    self._held = True
                    return True
            self._wanted = True
            if self._waiter is None:
                self._waiter = threading.Thread(
                    target=self._wait, name="sqlite-writer-turn", daemon=True
                )
                self._waiter.start()
            self._state.notify_all()
            self._state.wait_for(lambda: self._held or self._closed, timeout)
            self._wanted = False
            return self._held and not self._closed

    def release(self) -> None:
        with self._state:
            self._held = False
            if not self._closed:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _wait(self) -> None:
        """Waits in flock, for the process, whenever a writer wants the lock."""
        while True:
            with self._state:
                self._state.wait_for(lambda: (self._wanted and not self._held) or self._closed)
                if self._closed:
                    return
                self._in_flock = True
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._state:
                self._in_flock = False
                if self._closed:
                    self._let_go()
                    return
                if self._wanted:
                    self._held = True
                    self._state.notify_all()
                else:  # the writer gave up meanwhile, and no other wants it
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Lets go of the lock and the file, and wakes whoever waits (they get no turn). The
        waiting thread, if in flock, lets go of them as it comes out."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._state.notify_all()
            if not self._in_flock:
                self._let_go()

    def _let_go(self) -> None:
        # Unlocked before closed: a process forked meanwhile shares the file, and the lock with it.
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
