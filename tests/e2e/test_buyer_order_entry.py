"""The buyer's order page: GetBuyerOrderEntry tells the order's buyer, known by their token, the
state and deadline of the order's entry, and nothing of the shop's money; nobody else learns
anything. A server that checks the people's tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf import descriptor

from aftersales.v1 import entry_pb2
from aftersales.v1 import resources_pb2 as pb
from client import Client, NotFound, PermissionDenied, Unauthenticated
from server.grpc.app import App
from tests.e2e.seed import PAID, Seed

WINDOW = timedelta(hours=72)


@pytest.fixture
def client(people_server):
    """The systems that feed the facts (no person's token needed for Sync)."""
    with Client(f"127.0.0.1:{people_server.port}") as c:
        yield c


@pytest.fixture
def seed(client, clock):
    return Seed(client, clock)


@pytest.fixture
def person(people_server, login):
    """person(kind, id): a client acting for that person; person() acts for nobody."""
    clients: list[Client] = []

    def make(kind: str | None = None, person_id: str = "") -> Client:
        token = login.mint(person_id, kind) if kind else None
        clients.append(Client(f"127.0.0.1:{people_server.port}", token=token))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def test_the_buyer_sees_the_state_and_deadline_of_the_order_s_entry(client, seed, clock, person):
    case = seed.case("page")
    buyer = person("buyer", case.buyer_id)
    staff = person("staff", case.owner_id)

    never_opened = buyer.get_buyer_order_entry(case.order_id)
    opened = staff.open_entry(case.order_id, "", note="agreed: refund 1,000.00 in chat")
    open_now = buyer.get_buyer_order_entry(case.order_id)
    buyer.apply_after_sales(case.order_id, "", PAID, reason="stopped working")
    used = buyer.get_buyer_order_entry(case.order_id)

    assert never_opened.order_id == case.order_id and not never_opened.HasField("entry")
    assert open_now.entry.state == pb.ENTRY_STATE_OPEN
    assert open_now.entry.opened_at == opened.opened_at
    assert open_now.entry.expires_at.ToDatetime() == opened.opened_at.ToDatetime() + WINDOW
    assert not open_now.entry.HasField("used_at")
    assert used.entry.state == pb.ENTRY_STATE_USED and used.entry.HasField("used_at")


def test_the_buyer_sees_an_entry_whose_window_passed_as_expired(client, seed, clock, person):
    case = seed.case("expired")
    person("staff", case.owner_id).open_entry(case.order_id, "")

    clock.advance(WINDOW + timedelta(seconds=1))
    seen = person("buyer", case.buyer_id).get_buyer_order_entry(case.order_id)

    assert seen.entry.state == pb.ENTRY_STATE_EXPIRED


def test_another_buyer_learns_nothing_not_even_that_the_order_exists(client, seed, person):
    case = seed.case("nosy")
    person("staff", case.owner_id).open_entry(case.order_id, "")
    nosy = person("buyer", "buyer-next-door")

    with pytest.raises(NotFound) as theirs:
        nosy.get_buyer_order_entry(case.order_id)
    with pytest.raises(NotFound) as nobodys:
        nosy.get_buyer_order_entry("order-nobody-has")

    assert theirs.value.resource == ("order", case.order_id)
    assert theirs.value.message == nobodys.value.message.replace("order-nobody-has", case.order_id)


def test_only_a_buyer_s_token_is_answered(client, seed, person):
    case = seed.case("tokens")

    with pytest.raises(Unauthenticated) as no_token:
        person().get_buyer_order_entry(case.order_id)
    with pytest.raises(PermissionDenied) as staff:
        person("staff", case.owner_id).get_buyer_order_entry(case.order_id)

    assert no_token.value.reason == "PERSON_NOT_AUTHENTICATED"
    assert staff.value.reason == "NOT_THE_AUTHENTICATED_PERSON"


@pytest.mark.parametrize("subject", ["b" * 129, " buyer-padded", "buyer\ttab"])
def test_a_signed_token_whose_subject_is_no_id_is_unauthenticated(client, seed, person, subject):
    """The token is refused as a whole, whichever call it comes with: not blamed on a request
    field the caller left empty, and not answered as a person nobody has."""
    case = seed.case("bad-subject")

    with pytest.raises(Unauthenticated) as page:
        person("buyer", subject).get_buyer_order_entry(case.order_id)
    with pytest.raises(Unauthenticated) as check:
        person("staff", subject).check_eligibility(case.order_id, "")

    assert page.value.reason == check.value.reason == "PERSON_NOT_AUTHENTICATED"
    assert "subject" in page.value.message


def test_a_server_that_checks_no_tokens_answers_no_one(service, seed):
    """Deny by default: without a login service to verify buyers, nobody is the buyer."""
    case = seed.case("open-server")
    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=3600).start()
    try:
        with Client(f"127.0.0.1:{app.port}") as anyone:
            with pytest.raises(Unauthenticated) as refused:
                anyone.get_buyer_order_entry(case.order_id)
    finally:
        app.stop(grace=1)

    assert refused.value.reason == "PERSON_NOT_AUTHENTICATED"


def fields(message: descriptor.Descriptor) -> set[str]:
    """Every field name of a message, nested messages' included (Timestamps as one field)."""
    names = set()
    for field in message.fields:
        names.add(field.name)
        if field.message_type is not None and field.message_type.full_name.startswith("aftersales"):
            names |= fields(field.message_type)
    return names


def test_the_buyer_s_view_holds_nothing_of_the_shop_s_money_staff_or_notes():
    assert fields(entry_pb2.BuyerOrderEntry.DESCRIPTOR) == {
        "order_id",
        "entry",
        "state",
        "opened_at",
        "expires_at",
        "used_at",
    }
