"""A payee who owes hundreds of shops is paid, and every debt recovered, in one PostFunds; and
balances of hundreds of accounts are read at once (statements name accounts in bounded batches)."""

from __future__ import annotations

from datetime import timedelta

from server.domain.model import (
    AccountKind,
    AccountRef,
    ClawbackLine,
    CommissionLine,
    Order,
    OrderKind,
    PayeeKind,
    Refund,
    RefundClawback,
    Shop,
    ShopStatus,
)
from server.store.ledger import BATCH
from tests.store.factories import request_id

SHOPS = BATCH + 20  # past one batch: the statements split
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


def test_a_payee_owing_hundreds_of_shops_pays_them_all_with_one_posting(service, store):
    shop_ids = a_payee_owing(service, store, "kol-big", SHOPS)
    cash = AccountRef(AccountKind.CASH, "kol-big")

    posted = service.post_funds(request_id(), cash, SHOPS * OWED + 7, "commission payout")

    assert posted.balance == 7
    wallets = [AccountRef(AccountKind.ANXIN_WALLET, s) for s in shop_ids]
    assert set(service.balances(wallets, None).values()) == {OWED}
    recovered = {service.get_clawback(clawback_id=f"clawback-{i:04d}").recovered for i in (0, 519)}
    assert recovered == {OWED}


def test_balances_of_hundreds_of_accounts_are_read_at_once(service, store):
    shop_ids = a_payee_owing(service, store, "kol-big", SHOPS)
    service.post_funds(request_id(), AccountRef(AccountKind.CASH, "kol-big"), OWED * 3, "")

    wallets = [AccountRef(AccountKind.ANXIN_WALLET, s) for s in shop_ids]
    balances = service.balances(wallets, None)

    assert len(balances) == SHOPS
    assert sum(balances.values()) == OWED * 3  # the three oldest debts were paid
