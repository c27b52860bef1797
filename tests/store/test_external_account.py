"""The external account (money outside the system) reads minus what every other account holds,
in one statement whose cost does not grow with the ledger: its row, which no transfer changes,
and the changes of the movements the sweep has not yet folded into it, which the database
notes as each transfer is inserted."""

from __future__ import annotations

import time

import pytest

from server.domain.model import EXTERNAL, TransferKind
from server.grpc.app import App
from server.service.unit_of_work import TransferExists
from server.store import SCHEMA_VERSION
from server.store.schema import ExternalChangeRow, SchemaVersionRow
from tests.store.factories import (
    a_normal_shop,
    counted_statements,
    request_id,
    statements_with_parameters,
    wallet_of,
)
from tests.store.test_ledger import assert_ledger_balances


def external(store) -> int:
    with store.unit_of_work(read_only=True) as uow:
        return uow.ledger.balances([EXTERNAL])[EXTERNAL]


def unfolded(store) -> list[int]:
    """The changes not yet folded into the external account's row, oldest first."""
    with store.unit_of_work(read_only=True):
        return [c.amount for c in ExternalChangeRow.select().order_by(ExternalChangeRow.id)]


def funds(service, shop_id: str, *amounts: int) -> None:
    for amount in amounts:
        service.post_funds(request_id(), wallet_of(shop_id), amount, "")


def test_the_external_account_holds_minus_the_rest_before_and_after_the_sweep_folds(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    a_normal_shop(service, "shop-b", wallet=0)
    funds(service, "shop-a", 1_000, -200)
    funds(service, "shop-b", 500)
    assert external(store) == -1_300
    assert unfolded(store) == [-1_000, 200, -500]

    assert service.fold_external_movements() == 3

    assert (external(store), unfolded(store)) == (-1_300, [])
    assert service.fold_external_movements() == 0  # nothing twice
    funds(service, "shop-b", -100)
    assert external(store) == -1_200
    assert_ledger_balances(store)


def test_a_transfer_posted_twice_is_noted_once(store, service, clock):
    a_normal_shop(service, "shop-a", wallet=0)

    def post() -> None:
        with store.unit_of_work() as uow:
            uow.ledger.post_transfer(
                from_account=EXTERNAL,
                to_account=wallet_of("shop-a"),
                amount=300,
                kind=TransferKind.FUNDS_IN,
                reference="once",
                idempotency_key="funds:noted-once",
                now=clock.now(),
                guard_from=False,
            )
            uow.commit()

    post()
    with pytest.raises(TransferExists):
        post()  # its INSERT skips the row: nothing is noted, and the rest rolls back

    assert unfolded(store) == [-300]
    assert external(store) == -300


def test_a_fold_takes_the_oldest_changes_at_most_its_batch_at_a_time(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 100, 200, 300, 400, 500)

    assert service.fold_external_movements(batch=2, batches=1) == 2
    assert (external(store), unfolded(store)) == (-1_500, [-300, -400, -500])

    assert service.fold_external_movements(batch=2) == 3  # batch after batch, to the end
    assert (external(store), unfolded(store)) == (-1_500, [])


def test_reading_the_external_account_with_others_is_one_statement(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 700)
    with counted_statements(store) as statements, store.unit_of_work(read_only=True) as uow:
        read = uow.ledger.balances([EXTERNAL, wallet_of("shop-a")])
    assert read == {EXTERNAL: -700, wallet_of("shop-a"): 700}
    assert len(statements) == 1


def test_a_read_of_other_accounts_does_not_add_up_the_external_changes(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 700)
    with statements_with_parameters(store) as statements:
        with store.unit_of_work(read_only=True) as uow:
            uow.ledger.balances([wallet_of("shop-a")])
            uow.ledger.balances_of("shop-a")
    assert statements and not any("external_change" in sql for sql, _ in statements)


def back_to_schema_8(store, *, postgres: bool) -> None:
    """As step 8 left it: no changes noted, nor their table, and the external account's row at
    zero (its balance was minus the sum of the others)."""
    database = store.database
    with store.session(), database.atomic():
        if postgres:
            database.execute_sql('DROP TRIGGER "transfer_external_change" ON "transfer"')
            database.execute_sql("DROP FUNCTION transfer_external_change()")
        else:
            database.execute_sql('DROP TRIGGER "transfer_external_change"')
        database.execute_sql('DROP TABLE "external_change"')
        database.execute_sql('UPDATE "account" SET "balance" = 0 WHERE "kind" = \'EXTERNAL\'')
        SchemaVersionRow.delete().where(SchemaVersionRow.version > 8).execute()


def test_schema_9_starts_the_external_row_at_minus_the_rest_and_notes_later_movements(
    store, service
):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 1_000, -300)
    back_to_schema_8(store, postgres=store.is_postgres)

    assert store.migrate() == SCHEMA_VERSION

    assert (external(store), unfolded(store)) == (-700, [])  # what came before is in the row
    # A replica still at step 8 inserts its transfers as before: the database notes them too.
    with store.unit_of_work() as uow:
        database, p = store.database, store.database.param
        ((wallet_id,),) = database.execute_sql(
            f'SELECT "id" FROM "account" WHERE "kind" = {p} AND "owner_id" = {p}',
            ["ANXIN_WALLET", "shop-a"],
        ).fetchall()
        database.execute_sql(
            'INSERT INTO "transfer" ("from_account_id", "to_account_id", "amount", "kind", '
            '"reference", "memo", "idempotency_key", "posted_at") '
            f"VALUES ({p}, {p}, 50, 'FUNDS_IN', 'old', '', 'old-replica-1', 0)",
            [store.fixed_account_ids[EXTERNAL], wallet_id],
        )
        database.execute_sql(
            f'UPDATE "account" SET "balance" = "balance" + 50 WHERE "id" = {p}', [wallet_id]
        )
        uow.commit()
    assert (external(store), unfolded(store)) == (-750, [-50])
    assert service.fold_external_movements() == 1
    assert external(store) == -750
    assert_ledger_balances(store)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_read_and_the_fold_read_no_transfer_nor_every_account(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 100)
    with statements_with_parameters(store) as statements:
        external(store)
        service.fold_external_movements()
    plans = []
    with store.session():
        for sql, params in statements:
            if sql.split()[0] in ("SELECT", "UPDATE", "DELETE", "WITH"):
                explained = store.database.execute_sql("EXPLAIN QUERY PLAN " + sql, params)
                plans += [detail for *_, detail in explained.fetchall()]
    assert not [d for d in plans if "transfer" in d], plans
    assert not [d for d in plans if d.startswith("SCAN") and "account" in d], plans


def test_the_server_s_sweeper_folds_them(store, service):
    a_normal_shop(service, "shop-a", wallet=0)
    funds(service, "shop-a", 400, 600)
    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=0.1).start()
    try:
        deadline = time.monotonic() + 10
        while unfolded(store):
            assert time.monotonic() < deadline, "the sweeper did not fold the changes"
            time.sleep(0.05)
    finally:
        app.stop(grace=1)
    assert external(store) == -1_000
