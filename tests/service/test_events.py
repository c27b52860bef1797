"""Who reads which events: services every shop's, a staff member who may see its shop's money
that shop's only, anyone else none (as if the shop did not exist)."""

from __future__ import annotations

import pytest

from server.domain.access import Person, PersonKind
from server.domain.errors import NotFound, NotTheAuthenticatedPerson
from server.domain.model import Staff, StaffRole
from tests.store.factories import an_eligible_setup


def read(service, viewer=None, shop_id=None):
    page = service.read_events(
        after=0, from_oldest=False, shop_id=shop_id, types=(), limit=100, viewer=viewer
    )
    return {e.shop_id for e in page.events}


def test_a_staff_member_reads_its_own_shop_s_events_only_and_a_buyer_is_refused(service):
    an_eligible_setup(service, "shop-1", "order-1")
    an_eligible_setup(service, "shop-2", "order-2")
    service.put_staff(Staff("agent-1", "shop-1", StaffRole.CS_AGENT, "no money"))
    owner = Person(PersonKind.STAFF, "shop-1-owner")

    assert read(service) == {"shop-1", "shop-2"}
    assert read(service, owner) == {"shop-1"}
    assert read(service, owner, "shop-1") == {"shop-1"}
    with pytest.raises(NotFound):
        read(service, owner, "shop-2")
    with pytest.raises(NotFound):
        read(service, Person(PersonKind.STAFF, "agent-1"))
    with pytest.raises(NotTheAuthenticatedPerson):
        read(service, Person(PersonKind.BUYER, "buyer-1"))


def test_streams_are_woken_by_commits_that_wrote_events_only(service):
    setup = an_eligible_setup(service, "shop-1", "order-1")
    woken: list[int] = []
    service.committed.append(lambda: woken.append(1))

    service.put_staff(Staff("agent-2", "shop-1", StaffRole.CS_AGENT, "tells nothing"))
    assert woken == []
    service.open_entry(setup.order_id, setup.owner_id, "")
    assert woken == [1]
