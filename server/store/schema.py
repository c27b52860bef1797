"""The tables, as peewee models, and how values are stored in them.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable and
ordered the same way on both databases. What the database itself guarantees, across server
replicas: at most one OPEN entry per order (a partial unique index), one transfer per
idempotency key, one response per request id.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import peewee as pw

from server.domain.model import Actor, EntryState
from server.service.paging import micros

db = pw.DatabaseProxy()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

D = TypeVar("D")
E = TypeVar("E", bound=enum.Enum)


# A statement's SQL and its parameters.
Statement = tuple[str, Sequence[Any]]

# Stored as the service's page positions hold them (one encoding: a position is a stored value).
to_us = micros


def at(us: int) -> datetime:
    """The moment `us` microseconds after the epoch: how times are read back."""
    return _EPOCH + timedelta(0, 0, us)  # (days, seconds, microseconds): positional is faster


def at_or_none(us: int | None) -> datetime | None:
    return None if us is None else at(us)


# Who recorded a row (server/domain/model.py, Actor): two columns on every table a mutation
# writes for a caller, recorded_by_service and recorded_by_person.
AUDITED = ("shop", "staff", "orders", "entry", "application", "refund", "transfer")


def audit_column(length: int) -> pw.CharField:
    """An audit column: empty unless set, by default in the database too, so that a replica of
    the schema before it can still write rows."""
    return pw.CharField(max_length=length, default="", constraints=[pw.SQL("DEFAULT ''")])


class _Base(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class ShopRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    name = pw.CharField(max_length=256, default="")
    status = pw.CharField(max_length=32)
    wallet_opened_at = pw.BigIntegerField(null=True)
    version = pw.BigIntegerField(default=0)
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "shop"


class StaffRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    shop = pw.ForeignKeyField(ShopRow, column_name="shop_id", backref="staff")
    role = pw.CharField(max_length=32)
    name = pw.CharField(max_length=256, default="")
    version = pw.BigIntegerField(default=0)
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "staff"


class OrderRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    shop = pw.ForeignKeyField(ShopRow, column_name="shop_id", backref="orders")
    buyer_id = pw.CharField(max_length=128)
    kind = pw.CharField(max_length=32)
    marketing_campaign = pw.BooleanField(default=False)
    category_id = pw.CharField(max_length=128, default="")
    paid_amount = pw.BigIntegerField()
    prior_refunded_amount = pw.BigIntegerField(default=0)
    recorded_refunded_amount = pw.BigIntegerField(default=0)
    created_at = pw.BigIntegerField()
    completed_at = pw.BigIntegerField(null=True)
    after_sales_ends_at = pw.BigIntegerField(null=True)
    # The commission lines, as a JSON list: they are always read and written with their order.
    commission_lines = pw.TextField(default="[]")
    version = pw.BigIntegerField(default=0)
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "orders"


class EntryRow(_Base):
    id = pw.CharField(primary_key=True, max_length=64)
    # Indexed by (order_id, opened_at) below: an index of its own would only cost each write.
    order = pw.ForeignKeyField(OrderRow, column_name="order_id", backref="entries", index=False)
    shop_id = pw.CharField(max_length=128)
    state = pw.CharField(max_length=16)
    opened_at = pw.BigIntegerField()
    expires_at = pw.BigIntegerField()
    operator_id = pw.CharField(max_length=128)
    note = pw.TextField(default="")
    policy_version = pw.CharField(max_length=64)
    used_at = pw.BigIntegerField(null=True)
    application_id = pw.CharField(max_length=64, null=True)
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "entry"
        indexes = ((("shop_id", "opened_at"), False), (("order_id", "opened_at"), False))


# An entry's state OPEN written into the SQL text, not as a parameter: a query on a partial index
# whose condition names a state must name the same state in its text, or the database plans
# without the index (SQLite then reads every OPEN entry in the state's index).
def is_open(entry: Any = EntryRow) -> pw.Expression:
    """`entry` (EntryRow or an alias of it) is stored as OPEN."""
    open_state: pw.Expression = entry.state == pw.SQL(f"'{EntryState.OPEN.value}'")
    return open_state


# At most one OPEN entry per order, whatever the number of replicas writing.
EntryRow.add_index(
    EntryRow.index(
        EntryRow.order,
        unique=True,
        where=(EntryRow.state == EntryState.OPEN.value),
        name="entry_one_open_per_order",
    ).safe(True)
)
EntryRow.add_index(
    EntryRow.index(EntryRow.state, EntryRow.expires_at, name="entry_state_expires_at").safe(True)
)


class ApplicationRow(_Base):
    id = pw.CharField(primary_key=True, max_length=64)
    order = pw.ForeignKeyField(OrderRow, column_name="order_id", backref="applications")
    entry = pw.ForeignKeyField(EntryRow, column_name="entry_id", unique=True)
    buyer_id = pw.CharField(max_length=128)
    amount = pw.BigIntegerField()
    reason = pw.TextField(default="")
    state = pw.CharField(max_length=16)
    filed_at = pw.BigIntegerField()
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "application"


class RefundRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    order = pw.ForeignKeyField(OrderRow, column_name="order_id", backref="refunds")
    application_id = pw.CharField(max_length=64, default="", index=True)
    amount = pw.BigIntegerField()
    started_at = pw.BigIntegerField()
    paid_at = pw.BigIntegerField()
    refunded_before = pw.BigIntegerField()
    refunded_after = pw.BigIntegerField()
    paid_from_wallet = pw.BigIntegerField()
    paid_from_deposit = pw.BigIntegerField()
    recorded_at = pw.BigIntegerField()
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "refund"


class ClawbackRow(_Base):
    id = pw.CharField(primary_key=True, max_length=64)
    refund = pw.ForeignKeyField(RefundRow, column_name="refund_id", unique=True)
    order_id = pw.CharField(max_length=128)
    shop_id = pw.CharField(max_length=128)
    # Derived from the lines; kept here so that lists can filter on it.
    state = pw.CharField(max_length=16)
    # The reasons it is NOT_ELIGIBLE, as a JSON list of [code, description].
    reasons = pw.TextField(default="[]")
    policy_version = pw.CharField(max_length=64)
    created_at = pw.BigIntegerField()

    class Meta:
        table_name = "clawback"
        indexes = ((("shop_id", "created_at"), False),)


class ClawbackLineRow(_Base):
    id = pw.BigAutoField()
    # Indexed by the unique (clawback_id, line_no) below.
    clawback = pw.ForeignKeyField(
        ClawbackRow, column_name="clawback_id", backref="lines", index=False
    )
    line_no = pw.IntegerField()
    payee_kind = pw.CharField(max_length=32)
    payee_id = pw.CharField(max_length=128, default="")
    commission = pw.BigIntegerField()
    due = pw.BigIntegerField()
    recovered = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "clawback_line"
        indexes = ((("clawback", "line_no"), True),)


# The payees' outstanding debts, oldest first, are read whenever money reaches a cash account.
ClawbackLineRow.add_index(
    ClawbackLineRow.index(ClawbackLineRow.payee_id, ClawbackLineRow.id, name="clawback_line_debt")
    .where(ClawbackLineRow.recovered < ClawbackLineRow.due)
    .safe(True)
)


class AccountRow(_Base):
    id = pw.AutoField()
    kind = pw.CharField(max_length=32)
    owner_id = pw.CharField(max_length=128, default="")
    # Maintained in the same transaction as every transfer (but for the external account's,
    # which the sweep brings up to date from "external_change": SqlLedger.fold_external); tests
    # check it against the transfers.
    balance = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "account"
        indexes = ((("kind", "owner_id"), True),)


class TransferRow(_Base):
    id = pw.BigAutoField()
    # Indexed by transfer_from_newest and transfer_to_newest below, which begin with them.
    from_account = pw.ForeignKeyField(AccountRow, column_name="from_account_id", index=False)
    to_account = pw.ForeignKeyField(AccountRow, column_name="to_account_id", index=False)
    amount = pw.BigIntegerField(constraints=[pw.Check("amount > 0")])
    kind = pw.CharField(max_length=32)
    reference = pw.CharField(max_length=256)
    memo = pw.CharField(max_length=256, default="")
    # Deterministic per movement (e.g. "funds:<request id>"): a retry never posts twice.
    idempotency_key = pw.CharField(max_length=256, unique=True)
    posted_at = pw.BigIntegerField()
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "transfer"


# Explicit names: peewee's default names could collide with the foreign keys' own indexes (as
# they were before schema step 6), and `IF NOT EXISTS` would then skip an index without a word.
TransferRow.add_index(
    TransferRow.index(TransferRow.from_account, TransferRow.id, name="transfer_from_newest").safe(
        True
    )
)
TransferRow.add_index(
    TransferRow.index(TransferRow.to_account, TransferRow.id, name="transfer_to_newest").safe(True)
)


class ExternalChangeRow(_Base):
    """What a movement to or from the outside changes of the external account's balance, until
    the sweep folds it into the account's row (SqlLedger.fold_external). Written by the
    database itself as the transfer is inserted (a trigger: external_change_trigger_sql), so no
    writer changes, or waits on, that one row; the table holds the movements since the last
    sweep, and a read of the external account adds them up."""

    id = pw.BigAutoField()
    amount = pw.BigIntegerField()  # the change: + into the account, - out of it

    class Meta:
        table_name = "external_change"


EXTERNAL_CHANGES_SUM_SQL = (
    # A bigint on both databases: PostgreSQL's sum of bigints is a numeric.
    'SELECT CAST(COALESCE(SUM("amount"), 0) AS BIGINT) FROM "external_change"'
)


def external_change_trigger_sql(external_id: int, *, postgres: bool) -> list[str]:
    """The statements that make the trigger which writes a movement to or from the external
    account (its id, a number this database gave it) into "external_change"; safe to run again."""
    account = int(external_id)
    involves = f'NEW."from_account_id" = {account} OR NEW."to_account_id" = {account}'
    change = f'CASE WHEN NEW."to_account_id" = {account} THEN NEW."amount" ELSE -NEW."amount" END'
    if not postgres:
        return [
            'CREATE TRIGGER IF NOT EXISTS "transfer_external_change" AFTER INSERT ON "transfer" '
            f'WHEN {involves} BEGIN INSERT INTO "external_change" ("amount") VALUES ({change}); '
            "END"
        ]
    return [
        "CREATE OR REPLACE FUNCTION transfer_external_change() RETURNS trigger "
        "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ BEGIN "
        f'INSERT INTO "external_change" ("amount") VALUES ({change}); RETURN NULL; END $$',
        'DROP TRIGGER IF EXISTS "transfer_external_change" ON "transfer"',
        'CREATE TRIGGER "transfer_external_change" AFTER INSERT ON "transfer" FOR EACH ROW '
        f"WHEN ({involves}) EXECUTE FUNCTION transfer_external_change()",
    ]


class PendingDebtsRow(_Base):
    """A payee whose debts outnumber what one transaction pays while money is left on its cash
    account: the sweeper pays on (SyncUseCases.settle_pending_debts). `recorded_by` posted the
    funds; the recoveries the sweeper posts are recorded in its name."""

    payee_id = pw.CharField(primary_key=True, max_length=128)
    noted_at = pw.BigIntegerField(index=True)
    recorded_by_service = audit_column(256)
    recorded_by_person = audit_column(192)

    class Meta:
        table_name = "pending_debts"


class EventRow(_Base):
    """The outbox: one row per event, written in the transaction of the change it tells. The
    position is the order consumers read in (see SqlEvents for why it is also commit order)."""

    position = pw.BigAutoField()
    type = pw.CharField(max_length=32)
    occurred_at = pw.BigIntegerField()
    shop_id = pw.CharField(max_length=128, default="")
    order_id = pw.CharField(max_length=128, default="")
    actor_service = pw.CharField(max_length=256, default="")
    actor_person = pw.CharField(max_length=192, default="")
    policy_version = pw.CharField(max_length=64, default="")
    # The typed payload as JSON (server/domain/events.py, payload_values).
    payload = pw.TextField()

    class Meta:
        table_name = "event"
        indexes = ((("shop_id", "position"), False),)


class RequestRow(_Base):
    request_id = pw.CharField(primary_key=True, max_length=128)
    method = pw.CharField(max_length=64)
    fingerprint = pw.CharField(max_length=64)
    response = pw.BlobField()
    created_at = pw.BigIntegerField()

    class Meta:
        table_name = "request"
        # The sweep prunes the oldest (retention): "request_created_at".
        indexes = ((("created_at",), False),)


# The setting that holds the highest event position pruned (retention), "0" when none.
EVENTS_PRUNED_THROUGH = "events_pruned_through"


class SettingRow(_Base):
    """Values every replica shares, made once by the first migration (e.g. the page token key)."""

    name = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()

    class Meta:
        table_name = "setting"


class SchemaVersionRow(_Base):
    version = pw.IntegerField(primary_key=True)
    applied_at = pw.BigIntegerField()

    class Meta:
        table_name = "schema_version"


MODELS = [
    ShopRow,
    StaffRow,
    OrderRow,
    EntryRow,
    ApplicationRow,
    RefundRow,
    ClawbackRow,
    ClawbackLineRow,
    AccountRow,
    TransferRow,
    ExternalChangeRow,
    PendingDebtsRow,
    EventRow,
    RequestRow,
    SettingRow,
    SchemaVersionRow,
]


def audit(actor: Actor) -> dict[str, str]:
    """The audit columns' values for a row recorded by `actor`."""
    return {"recorded_by_service": actor.service, "recorded_by_person": actor.person}


def actor_of(values: dict[str, Any]) -> Actor:
    """Who recorded a row, from its values by column name."""
    return actor(values.get("recorded_by_service") or "", values.get("recorded_by_person") or "")


# The services and people who record rows are few: one Actor each, shared by the rows read.
@functools.lru_cache(maxsize=4_096)
def actor(service: str, person: str) -> Actor:
    """Actor(service, person), made once for the rows that name it."""
    return Actor(service, person)


def restored(cls: type[D], **fields: Any) -> D:
    """A frozen dataclass of the domain made from a stored row, given every one of its fields:
    what `cls(**fields)` makes, without setting each field through object.__setattr__ as a
    frozen dataclass's __init__ does, the larger part of reading an entry. For a class with no
    __post_init__ and no __slots__ only (checked the first time)."""
    if cls not in _RESTORABLE:
        _check_restorable(cls, fields)
    made = object.__new__(cls)
    made.__dict__.update(fields)
    return made


_RESTORABLE: set[type] = set()


def _check_restorable(cls: type, fields: dict[str, Any]) -> None:
    params = getattr(cls, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
        raise TypeError(f"{cls.__name__} has a __post_init__ or __slots__")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(fields) != names:
        raise TypeError(f"{cls.__name__} needs exactly its fields, {sorted(names)}")
    _RESTORABLE.add(cls)


@functools.cache
def members(kind: type[E]) -> dict[Any, E]:
    """The members of enum `kind` by value: a lookup, where calling the enum costs as much as
    making a row's dataclass."""
    return {member.value: member for member in kind}


def us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def stand_in(name: str) -> str:
    """The stand-in for parameter `name` of a prepared query (SqlStore.prepared), which the
    query is built with and SqlStore.run_bound replaces with the call's value: a text no caller
    sends, as it begins with NUL, which no column holds either."""
    return "\x00" + name


# The stand-in for the one parameter of a prepared query (SqlStore.one), replaced when it runs.
KEY = stand_in("key")
# The stand-in for the LIMIT of a listing's prepared query.
LIMIT = stand_in("limit")


def execute_sql(database: pw.Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """Runs raw SQL: the few statements peewee's query builder does not say (advisory locks) or
    that are built once (hot queries); peewee's stubs leave execute_sql untyped."""
    return database.execute_sql(sql, params)  # type: ignore[no-untyped-call]


# Set-wise statements of the hot paths, as SQL text made once per shape. Building a statement of
# hundreds of rows with peewee costs far more than running it; these are plain lists of
# parameters, the same SQL on SQLite and PostgreSQL (`param` is the driver's placeholder).


def _name(identifier: str) -> str:
    return f'"{identifier}"'


@functools.lru_cache(maxsize=1024)
def insert_rows_sql(
    table: str, columns: tuple[str, ...], count: int, param: str, *, ignore_conflicts: bool
) -> str:
    """INSERT INTO table (columns) VALUES (...), ... for `count` rows."""
    row = "(" + ", ".join([param] * len(columns)) + ")"
    names = ", ".join(_name(c) for c in columns)
    sql = f"INSERT INTO {_name(table)} ({names}) VALUES " + ", ".join([row] * count)
    return sql + " ON CONFLICT DO NOTHING" if ignore_conflicts else sql


@functools.lru_cache(maxsize=1024)
def add_by_id_sql(table: str, column: str, count: int, param: str, *, floor: bool) -> str:
    """UPDATE table SET column = column + (the amount for each id) for `count` ids; parameters:
    (id, amount) pairs, then the ids. With `floor`, rows that would go below zero are left as
    they are, and the ids of the rows changed are returned."""
    name = _name(column)
    if count == 1:
        amount = param
    else:
        amount = 'CASE "id" ' + " ".join([f"WHEN {param} THEN {param}"] * count) + " END"
    ids = ", ".join([param] * count)
    sql = f'UPDATE {_name(table)} SET {name} = {name} + {amount} WHERE "id" IN ({ids})'
    if floor:
        sql += f' AND {name} + {amount} >= 0 RETURNING "id"'
    return sql


def _model(table: str) -> type[_Base]:
    """The model of a table."""
    return next(m for m in _Base.__subclasses__() if m._meta.table_name == table)


def _column_type(table: str, column: str) -> str:
    """The PostgreSQL type a column's values are sent as."""
    model = _model(table)
    field = model._meta.columns[column]
    if isinstance(field, pw.ForeignKeyField):
        field = field.rel_field
    if isinstance(field, pw.BooleanField):
        return "boolean"
    return "text" if isinstance(field, (pw.CharField, pw.TextField)) else "bigint"


@functools.lru_cache(maxsize=64)
def _column_types(table: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The PostgreSQL types of a table's columns, in their order."""
    return tuple(_column_type(table, c) for c in columns)


# The most parameters of a PostgreSQL statement whose rows are listed as VALUES (rows_pg): the
# driver (psycopg) keeps a statement's conversion to PostgreSQL's placeholders only up to this
# many parameters (its MAX_CACHED_STATEMENT_PARAMS); past them it parses the text again on
# every call, and one array per column costs the client less.
LISTED_AT_MOST = 50


def rows_pg(
    rows: Sequence[Sequence[Any]], types: tuple[str, ...], *, besides: int = 0
) -> Statement:
    """PostgreSQL's query of `rows` (tuples of values, in the order of the columns' `types`)
    for a statement to insert from or join with, and its parameters: `VALUES (...), ...` while
    the statement's parameters, with `besides` of its own, are at most LISTED_AT_MOST; else
    `SELECT * FROM unnest(...)` of one array per column, whose text does not grow.

    Measured on one connection: an INSERT of 4 rows of 10 columns cost the client 111 µs as a
    list, 275 µs as arrays; and a statement joining a table with unnest was planned anew on
    every call (its generic plan, blind to the arrays' length, never won), 0.2-0.4 ms of
    PostgreSQL's CPU each time, where a prepared list of values keeps one plan."""
    if rows and len(rows) * len(types) + besides <= LISTED_AT_MOST:
        return _listed_pg(types, len(rows)), [v for values in rows for v in values]
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in types]
    return _unnested_pg(types), columns


@functools.lru_cache(maxsize=256)
def _listed_pg(types: tuple[str, ...], count: int) -> str:
    row = "(" + ", ".join(f"%s::{kind}" for kind in types) + ")"
    return "VALUES " + ", ".join([row] * count)


@functools.lru_cache(maxsize=64)
def _unnested_pg(types: tuple[str, ...]) -> str:
    return "SELECT * FROM unnest(" + ", ".join(f"%s::{kind}[]" for kind in types) + ")"


def rows_query(
    database: pw.Database, rows: Sequence[Sequence[Any]], types: tuple[str, ...]
) -> Statement:
    """The query of `rows` for a statement to join with, as rows_pg on PostgreSQL; on SQLite
    `VALUES (...), ...`, whose parameters the caller keeps within BATCH rows."""
    if isinstance(database, pw.PostgresqlDatabase):
        return rows_pg(rows, types)
    row = "(" + ", ".join([database.param] * len(types)) + ")"
    return "VALUES " + ", ".join([row] * len(rows)), [v for values in rows for v in values]


def add_by_id_pg(table: str, column: str, amounts: dict[int, int]) -> Statement:
    """PostgreSQL's statement of add_by_id without a floor, and its parameters: also run as
    part of another statement (a data-modifying WITH)."""
    name = _name(column)
    rows, params = rows_pg(list(amounts.items()), ("bigint", "bigint"))
    sql = (
        f"UPDATE {_name(table)} AS t SET {name} = t.{name} + v.amount "
        f'FROM ({rows}) AS v(id, amount) WHERE t."id" = v.id'
    )
    return sql, params


def add_by_id(
    database: pw.Database, table: str, column: str, amounts: dict[int, int], *, floor: bool
) -> set[int]:
    """Adds to `column` of each row its amount (`amounts`: by id), in one statement; with
    `floor`, rows that would go below zero are left as they are. Returns the ids changed (with
    `floor`; else every id).

    PostgreSQL joins its rows (rows_pg); SQLite gets a CASE over the ids."""
    if isinstance(database, pw.PostgresqlDatabase):
        sql, values = add_by_id_pg(table, column, amounts)
        if floor:
            name = _name(column)
            sql += f' AND t.{name} + v.amount >= 0 RETURNING t."id"'
        cursor = execute_sql(database, sql, values)
    else:
        sql = add_by_id_sql(table, column, len(amounts), database.param, floor=floor)
        if len(amounts) == 1:
            ((only, amount),) = amounts.items()
            params: list[int] = [amount, only, amount] if floor else [amount, only]
        else:
            pairs = [value for pair in amounts.items() for value in pair]
            params = pairs + list(amounts) + (pairs if floor else [])
        cursor = execute_sql(database, sql, params)
    if not floor:
        return set(amounts)
    return {row[0] for row in cursor.fetchall()}


def insert_rows(
    database: pw.Database,
    table: str,
    columns: tuple[str, ...],
    values: list[tuple[Any, ...]],
    *,
    ignore_conflicts: bool = False,
    returning: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """Inserts the rows (each a tuple in `columns` order) in one statement; with
    `ignore_conflicts`, rows whose unique keys exist already are skipped. Returns the
    `returning` columns of the rows inserted. PostgreSQL inserts from rows_pg."""
    if isinstance(database, pw.PostgresqlDatabase):
        rows, params = rows_pg(values, _column_types(table, columns))
        sql = f"{_insert_into(table, columns)} {rows}"
        if ignore_conflicts:
            sql += " ON CONFLICT DO NOTHING"
    else:
        sql = insert_rows_sql(
            table, columns, len(values), database.param, ignore_conflicts=ignore_conflicts
        )
        params = [value for row in values for value in row]
    if returning:
        sql += " RETURNING " + ", ".join(_name(c) for c in returning)
    cursor = execute_sql(database, sql, params)
    return [tuple(row) for row in cursor.fetchall()] if returning else []


@functools.lru_cache(maxsize=64)
def _insert_into(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {_name(table)} (" + ", ".join(_name(c) for c in columns) + ")"


@functools.lru_cache(maxsize=64)
def unnest_insert_sql(table: str, columns: tuple[str, ...], *, ignore_conflicts: bool) -> str:
    """PostgreSQL's INSERT of rows sent as one array per column (whatever their number: for a
    statement with many parameters of its own)."""
    sql = f"{_insert_into(table, columns)} {_unnested_pg(_column_types(table, columns))}"
    return sql + " ON CONFLICT DO NOTHING" if ignore_conflicts else sql


def insert_row(database: pw.Database, table: str, values: dict[str, Any]) -> Any:
    """Inserts one row, {column: value}, with SQL made once per shape; returns its "id"."""
    sql = insert_rows_sql(table, tuple(values), 1, database.param, ignore_conflicts=False)
    cursor = execute_sql(database, sql + ' RETURNING "id"', list(values.values()))
    return cursor.fetchone()[0]


@functools.lru_cache(maxsize=64)
def upsert_newer_sql(
    table: str, columns: tuple[str, ...], param: str, keep: tuple[str, ...] = ()
) -> str:
    """INSERT one row, or on a clash of "id" update every other column (but those to `keep`),
    unless the stored row is newer: the incoming version is 0 (unversioned) or not below the
    stored one (rules.is_stale, said again in SQL so that it holds between replicas). The
    version stored is then the newest seen: an unversioned put keeps the stored one
    (rules.version_kept). The row written is returned, every column under its model's field
    name (_field_names); none if it was not."""
    names = ", ".join(_name(c) for c in columns)
    values = ", ".join([param] * len(columns))
    table_name = _name(table)
    updates = ", ".join(
        f"{_name(c)} = excluded.{_name(c)}"
        if c != "version"
        else f'"version" = CASE WHEN excluded."version" = 0 THEN {table_name}."version" '
        'ELSE excluded."version" END'
        for c in columns
        if c != "id" and c not in keep
    )
    returned = ", ".join(
        f"{_name(f.column_name)} AS {_name(f.name)}" for f in _model(table)._meta.sorted_fields
    )
    return (
        f"INSERT INTO {_name(table)} ({names}) VALUES ({values}) "
        f'ON CONFLICT ("id") DO UPDATE SET {updates} '
        f'WHERE excluded."version" = 0 OR excluded."version" >= {table_name}."version" '
        f"RETURNING {returned}"
    )


def upsert_newer(
    database: pw.Database, table: str, values: dict[str, Any], keep: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """Writes one row (values by column) unless the stored one is newer (upsert_newer_sql);
    the columns to `keep` are written only by an insert. Returns the row as stored, by field
    name (a model's __data__), if written; None if what is stored was newer."""
    sql = upsert_newer_sql(table, tuple(values), database.param, keep)
    row = execute_sql(database, sql, list(values.values())).fetchone()
    return None if row is None else dict(zip(_field_names(table), row, strict=True))


@functools.cache
def _field_names(table: str) -> tuple[str, ...]:
    """The field names of a table's model, in the order upsert_newer_sql returns its columns."""
    return tuple(f.name for f in _model(table)._meta.sorted_fields)


def update_by_id(
    database: pw.Database, table: str, key: Any, set_sql: str, params: list[Any]
) -> None:
    """UPDATE table SET <set_sql> WHERE id = key; `set_sql` names its parameters with the
    driver's placeholder."""
    execute_sql(
        database,
        f'UPDATE {_name(table)} SET {set_sql} WHERE "id" = {database.param}',
        [*params, key],
    )


def in_list(database: pw.Database, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column` IN (values), as SQL and parameters: one array on PostgreSQL."""
    if isinstance(database, pw.PostgresqlDatabase):
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN (" + ", ".join([database.param] * len(values)) + ")", list(values)


# Rows or accounts named in one statement at most: lists of values, never a chain of ORs (which
# SQLite's parser refuses past a few dozen and peewee cannot even build past a few hundred).
BATCH = 500

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rows(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples (peewee's stubs type `.tuples()` as model instances)."""
    return [tuple(row) for row in query.tuples()]


def any_of(clauses: Sequence[pw.Expression]) -> pw.Expression:
    """clauses[0] OR clauses[1] OR ..."""
    return functools.reduce(operator.or_, clauses)
