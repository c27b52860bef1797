"""Black box: `python -m server --processes 2`. Two processes serve one port: the calls of
separate connections land on both, and a scrape of the metrics adds both up, on PostgreSQL and on
a SQLite file (whose writers take turns across the processes: tests/store/test_turns.py).
SIGTERM drains both and exits 0; a worker that dies stops the server with exit 1; a worker whose
parent died stops by itself; no process is left behind. SQLite in memory refuses more than one
process."""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from aftersales.v1 import entry_pb2, entry_pb2_grpc
from client import Client
from client.client import new_request_id
from server.__main__ import parse_args, process_count
from server.service.clock import SystemClock
from tests.e2e.seed import Seed
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.e2e.test_startup import assert_refused, run_server
from tests.pg import free_port

CHECK_ELIGIBILITY = "/aftersales.v1.AfterSalesEntry/CheckEligibility"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Generous: a busy machine may take this long; a correct server takes a second or two.
DEADLINE_SECONDS = 60


@contextlib.contextmanager
def two_processes(folder: pathlib.Path, database_url: str, *flags: str) -> Iterator[ServerProcess]:
    """`python -m server --processes 2` with the demo data, once both workers serve; whatever
    is left of it when the test ends is killed."""
    address = f"127.0.0.1:{free_port()}"
    stderr = folder / "server.stderr"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", database_url,
        "--processes", "2",
        "--demo",
        "--demo-keys", str(folder / "demo"),
        "--sweep-interval", "3600",
        *flags,
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,  # its process group: the workers too
        )
    server = ServerProcess(process, address, stderr, folder / "demo")
    try:
        _wait_until_serving(server)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(worker_pids(server)) < 2:
            assert process.poll() is None, server.stderr.read_text()
            assert time.monotonic() < deadline, "the workers did not both serve"
            time.sleep(0.05)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """Each worker's pid, by index, as its "serving" line says."""
    return {r["worker"]: r["pid"] for r in server.log_records() if r["message"] == "serving"}


def messages(server: ServerProcess) -> list[str]:
    return [record["message"] for record in server.log_records()]


def running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting to be reaped does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def connection(address: str) -> grpc.Channel:
    """A channel with a TCP connection of its own (gRPC shares one between channels to the same
    address otherwise): the kernel hands each connection to one of the processes."""
    return grpc.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
    )


def health(address: str) -> int:
    with connection(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


class Checks:
    """CheckEligibility for the demo's owner, as `server`'s people call it."""

    def __init__(self, server: ServerProcess) -> None:
        self.metadata = (("authorization", f"Bearer {server.token('staff', 'staff-owner')}"),)
        self.request = entry_pb2.CheckEligibilityRequest(
            order_id="order-eligible", operator_id="staff-owner"
        )

    def call(self, channel: grpc.Channel) -> None:
        stub = entry_pb2_grpc.AfterSalesEntryStub(channel)
        stub.CheckEligibility(self.request, metadata=self.metadata, timeout=30)


def test_calls_of_separate_connections_land_on_both_processes_and_a_scrape_adds_them_up(
    database_url, tmp_path
):
    url = database_url
    metrics = f"127.0.0.1:{free_port()}"
    connections, calls_each = 16, 3
    with two_processes(tmp_path, url, "--metrics-address", metrics, "--drain-seconds", "0") as (
        server
    ):
        checks = Checks(server)
        with Client(server.address) as sync:
            seed = Seed(sync, SystemClock())  # type: ignore[arg-type]  # any clock with now()
            orders = [seed.order(f"order-spread-{i}", "shop-sunny") for i in range(connections)]
        owner = (("authorization", f"Bearer {server.token('staff', 'staff-owner')}"),)
        tiny = (("authorization", f"Bearer {server.token('staff', 'tiny-owner')}"),)
        for order in orders:
            with connection(server.address) as channel:
                for _ in range(calls_each):
                    checks.call(channel)
                # Each connection opens an entry, and is refused one.
                entries = entry_pb2_grpc.AfterSalesEntryStub(channel)
                opening = entry_pb2.OpenEntryRequest(
                    order_id=order.order_id, operator_id="staff-owner", request_id=new_request_id()
                )
                entries.OpenEntry(opening, metadata=owner, timeout=30)
                refused = entry_pb2.OpenEntryRequest(
                    order_id="order-tiny", operator_id="tiny-owner", request_id=new_request_id()
                )
                with pytest.raises(grpc.RpcError) as refusal:
                    entries.OpenEntry(refused, metadata=tiny, timeout=30)
                assert refusal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as answer:
            scrape = answer.read().decode()
        pids = worker_pids(server)
        assert server.terminate(timeout=DEADLINE_SECONDS) == 0

    calls = connections * calls_each
    served_by = collections.Counter(
        r["pid"] for r in server.log_records() if r.get("method") == CHECK_ELIGIBILITY
    )
    assert set(served_by) == set(pids.values())  # each process served some
    assert served_by.total() == calls
    samples = {
        (
            sample.name,
            sample.labels.get("grpc_method"),
            sample.labels.get("grpc_code"),
        ): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }
    assert samples["grpc_server_handled_total", "CheckEligibility", "OK"] == calls
    assert samples["grpc_server_handling_seconds_count", "CheckEligibility", None] == calls
    opened = collections.Counter(
        r["pid"] for r in server.log_records() if r.get("method", "").endswith("/OpenEntry")
    )
    assert set(opened) == set(pids.values())  # each process opened some, and refused some
    assert samples["grpc_server_handled_total", "OpenEntry", "OK"] == connections
    assert samples["grpc_server_handled_total", "OpenEntry", "FAILED_PRECONDITION"] == connections
    assert samples["aftersales_entries_opened_total", None, None] == connections


class Load:
    """Threads calling CheckEligibility in a loop, each on a connection of its own, each call
    counted; no retries, so a call that fails shows."""

    def __init__(self, server: ServerProcess, threads: int = 8) -> None:
        self.address = server.address
        self.checks = Checks(server)
        self.succeeded = [0] * threads
        self.failed: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int) -> None:
        with connection(self.address) as channel:
            while not self.stopping.is_set():
                try:
                    self.checks.call(channel)
                    self.succeeded[i] += 1
                except grpc.RpcError as e:
                    self.failed.append(f"{e.code().name}: {e.details()}")

    def wait_for_each(self, calls: int) -> None:
        """Until each thread has succeeded `calls` more times than now."""
        goal = [n + calls for n in self.succeeded]
        deadline = time.monotonic() + DEADLINE_SECONDS
        while any(n < g for n, g in zip(self.succeeded, goal, strict=True)) and not self.failed:
            assert time.monotonic() < deadline, "the calls do not progress"
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=DEADLINE_SECONDS)


@pytest.mark.postgres
def test_sigterm_under_load_drains_both_processes_then_exits_0_leaving_none(
    postgres_server, tmp_path
):
    url = postgres_server.create_database("processes_drain")
    with two_processes(tmp_path, url, "--drain-seconds", "60") as server:
        pids = worker_pids(server)
        load = Load(server)
        try:
            load.wait_for_each(1)
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + DEADLINE_SECONDS
            while messages(server).count(
                "draining: health is NOT_SERVING, calls are still served; a second signal "
                "stops sooner"
            ) < len(pids):
                assert time.monotonic() < deadline, "the workers did not both drain"
                time.sleep(0.05)
            during_drain = [health(server.address) for _ in range(8)]  # new connections
            load.wait_for_each(3)  # during the drain, every thread's calls still succeed
        finally:
            load.stop()
        # A second signal, forwarded too, ends the 60-second drain now.
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)

    assert load.failed == []
    assert during_drain == [NOT_SERVING] * 8
    assert exit_code == 0
    assert not [pid for pid in pids.values() if running(pid)]
    said = messages(server)
    assert said.count("the drain ends early") == len(pids)
    assert said.count("a worker stopped") == len(pids)
    assert said[-1] == "stopped"


@pytest.mark.postgres
def test_a_worker_killed_stops_the_other_and_the_server_exits_1(postgres_server, tmp_path):
    url = postgres_server.create_database("processes_killed")
    with two_processes(tmp_path, url, "--drain-seconds", "0") as server:
        pids = worker_pids(server)
        os.kill(pids[1], signal.SIGKILL)
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)

    assert exit_code == 1
    assert not [pid for pid in pids.values() if running(pid)]
    records = server.log_records()
    [death] = [r for r in records if r["levelname"] == "ERROR"]
    assert death["message"] == "a worker was killed by SIGKILL unasked: stopping the others"
    assert (death["worker"], death["worker_pid"]) == (1, pids[1])
    assert [r.get("worker") for r in records if r["message"] == "stopped"] == [0, None]


@pytest.mark.postgres
def test_workers_whose_parent_is_killed_stop_by_themselves(postgres_server, tmp_path):
    url = postgres_server.create_database("processes_orphans")
    with two_processes(tmp_path, url, "--drain-seconds", "0") as server:
        pids = worker_pids(server)
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while [pid for pid in pids.values() if running(pid)]:
            assert time.monotonic() < deadline, "a worker outlived its parent"
            time.sleep(0.05)

    said = messages(server)
    assert said.count("the parent process is gone: stopping") == len(pids)
    assert said.count("stopped") == len(pids)


@pytest.mark.postgres
def test_a_port_in_use_exits_1_with_one_line_before_the_database_is_touched(postgres_server):
    url = postgres_server.create_database("processes_port_in_use")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refusal = run_server(
            "--database", url, "--address", f"127.0.0.1:{port}", "--processes", "2"
        )

    assert_refused(refusal, 1, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    with psycopg.connect(url) as database:
        tables = database.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert tables == []


@pytest.mark.parametrize(
    "how", [["--processes", "2"], {"AFTERSALES_PROCESSES": "2"}], ids=["flag", "environment"]
)
def test_more_than_one_process_on_sqlite_in_memory_exits_2_with_one_line(how):
    database = ["--database", "sqlite:///:memory:", "--address", "127.0.0.1:0"]
    if isinstance(how, dict):
        refusal = run_server(*database, env=how)
    else:
        refusal = run_server(*database, *how)

    assert_refused(
        refusal,
        2,
        "--processes > 1 needs a database file or PostgreSQL: "
        "a SQLite database in memory is one process's own",
    )


def test_the_default_is_each_core_but_one_process_for_sqlite_in_memory(monkeypatch):
    monkeypatch.delenv("AFTERSALES_PROCESSES", raising=False)
    postgresql = ["--database", "postgresql://db/aftersales"]
    cores = len(os.sched_getaffinity(0))

    assert process_count(parse_args(postgresql)) == cores
    assert process_count(parse_args(["--database", "sqlite:///var/aftersales.db"])) == cores
    assert process_count(parse_args(["--database", "sqlite:///:memory:"])) == 1
    assert process_count(parse_args([*postgresql, "--processes", "3"])) == 3
    assert process_count(parse_args(["--database", "sqlite:///x.db", "--processes", "3"])) == 3
    with pytest.raises(SystemExit) as exited:
        parse_args(["--processes", "0"])
    assert exited.value.code == 2
