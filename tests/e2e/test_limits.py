"""Every list a request carries has a bound the proto names: at the bound the call works, one
past it the call is refused with INVALID_ARGUMENT naming the field and the bound, and writes
nothing. The work a call does on the data is bounded too (PostFunds' debts)."""

from __future__ import annotations

import time

import pytest

from aftersales.v1 import clawback_pb2, events_pb2
from aftersales.v1 import resources_pb2 as pb
from client import Client, FailedPrecondition, InvalidArgument
from server.grpc.app import App
from server.grpc.common import MAX_BALANCE_ACCOUNTS, MAX_BATCH_ORDERS, MAX_COMMISSION_LINES
from server.grpc.status import LISTED_VIOLATIONS
from server.service import sync
from server.service.sync import DEBTS_PER_TRANSACTION
from tests.e2e.seed import PAID, wallet
from tests.store.factories import OWED, a_payee_owing

COMMISSION = 10  # fen per line


def cash(payee_id: str) -> pb.AccountRef:
    return pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id=payee_id)


def with_lines(order: pb.Order, count: int) -> pb.Order:
    lined = pb.Order()
    lined.CopyFrom(order)
    del lined.commission_lines[:]
    for i in range(count):
        lined.commission_lines.add(
            payee_kind=pb.PAYEE_KIND_INFLUENCER, payee_id=f"payee-{i:03d}", amount=COMMISSION
        )
    return lined


def test_get_balances_names_at_most_the_bound(client, seed):
    shops = [seed.shop(f"shop-many-{i:03d}") for i in range(MAX_BALANCE_ACCOUNTS)]
    seed.funds(wallet(shops[-1]), 123)

    balances = client.get_balances([wallet(s) for s in shops])
    assert len(balances) == MAX_BALANCE_ACCOUNTS
    assert balances[(pb.ACCOUNT_KIND_ANXIN_WALLET, shops[-1])] == 123

    with pytest.raises(InvalidArgument) as refused:
        client.get_balances([wallet(s) for s in shops] + [wallet("one-more")])
    (violation,) = refused.value.field_violations
    assert violation.field == "accounts"
    assert str(MAX_BALANCE_ACCOUNTS) in violation.description


def test_a_shop_s_balances_show_its_wallet_and_deposit_whatever_has_moved(client, seed):
    """Two shops in the same state read alike: the wallet and deposit of a shop are its
    accounts from the start, at zero until money moves in them."""
    untouched = seed.shop("shop-untouched")
    funded = seed.shop("shop-funded", wallet_balance=300)

    assert client.get_balances(owner_id=untouched) == {
        (pb.ACCOUNT_KIND_ANXIN_WALLET, untouched): 0,
        (pb.ACCOUNT_KIND_DEPOSIT, untouched): 0,
    }
    assert list(client.get_balances(owner_id=funded).items()) == [
        ((pb.ACCOUNT_KIND_ANXIN_WALLET, funded), 300),
        ((pb.ACCOUNT_KIND_DEPOSIT, funded), 0),
    ]
    assert client.get_balances(owner_id="shop-nobody-has") == {}


def test_get_balances_answers_each_account_once_in_the_order_first_asked(client, seed):
    """An account named twice, or named and also its owner's, is answered once: the named in
    the order first asked, then the owner's accounts not named (each Balance names its
    account)."""
    first = seed.shop("shop-order-a", wallet_balance=100, deposit_balance=200)
    second = seed.shop("shop-order-b")
    deposit = pb.AccountRef(kind=pb.ACCOUNT_KIND_DEPOSIT, owner_id=first)

    response = client.clawbacks.GetBalances(
        clawback_pb2.GetBalancesRequest(
            accounts=[wallet(second), wallet(first), wallet(second)], owner_id=first
        )
    )

    assert [(b.account.kind, b.account.owner_id) for b in response.balances] == [
        (pb.ACCOUNT_KIND_ANXIN_WALLET, second),
        (pb.ACCOUNT_KIND_ANXIN_WALLET, first),
        (deposit.kind, deposit.owner_id),
    ]


def test_an_order_past_the_commission_line_bound_is_refused_and_not_stored(client, seed):
    case = seed.case("too-many-lines")
    placed = seed.order("order-too-many-lines-2", case.shop_id)

    with pytest.raises(InvalidArgument) as refused:
        client.put_order(with_lines(placed, MAX_COMMISSION_LINES + 1))
    (violation,) = refused.value.field_violations
    assert violation.field == "order.commission_lines"
    assert str(MAX_COMMISSION_LINES) in violation.description
    # Refused for its size alone, before any line is read: bad lines are not looked into.
    broken = with_lines(placed, MAX_COMMISSION_LINES + 1)
    for line in broken.commission_lines:
        line.payee_kind = pb.PAYEE_KIND_UNSPECIFIED
    with pytest.raises(InvalidArgument) as refused:
        client.put_order(broken)
    assert [v.field for v in refused.value.field_violations] == ["order.commission_lines"]
    # The order is as it was: a preview of a late refund recovers nothing, there are no lines.
    preview = client.preview_clawback(placed.order_id, PAID)
    assert list(preview.lines) == []


def test_an_order_at_the_commission_line_bound_has_its_late_refund_recovered_in_full(
    client, seed, clock
):
    case = seed.case("lines-at-bound")
    placed = seed.order(case.order_id, case.shop_id)
    stored = client.put_order(with_lines(placed, MAX_COMMISSION_LINES))
    assert len(stored.commission_lines) == MAX_COMMISSION_LINES
    # Every payee holds what it was paid; the shop's wallet starts where the seed left it.
    for line in stored.commission_lines:
        seed.funds(cash(line.payee_id), line.amount)
    wallet_before = client.get_balances([wallet(case.shop_id)])[
        (pb.ACCOUNT_KIND_ANXIN_WALLET, case.shop_id)
    ]

    client.open_entry(case.order_id, case.owner_id)
    application = client.apply_after_sales(case.order_id, case.buyer_id, PAID)
    clawback = client.record_refund(
        "refund-lines-at-bound",
        case.order_id,
        PAID,
        application_id=application.application_id,
        started_at=clock.now(),
        paid_at=clock.now(),
    )

    assert clawback.state == pb.CLAWBACK_STATE_RECOVERED
    assert len(clawback.lines) == MAX_COMMISSION_LINES
    assert all(line.recovered == line.due == COMMISSION for line in clawback.lines)
    payees = client.get_balances([cash(line.payee_id) for line in stored.commission_lines])
    assert set(payees.values()) == {0}
    wallet_after = client.get_balances([wallet(case.shop_id)])[
        (pb.ACCOUNT_KIND_ANXIN_WALLET, case.shop_id)
    ]
    assert wallet_after == wallet_before - PAID + MAX_COMMISSION_LINES * COMMISSION


def test_debts_past_what_one_post_funds_pays_are_paid_by_the_servers_sweeper(service, store):
    """The work of one PostFunds is bounded however many shops the payee owes; the response
    says when debts are left, and the server's own sweeper pays them."""
    owed = DEBTS_PER_TRANSACTION + 20
    a_payee_owing(service, store, "kol-sweep", owed)
    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=0.05).start()
    try:
        with Client(f"127.0.0.1:{app.port}") as client:
            posted = client.post_funds(cash("kol-sweep"), owed * OWED)
            assert posted.debts_pending
            assert posted.balance.balance == 20 * OWED

            deadline = time.monotonic() + 60
            while client.get_balances([cash("kol-sweep")])[(pb.ACCOUNT_KIND_CASH, "kol-sweep")]:
                assert time.monotonic() < deadline, "the sweeper did not pay the debts left"
                time.sleep(0.05)
            last = client.get_clawback(clawback_id=f"clawback-{owed - 1:04d}")
            assert (last.recovered, last.state) == (OWED, pb.CLAWBACK_STATE_RECOVERED)
    finally:
        app.stop(grace=1)


def test_a_batch_check_names_at_most_the_bound(client, seed):
    case = seed.case("batch-bound")
    ids = [case.order_id] + [f"order-nobody-{i:03d}" for i in range(MAX_BATCH_ORDERS - 1)]

    batch = client.batch_check_eligibility(ids, case.owner_id)
    assert [r.order_id for r in batch.results] == ids
    assert batch.results[0].eligibility.eligible

    with pytest.raises(InvalidArgument) as refused:
        client.batch_check_eligibility(ids + ["one-more"], case.owner_id)
    (violation,) = refused.value.field_violations
    assert violation.field == "order_ids"
    assert str(MAX_BATCH_ORDERS) in violation.description


def test_a_withdrawal_while_debts_are_being_paid_is_refused_naming_why(
    client, service, store, monkeypatch
):
    monkeypatch.setattr(sync, "DEBTS_PER_TRANSACTION", 2)
    a_payee_owing(service, store, "kol-wait", 3)
    posted = client.post_funds(cash("kol-wait"), 3 * OWED + 50)
    assert posted.debts_pending

    with pytest.raises(FailedPrecondition) as refused:
        client.post_funds(cash("kol-wait"), -50)
    assert refused.value.reasons == ["DEBTS_BEING_RECOVERED"]
    [violation] = refused.value.violations
    assert violation.subject == "accounts/cash/kol-wait"


def test_a_request_whose_every_item_is_bad_is_refused_within_what_a_default_client_takes(client):
    """Each of 100 accounts bad (no owner), each of 500 ids too long: the refusal lists the first
    LISTED_VIOLATIONS and says how many more there are, so that its status fits the trailers a
    gRPC client takes by default (8 KiB) and reaches the caller as INVALID_ARGUMENT, not as
    RESOURCE_EXHAUSTED."""
    nobody = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH)
    with pytest.raises(InvalidArgument) as accounts:
        client.get_balances([nobody] * MAX_BALANCE_ACCOUNTS)
    with pytest.raises(InvalidArgument) as ids:
        client.batch_check_eligibility(["x" * 129] * MAX_BATCH_ORDERS, "staff-1")

    for refused, first, count in (
        (accounts, "accounts[0].owner_id", MAX_BALANCE_ACCOUNTS),
        (ids, "order_ids[0]", MAX_BATCH_ORDERS),
    ):
        listed = refused.value.field_violations
        assert len(listed) == LISTED_VIOLATIONS + 1
        assert listed[0].field == first
        more = count - LISTED_VIOLATIONS
        assert (listed[-1].field, listed[-1].description) == (
            "",
            f"{more} more field violations, not listed (at most {LISTED_VIOLATIONS} are)",
        )
        assert refused.value.message.endswith(f"; and {count - 5} more (see the BadRequest detail)")


def test_a_list_past_its_bound_is_refused_for_that_alone_before_its_items_are_read(client):
    """Nearly 4 MiB of event types, each of them bad (unspecified): refused naming the list and
    its bound alone, not item by item; every type named twice is within it."""
    every_type = list(events_pb2.EventType.values())[1:]
    assert client.list_events(0, from_oldest=True, types=every_type * 2).caught_up

    with pytest.raises(InvalidArgument) as refused:
        client.list_events(
            0, from_oldest=True, types=[events_pb2.EVENT_TYPE_UNSPECIFIED] * 3_900_000
        )
    (violation,) = refused.value.field_violations
    assert violation.field == "types"
    assert "no more than 16" in violation.description
