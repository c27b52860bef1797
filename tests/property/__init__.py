"""Property and concurrency tests of the commission clawback, through the service on both databases.

The builders and ledger checks below are shared by the modules of this package. Every builder
takes fresh ids, so that many examples can share one database without seeing each other.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent import futures
from datetime import timedelta

from server.domain.model import (
    AccountKind,
    AccountRef,
    CommissionLine,
    Order,
    OrderKind,
    Refund,
    RefundClawback,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service import Service
from server.store import SqlStore

_serial = itertools.count()

# The accounts that may never go below zero: a payee's cash and a merchant's Anxin wallet. The
# external account, the platform's commission account and a merchant's deposit may.
GUARDED = (AccountKind.CASH, AccountKind.ANXIN_WALLET)


def fresh(prefix: str) -> str:
    """An id no other example or test has used, even in a database shared between examples."""
    return f"{prefix}-{next(_serial)}-{uuid.uuid4().hex[:8]}"


def wallet_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.ANXIN_WALLET, shop_id)


def deposit_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.DEPOSIT, shop_id)


def cash_of(payee_id: str) -> AccountRef:
    return AccountRef(AccountKind.CASH, payee_id)


def post(service: Service, account: AccountRef, amount: int) -> None:
    """Money from outside into the account (amount > 0) or out of it (amount < 0); 0 is a no-op."""
    if amount:
        service.post_funds(fresh("funds"), account, amount, "test funds")


@dataclasses.dataclass(frozen=True)
class LateOrder:
    """A shop with its main account, and an order of it whose late after-sales entry is open and
    on which the buyer has filed an application: refunds of it are late refunds."""

    shop_id: str
    owner_id: str
    order_id: str
    buyer_id: str
    application_id: str
    paid: int
    commission_lines: tuple[CommissionLine, ...]

    def refund(self, amount: int, service: Service, refund_id: str | None = None) -> Refund:
        now = service.now()
        return Refund(
            refund_id=refund_id or fresh("refund"),
            order_id=self.order_id,
            application_id=self.application_id,
            amount=amount,
            started_at=now,
            paid_at=now,
        )


def a_late_order(
    service: Service,
    *,
    paid: int,
    commission_lines: Sequence[CommissionLine],
    wallet: int,
    deposit: int = 0,
    shop_id: str | None = None,
) -> LateOrder:
    """A designated-category order created after the shop opened its wallet, completed 10 days
    before the clock, its regular period over; the entry is opened and the buyer has applied.
    The shop is a new one unless `shop_id` names one made here before.

    The wallet or the deposit must cover `paid` for the entry to open."""
    now = service.now()
    order_id, buyer_id = fresh("order"), fresh("buyer")
    if shop_id is None:
        shop_id = fresh("shop")
        service.put_shop(Shop(shop_id, "A shop", ShopStatus.NORMAL, now - timedelta(days=365)))
        service.put_staff(Staff(f"{shop_id}-owner", shop_id, StaffRole.OWNER, "Main account"))
    owner_id = f"{shop_id}-owner"
    post(service, wallet_of(shop_id), wallet)
    post(service, deposit_of(shop_id), deposit)
    completed_at = now - timedelta(days=10)
    service.put_order(
        Order(
            order_id=order_id,
            shop_id=shop_id,
            buyer_id=buyer_id,
            kind=OrderKind.ORDINARY,
            marketing_campaign=False,
            category_id=sorted(service.policy.designated_categories)[0],
            paid_amount=paid,
            created_at=completed_at - timedelta(days=3),
            completed_at=completed_at,
            after_sales_ends_at=completed_at + timedelta(days=7),
            commission_lines=tuple(commission_lines),
        )
    )
    service.open_entry(order_id, owner_id, "agreed with the buyer in chat")
    application = service.apply(order_id, buyer_id, paid, "broke after a month")
    return LateOrder(
        shop_id,
        owner_id,
        order_id,
        buyer_id,
        application.application_id,
        paid,
        tuple(commission_lines),
    )


def balances(service: Service, *accounts: AccountRef) -> dict[AccountRef, int]:
    return service.balances(list(accounts), None)


def assert_ledger_is_sound(store: SqlStore) -> dict[AccountRef, int]:
    """All balances sum to zero, each maintained balance is what its transfers add up to, and no
    payee's cash and no merchant's wallet is below zero. Returns the balances."""
    with store.unit_of_work(read_only=True) as uow:
        total, accounts = uow.ledger.ledger_totals()
    assert total == 0
    drifted = {ref: pair for ref, pair in accounts.items() if pair[0] != pair[1]}
    assert drifted == {}, "maintained balance != balance derived from transfers"
    negative = {
        ref: kept for ref, (kept, _) in accounts.items() if ref.kind in GUARDED and kept < 0
    }
    assert negative == {}, "a guarded account went below zero"
    return {ref: kept for ref, (kept, _) in accounts.items()}


def assert_lines_are_consistent(clawback: RefundClawback) -> None:
    """Per line: recovered + outstanding == due, 0 <= recovered <= due <= commission."""
    for line in clawback.lines:
        assert line.recovered + line.outstanding == line.due
        assert 0 <= line.recovered <= line.due <= line.commission
    assert clawback.recovered == sum(line.recovered for line in clawback.lines)


@dataclasses.dataclass(frozen=True)
class Outcome:
    value: object = None
    error: BaseException | None = None


def at_once(store: SqlStore, works: Sequence[Callable[[], object]]) -> list[Outcome]:
    """Runs every work on its own thread, all released together as replicas would be; each thread
    has its own connection (peewee's are per thread) and closes its SQLite one after."""
    start = threading.Barrier(len(works))

    def one(work: Callable[[], object]) -> Outcome:
        try:
            start.wait(timeout=30)
            return Outcome(value=work())
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            return Outcome(error=error)
        finally:
            if not store.is_postgres:
                store.database.close()

    with futures.ThreadPoolExecutor(max_workers=len(works)) as pool:
        return list(pool.map(one, works))
