"""The window closes by itself: readers see it at once, the sweep persists it later, and every
open, use and expiry of an order stays in its history."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.errors import RulesRefused
from server.domain.model import Entry, EntryState, ReasonCode
from tests.store.factories import an_eligible_order, an_eligible_setup

US = timedelta(microseconds=1)


def stored(store, entry: Entry) -> EntryState:
    with store.unit_of_work(read_only=True) as uow:
        return uow.entries.entry(entry.entry_id).state


def history(service, order_id=None, shop_id=None, state=None) -> list[Entry]:
    page = service.list_entries(shop_id=shop_id, order_id=order_id, state=state, page_size=100)
    assert not page.next_page_token
    return page.items


def test_an_entry_opened_now_is_stored_open_for_the_policy_s_window(store, service, clock):
    setup = an_eligible_setup(service)

    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")

    assert entry.opened_at == clock.now()
    assert entry.expires_at == clock.now() + service.policy.entry_window
    assert stored(store, entry) is EntryState.OPEN
    with store.unit_of_work(read_only=True) as uow:
        assert uow.entries.entry(entry.entry_id) == entry


def test_readers_see_the_entry_expired_the_moment_its_window_ends_before_any_sweep(
    store, service, clock
):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    clock.set(entry.expires_at - US)
    assert service.get_entry(entry.entry_id).state is EntryState.OPEN

    clock.set(entry.expires_at)
    assert service.get_entry(entry.entry_id).state is EntryState.EXPIRED
    assert stored(store, entry) is EntryState.OPEN


def test_the_buyer_cannot_apply_once_the_window_has_ended_even_before_the_sweep(
    store, service, clock
):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.set(entry.expires_at)

    with pytest.raises(RulesRefused) as refused:
        service.apply(setup.order_id, setup.buyer_id, 100, "too late")

    assert refused.value.codes == (ReasonCode.ENTRY_NOT_OPEN,)
    assert stored(store, entry) is EntryState.OPEN


def test_the_sweep_persists_expired_entries_and_leaves_open_ones(store, service, clock):
    setup = an_eligible_setup(service)
    an_eligible_order(service, setup.shop_id, "order-2")
    old = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.advance(timedelta(hours=1))
    young = service.open_entry("order-2", setup.owner_id, "")
    clock.set(old.expires_at)

    assert service.expire_entries() == 1

    assert stored(store, old) is EntryState.EXPIRED
    assert stored(store, young) is EntryState.OPEN
    assert service.expire_entries() == 0


@pytest.mark.parametrize("swept", [False, True], ids=["before-the-sweep", "after-the-sweep"])
def test_the_entry_may_be_opened_again_after_it_expired_and_both_stay_in_the_history(
    store, service, clock, swept
):
    setup = an_eligible_setup(service)
    first = service.open_entry(setup.order_id, setup.owner_id, "first")
    clock.set(first.expires_at + timedelta(hours=1))
    if swept:
        service.expire_entries()

    second = service.open_entry(setup.order_id, setup.owner_id, "second")

    assert [(e.entry_id, e.state) for e in history(service, order_id=setup.order_id)] == [
        (second.entry_id, EntryState.OPEN),
        (first.entry_id, EntryState.EXPIRED),
    ]
    assert stored(store, first) is EntryState.EXPIRED


def test_an_open_entry_cannot_be_opened_again_until_it_expired(store, service, clock):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.set(entry.expires_at - US)

    with pytest.raises(RulesRefused) as refused:
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert refused.value.codes == (ReasonCode.ENTRY_ALREADY_OPEN,)
    assert refused.value.metadata["entry_id"] == entry.entry_id
    assert [e.entry_id for e in history(service, order_id=setup.order_id)] == [entry.entry_id]


def test_lists_filter_by_the_state_readers_see(store, service, clock):
    setup = an_eligible_setup(service)
    for order_id in ("order-2", "order-3"):
        an_eligible_order(service, setup.shop_id, order_id)
    lapsed = service.open_entry(setup.order_id, setup.owner_id, "")
    used = service.open_entry("order-3", setup.owner_id, "")
    service.apply("order-3", setup.buyer_id, 500, "broken")
    clock.advance(timedelta(hours=48))
    running = service.open_entry("order-2", setup.owner_id, "")
    clock.set(lapsed.expires_at)  # stored OPEN, but its window has ended

    def ids(state):
        return [e.entry_id for e in history(service, shop_id=setup.shop_id, state=state)]

    assert ids(EntryState.OPEN) == [running.entry_id]
    assert ids(EntryState.EXPIRED) == [lapsed.entry_id]
    assert ids(EntryState.USED) == [used.entry_id]
    assert [e.state for e in history(service, shop_id=setup.shop_id, state=EntryState.EXPIRED)] == [
        EntryState.EXPIRED
    ]
    assert stored(store, lapsed) is EntryState.OPEN


def opened_in_rounds(service, clock, setup, orders: int, rounds: int) -> list[Entry]:
    """Every order opened at the same moment, `rounds` times, each after the last expired: many
    entries share an opened_at, so pages must break ties by id."""
    order_ids = [an_eligible_order(service, setup.shop_id, f"order-{i}") for i in range(orders)]
    opened = []
    for _ in range(rounds):
        opened += [service.open_entry(o, setup.owner_id, "") for o in order_ids]
        clock.advance(service.policy.entry_window + timedelta(seconds=1))
    return opened


def all_pages(service, shop_id: str, state, size: int) -> tuple[list[list[Entry]], list[bool]]:
    """Every page, following next_page_token, and for each whether another page follows."""
    pages, flags, token = [], [], ""
    while True:
        page = service.list_entries(
            shop_id=shop_id, order_id=None, state=state, page_size=size, page_token=token
        )
        pages.append(page.items)
        flags.append(bool(page.next_page_token))
        if not page.next_page_token:
            return pages, flags
        token = page.next_page_token
        assert len(pages) < 50, "paging does not end"


def test_keyset_paging_returns_every_entry_exactly_once_newest_first(store, service, clock):
    setup = an_eligible_setup(service)
    opened = opened_in_rounds(service, clock, setup, orders=5, rounds=3)
    newest_first = sorted(opened, key=lambda e: (e.opened_at, e.entry_id), reverse=True)

    pages, more = all_pages(service, setup.shop_id, None, size=4)

    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert more == [True, True, True, False]
    assert [e.entry_id for p in pages for e in p] == [e.entry_id for e in newest_first]


def test_keyset_paging_with_a_state_filter_returns_each_matching_entry_once(store, service, clock):
    setup = an_eligible_setup(service)
    opened = opened_in_rounds(service, clock, setup, orders=4, rounds=3)

    pages, _ = all_pages(service, setup.shop_id, EntryState.EXPIRED, size=3)

    listed = [e.entry_id for p in pages for e in p]
    # The clock stands after the last round's window: every entry reads as EXPIRED by now.
    assert sorted(listed) == sorted(e.entry_id for e in opened)
    assert len(listed) == len(set(listed)) == 12


def test_a_page_size_equal_to_the_number_of_entries_says_no_more_follow(store, service, clock):
    setup = an_eligible_setup(service)
    opened = opened_in_rounds(service, clock, setup, orders=3, rounds=1)

    pages, more = all_pages(service, setup.shop_id, None, size=len(opened))

    assert [len(p) for p in pages] == [3]
    assert more == [False]
