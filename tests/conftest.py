"""Fixtures: a store on SQLite and on a real PostgreSQL 15, a fake clock, a running server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from client import Client
from server import settings
from server.domain.model import Policy
from server.grpc.app import App
from server.service import Service
from server.service.clock import FakeClock
from server.store import SqlStore, open_database
from tests.pg import PostgresServer

# A fixed moment for the fake clock: what tests compute their dates from.
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres_server):
    """The name of a PostgreSQL database at the current schema, for tests to start from a copy
    of: migrating costs a few tenths of a second there, copying a tenth of that."""
    name = "migrated_template"
    store = SqlStore(open_database(postgres_server.create_database(name)))
    try:
        store.migrate()
    finally:
        store.close()
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh database of each kind: empty, or at the current schema on PostgreSQL when the
    test uses `store` (which migrates it). A PostgreSQL one is dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aftersales.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    template = (
        request.getfixturevalue("migrated_template") if "store" in request.fixturenames else None
    )
    name = f"test_{next(_databases)}"
    yield server.create_database(name, template)
    server.drop_database(name)


@pytest.fixture
def store(database_url):
    store = SqlStore(open_database(database_url))
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def policy() -> Policy:
    return settings.load_policy()


@pytest.fixture
def service(store, clock, policy):
    return Service(store, clock, policy)


@pytest.fixture
def server(service):
    """A real server on a free loopback port, sharing the test's service (and fake clock)."""
    app = App(service, "127.0.0.1:0", workers=4, sweep_interval=3600).start()
    yield app
    app.stop(grace=1)


@pytest.fixture
def client(server):
    with Client(f"127.0.0.1:{server.port}") as client:
        yield client
