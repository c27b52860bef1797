"""Opens the database a URL names: SQLite (a file the processes of one machine share) or
PostgreSQL (replicas)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import sqlite3
import stat
import threading
import time
from typing import Any
from urllib.parse import urlparse

import peewee as pw
import psycopg
from playhouse.pool import PooledPostgresqlDatabase
from psycopg.conninfo import conninfo_to_dict

# Connections the pool keeps at most, how long an idle one lives, and how long a call waits for
# one when all are taken (seconds).
POOL_SIZE = 64
POOL_STALE_SECONDS = 300
POOL_WAIT_SECONDS = 10
# A connection handed out again within this long of its return is not pinged first (see Pool).
PING_AFTER_IDLE_SECONDS = 1.0

# How long a PostgreSQL connection may take to open, a statement to run, and a statement to wait
# for a lock; how long a SQLite write waits for another one to finish (seconds). A failure to
# finish in time answers UNAVAILABLE, retryable, instead of holding a worker thread.
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_SECONDS = 10.0
LOCK_TIMEOUT_SECONDS = 5.0
BUSY_TIMEOUT_SECONDS = 10.0

# SQLite copies its write-ahead log into the database file (a checkpoint, which syncs the file)
# in a background thread of the server (SqlStore.upkeep, every UPKEEP_SECONDS), not in the
# commit of whichever call crosses the log's threshold, where it cost OpenEntry a third of its
# time. The threshold stays as the bound of the log, should that thread fall behind or not run
# (a migration, a command): this many pages (4 KiB each, 160 MiB), far above what the upkeep
# lets the log reach. Under the heaviest writes measured (late refunds, 16 in flight, 2
# processes: 9,000 pages a second) the log reached 20,000 pages between two rounds; with the
# threshold at 10,000, the commit crossing it copied the log in the writers' turn, 40 to 50 ms
# every few seconds, which was the writes' 99th percentile.
WAL_AUTOCHECKPOINT_PAGES = 40_000
# The log's file is cut back to this size as the log starts over (once copied whole): a transaction
# far larger than the calls' (a migration building an index on a large database, a bulk load)
# would otherwise leave a file of its size behind for good (1.7 GB after loading a million orders).
# The log's bound, so that the log's usual length never shrinks the file only to grow it again.
WAL_FILE_LIMIT_BYTES = WAL_AUTOCHECKPOINT_PAGES * 4096
# SQLite's readers read the file through a memory map of its first this many bytes: its pages come
# from the OS's page cache, shared by every connection, not copied into each connection's own
# cache of 2 MiB, which a large database overflows and which a write by any other connection
# empties (WAL). Measured with make bench at 1M orders, 16 in flight (ratio to the no-op, median
# of 3, two runs without the map and one with it): CheckEligibility 0.52-0.53 -> 0.58, GetEntry
# 0.65-0.68 -> 0.74, PreviewClawback 0.43-0.45 -> 0.54, GetClawback 0.53-0.55 -> 0.59; the
# writes, and everything at 10k orders, within the runs' spread. The group writer reads through
# its own cache instead (SqliteFile.unmapped_here). Address space, not memory: a process's RSS
# counts each mapped page once per connection that touched it, though the OS holds it once.
# A read of the map that fails (an I/O error, the file cut shorter by anything but SQLite) is a
# SIGBUS that ends the process, not an error SQLite could return: the README says so.
MAP_BYTES = 1 << 30


class SqliteFile(pw.SqliteDatabase):
    """A SQLite database in a file. Its connections open the file as it is (a URI in mode=rw),
    never making it: only the migration does (`make`). So after a file went away (its volume
    unmounted, the file moved or deleted), a connection fails (UNAVAILABLE), and so does the
    health probe, instead of an empty database being made in its place, which the probe would
    have found answering. A connection already open would go on with the file it has open,
    deleted or elsewhere: `same_file` tells the store (SqlStore.session) to close it instead."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        # The file itself, beside which the writers take their turns (turns.py).
        self.path = path
        super().__init__(pathlib.Path(path).absolute().as_uri() + "?mode=rw", uri=True, **kwargs)
        # The file this thread's connection opened: (device, inode).
        self._opened = threading.local()

    def make(self) -> None:
        """Makes the file, an empty database, if it is missing."""
        sqlite3.connect(self.path).close()

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def connect(self, reuse_if_open: bool = False) -> bool:
        opened = super().connect(reuse_if_open)
        if opened:
            self._opened.file = self._file()
        return opened

    def unmapped_here(self) -> None:
        """The connections this thread makes from now on read the file through their own cache,
        not the memory map (MAP_BYTES): for the group writer, the process's one writer, whose
        cache no other connection's write empties. Through the map, SQLite fetches each page a
        transaction reads anew, and copies those it writes: a late refund cost the writer 3 to
        6% more CPU (measured in process, one call at a time)."""
        self._opened.unmapped = True

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        super()._set_pragmas(conn)  # type: ignore[misc]  # not in peewee's stubs
        if getattr(self._opened, "unmapped", False):
            conn.execute("PRAGMA mmap_size = 0").close()

    def same_file(self) -> bool:
        """Whether the file at the path is the one this thread's connection opened (true when
        it has none open). One stat, a microsecond or two."""
        opened: tuple[int, int] | None = getattr(self._opened, "file", None)
        if opened is None or self.is_closed():
            return True
        try:
            return self._file() == opened
        except OSError:
            return False

    def _file(self) -> tuple[int, int]:
        stat = os.stat(self.path)
        return stat.st_dev, stat.st_ino


def open_database(
    url: str,
    *,
    password: str | None = None,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    busy_timeout: float = BUSY_TIMEOUT_SECONDS,
) -> pw.Database:
    """A database for `url`: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`,
    `sqlite:///:memory:`, or `postgresql://user@host:port/dbname?param=value&...`.

    A PostgreSQL URL is read by libpq's own rules (psycopg's conninfo parser), so every libpq
    parameter it names is kept: sslmode, sslrootcert, application_name, connect_timeout, ...
    The password may stay out of the URL: `password` (e.g. read from a file), or libpq's own
    PGPASSWORD / PGPASSFILE.

    Timeouts, in seconds, 0 for none: PostgreSQL's `connect_timeout` (whole seconds, libpq's),
    `statement_timeout` and `lock_timeout` (set on each connection); SQLite's `busy_timeout`.
    The URL's own win: `connect_timeout=3`, or settings in libpq's `options`
    (`options=-c%20statement_timeout%3D2s`; else in PGOPTIONS)."""
    if min(connect_timeout, statement_timeout, lock_timeout, busy_timeout) < 0:
        raise ValueError("a timeout cannot be negative")
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = sqlite_path(url)
        sqlite: type[pw.SqliteDatabase] = pw.SqliteDatabase
        if not in_memory(path):
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
            sqlite = SqliteFile
        return sqlite(
            path,
            # Every write transaction takes the write lock up front: no deadlock on upgrade.
            lock_type="IMMEDIATE",
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": _milliseconds(busy_timeout),
                "wal_autocheckpoint": WAL_AUTOCHECKPOINT_PAGES,
                "journal_size_limit": WAL_FILE_LIMIT_BYTES,
                "mmap_size": MAP_BYTES,
            },
            check_same_thread=False,
        )
    if parsed.scheme in ("postgres", "postgresql"):
        params = conninfo_to_dict(url)
        dbname = params.pop("dbname", None) or "postgres"
        if password is not None and "password" not in params:
            params["password"] = password
        params.setdefault("connect_timeout", str(connect_timeout))
        params["options"] = _with_settings(
            str(params.get("options") or os.environ.get("PGOPTIONS", "")),
            statement_timeout=_milliseconds(statement_timeout),
            lock_timeout=_milliseconds(lock_timeout),
        )
        pooled: pw.Database = Pool(
            dbname,
            max_connections=POOL_SIZE,
            stale_timeout=POOL_STALE_SECONDS,
            timeout=POOL_WAIT_SECONDS,
            **params,
        )
        return pooled
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def _milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


def _with_settings(options: str, **settings: int) -> str:
    """libpq `options` that set each of `settings` its value, unless `options` sets it already."""
    named = _names_set_in(options)
    ours = [f"-c {name}={value}" for name, value in settings.items() if name not in named]
    return " ".join([*ours, options]).strip()


def _names_set_in(options: str) -> set[str]:
    """The settings libpq `options` name: `-c name=value`, `-cname=value`, `--name=value` (the
    server reads a - in a name as _)."""
    names, words = set(), iter(options.split())
    for word in words:
        if word == "-c":
            word = next(words, "")
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            continue
        names.add(word.partition("=")[0].replace("-", "_"))
    return names


def in_memory(path: str) -> bool:
    """Whether a SQLite database path (sqlite_path) is a database in memory, one process's own."""
    return path == ":memory:"


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///` URL names (relative after three slashes, absolute after four),
    or ":memory:" (`sqlite:///:memory:`). ValueError for what such a URL cannot say: no file
    (`sqlite:///`, a variable left empty in it, a directory), parameters (`?mode=ro`), a
    fragment, a host, a form without the three slashes (`sqlite:x.db`), or SQLite's own
    `file:` URI form, which would be opened as a file of that name."""
    parsed = urlparse(url)
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if (
        not url.startswith("sqlite:///")
        or not path
        or path.endswith("/")
        or pathlib.PurePath(path).name in ("", ".", "..")
        or url.endswith(("?", "#"))
        or parsed.query
        or parsed.fragment
    ):
        raise ValueError(
            f"a SQLite URL names a file (sqlite:///relative/path, sqlite:////absolute/path) or "
            f"sqlite:///:memory:, with no host or parameters: not {url!r}"
        )
    if path.startswith("file:"):
        raise ValueError(
            f"SQLite's file: URIs are not database URLs here: use sqlite:///path or "
            f"sqlite:///:memory:, not {url!r}"
        )
    return path


# libpq's choices for two parameters a PostgreSQL URL may carry.
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")


def check_postgres_url(url: str) -> None:
    """ValueError naming the first value of a PostgreSQL URL that libpq would refuse: a port
    that is no port number, a `connect_timeout` that is no whole number, an unknown `sslmode`
    or `target_session_attrs`. libpq says so only as it connects, which would look like a
    database that does not answer."""
    params = conninfo_to_dict(url)
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a port number (1 to 65535)")
    timeout = str(params.get("connect_timeout", "")).strip()
    if timeout and not (timeout.isascii() and timeout.lstrip("-").isdigit()):
        raise ValueError(f"connect_timeout {timeout!r} is not a whole number of seconds")
    for name, choices in (("sslmode", _SSLMODES), ("target_session_attrs", _SESSION_ATTRS)):
        value = params.get(name)
        if value is not None and value not in choices:
            raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}")


def describe(url: str) -> str:
    """The URL without its credentials or parameters, for logs."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        params = conninfo_to_dict(url)
        where = f"{params.get('host', '')}:{params.get('port', '')}".rstrip(":")
        return f"{parsed.scheme}://{where}/{params.get('dbname', '')}"
    return url


def _unanswered(failure: str) -> psycopg.OperationalError:
    """What a call gets from the pool while the database does not answer (UNAVAILABLE)."""
    return psycopg.OperationalError(f"the database does not answer: {failure}")


class Pool(PooledPostgresqlDatabase):  # type: ignore[misc]  # playhouse is untyped
    """peewee's pool, but a connection it hands out is pinged first (a `SELECT 1`, a round trip)
    only when it has been idle for PING_AFTER_IDLE_SECONDS, as HikariCP does: under load each
    call paid a round trip of its own for the ping. A connection lost meanwhile fails its call
    UNAVAILABLE, which is retryable, and is then closed instead of pooled again (its transaction
    status is unknown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned_at: dict[int, float] = {}
        # Why the database does not answer, while health says so (SqlStore.database_answers).
        self.unanswered: str | None = None
        # Of each connection of the pool, by key: its socket's (device, inode), which name that
        # socket whatever number it has by now (cut_stuck); and, while it waits on the
        # database for a call or for its ping, the connection and since when (monotonic).
        self._sockets: dict[int, tuple[int, int]] = {}
        self._waiting: dict[int, tuple[Any, float]] = {}
        # Held while a connection stops waiting, and while cut_stuck shuts one it found
        # waiting: so that it never shuts one a call has given back, or taken since.
        self._cut_lock = threading.Lock()

    def _connect(self) -> Any:
        """A connection for a call: none while the database does not answer, so that the call
        fails at once (UNAVAILABLE) instead of waiting to connect or on a ping."""
        failure = self.unanswered
        if failure is not None:
            raise _unanswered(failure)
        conn = super()._connect()
        key = self.conn_key(conn)
        try:
            if key not in self._sockets:
                found = os.fstat(conn.pgconn.socket)
                self._sockets[key] = (found.st_dev, found.st_ino)
        except (OSError, psycopg.Error) as e:
            self._close(conn, close_conn=True)
            raise psycopg.OperationalError(f"the new connection has no socket: {e}") from e
        self._waiting[key] = (conn, time.monotonic())
        return conn

    def cut_stuck(self, older_than: float) -> int:
        """Shuts the sockets of the connections that have waited on the database for a call
        (or for their ping) over `older_than` seconds, and returns how many: a database that
        does not answer (a paused server, a partition) would hold their calls for as long as
        it lasts, as its kernel still takes what is sent. Their calls then fail as with a lost
        connection, and the pool drops them."""
        cutoff = time.monotonic() - older_than
        cut = 0
        for key, entry in self._waiting.copy().items():
            conn, since = entry
            if since >= cutoff:
                continue
            try:
                fd = os.dup(conn.pgconn.socket)
            except (OSError, psycopg.Error):
                continue  # closed meanwhile
            # libpq closes a socket that failed, and the number may name another file by now:
            # only the connection's own socket is shut down.
            try:
                found = os.fstat(fd)
            except OSError:
                found = None
            if (
                found is None
                or not stat.S_ISSOCK(found.st_mode)
                or ((found.st_dev, found.st_ino) != self._sockets.get(key))
            ):
                os.close(fd)
                continue
            with socket.socket(fileno=fd) as copy, self._cut_lock, contextlib.suppress(OSError):
                if self._waiting.get(key) is not entry:
                    continue
                copy.shutdown(socket.SHUT_RDWR)
                cut += 1
        return cut

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        key = self.conn_key(conn)
        with self._cut_lock:
            self._waiting.pop(key, None)
        self._returned_at[key] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn: Any) -> None:
        self._forget(self.conn_key(conn))
        super()._close_raw(conn)

    def _forget(self, key: int) -> None:
        self._returned_at.pop(key, None)
        self._sockets.pop(key, None)
        with self._cut_lock:
            self._waiting.pop(key, None)

    def _is_closed(self, conn: Any) -> bool:
        """Asked as the pool hands `conn` out (or discards it): its return time is forgotten
        either way, so that the times held are those of the connections in the pool. Its ping,
        under the pool's lock, counts as waiting on the database (cut_stuck); none while the
        database does not answer (the call fails, the connection is closed)."""
        key = self.conn_key(conn)
        returned = self._returned_at.pop(key, None)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            closed = bool(conn.closed)
        else:
            failure = self.unanswered
            if failure is not None:
                self._close_raw(conn)
                raise _unanswered(failure)
            self._waiting[key] = (conn, time.monotonic())
            try:
                closed = bool(super()._is_closed(conn))
            finally:
                with self._cut_lock:
                    self._waiting.pop(key, None)
            failure = self.unanswered
            if closed and failure is not None:  # cut: no new connection to wait on either
                self._close_raw(conn)
                raise _unanswered(failure)
        if closed:
            self._forget(key)  # the pool discards it without closing it
        return closed
