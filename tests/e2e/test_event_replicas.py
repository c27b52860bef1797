"""Two server processes over one PostgreSQL, a consumer watching each: under a mixed load of about
a thousand mutations sent to both at once, every consumer sees every event exactly once in
position order, and the events replayed give the balances GetBalances gives. With a 2-second
window and both sweeping, each entry expires with one event."""

from __future__ import annotations

import collections
import random
import subprocess
import sys
import threading
import time
from concurrent import futures
from datetime import UTC

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aftersales.v1 import events_pb2
from aftersales.v1 import resources_pb2 as pb
from client import Client
from server.service.clock import SystemClock
from tests.e2e.seed import Seed
from tests.e2e.test_process import ROOT, _environment, _policy_file
from tests.pg import free_port

pytestmark = pytest.mark.postgres

CASES = 100  # about ten mutations each
PAID = 10_000


def start_server(database_url: str, *flags: str) -> tuple[subprocess.Popen, str]:
    address = f"127.0.0.1:{free_port()}"
    env = _environment()
    env["DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--address", address, "--drain-seconds", "0", *flags],
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
                raise RuntimeError("a server did not start")
            time.sleep(0.1)


@pytest.fixture
def two_servers(postgres_server, request):
    url = postgres_server.create_database(f"events_{request.node.name[:20].lower()}")
    flags = getattr(request, "param", ())
    started = []
    try:
        for _ in range(2):
            started.append(start_server(url, *flags))
        clients = [Client(address) for _, address in started]
        yield clients
        for client in clients:
            client.close()
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=15)


class Consumer(threading.Thread):
    """Watches from the start, keeping each event, until it has read through `until`."""

    def __init__(self, client: Client, **filters) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.filters = filters
        self.events: list[events_pb2.Event] = []
        self.read_through = 0
        self.until: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in self.client.watch_events(
                heartbeat_seconds=1, heartbeats=True, **self.filters
            ):
                if isinstance(item, events_pb2.Event):
                    self.events.append(item)
                    self.read_through = item.position
                else:
                    self.read_through = item.position
                if self.until is not None and self.read_through >= self.until:
                    return
        except BaseException as e:  # noqa: BLE001  # reported by the test
            self.error = e

    def finish(self, until: int) -> list[events_pb2.Event]:
        self.until = until
        self.join(60)
        assert not self.is_alive() and self.error is None, self.error
        return self.events


def every_event(client: Client) -> list[events_pb2.Event]:
    found, after = [], 0
    while True:
        page = client.list_events(after, page_size=500)
        found += page.events
        if not page.events:
            return found
        after = page.next_after_position


def a_late_refund(clients: list[Client], i: int) -> None:
    """One case, its calls spread over both servers: shop, staff, order (with an influencer who
    holds no cash yet), funds, open, apply, refund (the influencer's line stays owed), then money
    to the influencer, which pays the debt."""
    pick = random.Random(i)
    client = lambda: pick.choice(clients)  # noqa: E731
    seed = Seed(client(), SystemClock())
    shop = seed.shop(f"shop-{i}", wallet_balance=3 * PAID)
    seed.staff(f"owner-{i}", shop)
    order = seed.order(f"order-{i}", shop, paid=PAID)
    order.commission_lines.add(
        payee_kind=pb.PAYEE_KIND_INFLUENCER, payee_id=f"kol-{i % 7}", amount=1_000
    )
    order.commission_lines.add(payee_kind=pb.PAYEE_KIND_TECHNICAL_SERVICE_FEE, amount=500)
    client().put_order(order)
    entry = client().open_entry(order.order_id, f"owner-{i}")
    application = client().apply_after_sales(order.order_id, order.buyer_id, PAID)
    client().record_refund(
        f"refund-{i}",
        order.order_id,
        PAID,
        application_id=application.application_id,
        started_at=entry.opened_at.ToDatetime(UTC),
        paid_at=entry.opened_at.ToDatetime(UTC),
    )
    cash = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id=f"kol-{i % 7}")
    client().post_funds(cash, 700)
    if i % 10 == 0:
        client().put_shop(
            pb.Shop(shop_id=shop, name="closing", status=pb.SHOP_STATUS_SUSPENDED, version=0)
        )


def replayed(events: list[events_pb2.Event]) -> dict[tuple[int, str], int]:
    """Every account's balance, from the money the events say moved."""
    balances: collections.Counter = collections.Counter()

    def key(ref):
        return (ref.kind, ref.owner_id)

    for e in events:
        kind = e.WhichOneof("payload")
        if kind == "funds_posted":
            balances[key(e.funds_posted.account)] += e.funds_posted.amount
        elif kind == "refund_recorded":
            r = e.refund_recorded
            balances[(pb.ACCOUNT_KIND_ANXIN_WALLET, e.shop_id)] -= r.paid_from_wallet
            balances[(pb.ACCOUNT_KIND_DEPOSIT, e.shop_id)] -= r.paid_from_deposit
            for line in r.lines:
                balances[key(line.account)] -= line.recovered
                balances[(pb.ACCOUNT_KIND_ANXIN_WALLET, e.shop_id)] += line.recovered
        elif kind == "debt_recovered":
            d = e.debt_recovered
            balances[key(d.from_account)] -= d.amount
            balances[key(d.to_account)] += d.amount
    return dict(balances)


def test_consumers_of_both_servers_see_every_event_once_in_order_and_replay_the_balances(
    two_servers,
):
    a, b = two_servers
    consumers = [Consumer(a), Consumer(b)]
    for consumer in consumers:
        consumer.start()

    with futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: a_late_refund([a, b], i), range(CASES)))

    everything = every_event(a)
    assert len(everything) >= CASES * 6
    positions = [e.position for e in everything]
    assert positions == sorted(set(positions))
    for consumer in consumers:
        seen = consumer.finish(positions[-1])
        assert [e.position for e in seen] == positions
        assert seen == everything
    told = collections.Counter(e.WhichOneof("payload") for e in everything)
    assert told["entry_opened"] == told["entry_used"] == told["refund_recorded"] == CASES
    assert told["debt_recovered"] > 0 and told["shop_status_changed"] == CASES // 10

    balances = replayed(everything)
    held = {}
    for owner in {owner for _, owner in balances} - {""}:
        held |= b.get_balances(owner_id=owner)
    held |= b.get_balances([pb.AccountRef(kind=pb.ACCOUNT_KIND_PLATFORM_COMMISSION)])
    assert {k: v for k, v in balances.items() if v or k in held} == held


@pytest.fixture
def two_sweeping_servers(postgres_server, tmp_path):
    """Both servers sweep every 0.2 s, under a policy whose window is 2 seconds."""
    url = postgres_server.create_database("events_expiry")
    flags = ("--policy", str(_policy_file(tmp_path)), "--sweep-interval", "0.2")
    started = []
    try:
        for _ in range(2):
            started.append(start_server(url, *flags))
        clients = [Client(address) for _, address in started]
        yield clients
        for client in clients:
            client.close()
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=15)


def test_with_two_servers_sweeping_each_entry_expires_with_exactly_one_event(
    two_sweeping_servers,
):
    a, b = two_sweeping_servers
    seed = Seed(a, SystemClock())
    entries = []
    for i in range(20):
        case = seed.case(f"expiring-{i}")
        entries.append((a, b)[i % 2].open_entry(case.order_id, case.owner_id).entry_id)
    expired = Consumer(b, types=[events_pb2.EVENT_TYPE_ENTRY_EXPIRED])
    expired.start()

    deadline = time.monotonic() + 30
    while len(expired.events) < len(entries) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # a few more sweeps of both: none may tell an expiry again
    top = every_event(a)[-1].position
    told = [e.entry_expired.entry_id for e in expired.finish(top)]

    assert sorted(told) == sorted(entries)
    for client in (a, b):
        assert {e.state for e in client.iter_entries(shop_id="shop-expiring-0")} == {
            pb.ENTRY_STATE_EXPIRED
        }
