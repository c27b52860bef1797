"""A probe of the database for health checking: its own connection, apart from the pool that
calls use, so that it answers (or fails) whatever the calls are doing.

`DatabaseProbe(url).check()` returns when the database answered a trivial query and raises
`ProbeFailed` with a one-line reason otherwise. A probe may block while the database is hung (a
paused server accepts connections and queries but never answers): whoever calls it bounds the
wait (server/grpc/background.py runs it on a thread of its own).
"""

from __future__ import annotations

import math
import pathlib
import sqlite3
from urllib.parse import urlparse

import psycopg
from psycopg.conninfo import conninfo_to_dict

from server.store.database import sqlite_path


class ProbeFailed(Exception):
    """The database did not answer the probe; the message says why, on one line."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (libpq's span several)."""
    return " ".join(str(error).split()) or type(error).__name__


class DatabaseProbe:
    """A trivial query, on a connection of the probe's own.

    On PostgreSQL the connection (opened again after a failure) gives up connecting after
    `timeout` (libpq counts whole seconds, at least 2), the server ends the query after `timeout`
    (statement_timeout), and the kernel drops the connection when data sent goes unacknowledged
    for `timeout` (tcp_user_timeout), so a database host that vanished ends the probe too. On
    SQLite the query reads the file's schema on a connection opened for the probe (never
    creating the file), waiting at most `timeout` for a lock."""

    def __init__(self, url: str, *, password: str | None = None, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        scheme = urlparse(url).scheme
        self.is_postgres = scheme in ("postgres", "postgresql")
        self._password = password
        # The SQLite file as a URI opened read-write: the probe never creates a missing file.
        self._sqlite_uri = ":memory:"
        if not self.is_postgres:
            path = sqlite_path(url)
            if path != ":memory:":
                self._sqlite_uri = pathlib.Path(path).absolute().as_uri() + "?mode=rw"
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def check(self) -> None:
        try:
            if self.is_postgres:
                self._check_postgres()
            else:
                self._check_sqlite()
        except (psycopg.Error, sqlite3.Error, OSError) as e:
            self.close()
            raise ProbeFailed(one_line(e)) from e

    def _check_postgres(self) -> None:
        connection = self._connection
        if connection is None:
            password = None
            if "password" not in conninfo_to_dict(self.url):
                password = self._password  # libpq's PGPASSWORD and PGPASSFILE work as well
            connection = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(2, math.ceil(self.timeout)),
                tcp_user_timeout=max(1, int(self.timeout * 1000)),
                password=password,
            )
            connection.execute(f"SET statement_timeout = {max(1, int(self.timeout * 1000))}")
            self._connection = connection
        connection.execute("SELECT 1").fetchone()

    def _check_sqlite(self) -> None:
        # A connection per probe: opening costs little, and finds a file that went away.
        connection = sqlite3.connect(self._sqlite_uri, timeout=self.timeout, uri=True)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except psycopg.Error:
                pass
