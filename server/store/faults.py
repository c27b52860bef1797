"""Which failures of the database a retry may cure, read from what the database says about them
(PostgreSQL's SQLSTATE, SQLite's result code), and which are bugs.

A transaction the database aborted to keep concurrent ones consistent is retried at once
(TransactionAborted); a database that is down, busy or gave up waiting is retried later
(StoreUnavailable); a broken uniqueness is a WriteConflict. Anything else (bad SQL, a value that
does not fit its column, SQLite's "parser stack overflow") happens again on every retry: it is
not translated, so that it surfaces as the bug it is.
"""

from __future__ import annotations

import sqlite3

import peewee as pw
import psycopg
from playhouse.pool import MaxConnectionsExceeded

from server.service.unit_of_work import StoreUnavailable, TransactionAborted, WriteConflict

# PostgreSQL: SQLSTATEs of transactions aborted for consistency; a retry may succeed at once.
_ABORTED = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
}
# PostgreSQL: SQLSTATEs of a server that is going away, short of resources, or gave up waiting.
_UNAVAILABLE = {
    "55P03": "lock timeout",
    "57014": "statement timeout",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections",
    # A primary demoted to a standby under a pooled connection, until the failover completes.
    "25006": "read-only transaction",
    "58030": "I/O error",
}
# ... and whole classes of them: connection exceptions, insufficient resources.
_UNAVAILABLE_CLASSES = {"08": "connection failure", "53": "insufficient resources"}

# SQLite: primary result codes of a file that is locked, unreadable or full.
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PROTOCOL,
}


def translate(error: BaseException) -> Exception | None:
    """The service layer's exception for `error`, or None when it is not one the database may
    excuse (then it propagates as it is: a bug, or not the database's at all).

    A failure of the database while it undid another (a ROLLBACK after a failed COMMIT) is
    that other failure's: SQLite rolls a transaction back by itself when its file is full or
    cannot be written, and the ROLLBACK that follows finds none ("cannot rollback - no
    transaction is active")."""
    translated = _translate(error)
    first = error.__context__
    if translated is None and _no_transaction(error) and first is not None:
        return translate(first)
    return translated


def _no_transaction(error: BaseException) -> bool:
    """SQLite's refusal of a ROLLBACK or COMMIT with no transaction open (as peewee wraps it)."""
    return isinstance(error, pw.OperationalError | sqlite3.OperationalError) and (
        "no transaction is active" in str(error)
    )


def _translate(error: BaseException) -> Exception | None:
    if isinstance(error, MaxConnectionsExceeded):
        return StoreUnavailable(f"no database connection free: {error}")
    # peewee wraps the driver's exception and keeps it as `orig`; some it lets through as they
    # are, and one raised as a statement connects is wrapped twice (SQLite connects lazily).
    cause: BaseException = error
    while isinstance(getattr(cause, "orig", None), BaseException):
        cause = cause.orig  # type: ignore[attr-defined]
    if isinstance(error, pw.IntegrityError) or isinstance(
        cause, psycopg.IntegrityError | sqlite3.IntegrityError
    ):
        return WriteConflict(str(cause))
    if isinstance(cause, psycopg.Error):
        return _postgresql(cause)
    if isinstance(cause, sqlite3.Error):
        return _sqlite(cause)
    return None


def _postgresql(error: psycopg.Error) -> Exception | None:
    state = error.sqlstate
    if state is None:
        # No SQLSTATE: libpq's own failure, the connection is gone (or was never made).
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            return StoreUnavailable(f"no database connection: {error}")
        return None
    if state in _ABORTED:
        return TransactionAborted(f"{_ABORTED[state]} ({state}): {error}")
    what = _UNAVAILABLE.get(state) or _UNAVAILABLE_CLASSES.get(state[:2])
    if what is not None:
        return StoreUnavailable(f"{what} ({state}): {error}")
    return None


def _sqlite(error: sqlite3.Error) -> Exception | None:
    code = getattr(error, "sqlite_errorcode", None)
    # Extended result codes keep the primary one in their low byte (SQLITE_BUSY_SNAPSHOT, ...).
    if code is not None and code & 0xFF in _SQLITE_UNAVAILABLE:
        return StoreUnavailable(f"{getattr(error, 'sqlite_errorname', code)}: {error}")
    return None
