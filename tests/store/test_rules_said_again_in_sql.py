"""Where SQL says a rule of server/domain/rules.py again, it says the same: the state filter of
entry listings (rules.entry_state) and the upsert that keeps the newest version of upstream facts
(rules.is_stale)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from server.domain import rules
from server.domain.model import EntryState, Shop, ShopStatus
from tests.store.factories import an_eligible_order, an_eligible_setup, an_entry

# Moments around the end of a window: the filter and the rule must agree to the microsecond.
OFFSETS = [timedelta(microseconds=m) for m in (-1, 0, 1)] + [
    timedelta(hours=-1),
    timedelta(hours=1),
]


def test_the_listing_s_state_filter_is_rules_entry_state_at_every_moment(store, service, clock):
    setup = an_eligible_setup(service)
    window = service.policy.entry_window
    entries = []
    with store.unit_of_work() as uow:
        for i, (offset, stored_state) in enumerate(
            itertools.product(OFFSETS, (EntryState.OPEN, EntryState.EXPIRED, EntryState.USED))
        ):
            order_id = an_eligible_order(service, setup.shop_id, f"order-at-{i}")
            entry = an_entry(setup, service, stored_state, opened_ago=window + offset)
            entry = type(entry)(**{**entry.__dict__, "order_id": order_id})
            uow.entries.insert_entry(entry)
            entries.append(entry)
        uow.commit()

    now = clock.now()
    for state in EntryState:
        with store.unit_of_work(read_only=True) as uow:
            listed = uow.entries.list_entries(
                shop_id=setup.shop_id,
                order_id=None,
                states=(state,),
                now=now,
                after=None,
                limit=len(entries) + 1,
            )
        expected = {e.entry_id for e in entries if rules.entry_state(e, now) is state}
        assert {e.entry_id for e in listed} == expected, state


@pytest.mark.parametrize(
    ("stored", "incoming"), list(itertools.product((0, 1, 5), (0, 1, 4, 5, 6)))
)
def test_the_upsert_keeps_what_rules_is_stale_says_it_keeps(store, stored, incoming):
    with store.unit_of_work() as uow:
        uow.facts.put_shop(Shop("shop-v", "stored", ShopStatus.NORMAL, None, stored))
        after = uow.facts.put_shop(Shop("shop-v", "incoming", ShopStatus.CLOSED, None, incoming))
        uow.commit()

    applied = after.name == "incoming"
    assert applied is not rules.is_stale(stored, incoming)
    # The newest version seen stays: an unversioned put (0) keeps the stored one.
    assert after.version == max(stored, incoming)
