"""Opens the database a URL names: SQLite (one process) or PostgreSQL (replicas)."""

from __future__ import annotations

import pathlib
from urllib.parse import urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase
from psycopg.conninfo import conninfo_to_dict

# Connections the pool keeps at most, how long an idle one lives, and how long a call waits for
# one when all are taken (seconds).
POOL_SIZE = 64
POOL_STALE_SECONDS = 300
POOL_WAIT_SECONDS = 10


def open_database(url: str, *, password: str | None = None) -> pw.Database:
    """A database for `url`: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`,
    `sqlite:///:memory:`, or `postgresql://user@host:port/dbname?param=value&...`.

    A PostgreSQL URL is read by libpq's own rules (psycopg's conninfo parser), so every libpq
    parameter it names is kept: sslmode, sslrootcert, application_name, connect_timeout, ...
    The password may stay out of the URL: `password` (e.g. read from a file), or libpq's own
    PGPASSWORD / PGPASSFILE."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if path and path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        return pw.SqliteDatabase(
            path or ":memory:",
            # Every write transaction takes the write lock up front: no deadlock on upgrade.
            lock_type="IMMEDIATE",
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 10_000,
            },
            check_same_thread=False,
        )
    if parsed.scheme in ("postgres", "postgresql"):
        params = conninfo_to_dict(url)
        dbname = params.pop("dbname", None) or "postgres"
        if password is not None and "password" not in params:
            params["password"] = password
        pooled: pw.Database = PooledPostgresqlDatabase(
            dbname,
            max_connections=POOL_SIZE,
            stale_timeout=POOL_STALE_SECONDS,
            timeout=POOL_WAIT_SECONDS,
            **params,
        )
        return pooled
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def describe(url: str) -> str:
    """The URL without its credentials or parameters, for logs."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        params = conninfo_to_dict(url)
        where = f"{params.get('host', '')}:{params.get('port', '')}".rstrip(":")
        return f"{parsed.scheme}://{where}/{params.get('dbname', '')}"
    return url
