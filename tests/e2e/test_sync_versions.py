"""Upstream facts arrive late or twice: a record older than the stored one changes nothing."""

from __future__ import annotations

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import InvalidArgument


def test_a_late_message_cannot_reopen_a_suspended_shop(client, seed):
    case = seed.case("versions")
    shop = pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_SUSPENDED, version=20)
    assert client.put_shop(shop).status == pb.SHOP_STATUS_SUSPENDED

    late = pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_NORMAL, version=19)
    stored = client.put_shop(late)
    assert (stored.status, stored.version) == (pb.SHOP_STATUS_SUSPENDED, 20)
    decision = client.check_eligibility(case.order_id, case.owner_id)
    assert [v.code for v in decision.violations] == [pb.SHOP_NOT_OPERATING]

    # The same version again (a replay) and newer ones apply.
    assert client.put_shop(shop).status == pb.SHOP_STATUS_SUSPENDED
    newer = pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_NORMAL, version=21)
    assert client.put_shop(newer).version == 21
    assert client.check_eligibility(case.order_id, case.owner_id).eligible


def test_a_late_staff_message_cannot_restore_a_role(client, seed):
    case = seed.case("staff-versions")
    member = pb.Staff(staff_id="member-1", shop_id=case.shop_id, role=pb.STAFF_ROLE_CS_AGENT)
    client.put_staff(pb.Staff(**{**_fields(member), "version": 7}))
    late = pb.Staff(**{**_fields(member), "role": pb.STAFF_ROLE_ADMIN, "version": 6})
    assert client.put_staff(late).role == pb.STAFF_ROLE_CS_AGENT


def test_unversioned_records_always_apply(client, seed):
    case = seed.case("unversioned")
    for status in (pb.SHOP_STATUS_CLOSED, pb.SHOP_STATUS_NORMAL):
        stored = client.put_shop(pb.Shop(shop_id=case.shop_id, status=status))
        assert stored.status == status


def test_an_unversioned_put_does_not_make_an_older_message_new(client, seed):
    case = seed.case("unversioned-then-late")
    client.put_shop(pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_SUSPENDED, version=5))
    unversioned = client.put_shop(pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_SUSPENDED))
    assert (unversioned.status, unversioned.version) == (pb.SHOP_STATUS_SUSPENDED, 5)

    late = pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_NORMAL, version=4)
    stored = client.put_shop(late)

    # The suspension stands: version 4 is older than the 5 seen before the unversioned put.
    assert (stored.status, stored.version) == (pb.SHOP_STATUS_SUSPENDED, 5)


def test_a_late_order_message_after_a_refund_is_ignored_not_refused(client, seed, clock):
    case = seed.case("order-versions")
    order = client.put_order(
        pb.Order(
            **{
                **_fields(_order(client, seed, case)),
                "version": 5,
                "refunded_amount": 0,
                "refundable_amount": 0,
            }
        )
    )
    client.record_refund(
        "rf-versions", case.order_id, 1_000, started_at=clock.now(), paid_at=clock.now()
    )
    late = pb.Order()
    late.CopyFrom(order)
    late.version = 4
    late.paid_amount = order.paid_amount * 2
    stored = client.put_order(late)
    assert (stored.paid_amount, stored.version) == (order.paid_amount, 5)
    assert stored.refunded_amount == 1_000


def test_a_negative_version_is_invalid(client, seed):
    case = seed.case("negative-version")
    with pytest.raises(InvalidArgument) as refused:
        client.put_shop(pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_NORMAL, version=-1))
    assert [v.field for v in refused.value.field_violations] == ["shop.version"]


def _fields(message) -> dict:
    return {field.name: value for field, value in message.ListFields()}


def _order(client, seed, case) -> pb.Order:
    return seed.order(case.order_id, case.shop_id)
