"""The tables, as peewee models, and how values are stored in them.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable and
ordered the same way on both databases. What the database itself guarantees, across server
replicas: at most one OPEN entry per order (a partial unique index), one transfer per
idempotency key, one response per request id.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee as pw

from server.domain.model import Actor, EntryState
from server.service.paging import micros

db = pw.DatabaseProxy()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Stored as the service's page positions hold them (one encoding: a position is a stored value).
to_us = micros


def at(us: int) -> datetime:
    """The moment `us` microseconds after the epoch: how times are read back."""
    return _EPOCH + timedelta(microseconds=us)


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
    order = pw.ForeignKeyField(OrderRow, column_name="order_id", backref="entries")
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
    clawback = pw.ForeignKeyField(ClawbackRow, column_name="clawback_id", backref="lines")
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
    # Maintained in the same transaction as every transfer (but for the external account's, see
    # Store.post_transfer); tests check it against the transfers.
    balance = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "account"
        indexes = ((("kind", "owner_id"), True),)


class TransferRow(_Base):
    id = pw.BigAutoField()
    from_account = pw.ForeignKeyField(AccountRow, column_name="from_account_id")
    to_account = pw.ForeignKeyField(AccountRow, column_name="to_account_id")
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


# Explicit names: peewee's default names can collide with the foreign keys' own indexes, and
# `IF NOT EXISTS` would then skip an index without a word.
TransferRow.add_index(
    TransferRow.index(TransferRow.from_account, TransferRow.id, name="transfer_from_newest").safe(
        True
    )
)
TransferRow.add_index(
    TransferRow.index(TransferRow.to_account, TransferRow.id, name="transfer_to_newest").safe(True)
)


class RequestRow(_Base):
    request_id = pw.CharField(primary_key=True, max_length=128)
    method = pw.CharField(max_length=64)
    fingerprint = pw.CharField(max_length=64)
    response = pw.BlobField()
    created_at = pw.BigIntegerField()

    class Meta:
        table_name = "request"


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
    RequestRow,
    SettingRow,
    SchemaVersionRow,
]


def audit(actor: Actor) -> dict[str, str]:
    """The audit columns' values for a row recorded by `actor`."""
    return {"recorded_by_service": actor.service, "recorded_by_person": actor.person}


def actor_of(values: dict[str, Any]) -> Actor:
    """Who recorded a row, from its values by column name."""
    return Actor(values.get("recorded_by_service") or "", values.get("recorded_by_person") or "")


def us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def execute_sql(database: pw.Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """Runs raw SQL: the few statements peewee's query builder does not say (advisory locks) or
    that are built once (hot queries); peewee's stubs leave execute_sql untyped."""
    return database.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def rows(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples (peewee's stubs type `.tuples()` as model instances)."""
    return [tuple(row) for row in query.tuples()]


def any_of(clauses: Sequence[pw.Expression]) -> pw.Expression:
    """clauses[0] OR clauses[1] OR ..."""
    return functools.reduce(operator.or_, clauses)
