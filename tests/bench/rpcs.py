"""Every RPC of the four services, as a stream of requests over the benchmark's data set.

Reads pick orders, shops and accounts at random across the whole data set. Writes that change
an order each take orders of their own, prepared before the clock starts: OpenEntry an eligible
order with no entry open, ApplyAfterSales an order with an entry open, RecordRefund an order
whose buyer filed a late application (a 4-line clawback: influencer, group leader, affiliate,
the platform's fee, each recovered from a funded account).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    resources_pb2,
    sync_pb2,
    sync_pb2_grpc,
)
from tests.bench import dataset as ds

NO_OP = "no-op (health Check)"
# The no-op of the server that checks the people's tokens, which GetBuyerOrderEntry's ratio is to.
NO_OP_TOKENS = "no-op (tokens checked)"
PAGE = 50
# Orders one BatchCheckEligibility names: the most it may (a back office's page of orders).
BATCH = 500


@dataclasses.dataclass(frozen=True)
class Rpc:
    name: str
    # The method's stub on each of the load generator's connections.
    methods: tuple[Callable[..., Any], ...]
    # Requests for one measurement; `prepared(count)` prepares `count` orders first.
    requests: Callable[[int], Iterator[Any]]
    # Whether each call takes a prepared order of its own.
    prepared: bool = False


def _timestamp(us: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def _forever(make: Callable[[], Any]) -> Callable[[int], Iterator[Any]]:
    def requests(count: int) -> Iterator[Any]:
        while True:
            yield make()

    return requests


def _on(channels: Sequence[grpc.aio.Channel], stub: Any) -> Callable[[str], tuple[Any, ...]]:
    """The methods of `stub`, by name, on each channel."""
    stubs = [stub(channel) for channel in channels]
    return lambda name: tuple(getattr(s, name) for s in stubs)


def no_op(channels: Sequence[grpc.aio.Channel]) -> Rpc:
    request = health_pb2.HealthCheckRequest()
    return Rpc(NO_OP, _on(channels, health_pb2_grpc.HealthStub)("Check"), _forever(lambda: request))


def shop_orders(data: ds.Dataset, shop: int, count: int, start: int = 0) -> list[str]:
    """`count` order ids of the shop, from its `start`-th order on; its orders repeat when it has
    fewer (the first `distinct_orders` of them are distinct)."""
    have = distinct_orders(data, shop, count)
    return [ds.order_id(shop + ((start + k) % have) * ds.SHOPS) for k in range(count)]


def distinct_orders(data: ds.Dataset, shop: int, count: int) -> int:
    """How many distinct orders of the shop `shop_orders` names, at most `count`."""
    return min(count, len(range(shop, data.orders, ds.SHOPS)))


def with_metadata(methods: tuple[Callable[..., Any], ...]) -> tuple[Callable[..., Any], ...]:
    """Methods called with (request, metadata) pairs: a person's token goes with each call."""

    def calling(method: Callable[..., Any]) -> Callable[..., Any]:
        return lambda call, timeout: method(call[0], timeout=timeout, metadata=call[1])

    return tuple(calling(m) for m in methods)


def buyer_rpcs(
    channels: Sequence[grpc.aio.Channel],
    data: ds.Dataset,
    mint: Callable[[str], str],
    seed: int = 1,
) -> list[Rpc]:
    """The reads a buyer's token goes with, on a server that checks the people's tokens: the
    buyer's order page of a random order, by its buyer. Each of POOL buyers' tokens is minted
    before the clock and verified by the server once, as a buyer app's calls repeat them."""
    entries = _on(channels, entry_pb2_grpc.AfterSalesEntryStub)
    rng = random.Random(seed)
    pool = []
    for i in rng.sample(range(data.orders), min(BUYERS, data.orders)):
        metadata = (("authorization", f"Bearer {mint(ds.buyer_id(i))}"),)
        pool.append((entry_pb2.GetBuyerOrderEntryRequest(order_id=ds.order_id(i)), metadata))
    return [
        Rpc(
            "GetBuyerOrderEntry",
            with_metadata(entries("GetBuyerOrderEntry")),
            _forever(lambda: rng.choice(pool)),
        )
    ]


# Buyers whose order pages are read, each with a token of their own.
BUYERS = 1000


def rpcs(channels: Sequence[grpc.aio.Channel], data: ds.Dataset, seed: int = 1) -> list[Rpc]:
    """The RPCs in the order they are measured: reads, then writes."""
    sync = _on(channels, sync_pb2_grpc.SyncStub)
    entries = _on(channels, entry_pb2_grpc.AfterSalesEntryStub)
    clawbacks = _on(channels, clawback_pb2_grpc.ClawbackStub)
    events = _on(channels, events_pb2_grpc.EventsStub)
    rng = random.Random(seed)

    def order() -> int:
        return rng.randrange(data.orders)

    def shop() -> str:
        return ds.shop_id(rng.randrange(ds.SHOPS))

    def check_eligibility() -> entry_pb2.CheckEligibilityRequest:
        i = order()
        return entry_pb2.CheckEligibilityRequest(
            order_id=ds.order_id(i), operator_id=ds.owner_id(i % ds.SHOPS)
        )

    def batch_check_eligibility() -> entry_pb2.BatchCheckEligibilityRequest:
        s = rng.randrange(ds.SHOPS)
        return entry_pb2.BatchCheckEligibilityRequest(
            order_ids=shop_orders(data, s, BATCH, start=rng.randrange(data.orders)),
            operator_id=ds.owner_id(s),
        )

    def get_entry() -> entry_pb2.GetEntryRequest:
        return entry_pb2.GetEntryRequest(entry_id=f"bench-e-{ds.history_at_or_below(order())}")

    def get_clawback() -> clawback_pb2.GetClawbackRequest:
        return clawback_pb2.GetClawbackRequest(
            clawback_id=f"bench-c-{ds.history_at_or_below(order())}"
        )

    def wallet(owner: str) -> resources_pb2.AccountRef:
        return resources_pb2.AccountRef(
            kind=resources_pb2.ACCOUNT_KIND_ANXIN_WALLET, owner_id=owner
        )

    payees = ds.payees()
    sales_order = _order_template(data)
    serial = itertools.count()

    def put_shop() -> sync_pb2.PutShopRequest:
        return sync_pb2.PutShopRequest(
            shop=resources_pb2.Shop(
                shop_id=f"bench-new-shop-{uuid.uuid4().hex}",
                name="A new shop",
                status=resources_pb2.SHOP_STATUS_NORMAL,
                wallet_opened_at=_timestamp(data.now),
            )
        )

    def put_staff() -> sync_pb2.PutStaffRequest:
        return sync_pb2.PutStaffRequest(
            staff=resources_pb2.Staff(
                staff_id=f"bench-new-staff-{uuid.uuid4().hex}",
                shop_id=shop(),
                role=resources_pb2.STAFF_ROLE_CS_AGENT,
                name="A new agent",
            )
        )

    def put_order() -> sync_pb2.PutOrderRequest:
        new = resources_pb2.Order()
        new.CopyFrom(sales_order)
        n = next(serial)
        new.order_id = f"bench-new-order-{uuid.uuid4().hex}"
        new.shop_id = ds.shop_id(n % ds.SHOPS)
        new.buyer_id = f"bench-new-buyer-{n}"
        return sync_pb2.PutOrderRequest(order=new)

    def post_funds() -> sync_pb2.PostFundsRequest:
        return sync_pb2.PostFundsRequest(
            request_id=str(uuid.uuid4()),
            account=resources_pb2.AccountRef(
                kind=resources_pb2.ACCOUNT_KIND_CASH, owner_id=rng.choice(payees)
            ),
            amount=100,
            memo="commission",
        )

    def open_entry(count: int) -> Iterator[entry_pb2.OpenEntryRequest]:
        return iter(
            [
                entry_pb2.OpenEntryRequest(
                    order_id=ds.order_id(i),
                    operator_id=ds.owner_id(i % ds.SHOPS),
                    request_id=f"bench-open-{i}",
                    note="agreed with the buyer",
                )
                for i in data.take_fresh(count)
            ]
        )

    def apply_after_sales(count: int) -> Iterator[entry_pb2.ApplyAfterSalesRequest]:
        orders = data.take_fresh(count)
        data.open_entries(orders)
        return iter(
            [
                entry_pb2.ApplyAfterSalesRequest(
                    order_id=ds.order_id(i),
                    buyer_id=ds.buyer_id(i),
                    amount=ds.REFUND,
                    reason="stopped working",
                    request_id=f"bench-apply-{i}",
                )
                for i in orders
            ]
        )

    def record_refund(count: int) -> Iterator[clawback_pb2.RecordRefundRequest]:
        orders = data.take_fresh(count)
        applications = data.file_applications(orders)
        now = data.now_us()
        return iter(
            [
                clawback_pb2.RecordRefundRequest(
                    refund_id=f"bench-refund-{i}",
                    order_id=ds.order_id(i),
                    application_id=application,
                    amount=ds.REFUND,
                    started_at=_timestamp(now - 60_000_000),
                    paid_at=_timestamp(now),
                    request_id=f"bench-refund-{i}",
                )
                for i, application in zip(orders, applications, strict=True)
            ]
        )

    return [
        Rpc("CheckEligibility", entries("CheckEligibility"), _forever(check_eligibility)),
        Rpc(
            f"BatchCheckEligibility ({BATCH})",
            entries("BatchCheckEligibility"),
            _forever(batch_check_eligibility),
        ),
        Rpc("GetEntry", entries("GetEntry"), _forever(get_entry)),
        Rpc(
            f"ListEntries ({PAGE})",
            entries("ListEntries"),
            _forever(lambda: entry_pb2.ListEntriesRequest(shop_id=shop(), page_size=PAGE)),
        ),
        Rpc(
            "PreviewClawback",
            clawbacks("PreviewClawback"),
            _forever(
                lambda: clawback_pb2.PreviewClawbackRequest(
                    order_id=ds.order_id(order()), amount=ds.REFUND
                )
            ),
        ),
        Rpc("GetClawback", clawbacks("GetClawback"), _forever(get_clawback)),
        Rpc(
            f"ListClawbacks ({PAGE})",
            clawbacks("ListClawbacks"),
            _forever(lambda: clawback_pb2.ListClawbacksRequest(shop_id=shop(), page_size=PAGE)),
        ),
        Rpc(
            "GetBalances (a shop)",
            clawbacks("GetBalances"),
            _forever(lambda: clawback_pb2.GetBalancesRequest(owner_id=shop())),
        ),
        Rpc(
            f"ListTransfers ({PAGE})",
            clawbacks("ListTransfers"),
            _forever(
                lambda: clawback_pb2.ListTransfersRequest(account=wallet(shop()), page_size=PAGE)
            ),
        ),
        # A consumer catching up: the oldest page of the outbox (the history's events).
        Rpc(
            f"ListEvents ({PAGE})",
            events("ListEvents"),
            _forever(lambda: events_pb2.ListEventsRequest(after_position=0, page_size=PAGE)),
        ),
        Rpc("PutShop", sync("PutShop"), _forever(put_shop)),
        Rpc("PutStaff", sync("PutStaff"), _forever(put_staff)),
        Rpc("PutOrder", sync("PutOrder"), _forever(put_order)),
        Rpc("PostFunds", sync("PostFunds"), _forever(post_funds)),
        Rpc("OpenEntry", entries("OpenEntry"), open_entry, prepared=True),
        Rpc("ApplyAfterSales", entries("ApplyAfterSales"), apply_after_sales, prepared=True),
        Rpc("RecordRefund (4 lines)", clawbacks("RecordRefund"), record_refund, prepared=True),
    ]


def _order_template(data: ds.Dataset) -> resources_pb2.Order:
    """An order as the order system sends it: completed 30 days ago, four commission lines."""
    kinds = {
        "INFLUENCER": (resources_pb2.PAYEE_KIND_INFLUENCER, "bench-kol-1"),
        "GROUP_LEADER": (resources_pb2.PAYEE_KIND_GROUP_LEADER, "bench-leader-1"),
        "AFFILIATE": (resources_pb2.PAYEE_KIND_AFFILIATE, "bench-aff-1"),
        "TECHNICAL_SERVICE_FEE": (resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, ""),
    }
    return resources_pb2.Order(
        kind=resources_pb2.ORDER_KIND_ORDINARY,
        category_id="home-appliances",
        paid_amount=ds.PAID,
        created_at=_timestamp(data.now - 35 * ds.DAY_US),
        completed_at=_timestamp(data.now - 30 * ds.DAY_US),
        after_sales_ends_at=_timestamp(data.now - 23 * ds.DAY_US),
        commission_lines=[
            resources_pb2.CommissionLine(
                payee_kind=kinds[kind][0], payee_id=kinds[kind][1], amount=amount
            )
            for kind, amount, _ in ds.LINES
        ],
    )
