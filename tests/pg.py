"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a free loopback port.

PostgreSQL refuses to run as root; when the tests run as root the server runs as the `postgres`
system user (via runuser), in a folder that user owns.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg

from server.certs import Authority

# A role that must give a password (see PostgresServer.start).
PASSWORD_ROLE = "aftersales_pw"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not on the PATH: install the PostgreSQL server")
        self.root = tempfile.mkdtemp(prefix="aftersales-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        # TLS with a certificate for 127.0.0.1 from a CA of the tests' own; plaintext stays open.
        self.ca_file = os.path.join(self.root, "ca.pem")
        ca = Authority("test PostgreSQL CA")
        pathlib.Path(self.ca_file).write_bytes(ca.cert_pem)
        ca.server("localhost", "127.0.0.1").write(pathlib.Path(self.root), "server")
        for name in ("server.pem", "server.key"):
            path = os.path.join(self.root, name)
            if os.geteuid() == 0:
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(os.path.join(self.root, "server.key"), 0o600)

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as_user, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def start(self) -> PostgresServer:
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        # One role logs in with a password, to test passwords kept out of the URL; every other
        # role is trusted. The first matching line wins.
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, encoding="utf-8") as f:
            rules = f.read()
        with open(hba, "w", encoding="utf-8") as f:
            f.write(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n{rules}")
        self.start_server()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def start_server(self) -> PostgresServer:
        """Starts (or restarts) the server on the folder and port made by start()."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            f"-c ssl=on -c ssl_cert_file={self.root}/server.pem "
            f"-c ssl_key_file={self.root}/server.key"
        )
        self._run(
            "pg_ctl",
            "-D",
            self.data,
            "-o",
            options,
            "-l",
            os.path.join(self.root, "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def postmaster_pid(self) -> int:
        """The server's main process, parent of every other of its processes."""
        with open(os.path.join(self.data, "postmaster.pid"), encoding="ascii") as f:
            return int(f.readline())

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database `name` (replacing one of that name), empty or a copy of `template`,
        which nobody may be connected to. Copied file by file: for databases this small that is
        faster than through the log, which PostgreSQL 15 does by default."""
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"{copy} STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops database `name`, cutting whoever is still connected to it."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop_server(self) -> None:
        """Stops the server, keeping its data, cutting every connection: an outage. (A fast
        shutdown: with the durability settings above an immediate one could lose commits.)"""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
