"""The access table: deny by default, grants by method or whole service, typos refused."""

from __future__ import annotations

import pytest

from server.domain import access
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
    shipped = access.load(METHOD_NAMES)

    assert shipped.grants
    for methods in shipped.grants.values():
        assert methods <= set(METHOD_NAMES)


def test_money_moves_only_for_the_systems_that_own_it():
    shipped = access.load(METHOD_NAMES)
    movers = {
        method: sorted(i for i in shipped.grants if shipped.allows(i, method))
        for method in ("aftersales.v1.Sync/PostFunds", "aftersales.v1.Clawback/RecordRefund")
    }

    assert movers == {
        "aftersales.v1.Sync/PostFunds": ["spiffe://platform/wallet-system"],
        "aftersales.v1.Clawback/RecordRefund": ["spiffe://platform/refund-system"],
    }
