"""The access table: deny by default, grants by method or whole service, typos refused."""

from __future__ import annotations

import pytest

from server import settings
from server.domain import access
from server.domain.errors import NotTheAuthenticatedPerson
from server.grpc.app import METHOD_NAMES

# A table's start, up to one identity's keys.
A = 'version = "v"\n[identities.a]\n'

KNOWN = ["aftersales.v1.Sync/PutOrder", "aftersales.v1.Sync/PutShop", "aftersales.v1.Clawback/X"]


def table(text: str) -> access.AccessTable:
    import tomllib

    return access.parse(tomllib.loads(text), KNOWN)


def test_an_identity_may_call_only_what_it_is_granted():
    t = table('version = "v"\n[identities.a]\nmethods = ["aftersales.v1.Sync/PutOrder"]\n')

    assert t.allows("a", "aftersales.v1.Sync/PutOrder")
    assert not t.allows("a", "aftersales.v1.Sync/PutShop")
    assert not t.allows("b", "aftersales.v1.Sync/PutOrder")
    assert not t.allows("", "aftersales.v1.Sync/PutOrder")


def test_a_whole_service_may_be_granted():
    t = table('version = "v"\n[identities.a]\nmethods = ["aftersales.v1.Sync/*"]\n')

    assert t.allows("a", "aftersales.v1.Sync/PutShop")
    assert not t.allows("a", "aftersales.v1.Clawback/X")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[identities.a]\nmethods = []\n", id="no-version"),
        pytest.param(A + 'methods = ["aftersales.v1.Sync/PutOrdr"]\n', id="typo"),
        pytest.param(A + 'methods = ["aftersales.v1.Nope/*"]\n', id="unknown-service"),
        pytest.param(A + 'methods = "aftersales.v1.Sync/*"\n', id="not-a-list"),
        pytest.param(A + "method = []\n", id="unknown-key"),
        pytest.param('version = "v"\nextra = 1\n', id="unknown-setting"),
        pytest.param('version = "v"\n[identities.""]\nmethods = []\n', id="empty-identity"),
    ],
)
def test_a_malformed_table_is_refused(text):
    with pytest.raises(access.AccessTableError):
        table(text)


def test_the_shipped_table_loads_and_grants_only_real_methods():
    shipped = settings.load_access(METHOD_NAMES)

    assert shipped.grants
    for methods in shipped.grants.values():
        assert methods <= set(METHOD_NAMES)


def test_money_moves_only_for_the_systems_that_own_it():
    shipped = settings.load_access(METHOD_NAMES)
    movers = {
        method: sorted(i for i in shipped.grants if shipped.allows(i, method))
        for method in ("aftersales.v1.Sync/PostFunds", "aftersales.v1.Clawback/RecordRefund")
    }

    assert movers == {
        "aftersales.v1.Sync/PostFunds": ["spiffe://platform/wallet-system"],
        "aftersales.v1.Clawback/RecordRefund": ["spiffe://platform/refund-system"],
    }


def test_a_front_end_acts_for_the_kind_of_person_the_table_says():
    t = table(A + 'acts_for = "staff"\nmethods = ["aftersales.v1.Sync/PutOrder"]\n')

    assert t.acts_for == {"a": access.PersonKind.STAFF}
    with pytest.raises(access.AccessTableError):
        table(A + 'acts_for = "admin"\nmethods = []\n')


STAFF = access.Person(access.PersonKind.STAFF, "staff-1")


@pytest.mark.parametrize(
    ("caller", "named", "acting"),
    [
        pytest.param(None, "staff-9", "staff-9", id="no-caller-the-request-names-it"),
        pytest.param(access.Caller("svc"), "staff-9", "staff-9", id="a-service-acting-for-no-one"),
        pytest.param(access.Caller("svc", STAFF), "", "staff-1", id="the-token-s-subject"),
        pytest.param(access.Caller("svc", STAFF), "staff-1", "staff-1", id="the-same-named"),
    ],
)
def test_the_person_acting_is_the_token_s_subject_when_there_is_one(caller, named, acting):
    assert access.acting_person(caller, access.PersonKind.STAFF, named) == acting


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        pytest.param(access.PersonKind.STAFF, "staff-2", id="another-staff-member-named"),
        pytest.param(access.PersonKind.BUYER, "", id="a-staff-token-where-a-buyer-acts"),
    ],
)
def test_a_request_cannot_act_for_someone_else_than_its_token(kind, named):
    with pytest.raises(NotTheAuthenticatedPerson):
        access.acting_person(access.Caller("svc", STAFF), kind, named)
