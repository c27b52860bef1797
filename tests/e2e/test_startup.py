"""Black box: `python -m server` refuses a bad flag, a bad policy value and a broken environment
with one line and an exit code (2: the configuration, 1: the environment), never a traceback, and
a start that cannot bind its port writes nothing to the database. `python -m server migrate`
migrates in a step of its own, and `--no-migrate` refuses a schema that is behind."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import pathlib
import select
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519

from server import settings
from server.__main__ import StartupFailed, parse_args, prepare
from server.store import SCHEMA_VERSION
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.pg import free_port

CONFIGURATION = 2
ENVIRONMENT = 1


@dataclasses.dataclass
class Refusal:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def line(self) -> str:
        """The one line the refusal says, its message when it is a JSON log record."""
        assert len(self.lines) == 1, self.stderr
        try:
            return str(json.loads(self.lines[0])["message"])
        except ValueError:
            return self.lines[0]


def run_server(*args: str, cwd: pathlib.Path = ROOT, env: dict[str, str] | None = None) -> Refusal:
    """`python -m server ARGS` run to its end (a start that is refused ends by itself)."""
    done = subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=cwd,
        env={**_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Refusal(done.returncode, done.stdout, done.stderr)


def assert_refused(refusal: Refusal, exit_code: int, *said: str) -> None:
    assert refusal.exit_code == exit_code, refusal.stderr
    assert "Traceback" not in refusal.stderr
    for words in said:
        assert words in refusal.line


# --- Bad flags and policy values: exit 2 and one line naming them ---------------------------------

# Each with the words its line must say; every start is refused before it binds or opens anything.
BAD_FLAGS = {
    "workers-zero": (["--workers", "0"], "argument --workers: must be from 1 to 256, not 0"),
    "workers-huge": (["--workers", "100000"], "argument --workers: must be from 1 to 256"),
    "workers-text": (["--workers", "many"], "argument --workers: expected a whole number"),
    "streams-zero": (
        ["--max-streams", "0"],
        "argument --max-streams: must be from 1 to 1024, not 0",
    ),
    "sweep-zero": (["--sweep-interval", "0"], "argument --sweep-interval: must be from 0.1"),
    "sweep-nan": (["--sweep-interval", "nan"], "argument --sweep-interval: must be from 0.1"),
    "sweep-inf": (["--sweep-interval", "inf"], "argument --sweep-interval: must be from 0.1"),
    "health-zero": (["--health-interval", "0"], "argument --health-interval: must be from 0.1"),
    "drain-negative": (["--drain-seconds", "-1"], "argument --drain-seconds: must be from 0"),
    "grace-text": (["--grace-seconds", "soon"], "argument --grace-seconds: expected a number"),
    "address-no-port": (["--address", "localhost"], "argument --address: expected host:port"),
    "address-port-too-big": (
        ["--address", "127.0.0.1:65536"],
        "argument --address: the port is a number from 0 to 65535, not '65536'",
    ),
    "address-port-negative": (
        ["--address", "127.0.0.1:-1"],
        "argument --address: the port is a number from 0 to 65535",
    ),
    "address-ipv6-unbracketed": (["--address", "::1:50051"], "argument --address: '::1' is not"),
    "address-ipv6-bad": (["--address", "[::g]:50051"], "argument --address: [::g] is not an IPv6"),
    # Digits of another script: Python reads them as a number, the socket layer does not.
    "address-port-fullwidth": (
        ["--address", "127.0.0.1:\uff15\uff10\uff10\uff15\uff11"],
        "argument --address: the port is a number from 0 to 65535",
    ),
    "metrics-address-no-port": (
        ["--metrics-address", "127.0.0.1:http"],
        "argument --metrics-address: the port is a number from 0 to 65535",
    ),
    "log-level-unknown": (
        ["--log-level", "LOUD"],
        "argument --log-level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'LOUD'",
    ),
    "database-scheme-unknown": (
        ["--database", "mysql://user:secret@db/aftersales"],
        "argument --database: unsupported database URL scheme 'mysql'",
    ),
    "database-url-malformed": (
        ["--database", "postgresql://db/aftersales?colour=blue"],
        "argument --database: malformed database URL",
    ),
    # A SQLite URL that cannot say what it seems to: its parameters would be dropped, a file:
    # URI opened as a file of that name.
    "sqlite-url-parameters": (
        ["--database", "sqlite:///var/aftersales.db?mode=ro"],
        "argument --database: malformed database URL: a SQLite URL names a file",
    ),
    "sqlite-url-file-uri": (
        ["--database", "sqlite:///file::memory:?cache=shared"],
        "argument --database: malformed database URL: a SQLite URL names a file",
    ),
    "sqlite-url-no-path": (
        ["--database", "sqlite:///"],
        "argument --database: malformed database URL: a SQLite URL names a file",
    ),
    "sqlite-url-file-uri-bare": (
        ["--database", "sqlite:///file:aftersales.db"],
        "argument --database: malformed database URL: SQLite's file: URIs are not",
    ),
    # Values libpq would refuse only as it connects, as if the database did not answer.
    "postgres-url-port-huge": (
        ["--database", "postgresql://db:99999/aftersales"],
        "argument --database: malformed database URL: port '99999' is not a port number",
    ),
    "postgres-url-port-text": (
        ["--database", "postgresql://db:abc/aftersales"],
        "argument --database: malformed database URL: port 'abc' is not a port number",
    ),
    "postgres-url-sslmode": (
        ["--database", "postgresql://db/aftersales?sslmode=sometimes"],
        "argument --database: malformed database URL: sslmode 'sometimes' is not one of",
    ),
    "postgres-url-connect-timeout": (
        ["--database", "postgresql://db/aftersales?connect_timeout=soon"],
        "argument --database: malformed database URL: connect_timeout 'soon' is not a whole",
    ),
}

BAD_ENVIRONMENT = {
    "workers-from-environment": (
        {"AFTERSALES_WORKERS": "0"},
        "argument --workers: must be from 1 to 256, not 0",
    ),
    "log-level-from-environment": (
        {"AFTERSALES_LOG_LEVEL": "chatty"},
        "argument --log-level: expected one of",
    ),
}

# Policy files and the words of the line refusing each (every value: tests/unit/test_policy.py).
BAD_POLICIES = {
    "version-too-long": (f'version = "{"v" * 65}"\n', "`version` must be at most 64 characters"),
    "window-overflows-dates": (
        'version = "v"\n[entry]\nwindow_seconds = 9223372036854775807\n',
        "entry.window_seconds must be a whole number of seconds from 1 to 315360000",
    ),
}


@pytest.mark.parametrize("name", list(BAD_FLAGS))
def test_a_bad_flag_is_refused_in_one_line_naming_it(name, capsys):
    flags, words = BAD_FLAGS[name]

    with pytest.raises(SystemExit) as exited:
        parse_args(flags)

    assert exited.value.code == CONFIGURATION
    assert_one_line(capsys.readouterr().err, words)


@pytest.mark.parametrize("name", list(BAD_ENVIRONMENT))
def test_a_bad_value_in_the_environment_is_refused_in_one_line_naming_its_flag(
    name, capsys, monkeypatch
):
    env, words = BAD_ENVIRONMENT[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(SystemExit) as exited:
        parse_args([])

    assert exited.value.code == CONFIGURATION
    assert_one_line(capsys.readouterr().err, words)


def assert_one_line(stderr: str, words: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("aftersales-server: error: ")
    assert words in lines[0]


@pytest.fixture(scope="module")
def refused_processes(tmp_path_factory) -> dict[str, Refusal]:
    """A few of the bad starts above as processes of their own, run at once."""
    folder = tmp_path_factory.mktemp("refusals")
    database = ["--database", f"sqlite:///{folder / 'never.db'}", "--address", "127.0.0.1:0"]
    starts: dict[str, tuple[list[str], dict[str, str]]] = {
        "workers-zero": ([*database, *BAD_FLAGS["workers-zero"][0]], {}),
        "workers-from-environment": (database, BAD_ENVIRONMENT["workers-from-environment"][0]),
    }
    for name, (text, _) in BAD_POLICIES.items():
        path = folder / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        starts[f"policy-{name}"] = ([*database, "--policy", str(path)], {})
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        running = {
            name: pool.submit(run_server, *flags, env=env) for name, (flags, env) in starts.items()
        }
        done = {name: future.result() for name, future in running.items()}
    assert not (folder / "never.db").exists()
    return done


@pytest.mark.parametrize("name", ["workers-zero"])
def test_a_server_given_a_bad_flag_exits_2_with_one_line(refused_processes, name):
    assert_refused(refused_processes[name], CONFIGURATION, BAD_FLAGS[name][1])


@pytest.mark.parametrize("name", ["workers-from-environment"])
def test_a_server_given_a_bad_environment_exits_2_with_one_line(refused_processes, name):
    assert_refused(refused_processes[name], CONFIGURATION, BAD_ENVIRONMENT[name][1])


@pytest.mark.parametrize("name", list(BAD_POLICIES))
def test_a_server_given_a_bad_policy_value_exits_2_with_one_line_naming_it(refused_processes, name):
    refusal = refused_processes[f"policy-{name}"]

    assert_refused(refusal, CONFIGURATION, "bad policy: ", f"{name}.toml: ", BAD_POLICIES[name][1])


# --- Files the flags name -------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    from server.certs import Authority

    ca = Authority()
    ca.server("localhost", "127.0.0.1").write(tmp_path, "server")
    ca.client("spiffe://aftersales/other").write(tmp_path, "other")
    (tmp_path / "junk.pem").write_text("not a PEM file\n", encoding="utf-8")
    (tmp_path / "list.json").write_text("[]\n", encoding="utf-8")
    now = datetime.now(UTC)
    _self_signed(tmp_path, "dsa", dsa.generate_private_key(2048), now - timedelta(days=1))
    _self_signed(tmp_path, "ed25519", ed25519.Ed25519PrivateKey.generate(), now - timedelta(days=1))
    _self_signed(tmp_path, "p521", ec.generate_private_key(ec.SECP521R1()), now - timedelta(days=1))
    old = datetime(2000, 1, 1, tzinfo=UTC)
    _self_signed(tmp_path, "expired", ec.generate_private_key(ec.SECP256R1()), old)
    return {
        **{
            f"{name}-{part}": str(tmp_path / f"{name}.{part}")
            for name in ("dsa", "ed25519", "p521", "expired")
            for part in ("cert", "key")
        },
        "json-list": str(tmp_path / "list.json"),
        "cert": str(tmp_path / "server.pem"),
        "key": str(tmp_path / "server.key"),
        "other-key": str(tmp_path / "other.key"),
        "junk": str(tmp_path / "junk.pem"),
        "missing": str(tmp_path / "missing.pem"),
        "database": f"sqlite:///{tmp_path / 'never.db'}",
    }


def _self_signed(folder: pathlib.Path, name: str, key: Any, valid_from: datetime) -> None:
    """`name`.cert, a certificate of `key` for 127.0.0.1 valid for 366 days from `valid_from`,
    and `name`.key."""
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_from + timedelta(days=366))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    (folder / f"{name}.cert").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


BAD_FILES = {
    "cert-missing": (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot read --tls-cert"),
    "key-missing": (["--tls-cert", "{cert}", "--tls-key", "{missing}"], "cannot read --tls-key"),
    "cert-not-pem": (
        ["--tls-cert", "{junk}", "--tls-key", "{key}"],
        "--tls-cert {junk} holds no PEM certificate",
    ),
    "key-not-pem": (
        ["--tls-cert", "{cert}", "--tls-key", "{junk}"],
        "--tls-key {junk} holds no unencrypted PEM private key",
    ),
    "key-of-another-certificate": (
        ["--tls-cert", "{cert}", "--tls-key", "{other-key}"],
        "--tls-key {other-key} is not the key of the certificate in --tls-cert {cert}",
    ),
    "client-ca-not-pem": (
        ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{junk}"],
        "--tls-client-ca {junk} holds no PEM certificate",
    ),
    "password-file-missing": (
        ["--database-password-file", "{missing}"],
        "cannot read --database-password-file {missing}: No such file or directory",
    ),
    "jwks-not-json": (
        ["--jwks", "{junk}", "--token-issuer", "login"],
        "bad token keys: cannot read the JWKS {junk}",
    ),
    "jwks-missing": (
        ["--jwks", "{missing}", "--token-issuer", "login"],
        "bad token keys: cannot read the JWKS {missing}",
    ),
    "key-dsa": (
        ["--tls-cert", "{dsa-cert}", "--tls-key", "{dsa-key}"],
        "--tls-key {dsa-key} holds a key of a kind TLS here does not take (DSAPrivateKey)",
    ),
    "key-ed25519": (
        ["--tls-cert", "{ed25519-cert}", "--tls-key", "{ed25519-key}"],
        "--tls-key {ed25519-key} holds a key of a kind TLS here does not take (Ed25519PrivateKey)",
    ),
    "key-p521": (
        ["--tls-cert", "{p521-cert}", "--tls-key", "{p521-key}"],
        "--tls-key {p521-key} holds a key of a kind TLS here does not take (ECDSA on secp521r1)",
    ),
    "cert-expired": (
        ["--tls-cert", "{expired-cert}", "--tls-key", "{expired-key}"],
        "--tls-cert {expired-cert} is valid from 2000-01-01 to 2001-01-01, not now",
    ),
    "access-without-client-ca": (
        ["--access", "{missing}"],
        "--access needs --tls-client-ca: the access table checks the identities",
    ),
    "jwks-not-an-object": (
        ["--jwks", "{json-list}", "--token-issuer", "login"],
        "bad token keys: cannot read the JWKS {json-list}: a JWKS is a JSON object, not list",
    ),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_file_a_flag_names_that_cannot_be_used_is_refused_in_one_line(files, name):
    flags, words = BAD_FILES[name]
    args = parse_args(
        ["--database", files["database"], "--address", "127.0.0.1:0"]
        + [flag.format(**files) for flag in flags]
    )

    with pytest.raises(StartupFailed) as refused:
        prepare(args, settings.load_policy())

    assert refused.value.exit_code == CONFIGURATION
    assert words.format(**files) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not pathlib.Path(files["database"].removeprefix("sqlite:///")).exists()


def test_an_access_table_named_in_the_environment_without_client_certificates_is_refused(
    files, monkeypatch
):
    monkeypatch.setenv("AFTERSALES_ACCESS", files["missing"])
    args = parse_args(["--database", files["database"], "--address", "127.0.0.1:0"])

    with pytest.raises(StartupFailed) as refused:
        prepare(args, settings.load_policy())

    assert refused.value.exit_code == CONFIGURATION
    assert "$AFTERSALES_ACCESS needs --tls-client-ca" in str(refused.value)


def test_a_server_given_a_file_that_is_not_pem_exits_2_with_one_line(files):
    refusal = run_server(
        "--database", files["database"], "--address", "127.0.0.1:0",
        "--tls-cert", files["junk"], "--tls-key", files["key"],
    )  # fmt: skip

    assert_refused(refusal, CONFIGURATION, f"--tls-cert {files['junk']} holds no PEM certificate")


# --- The environment: exit 1 and one line ---------------------------------------------------------


@pytest.fixture
def a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _tables(database_url: str, tmp_path: pathlib.Path) -> list[str]:
    if database_url.startswith("sqlite"):
        return ["<the file exists>"] if (tmp_path / "aftersales.db").exists() else []
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_port_in_use_exits_1_with_one_line_and_writes_nothing(
    database_url, a_port_in_use, tmp_path, processes
):
    refusal = run_server(
        "--database", database_url, "--address", f"127.0.0.1:{a_port_in_use}", "--demo",
        "--demo-keys", str(tmp_path / "demo"), "--processes", processes,
    )  # fmt: skip

    assert_refused(
        refusal,
        ENVIRONMENT,
        f"cannot listen on 127.0.0.1:{a_port_in_use}: Address already in use",
    )
    assert _tables(database_url, tmp_path) == []
    # Nor the demo's keys, nor a SQLite database's lock file.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_metrics_port_in_use_exits_1_with_one_line_and_writes_nothing(
    a_port_in_use, tmp_path, processes
):
    refusal = run_server(
        "--database", f"sqlite:///{tmp_path / 'var' / 'aftersales.db'}",
        "--address", "127.0.0.1:0", "--metrics-address", f"127.0.0.1:{a_port_in_use}",
        "--processes", processes,
    )  # fmt: skip

    assert_refused(refusal, ENVIRONMENT, f"cannot serve metrics on 127.0.0.1:{a_port_in_use}")
    # Neither the database's folder nor its writers' lock file.
    assert list(tmp_path.iterdir()) == []


def test_an_address_not_of_this_host_exits_1_naming_why(tmp_path):
    # 192.0.2.0/24 is for documentation (RFC 5737): no host has it.
    refusal = run_server("--address", "192.0.2.1:0", "--insecure", cwd=tmp_path)

    assert_refused(
        refusal, ENVIRONMENT, "cannot listen on 192.0.2.1:0: Cannot assign requested address"
    )
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_database_that_does_not_answer_exits_1_with_one_line_and_writes_nothing(
    tmp_path, processes
):
    closed = free_port()

    refusal = run_server(
        "--database", f"postgresql://postgres@127.0.0.1:{closed}/aftersales",
        "--address", "127.0.0.1:0", "--demo", "--processes", processes,
        cwd=tmp_path,
    )  # fmt: skip

    assert_refused(
        refusal,
        ENVIRONMENT,
        f"cannot use the database postgresql://127.0.0.1:{closed}/aftersales: ",
        "Connection refused",
    )
    assert list(tmp_path.iterdir()) == []  # not even the demo's keys (var/demo)


def test_a_demo_start_writes_its_login_key_once_and_keeps_it(tmp_path):
    """Made by the first start that succeeds, read by the next: tokens minted with it stay good."""
    from server.__main__ import DemoKeys, check

    folder = tmp_path / "demo"
    args = parse_args(["--address", "127.0.0.1:0", "--demo", "--demo-keys", str(folder)])
    first = check(args)
    assert not folder.exists()
    first.started()
    token = DemoKeys.of(folder).key.mint("staff-owner", "staff")
    second = check(args)
    second.started()

    assert second.tokens is not None and first.tokens is not None
    assert second.tokens.person([("authorization", f"Bearer {token}")]).person_id == "staff-owner"
    assert first.tokens.person([("authorization", f"Bearer {token}")]).person_id == "staff-owner"


def test_a_database_host_nobody_knows_exits_1_with_one_line():
    refusal = run_server(
        "--database", "postgresql://postgres@no-such-host.invalid/aftersales",
        "--address", "127.0.0.1:0",
    )  # fmt: skip

    assert_refused(refusal, ENVIRONMENT, "cannot use the database", "no-such-host.invalid")


@pytest.mark.parametrize(
    ("stop", "command", "doing"),
    [
        (signal.SIGTERM, ["--address", "127.0.0.1:0", "--processes", "1"], "starting"),
        (signal.SIGTERM, ["--address", "127.0.0.1:{port}", "--processes", "2"], "starting"),
        (signal.SIGINT, ["--address", "127.0.0.1:0", "--processes", "1"], "starting"),
        (signal.SIGTERM, ["migrate"], "migrating"),
    ],
    ids=["sigterm", "sigterm-2-processes", "ctrl-c", "sigterm-migrate"],
)
def test_a_stop_signal_while_starting_ends_the_start_with_one_line(stop, command, doing):
    # A database that takes the connection and never answers: the start waits on it.
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/aftersales"
    with silent:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", *(w.format(port=free_port()) for w in command)]
            + ["--database", url],
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            waiting, _, _ = select.select([silent], [], [], 30)
            assert waiting, "the start never reached the database"
            process.send_signal(stop)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            process.kill()

    refusal = Refusal(process.returncode, stdout, stderr)
    assert_refused(refusal, ENVIRONMENT, f"interrupted while {doing}")
    assert json.loads(refusal.lines[0])["signal"] == stop.name
    assert stdout == ""


def test_a_database_folder_that_cannot_be_made_exits_1_with_one_line(tmp_path):
    (tmp_path / "var").write_text("a file where the folder should be\n", encoding="utf-8")

    refusal = run_server("--address", "127.0.0.1:0", cwd=tmp_path)  # sqlite:///var/aftersales.db

    assert_refused(refusal, ENVIRONMENT, "cannot use sqlite:///var/aftersales.db: ")


def test_no_migrate_names_why_a_database_file_cannot_be_looked_at(tmp_path):
    (tmp_path / "var").write_text("a file where the folder should be\n", encoding="utf-8")

    refusal = run_server("--address", "127.0.0.1:0", "--no-migrate", cwd=tmp_path)

    # Not "does not exist: make it with migrate", which would fail the same way.
    assert_refused(refusal, ENVIRONMENT, "cannot use sqlite:///var/aftersales.db: ", "'var'")
    assert "does not exist" not in refusal.line


# --- Migrating in a step of its own ---------------------------------------------------------------


def migrate(database_url: str) -> Refusal:
    done = subprocess.run(
        [sys.executable, "-m", "server", "migrate", "--database", database_url],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Refusal(done.returncode, done.stdout, done.stderr)


def test_no_migrate_refuses_a_schema_behind_then_starts_once_migrate_ran(database_url, tmp_path):
    behind = run_server("--database", database_url, "--address", "127.0.0.1:0", "--no-migrate")

    if database_url.startswith("sqlite"):  # no file yet, and the refused start makes none
        assert_refused(behind, ENVIRONMENT, "aftersales.db does not exist", "server migrate")
        assert not (tmp_path / "aftersales.db-writer").exists()
        assert _tables(database_url, tmp_path) == []
    else:
        assert_refused(
            behind,
            ENVIRONMENT,
            f"the database schema is version 0, behind this server's {SCHEMA_VERSION}",
            "python -m server migrate",
        )

    migrated = migrate(database_url)
    assert migrated.exit_code == 0, migrated.stderr
    assert migrated.stdout == f"schema version {SCHEMA_VERSION}\n"
    again = migrate(database_url)
    assert (again.exit_code, again.stdout) == (0, f"schema version {SCHEMA_VERSION}\n")

    address = f"127.0.0.1:{free_port()}"
    stderr = tmp_path / "server.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--database",
                database_url,
                "--address",
                address,
                "--no-migrate",
                "--drain-seconds",
                "0",
            ],  # fmt: skip
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    server = ServerProcess(process, address, stderr)
    try:
        _wait_until_serving(server)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    serving = [r for r in server.log_records() if r.get("message") == "serving"]
    assert serving[0]["schema_version"] == SCHEMA_VERSION


def test_migrate_of_a_database_that_does_not_answer_exits_1_with_one_line():
    closed = free_port()

    refusal = migrate(f"postgresql://postgres@127.0.0.1:{closed}/aftersales")

    assert_refused(refusal, ENVIRONMENT, "cannot use the database", "Connection refused")
    assert refusal.stdout == ""


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger-thrift"}, "unknown OTEL_TRACES_EXPORTER jaeger-thrift"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
            },
            "unsupported OTLP protocol 'carrier-pigeon'",
        ),
    ],
    ids=["unknown-exporter", "unknown-protocol"],
)
def test_bad_tracing_settings_exit_2_with_one_line_before_anything_is_written(env, words, tmp_path):
    database = tmp_path / "never.db"
    refusal = run_server("--database", f"sqlite:///{database}", "--address", "127.0.0.1:0", env=env)

    assert_refused(refusal, 2, "bad OTEL_* tracing settings", words)
    assert not database.exists()
