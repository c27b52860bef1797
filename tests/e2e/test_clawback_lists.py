"""Listing clawbacks by shop, state and time, and transfers by account, page by page."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import InvalidArgument, NotFound
from server.grpc import common
from server.service.paging import PageTokens
from tests.e2e.seed import PAID, wallet


@pytest.fixture
def refunded(client, seed, clock):
    """A shop with five recorded refunds an hour apart: the odd ones late, the even ones not."""
    case = seed.case("lists")
    client.open_entry(case.order_id, case.owner_id)
    application = client.apply_after_sales(case.order_id, case.buyer_id, PAID // 2)
    clawbacks = []
    for i in range(5):
        clock.advance(timedelta(hours=1))
        clawbacks.append(
            client.record_refund(
                f"rf-list-{i}",
                case.order_id,
                1_000,
                application_id=application.application_id if i % 2 == 0 else "",
                started_at=clock.now(),
                paid_at=clock.now(),
            )
        )
    return case, clawbacks


def test_a_shops_clawbacks_come_newest_first_across_pages(client, refunded):
    case, clawbacks = refunded
    seen, token = [], ""
    while True:
        page = client.list_clawbacks(case.shop_id, page_size=2, page_token=token)
        assert len(page.clawbacks) <= 2
        seen += [c.refund_id for c in page.clawbacks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [c.refund_id for c in reversed(clawbacks)]


def test_clawbacks_filter_by_state_and_time(client, refunded):
    case, clawbacks = refunded
    not_eligible = client.list_clawbacks(case.shop_id, state=pb.CLAWBACK_STATE_NOT_ELIGIBLE)
    assert [c.refund_id for c in not_eligible.clawbacks] == ["rf-list-3", "rf-list-1"]

    start = clawbacks[1].created_at.ToDatetime(UTC)
    end = clawbacks[3].created_at.ToDatetime(UTC)
    window = client.list_clawbacks(case.shop_id, start_time=start, end_time=end)
    assert [c.refund_id for c in window.clawbacks] == ["rf-list-2", "rf-list-1"]


def test_a_page_token_of_other_filters_is_refused(client, refunded):
    case, _ = refunded
    token = client.list_clawbacks(case.shop_id, page_size=1).next_page_token
    with pytest.raises(InvalidArgument) as refused:
        client.list_clawbacks(case.shop_id, state=pb.CLAWBACK_STATE_RECOVERED, page_token=token)
    assert [v.field for v in refused.value.field_violations] == ["page_token"]


def test_an_accounts_transfers_come_newest_first_across_pages(client, refunded):
    case, _ = refunded
    seen, token = [], ""
    while True:
        page = client.list_transfers(wallet(case.shop_id), page_size=3, page_token=token)
        seen += list(page.transfers)
        token = page.next_page_token
        if not token:
            break
    ids = [int(t.transfer_id) for t in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    # The wallet's balance is what its transfers add up to.
    moved = sum(t.amount if t.to_account.owner_id == case.shop_id else -t.amount for t in seen)
    balances = client.get_balances([wallet(case.shop_id)])
    assert balances[(pb.ACCOUNT_KIND_ANXIN_WALLET, case.shop_id)] == moved
    assert {t.kind for t in seen} >= {pb.TRANSFER_KIND_FUNDS_IN, pb.TRANSFER_KIND_REFUND_PAYMENT}


def test_the_transfers_of_a_shop_nobody_has_are_not_found_and_a_new_payee_s_are_none(client):
    with pytest.raises(NotFound) as unknown:
        client.list_transfers(wallet("shop-nobody-has"))
    assert unknown.value.resource == ("shop", "shop-nobody-has")

    cash = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id="payee-not-yet-paid")
    assert list(client.list_transfers(cash).transfers) == []


def test_a_page_stops_before_its_bytes_pass_the_bound_and_the_next_goes_on(
    client, refunded, monkeypatch
):
    """A page holds at most MAX_PAGE_BYTES of items (some 14 MB of the largest clawbacks would
    otherwise fit a page of 500, past the 4 MiB a gRPC client takes): fewer items than asked,
    and a token to the rest. Here the bound is made two clawbacks' worth."""
    case, clawbacks = refunded
    one = max(c.ByteSize() for c in clawbacks) + 8
    monkeypatch.setattr(common, "MAX_PAGE_BYTES", 2 * one)

    pages, token = [], ""
    while True:
        page = client.list_clawbacks(case.shop_id, page_size=500, page_token=token)
        pages.append([c.refund_id for c in page.clawbacks])
        token = page.next_page_token
        if not token:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == [c.refund_id for c in reversed(clawbacks)]


def test_an_events_page_stops_before_its_bytes_pass_the_bound_and_the_next_goes_on(
    client, refunded, monkeypatch
):
    everything = client.list_events(0, from_oldest=True, page_size=500)
    assert everything.caught_up and len(everything.events) > 3
    one = max(e.ByteSize() for e in everything.events) + 8
    monkeypatch.setattr(common, "MAX_PAGE_BYTES", 3 * one)

    pages, after, from_oldest = [], 0, True
    while True:
        page = client.list_events(after, from_oldest=from_oldest, page_size=500)
        pages.append(list(page.events))
        after, from_oldest = page.next_after_position, False
        if page.caught_up:
            break

    count = len(everything.events)
    assert [len(p) for p in pages] == [3] * (count // 3) + ([count % 3] if count % 3 else [])
    assert sum(pages, []) == list(everything.events)


# The bound of every page_token, as the protos state it.
PAGE_TOKEN_BOUND = 8192


def test_a_page_token_past_its_bound_is_refused_naming_it(client, seed):
    shop_id = seed.shop("shop-long-token")
    too_long = "A" * (PAGE_TOKEN_BOUND + 1)
    for listing in (
        lambda: client.list_entries(shop_id=shop_id, page_token=too_long),
        lambda: client.list_clawbacks(shop_id, page_token=too_long),
        lambda: client.list_transfers(wallet(shop_id), page_token=too_long),
    ):
        with pytest.raises(InvalidArgument) as refused:
            listing()
        (violation,) = refused.value.field_violations
        assert violation.field == "page_token"
        assert str(PAGE_TOKEN_BOUND) in violation.description


def test_the_longest_page_token_a_listing_makes_is_within_the_bound():
    """Ids of 128 characters each escaped to 12 in the token (outside the Basic Multilingual
    Plane): the two a listing's filters name and the one its position holds."""
    longest_id = "\U0001f600" * 128
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode((2**63 - 1, longest_id), f"{longest_id}|{longest_id}|EXPIRED")
    assert len(token) <= PAGE_TOKEN_BOUND
    assert tokens.decode(token, f"{longest_id}|{longest_id}|EXPIRED", (int, str)) == (
        2**63 - 1,
        longest_id,
    )
