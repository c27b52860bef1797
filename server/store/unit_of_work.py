"""The SQL store: units of work over one peewee database, SQLite or PostgreSQL.

Each unit of work is a connection for the call (from the pool on PostgreSQL; SQLite keeps one
per thread) and, unless read-only, one transaction. Database failures leave it as the service
layer's exceptions where the database says what they are (faults.py): StoreUnavailable or
TransactionAborted (a retry may cure them) or WriteConflict; any other one is a bug and leaves it
as it is.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from types import TracebackType
from typing import Any, NoReturn, TypeVar, cast

import peewee as pw
import psycopg
from opentelemetry.trace import Span

from server import tracing
from server.domain.model import EXTERNAL, PLATFORM_COMMISSION, AccountRef
from server.service.unit_of_work import StoreUnavailable
from server.store import faults, migrations
from server.store.clawbacks import SqlClawbacks
from server.store.database import Pool, SqliteFile
from server.store.entries import SqlEntries
from server.store.events import SqlEvents
from server.store.facts import SqlFacts
from server.store.group_commit import GroupCommit
from server.store.ledger import SqlLedger
from server.store.requests import SqlRequests
from server.store.schema import KEY, AccountRow, SettingRow, db, execute_sql
from server.store.turns import WriterTurns

log = logging.getLogger("aftersales")

# The most frames of SQLite's log the upkeep copies while the writers wait (see upkeep).
UPKEEP_FRAMES_HELD = 1_000
# The frames (4 KiB pages) from which the upkeep makes the writers wait to copy the log whole, so
# that the next writer starts it over: below it the log is left to grow. Each such wait holds
# every writer for two flushes to disk (measured under load: 5 to 28 ms, where a write holds its
# turn for about 2), and it came every second from each process. At 16 MiB the log is started
# over every few seconds at the busiest, far below SQLite's own bound (WAL_AUTOCHECKPOINT_PAGES).
UPKEEP_HOLD_FROM_FRAMES = 4_096

# The most accounts a process keeps as known to exist (SqlStore.known_accounts), about 200 bytes
# each (10 MiB at most): a refund's shop and payees, or a payment's receiver, met again, lock
# theirs with one statement fewer (a round trip on PostgreSQL).
KNOWN_ACCOUNTS = 50_000

T = TypeVar("T")

# The namespace of PostgreSQL advisory locks taken by serialize_on.
_KEY_LOCK_SPACE = 726_0432

# What ending a transaction on a broken connection may raise: ignored, the failure that ended it
# is the one to report.
_ENDING_FAILURES = (pw.PeeweeException, psycopg.Error, sqlite3.Error)


class SqlStore:
    """The one door to the database. `migrate()` once at start, then units of work."""

    def __init__(self, database: pw.Database, *, writer_wait: float = 10.0) -> None:
        """`writer_wait`: on SQLite, how long a writer waits for its turn (seconds)."""
        self.database = database
        self.is_postgres = isinstance(database, pw.PostgresqlDatabase)
        # SQLite has one writer at a time: the writers queue for their turns (turns.py), those
        # of this process and those of other processes on the same file. (A thread has one
        # connection, on which a unit of work inside another is a savepoint of it.)
        path = None if self.is_postgres else _file_of(database)
        self.writer = None if self.is_postgres else WriterTurns(path)
        self.writer_wait = writer_wait
        # The mutations of this process commit in groups, on a thread of their own
        # (group_commit.py); not in memory, where each thread's connection has a database of
        # its own.
        self.group = None if path is None else GroupCommit(self, wait=writer_wait)
        db.initialize(database)
        self.page_token_key = b""
        # Accounts made with the schema, by id; SQL built once per hot query (facts.py).
        self.fixed_account_ids: dict[AccountRef, int] = {}
        # Accounts this process saw committed: they exist (none is ever deleted), so locking
        # them need not try to make them first (SqlLedger.lock_accounts). A hint, checked by the
        # lock's own read; at most KNOWN_ACCOUNTS, forgotten all at once when full.
        self.known_accounts: set[AccountRef] = set()
        self.statements: dict[str, tuple[str, list[Any]]] = {}
        self._columns: dict[str, tuple[str, ...]] = {}
        self._sessions = threading.local()

    def database_answers(self, failure: str | None, *, stuck_after: float) -> None:
        """What health's probe found, each round (server/grpc/background.py): why it hung (the
        database took what was sent and did not answer in time), else None (it answered, or
        failed at once: a database that is down or restarting fails calls at once by itself).
        On PostgreSQL, while it hangs, no connection is handed out, so that a call fails at
        once, UNAVAILABLE, instead of waiting to connect; and the connections handed out over
        `stuck_after` seconds ago are cut, so that their calls answer UNAVAILABLE too instead
        of waiting for as long as it lasts (both retryable: a commit cut on its way is
        answered by the retry, from the request's record). SQLite, a file of this host, needs
        neither."""
        database = self.database
        if not isinstance(database, Pool):
            return
        database.unanswered = failure
        if failure is not None:
            cut = database.cut_stuck(stuck_after)
            if cut:
                log.warning(
                    "cut %d database connections waiting over %g s on a database that does not "
                    "answer",
                    cut,
                    stuck_after,
                )

    def migrate(self) -> int:
        """Brings the schema to the current version and reads what every replica shares. On
        SQLite, in the writers' turn: the processes serving the file wait, instead of sleeping
        in SQLite's busy handler. A SQLite file is made here if it is missing, and only here."""
        if isinstance(self.database, SqliteFile):
            self.database.make()
        with self.session(), self.writer or contextlib.nullcontext():
            version = migrations.run(self.database)
            self._read_shared()
        return version

    def use_migrated(self) -> int:
        """Reads what every replica shares from a schema migrated by a step of its own (`python
        -m server migrate`), changing nothing; raises migrations.SchemaNotCurrent unless the
        schema is at this server's version (a SQLite file that does not exist is not made)."""
        if isinstance(self.database, SqliteFile) and not self.database.exists():
            raise migrations.SchemaNotCurrent(
                f"the database file {self.database.path} does not exist: make it with "
                "`python -m server migrate`"
            )
        with self.session():
            version = migrations.check(self.database)
            self._read_shared()
        return version

    def _read_shared(self) -> None:
        self.page_token_key = bytes.fromhex(
            SettingRow.get(SettingRow.name == "page_token_key").value
        )
        self._read_fixed_accounts()

    def _read_fixed_accounts(self) -> None:
        self.fixed_account_ids = {
            ref: AccountRow.get(
                (AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == "")
            ).id
            for ref in (EXTERNAL, PLATFORM_COMMISSION)
        }

    def external_account_id(self) -> int:
        """The external account's id (read when first needed by a store that neither migrated
        nor checked the schema)."""
        if EXTERNAL not in self.fixed_account_ids:
            self._read_fixed_accounts()
        return self.fixed_account_ids[EXTERNAL]

    def knows_accounts(self, refs: Collection[AccountRef]) -> None:
        """Keeps `refs`, committed, as accounts that exist (known_accounts)."""
        known = self.known_accounts
        fresh = [ref for ref in refs if ref not in known]
        if len(known) + len(fresh) > KNOWN_ACCOUNTS:
            known = self.known_accounts = set()
        known.update(fresh[:KNOWN_ACCOUNTS])

    def forget_accounts(self) -> None:
        """Forgets every account kept as known: one was not there."""
        self.known_accounts = set()

    def locked(self, query: pw.Select, of: Any = None) -> pw.Select:
        """Row locks where the database has them, on the rows of `of` (a model or alias) alone
        when given; SQLite's write transactions are exclusive."""
        return query.for_update(of=of) if self.is_postgres else query

    def prepared(self, name: str, build: Callable[[], pw.Query]) -> tuple[str, list[Any]]:
        """The SQL and parameters of a hot query, built by peewee once per database: building a
        query costs more than running it."""
        if name not in self.statements:
            self.statements[name] = build().sql()
        return self.statements[name]

    def row_by_id(
        self, model: type[pw.Model], key: Any, *, for_update: bool = False
    ) -> dict[str, Any] | None:
        """The row of `model` whose primary key is `key`, as {field name: value} (what a model's
        __data__ holds), with SQL made once per model: the single-row reads of every call."""

        def build() -> pw.Query:
            fields = model._meta.sorted_fields
            query = model.select(*[f.alias(f.name) for f in fields]).where(
                model._meta.primary_key == KEY
            )
            return self.locked(query) if for_update else query

        name = f"{model._meta.table_name}:{'locked' if for_update else 'read'}"
        return self.one(name, build, key)

    def columns(self, name: str, cursor: Any) -> tuple[str, ...]:
        """The column names of the rows of prepared query `name`, read from its first cursor
        only: psycopg makes an object per column each time a cursor is asked for them."""
        names = self._columns.get(name)
        if names is None:
            names = self._columns[name] = tuple(d[0] for d in cursor.description)
        return names

    def run_prepared(self, name: str, build: Callable[[], pw.Query], key: Any) -> Any:
        """Runs a prepared query whose one parameter `build` names KEY; returns its cursor."""
        sql, params = self.prepared(name, build)
        return execute_sql(self.database, sql, [key if p == KEY else p for p in params])

    def run_bound(self, name: str, build: Callable[[], pw.Query], values: dict[str, Any]) -> Any:
        """Runs a prepared query whose parameters `build` names by stand-ins, each replaced by
        its value in `values` (the others are the query's own); returns its cursor."""
        sql, params = self.prepared(name, build)
        return execute_sql(self.database, sql, [values.get(p, p) for p in params])

    def one(self, name: str, build: Callable[[], pw.Query], key: Any) -> dict[str, Any] | None:
        """The first row of a prepared query (`build` names its one parameter KEY, as often as
        it needs), as {column alias: value}."""
        cursor = self.run_prepared(name, build, key)
        found = cursor.fetchone()
        if found is None:
            return None
        return dict(zip(self.columns(name, cursor), found, strict=True))

    def schema_version(self) -> int:
        with self.session():
            return migrations.schema_version()

    def unit_of_work(self, *, read_only: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self, read_only=read_only)

    def serially(self, work: Callable[[], T]) -> T:
        """Runs `work`, which writes in a unit of work of its own: on SQLite (a file), on the
        group writer, committed with the other writes queued meanwhile (group_commit.py); on
        PostgreSQL, where writers do not take turns, here; and here in a thread that holds its
        turn already (a unit of work opened around it), which the group writer would wait for."""
        if self.group is None or (self.writer is not None and self.writer.held()):
            return work()
        return self.group.run(work)

    def upkeep(self) -> int:
        """On SQLite, copies the write-ahead log into the database file (a checkpoint); the
        log's frames copied in all. First alongside the writers (readers and writers go on),
        then, once the log is long (UPKEEP_HOLD_FROM_FRAMES) and the frames written meanwhile
        are few (UPKEEP_FRAMES_HELD), those, between two writes, so that the log is copied whole
        and the next writer starts it over instead of making it longer. PostgreSQL needs
        nothing."""
        if self.writer is None:
            return 0
        try:
            log, copied = self._checkpoint()
            if log < UPKEEP_HOLD_FROM_FRAMES:
                return copied
            if log - copied > UPKEEP_FRAMES_HELD:
                # A reader held an old snapshot: the rest waits for the next round rather than
                # hold the writers for a copy of that size.
                return copied
            if not self.writer.acquire(timeout=self.writer_wait):
                return copied
            try:
                return self._checkpoint()[1]
            finally:
                self.writer.release()
        except Exception as e:
            _raise_translated(e)

    def _checkpoint(self) -> tuple[int, int]:
        """The frames in the log and those copied (0, 0 on a database not in WAL mode)."""
        # PASSIVE: waits for no reader or writer; copies what no reader still needs.
        # Read to the end: a statement left unfinished would hold a snapshot, and the log with it.
        ((_, log, copied),) = execute_sql(
            self.database, "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchall()
        return max(int(log), 0), max(int(copied), 0)

    def close(self) -> None:
        if self.is_postgres:
            cast(Any, self.database).close_all()  # a pool's: every connection
        else:
            if self.group is not None:
                self.group.close()
            self.database.close()
            if self.writer is not None:
                self.writer.close()

    def _check_file(self) -> None:
        """On SQLite, StoreUnavailable if this thread's connection has a file open that is no
        longer the database's (it went away): the connection is closed, unless a transaction
        (a group's) still runs on it, which this call's failure rolls back (group_commit.py).
        The next connection opens the file at the path, once it is back."""
        database = self.database
        if not isinstance(database, SqliteFile) or database.same_file():
            return
        if not database.in_transaction():
            database.close()
        raise StoreUnavailable(f"the database file {database.path} went away")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """A connection for the duration of a call: from the pool on PostgreSQL (returned when
        the outermost session ends); SQLite keeps one per thread."""
        if not self.is_postgres:
            self._check_file()
            yield
            return
        depth = getattr(self._sessions, "depth", 0)
        self._sessions.depth = depth + 1
        try:
            if depth:
                yield
            else:
                with self.database.connection_context():
                    yield
        finally:
            self._sessions.depth = depth


class SqlUnitOfWork:
    def __init__(self, store: SqlStore, *, read_only: bool) -> None:
        self._store = store
        self._read_only = read_only
        self._session: contextlib.AbstractContextManager[None] | None = None
        self._transaction: Any = None
        self._writer_turn = False
        self._committed = False
        self._after_commit: list[Callable[[], None]] = []
        self._span: Span | None = None
        # Ids of accounts met in this transaction; they must not outlive it (a rolled-back
        # transaction may have made them).
        account_ids: dict[AccountRef, int] = {}
        self.facts = SqlFacts(store)
        self.entries = SqlEntries(store)
        self.ledger = SqlLedger(store, account_ids, self.on_commit)
        self.clawbacks = SqlClawbacks(store)
        self.requests = SqlRequests(store)
        self.events = SqlEvents(store)

    def __enter__(self) -> SqlUnitOfWork:
        self._span = tracing.start_transaction(
            "postgresql" if self._store.is_postgres else "sqlite", read_only=self._read_only
        )
        try:
            self._session = self._store.session()
            self._session.__enter__()
            if not self._read_only:
                self._take_writer_turn()
                transaction = self._store.database.atomic()
                transaction.__enter__()
                # Only once it began: a BEGIN refused (SQLite busy) leaves nothing to roll back.
                self._transaction = transaction
        except Exception as e:
            self._end(type(e), e, e.__traceback__)
            _raise_translated(e)
        return self

    def on_commit(self, callback: Callable[[], None]) -> None:
        """`callback()` once this unit of work's writes are committed, on the thread that asked
        for the write: as it ends here, or once the group it ran in committed (Store.serially);
        never if it rolls back."""
        group = self._store.group
        if group is None or not group.after_commit(callback):
            self._after_commit.append(callback)

    def commit(self) -> None:
        if self._transaction is not None:
            try:
                self._write_last()
            except Exception as e:
                _raise_translated(e)
            transaction, self._transaction = self._transaction, None
            try:
                transaction.__exit__(None, None, None)
            except Exception as e:
                _raise_translated(e)
            self._committed = True

    def _write_last(self) -> None:
        """The transaction's last writes: the balance changes kept for its end (ledger.py), the
        response of its request and its events. On PostgreSQL one statement, a round trip saved
        on every mutation that tells something, and the platform's commission account held
        only for the commit's. The commit then draws the events' positions (events.py)."""
        answering, self.requests.completed = self.requests.completed, None
        if self._store.is_postgres and self.events.pending:
            moved = self.ledger.take_deferred()
            answer = None if answering is None else self.requests.answer(*answering)
            self.events.flush([s for s in (moved, answer) if s is not None])
            return
        self.ledger.make_deferred()
        if answering is not None:
            self.requests.write(*answering)
        self.events.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving without commit() rolls back, whether or not something was raised.
        if exc is None:
            if self._committed or self._read_only:
                self._end(None, None, None)
                for callback in self._after_commit:
                    callback()
                return
            exc_type, exc = RuntimeError, RuntimeError("left without commit")
        self._end(exc_type, exc, tb)
        if isinstance(exc, Exception):
            translated = faults.translate(exc)
            if translated is not None:
                raise translated from exc

    def _end(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Rolls back what is still open and gives the connection back, even if the database is
        gone (then there is nothing left to roll back)."""
        try:
            if self._transaction is not None:
                transaction, self._transaction = self._transaction, None
                try:
                    transaction.__exit__(exc_type, exc, tb)
                except _ENDING_FAILURES:
                    if self._store.group is not None:
                        self._store.group.in_doubt()
        finally:
            try:
                if self._session is not None:
                    session, self._session = self._session, None
                    with contextlib.suppress(*_ENDING_FAILURES):
                        session.__exit__(None, None, None)
            finally:
                if self._writer_turn and self._store.writer is not None:
                    self._writer_turn = False
                    self._store.writer.release()
                if self._span is not None:
                    span, self._span = self._span, None
                    failed = isinstance(exc, (*_ENDING_FAILURES, StoreUnavailable))
                    group = self._store.group
                    tracing.end_transaction(
                        span,
                        committed=self._committed,
                        error=exc if failed else None,
                        grouped=group is not None and group.grouping(),
                    )

    def _take_writer_turn(self) -> None:
        """On SQLite, writers take their turns (turns.py) before BEGIN: they queue there instead
        of sleeping in SQLite's busy handler, whose back-off is what made the multi-second
        tails. Readers (WAL) never wait."""
        writer = self._store.writer
        if writer is None:
            return
        if not writer.acquire(timeout=self._store.writer_wait):
            raise StoreUnavailable(
                f"no turn to write within {self._store.writer_wait:g} s: the database is busy"
            )
        self._writer_turn = True

    def serialize_on(self, key: str) -> None:
        """Until the transaction ends, other transactions serialising on `key` wait. (SQLite's
        write transactions are exclusive already.)"""
        if self._store.is_postgres:
            execute_sql(
                self._store.database,
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (_KEY_LOCK_SPACE, key),
            )


def _file_of(database: pw.Database) -> str | None:
    """The file of a SQLite database; None for one in memory."""
    return database.path if isinstance(database, SqliteFile) else None


def _raise_translated(error: Exception) -> NoReturn:
    """Raises the service layer's exception for `error`, or `error` itself when it is a bug."""
    translated = faults.translate(error)
    if translated is None:
        raise error
    raise translated from error
