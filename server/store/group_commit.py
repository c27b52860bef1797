"""SQLite's writes of one process commit together (group commit), on one thread of their own.

All writers of a SQLite database share one resource, the writer's turn (turns.py), and under load
each turn was stretched by a commit of its own and by the hand-over to the next writer's thread
(measured with 16 calls in flight: a turn held 1.9 ms at the median, and 0.66 ms more to wake
the next writer of the process). So the mutations of a process (Store.serially) run on one
thread, the group writer: it takes the turn once for the calls queued meanwhile, at most
GROUP_AT_MOST, runs each in a savepoint of one transaction and commits them together. A caller
waits for its call's commit before it answers; what its call asked to run once committed
(UnitOfWork.on_commit) then runs on the caller's own thread, off the serial path.

A call that fails on a refusal or a bug is rolled back to its savepoint, alone. One that fails in
the database, or leaves the transaction in doubt (its savepoint could not be rolled back), and a
group whose commit fails, roll the whole group back; its calls then run again one at a time, so
that each commits or fails on its own. Running a call again is safe: nothing of the rolled-back
run stays (its request id was claimed in the same transaction), and its effects after commit
are those of the run that committed.

A call waits for its group at most `wait` seconds before its group has begun, as a writer waits
for its turn; then it is dropped, unrun, and the caller told the database is busy.

The observers of a group writer (GroupCommit.observe: the server's metrics) are told of each
group how long each of its calls had waited for it.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import peewee as pw

from server.service.unit_of_work import StoreUnavailable, TransactionAborted
from server.store.database import SqliteFile

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore

T = TypeVar("T")

log = logging.getLogger(__name__)

# The most calls one group commits: the turn is let go after them, for the other processes.
GROUP_AT_MOST = 16

# What a call may fail with that puts the group's transaction in doubt.
_IN_DOUBT = (StoreUnavailable, TransactionAborted, pw.PeeweeException, sqlite3.Error)


class _Call:
    __slots__ = ("work", "context", "done", "result", "error", "after", "state", "queued_at")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.queued_at = time.perf_counter()
        self.work = work
        # The caller's context (its trace, its request id in the log), for the group writer.
        self.context = contextvars.copy_context()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.after: list[Callable[[], None]] = []
        self.state = "queued"  # then running (taken by the group writer) or dropped (by its caller)


class GroupCommit:
    """The group writer of one SQLite store in this process, started with its first call (in
    the process that makes it: a process forked after starts its own)."""

    def __init__(self, store: SqlStore, *, wait: float) -> None:
        self._store = store
        self._wait = wait
        self._state = threading.Condition()
        self._queue: collections.deque[_Call] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        # On the group writer: the call it runs, and whether it runs in a group's transaction.
        self._running = threading.local()
        self._observers: list[Callable[[list[float]], None]] = []

    def run(self, work: Callable[[], T]) -> T:
        """Runs `work` (it opens a write unit of work, committed when it returns) on the group
        writer and returns what it returned, or raises what it raised, once its writes are
        committed; then runs what it asked to run after its commit. Raises StoreUnavailable if
        the store is closed or the call's group did not begin within the wait. (Not from a
        thread holding its turn, which the group writer would wait for: SqlStore.serially.)"""
        call = _Call(work)
        with self._state:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            self._start()
            self._queue.append(call)
            self._state.notify()
        if not call.done.wait(self._wait):
            with self._state:
                if call.state == "queued":
                    call.state = "dropped"
                    self._queue.remove(call)
                    raise StoreUnavailable(
                        f"no turn to write within {self._wait:g} s: the database is busy"
                    )
            call.done.wait()
        if call.error is not None:
            raise call.error
        for after in call.after:
            after()
        return cast(T, call.result)

    def observe(self, observer: Callable[[list[float]], None]) -> None:
        """From now on, `observer` is told of each group once the turn is let go and its callers
        woken, on the group writer: the seconds each of its calls waited, from being queued to
        the group taking the turn. Its failure is logged, never the callers'."""
        if observer not in self._observers:
            self._observers.append(observer)

    def waiting(self) -> int:
        """Calls queued for a group that has not begun yet."""
        with self._state:
            return len(self._queue)

    def after_commit(self, callback: Callable[[], None]) -> bool:
        """On the group writer, keeps `callback` for the caller of the call it runs, to run
        once that call's writes are committed; False on any other thread."""
        call: _Call | None = getattr(self._running, "call", None)
        if call is None:
            return False
        call.after.append(callback)
        return True

    def grouping(self) -> bool:
        """Whether this thread is the group writer running a call in a group's transaction (the
        call's unit of work is then a savepoint of it)."""
        return bool(getattr(self._running, "grouped", False))

    def in_doubt(self) -> None:
        """Told by a unit of work whose transaction or savepoint could not be rolled back: if it
        ran in a group, the group's other writes may not commit with what is left of it."""
        if self.grouping():
            self._running.in_doubt = True

    def close(self) -> None:
        """Lets the queued calls run, then stops the group writer; later calls are refused."""
        with self._state:
            self._closed = True
            thread, self._thread = self._thread, None
            self._state.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        """Starts the group writer unless it runs in this process (a thread that died, as of a
        failure of the database's driver, is replaced)."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._queue.clear()  # a forked copy of the parent's: those callers are not here
            self._thread = threading.Thread(target=self._serve, name="group-writer", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        database = self._store.database
        if isinstance(database, SqliteFile):  # before this thread connects
            database.unmapped_here()
        try:
            while self._next_group():
                pass
        finally:
            self._store.database.close()  # this thread's connection

    def _next_group(self) -> bool:
        """Waits for calls, takes the turn, then runs the calls queued by then (at most
        GROUP_AT_MOST) and commits them; False once closed with nothing left to run."""
        with self._state:
            self._state.wait_for(lambda: self._queue or self._closed)
            if not self._queue:
                return False
        writer = self._store.writer
        assert writer is not None
        # The turn first, then the calls: those queued while it waited join the group. A call
        # that waits too long for it leaves the queue by itself (run).
        if not writer.acquire(timeout=self._wait):
            if self._closed:  # and so are the turns: nothing queued will run
                for call in self._take():
                    call.error = StoreUnavailable("the store is closed")
                    call.done.set()
            return True
        taken = time.perf_counter()
        group = self._take()
        try:
            # A call alone, or one of a group in doubt, runs in its own unit of work's transaction.
            if len(group) == 1:
                self._run(group[0])
            elif group and not self._together(group):
                for call in group:
                    self._run(call)
        finally:
            writer.release()
            for call in group:
                call.done.set()
        if group and self._observers:
            self._tell([max(0.0, taken - call.queued_at) for call in group])
        return True

    def _tell(self, waits: list[float]) -> None:
        for observer in self._observers:
            try:
                observer(waits)
            except Exception:
                log.exception("a group writer's observer failed")

    def _take(self) -> list[_Call]:
        group: list[_Call] = []
        with self._state:
            while self._queue and len(group) < GROUP_AT_MOST:
                call = self._queue.popleft()
                call.state = "running"
                group.append(call)
        return group

    def _together(self, group: list[_Call]) -> bool:
        """Runs the calls of `group` in one transaction and commits it; False, with the
        transaction rolled back, if a call or the commit left it in doubt."""
        self._running.grouped = True
        self._running.in_doubt = False
        try:
            # One BEGIN (IMMEDIATE) and one COMMIT; each call's unit of work is a savepoint.
            with self._store.database.transaction():
                for call in group:
                    self._run(call)
                    if self._running.in_doubt or isinstance(call.error, _IN_DOUBT):
                        raise _GroupInDoubt
        except Exception:  # rolled back (or the connection is gone): each call runs alone
            return False
        finally:
            self._running.grouped = False
        return True

    def _run(self, call: _Call) -> None:
        call.error, call.result, call.after = None, None, []
        self._running.call = call
        try:
            call.result = call.context.run(call.work)
        except BaseException as e:  # the caller's to handle, on its own thread
            call.error = e
        finally:
            self._running.call = None


class _GroupInDoubt(Exception):
    pass
