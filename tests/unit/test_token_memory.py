"""A verified token is remembered (its signature is checked once), but never past its expiry,
and the memory is bounded."""

from __future__ import annotations

import json
import threading
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


# --- Keys rotate without a restart ----------------------------------------------------------------


def publish(path, *keys: certs.TokenKey) -> None:
    """Replaces the JWKS whole, as the README asks: another file renamed over it."""
    staged = path.with_suffix(".new")
    staged.write_text(
        json.dumps({"keys": [k for key in keys for k in key.jwks()["keys"]]}), encoding="utf-8"
    )
    staged.replace(path)


@pytest.fixture
def rotating(tmp_path):
    old, new = certs.TokenKey(key_id="old"), certs.TokenKey(key_id="new")
    jwks = tmp_path / "jwks.json"
    publish(jwks, old)
    return jwks, old, new, TokenVerifier(TokenSettings(jwks, certs.DEV_ISSUER, certs.DEV_AUDIENCE))


def test_a_key_published_while_serving_verifies_at_once(rotating):
    jwks, old, new, verifier = rotating
    publish(jwks, old, new)

    assert verifier.person(bearer(new.mint("staff-1", "staff"))).person_id == "staff-1"
    assert verifier.person(bearer(old.mint("staff-2", "staff"))).person_id == "staff-2"


def test_a_key_taken_out_stops_verifying_within_the_check_even_remembered_tokens(
    rotating, monkeypatch
):
    jwks, old, new, verifier = rotating
    remembered = old.mint("staff-1", "staff")
    verifier.person(bearer(remembered))
    publish(jwks, new)
    later = tokens.time.monotonic() + tokens.JWKS_CHECK_SECONDS
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later)

    with pytest.raises(TokenRefused, match="does not know"):
        verifier.person(bearer(remembered))
    with pytest.raises(TokenRefused, match="does not know"):
        verifier.person(bearer(old.mint("staff-2", "staff")))
    assert verifier.person(bearer(new.mint("staff-3", "staff"))).person_id == "staff-3"


def test_a_jwks_that_cannot_be_read_keeps_the_keys_as_they_were(rotating, monkeypatch):
    jwks, old, new, verifier = rotating
    jwks.write_text('{"keys": [', encoding="utf-8")  # half written
    later = tokens.time.monotonic() + tokens.JWKS_CHECK_SECONDS
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later)

    assert verifier.person(bearer(old.mint("staff-1", "staff"))).person_id == "staff-1"
    with pytest.raises(TokenRefused, match="does not know"):
        verifier.person(bearer(new.mint("staff-2", "staff")))
    publish(jwks, new)  # then whole: read as soon as it is looked at again
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later + tokens.JWKS_CHECK_SECONDS)
    assert verifier.person(bearer(new.mint("staff-3", "staff"))).person_id == "staff-3"


def test_an_empty_jwks_takes_every_key_out(rotating, monkeypatch):
    jwks, old, new, verifier = rotating
    remembered = old.mint("staff-1", "staff")
    verifier.person(bearer(remembered))
    staged = jwks.with_suffix(".new")
    staged.write_text('{"keys": []}', encoding="utf-8")  # the only key leaked: none is trusted
    staged.replace(jwks)
    later = tokens.time.monotonic() + tokens.JWKS_CHECK_SECONDS
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later)

    with pytest.raises(TokenRefused, match="does not know"):
        verifier.person(bearer(remembered))


def test_a_token_verified_while_its_key_is_taken_out_is_not_remembered(rotating, monkeypatch):
    jwks, old, new, verifier = rotating
    leaked = old.mint("mallory", "staff")
    decode = tokens.jwt.decode

    def decode_while_the_key_is_taken_out(*args, **kwargs):
        claims = decode(*args, **kwargs)
        publish(jwks, new)
        verifier._look_at_file(tokens.time.monotonic())  # another call's look, meanwhile
        return claims

    monkeypatch.setattr(tokens.jwt, "decode", decode_while_the_key_is_taken_out)
    assert verifier.person(bearer(leaked)).person_id == "mallory"  # it was a key then
    monkeypatch.setattr(tokens.jwt, "decode", decode)

    with pytest.raises(TokenRefused, match="does not know"):
        verifier.person(bearer(leaked))


def test_looks_at_the_file_never_put_older_keys_back(rotating, monkeypatch):
    jwks, old, new, verifier = rotating
    read = tokens.read_keys
    slow_reader_has_read = threading.Event()
    fast_reader_done = threading.Event()

    def slow_then_fast(path):
        keys = read(path)
        if threading.current_thread().name == "slow":
            slow_reader_has_read.set()
            fast_reader_done.wait(2)  # the fast reader may not overtake: the wait times out
        return keys

    monkeypatch.setattr(tokens, "read_keys", slow_then_fast)
    publish(jwks, old, new)
    slow = threading.Thread(target=verifier._look_at_file, args=(0.0,), name="slow")
    slow.start()
    slow_reader_has_read.wait(2)
    publish(jwks, new)  # then "old" is taken out, and a faster look reads that
    fast = threading.Thread(target=verifier._look_at_file, args=(0.0,), name="fast")
    fast.start()
    slow.join()
    fast_reader_done.set()
    fast.join()

    assert sorted(verifier._keys) == ["new"]
