"""How RecordRefund links a refund to the buyer's application and refuses what does not fit,
through a real server; and the input limits every method shares."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from aftersales.v1 import clawback_pb2, entry_pb2
from aftersales.v1 import resources_pb2 as pb
from client import FailedPrecondition, InvalidArgument, NotFound
from client.errors import from_rpc_error
from tests.e2e.seed import PAID, error_info, wallet


@pytest.fixture
def applied(client, seed, clock):
    """An order whose buyer filed for half the paid amount through a re-opened entry."""
    case = seed.case("late")
    client.open_entry(case.order_id, case.owner_id)
    clock.advance(timedelta(hours=1))
    application = client.apply_after_sales(case.order_id, case.buyer_id, PAID // 2)
    return case, application


def refund(client, clock, refund_id, order_id, amount, application_id="", started_at=None):
    started_at = started_at or clock.now()
    return client.record_refund(
        refund_id,
        order_id,
        amount,
        application_id=application_id,
        started_at=started_at,
        paid_at=clock.now(),
    )


def test_refunds_through_an_application_may_come_in_parts_up_to_what_it_asked(
    client, clock, applied
):
    case, application = applied
    first = refund(client, clock, "rf-a", case.order_id, PAID // 4, application.application_id)
    second = refund(client, clock, "rf-b", case.order_id, PAID // 4, application.application_id)
    assert first.state != pb.CLAWBACK_STATE_NOT_ELIGIBLE
    assert second.refunded_before == PAID // 4 and second.refunded_after == PAID // 2

    before = client.get_balances(owner_id=case.shop_id)
    with pytest.raises(FailedPrecondition) as refused:
        refund(client, clock, "rf-c", case.order_id, 1, application.application_id)
    assert refused.value.reasons == ["AMOUNT_EXCEEDS_APPLICATION"]
    assert client.get_balances(owner_id=case.shop_id) == before
    with pytest.raises(NotFound):
        client.get_clawback(refund_id="rf-c")


def test_a_refund_that_started_before_its_entry_opened_is_not_a_late_refund(client, clock, applied):
    case, application = applied
    clawback = refund(
        client,
        clock,
        "rf-early",
        case.order_id,
        1_000,
        application.application_id,
        started_at=clock.now() - timedelta(days=2),
    )
    assert clawback.state == pb.CLAWBACK_STATE_NOT_ELIGIBLE
    assert [r.code for r in clawback.reasons] == [pb.NOT_A_LATE_REFUND]
    assert clawback.paid_from_wallet == 1_000  # the buyer is paid all the same


def test_a_refund_naming_another_orders_application_is_refused(client, seed, clock, applied):
    _, application = applied
    other = seed.case("other")
    with pytest.raises(FailedPrecondition) as refused:
        refund(client, clock, "rf-cross", other.order_id, 100, application.application_id)
    assert refused.value.reasons == ["APPLICATION_NOT_OF_ORDER"]


def test_an_unknown_application_is_not_found(client, seed, clock):
    case = seed.case("ghost")
    with pytest.raises(NotFound) as refused:
        refund(client, clock, "rf-ghost", case.order_id, 100, "application-nobody-knows")
    assert refused.value.resource == ("application", "application-nobody-knows")


def test_a_refund_id_recorded_with_other_facts_is_refund_id_reused_whatever_the_order(
    client, clock, applied
):
    case, application = applied
    refund(client, clock, "rf-once", case.order_id, 100, application.application_id)
    for order_id, amount in ((case.order_id, 200), ("order-nobody-knows", 100)):
        with pytest.raises(InvalidArgument) as refused:
            refund(client, clock, "rf-once", order_id, amount, application.application_id)
        assert [v.field for v in refused.value.field_violations] == ["refund_id"]
        assert error_info(refused.value).reason == "REFUND_ID_REUSED"


def test_a_reused_request_id_names_its_reason(client, seed):
    case = seed.case("reuse")
    client.open_entry(case.order_id, case.owner_id, note="first", request_id="reused-request-1")
    with pytest.raises(InvalidArgument) as refused:
        client.open_entry(
            case.order_id, case.owner_id, note="second", request_id="reused-request-1"
        )
    info = error_info(refused.value)
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.metadata["request_id"] == "reused-request-1"


def test_funds_keep_their_memo_and_point_to_their_request(client, seed):
    shop_id = seed.shop("shop-memo")
    posted = client.post_funds(
        wallet(shop_id), 700, memo="top-up for the holidays", request_id="memo-request-1"
    )
    assert posted.transfer.reference == "requests/memo-request-1"
    assert posted.transfer.memo == "top-up for the holidays"
    listed = client.list_transfers(wallet(shop_id)).transfers
    assert [(t.reference, t.memo) for t in listed] == [
        ("requests/memo-request-1", "top-up for the holidays")
    ]


def raw(call, request):
    """A call through the bare stub (for values the client's signature would not let through),
    its failure turned into the client's typed exception."""
    try:
        return call(request)
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None


def _stamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    "stamp",
    [_stamp(10**12), _stamp(-(10**11)), _stamp(0, 2_000_000_000)],
    ids=["year-31000", "before-1970", "nanos-out-of-range"],
)
def test_out_of_range_times_are_invalid_argument(client, seed, stamp):
    case = seed.case("times")
    with pytest.raises(InvalidArgument) as refused:
        raw(
            client.clawbacks.PreviewClawback,
            clawback_pb2.PreviewClawbackRequest(order_id=case.order_id, amount=1, started_at=stamp),
        )
    assert [v.field for v in refused.value.field_violations] == ["started_at"]


def test_nul_characters_and_absurd_amounts_are_invalid_argument(client, seed):
    case = seed.case("nul")
    with pytest.raises(InvalidArgument) as refused:
        client.open_entry(case.order_id, case.owner_id, note="agreed\x00")
    assert [v.field for v in refused.value.field_violations] == ["note"]
    with pytest.raises(InvalidArgument) as refused:
        client.post_funds(wallet(case.shop_id), 2**62)
    assert [v.field for v in refused.value.field_violations] == ["amount"]
    with pytest.raises(InvalidArgument) as refused:
        raw(
            client.entries.ApplyAfterSales,
            entry_pb2.ApplyAfterSalesRequest(
                order_id=case.order_id,
                buyer_id=case.buyer_id,
                amount=10**13,
                request_id="absurd-amount-1",
            ),
        )
    assert [v.field for v in refused.value.field_violations] == ["amount"]
