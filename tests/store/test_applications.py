"""The application a late refund names is read back whole, with its entry and what it refunded."""

from __future__ import annotations

from datetime import timedelta

from server.domain.model import Refund
from tests.store.factories import an_eligible_setup


def test_the_application_is_read_back_as_filed_with_its_entry_and_refunds(store, service, clock):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")
    clock.advance(timedelta(hours=1))
    filed = service.apply(setup.order_id, setup.buyer_id, 3_000, "broken after a month")
    now = clock.now()
    service.record_refund(Refund("refund-1", setup.order_id, filed.application_id, 1_000, now, now))

    with store.unit_of_work(read_only=True) as uow:
        through = uow.entries.applied_through(filed.application_id)

    assert through.application.application_id == filed.application_id
    assert through.application.entry_id == entry.entry_id
    assert (through.application.order_id, through.application.buyer_id) == (
        setup.order_id,
        setup.buyer_id,
    )
    assert (through.application.amount, through.application.reason) == (
        3_000,
        "broken after a month",
    )
    assert through.application.filed_at == filed.filed_at
    assert through.entry_opened_at == entry.opened_at
    assert through.refunded == 1_000
