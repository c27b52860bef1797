"""The person a front end acts for, from a signed token (JWT) in the `authorization` metadata.

The platform's login service signs the tokens; this server holds its public keys as a JWKS file
and accepts a token only if its signature verifies with the key its `kid` names, it has not
expired, and its issuer and audience are this deployment's. The claims used: `sub` (the staff
member's or buyer's id, held to the rules of an id in a request) and `kind` ("staff" or
"buyer"). PyJWT does the cryptography.

Keys rotate without a restart: the file is read again when it changes (looked at every
JWKS_CHECK_SECONDS, and at once, at most once a second, when a token names a key not known), so
a new key works as soon as it is published, and a key taken out of the file (one that leaked)
stops working within JWKS_CHECK_SECONDS, tokens verified with it before included; a JWKS with no
key this server accepts refuses every token. A file that cannot be read or parsed then (written
in place, half done) leaves the keys as they were until it can: replace it whole (write another
file, then rename it over this one).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import pathlib
import threading
import time
from typing import Any

import jwt

from server.domain.access import Person, PersonKind
from server.grpc.validation import id_fault

# Asymmetric signatures only: a shared secret (HS*) would let every holder mint tokens, and
# "none" is no signature at all.
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
# Clock skew tolerated between the login service and this server.
LEEWAY_SECONDS = 30
# Verified tokens remembered until they expire, at most.
VERIFIED_TOKENS = 10_000
# How often the JWKS file is looked at for a change (seconds), and at most how often a token
# naming an unknown key makes it be looked at sooner.
JWKS_CHECK_SECONDS = 10.0
UNKNOWN_KEY_CHECK_SECONDS = 1.0

log = logging.getLogger("aftersales")


class TokenRefused(Exception):
    """The token is missing or does not verify; the message says why (no secret in it)."""


@dataclasses.dataclass(frozen=True)
class TokenSettings:
    jwks_path: pathlib.Path
    issuer: str
    audience: str


class TokenVerifier:
    def __init__(self, settings: TokenSettings, keys: dict[str, jwt.PyJWK] | None = None) -> None:
        """`keys`: the keys to start with, for a JWKS file not written yet (the demo's, written
        once its start succeeded); read from the file from when it is there."""
        self.settings = settings
        self._lock = threading.Lock()
        # Held while the file is looked at and its keys put in place: one reader at a time, so
        # that a slower one never puts back keys older than a faster one's.
        self._reading = threading.Lock()
        self._verified: collections.OrderedDict[str, tuple[Person, float]] = (
            collections.OrderedDict()
        )
        self._keys = read_keys(settings.jwks_path) if keys is None else keys
        if not self._keys:
            raise ValueError(
                f"the JWKS {settings.jwks_path} has no key with a `kid` and an accepted algorithm "
                f"({', '.join(ALGORITHMS)})"
            )
        # Counts the key sets put in place: a token verified with an older set is not remembered.
        self._generation = 0
        self._file: tuple[int, int, int, int] | None = None  # not written yet
        try:
            self._file = _file_of(settings.jwks_path)
        except FileNotFoundError as e:
            if keys is None:
                raise ValueError(f"cannot read the JWKS {settings.jwks_path}: {e}") from e
        except OSError as e:
            raise ValueError(f"cannot read the JWKS {settings.jwks_path}: {e}") from e
        now = time.monotonic()
        self._looked_at = now  # when the file was last looked at
        self._looked_for_unknown = now - UNKNOWN_KEY_CHECK_SECONDS

    def _look_at_file(self, now: float) -> None:
        """Reads the JWKS again if the file changed since it was read (its inode, size or
        modification time), and forgets the tokens verified until then: one signed with a key
        taken out must not pass on its memory. A file that cannot be read or parsed leaves the
        keys as they were; one that holds no key this server accepts takes every key out."""
        self._looked_at = now
        if self._file is None and not self.settings.jwks_path.exists():
            return  # the keys given are not written yet
        with self._reading:
            try:
                found = _file_of(self.settings.jwks_path)
                if found == self._file:
                    return
                keys = read_keys(self.settings.jwks_path)
            except (OSError, ValueError) as e:
                log.warning("the JWKS is kept as it was: %s", e)
                return
            with self._lock:
                self._keys = keys
                self._file = found
                self._generation += 1
                self._verified.clear()
        if keys:
            log.info("the JWKS was read again", extra={"keys": sorted(keys)})
        else:
            log.error("the JWKS holds no key this server accepts: every token is refused")

    def person(self, metadata: Any) -> Person:
        """The person the call's `authorization: Bearer <token>` proves. A token verified once
        is remembered until it expires (at most VERIFIED_TOKENS of them): a front end sends the
        same token with every call, and checking a signature costs more than the call."""
        token = bearer_token(metadata)
        if time.monotonic() - self._looked_at >= JWKS_CHECK_SECONDS:
            self._look_at_file(time.monotonic())
        now = time.time()
        with self._lock:
            known = self._verified.get(token)
            if known is not None:
                person, expires = known
                if now < expires:
                    self._verified.move_to_end(token)
                    return person
                del self._verified[token]
            generation = self._generation
        person, expires = self._verify(token, now)
        with self._lock:
            # Not if the keys changed meanwhile: the key it verified with may be taken out.
            if generation == self._generation:
                self._verified[token] = (person, expires)
                if len(self._verified) > VERIFIED_TOKENS:
                    self._verified.popitem(last=False)
        return person

    def _verify(self, token: str, now: float) -> tuple[Person, float]:
        """The person the token proves, and until when (its `exp`, leeway included). Expiry is
        judged here, against the same clock as the remembered tokens'."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise TokenRefused(f"malformed token: {e}") from None
        kid = header.get("kid", "")
        key = self._keys.get(kid)
        if key is None:
            moment = time.monotonic()
            if moment - self._looked_for_unknown >= UNKNOWN_KEY_CHECK_SECONDS:
                self._looked_for_unknown = moment
                self._look_at_file(moment)  # a key published since?
                key = self._keys.get(kid)
        if key is None:
            raise TokenRefused("the token is signed with a key this server does not know")
        if header.get("alg") not in ALGORITHMS:
            raise TokenRefused(f"tokens signed with {header.get('alg')!r} are not accepted")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(ALGORITHMS),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as e:
            raise TokenRefused(f"the token does not verify: {e}") from None
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenRefused("the token's `exp` is not a time")
        if exp + LEEWAY_SECONDS <= now:
            raise TokenRefused("the token has expired")
        try:
            kind = PersonKind(str(claims.get("kind")))
        except ValueError:
            raise TokenRefused("the token's `kind` is neither staff nor buyer") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRefused("the token names no subject")
        if fault := id_fault(subject):
            # A token is refused as a whole, not blamed on a request field it stands for.
            raise TokenRefused(f"the token's subject is not an id: it {fault}")
        return Person(kind, subject), float(exp) + LEEWAY_SECONDS


def read_keys(path: pathlib.Path) -> dict[str, jwt.PyJWK]:
    """The JWKS's keys of the accepted algorithms, each by its `kid`: none for a JWKS whose list
    of keys is empty or holds none this server accepts. ValueError for a file that cannot be
    read or is not a JWKS."""
    try:
        return keys_of(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the JWKS {path}: {e}") from e


def keys_of(document: Any) -> dict[str, jwt.PyJWK]:
    """read_keys, of a JWKS already parsed; ValueError for one that is not a JWKS."""
    try:
        if not isinstance(document, dict):
            raise ValueError(f"a JWKS is a JSON object, not {type(document).__name__}")
        if not isinstance(document.get("keys"), list):
            raise ValueError("a JWKS has a list of `keys`")
        entries = [entry for entry in document["keys"] if isinstance(entry, dict)]
        keys = jwt.PyJWKSet(entries).keys if entries else []
    except jwt.PyJWKSetError:
        keys = []  # no usable key: PyJWKSet skips the others
    # Only asymmetric keys of the accepted algorithms, each known by its `kid`.
    return {key.key_id: key for key in keys if key.key_id and key.algorithm_name in ALGORITHMS}


def _file_of(path: pathlib.Path) -> tuple[int, int, int, int]:
    """What tells that a file changed: its device and inode (replaced by a rename), size and
    modification time."""
    found = os.stat(path)
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def authorization(metadata: Any) -> str | None:
    """The call's `authorization` metadata, if it sent one."""
    for key, value in metadata or ():
        if key == "authorization":
            return str(value)
    return None


def bearer_token(metadata: Any) -> str:
    value = authorization(metadata)
    if value is None:
        raise TokenRefused("no token: send `authorization: Bearer <token>`")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRefused("authorization is not `Bearer <token>`")
    return token.strip()
