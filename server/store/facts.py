"""Upstream facts: shops, staff and orders, and the one read the entry rules decide on."""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import peewee as pw

from server.domain.errors import NotFound
from server.domain.model import (
    AccountKind,
    CommissionLine,
    Order,
    OrderKind,
    PayeeKind,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service.unit_of_work import EligibilityRow
from server.store.entries import entry_from_values
from server.store.schema import (
    BATCH,
    KEY,
    AccountRow,
    EntryRow,
    OrderRow,
    ShopRow,
    StaffRow,
    actor_of,
    at,
    at_or_none,
    audit,
    chunked,
    execute_sql,
    in_list,
    is_open,
    members,
    restored,
    stand_in,
    to_us,
    upsert_newer,
    us_or_none,
)

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore


class SqlFacts:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # Upstream facts keep their newest version (rules.is_stale), said again in each upsert so
    # that it holds between replicas.

    def put_shop(self, shop: Shop) -> Shop:
        """Writes the shop unless what is stored is newer; returns what is stored."""
        written = upsert_newer(
            self._store.database,
            "shop",
            {
                "id": shop.shop_id,
                "name": shop.name,
                "status": shop.status.value,
                "wallet_opened_at": us_or_none(shop.wallet_opened_at),
                "version": shop.version,
                **audit(shop.recorded_by),
            },
        )
        return self.shop(shop.shop_id) if written is None else shop_from_values(written)

    def shop(self, shop_id: str) -> Shop:
        shop = self.shop_or_none(shop_id)
        if shop is None:
            raise NotFound("shop", shop_id)
        return shop

    def shop_or_none(self, shop_id: str) -> Shop | None:
        values = self._store.row_by_id(ShopRow, shop_id)
        return None if values is None else shop_from_values(values)

    def shop_exists(self, shop_id: str) -> bool:
        return self._store.one("shop_exists", _shop_exists_query, shop_id) is not None

    def put_staff(self, staff: Staff) -> Staff:
        """Writes the staff account unless what is stored is newer; returns what is stored."""
        written = upsert_newer(
            self._store.database,
            "staff",
            {
                "id": staff.staff_id,
                "shop_id": staff.shop_id,
                "role": staff.role.value,
                "name": staff.name,
                "version": staff.version,
                **audit(staff.recorded_by),
            },
        )
        return self.staff(staff.staff_id) if written is None else staff_from_values(written)

    def staff(self, staff_id: str) -> Staff:
        values = self._store.row_by_id(StaffRow, staff_id)
        if values is None:
            raise NotFound("staff", staff_id)
        return staff_from_values(values)

    def put_order(self, order: Order) -> Order:
        """Writes the upstream facts unless what is stored is newer, keeping the refunds recorded
        here as they are; returns what is stored."""
        # Every column but the refunds recorded here, which only start at zero.
        written = upsert_newer(
            self._store.database,
            "orders",
            {
                "id": order.order_id,
                "shop_id": order.shop_id,
                "buyer_id": order.buyer_id,
                "kind": order.kind.value,
                "marketing_campaign": order.marketing_campaign,
                "category_id": order.category_id,
                "paid_amount": order.paid_amount,
                "prior_refunded_amount": order.prior_refunded_amount,
                "created_at": to_us(order.created_at),
                "completed_at": us_or_none(order.completed_at),
                "after_sales_ends_at": us_or_none(order.after_sales_ends_at),
                "commission_lines": _lines_json(order.commission_lines),
                "version": order.version,
                "recorded_refunded_amount": 0,
                **audit(order.recorded_by),
            },
            keep=("recorded_refunded_amount",),
        )
        return self.order(order.order_id) if written is None else order_from_values(written)

    def order(self, order_id: str, *, for_update: bool = False) -> Order:
        order = self.order_or_none(order_id, for_update=for_update)
        if order is None:
            raise NotFound("order", order_id)
        return order

    def order_or_none(self, order_id: str, *, for_update: bool = False) -> Order | None:
        values = self._store.row_by_id(OrderRow, order_id, for_update=for_update)
        return None if values is None else order_from_values(values)

    def order_and_shop(self, order_id: str, *, for_update: bool = False) -> tuple[Order, Shop]:
        """The order and its shop, in one read; with `for_update`, the order's row is locked
        (on PostgreSQL; the shop's is not)."""
        name = f"order_and_shop:{'locked' if for_update else 'read'}"

        def read() -> Any:
            return self._store.run_prepared(
                name, functools.partial(_order_and_shop_query, self._store, for_update), order_id
            )

        cursor = read()
        found = cursor.fetchone()
        if found is None and for_update and self._store.is_postgres:
            # PostgreSQL checks a row that changed while its lock was awaited again, but against
            # the shop row it had joined before: an order moved to another shop meanwhile drops
            # out. Locked alone, the order is read as committed; then, holding its lock, both.
            if self.order_or_none(order_id, for_update=True) is not None:
                cursor = read()
                found = cursor.fetchone()
        if found is None:
            raise NotFound("order", order_id)
        layout = _layout(self._store.columns(name, cursor))
        return (
            order_from_values(_part(layout, found, "order")),
            shop_from_values(_part(layout, found, "shop")),
        )

    def eligibility(self, order_id: str, operator_id: str) -> tuple[Staff, EligibilityRow]:
        """The operator, the order, its shop, the shop's wallet and deposit balances and the
        order's entry stored as OPEN: one query, built once (see _eligibility_query)."""
        cursor = self._store.run_bound(
            "eligibility", _eligibility_query, {_ORDER_ID: order_id, _OPERATOR_ID: operator_id}
        )
        found = cursor.fetchone()
        if found is None:
            self.staff(operator_id)  # an unknown operator is named first
            raise NotFound("order", order_id)
        operator, row = _eligibility_row(_layout(self._store.columns("eligibility", cursor)), found)
        if operator is None:
            raise NotFound("staff", operator_id)
        return operator, row

    def eligibilities(
        self, order_ids: Collection[str], operator_id: str
    ) -> tuple[Staff, dict[str, EligibilityRow]]:
        """The operator and, by order id, the eligibility row of each order that exists (others
        are left out): the single read of `eligibility` for BATCH orders per statement."""
        database = self._store.database
        sql, params = self._store.prepared("eligibilities", _eligibilities_query)
        rows: dict[str, EligibilityRow] = {}
        operator: Staff | None = None
        for batch in chunked(sorted(set(order_ids)), BATCH):
            where, ids = in_list(database, _ORDER_ID_COLUMN, batch)
            cursor = execute_sql(
                database,
                sql.replace(_ORDER_IDS, where, 1),
                [operator_id if p == _OPERATOR_ID else p for p in params] + ids,
            )
            found = cursor.fetchall()
            if not found:
                continue
            layout = _layout(self._store.columns("eligibilities", cursor))
            for values in found:
                operator, row = _eligibility_row(layout, values)
                if operator is None:
                    raise NotFound("staff", operator_id)
                rows[row.order.order_id] = row
        if operator is None:
            operator = self.staff(operator_id)  # no order found: the operator read alone
        return operator, rows


# Stand-ins for the parameters of prepared queries, replaced when they run.
_ORDER_ID = stand_in("order_id")
_OPERATOR_ID = stand_in("operator_id")
# Not a parameter: where a batch's IN list goes in the SQL text (its length varies).
_ORDER_IDS = stand_in("order_ids")
# The orders' table under a name of its own in the eligibility queries, for the batch's IN list.
_ORDER = OrderRow.alias("o")
_ORDER_ID_COLUMN = '"o"."id"'


def _eligibility_query() -> pw.Query:
    return _eligibility_select().where(_ORDER.id == _ORDER_ID)


def _eligibilities_query() -> pw.Query:
    """The eligibility query of a batch: its WHERE, a stand-in replaced by the orders' IN list
    (whose length varies) when it runs."""
    return _eligibility_select().where(pw.SQL(_ORDER_IDS))


def _columns(model: type[pw.Model], alias: Any, prefix: str, *, audited: bool = True) -> list[Any]:
    """The columns of `model` (under `alias`), each named `prefix` and its field's name; without
    who recorded the row unless `audited`."""
    return [
        getattr(alias, f.name).alias(prefix + f.name)
        for f in model._meta.sorted_fields
        if audited or not f.name.startswith("recorded_by_")
    ]


def _part(
    layout: dict[str, list[tuple[int, str]]], found: Sequence[Any], prefix: str
) -> dict[str, Any]:
    """One prefixed part of a row (see _layout), as {field name: value}."""
    return {name: found[i] for i, name in layout[prefix]}


def _order_and_shop_query(store: SqlStore, for_update: bool) -> pw.Query:
    query = (
        _ORDER.select(*_columns(OrderRow, _ORDER, "order__"), *_columns(ShopRow, ShopRow, "shop__"))
        .join(ShopRow, on=(_ORDER.shop == ShopRow.id))
        .where(_ORDER.id == KEY)
    )
    return store.locked(query, of=_ORDER) if for_update else query


def _eligibility_select() -> pw.Select:
    order = _ORDER
    wallet = AccountRow.alias("wallet")
    deposit = AccountRow.alias("deposit")
    open_entry = EntryRow.alias("open_entry")
    operator = StaffRow.alias("operator")

    def columns(model: type[pw.Model], alias: Any, prefix: str) -> list[Any]:
        # Who recorded each row is not a fact the rules decide on: not read here.
        return _columns(model, alias, prefix, audited=False)

    return (
        order.select(
            *columns(OrderRow, order, "order__"),
            *columns(ShopRow, ShopRow, "shop__"),
            *columns(EntryRow, open_entry, "entry__"),
            *columns(StaffRow, operator, "operator__"),
            wallet.balance.alias("wallet_balance"),
            deposit.balance.alias("deposit_balance"),
        )
        .join(ShopRow, on=(order.shop == ShopRow.id))
        .join_from(
            order,
            wallet,
            pw.JOIN.LEFT_OUTER,
            on=(wallet.kind == AccountKind.ANXIN_WALLET.value) & (wallet.owner_id == order.shop),
        )
        .join_from(
            order,
            deposit,
            pw.JOIN.LEFT_OUTER,
            on=(deposit.kind == AccountKind.DEPOSIT.value) & (deposit.owner_id == order.shop),
        )
        .join_from(
            order,
            open_entry,
            pw.JOIN.LEFT_OUTER,
            on=(open_entry.order == order.id) & is_open(open_entry),
        )
        .join_from(order, operator, pw.JOIN.LEFT_OUTER, on=(operator.id == _OPERATOR_ID))
    )


def _eligibility_row(
    layout: dict[str, list[tuple[int, str]]], found: Sequence[Any]
) -> tuple[Staff | None, EligibilityRow]:
    """One row of an eligibility query, split into its parts: the operator (None when no staff
    account has its id) and the rest."""

    def part(prefix: str) -> dict[str, Any]:
        return _part(layout, found, prefix)

    operator = part("operator")
    entry = part("entry")
    balances = part("")
    return None if operator["id"] is None else staff_from_values(operator), EligibilityRow(
        order=order_from_values(part("order")),
        shop=shop_from_values(part("shop")),
        wallet_balance=balances["wallet_balance"] or 0,
        deposit_balance=balances["deposit_balance"] or 0,
        stored_open_entry=None if entry["id"] is None else entry_from_values(entry),
    )


@functools.lru_cache(maxsize=8)
def _layout(names: tuple[str, ...]) -> dict[str, list[tuple[int, str]]]:
    """Where each part of a row of prefixed columns (the eligibility row; an order and its
    shop) is: by prefix ("order" for "order__id", "" for the unprefixed balances), the
    (position, name) of its columns. Made once per query."""
    layout: dict[str, list[tuple[int, str]]] = {}
    for i, name in enumerate(names):
        prefix, _, rest = name.rpartition("__")
        layout.setdefault(prefix, []).append((i, rest))
    return layout


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
        restored(
            CommissionLine,
            payee_kind=members(PayeeKind)[d["payee_kind"]],
            payee_id=d["payee_id"],
            amount=int(d["amount"]),
        )
        for d in json.loads(text or "[]")
    )


# Row -> domain, from a row's values by column name (a model's __data__, or one prefixed part of
# the eligibility query's row).


def shop_from_values(d: dict[str, Any]) -> Shop:
    return restored(
        Shop,
        shop_id=d["id"],
        name=d["name"],
        status=members(ShopStatus)[d["status"]],
        wallet_opened_at=at_or_none(d["wallet_opened_at"]),
        version=d["version"],
        recorded_by=actor_of(d),
    )


def staff_from_values(d: dict[str, Any]) -> Staff:
    return restored(
        Staff,
        staff_id=d["id"],
        shop_id=d["shop"],
        role=members(StaffRole)[d["role"]],
        name=d["name"],
        version=d["version"],
        recorded_by=actor_of(d),
    )


def order_from_values(d: dict[str, Any]) -> Order:
    return restored(
        Order,
        order_id=d["id"],
        shop_id=d["shop"],
        buyer_id=d["buyer_id"],
        kind=members(OrderKind)[d["kind"]],
        marketing_campaign=bool(d["marketing_campaign"]),
        category_id=d["category_id"],
        paid_amount=d["paid_amount"],
        prior_refunded_amount=d["prior_refunded_amount"],
        recorded_refunded_amount=d["recorded_refunded_amount"],
        created_at=at(d["created_at"]),
        completed_at=at_or_none(d["completed_at"]),
        after_sales_ends_at=at_or_none(d["after_sales_ends_at"]),
        commission_lines=_lines(d["commission_lines"]),
        version=d["version"],
        recorded_by=actor_of(d),
    )


def _shop_exists_query() -> pw.Query:
    return ShopRow.select(ShopRow.id).where(ShopRow.id == KEY)
