"""The entry's life: opened by the shop's staff, used by the buyer within the window or closed by
itself after it, opened again; and every refusal writes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.errors import NotFound, PermissionDenied, RulesRefused
from server.domain.model import (
    EntryState,
    ReasonCode,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service import Service
from tests.store.factories import a_normal_shop, an_eligible_setup, an_owner

US = timedelta(microseconds=1)


def history(service: Service, order_id: str) -> list[tuple[str, EntryState]]:
    page = service.list_entries(shop_id=None, order_id=order_id, state=None, page_size=100)
    assert page.next_page_token == ""
    return [(e.entry_id, e.state) for e in page.items]


def test_opening_gives_an_open_entry_for_the_policy_s_72_hours(service, clock):
    setup = an_eligible_setup(service)

    entry = service.open_entry(setup.order_id, setup.owner_id, "agreed in chat")

    assert entry.state is EntryState.OPEN
    assert entry.opened_at == clock.now()
    assert entry.expires_at - entry.opened_at == timedelta(hours=72)
    assert (entry.operator_id, entry.note) == (setup.owner_id, "agreed in chat")
    assert service.get_entry(entry.entry_id) == entry


@pytest.mark.parametrize("role", [StaffRole.ADMIN, StaffRole.CS_ADMIN])
def test_an_administrator_and_a_cs_administrator_may_open_too(service, role):
    setup = an_eligible_setup(service)
    service.put_staff(Staff("staff-2", setup.shop_id, role, "Second"))

    assert service.open_entry(setup.order_id, "staff-2", "").state is EntryState.OPEN


def test_the_buyer_filing_within_the_window_uses_the_entry(service, clock):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.set(entry.expires_at - US)

    application = service.apply(setup.order_id, setup.buyer_id, 2_500, "stopped working")

    used = service.get_entry(entry.entry_id)
    assert used.state is EntryState.USED
    assert used.used_at == clock.now()
    assert used.application_id == application.application_id
    assert (application.entry_id, application.amount) == (entry.entry_id, 2_500)


def test_filing_again_after_the_entry_was_used_is_entry_not_open(service):
    setup = an_eligible_setup(service)
    service.open_entry(setup.order_id, setup.owner_id, "")
    service.apply(setup.order_id, setup.buyer_id, 1_000, "")

    with pytest.raises(RulesRefused) as refused:
        service.apply(setup.order_id, setup.buyer_id, 1_000, "")

    assert refused.value.codes == (ReasonCode.ENTRY_NOT_OPEN,)


def test_an_unused_entry_closes_by_itself_when_its_window_ends(service, clock):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    clock.set(entry.expires_at - US)
    assert service.get_entry(entry.entry_id).state is EntryState.OPEN
    clock.set(entry.expires_at)
    assert service.get_entry(entry.entry_id).state is EntryState.EXPIRED
    with pytest.raises(RulesRefused) as refused:
        service.apply(setup.order_id, setup.buyer_id, 1_000, "too late")
    assert refused.value.codes == (ReasonCode.ENTRY_NOT_OPEN,)


def test_the_merchant_may_open_again_after_the_entry_expired(service, clock):
    setup = an_eligible_setup(service)
    first = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.set(first.expires_at)

    second = service.open_entry(setup.order_id, setup.owner_id, "again")

    assert second.entry_id != first.entry_id
    assert history(service, setup.order_id) == [
        (second.entry_id, EntryState.OPEN),
        (first.entry_id, EntryState.EXPIRED),
    ]


def test_the_merchant_may_open_again_after_the_entry_was_used(service, clock):
    setup = an_eligible_setup(service)
    first = service.open_entry(setup.order_id, setup.owner_id, "")
    service.apply(setup.order_id, setup.buyer_id, 1_000, "")
    clock.advance(timedelta(hours=1))

    second = service.open_entry(setup.order_id, setup.owner_id, "")

    assert history(service, setup.order_id) == [
        (second.entry_id, EntryState.OPEN),
        (first.entry_id, EntryState.USED),
    ]


def test_the_sweep_stores_what_readers_already_see(service, clock):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.set(entry.expires_at)

    assert service.expire_entries() == 1
    assert service.expire_entries() == 0
    assert service.get_entry(entry.entry_id).state is EntryState.EXPIRED


def test_opening_while_an_entry_is_open_is_entry_already_open_naming_it(service, clock):
    setup = an_eligible_setup(service)
    first = service.open_entry(setup.order_id, setup.owner_id, "")
    clock.advance(timedelta(hours=1))

    with pytest.raises(RulesRefused) as refused:
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert not isinstance(refused.value, PermissionDenied)
    assert refused.value.codes == (ReasonCode.ENTRY_ALREADY_OPEN,)
    assert refused.value.metadata == {"order_id": setup.order_id, "entry_id": first.entry_id}
    assert first.entry_id in refused.value.violations[0].description
    eligibility = service.check_eligibility(setup.order_id, setup.owner_id)
    assert eligibility.decision.already_open == first


def test_an_operator_of_another_shop_may_not_open(service):
    setup = an_eligible_setup(service)
    a_normal_shop(service, "shop-2")
    stranger = an_owner(service, "shop-2")

    with pytest.raises(NotFound) as denied:
        service.open_entry(setup.order_id, stranger, "")

    assert (denied.value.resource_type, denied.value.name) == ("order", setup.order_id)
    assert history(service, setup.order_id) == []


def test_a_customer_service_agent_of_the_shop_may_not_open_and_hears_what_else_is_unmet(service):
    setup = an_eligible_setup(service)
    service.put_staff(Staff("agent-1", setup.shop_id, StaffRole.CS_AGENT, "Agent"))
    service.put_shop(Shop(setup.shop_id, "Shop", ShopStatus.CLOSED, None))

    with pytest.raises(PermissionDenied) as denied:
        service.open_entry(setup.order_id, "agent-1", "")

    assert denied.value.codes == (ReasonCode.OPERATOR_NOT_ALLOWED, ReasonCode.SHOP_NOT_OPERATING)


def test_only_the_order_s_buyer_may_file_through_its_entry(service):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    with pytest.raises(PermissionDenied) as denied:
        service.apply(setup.order_id, "buyer-2", 1_000, "not mine")

    assert denied.value.codes == (ReasonCode.BUYER_NOT_ORDER_OWNER,)
    assert denied.value.metadata == {"order_id": setup.order_id, "buyer_id": "buyer-2"}
    assert service.get_entry(entry.entry_id).state is EntryState.OPEN


def test_the_buyer_may_not_file_for_more_than_is_refundable(service):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    with pytest.raises(RulesRefused) as refused:
        service.apply(setup.order_id, setup.buyer_id, 10_001, "")

    assert refused.value.codes == (ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE,)
    assert service.get_entry(entry.entry_id).state is EntryState.OPEN


def test_a_refused_open_leaves_no_entry_behind(service):
    setup = an_eligible_setup(service)
    service.put_shop(Shop(setup.shop_id, "Shop", ShopStatus.SUSPENDED, None))

    with pytest.raises(RulesRefused) as refused:
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert refused.value.codes == (ReasonCode.SHOP_NOT_OPERATING,)
    assert history(service, setup.order_id) == []
    assert (
        service.list_entries(shop_id=setup.shop_id, order_id=None, state=None, page_size=10).items
        == []
    )
