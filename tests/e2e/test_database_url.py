"""`python -m server` on a PostgreSQL that wants a password, given in a file and not in the URL;
the URL's libpq parameters reach the connections (TLS verified against the database's CA, the
application name), and the password never reaches the logs."""

from __future__ import annotations

import signal
import subprocess
import sys

import psycopg
import pytest

from client import Client
from server.certs import TokenKey
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.pg import PASSWORD, PASSWORD_ROLE, free_port

pytestmark = pytest.mark.postgres


def test_a_server_logs_in_with_a_password_file_and_keeps_the_url_s_parameters(
    postgres_server, tmp_path
):
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS with_password WITH (FORCE)")
        admin.execute(f"CREATE DATABASE with_password OWNER {PASSWORD_ROLE}")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    url = (
        f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres_server.port}/with_password"
        f"?application_name=aftersales-e2e&sslmode=verify-full&sslrootcert={postgres_server.ca_file}"
    )
    address = f"127.0.0.1:{free_port()}"
    env = {**_environment(), "DATABASE_URL": url, "DATABASE_PASSWORD_FILE": str(password_file)}
    stderr = tmp_path / "server.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--address",
                address,
                "--demo",
                "--demo-keys",
                str(tmp_path / "demo"),
                "--drain-seconds",
                "0",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    server = ServerProcess(process, address, stderr)
    try:
        _wait_until_serving(server)
        token = TokenKey.read(tmp_path / "demo" / "token-key.pem").mint("staff-owner", "staff")
        with Client(address, token=token) as client:
            check = client.check_eligibility("order-eligible", "staff-owner")
        assert check.eligible
        with psycopg.connect(postgres_server.url("postgres")) as admin:
            connections = admin.execute(
                "SELECT DISTINCT a.application_name, s.ssl FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.usename = %s",
                (PASSWORD_ROLE,),
            ).fetchall()
        assert connections == [("aftersales-e2e", True)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    serving = [r for r in server.log_records() if r.get("message") == "serving"]
    assert serving[0]["database"] == f"postgresql://127.0.0.1:{postgres_server.port}/with_password"
    assert PASSWORD not in stderr.read_text(encoding="utf-8")
