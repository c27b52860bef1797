"""The README walkthrough through the Python client, on SQLite and PostgreSQL: open, apply, refund,
clawback with amounts per payee, a short payee, and its debt recovered on the next posting."""

from datetime import timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AlreadyExists, FailedPrecondition
from server import demo

WALLET = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-sunny")
LEADER = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id="leader-zhou")


@pytest.fixture
def demo_client(service, client):
    demo.load(service)
    return client


def _lines(clawback):
    return {
        line.payee_id or "platform": (line.due, line.recovered, line.outstanding, line.state)
        for line in clawback.lines
    }


def test_the_readme_walkthrough_recovers_every_commission_for_the_merchant(demo_client, clock):
    c = demo_client
    entry = c.open_entry("order-eligible", "staff-owner", note="half refund agreed")
    assert entry.state == pb.ENTRY_STATE_OPEN
    with pytest.raises(AlreadyExists) as already:
        c.open_entry("order-eligible", "staff-admin")
    assert already.value.entry_id == entry.entry_id

    preview = c.preview_clawback("order-eligible", 64_950)
    assert preview.due == 11_690 and preview.recovered == 10_391

    clock.advance(timedelta(hours=5))
    application = c.apply_after_sales("order-eligible", "buyer-eligible", 64_950)
    assert c.get_entry(entry.entry_id).state == pb.ENTRY_STATE_USED
    assert (
        c.get_balances(owner_id="shop-sunny")[(pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")]
        == 500_000
    )

    now = clock.now()
    clawback = c.record_refund(
        "refund-1001",
        "order-eligible",
        64_950,
        application_id=application.application_id,
        started_at=now,
        paid_at=now,
    )
    assert clawback.state == pb.CLAWBACK_STATE_PARTIAL
    assert clawback.paid_from_wallet == 64_950 and clawback.paid_from_deposit == 0
    assert _lines(clawback) == {
        "kol-mia": (6_495, 6_495, 0, pb.CLAWBACK_LINE_STATE_RECOVERED),
        "leader-zhou": (1_299, 0, 1_299, pb.CLAWBACK_LINE_STATE_OUTSTANDING),
        "aff-lee": (649, 649, 0, pb.CLAWBACK_LINE_STATE_RECOVERED),
        "platform": (3_247, 3_247, 0, pb.CLAWBACK_LINE_STATE_RECOVERED),
    }
    # What the preview promised is what was recovered.
    assert _lines(preview) == _lines(clawback)
    assert c.get_balances([WALLET])[(pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")] == (
        500_000 - 64_950 + 10_391
    )

    # Reported again (a retry with a new request id): one refund, one clawback.
    again = c.record_refund(
        "refund-1001",
        "order-eligible",
        64_950,
        application_id=application.application_id,
        started_at=now,
        paid_at=now,
    )
    assert again.clawback_id == clawback.clawback_id
    assert c.get_balances([WALLET])[(pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")] == 445_441

    posted = c.post_funds(LEADER, 5_000, memo="commission payout")
    assert posted.balance.balance == 5_000 - 1_299
    recovered = c.get_clawback(refund_id="refund-1001")
    assert recovered.state == pb.CLAWBACK_STATE_RECOVERED
    assert recovered.outstanding == 0 and recovered.recovered == 11_690
    assert c.get_balances([WALLET])[(pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")] == 446_740

    transfers = c.list_transfers(LEADER).transfers
    assert [(t.kind, t.amount) for t in transfers] == [
        (pb.TRANSFER_KIND_DEBT_RECOVERY, 1_299),
        (pb.TRANSFER_KIND_FUNDS_IN, 5_000),
    ]
    assert [cb.clawback_id for cb in c.iter_clawbacks("shop-sunny")] == [clawback.clawback_id]


def test_a_refund_above_the_refundable_amount_is_refused_and_moves_nothing(demo_client, clock):
    c = demo_client
    before = c.get_balances(owner_id="shop-sunny")
    with pytest.raises(FailedPrecondition) as refused:
        c.record_refund(
            "refund-too-much",
            "order-eligible",
            129_901,
            started_at=clock.now(),
            paid_at=clock.now(),
        )
    assert refused.value.reasons == ["AMOUNT_EXCEEDS_REFUNDABLE"]
    assert c.get_balances(owner_id="shop-sunny") == before
    assert list(c.iter_clawbacks("shop-sunny")) == []


def test_a_refund_outside_an_entry_is_kept_as_not_eligible(demo_client, clock):
    c = demo_client
    clawback = c.record_refund(
        "refund-regular", "order-campaign", 10_000, started_at=clock.now(), paid_at=clock.now()
    )
    assert clawback.state == pb.CLAWBACK_STATE_NOT_ELIGIBLE
    assert [r.code for r in clawback.reasons] == [pb.NOT_A_LATE_REFUND]
    assert list(clawback.lines) == []
    assert clawback.paid_from_wallet == 10_000
