"""No statement an RPC runs reads a whole table, and no page sorts every row that matches: each
finds its rows through an index, so that its cost stays the same with a million orders as with
ten. Checked on SQLite, whose plans do not
depend on the tables' sizes (PostgreSQL's planner scans a table of a few rows whatever the
indexes, so its plans of an empty test database say nothing about a full one)."""

from __future__ import annotations

import re

import pytest

from aftersales.v1 import resources_pb2 as pb
from server.store.schema import MODELS, execute_sql
from tests.e2e.seed import wallet
from tests.e2e.test_batch_eligibility import a_mixed_batch
from tests.e2e.test_statement_counts import every_rpc

TABLES = {model._meta.table_name for model in MODELS}
# Read whole by design: the external account's changes not yet folded into its row, which the
# sweep empties (what came since the last one).
READ_WHOLE = {"external_change"}
# A plan's full read: "SCAN a" (SQLite 3.36 on), "SCAN TABLE account AS a" (before).
SCAN = re.compile(r"SCAN (?:TABLE )?(\S+)(?: AS (\S+))?")


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'aftersales.db'}"


@pytest.fixture
def statements(store):
    """Every statement the store runs meanwhile, with its parameters."""
    database = store.database
    ran: list[tuple[str, tuple]] = []
    original = database.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        ran.append((sql, tuple(params or ())))
        return original(sql, params, *args, **kwargs)

    database.execute_sql = recording
    yield ran
    del database.execute_sql


def _batch(seed, client):
    _, ids = a_mixed_batch(seed, client)
    return ids, "owner-batch"


def full_scans(store, sql, params):
    """The tables the statement's plan reads whole."""
    plan = execute_sql(store.database, "EXPLAIN QUERY PLAN " + sql, params).fetchall()
    scanned = []
    for *_, detail in plan:
        scan = SCAN.match(detail)
        if scan and scan.group(1) not in READ_WHOLE:
            name = scan.group(2) or scan.group(1)
            aliases = {alias: table for table in TABLES for alias in (table, *_aliases(sql, table))}
            if name in aliases:
                scanned.append(f"{aliases[name]} ({detail})")
    return scanned


def full_sort(store, sql, params):
    plan = execute_sql(store.database, "EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return any(detail == "USE TEMP B-TREE FOR ORDER BY" for *_, detail in plan)


def _aliases(sql, table):
    """The names `table` goes by in `sql` ("account" AS a)."""
    words = sql.replace('"', " ").split()
    return [
        words[i + 2]
        for i, word in enumerate(words[:-2])
        if word == table and words[i + 1].upper() == "AS"
    ]


def test_no_rpc_reads_a_whole_table(client, seed, clock, store, service, statements):
    names = {}

    def run(name, call):
        first = len(statements)
        result = call()
        for sql, params in statements[first:]:
            names.setdefault((sql, params), name)
        return result

    case = every_rpc(client, seed, clock, run)
    # A second entry and refund of the shop, so that each list has a second page.
    other = seed.order("order-budget-2", case.shop_id)
    client.open_entry(other.order_id, case.owner_id)
    client.record_refund(
        "refund-budget-2", other.order_id, 100, started_at=clock.now(), paid_at=clock.now()
    )
    shop_id, account = case.shop_id, wallet(case.shop_id)

    entries = run("ListEntries", lambda: client.list_entries(shop_id=shop_id, page_size=1))
    clawbacks = run("ListClawbacks", lambda: client.list_clawbacks(shop_id, page_size=1))
    transfers = run("ListTransfers", lambda: client.list_transfers(account, page_size=1))
    assert entries.next_page_token and clawbacks.next_page_token and transfers.next_page_token
    run(
        "ListEntries",
        lambda: client.list_entries(shop_id=shop_id, page_token=entries.next_page_token),
    )
    run("ListEntries", lambda: client.list_entries(shop_id=shop_id, state=pb.ENTRY_STATE_OPEN))
    run(
        "ListEntries",
        lambda: client.list_entries(order_id=other.order_id, state=pb.ENTRY_STATE_EXPIRED),
    )
    run(
        "ListClawbacks",
        lambda: client.list_clawbacks(shop_id, page_token=clawbacks.next_page_token),
    )
    run(
        "ListTransfers",
        lambda: client.list_transfers(account, page_token=transfers.next_page_token),
    )
    run("ListEvents", lambda: client.list_events(shop_id=shop_id, page_size=2))
    run("ListEvents", lambda: client.list_events(from_oldest=True))
    run("BatchCheckEligibility", lambda: client.batch_check_eligibility(*_batch(seed, client)))
    run("the sweeper's expiry", lambda: service.expire_entries())
    run("the sweeper's folding of external movements", lambda: service.fold_external_movements())
    clock.advance(service.policy.request_retention)
    run("the sweeper's forgetting of request ids", lambda: service.prune_requests())

    checked = [
        (name, sql, params)
        for (sql, params), name in names.items()
        if sql.split()[0].upper() in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE")
    ]
    assert len(checked) > 30
    scans = {
        (name, sql): found
        for name, sql, params in checked
        if (found := full_scans(store, sql, params))
    }
    assert scans == {}
    # A page is read in its order along an index and stops at its size; a sort of every row
    # that matches would grow with the shop. (A page of events is sorted once read: its rows
    # come from a range of positions, LIMIT-ed, in a subquery.)
    sorted_whole = {
        (name, sql)
        for name, sql, params in checked
        if name.startswith("List") and name != "ListEvents" and full_sort(store, sql, params)
    }
    assert sorted_whole == set()
