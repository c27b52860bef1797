"""`make bench`: throughput of the main RPCs next to a no-op call (health Check) on the same server.

Prints calls per second for each, with CLIENTS concurrent callers, on SQLite (and on PostgreSQL
with --postgres, using a throwaway server like the tests do). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client
from server import demo
from server.domain import policy
from server.grpc.app import App
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, open_database


def measure(name: str, call: Callable[[int], None], clients: int, seconds: float) -> float:
    counter = itertools.count()
    stop = time.monotonic() + seconds
    done = [0] * clients

    def worker(slot: int) -> None:
        while time.monotonic() < stop:
            call(next(counter))
            done[slot] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(done) / (time.monotonic() - start)
    return rate


def run(database_url: str, clients: int, seconds: float) -> None:
    store = SqlStore(open_database(database_url))
    store.migrate()
    service = Service(store, SystemClock(), policy.load())
    demo.load(service)
    app = App(service, "127.0.0.1:0", workers=8, sweep_interval=3600).start()
    address = f"127.0.0.1:{app.port}"
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    client = Client(address)
    try:
        benches: list[tuple[str, Callable[[int], None]]] = [
            ("no-op (health Check)", lambda i: health.Check(health_pb2.HealthCheckRequest())),
            (
                "CheckEligibility",
                lambda i: client.check_eligibility("order-eligible", "staff-owner"),
            ),
            ("GetBalances", lambda i: client.get_balances(owner_id="shop-sunny")),
            ("PreviewClawback", lambda i: client.preview_clawback("order-eligible", 1_000)),
            (
                "PostFunds",
                lambda i: client.post_funds(
                    _cash(f"bench-{i % 50}"), 100, request_id=str(uuid.uuid4())
                ),
            ),
        ]
        baseline = None
        print(f"{database_url.split('://')[0]}, {clients} concurrent callers, {seconds:.0f} s each")
        for name, call in benches:
            call(0)
            rate = measure(name, call, clients, seconds)
            baseline = baseline or rate
            print(f"  {name:<22} {rate:>8.0f} calls/s   {rate / baseline:6.1%} of no-op")
    finally:
        client.close()
        channel.close()
        app.stop(grace=1)


def _cash(owner: str):
    from aftersales.v1 import resources_pb2

    return resources_pb2.AccountRef(kind=resources_pb2.ACCOUNT_KIND_CASH, owner_id=owner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run(f"sqlite:///{folder}/bench.db", args.clients, args.seconds)
    if args.postgres:
        from tests.pg import PostgresServer

        server = PostgresServer().start()
        try:
            run(server.create_database("bench"), args.clients, args.seconds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
