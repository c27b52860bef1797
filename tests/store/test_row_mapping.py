"""Rows become the domain's dataclasses as their constructors would make them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from server.domain.errors import NotFound
from server.domain.model import (
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    Entry,
    EntryState,
    Transfer,
    TransferKind,
)
from server.store.schema import actor, members, restored
from tests.store.factories import a_late_refund_order, an_eligible_setup

MOMENT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ENTRY = {
    "entry_id": "entry-1",
    "order_id": "order-1",
    "shop_id": "shop-1",
    "state": EntryState.OPEN,
    "opened_at": MOMENT,
    "expires_at": MOMENT,
    "operator_id": "owner-1",
    "note": "agreed with the buyer",
    "policy_version": "2026-06",
    "used_at": None,
    "application_id": None,
    "recorded_by": Actor("orders", "staff:owner-1"),
}


def test_a_restored_dataclass_equals_the_constructed_one_and_stays_frozen():
    made, restored_entry = Entry(**ENTRY), restored(Entry, **ENTRY)
    assert restored_entry == made and hash(restored_entry) == hash(made)
    assert dataclasses.replace(restored_entry, note="x") == dataclasses.replace(made, note="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored_entry.note = "changed"  # type: ignore[misc]
    transfer = {
        "transfer_id": "7",
        "from_account": AccountRef(AccountKind.CASH, "influencer-1"),
        "to_account": AccountRef(AccountKind.ANXIN_WALLET, "shop-1"),
        "amount": 1_800,
        "kind": TransferKind.CLAWBACK,
        "reference": "clawback-1",
        "posted_at": MOMENT,
        "memo": "",
        "recorded_by": NOBODY,
    }
    assert restored(Transfer, **transfer) == Transfer(**transfer)


def test_a_row_missing_a_field_or_naming_another_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Pair:
        left: int
        right: int = 0

    with pytest.raises(TypeError, match="exactly its fields"):
        restored(Pair, left=1)  # a default is not filled in: every field is given
    with pytest.raises(TypeError, match="exactly its fields"):
        restored(Pair, left=1, right=2, extra=3)
    assert restored(Pair, left=1, right=2) == Pair(1, 2)


def test_a_class_whose_constructor_does_more_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    @dataclasses.dataclass
    class Mutable:
        value: int

    for cls in (Checked, Mutable):
        with pytest.raises(TypeError):
            restored(cls, value=1)


def test_members_and_actors_are_the_same_as_the_enum_and_the_constructor_give():
    assert members(EntryState) == {state.value: state for state in EntryState}
    assert members(TransferKind)["CLAWBACK"] is TransferKind("CLAWBACK")
    assert actor("orders", "staff:1") == Actor("orders", "staff:1")
    assert actor("orders", "staff:1") is actor("orders", "staff:1")


def test_an_order_read_with_its_shop_is_the_order_and_the_shop_read_alone(service):
    setup = an_eligible_setup(service)
    a_late_refund_order(service, setup)  # with commission lines
    with service.unit_of_work(read_only=True) as uow:
        shop = uow.facts.shop(setup.shop_id)
    service.put_shop(dataclasses.replace(shop, version=1, recorded_by=Actor("shops", "ops-1")))
    with service.unit_of_work(read_only=True) as uow:
        alone = uow.facts.order(setup.order_id), uow.facts.shop(setup.shop_id)
        together = uow.facts.order_and_shop(setup.order_id)
        with pytest.raises(NotFound):
            uow.facts.order_and_shop("no-such-order")
    assert together == alone
    assert together[0].commission_lines and together[1].recorded_by != NOBODY
