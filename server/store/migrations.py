"""Brings a database's schema to the version this server knows; safe when replicas start at once."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import peewee as pw

from server.domain.model import AccountKind
from server.store.events import EVENT_LOCK
from server.store.schema import (
    AUDITED,
    EVENTS_PRUNED_THROUGH,
    EXTERNAL_CHANGES_SUM_SQL,
    MODELS,
    AccountRow,
    EventRow,
    ExternalChangeRow,
    PendingDebtsRow,
    SchemaVersionRow,
    SettingRow,
    execute_sql,
    external_change_trigger_sql,
    to_us,
)

SCHEMA_VERSION = 9

# The namespace of the migration's PostgreSQL advisory lock (the first key of the two-key form).
MIGRATION_LOCK_SPACE = 726_0431


def _migrate_to_1(database: pw.Database) -> None:
    database.create_tables(MODELS, safe=True)
    AccountRow.insert_many(
        [{"kind": AccountKind.EXTERNAL.value}, {"kind": AccountKind.PLATFORM_COMMISSION.value}]
    ).execute()
    SettingRow.insert(name="page_token_key", value=secrets.token_hex(32)).execute()


def _migrate_to_2(database: pw.Database) -> None:
    """Who recorded each row (audit): two columns on the tables mutations write. (A database
    made by step 1 of this code has them already: step 1 creates the tables as they are now.)"""
    for table in AUDITED:
        present = {column.name for column in database.get_columns(table)}
        for column, length in (("recorded_by_service", 256), ("recorded_by_person", 192)):
            if column not in present:
                # A plain ADD COLUMN with a default, on both databases: no table rebuild, no
                # rewrite of existing rows (PostgreSQL keeps the default in the catalogue), and
                # replicas still running the schema before it keep writing.
                execute_sql(
                    database,
                    f'ALTER TABLE "{table}" ADD COLUMN "{column}" '
                    f"VARCHAR({length}) NOT NULL DEFAULT ''",
                )


def _migrate_to_3(database: pw.Database) -> None:
    """The payees whose debt recovery the sweeper goes on with (a new table, nothing rewritten;
    a database made by step 1 of this code has it already)."""
    database.create_tables([PendingDebtsRow], safe=True)


def _migrate_to_4(database: pw.Database) -> None:
    """The outbox of events, and the highest position pruned from it (none yet)."""
    database.create_tables([EventRow], safe=True)
    SettingRow.insert(name=EVENTS_PRUNED_THROUGH, value="0").on_conflict_ignore().execute()


def _migrate_to_5(database: pw.Database) -> None:
    """On PostgreSQL, the events' positions are drawn at commit, by the database (a deferred
    trigger), instead of under a lock the client takes before its last round trips: see
    store/events.py. Replicas still at step 4 keep working: they draw under the same lock,
    earlier."""
    if not isinstance(database, pw.PostgresqlDatabase):
        return
    lock_space, lock_key = EVENT_LOCK
    # The provisional positions the events are inserted with (their negatives).
    execute_sql(database, "CREATE SEQUENCE IF NOT EXISTS event_provisional_position")
    execute_sql(
        database,
        f"""
        CREATE OR REPLACE FUNCTION event_position_at_commit() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            -- A provisional position (below zero). A replica still at step 4 inserts its own,
            -- drawn under the same lock: left as it is.
            IF NEW."position" < 0 THEN
                -- Held until this transaction has ended: the next one draws after its commit.
                PERFORM pg_advisory_xact_lock({lock_space}, {lock_key});
                UPDATE "event" SET "position" = nextval(pg_get_serial_sequence('event', 'position'))
                WHERE "position" = NEW."position";
            END IF;
            RETURN NULL;
        END
        $$""",
    )
    execute_sql(
        database,
        'CREATE CONSTRAINT TRIGGER "event_position_at_commit" AFTER INSERT ON "event" '
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "EXECUTE FUNCTION event_position_at_commit()",
    )


# Indexes no query needs, that every write paid for: each foreign key's own index where another
# index begins with the key, and the events' time (pruning reads them by position).
_REDUNDANT_INDEXES = (
    "entry_order_id",  # entry_order_id_opened_at
    "clawback_line_clawback_id",  # clawback_line_clawback_id_line_no
    "transfer_from_account_id",  # transfer_from_newest
    "transfer_to_account_id",  # transfer_to_newest
    "event_occurred_at",
)


def _migrate_to_6(database: pw.Database) -> None:
    """Drops the indexes no query needs (a database made by step 1 of this code has none of
    them). Replicas still at step 5 read and write as before."""
    for name in _REDUNDANT_INDEXES:
        execute_sql(database, f'DROP INDEX IF EXISTS "{name}"')


def _migrate_to_7(database: pw.Database) -> None:
    """On PostgreSQL, the commit's draw of an event's position finds the event by its primary
    key, whatever the planner last learnt of the outbox's size. The draw runs under the lock
    every commit that writes events queues on (step 5); its statement is planned once per
    connection, and a plan made while the outbox was analysed nearly empty (a new deployment,
    a pruned outbox) scanned the whole table at every commit after it had grown, until the next
    ANALYZE: one commit's scan held up all the others. Replicas still at step 6 run the same
    function, now with this setting."""
    if not isinstance(database, pw.PostgresqlDatabase):
        return
    execute_sql(database, "ALTER FUNCTION event_position_at_commit() SET enable_seqscan = off")


def _migrate_to_8(database: pw.Database) -> None:
    """The request ids by age, for the sweep that forgets those older than the policy's
    retention (a database made by step 1 of this code has the index already). Building it holds
    the mutations back on PostgreSQL while it reads the table: where the table is large, build
    it first with `CREATE INDEX CONCURRENTLY "request_created_at" ON "request" ("created_at")`,
    which this step then finds (one such build that failed left the index invalid: it is made
    again; one still running is waited for by nobody: the step refuses until it has finished).
    Replicas still at step 7 write as before."""
    if isinstance(database, pw.PostgresqlDatabase):
        (invalid, building) = execute_sql(
            database,
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = "
            "to_regclass('request_created_at') AND NOT indisvalid), "
            "EXISTS (SELECT 1 FROM pg_stat_progress_create_index "
            "WHERE relid = to_regclass('request'))",
        ).fetchone()
        if building:
            # Still invalid while it is built: dropping it would wait for that build and hold
            # every mutation meanwhile.
            raise RuntimeError(
                'an index of the "request" table is being built (CREATE INDEX CONCURRENTLY): '
                "migrate once it has finished"
            )
        if invalid:
            execute_sql(database, 'DROP INDEX "request_created_at"')
    execute_sql(
        database, 'CREATE INDEX IF NOT EXISTS "request_created_at" ON "request" ("created_at")'
    )


def _migrate_to_9(database: pw.Database) -> None:
    """The external account's balance on its row, as every other account's, read in one
    statement of bounded cost (it was minus the sum of every other account, a read of them
    all). No writer changes that row (every movement from outside would queue on it): the
    database writes each movement's change into "external_change" as the transfer is inserted
    (a trigger, which replicas still at step 8 fire too), the sweep folds those into the row
    (Ledger.fold_external), and a read adds those not yet folded. The row starts at what the
    other accounts sum to. On PostgreSQL the transfers' inserts wait (reads go on) from the
    lock below to this step's commit, which reads the accounts once: no movement falls between
    that sum and the trigger."""
    postgres = isinstance(database, pw.PostgresqlDatabase)
    database.create_tables([ExternalChangeRow], safe=True)
    ((external_id,),) = execute_sql(
        database,
        f'SELECT "id" FROM "account" WHERE "kind" = {database.param}',
        [AccountKind.EXTERNAL.value],
    ).fetchall()
    if postgres:
        execute_sql(database, 'LOCK TABLE "transfer" IN SHARE ROW EXCLUSIVE MODE')
    for statement in external_change_trigger_sql(external_id, postgres=postgres):
        execute_sql(database, statement)
    # What the other accounts sum to, every movement committed before included and none after,
    # less the changes a read adds (none, unless the trigger was there already).
    execute_sql(
        database,
        'UPDATE "account" SET "balance" = -(SELECT COALESCE(SUM("balance"), 0) FROM "account" '
        f'WHERE "kind" <> {database.param}) - ({EXTERNAL_CHANGES_SUM_SQL}) '
        f'WHERE "id" = {database.param}',
        [AccountKind.EXTERNAL.value, external_id],
    )


# Index i brings the schema from version i to i + 1. Append; never edit a released step.
MIGRATIONS: list[Callable[[pw.Database], None]] = [
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
    _migrate_to_6,
    _migrate_to_7,
    _migrate_to_8,
    _migrate_to_9,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def run(database: pw.Database) -> int:
    """Brings the schema to SCHEMA_VERSION, in one transaction; returns it. Call it with a
    connection open."""
    with database.atomic():
        if isinstance(database, pw.PostgresqlDatabase):
            # Each statement sees what committed before it, whatever the database's default:
            # a step that reads under a lock it took (9) reads what came before the lock.
            execute_sql(database, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            # A migration may rewrite large tables: the per-call statement and lock timeouts
            # are not for it (this transaction only).
            execute_sql(database, "SET LOCAL statement_timeout = 0")
            execute_sql(database, "SET LOCAL lock_timeout = 0")
            execute_sql(database, "SELECT pg_advisory_xact_lock(%s, 0)", (MIGRATION_LOCK_SPACE,))
        database.create_tables([SchemaVersionRow], safe=True)
        current = schema_version()
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database schema is version {current}, newer than this server's "
                f"{SCHEMA_VERSION}"
            )
        now = to_us(datetime.now(UTC))
        for version in range(current, SCHEMA_VERSION):
            MIGRATIONS[version](database)
            SchemaVersionRow.create(version=version + 1, applied_at=now)
    return SCHEMA_VERSION


class SchemaNotCurrent(RuntimeError):
    """The database's schema is not at this server's version, and this start may not migrate."""


def check(database: pw.Database) -> int:
    """The schema's version, changing nothing; SchemaNotCurrent unless it is SCHEMA_VERSION."""
    current = schema_version() if database.table_exists(SchemaVersionRow._meta.table_name) else 0
    if current < SCHEMA_VERSION:
        raise SchemaNotCurrent(
            f"the database schema is version {current}, behind this server's {SCHEMA_VERSION}: "
            "migrate it first (`python -m server migrate`)"
        )
    if current > SCHEMA_VERSION:
        raise SchemaNotCurrent(
            f"the database schema is version {current}, newer than this server's {SCHEMA_VERSION}"
        )
    return current


def schema_version() -> int:
    return int(SchemaVersionRow.select(pw.fn.MAX(SchemaVersionRow.version)).scalar() or 0)
