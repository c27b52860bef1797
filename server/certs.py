"""`python -m server.certs FOLDER`: a local CA, certificates and a token key for the secure mode.

Writes into FOLDER: `ca.pem` (trust it on both sides), `server.pem` / `server.key` (for
localhost, 127.0.0.1 and ::1), for every identity of the access table a client certificate
`<name>.pem` / `<name>.key` whose URI SAN is that identity (e.g. `order-system.pem` for
`spiffe://platform/order-system`), and a development login service's signing key
`token-key.pem` with its public half as `jwks.json` (for --jwks).

`python -m server.certs FOLDER --token staff:staff-owner` prints a token for that person signed
with FOLDER's key (issuer `aftersales-development-login`, audience `aftersales`), valid for an
hour.

For development and tests only: production certificates come from the platform's CA, and tokens
from its login service, whose keys are the only ones a production server's JWKS holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import pathlib
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server import settings
from server.grpc.methods import METHOD_NAMES

VALID_FOR = timedelta(days=30)
DEV_ISSUER = "aftersales-development-login"  # as the module's docstring says
DEV_AUDIENCE = "aftersales"
TOKEN_KEY_ID = "development-1"


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes

    def write(self, folder: pathlib.Path, name: str) -> None:
        (folder / f"{name}.pem").write_bytes(self.cert)
        key = folder / f"{name}.key"
        key.write_bytes(self.key)
        key.chmod(0o600)


class Authority:
    """A certificate authority that signs server and client certificates."""

    def __init__(self, name: str = "aftersales development CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def server(self, *hosts: str) -> Issued:
        """A server certificate for the host names and addresses given."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(hosts[0], names, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, identity: str, common_name: str | None = None) -> Issued:
        """A client certificate proving `identity` (a URI SAN). With identity "" it proves only
        its common name; with common_name "" too, nothing."""
        names: list[x509.GeneralName] = []
        if identity:
            names.append(x509.UniformResourceIdentifier(identity))
        if common_name is None:
            common_name = identity.rsplit("/", 1)[-1] or "client"
        return self._issue(common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
                )
            )
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


class TokenKey:
    """A login service's signing key (ES256): mints tokens, publishes its public half."""

    def __init__(
        self, key: ec.EllipticCurvePrivateKey | None = None, key_id: str = TOKEN_KEY_ID
    ) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.key_id = key_id

    @classmethod
    def read(cls, path: pathlib.Path, key_id: str = TOKEN_KEY_ID) -> TokenKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key")
        return cls(key, key_id)

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.key_id, "alg": "ES256", "use": "sig"}]}

    def mint(
        self,
        subject: str,
        kind: str,
        *,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        lifetime: timedelta = timedelta(hours=1),
        now: datetime | None = None,
    ) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": subject,
            "kind": kind,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.key_id})


def write_all(folder: pathlib.Path, identities: list[str]) -> list[str]:
    """Writes the CA, the server's certificate and one client certificate per identity; returns
    the file names of the client certificates."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = Authority()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    ca.server("localhost", "127.0.0.1", "::1").write(folder, "server")
    written = []
    for identity in identities:
        name = identity.rstrip("/").rsplit("/", 1)[-1]
        ca.client(identity).write(folder, name)
        written.append(name)
    token_key = TokenKey()
    (folder / "token-key.pem").write_bytes(token_key.pem())
    (folder / "token-key.pem").chmod(0o600)
    (folder / "jwks.json").write_text(json.dumps(token_key.jwks(), indent=2), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.certs", description=__doc__)
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--access", default=None, help="access table whose identities to issue")
    parser.add_argument(
        "--token",
        metavar="KIND:ID",
        help="print a token for the staff member or buyer (e.g. staff:staff-owner), signed with "
        "FOLDER/token-key.pem, instead of writing anything",
    )
    args = parser.parse_args(argv)
    if args.token:
        kind, _, person = args.token.partition(":")
        if kind not in ("staff", "buyer") or not person:
            parser.error("--token takes staff:ID or buyer:ID")
        print(TokenKey.read(args.folder / "token-key.pem").mint(person, kind))
        return 0
    table = settings.load_access(METHOD_NAMES, args.access)
    names = write_all(args.folder, sorted(table.grants))
    print(
        f"wrote ca.pem, server.pem/.key, {len(names)} client certificates and a token key "
        f"(token-key.pem, jwks.json) to {args.folder}"
    )
    for name in names:
        print(f"  {name}.pem / {name}.key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
