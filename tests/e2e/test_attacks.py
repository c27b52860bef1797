"""The attacks that once succeeded against an open server, each refused now, on SQLite and
PostgreSQL: with no credentials at all (refused at the TLS handshake), and with the best
credentials each kind of outsider could hold (a buyer's, another shop's staff member's, an
engineer's). Afterwards the database holds exactly what the demo wrote.
"""

from __future__ import annotations

import grpc
import pytest

from aftersales.v1 import resources_pb2 as pb
from server.domain.model import AccountKind, AccountRef
from server.store import SqlStore, open_database
from tests.e2e.test_callers import a_secured_server, call, channel

BACKOFFICE = "spiffe://platform/merchant-backoffice"
BUYER_APP = "spiffe://platform/buyer-app"
CONSOLE = "spiffe://platform/operator-console"

SUNNY_WALLET = {"kind": pb.ACCOUNT_KIND_ANXIN_WALLET, "owner_id": "shop-sunny"}
MIA_CASH = {"kind": pb.ACCOUNT_KIND_CASH, "owner_id": "kol-mia"}

# name: (method, request fields)
ATTACKS = {
    "withdraw from a shop's wallet": (
        "aftersales.v1.Sync/PostFunds",
        {"account": SUNNY_WALLET, "amount": -100_000, "request_id": "attack-withdraw-wallet"},
    ),
    "withdraw from an influencer's cash": (
        "aftersales.v1.Sync/PostFunds",
        {"account": MIA_CASH, "amount": -10_000, "request_id": "attack-withdraw-cash"},
    ),
    "make a stranger the shop's owner": (
        "aftersales.v1.Sync/PutStaff",
        {"staff": {"staff_id": "mallory", "shop_id": "shop-sunny", "role": 1}},
    ),
    "promote a CS agent to CS admin": (
        "aftersales.v1.Sync/PutStaff",
        {"staff": {"staff_id": "staff-agent", "shop_id": "shop-sunny", "role": 3}},
    ),
    "suspend a shop": (
        "aftersales.v1.Sync/PutShop",
        {"shop": {"shop_id": "shop-sunny", "name": "x", "status": pb.SHOP_STATUS_SUSPENDED}},
    ),
    "re-point an order's buyer": (
        "aftersales.v1.Sync/PutOrder",
        {"order": {"order_id": "order-eligible", "shop_id": "shop-sunny", "buyer_id": "mallory"}},
    ),
    "open an entry as the shop's owner": (
        "aftersales.v1.AfterSalesEntry/OpenEntry",
        {"order_id": "order-eligible", "operator_id": "staff-owner", "request_id": "attack-open"},
    ),
    "apply as the order's buyer": (
        "aftersales.v1.AfterSalesEntry/ApplyAfterSales",
        {
            "order_id": "order-eligible",
            "buyer_id": "buyer-eligible",
            "amount": 100,
            "request_id": "attack-apply",
        },
    ),
    "record a refund paid out of the shop's wallet": (
        "aftersales.v1.Clawback/RecordRefund",
        {
            "refund_id": "attack-refund",
            "order_id": "order-eligible",
            "amount": 129_900,
            "started_at": {"seconds": 1_800_000_000},
            "paid_at": {"seconds": 1_800_000_000},
            "request_id": "attack-refund-request",
        },
    ),
    "read a shop's entries": (
        "aftersales.v1.AfterSalesEntry/ListEntries",
        {"shop_id": "shop-sunny"},
    ),
    "read a shop's balances": ("aftersales.v1.Clawback/GetBalances", {"owner_id": "shop-sunny"}),
    "read a shop's transfers": ("aftersales.v1.Clawback/ListTransfers", {"account": SUNNY_WALLET}),
    "read a shop's clawbacks": ("aftersales.v1.Clawback/ListClawbacks", {"shop_id": "shop-sunny"}),
}

PD, NF, OK = "PERMISSION_DENIED", "NOT_FOUND", "OK"
# What each outsider gets, in ATTACKS' order. An engineer reads (by design), never writes.
EXPECTED = {
    "a buyer (buyer app, own token)": [PD] * 13,
    "another shop's owner (back office, own token)": [PD, PD, PD, PD, PD, PD, PD, PD, PD]
    + [NF] * 4,
    "an engineer (operator console)": [PD] * 9 + [OK] * 4,
}
PERSONAS = {
    "a buyer (buyer app, own token)": (BUYER_APP, "buyer", "buyer-mallory"),
    "another shop's owner (back office, own token)": (BACKOFFICE, "staff", "pine-owner"),
    "an engineer (operator console)": (CONSOLE, None, None),
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def attacked(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacked")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'aftersales.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database("attacked")
    with a_secured_server(folder, url) as running:
        yield running, url


def request_fields(fields: dict) -> dict:
    """Plain dicts to messages, for the generic call."""
    from google.protobuf import json_format, timestamp_pb2

    converted = {}
    for name, value in fields.items():
        if name == "account":
            converted[name] = pb.AccountRef(**value)
        elif name in ("started_at", "paid_at"):
            converted[name] = timestamp_pb2.Timestamp(**value)
        elif name in ("staff", "shop", "order"):
            message = {"staff": pb.Staff, "shop": pb.Shop, "order": pb.Order}[name]()
            json_format.ParseDict(value, message)
            converted[name] = message
        else:
            converted[name] = value
    return converted


def code_of(error: grpc.RpcError | None) -> str:
    return "OK" if error is None else error.code().name


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_with_no_credentials_every_attack_is_refused_at_the_handshake(attacked, attack):
    secured, _ = attacked
    method, fields = ATTACKS[attack]
    with channel(secured, None) as ch:
        assert code_of(call(ch, method, None, **request_fields(fields))) == "UNAVAILABLE"


@pytest.mark.parametrize("persona", list(PERSONAS))
def test_each_outsider_gets_a_refusal_for_every_attack_and_nothing_changes(attacked, persona):
    secured, url = attacked
    identity, kind, person = PERSONAS[persona]
    before = database_facts(url)
    token = secured.login.mint(person, kind) if kind else None
    got = []
    with channel(secured, identity) as ch:
        for method, fields in ATTACKS.values():
            got.append(code_of(call(ch, method, token, **request_fields(fields))))

    assert dict(zip(ATTACKS, got, strict=True)) == dict(
        zip(ATTACKS, EXPECTED[persona], strict=True)
    )
    assert database_facts(url) == before


def database_facts(url: str) -> dict:
    """What the attacks aimed at, read straight from the database."""
    store = SqlStore(open_database(url))
    try:
        with store.unit_of_work(read_only=True) as uow:
            balances = uow.ledger.balances(
                [
                    AccountRef(AccountKind.ANXIN_WALLET, "shop-sunny"),
                    AccountRef(AccountKind.CASH, "kol-mia"),
                ]
            )
            return {
                "balances": balances,
                "owner": uow.facts.staff("staff-owner"),
                "agent": uow.facts.staff("staff-agent"),
                "shop": uow.facts.shop("shop-sunny"),
                "order": uow.facts.order("order-eligible"),
                "entries": uow.entries.list_entries(
                    shop_id="shop-sunny",
                    order_id=None,
                    states=None,
                    now=uow.facts.order("order-eligible").created_at,
                    after=None,
                    limit=10,
                ),
                "mallory": uow.facts.order_or_none("mallory"),
                "refund": uow.clawbacks.clawback_of_refund("attack-refund"),
            }
    finally:
        store.close()
