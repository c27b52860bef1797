"""The life of an entry through a real server and the Python client, on a fake clock: open, already
open, apply, used, reopen, expire, reopen, and the history listed and paged."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AlreadyExists, FailedPrecondition, InvalidArgument

WINDOW = timedelta(hours=72)
SECOND = timedelta(seconds=1)


def when(stamp):
    return stamp.ToDatetime(tzinfo=UTC)


def states(entries):
    return [(e.entry_id, pb.EntryState.Name(e.state)) for e in entries]


def test_the_shipped_policy_gives_the_buyer_72_hours(policy):
    assert policy.entry_window == WINDOW


def test_opening_the_entry_gives_an_open_entry_for_72_hours(client, seed, clock, policy):
    case = seed.case("open")

    entry = client.open_entry(case.order_id, case.owner_id, note="agreed a refund of 300 yuan")

    assert entry.entry_id
    assert (entry.order_id, entry.shop_id) == (case.order_id, case.shop_id)
    assert entry.state == pb.ENTRY_STATE_OPEN
    assert when(entry.opened_at) == clock.now()
    assert when(entry.expires_at) == when(entry.opened_at) + WINDOW
    assert entry.operator_id == case.owner_id
    assert entry.note == "agreed a refund of 300 yuan"
    assert entry.policy_version == policy.version
    assert entry.application_id == ""
    assert not entry.HasField("used_at") and not entry.HasField("closed_at")
    assert client.get_entry(entry.entry_id) == entry


@pytest.mark.parametrize("role", [pb.STAFF_ROLE_ADMIN, pb.STAFF_ROLE_CS_ADMIN])
def test_an_administrator_and_a_cs_administrator_may_open_it_too(client, seed, role):
    case = seed.case("roles")
    operator = seed.staff("the-operator", case.shop_id, role)

    entry = client.open_entry(case.order_id, operator)

    assert entry.state == pb.ENTRY_STATE_OPEN and entry.operator_id == operator


def test_opening_again_while_it_is_open_is_already_exists_naming_the_open_entry(
    client, seed, clock
):
    case = seed.case("twice")
    first = client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(hours=1))

    with pytest.raises(AlreadyExists) as refused:
        client.open_entry(case.order_id, case.owner_id)

    assert refused.value.entry_id == first.entry_id
    assert "ENTRY_ALREADY_OPEN" in refused.value.reasons
    assert refused.value.reason == "ENTRY_ALREADY_OPEN"
    assert states(client.list_entries(order_id=case.order_id).entries) == [
        (first.entry_id, "ENTRY_STATE_OPEN")
    ]


def test_checking_eligibility_while_it_is_open_names_the_open_entry(client, seed):
    case = seed.case("check-open")
    entry = client.open_entry(case.order_id, case.owner_id)

    check = client.check_eligibility(case.order_id, case.owner_id)

    assert not check.eligible
    assert [v.code for v in check.violations] == [pb.ENTRY_ALREADY_OPEN]
    assert check.facts.open_entry_id == entry.entry_id


def test_the_buyer_filing_within_the_window_uses_the_entry(client, seed, clock):
    case = seed.case("apply")
    entry = client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(hours=10))

    application = client.apply_after_sales(
        case.order_id, case.buyer_id, 30_000, reason="the compressor failed"
    )

    assert application.application_id
    assert application.state == pb.APPLICATION_STATE_FILED
    assert (application.order_id, application.entry_id) == (case.order_id, entry.entry_id)
    assert (application.buyer_id, application.amount) == (case.buyer_id, 30_000)
    assert application.reason == "the compressor failed"
    assert when(application.filed_at) == clock.now()
    used = client.get_entry(entry.entry_id)
    assert used.state == pb.ENTRY_STATE_USED
    assert used.application_id == application.application_id
    assert when(used.used_at) == when(used.closed_at) == clock.now()


def test_the_buyer_may_file_up_to_the_last_second_of_the_window(client, seed, clock):
    case = seed.case("last-second")
    entry = client.open_entry(case.order_id, case.owner_id)
    clock.advance(WINDOW - SECOND)

    application = client.apply_after_sales(case.order_id, case.buyer_id, 1)

    assert application.entry_id == entry.entry_id


def test_filing_again_after_the_entry_was_used_is_entry_not_open(client, seed):
    case = seed.case("apply-twice")
    client.open_entry(case.order_id, case.owner_id)
    client.apply_after_sales(case.order_id, case.buyer_id, 10_000)

    with pytest.raises(FailedPrecondition) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 10_000)

    assert refused.value.reasons == ["ENTRY_NOT_OPEN"]


def test_the_merchant_may_open_again_after_the_entry_was_used(client, seed, clock):
    case = seed.case("reopen-used")
    used = client.open_entry(case.order_id, case.owner_id)
    client.apply_after_sales(case.order_id, case.buyer_id, 10_000)
    clock.advance(timedelta(days=1))

    again = client.open_entry(case.order_id, case.owner_id)

    assert again.entry_id != used.entry_id
    assert again.state == pb.ENTRY_STATE_OPEN
    assert when(again.opened_at) == clock.now()
    assert client.get_entry(used.entry_id).state == pb.ENTRY_STATE_USED


def test_an_unused_entry_closes_by_itself_after_72_hours_for_every_reader_at_once(
    client, seed, clock
):
    case = seed.case("expire")
    entry = client.open_entry(case.order_id, case.owner_id)
    clock.advance(WINDOW - SECOND)
    assert client.get_entry(entry.entry_id).state == pb.ENTRY_STATE_OPEN

    clock.advance(SECOND)

    expired = client.get_entry(entry.entry_id)
    assert expired.state == pb.ENTRY_STATE_EXPIRED
    assert expired.closed_at == expired.expires_at
    for listing in ({"order_id": case.order_id}, {"shop_id": case.shop_id}):
        only_expired = client.list_entries(state=pb.ENTRY_STATE_EXPIRED, **listing)
        assert states(only_expired.entries) == [(entry.entry_id, "ENTRY_STATE_EXPIRED")]
        assert list(client.list_entries(state=pb.ENTRY_STATE_OPEN, **listing).entries) == []
    with pytest.raises(FailedPrecondition) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 10_000)
    assert refused.value.reasons == ["ENTRY_NOT_OPEN"]


def test_the_merchant_may_open_again_after_the_entry_expired(client, seed, clock):
    case = seed.case("reopen-expired")
    expired = client.open_entry(case.order_id, case.owner_id)
    clock.advance(WINDOW)
    assert client.check_eligibility(case.order_id, case.owner_id).eligible

    again = client.open_entry(case.order_id, case.owner_id)

    assert again.entry_id != expired.entry_id
    assert again.state == pb.ENTRY_STATE_OPEN
    assert when(again.expires_at) == clock.now() + WINDOW
    assert client.get_entry(expired.entry_id).state == pb.ENTRY_STATE_EXPIRED
    application = client.apply_after_sales(case.order_id, case.buyer_id, 10_000)
    assert application.entry_id == again.entry_id


def _history(client, seed, clock, case):
    """Used, then expired, then open: the three entries of the order, oldest first."""
    used = client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(hours=1))
    client.apply_after_sales(case.order_id, case.buyer_id, 10_000)
    clock.advance(timedelta(hours=1))
    expired = client.open_entry(case.order_id, case.owner_id)
    clock.advance(WINDOW)
    current = client.open_entry(case.order_id, case.owner_id)
    return used, expired, current


def test_listing_an_order_gives_its_whole_history_newest_first(client, seed, clock):
    case = seed.case("history")
    used, expired, current = _history(client, seed, clock, case)

    listing = client.list_entries(order_id=case.order_id)

    assert states(listing.entries) == [
        (current.entry_id, "ENTRY_STATE_OPEN"),
        (expired.entry_id, "ENTRY_STATE_EXPIRED"),
        (used.entry_id, "ENTRY_STATE_USED"),
    ]
    assert listing.next_page_token == ""
    assert client.list_entries(shop_id=case.shop_id).entries == listing.entries


def test_listing_a_shop_gives_the_entries_of_all_its_orders_newest_first(client, seed, clock):
    case = seed.case("shop-history")
    other = seed.order("order-shop-history-2", case.shop_id)
    first = client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(minutes=5))
    second = client.open_entry(other.order_id, case.owner_id)
    elsewhere = seed.case("elsewhere")
    client.open_entry(elsewhere.order_id, elsewhere.owner_id)

    listing = client.list_entries(shop_id=case.shop_id)

    assert [e.entry_id for e in listing.entries] == [second.entry_id, first.entry_id]
    both = client.list_entries(shop_id=case.shop_id, order_id=other.order_id)
    assert [e.entry_id for e in both.entries] == [second.entry_id]


def test_paging_one_entry_at_a_time_walks_every_entry_exactly_once(client, seed, clock):
    case = seed.case("paging")
    _history(client, seed, clock, case)
    # Two entries opened at the same moment: the order between them must still be total.
    twin = seed.order("order-paging-twin", case.shop_id)
    client.open_entry(twin.order_id, case.owner_id)
    everything = list(client.list_entries(shop_id=case.shop_id).entries)
    assert len(everything) == 4

    walked, token, pages = [], "", 0
    while True:
        page = client.list_entries(shop_id=case.shop_id, page_size=1, page_token=token)
        pages += 1
        assert len(page.entries) == 1
        walked += page.entries
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "paging does not end"

    assert [e.entry_id for e in walked] == [e.entry_id for e in everything]


def test_paging_with_a_state_filter_walks_only_that_state(client, seed, clock):
    case = seed.case("paging-state")
    for _ in range(3):
        client.open_entry(case.order_id, case.owner_id)
        clock.advance(WINDOW)
    client.open_entry(case.order_id, case.owner_id)

    expired = list(client.iter_entries(order_id=case.order_id, state=pb.ENTRY_STATE_EXPIRED))
    first = client.list_entries(order_id=case.order_id, state=pb.ENTRY_STATE_EXPIRED, page_size=2)

    assert len(expired) == 3
    assert {e.state for e in expired} == {pb.ENTRY_STATE_EXPIRED}
    assert len(first.entries) == 2 and first.next_page_token


def _a_page_token(client, seed, clock, name):
    case = seed.case(name)
    client.open_entry(case.order_id, case.owner_id)
    clock.advance(WINDOW)
    client.open_entry(case.order_id, case.owner_id)
    page = client.list_entries(order_id=case.order_id, page_size=1)
    assert page.next_page_token
    return case, page.next_page_token


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda token: "not-a-page-token", id="garbage"),
        pytest.param(lambda token: token[: len(token) // 2], id="truncated"),
        pytest.param(lambda token: token + "AAAA", id="extended"),
    ],
)
def test_a_tampered_page_token_is_invalid_argument_naming_page_token(client, seed, clock, tamper):
    case, token = _a_page_token(client, seed, clock, "tampered")

    with pytest.raises(InvalidArgument) as refused:
        client.list_entries(order_id=case.order_id, page_size=1, page_token=tamper(token))

    assert [v.field for v in refused.value.field_violations] == ["page_token"]


def test_a_page_token_of_another_listing_is_invalid_argument(client, seed, clock):
    case, token = _a_page_token(client, seed, clock, "token-owner")
    other = seed.case("token-thief")

    with pytest.raises(InvalidArgument) as refused:
        client.list_entries(order_id=other.order_id, page_size=1, page_token=token)

    assert [v.field for v in refused.value.field_violations] == ["page_token"]


def test_no_single_character_edit_of_a_page_token_is_accepted(client, seed, clock):
    """AIP-158: page tokens are opaque; a caller cannot forge one by editing a real one."""
    case, token = _a_page_token(client, seed, clock, "edited")
    accepted = []
    # The last character may carry only padding bits, which a decoder may ignore.
    for i, char in enumerate(token[:-1]):
        edited = token[:i] + ("B" if char == "A" else "A") + token[i + 1 :]
        try:
            client.list_entries(order_id=case.order_id, page_size=1, page_token=edited)
        except InvalidArgument:
            continue
        accepted.append(edited)

    assert accepted == [], f"{len(accepted)} of {len(token) - 1} edited tokens were accepted"
