"""`python -m server`: runs the late after-sales service until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import pathlib
import signal
import sys
from types import FrameType

import grpc
from prometheus_client import start_http_server
from pythonjsonlogger.json import JsonFormatter

from server import certs, demo
from server.domain import access, policy
from server.grpc.app import METHOD_NAMES, App
from server.grpc.tokens import TokenSettings, TokenVerifier
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, describe, open_database

DEFAULT_DATABASE = "sqlite:///var/aftersales.db"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="aftersales-server", description=__doc__)
    p.add_argument(
        "--address",
        default=env("AFTERSALES_ADDRESS", "127.0.0.1:50051"),
        help="host:port to listen on (env AFTERSALES_ADDRESS)",
    )
    p.add_argument(
        "--database",
        default=env("DATABASE_URL", DEFAULT_DATABASE),
        help="sqlite:///path or postgresql://user@host:port/db?libpq-parameters (env DATABASE_URL)",
    )
    p.add_argument(
        "--database-password-file",
        default=env("DATABASE_PASSWORD_FILE", ""),
        help="a file holding the PostgreSQL password, kept out of the URL "
        "(env DATABASE_PASSWORD_FILE; libpq's PGPASSWORD and PGPASSFILE work too)",
    )
    p.add_argument(
        "--policy",
        default=None,
        help=f"policy TOML file (env {policy.ENV_VAR}; default: the shipped policy)",
    )
    p.add_argument(
        "--demo", action="store_true", help="load the demo data set if the database has none"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env("AFTERSALES_WORKERS", "8")),
        help="RPC worker threads",
    )
    p.add_argument(
        "--sweep-interval",
        type=float,
        default=30.0,
        help="seconds between sweeps that store expired entries as EXPIRED",
    )
    p.add_argument(
        "--metrics-address",
        default=env("AFTERSALES_METRICS_ADDRESS", ""),
        help="host:port for Prometheus metrics over HTTP; off when empty",
    )
    p.add_argument(
        "--tls-cert",
        default=env("AFTERSALES_TLS_CERT", ""),
        help="PEM certificate chain; with --tls-key, serve TLS",
    )
    p.add_argument("--tls-key", default=env("AFTERSALES_TLS_KEY", ""), help="PEM private key")
    p.add_argument(
        "--tls-client-ca",
        default=env("AFTERSALES_TLS_CLIENT_CA", ""),
        help="PEM CA certificate(s): every caller must present a certificate from it, and the "
        "identity it proves must be granted the method by the access table "
        "(env AFTERSALES_TLS_CLIENT_CA; needs --tls-cert and --tls-key)",
    )
    p.add_argument(
        "--access",
        default=None,
        help=f"access table TOML (env {access.ENV_VAR}; default: the shipped server/access.toml)",
    )
    p.add_argument(
        "--jwks",
        default=env("AFTERSALES_JWKS", ""),
        help="JWKS file of the login service's public keys: verifies the tokens of the people "
        "callers act for (env AFTERSALES_JWKS)",
    )
    p.add_argument(
        "--token-issuer",
        default=env("AFTERSALES_TOKEN_ISSUER", ""),
        help="the `iss` tokens must have (env AFTERSALES_TOKEN_ISSUER)",
    )
    p.add_argument(
        "--token-audience",
        default=env("AFTERSALES_TOKEN_AUDIENCE", "aftersales"),
        help="the `aud` tokens must have (env AFTERSALES_TOKEN_AUDIENCE)",
    )
    p.add_argument(
        "--demo-keys",
        default=env("AFTERSALES_DEMO_KEYS", "var/demo"),
        help="with --demo and no --tls-client-ca: where the demo's login key lives, made on "
        "first use; mint a token with `python -m server.certs var/demo --token staff:ID`",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=env("AFTERSALES_INSECURE", "") == "1",
        help="serve callers without authenticating them on a non-loopback address "
        "(env AFTERSALES_INSECURE=1); on loopback this is the default without --tls-client-ca",
    )
    p.add_argument("--log-level", default=env("AFTERSALES_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def demo_token_settings(folder: pathlib.Path) -> TokenSettings:
    """The demo's login key in `folder`, made on first use; its public half is what the server
    trusts."""
    key_file = folder / "token-key.pem"
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = certs.TokenKey()
        key_file.write_bytes(key.pem())
        key_file.chmod(0o600)
    key = certs.TokenKey.read(key_file)
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps(key.jwks()), encoding="utf-8")
    return TokenSettings(jwks, certs.DEV_ISSUER, certs.DEV_AUDIENCE)


def is_loopback(address: str) -> bool:
    """Whether `host:port` listens on this machine only."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)
    log = logging.getLogger("aftersales")

    try:
        the_policy = policy.load(args.policy)
    except policy.PolicyError as e:
        log.error("bad policy: %s", e)
        return 2
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            log.error("--tls-cert and --tls-key go together")
            return 2
        client_ca = None
        if args.tls_client_ca:
            client_ca = pathlib.Path(args.tls_client_ca).read_bytes()
        credentials = grpc.ssl_server_credentials(
            [(pathlib.Path(args.tls_key).read_bytes(), pathlib.Path(args.tls_cert).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
    elif args.tls_client_ca:
        log.error("--tls-client-ca needs --tls-cert and --tls-key")
        return 2
    table = None
    tokens = None
    if args.jwks:
        if not args.token_issuer:
            log.error("--jwks needs --token-issuer")
            return 2
        try:
            tokens = TokenVerifier(
                TokenSettings(pathlib.Path(args.jwks), args.token_issuer, args.token_audience)
            )
        except ValueError as e:
            log.error("bad token keys: %s", e)
            return 2
    elif args.demo and not args.tls_client_ca:
        # The demo's people still prove who they are, with tokens of the demo's own key: mint
        # one with `python -m server.certs var/demo --token staff:staff-owner`. No other server
        # trusts that key.
        tokens = TokenVerifier(demo_token_settings(pathlib.Path(args.demo_keys)))
    if args.tls_client_ca:
        try:
            table = access.load(METHOD_NAMES, args.access)
        except access.AccessTableError as e:
            log.error("bad access table: %s", e)
            return 2
        if table.acts_for and tokens is None:
            log.error(
                "the access table has callers acting for people (%s): pass --jwks and "
                "--token-issuer to verify their tokens",
                ", ".join(sorted(table.acts_for)),
            )
            return 2
    elif not is_loopback(args.address) and not args.insecure:
        log.error(
            "refusing to serve unauthenticated callers on %s: pass --tls-client-ca (and "
            "--tls-cert, --tls-key), or --insecure to do it anyway",
            args.address,
        )
        return 2
    else:
        people = (
            "the people they act for prove who they are with tokens"
            if tokens is not None
            else "requests name the people they act for, unverified"
        )
        log.warning(
            f"INSECURE: callers are not authenticated and may call every method; {people}; "
            "serve with --tls-client-ca in production",
            extra={"address": args.address},
        )

    password = None
    if args.database_password_file:
        password = pathlib.Path(args.database_password_file).read_text(encoding="utf-8").strip()
    store = SqlStore(open_database(args.database, password=password))
    version = store.migrate()
    service = Service(store, SystemClock(), the_policy)
    if args.demo and demo.load(service):
        log.info("demo data loaded")
    if args.metrics_address:
        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1")

    app = App(
        service,
        args.address,
        workers=args.workers,
        credentials=credentials,
        access=table,
        tokens=tokens,
        sweep_interval=args.sweep_interval,
    ).start()
    log.info(
        "serving",
        extra={
            "address": args.address,
            "port": app.port,
            "database": describe(args.database),
            "schema_version": version,
            "policy_version": the_policy.version,
            "tls": credentials is not None,
            "callers_authenticated": table is not None,
            "people_authenticated": tokens is not None,
            "access_version": table.version if table else None,
        },
    )

    def shut_down(signum: int, frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        app.stop()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    app.wait()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
