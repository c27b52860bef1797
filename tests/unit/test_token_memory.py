"""A verified token is remembered (its signature is checked once), but never past its expiry,
and the memory is bounded."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from server import certs
from server.domain.access import Person, PersonKind
from server.grpc import tokens
from server.grpc.tokens import TokenRefused, TokenSettings, TokenVerifier


@pytest.fixture
def key():
    return certs.TokenKey()


@pytest.fixture
def verifier(key, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(key.jwks()), encoding="utf-8")
    return TokenVerifier(TokenSettings(jwks, certs.DEV_ISSUER, certs.DEV_AUDIENCE))


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_token_is_verified_once_and_then_remembered(verifier, key, monkeypatch):
    token = key.mint("staff-1", "staff")
    assert verifier.person(bearer(token)) == Person(PersonKind.STAFF, "staff-1")

    def no_second_check(*args, **kwargs):
        raise AssertionError("verified again")

    monkeypatch.setattr(tokens.jwt, "decode", no_second_check)
    assert verifier.person(bearer(token)) == Person(PersonKind.STAFF, "staff-1")


def test_a_remembered_token_is_refused_once_it_expires(verifier, key, monkeypatch):
    token = key.mint("staff-1", "staff", lifetime=timedelta(minutes=5))
    verifier.person(bearer(token))
    now = tokens.time.time()

    monkeypatch.setattr(tokens.time, "time", lambda: now + 5 * 60 + tokens.LEEWAY_SECONDS + 1)
    with pytest.raises(TokenRefused, match="expired"):
        verifier.person(bearer(token))


def test_the_memory_keeps_at_most_its_bound(verifier, key, monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_TOKENS", 3)
    minted = [key.mint(f"staff-{i}", "staff") for i in range(5)]
    for token in minted:
        verifier.person(bearer(token))

    assert len(verifier._verified) == 3
    assert list(verifier._verified) == minted[2:]
