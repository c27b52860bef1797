"""Facts the service tests start from, beyond tests/store/factories.py: an order whose late
refunds get their commissions recovered, the buyer's application through its entry, money."""

from __future__ import annotations

from datetime import timedelta

from server.domain.model import (
    AccountKind,
    AccountRef,
    Application,
    CommissionLine,
    EntryState,
    Order,
    OrderKind,
    PayeeKind,
    Refund,
)
from server.service import Service
from tests.store.factories import Setup, a_normal_shop, an_owner, request_id

PAID = 10_000
# The order's commissions: influencer, group leader, affiliate, the platform's fee (TR).
COMMISSIONS = (
    CommissionLine(PayeeKind.INFLUENCER, "influencer-1", 1_000),
    CommissionLine(PayeeKind.GROUP_LEADER, "leader-1", 500),
    CommissionLine(PayeeKind.AFFILIATE, "affiliate-1", 300),
    CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 200),
)


def cash_of(payee_id: str) -> AccountRef:
    return AccountRef(AccountKind.CASH, payee_id)


def fund(service: Service, account: AccountRef, amount: int) -> int:
    """Money from outside into (amount > 0) or out of the account; its balance after."""
    return service.post_funds(request_id(), account, amount, "test").balance


def balance(service: Service, account: AccountRef) -> int:
    return service.balances([account], None)[account]


def a_clawback_setup(
    service: Service, shop_id: str = "shop-1", order_id: str = "order-1", version: int = 0
) -> Setup:
    """A shop with 10,000.00 in its wallet, its owner, and a late-refundable order of a
    designated category (paid 100.00, completed 30 days ago) carrying COMMISSIONS."""
    a_normal_shop(service, shop_id)
    owner_id = an_owner(service, shop_id)
    service.put_order(a_commissioned_order(service, shop_id, order_id, version=version))
    return Setup(shop_id, owner_id, order_id, "buyer-1")


def a_commissioned_order(
    service: Service, shop_id: str, order_id: str, *, version: int = 0, paid: int = PAID
) -> Order:
    completed = service.now() - timedelta(days=30)
    return Order(
        order_id=order_id,
        shop_id=shop_id,
        buyer_id="buyer-1",
        kind=OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id="home-appliances",
        paid_amount=paid,
        created_at=completed - timedelta(days=3),
        completed_at=completed,
        after_sales_ends_at=completed + timedelta(days=15),
        commission_lines=COMMISSIONS,
        version=version,
    )


def an_application(service: Service, setup: Setup, amount: int) -> Application:
    """The merchant opens the entry and the buyer files for `amount` within the window."""
    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")
    application = service.apply(setup.order_id, setup.buyer_id, amount, "broke after a month")
    assert service.get_entry(entry.entry_id).state is EntryState.USED
    return application


def a_late_refund(
    service: Service, application: Application, refund_id: str = "refund-1"
) -> Refund:
    now = service.now()
    return Refund(
        refund_id=refund_id,
        order_id=application.order_id,
        application_id=application.application_id,
        amount=application.amount,
        started_at=now,
        paid_at=now,
    )
