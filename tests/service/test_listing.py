"""Listing entries pages through every entry exactly once, newest first, with signed tokens."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from server.domain.errors import InvalidArgument, NotFound
from server.domain.model import Entry, EntryState
from server.service import Service
from tests.store.factories import an_eligible_order, an_eligible_setup


def open_many(service: Service, clock, count: int) -> list[Entry]:
    """`count` entries on as many orders, two of them at each moment (so ties are paged too)."""
    setup = an_eligible_setup(service)
    opened = []
    for i in range(count):
        order_id = an_eligible_order(service, setup.shop_id, f"order-{i:02d}")
        opened.append(service.open_entry(order_id, setup.owner_id, ""))
        if i % 2:
            clock.advance(timedelta(minutes=1))
    return opened


def walk(service: Service, page_size: int, **filters) -> list[Entry]:
    filters = {"shop_id": "shop-1", "order_id": None, "state": None} | filters
    seen: list[Entry] = []
    token = ""
    while True:
        page = service.list_entries(page_size=page_size, page_token=token, **filters)
        assert len(page.items) <= page_size
        seen += page.items
        token = page.next_page_token
        if not token:
            return seen


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 100])
def test_paging_walks_every_entry_exactly_once_newest_first(service, clock, page_size):
    opened = open_many(service, clock, 7)

    seen = walk(service, page_size)

    assert sorted(e.entry_id for e in seen) == sorted(e.entry_id for e in opened)
    positions = [(e.opened_at, e.entry_id) for e in seen]
    assert positions == sorted(positions, reverse=True)


def test_paging_with_a_state_filter_walks_only_entries_seen_in_that_state(service, clock):
    opened = open_many(service, clock, 6)
    clock.set(opened[2].expires_at)  # the first four have expired by time, the rest are open

    expired = walk(service, 1, state=EntryState.EXPIRED)
    still_open = walk(service, 1, state=EntryState.OPEN)

    assert {e.entry_id for e in expired} == {e.entry_id for e in opened[:4]}
    assert {e.state for e in expired} == {EntryState.EXPIRED}
    assert {e.entry_id for e in still_open} == {e.entry_id for e in opened[4:]}


def a_token(service: Service, clock) -> str:
    open_many(service, clock, 3)
    page = service.list_entries(shop_id="shop-1", order_id=None, state=None, page_size=1)
    assert page.next_page_token
    return page.next_page_token


def flip_one_byte(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-2] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("tamper", [flip_one_byte, lambda t: t[:-3], lambda t: "x" + t])
def test_a_tampered_page_token_is_invalid_argument_on_page_token(service, clock, tamper):
    token = a_token(service, clock)

    with pytest.raises(InvalidArgument) as invalid:
        service.list_entries(
            shop_id="shop-1", order_id=None, state=None, page_size=1, page_token=tamper(token)
        )

    assert [field for field, _ in invalid.value.violations] == ["page_token"]


def test_a_page_token_of_other_filters_is_invalid_argument(service, clock):
    token = a_token(service, clock)

    with pytest.raises(InvalidArgument) as invalid:
        service.list_entries(
            shop_id="shop-1", order_id=None, state=EntryState.OPEN, page_size=1, page_token=token
        )

    assert [field for field, _ in invalid.value.violations] == ["page_token"]


def test_listing_a_shop_or_an_order_that_does_not_exist_is_not_found(service):
    with pytest.raises(NotFound) as no_shop:
        service.list_entries(shop_id="nope", order_id=None, state=None, page_size=10)
    with pytest.raises(NotFound) as no_order:
        service.list_entries(shop_id=None, order_id="nope", state=None, page_size=10)

    assert (no_shop.value.resource_type, no_order.value.resource_type) == ("shop", "order")
