"""`python -m server`: runs the late after-sales service until SIGTERM or Ctrl-C.
`python -m server migrate`: brings the database's schema up to date, prints its version, exits.

Exit codes: 0 after a clean stop or migration; 2 when the configuration is wrong (a flag, the
policy, the access table, a file a flag names); 1 when the environment fails the start (the
address is in use, the database does not answer, a folder cannot be written). Each failure is
one line on stderr, without a traceback (it is logged at DEBUG).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import ipaddress
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlparse

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server import certs, demo, logs, settings, tracing
from server.domain import access, policy
from server.domain.model import Policy
from server.grpc import threads
from server.grpc.methods import METHOD_NAMES
from server.grpc.tokens import TokenSettings, TokenVerifier, keys_of
from server.processes import Signals, Workers, settle_heap
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, describe, open_database
from server.store.database import check_postgres_url, in_memory, sqlite_path
from server.store.health import DatabaseProbe, one_line

# prometheus_client, and server.grpc.app which makes its metrics, are imported where they are
# used: with several processes, PROMETHEUS_MULTIPROC_DIR must be set before the first import.
if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from server.grpc.app import App

DEFAULT_DATABASE = "sqlite:///var/aftersales.db"
EXIT_ENVIRONMENT = 1
EXIT_CONFIGURATION = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_PROCESSES = 256

log = logging.getLogger("aftersales")


class StartupFailed(Exception):
    """The server cannot start; the message is one line, the exit code says whose fault it is."""

    def __init__(self, message: str, exit_code: int = EXIT_ENVIRONMENT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM or Ctrl-C) before the server serves, or while it migrates: the
    start or the migration ends there, in one line (a migration's transaction rolls back)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise Interrupted(signum)


def _interruptible() -> None:
    """Until the server serves (Signals then drains on a stop signal), SIGTERM ends the start as
    Ctrl-C does, instead of killing the process without a line."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


def _interrupted(error: KeyboardInterrupt, doing: str) -> int:
    name = error.signal if isinstance(error, Interrupted) else signal.SIGINT.name
    log.error("interrupted while %s", doing, extra={"signal": name})
    return EXIT_ENVIRONMENT


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
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
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
        if scheme == "sqlite":
            sqlite_path(text)
        else:
            check_postgres_url(text)
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
        help=f"policy TOML file (env {settings.POLICY_ENV}; default: the shipped policy)",
    )
    p.add_argument(
        "--demo", action="store_true", help="load the demo data set if the database has none"
    )
    p.add_argument(
        "--workers",
        type=_number(int, 1, threads.MAX_WORKERS),
        default=env("AFTERSALES_WORKERS", str(threads.DEFAULT_WORKERS)),
        help=f"RPC worker threads per process, 1 to {threads.MAX_WORKERS} (env AFTERSALES_WORKERS; "
        f"default {threads.DEFAULT_WORKERS})",
    )
    p.add_argument(
        "--max-streams",
        type=_number(int, 1, threads.MAX_STREAMS),
        default=env("AFTERSALES_MAX_STREAMS", str(threads.DEFAULT_MAX_STREAMS)),
        help=f"event streams (WatchEvents) served at once per process, each on a thread of its "
        f"own, 1 to {threads.MAX_STREAMS} (env AFTERSALES_MAX_STREAMS; default "
        f"{threads.DEFAULT_MAX_STREAMS})",
    )
    p.add_argument(
        "--processes",
        type=_number(int, 1, MAX_PROCESSES),
        default=env("AFTERSALES_PROCESSES"),
        help="server processes listening on the address, 1 to "
        f"{MAX_PROCESSES}; more than 1 needs a database file or PostgreSQL, not SQLite in "
        "memory (env AFTERSALES_PROCESSES; default: the cores this process may use, 1 for "
        "SQLite in memory)",
    )
    p.add_argument(
        "--sweep-interval",
        type=_number(float, 0.1, 86_400, " seconds"),
        default="30",
        help="seconds between sweeps, which store expired entries as EXPIRED, pay on the debts "
        "PostFunds left, fold the movements to and from the outside into the external "
        "account's balance, prune old events and forget old request ids (0.1 to 86400)",
    )
    p.add_argument(
        "--health-interval",
        type=_number(float, 0.1, 3_600, " seconds"),
        default=env("AFTERSALES_HEALTH_INTERVAL", "2"),
        help="seconds between probes of the database; health is NOT_SERVING while a probe "
        "fails or takes longer than this; while PostgreSQL takes longer, calls fail at once "
        "UNAVAILABLE, those waiting on it longer than this too (0.1 to 3600; env "
        "AFTERSALES_HEALTH_INTERVAL)",
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
        help="host:port for Prometheus metrics over HTTP; off when empty "
        "(env AFTERSALES_METRICS_ADDRESS)",
    )
    p.add_argument(
        "--tls-cert",
        default=env("AFTERSALES_TLS_CERT", ""),
        help="PEM certificate chain; with --tls-key, serve TLS (env AFTERSALES_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        default=env("AFTERSALES_TLS_KEY", ""),
        help="PEM private key (env AFTERSALES_TLS_KEY)",
    )
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
        help=f"access table TOML (env {settings.ACCESS_ENV}; default: the shipped "
        "server/access.toml; needs --tls-client-ca)",
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
        "first use; mint a token with `python -m server.certs var/demo --token staff:ID` "
        "(env AFTERSALES_DEMO_KEYS)",
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


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """The PEM files of the TLS flags, read and checked."""

    key: bytes
    chain: bytes
    client_ca: bytes | None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


_TLS_CURVES = ("secp256r1", "secp384r1")


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA on {key.curve.name}"
    return type(key).__name__.removeprefix("_")


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The files the TLS flags name, each read and checked first (gRPC would only say that it
    cannot listen); no gRPC object is made."""
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
    # gRPC's TLS serves RSA keys and ECDSA ones on P-256 or P-384: with an Ed25519 or P-521
    # key every handshake fails, with another curve it cannot listen.
    if not isinstance(key, rsa.RSAPrivateKey) and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _TLS_CURVES
    ):
        raise misconfigured(
            f"--tls-key {args.tls_key} holds a key of a kind TLS here does not take "
            f"({_key_kind(key)}): use RSA, or ECDSA on P-256 or P-384"
        )
    now = SystemClock().now()
    if not chain[0].not_valid_before_utc <= now <= chain[0].not_valid_after_utc:
        raise misconfigured(
            f"--tls-cert {args.tls_cert} is valid from {chain[0].not_valid_before_utc:%Y-%m-%d} "
            f"to {chain[0].not_valid_after_utc:%Y-%m-%d}, not now: clients would refuse it"
        )
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
    return TlsFiles(key_pem, chain_pem, client_ca)


@dataclasses.dataclass(frozen=True)
class DemoKeys:
    """The demo's login key in `folder` (token-key.pem), made on first use, and its public half
    (jwks.json), which the server trusts. Read at the start; written only once the start has
    succeeded, so that a start that fails writes nothing."""

    folder: pathlib.Path
    key: certs.TokenKey
    unwritten: bool  # made now, not in the folder yet

    @classmethod
    def of(cls, folder: pathlib.Path) -> DemoKeys:
        key_file = folder / "token-key.pem"
        if key_file.exists():
            return cls(folder, certs.TokenKey.read(key_file), unwritten=False)
        return cls(folder, certs.TokenKey(), unwritten=True)

    def verifier(self) -> TokenVerifier:
        settings = TokenSettings(self.folder / "jwks.json", certs.DEV_ISSUER, certs.DEV_AUDIENCE)
        return TokenVerifier(settings, keys=keys_of(self.key.jwks()))

    def write(self) -> None:
        try:
            if self.unwritten:
                self.folder.mkdir(parents=True, exist_ok=True)
                key_file = self.folder / "token-key.pem"
                key_file.write_bytes(self.key.pem())
                key_file.chmod(0o600)
            jwks = json.dumps(self.key.jwks())
            (self.folder / "jwks.json").write_text(jwks, encoding="utf-8")
        except OSError as e:
            raise StartupFailed(f"cannot write the demo's keys in {self.folder}: {e}") from None


def who_is_checked(
    args: argparse.Namespace,
) -> tuple[access.AccessTable | None, TokenVerifier | None, DemoKeys | None]:
    """The access table callers are checked against, the verifier of people's tokens, and the
    demo's keys it verifies with, if they are the demo's (DemoKeys.write, once started)."""
    tokens = None
    demo_keys = None
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
            demo_keys = DemoKeys.of(pathlib.Path(args.demo_keys))
            tokens = demo_keys.verifier()
        except (OSError, ValueError) as e:
            raise StartupFailed(f"cannot read the demo's keys in {args.demo_keys}: {e}") from None
    table = None
    if args.tls_client_ca:
        try:
            table = settings.load_access(METHOD_NAMES, args.access)
        except access.AccessTableError as e:
            raise misconfigured(f"bad access table: {one_line(e)}") from None
        if table.acts_for and tokens is None:
            raise misconfigured(
                f"the access table has callers acting for people "
                f"({', '.join(sorted(table.acts_for))}): pass --jwks and --token-issuer to "
                "verify their tokens"
            )
    elif args.access or os.environ.get(settings.ACCESS_ENV):
        # Without client certificates no caller proves an identity for the table to check: a
        # table given then would be read by no one, its mistakes unseen.
        flag = "--access" if args.access else f"${settings.ACCESS_ENV}"
        raise misconfigured(
            f"{flag} needs --tls-client-ca: the access table checks the identities that "
            "callers' certificates prove"
        )
    elif not is_loopback(args.address) and not args.insecure:
        raise misconfigured(
            f"refusing to serve unauthenticated callers on {args.address}: pass "
            "--tls-client-ca (and --tls-cert, --tls-key), or --insecure to do it anyway"
        )
    return table, tokens, demo_keys


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


def open_store(args: argparse.Namespace, password: str | None, *, migrate: bool) -> SqlStore:
    """The store of the URL, not yet connected (an SQLite file's folder is made, and the lock
    file of its writers beside it: not when `migrate` is false (--no-migrate) for a file that
    does not exist, which is refused with nothing made)."""
    if not migrate and urlparse(args.database).scheme == "sqlite":
        path = sqlite_path(args.database)
        if not in_memory(path):
            try:
                os.stat(path)
            except FileNotFoundError:
                raise StartupFailed(
                    f"cannot use the database {describe(args.database)}: the database file "
                    f"{path} does not exist: make it with `python -m server migrate`"
                ) from None
            except OSError:
                pass  # not to be looked at (a folder not to be entered): SQLite says why
    try:
        return SqlStore(open_database(args.database, password=password))
    except OSError as e:
        # The folder made, or the writers' lock file beside the database opened.
        raise StartupFailed(f"cannot use {describe(args.database)}: {e}") from None
    except Exception as e:  # psycopg's parser refuses a malformed URL with its own class
        raise misconfigured(f"bad database URL {describe(args.database)}: {one_line(e)}") from None


def prepare_schema(store: SqlStore, url: str, *, migrate: bool) -> int:
    """The schema's version, migrated first unless `migrate` is false."""
    try:
        return store.migrate() if migrate else store.use_migrated()
    except Exception as e:  # whatever the database or the driver says, it is said in one line
        log.debug("the database failed the start", exc_info=True)
        raise StartupFailed(f"cannot use the database {describe(url)}: {one_line(e)}") from None


def process_count(args: argparse.Namespace) -> int:
    """How many server processes: --processes, else the cores this process may use. (On a
    SQLite file, the processes' writers take their turns on a lock of the file: turns.py.)"""
    one_process_s = urlparse(args.database).scheme == "sqlite" and in_memory(
        sqlite_path(args.database)
    )
    if args.processes is None:
        return 1 if one_process_s else available_cores()
    if args.processes > 1 and one_process_s:
        raise misconfigured(
            "--processes > 1 needs a database file or PostgreSQL: "
            "a SQLite database in memory is one process's own"
        )
    return int(args.processes)


def memory_as_a_file(args: argparse.Namespace) -> None:
    """A SQLite database in memory is its connection's own, and the server's calls run on
    threads of their own, each with its connection: it is served from a file of this process's
    own instead, in a folder in memory where there is one (/dev/shm), removed at exit. The
    database in `args` is then that file's."""
    if urlparse(args.database).scheme != "sqlite" or not in_memory(sqlite_path(args.database)):
        return
    shm = pathlib.Path("/dev/shm")
    in_ram = shm.is_dir() and os.access(shm, os.W_OK)
    folder = tempfile.mkdtemp(prefix="aftersales-memory-", dir=shm if in_ram else None)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    args.database = f"sqlite:///{folder}/aftersales.db"
    log.info(
        "a database in memory: a file of this process's own, removed at exit",
        extra={"path": f"{folder}/aftersales.db"},
    )


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Checked:
    """The configuration's files read and checked: nothing opened, bound or made of gRPC yet."""

    tls: TlsFiles | None
    access: access.AccessTable | None
    tokens: TokenVerifier | None
    password: str | None
    demo_keys: DemoKeys | None = None

    def started(self) -> None:
        """What a start writes besides the database, once it has succeeded."""
        if self.demo_keys is not None:
            self.demo_keys.write()


def check(args: argparse.Namespace) -> Checked:
    tls = tls_files(args)
    table, tokens, demo_keys = who_is_checked(args)
    try:
        tracing.exporters()
    except tracing.TracingMisconfigured as e:
        raise misconfigured(f"bad OTEL_* tracing settings: {e}") from None
    return Checked(tls, table, tokens, database_password(args), demo_keys)


def make_app(
    args: argparse.Namespace,
    checked: Checked,
    service: Service,
    store: SqlStore,
    address: str,
    *,
    sweeps: bool = True,
    reuse_port: bool = False,
) -> App:
    """The server, bound to `address`; it sweeps unless another process does. Health follows
    `store`'s database, and `store` follows health (SqlStore.database_answers)."""
    from server.grpc import metrics
    from server.grpc.app import App

    if store.writer is not None:
        store.writer.observe(metrics.writer_turn)
    if store.group is not None:
        store.group.observe(metrics.writer_group)
    probe = DatabaseProbe(args.database, password=checked.password, timeout=args.health_interval)
    try:
        return App(
            service,
            address,
            workers=args.workers,
            max_streams=args.max_streams,
            credentials=checked.tls.credentials() if checked.tls is not None else None,
            access=checked.access,
            tokens=checked.tokens,
            sweep_interval=args.sweep_interval if sweeps else None,
            health_probe=probe.check,
            health_interval=args.health_interval,
            # A call that has waited on the database as long as the probe may has waited on
            # one that does not answer.
            on_health=functools.partial(store.database_answers, stuck_after=args.health_interval),
            reuse_port=reuse_port,
        )
    except OSError as e:
        raise StartupFailed(str(e)) from None


def _metrics_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve_metrics(address: str, registry: Collector | None = None) -> None:
    """Serves Prometheus metrics over HTTP on a thread: this process's own, or `registry`'s."""
    from prometheus_client import REGISTRY, start_http_server

    host, port = _metrics_host_port(address)
    try:
        start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as e:
        raise StartupFailed(f"cannot serve metrics on {address}: {e.strerror or e}") from None


def check_metrics_address(address: str) -> None:
    """Fails as serve_metrics would when the address cannot be listened on now, serving
    nothing: for a process that may start no thread yet."""
    host, port = _metrics_host_port(address)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as attempt:
            attempt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            attempt.bind((host, port))
    except OSError as e:
        raise StartupFailed(f"cannot serve metrics on {address}: {e.strerror or e}") from None


def load_demo(service: Service) -> None:
    try:
        loaded = demo.load(service)
    except Exception as e:
        raise StartupFailed(f"cannot load the demo data: {one_line(e)}") from None
    if loaded:
        log.info("demo data loaded")


def warn_if_insecure(checked: Checked, address: str) -> None:
    if checked.access is not None:
        return
    people = (
        "the people they act for prove who they are with tokens"
        if checked.tokens is not None
        else "requests name the people they act for, unverified"
    )
    log.warning(
        f"INSECURE: callers are not authenticated and may call every method; {people}; "
        "serve with --tls-client-ca in production",
        extra={"address": address},
    )


def serving_facts(
    args: argparse.Namespace, checked: Checked, port: int, version: int, the_policy: Policy
) -> dict[str, object]:
    """What the "serving" log line says."""
    return {
        "address": args.address,
        "port": port,
        "database": describe(args.database),
        "schema_version": version,
        "policy_version": the_policy.version,
        "tls": checked.tls is not None,
        "callers_authenticated": checked.access is not None,
        "people_authenticated": checked.tokens is not None,
        "access_version": checked.access.version if checked.access else None,
        "health_interval_seconds": args.health_interval,
    }


def prepare(args: argparse.Namespace, the_policy: Policy) -> tuple[App, dict[str, object]]:
    """Everything a start does before serving, in an order that fails before it writes:
    configuration first, then the address is bound, then the database is migrated and the demo
    loaded, and last the demo's keys written. The server bound, and what its first log line
    says."""
    from server.grpc.app import probe_address

    try:
        # Before anything is written (the database's folder or lock file, the demo's keys).
        probe_address(args.address)
    except OSError as e:
        raise StartupFailed(str(e)) from None
    checked = check(args)
    if args.metrics_address:
        check_metrics_address(args.metrics_address)  # before the database's folder is made
    tracing.configure()
    store = open_store(args, checked.password, migrate=not args.no_migrate)
    service = Service(store, SystemClock(), the_policy)
    app = make_app(args, checked, service, store, args.address)
    if args.metrics_address:
        serve_metrics(args.metrics_address)
    version = prepare_schema(store, args.database, migrate=not args.no_migrate)
    if args.demo:
        load_demo(service)
    checked.started()
    warn_if_insecure(checked, args.address)
    return app, serving_facts(args, checked, app.port, version, the_policy)


# --- Running and stopping ---------------------------------------------------------------------


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


def serve_in_processes(args: argparse.Namespace, the_policy: Policy, count: int) -> int:
    """Serves with `count` processes on one port (server/processes.py). This process checks
    the configuration, holds the port, migrates the schema and loads the demo, all before
    forking, then serves the metrics of them all; each worker serves on its own."""
    metrics_dir = None
    if args.metrics_address:
        if "prometheus_client" in sys.modules:  # a bug: each worker would count on its own
            raise StartupFailed(
                "cannot add up the metrics of several processes: "
                "prometheus_client was imported before they could be set up"
            )
        # Each worker keeps its metrics in files here, which this process adds up when
        # scraped: prometheus_client reads the variable when it is first imported.
        metrics_dir = tempfile.mkdtemp(prefix="aftersales-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _serve_in_processes(args, the_policy, count)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_in_processes(args: argparse.Namespace, the_policy: Policy, count: int) -> int:
    from server.grpc.app import PortReservation

    try:
        # Before anything is written (the database's folder or lock file, the demo's keys).
        reserved = PortReservation(args.address)
    except OSError as e:
        raise StartupFailed(str(e)) from None
    checked = check(args)
    if args.metrics_address:
        check_metrics_address(args.metrics_address)
    store = open_store(args, checked.password, migrate=not args.no_migrate)
    version = prepare_schema(store, args.database, migrate=not args.no_migrate)
    if args.demo:
        load_demo(Service(store, SystemClock(), the_policy))
    store.close()  # the workers share no connection of this process
    checked.started()
    warn_if_insecure(checked, args.address)
    facts = {**serving_facts(args, checked, reserved.port, version, the_policy), "processes": count}

    def work(index: int, signals: Signals) -> int:
        reserved.close()  # the parent's copy holds the port
        _configure_logging(args.log_level, worker=index)
        try:
            tracing.configure()
            store = open_store(args, checked.password, migrate=not args.no_migrate)
            service = Service(store, SystemClock(), the_policy)
            # One sweeper at a time: worker 0's.
            app = make_app(
                args,
                checked,
                service,
                store,
                reserved.address,
                sweeps=index == 0,
                reuse_port=True,
            )
            prepare_schema(store, args.database, migrate=False)
        except StartupFailed as e:
            log.error(str(e))
            return e.exit_code
        except Exception as e:  # a bug: still one line, the traceback at DEBUG
            log.debug("the start failed", exc_info=True)
            log.error("cannot start: %s: %s", type(e).__name__, one_line(e))
            return EXIT_ENVIRONMENT
        settle_heap()
        app.start()
        log.info("serving", extra=facts)
        serve(app, signals, args.drain_seconds, args.grace_seconds)
        tracing.shutdown()
        log.info("stopped")
        return 0

    settle_heap()
    workers = Workers(count, work)
    log.info("workers started", extra={"processes": count, "pids": workers.pids})
    on_exit: Callable[[int], None] | None = None
    exit_code = 0
    if args.metrics_address:
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        on_exit = multiprocess.mark_process_dead
        try:
            serve_metrics(args.metrics_address, registry)
        except StartupFailed as e:
            log.error(str(e))
            workers.stop()
            exit_code = e.exit_code
    exit_code = workers.supervise(on_exit) or exit_code
    reserved.close()
    log.info("stopped")
    return exit_code


def migrate(argv: list[str]) -> int:
    args = parse_migrate_args(argv)
    _configure_logging(args.log_level)
    _interruptible()
    try:
        store = open_store(args, database_password(args), migrate=True)
        version = prepare_schema(store, args.database, migrate=True)
    except StartupFailed as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt as e:
        return _interrupted(e, "migrating")
    store.close()
    log.info("migrated", extra={"database": describe(args.database), "schema_version": version})
    print(f"schema version {version}")
    return 0


def _configure_logging(level: str, *, worker: int | None = None) -> None:
    """JSON lines on stderr (server/logs.py); a worker's carry its index and pid."""
    logs.configure(level, {} if worker is None else {"worker": worker, "pid": os.getpid()})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:
        return migrate(argv[1:])
    args = parse_args(argv)
    _configure_logging(args.log_level)
    _interruptible()
    try:
        the_policy = settings.load_policy(args.policy)
        for warning in policy.warnings(the_policy):
            log.warning(warning)
        count = process_count(args)
        if count > 1:
            return serve_in_processes(args, the_policy, count)
        memory_as_a_file(args)
        app, facts = prepare(args, the_policy)
        signals = Signals()  # from here SIGTERM and Ctrl-C drain and stop
    except policy.PolicyError as e:
        log.error("bad policy: %s", e)
        return EXIT_CONFIGURATION
    except StartupFailed as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt as e:
        return _interrupted(e, "starting")
    except Exception as e:  # a bug: still one line, the traceback at DEBUG
        log.debug("the start failed", exc_info=True)
        log.error("cannot start: %s: %s", type(e).__name__, one_line(e))
        return EXIT_ENVIRONMENT
    settle_heap()
    app.start()
    log.info("serving", extra=facts)
    serve(app, signals, args.drain_seconds, args.grace_seconds)
    tracing.shutdown()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
