"""Upstream facts keep their newest version; money moves in and out, never overdrawing."""

from __future__ import annotations

import dataclasses

import pytest

from server.domain.errors import NotFound, RulesRefused
from server.domain.model import (
    EXTERNAL,
    AccountKind,
    AccountRef,
    ReasonCode,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
    TransferKind,
)
from server.service import Service, sync
from tests.service.scenarios import (
    a_clawback_setup,
    a_commissioned_order,
    a_late_refund,
    an_application,
    balance,
)
from tests.store.factories import (
    OWED,
    a_normal_shop,
    a_payee_owing,
    an_eligible_setup,
    request_id,
    wallet_of,
)


def stored_order(service: Service, order_id: str, owner_id: str):
    return service.check_eligibility(order_id, owner_id).facts.order


def test_an_order_with_an_older_version_changes_nothing(service):
    setup = a_clawback_setup(service, version=5)
    newer = a_commissioned_order(service, setup.shop_id, setup.order_id, version=5)
    older = dataclasses.replace(newer, paid_amount=20_000, version=4)

    answered = service.put_order(older)

    assert answered == newer
    assert stored_order(service, setup.order_id, setup.owner_id).paid_amount == newer.paid_amount


def test_an_order_with_the_same_or_a_newer_version_or_none_applies(service):
    setup = a_clawback_setup(service, version=5)
    order = a_commissioned_order(service, setup.shop_id, setup.order_id, version=5)

    # An unversioned put (0) applies and keeps the newest version seen (9).
    for version, paid, stored in [(5, 11_000, 5), (9, 12_000, 9), (0, 13_000, 9)]:
        answered = service.put_order(dataclasses.replace(order, paid_amount=paid, version=version))
        assert (answered.paid_amount, answered.version) == (paid, stored)


def test_an_older_shop_or_staff_record_changes_nothing(service):
    service.put_shop(Shop("shop-1", "New name", ShopStatus.NORMAL, None, version=3))
    service.put_staff(Staff("staff-1", "shop-1", StaffRole.OWNER, "Owner", version=3))

    shop = service.put_shop(Shop("shop-1", "Old name", ShopStatus.CLOSED, None, version=2))
    staff = service.put_staff(Staff("staff-1", "shop-1", StaffRole.CS_AGENT, "Agent", version=2))

    assert (shop.name, shop.status) == ("New name", ShopStatus.NORMAL)
    assert staff.role is StaffRole.OWNER


def test_staff_and_orders_of_an_unknown_shop_are_not_found(service):
    with pytest.raises(NotFound) as no_shop:
        service.put_staff(Staff("staff-1", "nope", StaffRole.OWNER, ""))

    assert (no_shop.value.resource_type, no_shop.value.name) == ("shop", "nope")
    assert not service.shop_exists("nope")


def test_a_new_order_version_keeps_the_refunds_recorded_here(service):
    setup = a_clawback_setup(service, version=1)
    service.record_refund(a_late_refund(service, an_application(service, setup, 4_000)))
    order = a_commissioned_order(service, setup.shop_id, setup.order_id, version=2)

    answered = service.put_order(order)

    assert answered.recorded_refunded_amount == 4_000
    assert answered.refundable_amount == 6_000


def test_once_refunds_were_recorded_the_money_facts_of_the_order_are_frozen(service):
    setup = a_clawback_setup(service, version=1)
    service.record_refund(a_late_refund(service, an_application(service, setup, 4_000)))
    order = a_commissioned_order(service, setup.shop_id, setup.order_id, version=2)

    with pytest.raises(RulesRefused) as refused:
        service.put_order(dataclasses.replace(order, paid_amount=20_000))

    assert refused.value.codes == (ReasonCode.ORDER_FACTS_FROZEN,)
    assert refused.value.metadata == {"order_id": setup.order_id}
    assert stored_order(service, setup.order_id, setup.owner_id).paid_amount == 10_000


def test_a_refused_withdrawal_moves_no_money(service):
    setup = an_eligible_setup(service)
    wallet = wallet_of(setup.shop_id)
    before = service.list_transfers(wallet, 10).items

    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), wallet, -1_000_001, "too much")

    assert refused.value.codes == (ReasonCode.INSUFFICIENT_FUNDS,)
    assert balance(service, wallet) == 1_000_000
    assert balance(service, EXTERNAL) == -1_000_000
    assert service.list_transfers(wallet, 10).items == before


def test_a_withdrawal_of_everything_empties_the_account(service):
    setup = an_eligible_setup(service)

    posted = service.post_funds(request_id(), wallet_of(setup.shop_id), -1_000_000, "payout")

    assert posted.balance == 0
    assert posted.transfer.kind is TransferKind.FUNDS_OUT
    assert posted.transfer.to_account == EXTERNAL


def test_funds_for_the_wallet_of_an_unknown_shop_are_not_found(service):
    with pytest.raises(NotFound):
        service.post_funds(request_id(), wallet_of("nope"), 1_000, "")

    assert balance(service, wallet_of("nope")) == 0


def test_transfers_page_newest_first_through_every_one(service):
    shop_id = a_normal_shop(service, wallet=0)
    wallet = wallet_of(shop_id)
    for amount in range(1, 6):
        service.post_funds(request_id(), wallet, amount, f"funds {amount}")

    seen, token = [], ""
    while True:
        page = service.list_transfers(wallet, 2, token)
        seen += [t.amount for t in page.items]
        token = page.next_page_token
        if not token:
            break

    assert seen == [5, 4, 3, 2, 1]
    assert balance(service, wallet) == 15
    deposit = AccountRef(AccountKind.DEPOSIT, shop_id)
    assert service.balances([], shop_id) == {wallet: 15, deposit: 0}


def test_a_shop_s_wallet_and_deposit_are_its_accounts_before_money_moves_in_them(service):
    untouched = a_normal_shop(service, "shop-untouched", wallet=0)
    funded = a_normal_shop(service, "shop-funded", wallet=0)
    service.post_funds(request_id(), wallet_of(funded), 40, "funds")

    assert list(service.balances([], untouched).items()) == [
        (wallet_of(untouched), 0),
        (AccountRef(AccountKind.DEPOSIT, untouched), 0),
    ]
    assert list(service.balances([], funded).items()) == [
        (wallet_of(funded), 40),
        (AccountRef(AccountKind.DEPOSIT, funded), 0),
    ]
    # A payee's cash account is known once money reaches it; an id nobody has owns nothing.
    assert service.balances([], "kol-never-paid") == {}
    cash = AccountRef(AccountKind.CASH, "kol-paid")
    service.post_funds(request_id(), cash, 5, "payout")
    assert service.balances([], "kol-paid") == {cash: 5}


def test_balances_of_accounts_and_an_owner_name_the_accounts_first_then_the_owner_s_rest(service):
    shop_id = a_normal_shop(service, "shop-owned", wallet=15)
    other = AccountRef(AccountKind.DEPOSIT, a_normal_shop(service, "shop-other", wallet=0))
    wallet, deposit = wallet_of(shop_id), AccountRef(AccountKind.DEPOSIT, shop_id)
    service.post_funds(request_id(), other, 7, "funds")

    assert list(service.balances([other, wallet], shop_id).items()) == [
        (other, 7),
        (wallet, 15),
        (deposit, 0),
    ]
    service.post_funds(request_id(), deposit, 3, "funds")
    # The owner's accounts not named follow, by kind.
    assert list(service.balances([other], shop_id).items()) == [
        (other, 7),
        (wallet, 15),
        (deposit, 3),
    ]


@pytest.fixture
def two_debts_a_call(monkeypatch):
    """PostFunds pays at most 2 debts a call, so that a few debts are past it."""
    monkeypatch.setattr(sync, "DEBTS_PER_TRANSACTION", 2)


def test_no_money_leaves_a_cash_account_while_its_debts_are_being_paid(
    service, store, two_debts_a_call
):
    a_payee_owing(service, store, "kol-1", 5)
    cash = AccountRef(AccountKind.CASH, "kol-1")
    posted = service.post_funds(request_id(), cash, 5 * OWED + 1_000, "payout")
    assert (posted.debts_pending, posted.balance) == (True, 3 * OWED + 1_000)

    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), cash, -(3 * OWED + 1_001), "withdrawal")
    # Every broken rule: the balance is short, and it is the debts' first.
    assert [v.code for v in refused.value.violations] == [
        ReasonCode.INSUFFICIENT_FUNDS,
        ReasonCode.DEBTS_BEING_RECOVERED,
    ]

    while service.settle_pending_debts(payees=10):
        pass
    assert service.balances([cash], None)[cash] == 1_000
    service.post_funds(request_id(), cash, -1_000, "withdrawal")
    assert service.balances([cash], None)[cash] == 0


def test_a_payee_whose_debts_fail_to_be_paid_does_not_hold_up_the_others(
    service, store, two_debts_a_call, monkeypatch
):
    for payee in ("kol-bad", "kol-good"):
        a_payee_owing(service, store, payee, 3, tag=payee)
        posted = service.post_funds(request_id(), AccountRef(AccountKind.CASH, payee), 300, "")
        assert posted.debts_pending
    settle = service._settle_debts

    def failing_for_one(uow, cash, *args):
        if cash.owner_id == "kol-bad":
            raise RuntimeError("a bug tied to one payee")
        return settle(uow, cash, *args)

    monkeypatch.setattr(service, "_settle_debts", failing_for_one)

    with pytest.raises(RuntimeError):
        service.settle_pending_debts(payees=1)  # kol-bad, first noted
    assert service.settle_pending_debts(payees=1) == 1  # kol-good goes first now
    good = AccountRef(AccountKind.CASH, "kol-good")
    assert service.balances([good], None)[good] == 0
