"""A payee who owes a thousand shops is paid, and every debt recovered, in one PostFunds, in a
bounded number of statements; and balances of hundreds of accounts are read at once (statements
name accounts in bounded batches)."""

from __future__ import annotations

from datetime import timedelta

from server.domain.model import (
    AccountKind,
    AccountRef,
    ClawbackLine,
    ClawbackState,
    CommissionLine,
    Order,
    OrderKind,
    PayeeKind,
    Refund,
    RefundClawback,
    Shop,
    ShopStatus,
)
from server.store.schema import BATCH
from tests.store.factories import counted_statements, request_id

SHOPS = 2 * BATCH  # past one batch: the statements split
# PostFunds paying SHOPS debts: a dozen statements, and a handful more per BATCH debts (their
# events too, on SQLite; one statement on PostgreSQL).
STATEMENTS_MAX = 13 + 9 * (SHOPS // BATCH)
OWED = 100  # fen per shop


def a_payee_owing(service, store, payee: str, shops: int) -> list[str]:
    """`shops` shops, each owed OWED by `payee` on a clawback line nothing was recovered of."""
    now = service.now()
    shop_ids = [f"shop-{i:04d}" for i in range(shops)]
    with store.unit_of_work() as uow:
        for i, shop_id in enumerate(shop_ids):
            uow.facts.put_shop(Shop(shop_id, shop_id, ShopStatus.NORMAL, now - timedelta(days=99)))
            order = Order(
                order_id=f"order-{i:04d}",
                shop_id=shop_id,
                buyer_id="buyer",
                kind=OrderKind.ORDINARY,
                marketing_campaign=False,
                category_id="furniture",
                paid_amount=10_000,
                created_at=now - timedelta(days=40),
                completed_at=now - timedelta(days=30),
                after_sales_ends_at=now - timedelta(days=23),
                commission_lines=(CommissionLine(PayeeKind.INFLUENCER, payee, 1_000),),
            )
            uow.facts.put_order(order)
            uow.clawbacks.record_refund(
                RefundClawback(
                    clawback_id=f"clawback-{i:04d}",
                    refund=Refund(f"refund-{i:04d}", order.order_id, "", 1_000, now, now),
                    shop_id=shop_id,
                    reasons=(),
                    lines=(ClawbackLine(0, PayeeKind.INFLUENCER, payee, 1_000, OWED, 0),),
                    refunded_before=0,
                    refunded_after=1_000,
                    policy_version="test",
                    created_at=now + timedelta(microseconds=i),
                )
            )
        uow.commit()
    return shop_ids


def test_a_payee_owing_a_thousand_shops_pays_them_all_with_one_posting(service, store):
    shop_ids = a_payee_owing(service, store, "kol-big", SHOPS)
    cash = AccountRef(AccountKind.CASH, "kol-big")

    with counted_statements(store) as statements:
        posted = service.post_funds(request_id(), cash, SHOPS * OWED + 7, "commission payout")

    assert posted.balance == 7
    wallets = [AccountRef(AccountKind.ANXIN_WALLET, s) for s in shop_ids]
    assert set(service.balances(wallets, None).values()) == {OWED}
    for i in (0, SHOPS - 1):
        clawback = service.get_clawback(clawback_id=f"clawback-{i:04d}")
        assert (clawback.recovered, clawback.state) == (OWED, ClawbackState.RECOVERED)
    assert len(statements) <= STATEMENTS_MAX, statements
    transfers = service.list_transfers(cash, page_size=1).items
    assert transfers[0].reference == f"clawbacks/clawback-{SHOPS - 1:04d}/lines/0"


def test_money_short_of_every_debt_pays_the_oldest_first_and_part_of_the_next(service, store):
    a_payee_owing(service, store, "kol-short", SHOPS)
    cash = AccountRef(AccountKind.CASH, "kol-short")

    posted = service.post_funds(request_id(), cash, (BATCH + 2) * OWED + OWED // 2, "")

    assert posted.balance == 0
    states = [
        service.get_clawback(clawback_id=f"clawback-{i:04d}")
        for i in (0, BATCH + 1, BATCH + 2, BATCH + 3)
    ]
    assert [(c.recovered, c.state) for c in states] == [
        (OWED, ClawbackState.RECOVERED),
        (OWED, ClawbackState.RECOVERED),
        (OWED // 2, ClawbackState.PARTIAL),
        (0, ClawbackState.OUTSTANDING),
    ]
    # The rest is recovered by the next money that arrives, from where this one stopped.
    service.post_funds(request_id(), cash, OWED // 2 + OWED, "")
    assert service.get_clawback(clawback_id=f"clawback-{BATCH + 2:04d}").recovered == OWED
    assert service.get_clawback(clawback_id=f"clawback-{BATCH + 3:04d}").recovered == OWED
    assert service.get_clawback(clawback_id=f"clawback-{BATCH + 4:04d}").recovered == 0


def test_balances_of_hundreds_of_accounts_are_read_at_once(service, store):
    shop_ids = a_payee_owing(service, store, "kol-big", SHOPS)
    service.post_funds(request_id(), AccountRef(AccountKind.CASH, "kol-big"), OWED * 3, "")

    wallets = [AccountRef(AccountKind.ANXIN_WALLET, s) for s in shop_ids]
    balances = service.balances(wallets, None)

    assert len(balances) == SHOPS
    assert sum(balances.values()) == OWED * 3  # the three oldest debts were paid
