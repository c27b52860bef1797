"""Request ids are remembered for the policy's request retention, then forgotten by the sweep: the
request table stays bounded by what the platform does in that time, not by all it ever did. A
retry within the retention gets the original response; after it, PostFunds is refused naming the
transfer that stands, and nothing moves twice."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AlreadyExists, Client, FailedPrecondition, InvalidArgument
from server.grpc.app import App
from server.service import sync
from server.store.schema import RequestRow
from tests.e2e.seed import Seed, error_info, wallet
from tests.store.factories import OWED, a_payee_owing


def request_id() -> str:
    return str(uuid.uuid4())


def remembered(store) -> set[str]:
    with store.session():
        return {row.request_id for row in RequestRow.select(RequestRow.request_id)}


def balance(client, case) -> int:
    return client.get_balances([wallet(case.shop_id)])[(pb.ACCOUNT_KIND_ANXIN_WALLET, case.shop_id)]


def test_the_sweep_forgets_the_request_ids_older_than_the_retention_only(
    client, seed, service, store, clock
):
    case = seed.case("forget")
    for _ in range(3):
        client.post_funds(wallet(case.shop_id), 100, request_id=request_id())
    old = remembered(store)
    clock.advance(timedelta(days=1))
    new = request_id()
    client.post_funds(wallet(case.shop_id), 100, request_id=new)

    clock.advance(service.policy.request_retention - timedelta(days=1))
    assert service.prune_requests() == 0  # the oldest is exactly as old as the retention
    clock.advance(timedelta(seconds=1))

    assert service.prune_requests() == len(old) >= 4  # the seed's top-up and the three
    assert remembered(store) == {new}
    assert service.prune_requests() == 0


def test_a_sweep_forgets_the_oldest_first_in_bounded_transactions(
    client, seed, service, store, clock
):
    case = seed.case("forget-bounded")
    clock.advance(timedelta(minutes=1))
    ids = []
    for _ in range(7):
        ids.append(request_id())
        client.post_funds(wallet(case.shop_id), 100, request_id=ids[-1])
        clock.advance(timedelta(minutes=1))
    seeded = remembered(store) - set(ids)
    clock.advance(service.policy.request_retention)

    assert service.prune_requests(batch=len(seeded) + 2, batches=1) == len(seeded) + 2
    assert remembered(store) == set(ids[2:])
    # Two full batches, and the sweep stops there: the rest waits for the next one.
    assert service.prune_requests(batch=2, batches=2) == 4
    assert remembered(store) == set(ids[6:])
    # A short batch ends a sweep.
    assert service.prune_requests(batch=2, batches=5) == 1
    assert remembered(store) == set()


def test_a_retry_within_the_retention_still_gets_the_original_response_after_a_sweep(
    client, seed, service, store, clock
):
    case = seed.case("retry-kept")
    older = request_id()
    client.post_funds(wallet(case.shop_id), 1, request_id=older)
    clock.advance(timedelta(seconds=2))
    rid = request_id()
    first = client.post_funds(wallet(case.shop_id), 12_345, request_id=rid)
    clock.advance(service.policy.request_retention - timedelta(seconds=1))
    assert service.prune_requests() >= 1  # the sweep ran, and forgot the older ones
    assert older not in remembered(store)

    again = client.post_funds(wallet(case.shop_id), 12_345, request_id=rid)

    assert again == first


def test_post_funds_retried_after_the_retention_names_the_transfer_and_moves_nothing(
    client, seed, service, clock
):
    case = seed.case("retry-forgotten")
    rid = request_id()
    first = client.post_funds(wallet(case.shop_id), 12_345, memo="top-up", request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0
    before = balance(client, case)

    with pytest.raises(AlreadyExists) as refused:
        client.post_funds(wallet(case.shop_id), 12_345, memo="top-up", request_id=rid)

    assert refused.value.transfer_id == first.transfer.transfer_id
    assert refused.value.resource == ("transfer", first.transfer.transfer_id)
    info = error_info(refused.value)
    assert info.reason == "REQUEST_ID_EXPIRED"
    assert dict(info.metadata) == {
        "request_id": rid,
        "method": "PostFunds",
        "transfer_id": first.transfer.transfer_id,
    }
    assert balance(client, case) == before
    transfers = client.list_transfers(wallet(case.shop_id), page_size=100).transfers
    assert [t.transfer_id for t in transfers if t.reference == f"requests/{rid}"] == [
        first.transfer.transfer_id
    ]


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"amount": 12_346}, id="another-amount"),
        pytest.param({"amount": -12_345}, id="the-other-way"),
        pytest.param({"memo": "another memo"}, id="another-memo"),
        pytest.param({"to_deposit": True}, id="another-account"),
    ],
)
def test_a_forgotten_post_funds_id_sent_with_another_request_is_request_id_reused(
    client, seed, service, clock, other
):
    """As within the retention: the id was used for another request. Never "already done",
    which would tell the caller its money moved."""
    case = seed.case("reused-forgotten", wallet_balance=50_000)
    rid = request_id()
    client.post_funds(wallet(case.shop_id), 12_345, memo="top-up", request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0
    account = (
        pb.AccountRef(kind=pb.ACCOUNT_KIND_DEPOSIT, owner_id=case.shop_id)
        if other.get("to_deposit")
        else wallet(case.shop_id)
    )
    before = balance(client, case)

    with pytest.raises(InvalidArgument) as refused:
        client.post_funds(
            account,
            other.get("amount", 12_345),
            memo=other.get("memo", "top-up"),
            request_id=rid,
        )

    info = error_info(refused.value)
    assert (info.reason, dict(info.metadata)) == (
        "REQUEST_ID_REUSED",
        {"request_id": rid, "method": "PostFunds"},
    )
    assert balance(client, case) == before


def test_a_withdrawal_retried_after_the_retention_is_told_it_was_done_not_refused(
    client, seed, service, clock
):
    """The retry would find the balance short (the withdrawal took it): it hears that its
    request was done, not "insufficient funds", which would say it was not."""
    case = seed.case("withdraw-forgotten", wallet_balance=500)
    rid = request_id()
    first = client.post_funds(wallet(case.shop_id), -500, request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0

    with pytest.raises(AlreadyExists) as refused:
        client.post_funds(wallet(case.shop_id), -500, request_id=rid)

    assert error_info(refused.value).reason == "REQUEST_ID_EXPIRED"
    assert refused.value.transfer_id == first.transfer.transfer_id
    assert balance(client, case) == 0


def test_a_payee_s_withdrawal_retried_while_its_debts_are_recovered_is_told_it_was_done(
    client, service, store, clock, monkeypatch
):
    """A withdrawal from a payee's cash, done; its record forgotten; then debts came and are
    being recovered: the retry would be refused DEBTS_BEING_RECOVERED, as if it had not
    happened. It hears that it was done."""
    cash = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id="kol-retry")
    client.post_funds(cash, 1_000)
    rid = request_id()
    first = client.post_funds(cash, -400, request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0
    monkeypatch.setattr(sync, "DEBTS_PER_TRANSACTION", 2)
    a_payee_owing(service, store, "kol-retry", 3)
    assert client.post_funds(cash, 3 * OWED).debts_pending
    with pytest.raises(FailedPrecondition) as waiting:
        client.post_funds(cash, -400, request_id=request_id())
    assert waiting.value.reasons == ["DEBTS_BEING_RECOVERED"]

    before = client.get_balances([cash])[(pb.ACCOUNT_KIND_CASH, "kol-retry")]

    with pytest.raises(AlreadyExists) as refused:
        client.post_funds(cash, -400, request_id=rid)

    assert error_info(refused.value).reason == "REQUEST_ID_EXPIRED"
    assert refused.value.transfer_id == first.transfer.transfer_id
    assert client.get_balances([cash])[(pb.ACCOUNT_KIND_CASH, "kol-retry")] == before
    outs = [
        t
        for t in client.list_transfers(cash, page_size=100).transfers
        if t.kind == pb.TRANSFER_KIND_FUNDS_OUT
    ]
    assert [t.transfer_id for t in outs] == [first.transfer.transfer_id]


def test_a_platform_fee_withdrawal_retried_after_the_retention_is_told_it_was_done(
    client, service, clock
):
    """The platform's account is guarded apart from the others (its row is changed last): its
    retried withdrawal, now short, is answered as the others are."""
    platform = pb.AccountRef(kind=pb.ACCOUNT_KIND_PLATFORM_COMMISSION)
    client.post_funds(platform, 700)
    rid = request_id()
    first = client.post_funds(platform, -700, request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0

    with pytest.raises(AlreadyExists) as refused:
        client.post_funds(platform, -700, request_id=rid)

    assert error_info(refused.value).reason == "REQUEST_ID_EXPIRED"
    assert refused.value.transfer_id == first.transfer.transfer_id
    assert client.get_balances([platform])[(pb.ACCOUNT_KIND_PLATFORM_COMMISSION, "")] == 0


def test_a_withdrawal_too_large_under_a_new_request_id_is_still_insufficient_funds(
    client, seed, service, clock
):
    case = seed.case("withdraw-short", wallet_balance=500)
    client.post_funds(wallet(case.shop_id), -500, request_id=request_id())

    with pytest.raises(FailedPrecondition) as refused:
        client.post_funds(wallet(case.shop_id), -500, request_id=request_id())

    assert refused.value.reasons == ["INSUFFICIENT_FUNDS"]


def test_an_open_entry_retried_after_the_retention_is_decided_afresh(client, seed, service, clock):
    case = seed.case("open-forgotten")
    rid = request_id()
    first = client.open_entry(case.order_id, case.owner_id, request_id=rid)
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0
    # The first entry's window is over; the order is eligible again, as for any new request.
    assert client.check_eligibility(case.order_id, case.owner_id).eligible

    again = client.open_entry(case.order_id, case.owner_id, request_id=rid)

    assert again.entry_id != first.entry_id
    assert again.state == pb.ENTRY_STATE_OPEN
    listed = client.list_entries(order_id=case.order_id).entries
    assert sorted((e.entry_id, e.state) for e in listed) == sorted(
        [(first.entry_id, pb.ENTRY_STATE_EXPIRED), (again.entry_id, pb.ENTRY_STATE_OPEN)]
    )


def test_a_refund_and_its_application_retried_after_the_retention_do_not_happen_twice(
    client, seed, service, clock
):
    case = seed.case("refund-forgotten")
    client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(hours=1))
    apply_id, refund_rid = request_id(), request_id()
    application = client.apply_after_sales(
        case.order_id, case.buyer_id, 30_000, request_id=apply_id
    )
    started = paid = clock.now()

    def record_the_refund():
        return client.record_refund(
            "refund-forgotten-1",
            case.order_id,
            30_000,
            application_id=application.application_id,
            started_at=started,
            paid_at=paid,
            request_id=refund_rid,
        )

    clawback = record_the_refund()
    clock.advance(service.policy.request_retention + timedelta(seconds=1))
    assert service.prune_requests() > 0
    wallet_before = balance(client, case)

    # The refund is recorded once per refund_id: the same facts answer the same clawback.
    again = record_the_refund()
    # The entry was used by the application: filing again is refused by the rules.
    with pytest.raises(FailedPrecondition) as refiled:
        client.apply_after_sales(case.order_id, case.buyer_id, 30_000, request_id=apply_id)

    assert again == clawback
    assert "ENTRY_NOT_OPEN" in refiled.value.reasons
    assert balance(client, case) == wallet_before
    assert [c.clawback_id for c in client.list_clawbacks(case.shop_id).clawbacks] == [
        clawback.clawback_id
    ]


def test_the_servers_sweeper_forgets_old_request_ids(service, store, clock):
    rid = request_id()
    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=0.05).start()
    try:
        with Client(f"127.0.0.1:{app.port}") as client:
            case = Seed(client, clock).case("sweeper-forgets")
            client.post_funds(wallet(case.shop_id), 100, request_id=rid)
            assert rid in remembered(store)
            clock.advance(service.policy.request_retention + timedelta(seconds=1))
            deadline = time.monotonic() + 30
            while rid in remembered(store):
                assert time.monotonic() < deadline, "the sweeper did not forget the request id"
                time.sleep(0.05)
    finally:
        app.stop(grace=1)
