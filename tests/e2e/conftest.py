"""Fixtures of the end-to-end tests: seeding upstream facts through the client, and a server
that authenticates the people calls act for."""

import json

import pytest

from server.certs import DEV_AUDIENCE, DEV_ISSUER, TokenKey
from server.grpc.app import App
from server.grpc.tokens import TokenSettings, TokenVerifier
from tests.e2e.seed import Seed


@pytest.fixture
def login(tmp_path):
    """The login service: its key signs the people's tokens, the server trusts its JWKS."""
    key = TokenKey()
    (tmp_path / "jwks.json").write_text(json.dumps(key.jwks()), encoding="utf-8")
    return key


@pytest.fixture
def people_server(service, login, tmp_path):
    """A server in this process that authenticates the people calls act for (no client
    certificates)."""
    tokens = TokenVerifier(TokenSettings(tmp_path / "jwks.json", DEV_ISSUER, DEV_AUDIENCE))
    app = App(service, "127.0.0.1:0", workers=4, tokens=tokens, sweep_interval=3600).start()
    yield app
    app.stop(grace=1)


@pytest.fixture
def seed(client, clock):
    return Seed(client, clock)
