"""What each RPC costs the database, counted through the whole server (gRPC, idempotency, use
case, store): the budget of every call, BEGIN and COMMIT included. A change that adds a
statement to a hot path fails here, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import Client
from server.certs import DEV_AUDIENCE, DEV_ISSUER, TokenKey
from server.grpc.app import App
from server.grpc.tokens import TokenSettings, TokenVerifier
from tests.e2e.seed import PAID, Seed, deposit, wallet
from tests.e2e.test_batch_eligibility import a_mixed_batch
from tests.store.factories import counted_statements

# Statements per call, at most. A late refund with a 4-line clawback (influencer, group leader,
# affiliate, technical service fee) is the largest write.
# PostgreSQL's counts. A mutation that tells something writes its events and its response with
# one statement there, and a refund its rows with one; SQLite needs more statements for them
# (SQLITE_MORE) but takes no advisory locks (its write transactions are exclusive).
BUDGET = {
    "CheckEligibility": 1,
    # 500 orders (the most one call names), ids nobody has and another shop's among them.
    "BatchCheckEligibility": 1,
    "OpenEntry": 6,
    "ApplyAfterSales": 8,
    "GetEntry": 1,
    "GetBuyerOrderEntry": 2,
    "ListEntries": 1,
    # A new shop's: its previous state read, written, no event (it did not change status).
    "PutShop": 5,
    "PutStaff": 4,
    "PutOrder": 5,
    "PostFunds": 8,
    # Into an influencer's cash, whose debts it would pay first (it owes none here).
    "PostFunds to a payee's cash": 8,
    # A late refund's payees whose older debts are still being paid are read with one more
    # statement (their cash is those debts' first: rules.recover).
    "PreviewClawback": 3,
    "RecordRefund": 13,
    # Its shop's and payees' accounts made by another process (a replica): one more statement,
    # which makes those that do not exist before they are locked.
    "RecordRefund on accounts this process has not seen": 14,
    "GetClawback": 2,
    # The page, then the lines of its clawbacks.
    "ListClawbacks": 2,
    # The account's id, then its page.
    "ListTransfers": 2,
    "ListEvents": 1,
    # The entry it replaces, expired but not yet swept, is marked so by one more statement.
    "OpenEntry of an order whose entry expired unswept": 7,
    "GetBalances": 1,
    "GetBalances of an owner": 1,
    "GetBalances of accounts and an owner": 2,
    # An owner without both a wallet and a deposit money has reached: whether it is a shop, whose
    # wallet and deposit are then shown at zero, is read with one more statement.
    "GetBalances of a shop money has not reached": 2,
    "GetBalances of a payee": 2,
    # With the changes of the movements to and from the outside the sweep has not yet folded.
    "GetBalances of the external account and a wallet": 1,
}

SQLITE_MORE = {
    "OpenEntry": 1,
    "OpenEntry of an order whose entry expired unswept": 1,
    "ApplyAfterSales": 1,
    "PostFunds": 1,
    "PostFunds to a payee's cash": 1,
    "RecordRefund": 5,
    "RecordRefund on accounts this process has not seen": 5,
}

LINES = (
    (pb.PAYEE_KIND_INFLUENCER, "kol-1", 3_000),
    (pb.PAYEE_KIND_GROUP_LEADER, "leader-1", 2_000),
    (pb.PAYEE_KIND_AFFILIATE, "affiliate-1", 1_000),
    (pb.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "", 500),
)


@pytest.fixture
def counted(store):
    """counted(name, call): runs call() and checks its statements against BUDGET[name]."""
    spent = {}

    def count(name, call):
        with counted_statements(store) as statements:
            result = call()
        spent[name] = len(statements)
        assert statements[-1] != "ROLLBACK", statements
        budget = BUDGET[name] + (0 if store.is_postgres else SQLITE_MORE.get(name, 0))
        assert len(statements) <= budget, (name, len(statements), statements)
        return result

    yield count
    print("statements per call:", spent)


def a_lined_order(client, seed, name):
    """An order with a 4-line commission, of a shop and payees whose accounts have moved money
    before, as on a platform in service (an account met for the first time is made as it is
    locked: one statement more)."""
    case = seed.case(name)
    seed.funds(deposit(case.shop_id), PAID)
    order = seed.order(case.order_id, case.shop_id)
    del order.commission_lines[:]
    for kind, payee, amount in LINES:
        order.commission_lines.add(payee_kind=kind, payee_id=payee, amount=amount)
        if payee:
            seed.funds(pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id=payee), amount)
    return case, order


def refund_in_full(client, clock, case, application, refund_id):
    """The late refund of the whole paid amount through `application`, paid now."""
    return client.record_refund(
        refund_id,
        case.order_id,
        PAID,
        application_id=application.application_id,
        started_at=clock.now(),
        paid_at=clock.now(),
    )


def test_every_rpc_keeps_to_its_statement_budget(client, seed, clock, counted):
    every_rpc(client, seed, clock, counted)


def every_rpc(client, seed, clock, run):
    """Calls each RPC once, on one order with a 4-line commission, through run(name, call)."""
    case, order = a_lined_order(client, seed, "budget")

    run("PutOrder", lambda: client.put_order(order))
    run("CheckEligibility", lambda: client.check_eligibility(case.order_id, case.owner_id))
    entry = run("OpenEntry", lambda: client.open_entry(case.order_id, case.owner_id))
    run("GetEntry", lambda: client.get_entry(entry.entry_id))
    run("ListEntries", lambda: client.list_entries(shop_id=case.shop_id))
    application = run(
        "ApplyAfterSales", lambda: client.apply_after_sales(case.order_id, case.buyer_id, PAID)
    )
    run("PreviewClawback", lambda: client.preview_clawback(case.order_id, PAID))
    clawback = run(
        "RecordRefund", lambda: refund_in_full(client, clock, case, application, "refund-budget")
    )
    assert clawback.state == pb.CLAWBACK_STATE_RECOVERED and len(clawback.lines) == 4
    run("GetClawback", lambda: client.get_clawback(clawback_id=clawback.clawback_id))
    listed = run("ListClawbacks", lambda: client.list_clawbacks(case.shop_id))
    assert [c.clawback_id for c in listed.clawbacks] == [clawback.clawback_id]
    transfers = run("ListTransfers", lambda: client.list_transfers(wallet(case.shop_id)))
    assert transfers.transfers
    events = run("ListEvents", lambda: client.list_events())
    assert events.events
    run("GetBalances", lambda: client.get_balances([wallet(case.shop_id), deposit(case.shop_id)]))
    run("GetBalances of an owner", lambda: client.get_balances(owner_id=case.shop_id))
    both = run(
        "GetBalances of accounts and an owner",
        lambda: client.get_balances([wallet(case.shop_id)], owner_id=case.shop_id),
    )
    assert list(both) == [
        (pb.ACCOUNT_KIND_ANXIN_WALLET, case.shop_id),
        (pb.ACCOUNT_KIND_DEPOSIT, case.shop_id),
    ]
    run("PostFunds", lambda: client.post_funds(wallet(case.shop_id), 1_000))
    cash = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id="kol-1")
    run("PostFunds to a payee's cash", lambda: client.post_funds(cash, 1_000))
    run("PutShop", lambda: seed.shop("shop-budget-new"))
    run("PutStaff", lambda: seed.staff("staff-budget-new", "shop-budget-new"))
    unfunded = run(
        "GetBalances of a shop money has not reached",
        lambda: client.get_balances(owner_id="shop-budget-new"),
    )
    assert set(unfunded.values()) == {0} and len(unfunded) == 2
    payee = run("GetBalances of a payee", lambda: client.get_balances(owner_id="kol-1"))
    assert list(payee) == [(pb.ACCOUNT_KIND_CASH, "kol-1")]
    outside = pb.AccountRef(kind=pb.ACCOUNT_KIND_EXTERNAL)
    both = run(
        "GetBalances of the external account and a wallet",
        lambda: client.get_balances([outside, wallet(case.shop_id)]),
    )
    assert both[(pb.ACCOUNT_KIND_EXTERNAL, "")] < 0  # money came in from outside
    return case


def test_a_refund_on_accounts_another_process_made_keeps_to_its_budget(
    client, seed, clock, counted, store
):
    case, order = a_lined_order(client, seed, "unseen")
    client.put_order(order)
    client.open_entry(case.order_id, case.owner_id)
    application = client.apply_after_sales(case.order_id, case.buyer_id, PAID)
    store.forget_accounts()  # as in a process that did not make them

    clawback = counted(
        "RecordRefund on accounts this process has not seen",
        lambda: refund_in_full(client, clock, case, application, "refund-unseen"),
    )

    assert clawback.state == pb.CLAWBACK_STATE_RECOVERED and len(clawback.lines) == 4


def test_re_opening_an_entry_that_expired_unswept_keeps_to_its_budget(
    client, seed, clock, counted, service
):
    case = seed.case("reopen-budget")
    first = client.open_entry(case.order_id, case.owner_id)
    clock.advance(service.policy.entry_window + timedelta(seconds=1))  # the sweeper has not run

    again = counted(
        "OpenEntry of an order whose entry expired unswept",
        lambda: client.open_entry(case.order_id, case.owner_id),
    )

    assert again.entry_id != first.entry_id
    assert client.get_entry(first.entry_id).state == pb.ENTRY_STATE_EXPIRED


def test_a_batch_check_of_500_orders_reads_them_in_one_statement(client, seed, counted):
    _, ids = a_mixed_batch(seed, client)

    batch = counted(
        "BatchCheckEligibility", lambda: client.batch_check_eligibility(ids, "owner-batch")
    )

    assert len(batch.results) == 500


def test_the_buyer_s_order_page_keeps_to_its_budget(service, clock, counted, tmp_path):
    login = TokenKey()
    (tmp_path / "jwks.json").write_text(json.dumps(login.jwks()), encoding="utf-8")
    tokens = TokenVerifier(TokenSettings(tmp_path / "jwks.json", DEV_ISSUER, DEV_AUDIENCE))
    app = App(service, "127.0.0.1:0", workers=2, tokens=tokens, sweep_interval=3600).start()
    address = f"127.0.0.1:{app.port}"
    try:
        with Client(address) as feeder:
            case = Seed(feeder, clock).case("page-budget")
        with Client(address, token=login.mint(case.owner_id, "staff")) as staff:
            staff.open_entry(case.order_id, "")
        with Client(address, token=login.mint(case.buyer_id, "buyer")) as buyer:
            page = counted("GetBuyerOrderEntry", lambda: buyer.get_buyer_order_entry(case.order_id))
    finally:
        app.stop(grace=1)

    assert page.entry.state == pb.ENTRY_STATE_OPEN
