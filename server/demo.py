"""A small demo data set: shops, staff and orders that show each reason code and eligible orders.

Loaded through the service (so through the same rules and ledger as real traffic) on the first
start of `make run`. Times are relative to the moment it is loaded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from server.domain.model import (
    AccountKind,
    AccountRef,
    CommissionLine,
    Order,
    OrderKind,
    PayeeKind,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service import Service

DAY = timedelta(days=1)


def load(service: Service) -> bool:
    """Loads the demo data unless its first shop exists already; True if it loaded."""
    if service.shop_exists("shop-sunny"):
        return False
    now = service.now()
    shops = [
        Shop("shop-sunny", "Sunny Appliances", ShopStatus.NORMAL, now - 400 * DAY),
        Shop("shop-pine", "Pine Furniture", ShopStatus.SUSPENDED, now - 400 * DAY),
        Shop("shop-tiny", "Tiny Jewels", ShopStatus.NORMAL, now - 90 * DAY),
    ]
    staff = [
        Staff("staff-owner", "shop-sunny", StaffRole.OWNER, "Sunny main account"),
        Staff("staff-admin", "shop-sunny", StaffRole.ADMIN, "Sunny administrator"),
        Staff("staff-csadmin", "shop-sunny", StaffRole.CS_ADMIN, "Sunny CS administrator"),
        Staff("staff-agent", "shop-sunny", StaffRole.CS_AGENT, "Sunny CS agent"),
        Staff("staff-finance", "shop-sunny", StaffRole.FINANCE, "Sunny finance"),
        Staff("pine-owner", "shop-pine", StaffRole.OWNER, "Pine main account"),
        Staff("tiny-owner", "shop-tiny", StaffRole.OWNER, "Tiny main account"),
    ]
    commissions = (
        CommissionLine(PayeeKind.INFLUENCER, "kol-mia", 12_990),
        CommissionLine(PayeeKind.GROUP_LEADER, "leader-zhou", 2_598),
        CommissionLine(PayeeKind.AFFILIATE, "aff-lee", 1_299),
        CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 6_495),
    )

    def completed(
        order_id: str, shop_id: str, days_ago: int, *, period_days: int = 7, **kw: Any
    ) -> Order:
        done = now - days_ago * DAY
        defaults = dict(
            buyer_id="buyer-" + order_id.removeprefix("order-"),
            kind=OrderKind.ORDINARY,
            marketing_campaign=False,
            category_id="home-appliances",
            paid_amount=129_900,
            created_at=done - 5 * DAY,
            completed_at=done,
            after_sales_ends_at=done + period_days * DAY,
        )
        return Order(order_id=order_id, shop_id=shop_id, **{**defaults, **kw})

    orders = [
        # Eligible: an appliance whose fault showed after the regular period.
        completed("order-eligible", "shop-sunny", 30, commission_lines=commissions),
        # Eligible too: a cross-border order of a marketing campaign.
        completed(
            "order-campaign",
            "shop-sunny",
            60,
            kind=OrderKind.CROSS_BORDER,
            marketing_campaign=True,
            paid_amount=59_900,
            category_id="furniture",
        ),
        completed("order-old", "shop-sunny", 130),  # COMPLETION_WINDOW_EXCEEDED
        Order(  # ORDER_NOT_COMPLETED
            order_id="order-in-transit",
            shop_id="shop-sunny",
            buyer_id="buyer-in-transit",
            kind=OrderKind.ORDINARY,
            marketing_campaign=False,
            category_id="home-appliances",
            paid_amount=49_900,
            created_at=now - 2 * DAY,
            completed_at=None,
            after_sales_ends_at=None,
        ),
        completed("order-recent", "shop-sunny", 3),  # WITHIN_AFTER_SALES_PERIOD
        completed("order-presale", "shop-sunny", 20, kind=OrderKind.PRESALE),
        completed("order-refunded", "shop-sunny", 20, prior_refunded_amount=129_900),
        completed("order-pine", "shop-pine", 20),  # SHOP_NOT_OPERATING
        completed("order-tiny", "shop-tiny", 20, paid_amount=10_000),  # INSUFFICIENT_GUARANTEE
        # Several conditions at once: too old, a suspended shop and a presale order.
        completed("order-troubled", "shop-pine", 150, kind=OrderKind.PRESALE),
    ]
    funds = [
        (AccountRef(AccountKind.ANXIN_WALLET, "shop-sunny"), 500_000),
        (AccountRef(AccountKind.DEPOSIT, "shop-sunny"), 200_000),
        (AccountRef(AccountKind.ANXIN_WALLET, "shop-pine"), 300_000),
        (AccountRef(AccountKind.ANXIN_WALLET, "shop-tiny"), 5_000),
        (AccountRef(AccountKind.DEPOSIT, "shop-tiny"), 6_000),
        # The payees' earnings; the group leader has spent all of them.
        (AccountRef(AccountKind.CASH, "kol-mia"), 50_000),
        (AccountRef(AccountKind.CASH, "aff-lee"), 8_000),
    ]
    # One unit of work: the data set is there whole or not at all.
    with service.unit_of_work():
        for shop in shops:
            service.put_shop(shop)
        for member in staff:
            service.put_staff(member)
        for order in orders:
            service.put_order(order)
        for account, amount in funds:
            request_id = f"demo-{account.kind.value.lower()}-{account.owner_id}"
            service.post_funds(request_id, account, amount, "demo top-up")
    return True
