"""Retries: the same request_id with the same request gets the original response and writes once;
with a different request it is INVALID_ARGUMENT."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AfterSalesError, FailedPrecondition, InvalidArgument
from tests.e2e.seed import DOMAIN, PAID, error_info, wallet


def request_id() -> str:
    return str(uuid.uuid4())


def wallet_balance(client, case) -> int:
    return client.check_eligibility(case.order_id, case.owner_id).facts.wallet_balance


def assert_request_id_reused(refused) -> None:
    assert [v.field for v in refused.value.field_violations] == ["request_id"]
    assert error_info(refused.value).domain == DOMAIN


def test_opening_twice_with_one_request_id_gives_the_same_entry_and_opens_one(client, seed, clock):
    case = seed.case("retry-open")
    rid = request_id()
    first = client.open_entry(case.order_id, case.owner_id, note="agreed", request_id=rid)
    clock.advance(timedelta(minutes=5))

    again = client.open_entry(case.order_id, case.owner_id, note="agreed", request_id=rid)

    assert again == first
    assert [e.entry_id for e in client.list_entries(order_id=case.order_id).entries] == [
        first.entry_id
    ]


def test_a_retry_after_the_entry_was_used_still_opens_nothing_new(client, seed):
    case = seed.case("retry-after-use")
    rid = request_id()
    first = client.open_entry(case.order_id, case.owner_id, request_id=rid)
    client.apply_after_sales(case.order_id, case.buyer_id, 10_000)

    again = client.open_entry(case.order_id, case.owner_id, request_id=rid)

    assert again.entry_id == first.entry_id
    assert len(client.list_entries(order_id=case.order_id).entries) == 1


def test_one_request_id_with_another_note_is_invalid_argument(client, seed):
    case = seed.case("reuse-open")
    rid = request_id()
    client.open_entry(case.order_id, case.owner_id, note="agreed", request_id=rid)

    with pytest.raises(InvalidArgument) as refused:
        client.open_entry(case.order_id, case.owner_id, note="something else", request_id=rid)

    assert_request_id_reused(refused)
    assert len(client.list_entries(order_id=case.order_id).entries) == 1


def test_one_request_id_for_another_method_is_invalid_argument(client, seed):
    case = seed.case("reuse-method")
    rid = request_id()
    client.open_entry(case.order_id, case.owner_id, request_id=rid)

    with pytest.raises(InvalidArgument) as refused:
        client.post_funds(wallet(case.shop_id), 100, request_id=rid)

    assert_request_id_reused(refused)
    assert wallet_balance(client, case) == 5 * PAID
    # Named as used, not for what: the first request may be another caller's.
    assert "PostFunds" not in str(refused.value) and "OpenEntry" not in str(refused.value)


def test_a_refused_open_may_be_retried_with_its_request_id_once_the_rule_is_met(client, seed):
    case = seed.case("retry-refused", wallet_balance=PAID - 1)
    rid = request_id()
    with pytest.raises(FailedPrecondition):
        client.open_entry(case.order_id, case.owner_id, request_id=rid)
    seed.funds(wallet(case.shop_id), 1)

    entry = client.open_entry(case.order_id, case.owner_id, request_id=rid)

    assert entry.state == pb.ENTRY_STATE_OPEN


def test_filing_twice_with_one_request_id_gives_the_same_application(client, seed, clock):
    case = seed.case("retry-apply")
    entry = client.open_entry(case.order_id, case.owner_id)
    rid = request_id()
    apply = (case.order_id, case.buyer_id, 20_000)
    first = client.apply_after_sales(*apply, reason="broken", request_id=rid)

    again = client.apply_after_sales(*apply, reason="broken", request_id=rid)

    assert again == first
    assert client.get_entry(entry.entry_id).application_id == first.application_id


def test_filing_with_one_request_id_and_another_amount_is_invalid_argument(client, seed):
    case = seed.case("reuse-apply")
    client.open_entry(case.order_id, case.owner_id)
    rid = request_id()
    first = client.apply_after_sales(case.order_id, case.buyer_id, 20_000, request_id=rid)

    with pytest.raises(InvalidArgument) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 20_001, request_id=rid)

    assert_request_id_reused(refused)
    assert client.get_entry(first.entry_id).application_id == first.application_id


def test_posting_funds_twice_with_one_request_id_moves_the_money_once(client, seed):
    case = seed.case("retry-funds")
    before = wallet_balance(client, case)
    rid = request_id()
    first = client.post_funds(wallet(case.shop_id), 12_345, memo="top-up", request_id=rid)

    again = client.post_funds(wallet(case.shop_id), 12_345, memo="top-up", request_id=rid)

    assert again == first
    assert first.balance.balance == before + 12_345
    assert wallet_balance(client, case) == before + 12_345


def test_a_withdrawal_retried_moves_the_money_out_once(client, seed):
    case = seed.case("retry-withdraw")
    rid = request_id()
    first = client.post_funds(wallet(case.shop_id), -PAID, request_id=rid)

    again = client.post_funds(wallet(case.shop_id), -PAID, request_id=rid)

    assert again == first
    assert wallet_balance(client, case) == 4 * PAID


def test_posting_funds_with_one_request_id_and_another_amount_is_invalid_argument(client, seed):
    case = seed.case("reuse-funds")
    rid = request_id()
    client.post_funds(wallet(case.shop_id), 100, request_id=rid)

    with pytest.raises(InvalidArgument) as refused:
        client.post_funds(wallet(case.shop_id), 200, request_id=rid)

    assert_request_id_reused(refused)
    assert wallet_balance(client, case) == 5 * PAID + 100


ROUNDS = 8


def _at_once(calls: int, method, *args, **kwargs):
    """`method(*args, **kwargs)` from `calls` threads released together: the results, or the
    errors raised."""
    start = threading.Barrier(calls)

    def attempt(_):
        start.wait()
        try:
            return method(*args, **kwargs)
        except AfterSalesError as e:
            return e

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(attempt, range(calls)))


def _codes(results) -> list[str]:
    return [r.code.name for r in results if isinstance(r, AfterSalesError)]


# A race shows only sometimes: each test runs a few rounds of four identical calls at once.


def test_concurrent_retries_of_one_open_all_get_the_one_entry(client, seed):
    case = seed.case("concurrent-open")
    for round in range(ROUNDS):
        order_id = seed.order(f"order-concurrent-open-{round}", case.shop_id).order_id
        rid = request_id()

        results = _at_once(4, client.open_entry, order_id, case.owner_id, request_id=rid)

        assert _codes(results) == [], f"round {round}"
        assert len({r.entry_id for r in results}) == 1
        assert len(client.list_entries(order_id=order_id).entries) == 1


def test_concurrent_retries_of_one_application_all_get_the_one_application(client, seed):
    case = seed.case("concurrent-apply")
    for round in range(ROUNDS):
        order = seed.order(f"order-concurrent-apply-{round}", case.shop_id)
        client.open_entry(order.order_id, case.owner_id)
        rid = request_id()

        results = _at_once(
            4, client.apply_after_sales, order.order_id, order.buyer_id, 10_000, request_id=rid
        )

        assert _codes(results) == [], f"round {round}"
        assert len({r.application_id for r in results}) == 1


def test_concurrent_retries_of_one_posting_move_the_money_once(client, seed):
    case = seed.case("concurrent-funds")
    for round in range(ROUNDS):
        rid = request_id()

        results = _at_once(4, client.post_funds, wallet(case.shop_id), 777, request_id=rid)

        assert _codes(results) == [], f"round {round}"
        assert len({r.transfer.transfer_id for r in results}) == 1
    assert wallet_balance(client, case) == 5 * PAID + ROUNDS * 777
