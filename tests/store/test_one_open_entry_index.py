"""The database itself keeps at most one OPEN entry per order: written below the service, so what
refuses the second one is the index, not a check in the code."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from server.domain.model import EntryState
from server.service.unit_of_work import EntryConflict
from tests.store.factories import an_eligible_order, an_eligible_setup, an_entry

# Any moment: list_entries reads stored states when no state filter is given.
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def insert(store, entry) -> None:
    with store.unit_of_work() as uow:
        uow.entries.insert_entry(entry)
        uow.commit()


def states_of(store, order_id: str) -> list[EntryState]:
    """The states stored for the order's entries (not as readers see them)."""
    with store.unit_of_work(read_only=True) as uow:
        return sorted(
            e.state
            for e in uow.entries.list_entries(
                shop_id=None, order_id=order_id, states=None, now=T0, after=None, limit=100
            )
        )


def test_a_second_open_entry_of_the_same_order_is_refused_by_the_database(store, service):
    setup = an_eligible_setup(service)
    insert(store, an_entry(setup, service))

    with pytest.raises(EntryConflict):
        insert(store, an_entry(setup, service))

    assert states_of(store, setup.order_id) == [EntryState.OPEN]


def test_the_index_refuses_even_when_the_open_entry_s_window_has_passed(store, service):
    setup = an_eligible_setup(service)
    insert(store, an_entry(setup, service, opened_ago=timedelta(days=10)))

    with pytest.raises(EntryConflict):
        insert(store, an_entry(setup, service))


def test_expired_and_used_entries_may_sit_next_to_the_open_one(store, service):
    setup = an_eligible_setup(service)
    insert(store, an_entry(setup, service, EntryState.EXPIRED, opened_ago=timedelta(days=9)))
    insert(store, an_entry(setup, service, EntryState.USED, opened_ago=timedelta(days=6)))
    insert(store, an_entry(setup, service, EntryState.EXPIRED, opened_ago=timedelta(days=3)))
    insert(store, an_entry(setup, service))

    assert states_of(store, setup.order_id) == sorted(
        [EntryState.EXPIRED, EntryState.USED, EntryState.EXPIRED, EntryState.OPEN]
    )


def test_open_entries_of_different_orders_do_not_conflict(store, service):
    setup = an_eligible_setup(service)
    an_eligible_order(service, setup.shop_id, "order-2")
    insert(store, an_entry(setup, service))

    insert(store, dataclasses.replace(an_entry(setup, service), order_id="order-2"))

    assert states_of(store, "order-2") == [EntryState.OPEN]


def test_once_the_open_entry_is_stored_expired_a_new_one_may_be_opened(store, service):
    setup = an_eligible_setup(service)
    insert(store, an_entry(setup, service, opened_ago=timedelta(days=4)))
    with store.unit_of_work() as uow:
        assert len(uow.entries.expire_entries(service.now(), order_id=setup.order_id)) == 1
        uow.commit()

    insert(store, an_entry(setup, service))

    assert states_of(store, setup.order_id) == sorted([EntryState.EXPIRED, EntryState.OPEN])


def test_a_conflict_inside_a_transaction_leaves_the_rest_of_it_usable(store, service):
    setup = an_eligible_setup(service)
    first = an_entry(setup, service)
    insert(store, first)

    with store.unit_of_work() as uow:
        with pytest.raises(EntryConflict):
            uow.entries.insert_entry(an_entry(setup, service))
        # The failed insert only rolled back to its savepoint: the transaction goes on.
        assert uow.entries.stored_open_entry(setup.order_id).entry_id == first.entry_id
        uow.commit()
