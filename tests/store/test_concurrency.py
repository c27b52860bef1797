"""Replicas racing on one order: threads of one process, each on its own connection, stand for
server replicas over one database."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta

import pytest

from server.domain.errors import RulesRefused
from server.domain.model import Application, Entry, EntryState, ReasonCode, Refund
from server.store.entries import SqlEntries
from server.store.schema import ApplicationRow
from tests.store.factories import (
    a_late_refund_order,
    a_normal_shop,
    an_eligible_order,
    an_eligible_setup,
    at_once,
    held_by_another_thread,
)

REPLICAS = 8


def all_decide_before_any_writes(store, monkeypatch, replicas: int) -> None:
    """On PostgreSQL, holds each replica after its reads, just before it writes the entry, until
    every replica has read: they all decide on the same facts and only the database can stop the
    extra entries. (SQLite's write transactions exclude each other from BEGIN on, so there the
    replicas cannot interleave and nothing needs holding.)"""
    if not store.is_postgres:
        return
    everyone_decided = threading.Barrier(replicas, timeout=30)
    insert_entry = SqlEntries.insert_entry

    def held_insert_entry(entries, entry):
        everyone_decided.wait()
        return insert_entry(entries, entry)

    # Every unit of work makes its own repositories: hold them all, by their class.
    monkeypatch.setattr(SqlEntries, "insert_entry", held_insert_entry)


def entries_of(service, order_id: str) -> list[Entry]:
    return service.list_entries(shop_id=None, order_id=order_id, state=None, page_size=100).items


def test_replicas_opening_the_same_order_at_once_create_exactly_one_entry(
    store, service, monkeypatch
):
    setup = an_eligible_setup(service)
    all_decide_before_any_writes(store, monkeypatch, REPLICAS)

    outcomes = at_once(
        store, REPLICAS, lambda i: service.open_entry(setup.order_id, setup.owner_id, f"try {i}")
    )

    opened = [o.value for o in outcomes if o.error is None]
    refused = [o.error for o in outcomes if o.error is not None]
    assert len(opened) == 1, [repr(e) for e in refused]
    assert all(isinstance(e, RulesRefused) for e in refused), [repr(e) for e in refused]
    assert [e.codes for e in refused] == [(ReasonCode.ENTRY_ALREADY_OPEN,)] * (REPLICAS - 1)
    assert {e.metadata.get("entry_id") for e in refused} == {opened[0].entry_id}
    assert [(e.entry_id, e.state) for e in entries_of(service, setup.order_id)] == [
        (opened[0].entry_id, EntryState.OPEN)
    ]


def test_replicas_applying_on_one_open_entry_at_once_file_exactly_one_application(store, service):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")

    outcomes = at_once(
        store,
        REPLICAS,
        lambda i: service.apply(setup.order_id, setup.buyer_id, 1_000 + i, "broke after a month"),
    )

    filed = [o.value for o in outcomes if o.error is None]
    refused = [o.error for o in outcomes if o.error is not None]
    assert len(filed) == 1, [repr(e) for e in refused]
    assert isinstance(filed[0], Application)
    assert all(isinstance(e, RulesRefused) for e in refused), [repr(e) for e in refused]
    assert [e.codes for e in refused] == [(ReasonCode.ENTRY_NOT_OPEN,)] * (REPLICAS - 1)

    used = service.get_entry(entry.entry_id)
    assert used.state is EntryState.USED
    assert used.application_id == filed[0].application_id
    with store.unit_of_work(read_only=True):
        assert [(a.id, a.entry_id, a.amount) for a in ApplicationRow.select()] == [
            (filed[0].application_id, entry.entry_id, filed[0].amount)
        ]


def test_replicas_opening_different_orders_at_once_all_succeed(store, service):
    setup = an_eligible_setup(service)

    orders = [an_eligible_order(service, setup.shop_id, f"order-{i}") for i in range(REPLICAS)]

    outcomes = at_once(store, REPLICAS, lambda i: service.open_entry(orders[i], setup.owner_id, ""))

    assert [o.error for o in outcomes] == [None] * REPLICAS
    assert sorted(o.value.order_id for o in outcomes) == sorted(orders)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_refund_that_waited_on_its_order_moved_to_another_shop_is_decided_on_the_moved_order(
    store, service, clock
):
    """A refund locks its order's row (PostgreSQL; SQLite's writers exclude each other from
    BEGIN on, so there it cannot meet a change half-way). When the order was being moved to
    another shop meanwhile, the refund waits for that change and is decided on the order as
    committed, with its new shop: never "order not found" for an order that exists."""
    setup = an_eligible_setup(service)
    a_late_refund_order(service, setup)
    a_normal_shop(service, "shop-2")
    service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")
    clock.advance(timedelta(hours=1))
    filed = service.apply(setup.order_id, setup.buyer_id, 3_000, "broken after a month")
    with store.unit_of_work(read_only=True) as uow:
        order = uow.facts.order(setup.order_id)
    moved = dataclasses.replace(order, shop_id="shop-2", version=order.version + 1)

    @contextlib.contextmanager
    def moving_the_order() -> Iterator[None]:
        with store.unit_of_work() as uow:
            uow.facts.put_order(moved)
            yield
            uow.commit()

    now = clock.now()
    refund = Refund("refund-1", setup.order_id, filed.application_id, 3_000, now, now)
    with futures.ThreadPoolExecutor(1) as pool:
        with held_by_another_thread(moving_the_order()):
            recorded = pool.submit(service.record_refund, refund)
            a_query_waits_on_a_lock(store)
        # The move committed: the refund goes on.
    clawback = recorded.result(timeout=30)

    assert (clawback.refund, clawback.shop_id) == (refund, "shop-2")
    with store.unit_of_work(read_only=True) as uow:
        assert uow.facts.order(setup.order_id).shop_id == "shop-2"


def a_query_waits_on_a_lock(store) -> None:
    """Returns once a query of another connection waits on a row lock (PostgreSQL)."""
    deadline = time.monotonic() + 30
    while True:
        with store.unit_of_work(read_only=True):
            waiting = store.database.execute_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0]
        if waiting:
            return
        assert time.monotonic() < deadline, "the refund never waited on the order's lock"
        time.sleep(0.02)
