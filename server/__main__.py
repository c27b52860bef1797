"""`python -m server`: runs the late after-sales service until SIGTERM or Ctrl-C.
`python -m server migrate`: brings the database's schema up to date, prints its version, exits.

Exit codes: 0 after a clean stop or migration; 2 when the configuration is wrong (a flag, the
policy, the access table, a file a flag names); 1 when the environment fails the start (the
address is in use, the database does not answer, a folder cannot be written). Each failure is
one line on stderr, without a traceback (it is logged at DEBUG).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import pathlib
import select
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn
from urllib.parse import urlparse

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import start_http_server
from pythonjsonlogger.json import JsonFormatter

from server import certs, demo
from server.domain import access, policy
from server.domain.model import Policy
from server.grpc.app import METHOD_NAMES, App
from server.grpc.tokens import TokenSettings, TokenVerifier
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, describe, open_database
from server.store.health import DatabaseProbe, one_line

DEFAULT_DATABASE = "sqlite:///var/aftersales.db"
EXIT_ENVIRONMENT = 1
EXIT_CONFIGURATION = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The most RPC worker threads one process may have; more only adds contention for the GIL.
MAX_WORKERS = 256

log = logging.getLogger("aftersales")


class StartupFailed(Exception):
    """The server cannot start; the message is one line, the exit code says whose fault it is."""

    def __init__(self, message: str, exit_code: int = EXIT_ENVIRONMENT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def misconfigured(message: str) -> StartupFailed:
    return StartupFailed(message, EXIT_CONFIGURATION)


# --- Flags ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad flag: one line and exit code 2 (argparse's own would print the whole usage)."""
        self.exit(EXIT_CONFIGURATION, f"{self.prog}: error: {message} (see --help)\n")


def _number(
    kind: type[int] | type[float], low: float, high: float, unit: str = ""
) -> Callable[[str], float]:
    """An argparse type: a number of `kind` from `low` to `high`."""
    what = "a whole number" if kind is int else "a number"
    span = f"from {low:g} to {high:g}{unit}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, not {text!r}") from None
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be {span}, not {text}")
        return value

    return parse


def listen_address(text: str, *, host_may_be_empty: bool = False) -> str:
    """An argparse type: host:port, the host a name, an IPv4 address or [an IPv6 address]."""
    host, colon, port = text.rpartition(":")
    example = "e.g. 127.0.0.1:50051 or [::1]:50051"
    if not colon or not (host or host_may_be_empty):
        raise argparse.ArgumentTypeError(f"expected host:port ({example}), not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{host} is not an IPv6 address") from None
    elif ":" in host or any(c in host for c in "[]/ ") or not host.isprintable():
        raise argparse.ArgumentTypeError(f"{host!r} is not a host ({example})")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"the port is a number from 0 to 65535, not {port!r}")
    return text


def metrics_address(text: str) -> str:
    """An argparse type: empty (off), or host:port where an empty host is loopback."""
    return listen_address(text, host_may_be_empty=True) if text else ""


def database_url(text: str) -> str:
    """An argparse type: a URL of a database this server can use."""
    scheme = urlparse(text).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise argparse.ArgumentTypeError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///path or "
            "postgresql://user@host:port/db"
        )
    try:
        describe(text)  # parses a PostgreSQL URL as libpq does
    except Exception as e:
        raise argparse.ArgumentTypeError(f"malformed database URL: {one_line(e)}") from None
    return text


def log_level(text: str) -> str:
    """An argparse type: a level of the logging module, in any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return text.upper()


def _database_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument(
        "--database",
        type=database_url,
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
        "--log-level",
        type=log_level,
        metavar="LEVEL",
        default=env("AFTERSALES_LOG_LEVEL", "INFO"),
        help=f"{', '.join(LOG_LEVELS)} (env AFTERSALES_LOG_LEVEL)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = _Parser(
        prog="aftersales-server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="`aftersales-server migrate --help` shows the options of the migration step.",
    )
    p.add_argument(
        "--address",
        type=listen_address,
        default=env("AFTERSALES_ADDRESS", "127.0.0.1:50051"),
        help="host:port to listen on (env AFTERSALES_ADDRESS)",
    )
    _database_flags(p)
    p.add_argument(
        "--no-migrate",
        action="store_true",
        default=env("AFTERSALES_NO_MIGRATE", "") == "1",
        help="do not migrate the schema at start: refuse to start unless `migrate` has brought "
        "it to this server's version (env AFTERSALES_NO_MIGRATE=1)",
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
        type=_number(int, 1, MAX_WORKERS),
        default=env("AFTERSALES_WORKERS", "8"),
        help=f"RPC worker threads, 1 to {MAX_WORKERS} (env AFTERSALES_WORKERS)",
    )
    p.add_argument(
        "--sweep-interval",
        type=_number(float, 0.1, 86_400, " seconds"),
        default="30",
        help="seconds between sweeps that store expired entries as EXPIRED (0.1 to 86400)",
    )
    p.add_argument(
        "--health-interval",
        type=_number(float, 0.1, 3_600, " seconds"),
        default=env("AFTERSALES_HEALTH_INTERVAL", "2"),
        help="seconds between probes of the database; health is NOT_SERVING while a probe "
        "fails or takes longer than this (0.1 to 3600; env AFTERSALES_HEALTH_INTERVAL)",
    )
    p.add_argument(
        "--drain-seconds",
        type=_number(float, 0, 3_600, " seconds"),
        default=env("AFTERSALES_DRAIN_SECONDS", "5"),
        help="on SIGTERM or Ctrl-C, seconds to keep serving while health says NOT_SERVING, for "
        "load balancers to notice; a second signal ends the drain (env AFTERSALES_DRAIN_SECONDS)",
    )
    p.add_argument(
        "--grace-seconds",
        type=_number(float, 0, 3_600, " seconds"),
        default=env("AFTERSALES_GRACE_SECONDS", "10"),
        help="after the drain, seconds calls in flight have to finish; new calls are refused "
        "(env AFTERSALES_GRACE_SECONDS)",
    )
    p.add_argument(
        "--metrics-address",
        type=metrics_address,
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
    return p.parse_args(argv)


def parse_migrate_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(
        prog="aftersales-server migrate",
        description="Brings the database's schema to this server's version (safe while other "
        "replicas start), prints the version and exits: for deployments that migrate in a step "
        "of their own and start the servers with --no-migrate.",
    )
    _database_flags(p)
    return p.parse_args(argv)


# --- Start-up: each step fails with one line ----------------------------------------------------


def _read(path: str, flag: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise misconfigured(f"cannot read {flag} {path}: {e.strerror or e}") from None


def server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """The TLS credentials the flags name, each file read and checked first: gRPC would only
    say that it cannot listen."""
    if not (args.tls_cert or args.tls_key):
        if args.tls_client_ca:
            raise misconfigured("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        raise misconfigured("--tls-cert and --tls-key go together")
    chain_pem = _read(args.tls_cert, "--tls-cert")
    key_pem = _read(args.tls_key, "--tls-key")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise misconfigured(f"--tls-cert {args.tls_cert} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise misconfigured(
            f"--tls-key {args.tls_key} holds no unencrypted PEM private key ({one_line(e)})"
        ) from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise misconfigured(
            f"--tls-key {args.tls_key} is not the key of the certificate in --tls-cert "
            f"{args.tls_cert}"
        )
    client_ca = None
    if args.tls_client_ca:
        client_ca = _read(args.tls_client_ca, "--tls-client-ca")
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise misconfigured(
                f"--tls-client-ca {args.tls_client_ca} holds no PEM certificate"
            ) from None
    return grpc.ssl_server_credentials(
        [(key_pem, chain_pem)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


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


def who_is_checked(
    args: argparse.Namespace,
) -> tuple[access.AccessTable | None, TokenVerifier | None]:
    """The access table callers are checked against and the verifier of people's tokens."""
    tokens = None
    if args.jwks:
        if not args.token_issuer:
            raise misconfigured("--jwks needs --token-issuer")
        try:
            tokens = TokenVerifier(
                TokenSettings(pathlib.Path(args.jwks), args.token_issuer, args.token_audience)
            )
        except ValueError as e:
            raise misconfigured(f"bad token keys: {one_line(e)}") from None
    elif args.demo and not args.tls_client_ca:
        # The demo's people still prove who they are, with tokens of the demo's own key: mint
        # one with `python -m server.certs var/demo --token staff:staff-owner`. No other server
        # trusts that key.
        try:
            tokens = TokenVerifier(demo_token_settings(pathlib.Path(args.demo_keys)))
        except (OSError, ValueError) as e:
            raise StartupFailed(f"cannot make the demo's keys in {args.demo_keys}: {e}") from None
    table = None
    if args.tls_client_ca:
        try:
            table = access.load(METHOD_NAMES, args.access)
        except access.AccessTableError as e:
            raise misconfigured(f"bad access table: {one_line(e)}") from None
        if table.acts_for and tokens is None:
            raise misconfigured(
                f"the access table has callers acting for people "
                f"({', '.join(sorted(table.acts_for))}): pass --jwks and --token-issuer to "
                "verify their tokens"
            )
    elif not is_loopback(args.address) and not args.insecure:
        raise misconfigured(
            f"refusing to serve unauthenticated callers on {args.address}: pass "
            "--tls-client-ca (and --tls-cert, --tls-key), or --insecure to do it anyway"
        )
    return table, tokens


def is_loopback(address: str) -> bool:
    """Whether `host:port` listens on this machine only."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def database_password(args: argparse.Namespace) -> str | None:
    if not args.database_password_file:
        return None
    raw = _read(args.database_password_file, "--database-password-file")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise misconfigured(
            f"--database-password-file {args.database_password_file} is not UTF-8 text"
        ) from None


def open_store(args: argparse.Namespace, password: str | None) -> SqlStore:
    """The store of the URL, not yet connected (an SQLite file's folder is made)."""
    try:
        return SqlStore(open_database(args.database, password=password))
    except OSError as e:
        raise StartupFailed(f"cannot make the folder of {describe(args.database)}: {e}") from None
    except Exception as e:  # psycopg's parser refuses a malformed URL with its own class
        raise misconfigured(f"bad database URL {describe(args.database)}: {one_line(e)}") from None


def prepare_schema(store: SqlStore, url: str, *, migrate: bool) -> int:
    """The schema's version, migrated first unless `migrate` is false."""
    try:
        return store.migrate() if migrate else store.use_migrated()
    except Exception as e:  # whatever the database or the driver says, it is said in one line
        log.debug("the database failed the start", exc_info=True)
        raise StartupFailed(f"cannot use the database {describe(url)}: {one_line(e)}") from None


def prepare(args: argparse.Namespace, the_policy: Policy) -> tuple[App, dict[str, object]]:
    """Everything a start does before serving, in an order that fails before it writes:
    configuration first, then the address is bound, then the database is migrated and the demo
    loaded. The server bound, and what its first log line says."""
    credentials = server_credentials(args)
    table, tokens = who_is_checked(args)
    password = database_password(args)
    store = open_store(args, password)
    service = Service(store, SystemClock(), the_policy)
    probe = DatabaseProbe(args.database, password=password, timeout=args.health_interval)
    try:
        app = App(
            service,
            args.address,
            workers=args.workers,
            credentials=credentials,
            access=table,
            tokens=tokens,
            sweep_interval=args.sweep_interval,
            health_probe=probe.check,
            health_interval=args.health_interval,
        )
    except OSError as e:
        raise StartupFailed(str(e)) from None
    if args.metrics_address:
        host, _, port = args.metrics_address.rpartition(":")
        try:
            start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
        except OSError as e:
            raise StartupFailed(
                f"cannot serve metrics on {args.metrics_address}: {e.strerror or e}"
            ) from None
    version = prepare_schema(store, args.database, migrate=not args.no_migrate)
    if args.demo:
        try:
            loaded = demo.load(service)
        except Exception as e:
            raise StartupFailed(f"cannot load the demo data: {one_line(e)}") from None
        if loaded:
            log.info("demo data loaded")
    if table is None:
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
    return app, {
        "address": args.address,
        "port": app.port,
        "database": describe(args.database),
        "schema_version": version,
        "policy_version": the_policy.version,
        "tls": credentials is not None,
        "callers_authenticated": table is not None,
        "people_authenticated": tokens is not None,
        "access_version": table.version if table else None,
        "health_interval_seconds": args.health_interval,
    }


# --- Running and stopping ---------------------------------------------------------------------


class Signals:
    """SIGTERM and SIGINT, written to a pipe by the handler (no lock is taken in a signal
    handler), read by the main thread with a timeout."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        try:
            os.write(self._write, bytes([signum]))
        except BlockingIOError:
            pass  # a full pipe holds signals enough

    def next(self, timeout: float | None = None) -> signal.Signals | None:
        """The next signal; None if `timeout` seconds pass first."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        return signal.Signals(os.read(self._read, 1)[0]) if ready else None


def serve(app: App, signals: Signals, drain_seconds: float, grace_seconds: float) -> None:
    """Serves until a signal; then health is NOT_SERVING while calls are still served for
    `drain_seconds` (a second signal ends that early), then new calls are refused and calls in
    flight get `grace_seconds` to finish."""
    first = signals.next()
    app.not_serving()
    log.info(
        "draining: health is NOT_SERVING, calls are still served; a second signal stops sooner",
        extra={"signal": first.name if first else None, "drain_seconds": drain_seconds},
    )
    second = signals.next(drain_seconds) if drain_seconds > 0 else None
    if second is not None:
        log.info("the drain ends early", extra={"signal": second.name})
    log.info(
        "stopping: new calls are refused, calls in flight may finish",
        extra={"grace_seconds": grace_seconds},
    )
    if not app.stop(grace_seconds):
        log.warning("calls still waiting on the database after the grace are abandoned")
        log.info("stopped")
        logging.shutdown()
        os._exit(0)  # without joining the threads those calls block


def migrate(argv: list[str]) -> int:
    args = parse_migrate_args(argv)
    _configure_logging(args.log_level)
    try:
        store = open_store(args, database_password(args))
        version = prepare_schema(store, args.database, migrate=True)
    except StartupFailed as e:
        log.error(str(e))
        return e.exit_code
    store.close()
    log.info("migrated", extra={"database": describe(args.database), "schema_version": version})
    print(f"schema version {version}")
    return 0


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:
        return migrate(argv[1:])
    args = parse_args(argv)
    _configure_logging(args.log_level)
    try:
        the_policy = policy.load(args.policy)
    except policy.PolicyError as e:
        log.error("bad policy: %s", e)
        return EXIT_CONFIGURATION
    try:
        app, facts = prepare(args, the_policy)
    except StartupFailed as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted while starting")
        return EXIT_ENVIRONMENT
    except Exception as e:  # a bug: still one line, the traceback at DEBUG
        log.debug("the start failed", exc_info=True)
        log.error("cannot start: %s: %s", type(e).__name__, one_line(e))
        return EXIT_ENVIRONMENT
    signals = Signals()  # from here SIGTERM and Ctrl-C drain and stop
    app.start()
    log.info("serving", extra=facts)
    serve(app, signals, args.drain_seconds, args.grace_seconds)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
