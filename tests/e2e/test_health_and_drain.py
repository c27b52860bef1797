"""Black box, on `python -m server`: health follows the database (NOT_SERVING while PostgreSQL is
paused or the SQLite file is gone, SERVING again once it is back, answered even while every worker
waits on the database), and SIGTERM drains: NOT_SERVING at once while calls are still served, a
second signal ends the drain, calls in flight finish, exit 0."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    resources_pb2,
    sync_pb2,
    sync_pb2_grpc,
)
from tests.e2e.test_callers import error_info
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.pg import PostgresServer, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Generous: a busy machine may take this long; a correct server takes a few probe intervals.
DEADLINE_SECONDS = 60


@contextlib.contextmanager
def a_server(
    folder: pathlib.Path, database_url: str, *flags: str, environment: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """`python -m server` with the demo data on `database_url`; killed if a test leaves it."""
    address = f"127.0.0.1:{free_port()}"
    stderr = folder / "server.stderr"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", database_url,
        "--demo",
        "--demo-keys", str(folder / "demo"),
        "--sweep-interval", "3600",
        *flags,
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**_environment(), **(environment or {})},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    server = ServerProcess(process, address, stderr, folder / "demo")
    try:
        _wait_until_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def health_status(channel: grpc.Channel, service: str = "") -> int | None:
    """The status health reports; None when the Check itself fails (it must not)."""
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    except grpc.RpcError:
        return None
    return answer.status


def wait_for_health(channel: grpc.Channel, wanted: int) -> list[int | None]:
    """Every answer of health until it reports `wanted` (within the deadline)."""
    seen: list[int | None] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not seen or seen[-1] != wanted:
        assert time.monotonic() < deadline, f"health never said {wanted}: {seen[-5:]}"
        seen.append(health_status(channel))
        time.sleep(0.1)
    return seen


def messages(server: ServerProcess) -> list[str]:
    return [record.get("message", "") for record in server.log_records()]


def wait_for_said(server: ServerProcess, start: str) -> bool:
    """Whether the server logs a line starting with `start` within DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not any(m.startswith(start) for m in messages(server)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- Health follows the database ------------------------------------------------------------------


class Paused:
    """PostgreSQL's postmaster and every process it started, stopped with SIGSTOP (a hung
    database: connections are accepted by the kernel, nothing is answered) until resumed."""

    def __init__(self, database: PostgresServer) -> None:
        data = pathlib.Path(database.data)
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0])
        self.stopped: list[int] = []

    def _children(self) -> list[int]:
        found = []
        for entry in pathlib.Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.postmaster:
                        found.append(int(entry.name))
        return found

    def __enter__(self) -> Paused:
        # The postmaster first: once it is stopped it starts no process, so none escapes.
        try:
            os.kill(self.postmaster, signal.SIGSTOP)
            self.stopped.append(self.postmaster)
            for pid in self._children():
                with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in reversed(self.stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclasses.dataclass
class OnPostgres:
    """A server on a throwaway PostgreSQL of its own, a channel to it, and a GetBalances call
    (that answered once already)."""

    database: PostgresServer
    server: ServerProcess
    channel: grpc.Channel
    balances: Any
    request: clawback_pb2.GetBalancesRequest


@contextlib.contextmanager
def on_postgres(folder: pathlib.Path, name: str, *flags: str) -> Iterator[OnPostgres]:
    database = PostgresServer().start()
    try:
        url = database.create_database(name)
        with (
            a_server(folder, url, *flags) as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            balances = clawback_pb2_grpc.ClawbackStub(channel).GetBalances
            request = clawback_pb2.GetBalancesRequest(owner_id="shop-sunny")
            assert balances(request, timeout=10).balances
            yield OnPostgres(database, server, channel, balances, request)
    finally:
        database.stop()


@pytest.mark.postgres
def test_health_is_not_serving_while_postgresql_is_paused_and_serving_once_it_resumes(tmp_path):
    flags = ["--health-interval", "0.5", "--workers", "2", "--drain-seconds", "0"]
    with on_postgres(tmp_path, "paused", *flags, "--grace-seconds", "1") as on:
        with Paused(on.database):
            # Every worker (2) waits on the paused database, and more calls queue behind.
            stuck = [on.balances.future(on.request, timeout=120) for _ in range(4)]
            while_paused = wait_for_health(on.channel, NOT_SERVING)
            entry_service = health_status(on.channel, "aftersales.v1.AfterSalesEntry")
        after = wait_for_health(on.channel, SERVING)
        for call in stuck:
            with contextlib.suppress(grpc.RpcError):  # answered late, or UNAVAILABLE
                call.result()
        assert on.balances(on.request, timeout=10).balances

        # Stopped while calls wait on a paused database, it still exits (giving them up).
        with Paused(on.database):
            stuck = [on.balances.future(on.request, timeout=120) for _ in range(4)]
            wait_for_health(on.channel, NOT_SERVING)
            exit_code = on.server.terminate(timeout=DEADLINE_SECONDS)

    assert None not in while_paused  # health answered all along
    assert entry_service == NOT_SERVING
    assert None not in after
    said = messages(on.server)
    assert said.count("the database does not answer: NOT_SERVING") == 2
    assert said.count("the database answers again: SERVING") == 1
    assert said[-1] == "stopped"
    assert exit_code == 0


@pytest.mark.postgres
def test_calls_on_a_paused_postgresql_answer_unavailable_while_it_is_still_paused(tmp_path):
    """A hung database (paused: its kernel takes what is sent, nothing answers): once health
    finds it does not answer, the calls waiting on it are cut and the calls sent meanwhile fail
    at once, all UNAVAILABLE (retryable), while it is still paused, instead of waiting for as
    long as it lasts. Once it answers again, so do the calls."""
    flags = ["--health-interval", "0.5", "--workers", "2", "--drain-seconds", "0"]
    with on_postgres(tmp_path, "hung", *flags) as on:
        with Paused(on.database):
            # Every worker (2) waits on the paused database, and two more calls queue.
            stuck = [on.balances.future(on.request, timeout=DEADLINE_SECONDS) for _ in range(4)]
            wait_for_health(on.channel, NOT_SERVING)
            # Answered while the database is still paused (else this waits in vain).
            stuck_errors = [call.exception(timeout=DEADLINE_SECONDS) for call in stuck]
            with pytest.raises(grpc.RpcError) as sent_meanwhile:
                on.balances(on.request, timeout=DEADLINE_SECONDS)
        wait_for_health(on.channel, SERVING)
        after = on.balances(on.request, timeout=10)

    refused = [*stuck_errors, sent_meanwhile.value]
    assert [e.code() if e else None for e in refused] == [grpc.StatusCode.UNAVAILABLE] * 5
    assert {error_info(e).reason for e in refused} == {"DATABASE_UNAVAILABLE"}
    assert after.balances
    assert any(m.startswith("cut ") for m in messages(on.server))


@pytest.mark.postgres
def test_a_drain_begun_while_postgresql_hangs_serves_calls_once_it_answers(tmp_path):
    """SIGTERM while PostgreSQL is paused: the drain keeps probing it, so that once it answers
    again the calls sent during the drain are served, not refused for the rest of it."""
    flags = ["--health-interval", "0.5", "--drain-seconds", "30", "--grace-seconds", "1"]
    with on_postgres(tmp_path, "drain_hung", *flags) as on:
        with Paused(on.database):
            wait_for_health(on.channel, NOT_SERVING)
            with pytest.raises(grpc.RpcError) as while_hung:
                on.balances(on.request, timeout=DEADLINE_SECONDS)
            on.server.process.send_signal(signal.SIGTERM)
            assert wait_for_said(on.server, "draining")
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:  # the next probe finds it answering
            try:
                answered = on.balances(on.request, timeout=DEADLINE_SECONDS)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "refused for the rest of the drain"
                time.sleep(0.2)
        still_draining = health_status(on.channel)
        exit_code = on.server.terminate(timeout=DEADLINE_SECONDS)  # a second signal ends it

    assert while_hung.value.code() == grpc.StatusCode.UNAVAILABLE
    assert answered.balances
    assert still_draining == NOT_SERVING
    assert exit_code == 0


def test_health_is_not_serving_while_the_sqlite_file_is_gone_and_serving_once_it_is_back(
    tmp_path,
):
    path = tmp_path / "aftersales.db"
    moved = tmp_path / "elsewhere.db"
    with (
        a_server(
            tmp_path, f"sqlite:///{path}", "--health-interval", "0.2", "--drain-seconds", "0"
        ) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        path.rename(moved)  # as when the volume holding it goes away
        try:
            while_gone = wait_for_health(channel, NOT_SERVING)
            assert not path.exists()  # the probe does not make an empty database
        finally:
            moved.rename(path)
        after = wait_for_health(channel, SERVING)
        assert server.terminate() == 0

    assert None not in while_gone + after
    said = messages(server)
    assert said.count("the database does not answer: NOT_SERVING") == 1
    assert said.count("the database answers again: SERVING") == 1


# --- SIGTERM drains, then stops -------------------------------------------------------------------


class Load:
    """Threads calling CheckEligibility in a loop, each call counted; no retries, so a call that
    fails shows."""

    def __init__(self, server: ServerProcess, threads: int = 8) -> None:
        self.channel = grpc.insecure_channel(server.address, options=[("grpc.enable_retries", 0)])
        self.check = entry_pb2_grpc.AfterSalesEntryStub(self.channel).CheckEligibility
        self.metadata = (("authorization", f"Bearer {server.token('staff', 'staff-owner')}"),)
        self.request = entry_pb2.CheckEligibilityRequest(
            order_id="order-eligible", operator_id="staff-owner"
        )
        self.succeeded = [0] * threads
        self.failed: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int) -> None:
        while not self.stopping.is_set():
            try:
                self.check(self.request, metadata=self.metadata, timeout=30)
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
        self.channel.close()


def test_sigterm_under_load_says_not_serving_while_calls_still_succeed_then_exits_0(
    database_url, tmp_path
):
    with (
        a_server(tmp_path, database_url, "--drain-seconds", "60") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        load = Load(server)
        try:
            load.wait_for_each(1)
            server.process.send_signal(signal.SIGTERM)
            wait_for_health(channel, NOT_SERVING)
            load.wait_for_each(3)  # during the drain, every thread's calls still succeed
        finally:
            load.stop()
        # A second signal ends the 60-second drain now.
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)

    assert load.failed == []
    assert exit_code == 0
    said = messages(server)
    draining = said.index(
        "draining: health is NOT_SERVING, calls are still served; a second signal stops sooner"
    )
    assert said[draining:].index("the drain ends early") < said[draining:].index("stopped")


@dataclasses.dataclass
class WaitingOnALock:
    server: ServerProcess
    blocker: psycopg.Connection
    call: Any  # a future, its query waiting on the blocker's lock


def _balances(channel: grpc.Channel) -> Any:
    return clawback_pb2_grpc.ClawbackStub(channel).GetBalances.future(
        clawback_pb2.GetBalancesRequest(owner_id="shop-sunny"), timeout=DEADLINE_SECONDS
    )


@contextlib.contextmanager
def a_call_waiting_on_a_lock(
    postgres_server: PostgresServer,
    folder: pathlib.Path,
    name: str,
    grace_seconds: str,
    send: Callable[[grpc.Channel], Any] = _balances,
    environment: dict[str, str] | None = None,
) -> Iterator[WaitingOnALock]:
    # The call waits on a lock for as long as the test holds it, not the server's default.
    waits_long = "?options=-c%20lock_timeout%3D60s%20-c%20statement_timeout%3D60s"
    stop_flags = ("--drain-seconds", "0", "--grace-seconds", grace_seconds)
    url = postgres_server.create_database(name) + waits_long
    with (
        a_server(folder, url, *stop_flags, environment=environment) as server,
        grpc.insecure_channel(server.address) as channel,
        psycopg.connect(url) as blocker,
    ):
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
        call = send(channel)
        _wait_for_a_query_waiting_on_the_lock(blocker, url)
        yield WaitingOnALock(server, blocker, call)


@pytest.mark.postgres
def test_a_call_in_flight_when_the_server_stops_accepting_finishes_within_the_grace(
    postgres_server, tmp_path
):
    with a_call_waiting_on_a_lock(postgres_server, tmp_path, "in_flight", "30") as waiting:
        server = waiting.server
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while "stopping: new calls are refused, calls in flight may finish" not in messages(server):
            assert time.monotonic() < deadline, "the server did not stop accepting"
            time.sleep(0.05)
        assert server.process.poll() is None  # it waits for the call
        waiting.blocker.commit()  # the lock goes; the call goes on

        answer = waiting.call.result()
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)

    assert answer.balances
    assert exit_code == 0


@pytest.mark.postgres
def test_a_call_still_waiting_after_the_grace_is_given_up_and_logged_with_the_code_it_got(
    postgres_server, tmp_path
):
    def funds(channel: grpc.Channel) -> Any:
        wallet = resources_pb2.AccountRef(
            kind=resources_pb2.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-sunny"
        )
        return sync_pb2_grpc.SyncStub(channel).PostFunds.future(
            sync_pb2.PostFundsRequest(account=wallet, amount=100, request_id="abandoned-funds-1"),
            timeout=DEADLINE_SECONDS,
        )

    # Traced (to the console, which nobody reads here): its line names its trace.
    traced = {"OTEL_TRACES_EXPORTER": "console"}
    with a_call_waiting_on_a_lock(
        postgres_server, tmp_path, "abandoned", "1", send=funds, environment=traced
    ) as waiting:
        server = waiting.server
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)  # the lock still held
        given_up = waiting.call.exception(timeout=DEADLINE_SECONDS)

    assert exit_code == 0
    assert given_up is not None and given_up.code() is grpc.StatusCode.UNAVAILABLE
    [line] = [
        r
        for r in server.log_records()
        if r.get("message") == "rpc"
        and r.get("method", "").endswith("/PostFunds")
        and r.get("code") != "OK"
    ]
    assert line["code"] == "UNAVAILABLE"
    assert line["request_id"] == "abandoned-funds-1"  # for whoever checks whether it was done
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    said = messages(server)
    assert said.index("calls still waiting on the database after the grace are abandoned") > (
        said.index("stopping: new calls are refused, calls in flight may finish")
    )


@pytest.mark.postgres
def test_a_call_whose_caller_gave_up_while_it_ran_is_logged_with_the_code_the_caller_got(
    postgres_server, tmp_path
):
    def impatient(channel: grpc.Channel) -> Any:
        return clawback_pb2_grpc.ClawbackStub(channel).GetBalances.future(
            clawback_pb2.GetBalancesRequest(owner_id="shop-sunny"), timeout=1
        )

    with a_call_waiting_on_a_lock(
        postgres_server, tmp_path, "impatient", "30", send=impatient
    ) as waiting:
        gave_up = waiting.call.exception(timeout=DEADLINE_SECONDS)
        waiting.blocker.commit()  # the call goes on to its end, nobody waiting for it
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not (lines := balances_lines(waiting.server)):
            assert time.monotonic() < deadline, "the call's end was not logged"
            time.sleep(0.05)

    assert gave_up is not None and gave_up.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert [line["code"] for line in lines] == ["DEADLINE_EXCEEDED"]


@pytest.mark.postgres
def test_a_call_its_caller_cancelled_before_the_stop_is_logged_cancelled_when_abandoned(
    postgres_server, tmp_path
):
    with a_call_waiting_on_a_lock(postgres_server, tmp_path, "cancelled", "1") as waiting:
        assert waiting.call.cancel()
        # The cancel travels to the server as an HTTP/2 reset, which nothing there answers or
        # logs while the handler waits on the lock: given time to arrive before the stop.
        time.sleep(1)
        server = waiting.server
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=DEADLINE_SECONDS)  # the lock still held

    assert exit_code == 0
    # gRPC cancels every call left at the grace's end; this one's caller had gone before.
    assert [line["code"] for line in balances_lines(server)] == ["CANCELLED"]
    said = messages(server)
    assert "calls still waiting on the database after the grace are abandoned" in said


def balances_lines(server: ServerProcess) -> list[dict]:
    """The rpc lines of the GetBalances calls."""
    return [
        r
        for r in server.log_records()
        if r.get("message") == "rpc" and r.get("method", "").endswith("/GetBalances")
    ]


def _wait_for_a_query_waiting_on_the_lock(blocker: psycopg.Connection, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND pid <> %s",
                (blocker.info.backend_pid,),
            ).fetchone()
            if waiting and waiting[0]:
                return
            assert time.monotonic() < deadline, "the call never reached the database"
            time.sleep(0.05)


def test_open_health_watches_hold_no_rpc_worker(tmp_path):
    """Load balancers keep Watch open for as long as they balance: each must not take one of
    the server's RPC workers, or a few of them would leave none for the calls."""
    from server import settings
    from server.grpc.app import App
    from server.service import Service
    from server.service.clock import SystemClock
    from server.store import SqlStore, open_database

    store = SqlStore(open_database(f"sqlite:///{tmp_path / 'watch.db'}"))
    store.migrate()
    service = Service(store, SystemClock(), settings.load_policy())
    app = App(service, "127.0.0.1:0", workers=1, sweep_interval=None).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            watches = [
                health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS
                )
                for _ in range(3)
            ]
            assert [next(watch).status for watch in watches] == [SERVING] * 3
            entries = entry_pb2_grpc.AfterSalesEntryStub(channel)
            with pytest.raises(grpc.RpcError) as answered:
                entries.GetEntry(entry_pb2.GetEntryRequest(entry_id="nobody"), timeout=10)
            assert answered.value.code() == grpc.StatusCode.NOT_FOUND
            app.not_serving()
            assert [next(watch).status for watch in watches] == [NOT_SERVING] * 3
            for watch in watches:
                watch.cancel()
    finally:
        app.stop(grace=1)
