"""A payee who owes a thousand shops is paid, and every debt recovered, in one PostFunds, in a
bounded number of statements; a payee who owes more is paid a thousand debts by PostFunds and the
rest by the sweeper; and balances of hundreds of accounts are read at once (statements name
accounts in bounded batches)."""

from __future__ import annotations

import pytest

from server.domain.errors import RulesRefused
from server.domain.events import EventType
from server.domain.model import (
    AccountKind,
    AccountRef,
    Actor,
    ClawbackState,
    ReasonCode,
)
from server.service import sync
from server.service.sync import DEBTS_PER_TRANSACTION
from server.store.schema import BATCH
from tests.service.scenarios import a_clawback_setup, a_late_refund, an_application
from tests.store.factories import OWED, a_payee_owing, counted_statements, request_id

SHOPS = 2 * BATCH  # past one batch: the statements split
# PostFunds paying SHOPS debts: a dozen statements, and a handful more per BATCH debts (their
# events too, on SQLite; one statement on PostgreSQL).
STATEMENTS_MAX = 13 + 9 * (SHOPS // BATCH)


def test_a_payee_owing_a_thousand_shops_pays_them_all_with_one_posting(service, store):
    shop_ids = a_payee_owing(service, store, "kol-big", SHOPS)
    cash = AccountRef(AccountKind.CASH, "kol-big")

    with counted_statements(store) as statements:
        posted = service.post_funds(request_id(), cash, SHOPS * OWED + 7, "commission payout")

    assert (posted.balance, posted.debts_pending) == (7, False)  # all paid, none pending
    assert SHOPS == DEBTS_PER_TRANSACTION
    wallets = [AccountRef(AccountKind.ANXIN_WALLET, s) for s in shop_ids]
    assert set(service.balances(wallets, None).values()) == {OWED}
    for i in (0, SHOPS - 1):
        clawback = service.get_clawback(clawback_id=f"clawback-{i:04d}")
        assert (clawback.recovered, clawback.state) == (OWED, ClawbackState.RECOVERED)
    assert len(statements) <= STATEMENTS_MAX, statements
    assert service.settle_pending_debts(payees=10) == 0
    transfers = service.list_transfers(cash, page_size=1).items
    assert transfers[0].reference == f"clawbacks/clawback-{SHOPS - 1:04d}/lines/0"


def test_debts_past_what_one_posting_pays_are_paid_on_by_the_sweeper(service, store):
    owed = DEBTS_PER_TRANSACTION + 30
    a_payee_owing(service, store, "kol-huge", owed)
    cash = AccountRef(AccountKind.CASH, "kol-huge")
    payroll = Actor("spiffe://platform/payroll", "")

    posted = service.post_funds(request_id(), cash, owed * OWED + 7, "payout", payroll)

    # The call paid the oldest DEBTS_PER_TRANSACTION debts and says the rest is pending.
    assert posted.debts_pending
    assert posted.balance == 30 * OWED + 7
    last_paid = service.get_clawback(clawback_id=f"clawback-{DEBTS_PER_TRANSACTION - 1:04d}")
    first_left = service.get_clawback(clawback_id=f"clawback-{DEBTS_PER_TRANSACTION:04d}")
    assert (last_paid.state, first_left.state) == (
        ClawbackState.RECOVERED,
        ClawbackState.OUTSTANDING,
    )

    # Until then no money leaves the account: it is the debts' first.
    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), cash, -7, "withdrawal")
    assert [v.code for v in refused.value.violations] == [ReasonCode.DEBTS_BEING_RECOVERED]

    # A sweep pays the rest, in the name of who posted the funds, and then has nothing left.
    assert service.settle_pending_debts(payees=10) == 1
    assert service.balances([cash], None)[cash] == 7
    for i in (DEBTS_PER_TRANSACTION, owed - 1):
        clawback = service.get_clawback(clawback_id=f"clawback-{i:04d}")
        assert (clawback.recovered, clawback.state) == (OWED, ClawbackState.RECOVERED)
    newest = service.list_transfers(cash, page_size=1).items[0]
    assert (newest.reference, newest.recorded_by) == (
        f"clawbacks/clawback-{owed - 1:04d}/lines/0",
        payroll,
    )
    assert service.settle_pending_debts(payees=10) == 0
    # Every debt paid is told once, by PostFunds or by the sweep, in the name of who paid.
    with store.unit_of_work(read_only=True) as uow:
        page = uow.events.read(
            after=0, shop_id=None, types=(EventType.DEBT_RECOVERED,), limit=10 * owed
        )
    assert sorted(e.payload.clawback_id for e in page.events) == [
        f"clawback-{i:04d}" for i in range(owed)
    ]
    assert {e.actor for e in page.events} == {payroll}
    # Now the payee's money may leave.
    service.post_funds(request_id(), cash, -7, "withdrawal")
    assert service.balances([cash], None)[cash] == 0


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


def test_a_new_clawback_waits_behind_a_payee_s_older_debts_the_sweeper_is_still_paying(
    service, store, monkeypatch
):
    """influencer-1 owes 5 shops; money reaching its cash pays 2 of them at once, and the
    sweeper the other 3. A late refund recorded meanwhile must not take that money first."""
    monkeypatch.setattr(sync, "DEBTS_PER_TRANSACTION", 2)
    a_payee_owing(service, store, "influencer-1", 5)
    cash = AccountRef(AccountKind.CASH, "influencer-1")
    posted = service.post_funds(request_id(), cash, 5 * OWED + 1_000, "payout")
    assert posted.debts_pending
    setup = a_clawback_setup(service)
    for payee in ("leader-1", "affiliate-1"):
        service.post_funds(request_id(), AccountRef(AccountKind.CASH, payee), 5_000, "payout")

    preview = service.preview_clawback(setup.order_id, 5_000, None)
    clawback = service.record_refund(a_late_refund(service, an_application(service, setup, 5_000)))

    influencer = [ln for ln in clawback.lines if ln.payee_id == "influencer-1"]
    assert [(ln.due, ln.recovered) for ln in influencer] == [(500, 0)]  # outstanding, in line
    assert [ln.recovered for ln in preview.lines if ln.payee_id == "influencer-1"] == [0]
    # The other payees owe nothing older: their lines are recovered at once.
    assert all(ln.recovered == ln.due for ln in clawback.lines if ln.payee_id != "influencer-1")
    while service.settle_pending_debts(payees=10):
        pass
    # Oldest first: the 5 older debts (500), then the new line (500), from the 1,500 left.
    assert service.balances([cash], None)[cash] == 5 * OWED + 1_000 - 5 * OWED - 500
    settled = service.get_clawback(clawback_id=clawback.clawback_id)
    assert [ln.recovered for ln in settled.lines if ln.payee_id == "influencer-1"] == [500]


def test_money_that_pays_a_payee_s_last_debts_lets_the_next_clawback_take_at_once(
    service, store, monkeypatch
):
    monkeypatch.setattr(sync, "DEBTS_PER_TRANSACTION", 2)
    a_payee_owing(service, store, "influencer-1", 3)
    cash = AccountRef(AccountKind.CASH, "influencer-1")
    assert service.post_funds(request_id(), cash, 2 * OWED + 1, "payout").debts_pending
    assert not service.post_funds(request_id(), cash, 10_000, "payout").debts_pending
    setup = a_clawback_setup(service)

    clawback = service.record_refund(a_late_refund(service, an_application(service, setup, 5_000)))

    # Nothing older is owed: no waiting for the sweeper's next pass.
    assert [(ln.due, ln.recovered) for ln in clawback.lines if ln.payee_id == "influencer-1"] == [
        (500, 500)
    ]
