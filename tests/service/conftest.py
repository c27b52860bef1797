"""The service tests run the service on the in-memory fake store: no database, no gRPC.

`clock` (a FakeClock at T0) and `policy` (the shipped policy) come from tests/conftest.py."""

from __future__ import annotations

import pytest

from server.domain.model import Policy
from server.service import Service
from server.service.clock import FakeClock
from tests.fakes import FakeStore


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def service(store: FakeStore, clock: FakeClock, policy: Policy) -> Service:
    return Service(store, clock, policy)
