"""Two server processes over one PostgreSQL database, as replicas behind a load balancer: every
rule holds when callers hit both at once."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import time
from datetime import UTC

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aftersales.v1 import resources_pb2 as pb
from client import AfterSalesError, AlreadyExists, Client
from server import demo, settings
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, open_database
from tests.environment import server_environment
from tests.pg import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


def _start_replica(database_url: str) -> tuple[subprocess.Popen, str]:
    address = f"127.0.0.1:{free_port()}"
    env = server_environment(DATABASE_URL=database_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--address", address, "--drain-seconds", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return process, address
            except grpc.RpcError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("a replica did not start")
            time.sleep(0.1)


@pytest.fixture
def replicas(postgres_server):
    url = postgres_server.create_database("replicas")
    # The demo data, loaded once, as an upstream would have synced it.
    store = SqlStore(open_database(url))
    store.migrate()
    demo.load(Service(store, SystemClock(), settings.load_policy()))
    store.close()
    started = [_start_replica(url) for _ in range(2)]
    clients = [Client(address) for _, address in started]
    yield clients, url
    for client in clients:
        client.close()
    for process, _ in started:
        process.terminate()
        process.wait(timeout=15)


def _at_once(calls):
    """Runs the calls together; each one's result or AfterSalesError."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i):
        barrier.wait()
        try:
            results[i] = calls[i]()
        except AfterSalesError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_replicas_open_one_entry_and_record_one_refund_whoever_is_asked(replicas):
    (a, b), url = replicas
    opened = _at_once(
        [lambda c=c: c.open_entry("order-eligible", "staff-owner") for c in (a, b) * 4]
    )
    entries = [r for r in opened if isinstance(r, pb.Entry)]
    assert len(entries) == 1
    assert all(isinstance(r, AlreadyExists) for r in opened if r is not entries[0])
    assert len(list(a.iter_entries(order_id="order-eligible"))) == 1

    application = a.apply_after_sales("order-eligible", "buyer-eligible", 64_950)
    now = entries[0].opened_at.ToDatetime(UTC)
    recorded = _at_once(
        [
            lambda c=c, i=i: c.record_refund(
                "refund-replicas",
                "order-eligible",
                64_950,
                application_id=application.application_id,
                started_at=now,
                paid_at=now,
                request_id=f"replica-retry-{i}",
            )
            for i, c in enumerate((a, b) * 4)
        ]
    )
    assert all(isinstance(r, pb.RefundClawback) for r in recorded), recorded
    assert len({r.clawback_id for r in recorded}) == 1
    wallet = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-sunny")
    # Paid once, recovered once: 5,000.00 - 649.50 + 103.91, whichever replica is asked.
    for client in (a, b):
        assert client.get_balances([wallet])[(pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")] == (
            500_000 - 64_950 + 10_391
        )
    # And the ledger, read straight from the database, balances to the fen.
    store = SqlStore(open_database(url))
    try:
        with store.unit_of_work(read_only=True) as uow:
            total, accounts = uow.ledger.ledger_totals()
    finally:
        store.close()
    assert total == 0
    assert all(kept == derived for kept, derived in accounts.values())
