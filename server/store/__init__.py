"""Persistence on SQLite or PostgreSQL through peewee; the only package that imports peewee.

The store reads and writes what the service asks, in the units of work the service opens. It
decides nothing: the rules are in server/domain/rules.py.

    store = SqlStore(open_database("sqlite:///var/aftersales.db"))
    store.migrate()
"""

from server.store.database import describe, open_database
from server.store.migrations import SCHEMA_VERSION
from server.store.unit_of_work import SqlStore, SqlUnitOfWork

__all__ = ["SCHEMA_VERSION", "SqlStore", "SqlUnitOfWork", "describe", "open_database"]
