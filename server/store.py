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
import hashlib
import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase

from server.errors import NotFound, RequestIdReused
from server.model import (
    AccountKind,
    AccountRef,
    Application,
    CommissionLine,
    Entry,
    EntryState,
    Order,
    OrderKind,
    PayeeKind,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
    Transfer,
    TransferKind,
)

SCHEMA_VERSION = 1

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

    class Meta:
        table_name = "shop"


class StaffRow(_Base):
    id = pw.CharField(primary_key=True, max_length=128)
    shop = pw.ForeignKeyField(ShopRow, column_name="shop_id", backref="staff")
    role = pw.CharField(max_length=32)
    name = pw.CharField(max_length=256, default="")

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

    class Meta:
        table_name = "orders"


class EntryRow(_Base):
    id = pw.CharField(primary_key=True, max_length=64)
    order = pw.ForeignKeyField(OrderRow, column_name="order_id", backref="entries")
    shop_id = pw.CharField(max_length=128)
    state = pw.CharField(max_length=16)
    opened_at = pw.BigIntegerField()
    expires_at = pw.BigIntegerField()
    opened_by = pw.CharField(max_length=128)
    note = pw.TextField(default="")
    policy_version = pw.CharField(max_length=64)
    used_at = pw.BigIntegerField(null=True)
    application_id = pw.CharField(max_length=64, null=True)

    class Meta:
        table_name = "entry"
        indexes = ((("shop_id", "opened_at"), False), (("order_id", "opened_at"), False))


# At most one OPEN entry per order, whatever the number of replicas writing.
EntryRow.add_index(
    EntryRow.index(EntryRow.order, unique=True, where=(EntryRow.state == EntryState.OPEN.value))
    .safe(True)
)
EntryRow.add_index(EntryRow.index(EntryRow.state, EntryRow.expires_at).safe(True))


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


class AccountRow(_Base):
    id = pw.AutoField()
    kind = pw.CharField(max_length=32)
    owner_id = pw.CharField(max_length=128, default="")
    # Maintained in the same transaction as every transfer; tests check it against the transfers.
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
    # Deterministic per movement (e.g. "funds:<request id>"): a retry never posts twice.
    idempotency_key = pw.CharField(max_length=256, unique=True)
    posted_at = pw.BigIntegerField()

    class Meta:
        table_name = "transfer"


TransferRow.add_index(TransferRow.index(TransferRow.from_account, TransferRow.id).safe(True))
TransferRow.add_index(TransferRow.index(TransferRow.to_account, TransferRow.id).safe(True))


class RequestRow(_Base):
    request_id = pw.CharField(primary_key=True, max_length=128)
    method = pw.CharField(max_length=64)
    fingerprint = pw.CharField(max_length=64)
    response = pw.BlobField()
    created_at = pw.BigIntegerField()

    class Meta:
        table_name = "request"


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
    AccountRow,
    TransferRow,
    RequestRow,
    SchemaVersionRow,
]


def _migrate_to_1(database: pw.Database) -> None:
    database.create_tables(MODELS, safe=True)


# Index i brings the schema from version i to i + 1. Append; never edit a released step.
MIGRATIONS: list[Callable[[pw.Database], None]] = [_migrate_to_1]
assert len(MIGRATIONS) == SCHEMA_VERSION


class EntryConflict(Exception):
    """Another OPEN entry of the order was committed first."""


class InsufficientBalance(Exception):
    """A guarded account would have gone below zero; nothing was posted."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        super().__init__(f"balance {balance}")


@dataclasses.dataclass(frozen=True)
class EntryFactsRow:
    """What one query reads for the entry rules: the order, its shop, balances, stored OPEN entry."""

    order: Order
    shop: Shop
    wallet_balance: int
    deposit_balance: int
    open_entry: Entry | None


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

    # --- Lifecycle --------------------------------------------------------------------------

    def migrate(self) -> int:
        """Brings the schema to SCHEMA_VERSION; safe when several replicas start at once."""
        with self.session(), self.database.atomic():
            if self.is_postgres:
                self.database.execute_sql("SELECT pg_advisory_xact_lock(7260431)")
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
        """One transaction (a savepoint when nested)."""
        with self.session(), self.database.atomic():
            yield

    def _locked(self, query: pw.Select) -> pw.Select:
        """Row locks where the database has them; SQLite's write transactions are exclusive."""
        return query.for_update() if self.is_postgres else query

    # --- Idempotency --------------------------------------------------------------------------

    def idempotent(
        self, request_id: str, method: str, fingerprint: str, run: Callable[[], bytes], now: datetime
    ) -> bytes:
        """The stored response of request_id, or run() and store its response, in one transaction.

        `run` does the mutation inside this transaction. Two replicas running the same request at
        once: one commits, the other's insert fails on the key and it answers the stored response.
        """
        for attempt in (1, 2):
            try:
                with self.transaction():
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

    def put_shop(self, shop: Shop) -> None:
        ShopRow.insert(
            id=shop.shop_id,
            name=shop.name,
            status=shop.status.value,
            wallet_opened_at=_us_or_none(shop.wallet_opened_at),
        ).on_conflict(
            conflict_target=[ShopRow.id],
            preserve=[ShopRow.name, ShopRow.status, ShopRow.wallet_opened_at],
        ).execute()

    def shop(self, shop_id: str) -> Shop:
        row = ShopRow.get_or_none(ShopRow.id == shop_id)
        if row is None:
            raise NotFound("shop", shop_id)
        return _shop(row)

    def shop_exists(self, shop_id: str) -> bool:
        return ShopRow.select(ShopRow.id).where(ShopRow.id == shop_id).exists()

    def put_staff(self, staff: Staff) -> None:
        StaffRow.insert(
            id=staff.staff_id, shop=staff.shop_id, role=staff.role.value, name=staff.name
        ).on_conflict(
            conflict_target=[StaffRow.id],
            preserve=[StaffRow.shop, StaffRow.role, StaffRow.name],
        ).execute()

    def staff(self, staff_id: str) -> Staff:
        row = StaffRow.get_or_none(StaffRow.id == staff_id)
        if row is None:
            raise NotFound("staff", staff_id)
        return Staff(row.id, row.shop_id, StaffRole(row.role), row.name)

    def put_order(self, order: Order) -> None:
        """Writes the upstream facts; the refunds recorded here are kept as they are."""
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
        }
        OrderRow.insert({OrderRow.id: order.order_id, **fields}).on_conflict(
            conflict_target=[OrderRow.id], preserve=list(fields)
        ).execute()

    def order(self, order_id: str, *, for_update: bool = False) -> Order:
        query = OrderRow.select().where(OrderRow.id == order_id)
        row = (self._locked(query) if for_update else query).first()
        if row is None:
            raise NotFound("order", order_id)
        return _order(row)

    def order_or_none(self, order_id: str) -> Order | None:
        row = OrderRow.get_or_none(OrderRow.id == order_id)
        return None if row is None else _order(row)

    def entry_facts(self, order_id: str) -> EntryFactsRow:
        """The order, its shop, the shop's wallet and deposit balances and the order's entry
        stored as OPEN, in one query."""
        wallet = AccountRow.alias("wallet")
        deposit = AccountRow.alias("deposit")
        open_entry = EntryRow.alias("open_entry")
        query = (
            OrderRow.select(
                *OrderRow._meta.sorted_fields,
                *[f.alias(f"shop_{f.name}") for f in ShopRow._meta.sorted_fields],
                wallet.balance.alias("wallet_balance"),
                deposit.balance.alias("deposit_balance"),
                *[getattr(open_entry, f.name).alias(f"entry_{f.name}")
                  for f in EntryRow._meta.sorted_fields],
            )
            .join(ShopRow, on=(OrderRow.shop == ShopRow.id))
            .join_from(
                OrderRow,
                wallet,
                pw.JOIN.LEFT_OUTER,
                on=(
                    (wallet.kind == AccountKind.ANXIN_WALLET.value)
                    & (wallet.owner_id == OrderRow.shop)
                ),
            )
            .join_from(
                OrderRow,
                deposit,
                pw.JOIN.LEFT_OUTER,
                on=(
                    (deposit.kind == AccountKind.DEPOSIT.value)
                    & (deposit.owner_id == OrderRow.shop)
                ),
            )
            .join_from(
                OrderRow,
                open_entry,
                pw.JOIN.LEFT_OUTER,
                on=(
                    (open_entry.order == OrderRow.id)
                    & (open_entry.state == EntryState.OPEN.value)
                ),
            )
            .where(OrderRow.id == order_id)
            .dicts()
        )
        row = query.first()
        if row is None:
            raise NotFound("order", order_id)
        order = _order_from_dict(row)
        shop = Shop(
            row["shop_id"],
            row["shop_name"],
            ShopStatus(row["shop_status"]),
            from_us(row["shop_wallet_opened_at"]),
        )
        entry = None
        if row["entry_id"] is not None:
            entry = _entry_from_values({f.name: row[f"entry_{f.name}"] for f in EntryRow._meta.sorted_fields})
        return EntryFactsRow(
            order=order,
            shop=shop,
            wallet_balance=row["wallet_balance"] or 0,
            deposit_balance=row["deposit_balance"] or 0,
            open_entry=entry,
        )

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
                    opened_by=entry.opened_by,
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
        """Newest first; `states` as readers see them (an OPEN entry past its window is EXPIRED);
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
            query = query.where(pw.reduce_or(clauses) if len(clauses) > 1 else clauses[0])
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
        AccountRow.insert(kind=ref.kind.value, owner_id=ref.owner_id).on_conflict_ignore().execute()
        return (
            AccountRow.select(AccountRow.id)
            .where((AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == ref.owner_id))
            .scalar()
        )

    def balance(self, ref: AccountRef) -> int:
        return (
            AccountRow.select(AccountRow.balance)
            .where((AccountRow.kind == ref.kind.value) & (AccountRow.owner_id == ref.owner_id))
            .scalar()
            or 0
        )

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
    ) -> Transfer:
        """Moves `amount` in one transaction. With guard_from, the payer may not go below zero
        (InsufficientBalance, nothing posted)."""
        if amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        with self.database.atomic():
            from_id = self._account_id(from_account)
            to_id = self._account_id(to_account)
            debit = AccountRow.update(balance=AccountRow.balance - amount).where(AccountRow.id == from_id)
            if guard_from:
                debit = debit.where(AccountRow.balance >= amount)
            if not debit.execute():
                raise InsufficientBalance(self.balance(from_account))
            AccountRow.update(balance=AccountRow.balance + amount).where(AccountRow.id == to_id).execute()
            transfer_id = TransferRow.insert(
                from_account=from_id,
                to_account=to_id,
                amount=amount,
                kind=kind.value,
                reference=reference,
                idempotency_key=idempotency_key,
                posted_at=to_us(now),
            ).execute()
        return Transfer(str(transfer_id), from_account, to_account, amount, kind, reference, now)

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
        total = 0
        for row in AccountRow.select():
            derived = int(incoming.get(row.id, 0)) - int(outgoing.get(row.id, 0))
            accounts[AccountRef(AccountKind(row.kind), row.owner_id)] = (row.balance, derived)
            total += row.balance
        return total, accounts


# --- Row <-> domain -------------------------------------------------------------------------------


def _us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _lines_json(lines: tuple[CommissionLine, ...]) -> str:
    return json.dumps(
        [{"payee_kind": ln.payee_kind.value, "payee_id": ln.payee_id, "amount": ln.amount} for ln in lines],
        separators=(",", ":"),
    )


def _lines(text: str) -> tuple[CommissionLine, ...]:
    return tuple(
        CommissionLine(PayeeKind(d["payee_kind"]), d["payee_id"], int(d["amount"]))
        for d in json.loads(text or "[]")
    )


def _shop(row: ShopRow) -> Shop:
    return Shop(row.id, row.name, ShopStatus(row.status), from_us(row.wallet_opened_at))


def _order(row: OrderRow) -> Order:
    return _order_from_dict(row.__data__)


def _order_from_dict(d: dict) -> Order:
    return Order(
        order_id=d["id"],
        shop_id=d["shop"] if "shop" in d else d["shop_id"],
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
    )


def _entry(row: EntryRow) -> Entry:
    return _entry_from_values(row.__data__)


def _entry_from_values(d: dict) -> Entry:
    return Entry(
        entry_id=d["id"],
        order_id=d["order"] if "order" in d else d["order_id"],
        shop_id=d["shop_id"],
        state=EntryState(d["state"]),
        opened_at=from_us(d["opened_at"]),
        expires_at=from_us(d["expires_at"]),
        opened_by=d["opened_by"],
        note=d["note"],
        policy_version=d["policy_version"],
        used_at=from_us(d["used_at"]),
        application_id=d["application_id"],
    )


def fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def encode_cursor(opened_at: datetime, entry_id: str, filters: str) -> str:
    raw = json.dumps([to_us(opened_at), entry_id, filters], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, filters: str) -> tuple[int, str] | None:
    """The (opened_at, id) of a page token made for the same filters, or None if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        opened_at, entry_id, token_filters = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if token_filters != filters or not isinstance(opened_at, int) or not isinstance(entry_id, str):
        return None
    return opened_at, entry_id

