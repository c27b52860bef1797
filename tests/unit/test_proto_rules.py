"""The protos' validation rules (protovalidate) and the server that enforces them agree: every
cross-field rule is reported on a field, the bounds the server reads up to are the protos', and
PutOrder, read by hand on its hot path, refuses what protovalidate refuses, naming the same
fields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api import field_behavior_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor

from aftersales.v1 import clawback_pb2, entry_pb2, events_pb2, resources_pb2, sync_pb2
from buf.validate import validate_pb2
from server.domain.errors import InvalidArgument
from server.grpc import sync as sync_api
from server.grpc import validation
from server.grpc.common import MAX_BALANCE_ACCOUNTS, MAX_BATCH_ORDERS, MAX_COMMISSION_LINES

FILES = [entry_pb2, clawback_pb2, sync_pb2, resources_pb2, events_pb2]


def messages() -> Iterator[Descriptor]:
    for module in FILES:
        yield from module.DESCRIPTOR.message_types_by_name.values()


def cel_rule_ids() -> set[str]:
    return {
        rule.id
        for message in messages()
        for rule in message.GetOptions().Extensions[validate_pb2.message].cel
    }


def test_every_cross_field_rule_of_the_protos_is_reported_on_a_field():
    assert cel_rule_ids() == set(validation.RULE_FIELDS)


def test_every_field_a_cross_field_rule_is_reported_on_exists():
    fields = {f.name for message in messages() for f in message.fields}
    assert {path.split(".")[-1] for path in validation.RULE_FIELDS.values()} <= fields


def max_items(message: Descriptor, field: str) -> int:
    rules = message.fields_by_name[field].GetOptions().Extensions[validate_pb2.field]
    return rules.repeated.max_items


def test_the_item_bounds_the_server_reads_up_to_are_the_protos():
    assert max_items(resources_pb2.Order.DESCRIPTOR, "commission_lines") == MAX_COMMISSION_LINES
    assert max_items(clawback_pb2.GetBalancesRequest.DESCRIPTOR, "accounts") == (
        MAX_BALANCE_ACCOUNTS
    )
    assert max_items(entry_pb2.BatchCheckEligibilityRequest.DESCRIPTOR, "order_ids") == (
        MAX_BATCH_ORDERS
    )


def test_every_field_of_a_request_says_its_behavior():
    """REQUIRED, OPTIONAL...: what `grpcurl describe` and generated code show callers."""
    unsaid = [
        field.full_name
        for message in messages()
        if message.name.endswith("Request")
        for field in message.fields
        if not field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]
    assert unsaid == []


def test_a_request_breaking_the_protos_rules_names_each_field_as_the_bad_request_does():
    request = sync_pb2.PutOrderRequest(
        order=resources_pb2.Order(
            order_id="order-1",
            paid_amount=100,
            prior_refunded_amount=200,
            commission_lines=[resources_pb2.CommissionLine(payee_kind=1, amount=5)],
        )
    )

    assert {field for field, _ in validation.violations(request)} == {
        "order.shop_id",
        "order.buyer_id",
        "order.kind",
        "order.created_at",
        "order.prior_refunded_amount",
        "order.commission_lines[0].payee_id",
    }


def test_a_oneof_with_nothing_set_is_reported_on_its_first_field():
    assert [f for f, _ in validation.violations(clawback_pb2.GetClawbackRequest())] == [
        "clawback_id"
    ]


# --- PutOrder, read by hand on its hot path, against the same rules ------------------------------


def seconds(value: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=value)


def line(kind: int, payee_id: str = "payee-1", amount: int = 100) -> resources_pb2.CommissionLine:
    return resources_pb2.CommissionLine(payee_kind=kind, payee_id=payee_id, amount=amount)


def an_order(**changes) -> resources_pb2.Order:
    order = resources_pb2.Order(
        order_id="order-1",
        shop_id="shop-1",
        buyer_id="buyer-1",
        kind=resources_pb2.ORDER_KIND_ORDINARY,
        category_id="category-1",
        paid_amount=10_000,
        prior_refunded_amount=1_000,
        created_at=seconds(1_000),
        completed_at=seconds(2_000),
        after_sales_ends_at=seconds(3_000),
        commission_lines=[
            line(resources_pb2.PAYEE_KIND_INFLUENCER),
            line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, payee_id=""),
        ],
        version=7,
    )
    for name, value in changes.items():
        if value is None:
            order.ClearField(name)
        elif name == "commission_lines":
            del order.commission_lines[:]
            order.commission_lines.extend(value)
        elif isinstance(value, timestamp_pb2.Timestamp):
            getattr(order, name).CopyFrom(value)
        else:
            setattr(order, name, value)
    return order


BAD_ORDERS = {
    "no order id": an_order(order_id=""),
    "a long order id": an_order(order_id="o" * 129),
    "no shop nor buyer": an_order(shop_id="", buyer_id=""),
    "a long category": an_order(category_id="c" * 129),
    "no kind": an_order(kind=0),
    "an unknown kind": an_order(kind=99),
    "nothing paid": an_order(paid_amount=0),
    "a negative payment": an_order(paid_amount=-5),
    "an absurd payment": an_order(paid_amount=10**12 + 1),
    "a negative prior refund": an_order(prior_refunded_amount=-1),
    "a prior refund above the payment": an_order(prior_refunded_amount=10_001),
    "no creation time": an_order(created_at=None),
    "created before 1970": an_order(created_at=seconds(-1)),
    # Not completed: an out-of-range time is not compared with another by hand.
    "created after 9999": an_order(
        created_at=seconds(253_402_300_800), completed_at=None, after_sales_ends_at=None
    ),
    "completed without a period": an_order(after_sales_ends_at=None),
    "a period ending before completion": an_order(after_sales_ends_at=seconds(1_500)),
    "completed before created": an_order(completed_at=seconds(500), after_sales_ends_at=None),
    # Below the microsecond the times are kept to, compared as the protos compare them.
    "a period ending 400 ns before completion": an_order(
        completed_at=timestamp_pb2.Timestamp(seconds=2_000, nanos=900),
        after_sales_ends_at=timestamp_pb2.Timestamp(seconds=2_000, nanos=500),
    ),
    "completed 400 ns before created": an_order(
        created_at=timestamp_pb2.Timestamp(seconds=1_000, nanos=400),
        completed_at=seconds(1_000),
        after_sales_ends_at=None,
    ),
    "a negative version": an_order(version=-1),
    "too many lines": an_order(
        commission_lines=[line(resources_pb2.PAYEE_KIND_INFLUENCER, amount=1)] * 101
    ),
    "lines of no kind and of an unknown kind": an_order(commission_lines=[line(0), line(99)]),
    "a line without its payee": an_order(
        commission_lines=[line(resources_pb2.PAYEE_KIND_AFFILIATE, payee_id="")]
    ),
    "a fee line naming a payee": an_order(
        commission_lines=[line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE)]
    ),
    "a line of nothing": an_order(
        commission_lines=[line(resources_pb2.PAYEE_KIND_AFFILIATE, amount=0)]
    ),
    "a long payee id": an_order(
        commission_lines=[line(resources_pb2.PAYEE_KIND_GROUP_LEADER, payee_id="p" * 129)]
    ),
}


def by_hand(request: sync_pb2.PutOrderRequest) -> set[str]:
    try:
        sync_api.order(request)
    except InvalidArgument as refused:
        return {field for field, _ in refused.violations}
    return set()


def test_a_good_order_breaks_no_rule_either_way():
    request = sync_pb2.PutOrderRequest(order=an_order())
    assert validation.violations(request) == []
    assert by_hand(request) == set()


@pytest.mark.parametrize("order", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
def test_put_order_read_by_hand_names_the_fields_protovalidate_names(order):
    request = sync_pb2.PutOrderRequest(order=order)

    expected = {field for field, _ in validation.violations(request)}
    assert expected
    assert by_hand(request) == expected


def test_put_order_without_an_order_is_refused_either_way():
    request = sync_pb2.PutOrderRequest()
    assert [field for field, _ in validation.violations(request)] == ["order"]
    assert by_hand(request) == {"order"}
