"""Persistence on SQLite or PostgreSQL through peewee; the only module that imports peewee.

The store reads and writes what the service asks, in the transactions the service opens. It
decides nothing: the rules are in server/rules.py. What the database itself guarantees, across
server replicas: at most one OPEN entry per order (a partial unique index), one transfer per
idempotency key, one response per request id.

Times are stored as integer microseconds since the Unix epoch (UTC): exact, portable and
ordered the same way on both databases.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import operator
import pathlib
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase

from server.errors import NotFound, RequestIdReused
from server.model import EXTERNAL as EXTERNAL_ACCOUNT
from server.model import PLATFORM_COMMISSION as PLATFORM_COMMISSION_ACCOUNT
from server.model import (
    AccountKind,
    AccountRef,
    Application,
    ApplicationState,
    AppliedThrough,
    ClawbackLine,
    CommissionLine,
    Entry,
    EntryState,
    Order,
    OrderKind,
    PayeeKind,
    ReasonCode,
    Refund,
    RefundClawback,
    RefundPayment,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
    Transfer,
    TransferKind,
    Violation,
)

SCHEMA_VERSION = 1

# Namespaces of PostgreSQL advisory locks (the first key of the two-key form).
_MIGRATION_LOCK_SPACE = 726_0431
_KEY_LOCK_SPACE = 726_0432

db = pw.DatabaseProxy()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


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

    class Meta:
        table_name = "shop"


class StaffRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    shop = pw.ForeignKeyField(ShopRow, column_name="shop_id", backref="staff")
    role = pw.CharField(max_length=32)
    name = pw.CharField(max_length=256, default="")
    version = pw.BigIntegerField(default=0)

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


def _migrate_to_1(database: pw.Database) -> None:
    database.create_tables(MODELS, safe=True)
    AccountRow.insert_many(
        [{"kind": AccountKind.EXTERNAL.value}, {"kind": AccountKind.PLATFORM_COMMISSION.value}]
    ).execute()
    SettingRow.insert(name="page_token_key", value=secrets.token_hex(32)).execute()


# Index i brings the schema from version i to i + 1. Append; never edit a released step.
MIGRATIONS: list[Callable[[pw.Database], None]] = [_migrate_to_1]
assert len(MIGRATIONS) == SCHEMA_VERSION


# Failures of the database that a retry may cure (it is down, busy, or chose this transaction as
# a deadlock victim); callers answer UNAVAILABLE, and clients retry with the same request id.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (pw.OperationalError, pw.InterfaceError)


class EntryConflict(Exception):
    """Another OPEN entry of the order was committed first."""


class InsufficientBalance(Exception):
    """A guarded account would have gone below zero; nothing was posted."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        super().__init__(f"balance {balance}")


@dataclasses.dataclass(frozen=True)
class Debt:
    """An outstanding clawback line of a payee: owed to the shop whose wallet it is credited to."""

    clawback_id: str
    line_no: int
    shop_id: str
    due: int
    recovered: int

    @property
    def outstanding(self) -> int:
        return self.due - self.recovered


# Accounts are locked in this order (then by id) so that concurrent money movements never wait
# on each other in a cycle. The external account is not locked up front: every transaction
# touches it last.
_LOCK_RANK = {
    AccountKind.CASH: 0,
    AccountKind.PLATFORM_COMMISSION: 1,
    AccountKind.ANXIN_WALLET: 2,
    AccountKind.DEPOSIT: 3,
}


@dataclasses.dataclass(frozen=True)
class EntryFactsRow:
    """What one query reads for the entry rules: order, shop, balances, the stored OPEN entry."""

    order: Order
    shop: Shop
    wallet_balance: int
    deposit_balance: int
    stored_open_entry: Entry | None


def open_database(url: str) -> pw.Database:
    """A database for `url`: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`,
    `sqlite:///:memory:` or `postgresql://user:pass@host:port/dbname`."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if path and path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        return pw.SqliteDatabase(
            path or ":memory:",
            # Every write transaction takes the write lock up front: no deadlock on upgrade.
            lock_type="IMMEDIATE",
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 10_000,
            },
            check_same_thread=False,
        )
    if parsed.scheme in ("postgres", "postgresql"):
        return PooledPostgresqlDatabase(
            (parsed.path or "/postgres")[1:],
            user=parsed.username,
            password=parsed.password,
            host=parsed.hostname or "localhost",
            port=parsed.port or 5432,
            max_connections=64,
            stale_timeout=300,
            timeout=10,
        )
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


class Store:
    """The service's one door to the database."""

    def __init__(self, database: pw.Database) -> None:
        self.database = database
        self.is_postgres = isinstance(database, pw.PostgresqlDatabase)
        db.initialize(database)
        self._local = threading.local()
        self._page_key = b""
        self._statements: dict[str, tuple[str, list]] = {}
        self._fixed_ids: dict[AccountRef, int] = {}

    # --- Lifecycle --------------------------------------------------------------------------

    def migrate(self) -> int:
        """Brings the schema to SCHEMA_VERSION; safe when several replicas start at once."""
        with self.session(), self.database.atomic():
            if self.is_postgres:
                self.database.execute_sql(
                    "SELECT pg_advisory_xact_lock(%s, 0)", (_MIGRATION_LOCK_SPACE,)
                )
            self.database.create_tables([SchemaVersionRow], safe=True)
            current = SchemaVersionRow.select(pw.fn.MAX(SchemaVersionRow.version)).scalar() or 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database schema is version {current}, newer than this server's "
                    f"{SCHEMA_VERSION}"
                )
            now = to_us(datetime.now(UTC))
            for version in range(current, SCHEMA_VERSION):
                MIGRATIONS[version](self.database)
                SchemaVersionRow.create(version=version + 1, applied_at=now)
            self._page_key = bytes.fromhex(
                SettingRow.get(SettingRow.name == "page_token_key").value
            )
            self._fixed_ids = {
                ref: AccountRow.get(
                    (AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == "")
                ).id
                for ref in (EXTERNAL_ACCOUNT, PLATFORM_COMMISSION_ACCOUNT)
            }
            return SCHEMA_VERSION

    def schema_version(self) -> int:
        with self.session():
            return SchemaVersionRow.select(pw.fn.MAX(SchemaVersionRow.version)).scalar() or 0

    def close(self) -> None:
        if self.is_postgres:
            self.database.close_all()
        else:
            self.database.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """A connection for the duration of a call: from the pool on PostgreSQL; SQLite keeps
        one per thread."""
        if not self.is_postgres:
            yield
            return
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        self._local.depth = 1
        try:
            with self.database.connection_context():
                yield
        finally:
            self._local.depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; inside one already, part of it (a refusal anywhere rolls all of it
        back, which is what every caller wants: a refusal writes nothing)."""
        if self.database.in_transaction():
            yield
            return
        with self.session(), self.database.atomic():
            self._local.account_ids = {}
            try:
                yield
            finally:
                # Ids of accounts created by a transaction that rolls back must not outlive it.
                self._local.account_ids = {}

    # --- Page tokens ----------------------------------------------------------------------------

    def encode_page_token(self, position: tuple, filters: str) -> str:
        """An opaque page token: where the last page ended, bound to its filters and signed with
        the key all replicas share, so that a caller cannot make one up."""
        payload = json.dumps([list(position), filters], separators=(",", ":")).encode()
        mac = hmac.new(self._page_key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def decode_page_token(self, token: str, filters: str, types: tuple[type, ...]) -> tuple | None:
        """The position in a token this service made for the same filters, or None."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        mac, payload = raw[:16], raw[16:]
        expected = hmac.new(self._page_key, payload, hashlib.sha256).digest()[:16]
        if len(mac) != 16 or not hmac.compare_digest(mac, expected):
            return None
        try:
            position, token_filters = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if (
            token_filters != filters
            or not isinstance(position, list)
            or len(position) != len(types)
            or not all(type(v) is t for v, t in zip(position, types, strict=True))
        ):
            return None
        return tuple(position)

    def serialize_on(self, key: str) -> None:
        """Until the transaction ends, other transactions serialising on `key` wait. (SQLite's
        write transactions are exclusive already.)"""
        if self.is_postgres:
            self.database.execute_sql(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_KEY_LOCK_SPACE, key)
            )

    def _locked(self, query: pw.Select) -> pw.Select:
        """Row locks where the database has them; SQLite's write transactions are exclusive."""
        return query.for_update() if self.is_postgres else query

    # --- Idempotency --------------------------------------------------------------------------

    def idempotent(
        self,
        request_id: str,
        method: str,
        fingerprint: str,
        run: Callable[[], bytes],
        now: datetime,
    ) -> bytes:
        """The stored response of request_id, or run() and store its response, in one transaction.

        `run` does the mutation inside this transaction. Two replicas running the same request at
        once: one commits, the other's insert fails on the key and it answers the stored response.
        """
        for attempt in (1, 2):
            try:
                with self.transaction():
                    # Retries of one request arriving together wait for each other, so that the
                    # later ones answer from the record instead of re-running the rules.
                    self.serialize_on(f"request:{request_id}")
                    stored = RequestRow.get_or_none(RequestRow.request_id == request_id)
                    if stored is not None:
                        return self._replay(stored, request_id, method, fingerprint)
                    response = run()
                    RequestRow.insert(
                        request_id=request_id,
                        method=method,
                        fingerprint=fingerprint,
                        response=response,
                        created_at=to_us(now),
                    ).execute()
                    return response
            except pw.IntegrityError:
                if attempt == 2:
                    raise
                with self.session():
                    stored = RequestRow.get_or_none(RequestRow.request_id == request_id)
                if stored is None:
                    raise
                return self._replay(stored, request_id, method, fingerprint)
        raise AssertionError("unreachable")

    @staticmethod
    def _replay(stored: RequestRow, request_id: str, method: str, fingerprint: str) -> bytes:
        if stored.method != method or stored.fingerprint != fingerprint:
            raise RequestIdReused(request_id, method)
        return bytes(stored.response)

    # --- Shops, staff, orders -------------------------------------------------------------------

    # Upstream facts keep their newest version (rules.is_stale), said again in each upsert so
    # that it holds between replicas too.

    def put_shop(self, shop: Shop) -> Shop:
        """Writes the shop unless what is stored is newer; returns what is stored."""
        ShopRow.insert(
            id=shop.shop_id,
            name=shop.name,
            status=shop.status.value,
            wallet_opened_at=_us_or_none(shop.wallet_opened_at),
            version=shop.version,
        ).on_conflict(
            conflict_target=[ShopRow.id],
            preserve=[ShopRow.name, ShopRow.status, ShopRow.wallet_opened_at, ShopRow.version],
            where=_not_older(ShopRow),
        ).execute()
        return self.shop(shop.shop_id)

    def shop(self, shop_id: str) -> Shop:
        row = ShopRow.get_or_none(ShopRow.id == shop_id)
        if row is None:
            raise NotFound("shop", shop_id)
        return _shop(row)

    def shop_exists(self, shop_id: str) -> bool:
        return ShopRow.select(ShopRow.id).where(ShopRow.id == shop_id).exists()

    def put_staff(self, staff: Staff) -> Staff:
        """Writes the staff account unless what is stored is newer; returns what is stored."""
        StaffRow.insert(
            id=staff.staff_id,
            shop=staff.shop_id,
            role=staff.role.value,
            name=staff.name,
            version=staff.version,
        ).on_conflict(
            conflict_target=[StaffRow.id],
            preserve=[StaffRow.shop, StaffRow.role, StaffRow.name, StaffRow.version],
            where=_not_older(StaffRow),
        ).execute()
        return self.staff(staff.staff_id)

    def staff(self, staff_id: str) -> Staff:
        row = StaffRow.get_or_none(StaffRow.id == staff_id)
        if row is None:
            raise NotFound("staff", staff_id)
        return Staff(row.id, row.shop_id, StaffRole(row.role), row.name, row.version)

    def put_order(self, order: Order) -> Order:
        """Writes the upstream facts unless what is stored is newer, keeping the refunds recorded
        here as they are; returns what is stored."""
        fields = {
            OrderRow.shop: order.shop_id,
            OrderRow.buyer_id: order.buyer_id,
            OrderRow.kind: order.kind.value,
            OrderRow.marketing_campaign: order.marketing_campaign,
            OrderRow.category_id: order.category_id,
            OrderRow.paid_amount: order.paid_amount,
            OrderRow.prior_refunded_amount: order.prior_refunded_amount,
            OrderRow.created_at: to_us(order.created_at),
            OrderRow.completed_at: _us_or_none(order.completed_at),
            OrderRow.after_sales_ends_at: _us_or_none(order.after_sales_ends_at),
            OrderRow.commission_lines: _lines_json(order.commission_lines),
            OrderRow.version: order.version,
        }
        OrderRow.insert({OrderRow.id: order.order_id, **fields}).on_conflict(
            conflict_target=[OrderRow.id], preserve=list(fields), where=_not_older(OrderRow)
        ).execute()
        return self.order(order.order_id)

    def order(self, order_id: str, *, for_update: bool = False) -> Order:
        order = self.order_or_none(order_id, for_update=for_update)
        if order is None:
            raise NotFound("order", order_id)
        return order

    def order_or_none(self, order_id: str, *, for_update: bool = False) -> Order | None:
        query = OrderRow.select().where(OrderRow.id == order_id)
        row = (self._locked(query) if for_update else query).first()
        return None if row is None else _order(row)

    def entry_facts(self, order_id: str, operator_id: str) -> tuple[Staff, EntryFactsRow]:
        """The operator, the order, its shop, the shop's wallet and deposit balances and the
        order's entry stored as OPEN: one query, built once (see _entry_facts_query)."""
        sql, params = self._prepared("entry_facts", _entry_facts_query)
        bound = {_ORDER_ID: order_id, _OPERATOR_ID: operator_id}
        cursor = self.database.execute_sql(sql, [bound.get(p, p) for p in params])
        found = cursor.fetchone()
        if found is None:
            self.staff(operator_id)  # an unknown operator is named first
            raise NotFound("order", order_id)
        row = dict(zip((d[0] for d in cursor.description), found, strict=True))
        if row["operator__id"] is None:
            raise NotFound("staff", operator_id)
        part = functools.partial(_part, row)
        operator = part("operator__")
        shop = part("shop__")
        entry = part("entry__")
        return Staff(
            operator["id"],
            operator["shop"],
            StaffRole(operator["role"]),
            operator["name"],
            operator["version"],
        ), EntryFactsRow(
            order=_order_from_dict(part("order__")),
            shop=Shop(
                shop["id"],
                shop["name"],
                ShopStatus(shop["status"]),
                from_us(shop["wallet_opened_at"]),
                shop["version"],
            ),
            wallet_balance=row["wallet_balance"] or 0,
            deposit_balance=row["deposit_balance"] or 0,
            stored_open_entry=None if entry["id"] is None else _entry_from_values(entry),
        )

    def _prepared(self, name: str, build: Callable[[], pw.Query]) -> tuple[str, list]:
        """The SQL and parameters of a hot query, built by peewee once per database: building a
        query costs more than running it."""
        if name not in self._statements:
            self._statements[name] = build().sql()
        return self._statements[name]

    # --- Entries and applications -----------------------------------------------------------------

    def insert_entry(self, entry: Entry) -> None:
        try:
            with self.database.atomic():
                EntryRow.insert(
                    id=entry.entry_id,
                    order=entry.order_id,
                    shop_id=entry.shop_id,
                    state=entry.state.value,
                    opened_at=to_us(entry.opened_at),
                    expires_at=to_us(entry.expires_at),
                    operator_id=entry.operator_id,
                    note=entry.note,
                    policy_version=entry.policy_version,
                ).execute()
        except pw.IntegrityError as e:
            raise EntryConflict(entry.order_id) from e

    def entry(self, entry_id: str) -> Entry:
        row = EntryRow.get_or_none(EntryRow.id == entry_id)
        if row is None:
            raise NotFound("entry", entry_id)
        return _entry(row)

    def stored_open_entry(self, order_id: str) -> Entry | None:
        row = (
            EntryRow.select()
            .where((EntryRow.order == order_id) & (EntryRow.state == EntryState.OPEN.value))
            .first()
        )
        return None if row is None else _entry(row)

    def expire_entries(self, now: datetime, order_id: str | None = None) -> int:
        """Stores as EXPIRED the OPEN entries whose window has passed."""
        query = EntryRow.update(state=EntryState.EXPIRED.value).where(
            (EntryRow.state == EntryState.OPEN.value) & (EntryRow.expires_at <= to_us(now))
        )
        if order_id is not None:
            query = query.where(EntryRow.order == order_id)
        return query.execute()

    def use_entry(self, entry_id: str, application_id: str, now: datetime) -> bool:
        """Marks the entry USED if it is still open now; False if someone else got there first."""
        return bool(
            EntryRow.update(
                state=EntryState.USED.value, used_at=to_us(now), application_id=application_id
            )
            .where(
                (EntryRow.id == entry_id)
                & (EntryRow.state == EntryState.OPEN.value)
                & (EntryRow.expires_at > to_us(now))
            )
            .execute()
        )

    def list_entries(
        self,
        *,
        shop_id: str | None,
        order_id: str | None,
        states: tuple[EntryState, ...] | None,
        now: datetime,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Entry]:
        """Newest first; `states` as readers see them (an OPEN entry past its window is EXPIRED:
        rules.entry_state, said again in SQL so that the database can filter and page);
        `after` is the (opened_at, id) of the last entry of the previous page."""
        query = EntryRow.select()
        if shop_id:
            query = query.where(EntryRow.shop_id == shop_id)
        if order_id:
            query = query.where(EntryRow.order == order_id)
        if states is not None:
            clauses = []
            now_us = to_us(now)
            for state in states:
                if state is EntryState.OPEN:
                    clauses.append((EntryRow.state == "OPEN") & (EntryRow.expires_at > now_us))
                elif state is EntryState.EXPIRED:
                    clauses.append(
                        (EntryRow.state == "EXPIRED")
                        | ((EntryRow.state == "OPEN") & (EntryRow.expires_at <= now_us))
                    )
                else:
                    clauses.append(EntryRow.state == state.value)
            query = query.where(_any(clauses) if len(clauses) > 1 else clauses[0])
        if after is not None:
            opened_at, entry_id = after
            query = query.where(
                (EntryRow.opened_at < opened_at)
                | ((EntryRow.opened_at == opened_at) & (EntryRow.id < entry_id))
            )
        query = query.order_by(EntryRow.opened_at.desc(), EntryRow.id.desc()).limit(limit)
        return [_entry(row) for row in query]

    def insert_application(self, application: Application) -> None:
        ApplicationRow.insert(
            id=application.application_id,
            order=application.order_id,
            entry=application.entry_id,
            buyer_id=application.buyer_id,
            amount=application.amount,
            reason=application.reason,
            state=application.state.value,
            filed_at=to_us(application.filed_at),
        ).execute()

    # --- Ledger -----------------------------------------------------------------------------------

    def _account_id(self, ref: AccountRef) -> int:
        """The account's id, the account created if need be. The external and platform accounts
        are made with the schema, and ids met in this transaction are remembered until it ends."""
        if ref in self._fixed_ids:
            return self._fixed_ids[ref]
        known = getattr(self._local, "account_ids", {})
        if ref not in known:
            AccountRow.insert(
                kind=ref.kind.value, owner_id=ref.owner_id
            ).on_conflict_ignore().execute()
            known[ref] = (
                AccountRow.select(AccountRow.id)
                .where((AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == ref.owner_id))
                .scalar()
            )
        return known[ref]

    def balance(self, ref: AccountRef) -> int:
        return self.balances([ref])[ref]

    def _external_balance(self) -> int:
        """Money outside the system: minus the sum of every other account."""
        total = (
            AccountRow.select(pw.fn.COALESCE(pw.fn.SUM(AccountRow.balance), 0))
            .where(AccountRow.kind != AccountKind.EXTERNAL.value)
            .scalar()
        )
        return -int(total)

    def post_transfer(
        self,
        *,
        from_account: AccountRef,
        to_account: AccountRef,
        amount: int,
        kind: TransferKind,
        reference: str,
        idempotency_key: str,
        now: datetime,
        guard_from: bool,
        memo: str = "",
    ) -> Transfer:
        """Moves `amount` in one transaction. With guard_from, the payer may not go below zero
        (InsufficientBalance, nothing posted).

        The external account's balance is not kept on its row (every movement from outside would
        queue on that one row): it is minus the sum of all others (see _external_balance)."""
        if amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        # Part of the caller's transaction (no savepoint needed: a refused debit wrote nothing).
        with self.transaction():
            from_id = self._account_id(from_account)
            to_id = self._account_id(to_account)
            if from_account.kind is not AccountKind.EXTERNAL:
                debit = AccountRow.update(balance=AccountRow.balance - amount).where(
                    AccountRow.id == from_id
                )
                if guard_from:
                    debit = debit.where(AccountRow.balance >= amount)
                if not debit.execute():
                    raise InsufficientBalance(self.balance(from_account))
            if to_account.kind is not AccountKind.EXTERNAL:
                AccountRow.update(balance=AccountRow.balance + amount).where(
                    AccountRow.id == to_id
                ).execute()
            transfer_id = TransferRow.insert(
                from_account=from_id,
                to_account=to_id,
                amount=amount,
                kind=kind.value,
                reference=reference,
                memo=memo,
                idempotency_key=idempotency_key,
                posted_at=to_us(now),
            ).execute()
        return Transfer(
            str(transfer_id), from_account, to_account, amount, kind, reference, now, memo
        )

    def applied_through(self, application_id: str) -> AppliedThrough:
        """The application, when its entry was opened and what was refunded through it."""
        row = (
            ApplicationRow.select(ApplicationRow, EntryRow.opened_at)
            .join(EntryRow)
            .where(ApplicationRow.id == application_id)
            .first()
        )
        if row is None:
            raise NotFound("application", application_id)
        refunded = (
            RefundRow.select(pw.fn.COALESCE(pw.fn.SUM(RefundRow.amount), 0))
            .where(RefundRow.application_id == application_id)
            .scalar()
        )
        return AppliedThrough(
            application=Application(
                application_id=row.id,
                order_id=row.order_id,
                entry_id=row.entry_id,
                buyer_id=row.buyer_id,
                amount=row.amount,
                reason=row.reason,
                state=ApplicationState(row.state),
                filed_at=from_us(row.filed_at),
            ),
            entry_opened_at=from_us(row.entry.opened_at),
            refunded=int(refunded),
        )

    def lock_accounts(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        """Creates the accounts that do not exist yet, locks them (on PostgreSQL) in the one
        global order, and returns their balances."""
        refs = {ref for ref in refs if ref.kind is not AccountKind.EXTERNAL}
        if not refs:
            return {}
        AccountRow.insert_many(
            [{"kind": r.kind.value, "owner_id": r.owner_id} for r in refs]
        ).on_conflict_ignore().execute()
        wanted = _any(
            [(AccountRow.kind == r.kind.value) & (AccountRow.owner_id == r.owner_id) for r in refs]
        )
        rank = pw.Case(
            AccountRow.kind, [(kind.value, value) for kind, value in _LOCK_RANK.items()], 9
        )
        query = (
            AccountRow.select(
                AccountRow.id, AccountRow.kind, AccountRow.owner_id, AccountRow.balance
            )
            .where(wanted)
            .order_by(rank, AccountRow.id)
        )
        balances = {}
        known = getattr(self._local, "account_ids", {})
        for account_id, kind, owner, balance in self._locked(query).tuples():
            ref = AccountRef(AccountKind(kind), owner)
            known[ref] = account_id
            balances[ref] = balance
        return balances

    def balances(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        """Balances of the named accounts; an account that never moved money has zero."""
        kept = [r for r in refs if r.kind is not AccountKind.EXTERNAL]
        found = {}
        if kept:
            wanted = _any(
                [
                    (AccountRow.kind == r.kind.value) & (AccountRow.owner_id == r.owner_id)
                    for r in kept
                ]
            )
            found = {
                AccountRef(AccountKind(kind), owner): balance
                for kind, owner, balance in AccountRow.select(
                    AccountRow.kind, AccountRow.owner_id, AccountRow.balance
                )
                .where(wanted)
                .tuples()
            }
        if len(kept) < len(refs):
            found[EXTERNAL_ACCOUNT] = self._external_balance()
        return {ref: found.get(ref, 0) for ref in refs}

    def accounts_of(self, owner_id: str) -> list[AccountRef]:
        return [
            AccountRef(AccountKind(kind), owner)
            for kind, owner in AccountRow.select(AccountRow.kind, AccountRow.owner_id)
            .where(AccountRow.owner_id == owner_id)
            .order_by(AccountRow.kind)
            .tuples()
        ]

    def list_transfers(self, ref: AccountRef, after: int | None, limit: int) -> list[Transfer]:
        """Transfers into or out of the account, newest first, after the given transfer id."""
        account_id = (
            AccountRow.select(AccountRow.id)
            .where((AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == ref.owner_id))
            .scalar()
        )
        if account_id is None:
            return []
        source = AccountRow.alias("source")
        target = AccountRow.alias("target")
        query = (
            TransferRow.select(
                TransferRow.id,
                source.kind,
                source.owner_id,
                target.kind,
                target.owner_id,
                TransferRow.amount,
                TransferRow.kind,
                TransferRow.reference,
                TransferRow.posted_at,
                TransferRow.memo,
            )
            .join(source, on=(TransferRow.from_account == source.id))
            .join_from(TransferRow, target, on=(TransferRow.to_account == target.id))
            .where(
                (TransferRow.from_account == account_id) | (TransferRow.to_account == account_id)
            )
        )
        if after is not None:
            query = query.where(TransferRow.id < after)
        query = query.order_by(TransferRow.id.desc()).limit(limit)
        return [
            Transfer(
                transfer_id=str(tid),
                from_account=AccountRef(AccountKind(fk), fo),
                to_account=AccountRef(AccountKind(tk), to),
                amount=amount,
                kind=TransferKind(kind),
                reference=reference,
                posted_at=from_us(posted_at),
                memo=memo,
            )
            for tid, fk, fo, tk, to, amount, kind, reference, posted_at, memo in query.tuples()
        ]

    # --- Refunds and clawbacks --------------------------------------------------------------------

    def record_refund(self, clawback: RefundClawback) -> None:
        """Stores the refund, its clawback and lines, and adds the refund to the order."""
        refund = clawback.refund
        RefundRow.insert(
            id=refund.refund_id,
            order=refund.order_id,
            application_id=refund.application_id,
            amount=refund.amount,
            started_at=to_us(refund.started_at),
            paid_at=to_us(refund.paid_at),
            refunded_before=clawback.refunded_before,
            refunded_after=clawback.refunded_after,
            paid_from_wallet=clawback.payment.from_wallet,
            paid_from_deposit=clawback.payment.from_deposit,
            recorded_at=to_us(clawback.created_at),
        ).execute()
        OrderRow.update(
            recorded_refunded_amount=OrderRow.recorded_refunded_amount + refund.amount
        ).where(OrderRow.id == refund.order_id).execute()
        if refund.application_id:
            ApplicationRow.update(state=ApplicationState.REFUNDED.value).where(
                ApplicationRow.id == refund.application_id
            ).execute()
        ClawbackRow.insert(
            id=clawback.clawback_id,
            refund=refund.refund_id,
            order_id=refund.order_id,
            shop_id=clawback.shop_id,
            state=clawback.state.value,
            reasons=json.dumps([[v.code.value, v.description] for v in clawback.reasons]),
            policy_version=clawback.policy_version,
            created_at=to_us(clawback.created_at),
        ).execute()
        if clawback.lines:
            ClawbackLineRow.insert_many(
                [
                    {
                        "clawback": clawback.clawback_id,
                        "line_no": line.line_no,
                        "payee_kind": line.payee_kind.value,
                        "payee_id": line.payee_id,
                        "commission": line.commission,
                        "due": line.due,
                        "recovered": line.recovered,
                    }
                    for line in clawback.lines
                ]
            ).execute()

    def debts_of(self, payee_id: str) -> list[Debt]:
        """The payee's outstanding clawback lines, oldest first."""
        query = (
            ClawbackLineRow.select(
                ClawbackLineRow.clawback,
                ClawbackLineRow.line_no,
                ClawbackRow.shop_id,
                ClawbackLineRow.due,
                ClawbackLineRow.recovered,
            )
            .join(ClawbackRow)
            .where(
                (ClawbackLineRow.payee_id == payee_id)
                & (ClawbackLineRow.recovered < ClawbackLineRow.due)
            )
            .order_by(ClawbackLineRow.id)
        )
        return [Debt(*row) for row in query.tuples()]

    def add_recovered(self, clawback_id: str, line_no: int, amount: int) -> None:
        ClawbackLineRow.update(recovered=ClawbackLineRow.recovered + amount).where(
            (ClawbackLineRow.clawback == clawback_id) & (ClawbackLineRow.line_no == line_no)
        ).execute()

    def set_clawback_state(self, clawback_id: str, state: str) -> None:
        ClawbackRow.update(state=state).where(ClawbackRow.id == clawback_id).execute()

    def clawback(
        self, *, clawback_id: str | None = None, refund_id: str | None = None
    ) -> RefundClawback:
        where = ClawbackRow.id == clawback_id if clawback_id else ClawbackRow.refund == refund_id
        found = self._clawbacks(where, order=(), limit=1)
        if not found:
            raise NotFound("clawback", clawback_id or f"refund {refund_id}")
        return found[0]

    def clawback_of_refund(self, refund_id: str) -> RefundClawback | None:
        found = self._clawbacks(ClawbackRow.refund == refund_id, order=(), limit=1)
        return found[0] if found else None

    def list_clawbacks(
        self,
        *,
        shop_id: str,
        state: str | None,
        start: datetime | None,
        end: datetime | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[RefundClawback]:
        where = ClawbackRow.shop_id == shop_id
        if state is not None:
            where &= ClawbackRow.state == state
        if start is not None:
            where &= ClawbackRow.created_at >= to_us(start)
        if end is not None:
            where &= ClawbackRow.created_at < to_us(end)
        if after is not None:
            created_at, clawback_id = after
            where &= (ClawbackRow.created_at < created_at) | (
                (ClawbackRow.created_at == created_at) & (ClawbackRow.id < clawback_id)
            )
        return self._clawbacks(
            where, order=(ClawbackRow.created_at.desc(), ClawbackRow.id.desc()), limit=limit
        )

    def _clawbacks(self, where, order, limit: int) -> list[RefundClawback]:
        """Clawbacks with their refunds in one query, and all their lines in a second."""
        query = (
            ClawbackRow.select(ClawbackRow, RefundRow)
            .join(RefundRow)
            .where(where)
            .order_by(*order)
            .limit(limit)
        )
        rows = list(query)
        if not rows:
            return []
        lines: dict[str, list[ClawbackLine]] = {row.id: [] for row in rows}
        for line in (
            ClawbackLineRow.select()
            .where(ClawbackLineRow.clawback.in_(list(lines)))
            .order_by(ClawbackLineRow.clawback, ClawbackLineRow.line_no)
        ):
            lines[line.clawback_id].append(
                ClawbackLine(
                    line_no=line.line_no,
                    payee_kind=PayeeKind(line.payee_kind),
                    payee_id=line.payee_id,
                    commission=line.commission,
                    due=line.due,
                    recovered=line.recovered,
                )
            )
        return [_clawback(row, tuple(lines[row.id])) for row in rows]

    def ledger_totals(self) -> tuple[int, dict[AccountRef, tuple[int, int]]]:
        """The sum of all balances, and per account (maintained balance, balance from transfers);
        for reconciliation."""
        incoming = dict(
            TransferRow.select(TransferRow.to_account, pw.fn.SUM(TransferRow.amount))
            .group_by(TransferRow.to_account)
            .tuples()
        )
        outgoing = dict(
            TransferRow.select(TransferRow.from_account, pw.fn.SUM(TransferRow.amount))
            .group_by(TransferRow.from_account)
            .tuples()
        )
        accounts = {}
        for row in AccountRow.select():
            ref = AccountRef(AccountKind(row.kind), row.owner_id)
            derived = int(incoming.get(row.id, 0)) - int(outgoing.get(row.id, 0))
            accounts[ref] = (row.balance, derived)
        if EXTERNAL_ACCOUNT in accounts:
            accounts[EXTERNAL_ACCOUNT] = (self._external_balance(), accounts[EXTERNAL_ACCOUNT][1])
        return sum(kept for kept, _ in accounts.values()), accounts


# --- Row <-> domain -------------------------------------------------------------------------------


# Stand-ins for the parameters of prepared queries, replaced when they run.
_ORDER_ID = "\x00order_id"
_OPERATOR_ID = "\x00operator_id"


def _entry_facts_query() -> pw.Query:
    wallet = AccountRow.alias("wallet")
    deposit = AccountRow.alias("deposit")
    open_entry = EntryRow.alias("open_entry")
    operator = StaffRow.alias("operator")

    def columns(model, alias, prefix):
        return [getattr(alias, f.name).alias(prefix + f.name) for f in model._meta.sorted_fields]

    return (
        OrderRow.select(
            *columns(OrderRow, OrderRow, "order__"),
            *columns(ShopRow, ShopRow, "shop__"),
            *columns(EntryRow, open_entry, "entry__"),
            *columns(StaffRow, operator, "operator__"),
            wallet.balance.alias("wallet_balance"),
            deposit.balance.alias("deposit_balance"),
        )
        .join(ShopRow, on=(OrderRow.shop == ShopRow.id))
        .join_from(
            OrderRow,
            wallet,
            pw.JOIN.LEFT_OUTER,
            on=(wallet.kind == AccountKind.ANXIN_WALLET.value) & (wallet.owner_id == OrderRow.shop),
        )
        .join_from(
            OrderRow,
            deposit,
            pw.JOIN.LEFT_OUTER,
            on=(deposit.kind == AccountKind.DEPOSIT.value) & (deposit.owner_id == OrderRow.shop),
        )
        .join_from(
            OrderRow,
            open_entry,
            pw.JOIN.LEFT_OUTER,
            on=(open_entry.order == OrderRow.id) & (open_entry.state == EntryState.OPEN.value),
        )
        .join_from(OrderRow, operator, pw.JOIN.LEFT_OUTER, on=(operator.id == _OPERATOR_ID))
        .where(OrderRow.id == _ORDER_ID)
    )


def _part(row: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


def _not_older(model) -> pw.Expression:
    """In an upsert: the incoming row is unversioned, or not older than the stored one."""
    incoming = pw.EXCLUDED.version
    return (incoming == 0) | (incoming >= model.version)


def _any(clauses: list) -> pw.Expression:
    return functools.reduce(operator.or_, clauses)


def _us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _lines_json(lines: tuple[CommissionLine, ...]) -> str:
    return json.dumps(
        [
            {"payee_kind": ln.payee_kind.value, "payee_id": ln.payee_id, "amount": ln.amount}
            for ln in lines
        ],
        separators=(",", ":"),
    )


def _lines(text: str) -> tuple[CommissionLine, ...]:
    return tuple(
        CommissionLine(PayeeKind(d["payee_kind"]), d["payee_id"], int(d["amount"]))
        for d in json.loads(text or "[]")
    )


def _shop(row: ShopRow) -> Shop:
    return Shop(
        row.id, row.name, ShopStatus(row.status), from_us(row.wallet_opened_at), row.version
    )


def _order(row: OrderRow) -> Order:
    return _order_from_dict(row.__data__)


def _order_from_dict(d: dict) -> Order:
    return Order(
        order_id=d["id"],
        shop_id=d["shop"],
        buyer_id=d["buyer_id"],
        kind=OrderKind(d["kind"]),
        marketing_campaign=bool(d["marketing_campaign"]),
        category_id=d["category_id"],
        paid_amount=d["paid_amount"],
        prior_refunded_amount=d["prior_refunded_amount"],
        recorded_refunded_amount=d["recorded_refunded_amount"],
        created_at=from_us(d["created_at"]),
        completed_at=from_us(d["completed_at"]),
        after_sales_ends_at=from_us(d["after_sales_ends_at"]),
        commission_lines=_lines(d["commission_lines"]),
        version=d["version"],
    )


def _entry(row: EntryRow) -> Entry:
    return _entry_from_values(row.__data__)


def _entry_from_values(d: dict) -> Entry:
    return Entry(
        entry_id=d["id"],
        order_id=d["order"],
        shop_id=d["shop_id"],
        state=EntryState(d["state"]),
        opened_at=from_us(d["opened_at"]),
        expires_at=from_us(d["expires_at"]),
        operator_id=d["operator_id"],
        note=d["note"],
        policy_version=d["policy_version"],
        used_at=from_us(d["used_at"]),
        application_id=d["application_id"],
    )


def _clawback(row: ClawbackRow, lines: tuple[ClawbackLine, ...]) -> RefundClawback:
    refund_row = row.refund
    return RefundClawback(
        clawback_id=row.id,
        refund=Refund(
            refund_id=refund_row.id,
            order_id=refund_row.order_id,
            application_id=refund_row.application_id,
            amount=refund_row.amount,
            started_at=from_us(refund_row.started_at),
            paid_at=from_us(refund_row.paid_at),
        ),
        shop_id=row.shop_id,
        reasons=tuple(Violation(ReasonCode(code), text) for code, text in json.loads(row.reasons)),
        lines=lines,
        refunded_before=refund_row.refunded_before,
        refunded_after=refund_row.refunded_after,
        policy_version=row.policy_version,
        created_at=from_us(row.created_at),
        payment=RefundPayment(refund_row.paid_from_wallet, refund_row.paid_from_deposit),
    )


def fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
