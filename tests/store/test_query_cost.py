"""Each query on a hot path costs as much as a whole call: CheckEligibility and
OpenEntry must stay at a few statements, however long an order's or a shop's history grows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.errors import RulesRefused
from server.domain.model import AccountKind, AccountRef
from tests.store.factories import (
    a_normal_shop,
    an_eligible_order,
    an_eligible_setup,
    counted_statements,
    request_id,
    wallet_of,
)

CHECK_ELIGIBILITY_MAX = 2
# BEGIN and COMMIT included; a conflict is the INSERT's own answer (no savepoint).
OPEN_ENTRY_MAX = 5
# Accounts in the ledger of the planning test.
ACCOUNTS = 100_000


def test_check_eligibility_needs_at_most_two_statements(store, service):
    setup = an_eligible_setup(service)

    with counted_statements(store) as statements:
        assert service.check_eligibility(setup.order_id, setup.owner_id).decision.eligible

    assert len(statements) <= CHECK_ELIGIBILITY_MAX, statements


def test_open_entry_needs_at_most_eight_statements_with_its_transaction(store, service):
    setup = an_eligible_setup(service)

    with counted_statements(store) as statements:
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert len(statements) <= OPEN_ENTRY_MAX, statements
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT", statements


def test_a_refused_open_entry_costs_no_more_than_an_accepted_one(store, service):
    setup = an_eligible_setup(service)
    service.open_entry(setup.order_id, setup.owner_id, "")

    with counted_statements(store) as statements, pytest.raises(RulesRefused):
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert len(statements) <= OPEN_ENTRY_MAX, statements


def test_the_cost_does_not_grow_with_the_order_s_or_the_shop_s_history(store, service, clock):
    setup = an_eligible_setup(service)
    fresh = an_eligible_order(service, setup.shop_id, "fresh")
    for i in range(10):
        an_eligible_order(service, setup.shop_id, f"other-{i}")
    with counted_statements(store) as check_fresh:
        service.check_eligibility(fresh, setup.owner_id)
    with counted_statements(store) as open_fresh:
        service.open_entry(fresh, setup.owner_id, "")

    for i in range(10):
        service.open_entry(f"other-{i}", setup.owner_id, "")
    for _ in range(5):
        service.open_entry(setup.order_id, setup.owner_id, "")
        clock.advance(service.policy.entry_window + timedelta(seconds=1))
        service.expire_entries()
    with counted_statements(store) as check_old:
        service.check_eligibility(setup.order_id, setup.owner_id)
    with counted_statements(store) as open_old:
        service.open_entry(setup.order_id, setup.owner_id, "")

    assert len(check_old) == len(check_fresh), (check_fresh, check_old)
    assert len(open_old) == len(open_fresh), (open_fresh, open_old)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgresql_plans_the_statements_of_a_posting_once_per_connection(store, service):
    # A statement PostgreSQL plans on each call costs its CPU 0.2-0.4 ms more each time; the
    # driver prepares a statement from its 5th run, after which PostgreSQL tries 5 custom plans
    # before keeping a generic one if it costs no more. In a ledger of a platform's size: on a
    # small table every plan is cheap.
    store.database.execute_sql(
        'INSERT INTO "account" ("kind", "owner_id", "balance") '
        "SELECT 'cash', 'payee-' || n, 0 FROM generate_series(1, %s) AS n",
        (ACCOUNTS,),
    )
    store.database.execute_sql('ANALYZE "account"')
    shop_id = a_normal_shop(service)
    payee = AccountRef(AccountKind.CASH, "kol-1")
    for _ in range(20):
        service.post_funds(request_id(), wallet_of(shop_id), 100, "top-up")
        service.post_funds(request_id(), payee, 100, "commission")

    planned = store.database.execute_sql(
        "SELECT custom_plans, generic_plans, statement FROM pg_prepared_statements"
    ).fetchall()

    assert planned, "the driver prepared none of the statements"
    assert [(c, g, sql[:120]) for c, g, sql in planned if c > 5] == []
