"""The schema is created and versioned at start-up, and a newer schema stops an older server."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg
import pytest

from server.domain.model import Shop, ShopStatus
from server.service import RequestKey, Service
from server.store import SCHEMA_VERSION, SqlStore, open_database
from server.store.database import sqlite_path
from server.store.schema import SchemaVersionRow
from tests.store.factories import at_once

TABLES = {
    "shop",
    "staff",
    "orders",
    "entry",
    "application",
    "account",
    "transfer",
    "request",
    "schema_version",
}


@pytest.fixture
def empty_store(database_url):
    """A store on a database nothing has migrated yet (the `store` fixture migrates): on SQLite
    an empty file."""
    if database_url.startswith("sqlite"):
        sqlite3.connect(sqlite_path(database_url)).close()
    store = SqlStore(open_database(database_url))
    yield store
    store.close()


def versions_recorded(store: SqlStore) -> list[int]:
    with store.session():
        return [row.version for row in SchemaVersionRow.select().order_by(SchemaVersionRow.version)]


def test_migrate_creates_every_table_and_records_the_schema_version(empty_store):
    with empty_store.session():
        assert set(empty_store.database.get_tables()) & TABLES == set()

    assert empty_store.migrate() == SCHEMA_VERSION

    with empty_store.session():
        assert TABLES <= set(empty_store.database.get_tables())
    assert empty_store.schema_version() == SCHEMA_VERSION
    assert versions_recorded(empty_store) == list(range(1, SCHEMA_VERSION + 1))


def test_migrating_again_is_a_no_op_that_keeps_the_version_and_the_data(store, service):
    service.put_shop(Shop("shop-1", "Kept", ShopStatus.NORMAL, None))

    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION

    assert store.schema_version() == SCHEMA_VERSION
    assert versions_recorded(store) == list(range(1, SCHEMA_VERSION + 1))
    with store.unit_of_work(read_only=True) as uow:
        assert uow.facts.shop("shop-1").name == "Kept"


def test_replicas_migrating_the_same_database_at_once_apply_each_step_once(empty_store):
    outcomes = at_once(empty_store, 6, lambda _: empty_store.migrate())

    assert [o.error for o in outcomes] == [None] * 6
    assert [o.value for o in outcomes] == [SCHEMA_VERSION] * 6
    assert versions_recorded(empty_store) == list(range(1, SCHEMA_VERSION + 1))


def test_a_server_refuses_to_start_on_a_schema_newer_than_its_code(store, service, database_url):
    service.put_shop(Shop("shop-1", "Kept", ShopStatus.NORMAL, None))
    with store.unit_of_work() as uow:
        SchemaVersionRow.create(version=SCHEMA_VERSION + 1, applied_at=0)
        uow.commit()
    store.close()

    newer = SqlStore(open_database(database_url))
    try:
        with pytest.raises(RuntimeError, match="newer"):
            newer.migrate()
        assert newer.schema_version() == SCHEMA_VERSION + 1
        with newer.unit_of_work(read_only=True) as uow:
            assert uow.facts.shop("shop-1").name == "Kept"
    finally:
        newer.close()


def test_a_database_of_schema_1_gains_what_came_after_and_keeps_its_data(empty_store, clock):
    from server import demo, settings
    from server.service import Service
    from server.store.schema import AUDITED

    empty_store.migrate()
    demo.load(Service(empty_store, clock, settings.load_policy()))  # rows in every audited table
    # Back to schema 1: no audit columns, no pending debts, no events, version 1 recorded.
    database = empty_store.database
    with empty_store.session(), database.atomic():
        database.execute_sql('DROP TABLE "pending_debts"')
        for table in AUDITED:
            for column in ("recorded_by_service", "recorded_by_person"):
                database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        database.execute_sql('DROP TABLE "event"')
        database.execute_sql("DELETE FROM setting WHERE name = 'events_pruned_through'")
        SchemaVersionRow.delete().where(SchemaVersionRow.version > 1).execute()
    assert empty_store.schema_version() == 1

    assert empty_store.migrate() == SCHEMA_VERSION

    with empty_store.session():
        assert database.table_exists("pending_debts")
        assert database.table_exists("event")
        for table in AUDITED:
            columns = {c.name for c in database.get_columns(table)}
            assert {"recorded_by_service", "recorded_by_person"} <= columns, table
        # A replica still on schema 1 writes rows without the columns: the defaults fill them.
        database.execute_sql(
            "INSERT INTO shop (id, name, status, version) VALUES ('shop-old', 'Old', 'NORMAL', 0)"
        )
    with empty_store.unit_of_work(read_only=True) as uow:
        assert uow.facts.shop("shop-sunny").name == "Sunny Appliances"
        assert uow.facts.staff("staff-owner").shop_id == "shop-sunny"
        assert uow.facts.shop("shop-old").recorded_by.service == ""
        # Schema 3: the outbox, empty, nothing pruned.
        assert uow.events.held() == (0, 0)


REDUNDANT = {
    "entry_order_id": ("entry", "order_id"),
    "clawback_line_clawback_id": ("clawback_line", "clawback_id"),
    "transfer_from_account_id": ("transfer", "from_account_id"),
    "transfer_to_account_id": ("transfer", "to_account_id"),
    "event_occurred_at": ("event", "occurred_at"),
}


def index_names(store) -> set[str]:
    with store.session():
        return {
            index.name
            for table in ("entry", "clawback_line", "transfer", "event")
            for index in store.database.get_indexes(table)
        }


def test_schema_6_drops_the_indexes_every_write_paid_for_and_no_query_needs(empty_store):
    empty_store.migrate()
    assert not set(REDUNDANT) & index_names(empty_store)  # not made for a new database
    # Back to schema 5, with the indexes its code made.
    database = empty_store.database
    with empty_store.session(), database.atomic():
        for name, (table, column) in REDUNDANT.items():
            database.execute_sql(f'CREATE INDEX "{name}" ON "{table}" ("{column}")')
        SchemaVersionRow.delete().where(SchemaVersionRow.version > 5).execute()
    assert set(REDUNDANT) <= index_names(empty_store)

    assert empty_store.migrate() == SCHEMA_VERSION

    assert not set(REDUNDANT) & index_names(empty_store)
    # What served the queries is still there.
    assert {
        "entry_order_id_opened_at",
        "clawback_line_clawback_id_line_no",
        "transfer_from_newest",
        "transfer_to_newest",
    } <= index_names(empty_store)


def request_indexes(store) -> list[tuple[str, tuple[str, ...]]]:
    """The request table's indexes but its primary key's."""
    with store.session():
        return [
            (i.name, tuple(i.columns))
            for i in store.database.get_indexes("request")
            if tuple(i.columns) != ("request_id",)
        ]


def back_to_schema_7(store) -> None:
    database = store.database
    with store.session(), database.atomic():
        database.execute_sql('DROP INDEX "request_created_at"')
        SchemaVersionRow.delete().where(SchemaVersionRow.version > 7).execute()


def test_schema_8_indexes_the_request_ids_by_age_keeping_them(empty_store, clock, policy):
    empty_store.migrate()
    service = Service(empty_store, clock, policy)
    by_age = [("request_created_at", ("created_at",))]
    assert request_indexes(empty_store) == by_age  # made for a new database
    key = RequestKey("request-kept-1", "PostFunds", "f" * 64)
    assert service.once(key, lambda: b"stored") == b"stored"
    back_to_schema_7(empty_store)  # which had no such index
    assert request_indexes(empty_store) == []

    assert empty_store.migrate() == SCHEMA_VERSION

    assert request_indexes(empty_store) == by_age
    assert service.once(key, lambda: b"run again") == b"stored"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_schema_8_makes_again_an_index_a_failed_concurrent_build_left_invalid(empty_store):
    empty_store.migrate()
    back_to_schema_7(empty_store)
    database = empty_store.database
    with empty_store.session():
        # What a CREATE INDEX CONCURRENTLY that failed midway leaves: the index, marked invalid.
        database.execute_sql('CREATE INDEX "request_created_at" ON "request" ("created_at")')
        database.execute_sql(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'request_created_at'::regclass"
        )

    assert empty_store.migrate() == SCHEMA_VERSION

    with empty_store.session():
        valid = database.execute_sql(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'request_created_at'::regclass"
        ).fetchall()
    assert valid == [(True,)]


def migrated(store: SqlStore) -> BaseException | int:
    try:
        return store.migrate()
    except Exception as e:
        return e


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_schema_8_refuses_while_a_concurrent_build_of_its_index_runs(empty_store, database_url):
    """Dropping the index being built would wait for that build, holding every mutation: the
    step says so instead, and migrates once the build has finished."""
    empty_store.migrate()
    back_to_schema_7(empty_store)
    with psycopg.connect(database_url) as writer, psycopg.connect(database_url) as builder:
        # A write the concurrent build waits for; meanwhile its index is there, and invalid.
        writer.execute(
            "INSERT INTO request (request_id, method, fingerprint, response, created_at) "
            "VALUES ('request-open-1', 'PostFunds', '', '', 0)"
        )
        builder.autocommit = True
        build = threading.Thread(
            target=builder.execute,
            args=('CREATE INDEX CONCURRENTLY "request_created_at" ON "request" ("created_at")',),
        )
        build.start()
        try:
            with psycopg.connect(database_url, autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                while not watcher.execute(
                    "SELECT 1 FROM pg_stat_progress_create_index WHERE relid = 'request'::regclass"
                ).fetchall():
                    assert time.monotonic() < deadline, "the concurrent build did not start"
                    time.sleep(0.05)

            # On a thread: a step that waited for the build would hold the test, not fail it.
            outcome: list[BaseException | int] = []
            migrating = threading.Thread(target=lambda: outcome.append(migrated(empty_store)))
            migrating.start()
            migrating.join(timeout=20)
            assert len(outcome) == 1, "the migration waited for the build"
            assert isinstance(outcome[0], RuntimeError) and "is being built" in str(outcome[0])
        finally:
            writer.rollback()
            build.join(timeout=30)

    assert empty_store.migrate() == SCHEMA_VERSION
    assert request_indexes(empty_store) == [("request_created_at", ("created_at",))]
