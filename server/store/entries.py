"""Entries and the applications filed through them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import peewee as pw

from server.domain.errors import NotFound
from server.domain.model import Application, ApplicationState, AppliedThrough, Entry, EntryState
from server.service.unit_of_work import EntryConflict
from server.store.schema import (
    KEY,
    LIMIT,
    ApplicationRow,
    EntryRow,
    RefundRow,
    actor_of,
    any_of,
    at,
    at_or_none,
    audit,
    execute_sql,
    insert_row,
    insert_rows_sql,
    is_open,
    members,
    restored,
    stand_in,
    to_us,
)

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore


class SqlEntries:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def insert_entry(self, entry: Entry) -> None:
        """Inserts the entry; another OPEN entry of the order (the partial unique index, which
        holds between replicas) makes it EntryConflict. The conflict is the INSERT's own answer
        (ON CONFLICT DO NOTHING): no savepoint, and the transaction stays usable."""
        values = {
            "id": entry.entry_id,
            "order_id": entry.order_id,
            "shop_id": entry.shop_id,
            "state": entry.state.value,
            "opened_at": to_us(entry.opened_at),
            "expires_at": to_us(entry.expires_at),
            "operator_id": entry.operator_id,
            "note": entry.note,
            "policy_version": entry.policy_version,
            **audit(entry.recorded_by),
        }
        # The conflict target is said as in the partial index, with a literal: PostgreSQL
        # matches the index by it.
        param = self._store.database.param
        sql = insert_rows_sql("entry", tuple(values), 1, param, ignore_conflicts=False) + (
            f""" ON CONFLICT ("order_id") WHERE "state" = '{EntryState.OPEN.value}' """
            'DO NOTHING RETURNING "id"'
        )
        inserted = execute_sql(self._store.database, sql, list(values.values())).fetchall()
        if not inserted:
            raise EntryConflict(entry.order_id)

    def entry(self, entry_id: str) -> Entry:
        values = self._store.row_by_id(EntryRow, entry_id)
        if values is None:
            raise NotFound("entry", entry_id)
        return entry_from_values(values)

    def stored_open_entry(self, order_id: str) -> Entry | None:
        values = self._store.one("stored_open_entry", _stored_open_entry_query, order_id)
        return None if values is None else entry_from_values(values)

    def expire_entries(
        self, now: datetime, *, order_id: str | None = None, limit: int | None = None
    ) -> list[Entry]:
        """Stores as EXPIRED the OPEN entries whose window has passed, those that expired first,
        and returns them. Exactly once per entry however many replicas sweep: the UPDATE is
        conditional on the entry being OPEN still (a concurrent one that got there first makes
        it change nothing), and on PostgreSQL the entries another sweep holds are skipped."""
        p = self._store.database.param
        where = f'"state" = {p} AND "expires_at" <= {p}'
        params: list[Any] = [EntryState.OPEN.value, to_us(now)]
        if order_id is not None:
            where += f' AND "order_id" = {p}'
            params.append(order_id)
        skip = " FOR UPDATE SKIP LOCKED" if self._store.is_postgres else ""
        returned = ", ".join(
            f'"{f.column_name}" AS "{f.name}"' for f in EntryRow._meta.sorted_fields
        )
        # The entries picked once, in a CTE (a subquery of the UPDATE may be run again).
        sql = (
            f'WITH picked AS (SELECT "id" FROM "entry" WHERE {where} ORDER BY "expires_at" '
            f'LIMIT {p}{skip}) UPDATE "entry" SET "state" = {p} WHERE "id" IN (SELECT "id" '
            f'FROM picked) AND "state" = {p} RETURNING {returned}'
        )
        cursor = execute_sql(
            self._store.database,
            sql,
            [*params, limit or 1_000_000, EntryState.EXPIRED.value, EntryState.OPEN.value],
        )
        names = [d[0] for d in cursor.description]
        return [entry_from_values(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def use_entry(self, entry_id: str, application_id: str, now: datetime) -> bool:
        """Marks the entry USED if it is still open now; False if someone else got there first."""
        p = self._store.database.param
        cursor = execute_sql(
            self._store.database,
            f'UPDATE "entry" SET "state" = {p}, "used_at" = {p}, "application_id" = {p} '
            f'WHERE "id" = {p} AND "state" = {p} AND "expires_at" > {p}',
            [
                EntryState.USED.value,
                to_us(now),
                application_id,
                entry_id,
                EntryState.OPEN.value,
                to_us(now),
            ],
        )
        return bool(cursor.rowcount)

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
        states = None if states is None else tuple(sorted(set(states)))
        shape = (bool(shop_id), bool(order_id), states, after is not None)
        name = f"list_entries:{shape}"
        cursor = self._store.run_bound(
            name,
            lambda: _list_entries_query(*shape),
            {
                _SHOP_ID: shop_id,
                _ORDER_ID: order_id,
                _NOW: to_us(now),
                _AFTER_OPENED_AT: after[0] if after else None,
                _AFTER_ID: after[1] if after else None,
                LIMIT: limit,
            },
        )
        # Rows as plain values by field name, not model instances: a page is 500 rows at most.
        names = self._store.columns(name, cursor)
        return [entry_from_values(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def insert_application(self, application: Application) -> None:
        insert_row(
            self._store.database,
            "application",
            {
                "id": application.application_id,
                "order_id": application.order_id,
                "entry_id": application.entry_id,
                "buyer_id": application.buyer_id,
                "amount": application.amount,
                "reason": application.reason,
                "state": application.state.value,
                "filed_at": to_us(application.filed_at),
                **audit(application.recorded_by),
            },
        )

    def applied_through(self, application_id: str) -> AppliedThrough:
        """The application, when its entry was opened and what was refunded through it: one
        query, made once."""
        row = self._store.one("applied_through", _applied_through_query, application_id)
        if row is None:
            raise NotFound("application", application_id)
        return AppliedThrough(
            application=Application(
                application_id=row["id"],
                order_id=row["order"],
                entry_id=row["entry"],
                buyer_id=row["buyer_id"],
                amount=row["amount"],
                reason=row["reason"],
                state=members(ApplicationState)[row["state"]],
                filed_at=at(row["filed_at"]),
                recorded_by=actor_of(row),
            ),
            entry_opened_at=at(row["entry_opened_at"]),
            refunded=int(row["refunded"]),
        )


# Stand-ins for the parameters of the listing's prepared queries, replaced when they run.
_SHOP_ID = stand_in("shop_id")
_ORDER_ID = stand_in("order_id")
_NOW = stand_in("now")
_AFTER_OPENED_AT = stand_in("after_opened_at")
_AFTER_ID = stand_in("after_id")


def _list_entries_query(
    by_shop: bool, by_order: bool, states: tuple[EntryState, ...] | None, after: bool
) -> pw.Query:
    """The query of SqlEntries.list_entries for one shape of request (which filters it has),
    built once per shape, with stand-ins for the values."""
    query = EntryRow.select(*[f.alias(f.name) for f in EntryRow._meta.sorted_fields])
    if by_shop:
        query = query.where(EntryRow.shop_id == _SHOP_ID)
    if by_order:
        query = query.where(EntryRow.order == _ORDER_ID)
    if states is not None:
        # With a shop or an order, the state as an expression, not the column, so that no index
        # of the states is used: the page is read along the shop's (or order's) index in its
        # order, and stops at its size, where the states' index would read the entries of every
        # shop in that state and sort them. (The protos require one or the other.)
        stored = EntryRow.state.concat("") if by_shop or by_order else EntryRow.state
        clauses = []
        for state in states:
            if state is EntryState.OPEN:
                clauses.append((stored == "OPEN") & (EntryRow.expires_at > _NOW))
            elif state is EntryState.EXPIRED:
                clauses.append(
                    (stored == "EXPIRED") | ((stored == "OPEN") & (EntryRow.expires_at <= _NOW))
                )
            else:
                clauses.append(stored == state.value)
        query = query.where(any_of(clauses) if len(clauses) > 1 else clauses[0])
    if after:
        query = query.where(
            (EntryRow.opened_at < _AFTER_OPENED_AT)
            | ((EntryRow.opened_at == _AFTER_OPENED_AT) & (EntryRow.id < _AFTER_ID))
        )
    return query.order_by(EntryRow.opened_at.desc(), EntryRow.id.desc()).limit(LIMIT)


def entry_from_values(d: dict[str, Any]) -> Entry:
    return restored(
        Entry,
        entry_id=d["id"],
        order_id=d["order"],
        shop_id=d["shop_id"],
        state=members(EntryState)[d["state"]],
        opened_at=at(d["opened_at"]),
        expires_at=at(d["expires_at"]),
        operator_id=d["operator_id"],
        note=d["note"],
        policy_version=d["policy_version"],
        used_at=at_or_none(d["used_at"]),
        application_id=d["application_id"],
        recorded_by=actor_of(d),
    )


def _applied_through_query() -> pw.Query:
    refunded = RefundRow.select(pw.fn.COALESCE(pw.fn.SUM(RefundRow.amount), 0)).where(
        RefundRow.application_id == KEY
    )
    return (
        ApplicationRow.select(
            *[f.alias(f.name) for f in ApplicationRow._meta.sorted_fields],
            EntryRow.opened_at.alias("entry_opened_at"),
            refunded.alias("refunded"),
        )
        .join(EntryRow)
        .where(ApplicationRow.id == KEY)
    )


def _stored_open_entry_query() -> pw.Query:
    return EntryRow.select(*[f.alias(f.name) for f in EntryRow._meta.sorted_fields]).where(
        (EntryRow.order == KEY) & is_open()
    )
