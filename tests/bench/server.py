"""The server under load: `python -m server` in a process of its own, so that its memory, its CPU
time and its GIL are its own and not the load generator's."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.bench import procfs
from tests.environment import server_environment
from tests.pg import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEP_SECONDS = 1
# The seconds SQLite's writer turn was held, over the server's processes (server/grpc/metrics.py).
WRITER_BUSY = "aftersales_sqlite_writer_busy_seconds_total"


class ServerFailed(RuntimeError):
    pass


class ServerProcess:
    """A server on a free loopback port over `database_url`; its log goes to `log`. Callers are
    not authenticated (a loopback address without --tls-client-ca or --demo), as in a
    deployment behind a trusted gateway, so no token is checked on any call. It sweeps every
    SWEEP_SECONDS, so that the debts one PostFunds leaves are paid on soon after. Its metrics
    are served, as in a deployment, and read for SQLite's writer (writer_busy_seconds)."""

    def __init__(self, database_url: str, log: pathlib.Path, options: Sequence[str] = ()) -> None:
        """`options`: more of `python -m server`'s options (--jwks, to check people's tokens)."""
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self.sqlite = database_url.startswith("sqlite")
        self.log = log
        env = server_environment()
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "--address",
                    self.address,
                    "--database",
                    database_url,
                    "--sweep-interval",
                    str(SWEEP_SECONDS),
                    "--metrics-address",
                    self.metrics_address,
                    *options,
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def wait_serving(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"the server exited with {self.process.returncode}:\n{self.tail()}"
                    )
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerFailed(
                        f"the server did not serve in {timeout:.0f} s:\n{self.tail()}"
                    )
                time.sleep(0.1)

    def processes(self) -> list[int]:
        """The server's process and its descendants (a server may fork workers)."""
        return procfs.tree(self.process.pid)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now), VmHWM (its peak) and RssAnon (its own part), in KiB, summed
        over the server's processes."""
        return procfs.memory_kib(self.processes())

    def cpu_seconds(self) -> float:
        """CPU time the server's processes used so far, every thread, user and system."""
        return procfs.cpu_seconds(self.processes())

    def writer_busy_seconds(self) -> float:
        """On SQLite, the seconds the server's processes held the writer's turn so far (its
        metric, read from the metrics endpoint)."""
        url = f"http://{self.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == WRITER_BUSY
        )

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
