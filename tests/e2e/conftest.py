"""Fixtures of the end-to-end tests: seeding upstream facts through the client."""

import pytest

from tests.e2e.seed import Seed


@pytest.fixture
def seed(client, clock):
    return Seed(client, clock)
