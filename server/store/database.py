"""Opens the database a URL names: SQLite (one process) or PostgreSQL (replicas)."""

from __future__ import annotations

import pathlib
from urllib.parse import urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase


def open_database(url: str) -> pw.Database:
    """A database for `url`: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`,
    `sqlite:///:memory:` or `postgresql://user:pass@host:port/dbname`."""
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
        pooled: pw.Database = PooledPostgresqlDatabase(
            (parsed.path or "/postgres")[1:],
            user=parsed.username,
            password=parsed.password,
            host=parsed.hostname or "localhost",
            port=parsed.port or 5432,
            max_connections=64,
            stale_timeout=300,
            timeout=10,
        )
        return pooled
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
