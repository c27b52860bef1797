"""Upstream facts for the end-to-end tests, seeded through the client's Sync methods."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from aftersales.v1 import resources_pb2 as pb
from aftersales.v1 import sync_pb2
from client import AfterSalesError, Client
from server.service.clock import FakeClock

DAY = timedelta(days=1)
PAID = 100_000
# ErrorInfo.domain of every error the service sends: its name, as callers match it.
DOMAIN = "aftersales.livecommerce.io"


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def wallet(shop_id: str) -> pb.AccountRef:
    return pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id=shop_id)


def deposit(shop_id: str) -> pb.AccountRef:
    return pb.AccountRef(kind=pb.ACCOUNT_KIND_DEPOSIT, owner_id=shop_id)


def error_info(error: AfterSalesError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo among the error's details."""
    infos = [d for d in error.details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, f"expected one ErrorInfo in {error.details}"
    return infos[0]


@dataclasses.dataclass(frozen=True)
class Case:
    """A shop in normal operation, its main account, and an order of it that may be opened."""

    shop_id: str
    owner_id: str
    order_id: str
    buyer_id: str


@dataclasses.dataclass
class Seed:
    client: Client
    clock: FakeClock

    def shop(
        self,
        shop_id: str,
        *,
        status: int = pb.SHOP_STATUS_NORMAL,
        wallet_balance: int = 0,
        deposit_balance: int = 0,
    ) -> str:
        self.client.put_shop(
            pb.Shop(
                shop_id=shop_id,
                name=f"Shop {shop_id}",
                status=status,
                wallet_opened_at=ts(self.clock.now() - 400 * DAY),
            )
        )
        if wallet_balance:
            self.funds(wallet(shop_id), wallet_balance)
        if deposit_balance:
            self.funds(deposit(shop_id), deposit_balance)
        return shop_id

    def staff(self, staff_id: str, shop_id: str, role: int = pb.STAFF_ROLE_OWNER) -> str:
        self.client.put_staff(pb.Staff(staff_id=staff_id, shop_id=shop_id, role=role))
        return staff_id

    def order(
        self,
        order_id: str,
        shop_id: str,
        *,
        completed_days_ago: float | None = 30,
        period_days: float = 7,
        kind: int = pb.ORDER_KIND_ORDINARY,
        paid: int = PAID,
        prior_refunded: int = 0,
        marketing_campaign: bool = False,
    ) -> pb.Order:
        now = self.clock.now()
        order = pb.Order(
            order_id=order_id,
            shop_id=shop_id,
            buyer_id=f"buyer-of-{order_id}",
            kind=kind,
            marketing_campaign=marketing_campaign,
            category_id="home-appliances",
            paid_amount=paid,
            prior_refunded_amount=prior_refunded,
        )
        if completed_days_ago is None:
            order.created_at.CopyFrom(ts(now - 2 * DAY))
        else:
            completed = now - timedelta(days=completed_days_ago)
            order.created_at.CopyFrom(ts(completed - 5 * DAY))
            order.completed_at.CopyFrom(ts(completed))
            order.after_sales_ends_at.CopyFrom(ts(completed + timedelta(days=period_days)))
        return self.client.put_order(order)

    def funds(self, account: pb.AccountRef, amount: int) -> sync_pb2.PostFundsResponse:
        return self.client.post_funds(account, amount, memo="seed")

    def case(self, name: str, *, wallet_balance: int = 5 * PAID, **order) -> Case:
        """An eligible order of a fresh shop named after `name`."""
        shop_id = self.shop(f"shop-{name}", wallet_balance=wallet_balance)
        owner_id = self.staff(f"owner-{name}", shop_id)
        placed = self.order(f"order-{name}", shop_id, **order)
        return Case(shop_id, owner_id, placed.order_id, placed.buyer_id)
