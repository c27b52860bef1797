"""Fixtures: a store on SQLite and on a real PostgreSQL 15, a fake clock, a running server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from client import Client
from server.domain import policy as policy_module
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aftersales.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"test_{next(_databases)}")


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
    return policy_module.load()


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
