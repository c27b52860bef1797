"""The outbox: every change worth telling writes exactly its event, in its own transaction, on
SQLite and PostgreSQL; a change rolled back leaves no event, a refusal none either."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from server.domain.errors import RulesRefused
from server.domain.events import (
    DebtRecovered,
    EntryExpired,
    EntryOpened,
    EntryUsed,
    Event,
    EventType,
    FundsPosted,
    RefundRecorded,
    ShopStatusChanged,
)
from server.domain.model import (
    AccountKind,
    AccountRef,
    Actor,
    Refund,
    Shop,
    ShopStatus,
)
from tests.store.factories import a_late_refund_order, an_eligible_setup, request_id, wallet_of

BOSS = Actor("spiffe://platform/test", "staff:shop-1-owner")


def events_after(store, after: int = 0) -> list[Event]:
    with store.unit_of_work(read_only=True) as uow:
        page = uow.events.read(after=after, shop_id=None, types=(), limit=10_000)
    return page.events


def last_position(store) -> int:
    with store.unit_of_work(read_only=True) as uow:
        return uow.events.held()[1]


def test_each_change_writes_exactly_its_event_with_who_when_and_where(store, service, clock):
    setup = an_eligible_setup(service)
    a_late_refund_order(service, setup)
    start = last_position(store)

    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed", by=BOSS)
    (opened,) = events_after(store, start)
    assert opened.type is EventType.ENTRY_OPENED
    assert (opened.shop_id, opened.order_id, opened.actor) == ("shop-1", "order-1", BOSS)
    assert opened.policy_version == service.policy.version
    assert opened.occurred_at == clock.now()
    assert opened.payload == EntryOpened(
        entry.entry_id, entry.opened_at, entry.expires_at, setup.owner_id, "agreed"
    )

    clock.advance(timedelta(hours=1))
    buyer = Actor("spiffe://platform/buyer-app", "buyer:buyer-1")
    application = service.apply(setup.order_id, setup.buyer_id, 10_000, "broken", by=buyer)
    (used,) = events_after(store, opened.position)
    assert used.type is EventType.ENTRY_USED and used.actor == buyer
    assert used.payload == EntryUsed(
        entry.entry_id, application.application_id, "buyer-1", 10_000, clock.now()
    )

    refund = Refund(
        "refund-1", setup.order_id, application.application_id, 10_000, clock.now(), clock.now()
    )
    clawback = service.record_refund(refund)
    (recorded,) = events_after(store, used.position)
    assert recorded.type is EventType.REFUND_RECORDED
    assert recorded.policy_version == service.policy.version
    payload = recorded.payload
    assert isinstance(payload, RefundRecorded)
    assert (payload.refund_id, payload.clawback_id) == ("refund-1", clawback.clawback_id)
    assert (payload.amount, payload.paid_from_wallet, payload.state) == (10_000, 10_000, "PARTIAL")
    assert [(ln.payee_id, ln.due, ln.recovered, ln.outstanding) for ln in payload.lines] == [
        ("kol-1", 1_000, 0, 1_000),
        ("", 500, 500, 0),
    ]

    cash = AccountRef(AccountKind.CASH, "kol-1")
    posted = service.post_funds(request_id(), cash, 1_500, "payout")
    funds, debt = events_after(store, recorded.position)
    assert funds.payload == FundsPosted(
        posted.transfer.transfer_id, "CASH", "kol-1", 1_500, "payout", 500
    )
    assert funds.shop_id == ""
    assert debt.type is EventType.DEBT_RECOVERED
    assert (debt.shop_id, debt.order_id) == ("shop-1", "order-1")
    assert isinstance(debt.payload, DebtRecovered)
    assert debt.payload.clawback_id == clawback.clawback_id
    assert (debt.payload.from_account_owner_id, debt.payload.to_account_kind) == (
        "kol-1",
        "ANXIN_WALLET",
    )
    assert (debt.payload.to_account_owner_id, debt.payload.amount) == ("shop-1", 1_000)
    assert debt.payload.outstanding == 0

    with service.unit_of_work(read_only=True) as uow:
        shop = uow.facts.shop("shop-1")
    service.put_shop(dataclasses.replace(shop, status=ShopStatus.SUSPENDED))
    service.put_shop(dataclasses.replace(shop, status=ShopStatus.SUSPENDED, name="again"))
    (suspended,) = events_after(store, debt.position)
    assert suspended.payload == ShopStatusChanged("NORMAL", "SUSPENDED")
    assert [e.position for e in events_after(store, start)] == sorted(
        e.position for e in events_after(store, start)
    )


def test_an_expiry_is_told_once_by_the_sweep_or_by_the_opening_that_finds_it(store, service, clock):
    one = an_eligible_setup(service, "shop-1", "order-1")
    two = an_eligible_setup(service, "shop-2", "order-2")
    first = service.open_entry(one.order_id, one.owner_id, "")
    service.open_entry(two.order_id, two.owner_id, "")
    start = last_position(store)
    clock.set(first.expires_at)

    # Reopening order-1 stores its old entry EXPIRED, and says so, before the new one opens.
    service.open_entry(one.order_id, one.owner_id, "again")
    expired, reopened = events_after(store, start)
    assert expired.type is EventType.ENTRY_EXPIRED and expired.order_id == "order-1"
    assert expired.payload == EntryExpired(first.entry_id, first.opened_at, first.expires_at)
    assert reopened.type is EventType.ENTRY_OPENED

    assert service.expire_entries() == 1
    assert service.expire_entries() == 0
    (swept,) = events_after(store, reopened.position)
    assert (swept.type, swept.order_id, swept.actor) == (
        EventType.ENTRY_EXPIRED,
        "order-2",
        Actor(),
    )


def test_the_sweep_expires_in_bounded_batches_and_catches_up(store, service, clock):
    setups = [an_eligible_setup(service, f"shop-{i}", f"order-{i}") for i in range(5)]
    for setup in setups:
        service.open_entry(setup.order_id, setup.owner_id, "")
    start = last_position(store)
    clock.advance(timedelta(days=30))  # long down: every window passed meanwhile

    assert service.expire_entries(batch=2, batches=2) == 4
    assert service.expire_entries(batch=2, batches=2) == 1
    expired = events_after(store, start)
    assert sorted(e.order_id for e in expired) == [s.order_id for s in setups]


def test_a_change_rolled_back_leaves_no_event_and_a_refusal_writes_none(store, service):
    setup = an_eligible_setup(service)
    start = last_position(store)

    with pytest.raises(RuntimeError), service.unit_of_work() as uow:
        service.open_entry(setup.order_id, setup.owner_id, "")
        assert uow.events is not None
        raise RuntimeError("the caller's transaction fails after the change")
    assert events_after(store, start) == []
    with store.unit_of_work(read_only=True) as uow:
        assert uow.entries.stored_open_entry(setup.order_id) is None

    with pytest.raises(RulesRefused):
        service.apply(setup.order_id, setup.buyer_id, 1, "no entry open")
    with pytest.raises(RulesRefused):
        service.post_funds(request_id(), wallet_of("shop-1"), -(10**9), "more than it holds")
    assert events_after(store, start) == []


def test_a_shop_first_known_suspended_is_told_one_operating_normally_is_not(store, service):
    start = last_position(store)
    now = service.now()
    service.put_shop(Shop("shop-a", "A", ShopStatus.NORMAL, now))
    service.put_shop(Shop("shop-b", "B", ShopStatus.CLOSED, now))
    (closed,) = events_after(store, start)
    assert (closed.shop_id, closed.payload) == ("shop-b", ShopStatusChanged("", "CLOSED"))
