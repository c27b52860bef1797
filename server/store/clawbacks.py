"""Refunds recorded here, their clawbacks (TR/佣金退回) and the payees' outstanding debts."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import peewee as pw

from server.domain.errors import NotFound
from server.domain.model import (
    Actor,
    ApplicationState,
    ClawbackLine,
    ClawbackState,
    Debt,
    PayeeKind,
    ReasonCode,
    Refund,
    RefundClawback,
    RefundPayment,
    Violation,
)
from server.store.schema import (
    BATCH,
    KEY,
    LIMIT,
    ClawbackRow,
    PendingDebtsRow,
    RefundRow,
    actor,
    add_by_id,
    at,
    audit,
    chunked,
    execute_sql,
    in_list,
    insert_row,
    insert_rows,
    insert_rows_sql,
    members,
    restored,
    stand_in,
    to_us,
    unnest_insert_sql,
    update_by_id,
)

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore


_LINE_COLUMNS = (
    "clawback_id",
    "line_no",
    "payee_kind",
    "payee_id",
    "commission",
    "due",
    "recovered",
)


class SqlClawbacks:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def record_refund(self, clawback: RefundClawback) -> None:
        """Stores the refund, its clawback and lines, adds the refund to the order and marks its
        application refunded: on PostgreSQL in one statement (_record_refund_sql), on SQLite in
        one statement each."""
        refund = clawback.refund
        database = self._store.database
        p = database.param
        refund_row = {
            "id": refund.refund_id,
            "order_id": refund.order_id,
            "application_id": refund.application_id,
            "amount": refund.amount,
            "started_at": to_us(refund.started_at),
            "paid_at": to_us(refund.paid_at),
            "refunded_before": clawback.refunded_before,
            "refunded_after": clawback.refunded_after,
            "paid_from_wallet": clawback.payment.from_wallet,
            "paid_from_deposit": clawback.payment.from_deposit,
            "recorded_at": to_us(clawback.created_at),
            **audit(clawback.recorded_by),
        }
        clawback_row = {
            "id": clawback.clawback_id,
            "refund_id": refund.refund_id,
            "order_id": refund.order_id,
            "shop_id": clawback.shop_id,
            "state": clawback.state.value,
            "reasons": json.dumps([[v.code.value, v.description] for v in clawback.reasons]),
            "policy_version": clawback.policy_version,
            "created_at": to_us(clawback.created_at),
        }
        lines = [
            (
                clawback.clawback_id,
                line.line_no,
                line.payee_kind.value,
                line.payee_id,
                line.commission,
                line.due,
                line.recovered,
            )
            for line in clawback.lines
        ]
        refunded = ApplicationState.REFUNDED.value
        if self._store.is_postgres:
            execute_sql(
                database,
                _record_refund_sql(tuple(refund_row), tuple(clawback_row)),
                [
                    *refund_row.values(),
                    refund.amount,
                    refund.order_id,
                    refunded,
                    refund.application_id,
                    *clawback_row.values(),
                    *([list(c) for c in zip(*lines, strict=True)] or [[]] * len(_LINE_COLUMNS)),
                ],
            )
            return
        insert_row(database, "refund", refund_row)
        update_by_id(
            database,
            "orders",
            refund.order_id,
            f'"recorded_refunded_amount" = "recorded_refunded_amount" + {p}',
            [refund.amount],
        )
        if refund.application_id:
            update_by_id(
                database, "application", refund.application_id, f'"state" = {p}', [refunded]
            )
        insert_row(database, "clawback", clawback_row)
        if lines:
            insert_rows(database, "clawback_line", _LINE_COLUMNS, lines)

    def debts_of(self, payee_id: str, *, after: int | None, limit: int) -> list[Debt]:
        """At most `limit` of the payee's outstanding clawback lines, oldest first (by line id,
        which `seq` is), after the line `after`: one range read of the debt index."""
        p = self._store.database.param
        sql = (
            'SELECT l."clawback_id", l."line_no", c."shop_id", l."due", l."recovered", '
            'l."payee_kind", l."id", c."order_id" '
            'FROM "clawback_line" AS l JOIN "clawback" AS c ON c."id" = l."clawback_id" '
            f'WHERE l."payee_id" = {p} AND l."recovered" < l."due" AND l."id" > {p} '
            f'ORDER BY l."id" LIMIT {p}'
        )
        cursor = execute_sql(self._store.database, sql, [payee_id, after or 0, limit])
        rows = cursor.fetchall()
        return [
            Debt(
                clawback_id,
                line_no,
                shop_id,
                due,
                recovered,
                members(PayeeKind)[kind],
                seq,
                order_id,
            )
            for clawback_id, line_no, shop_id, due, recovered, kind, seq, order_id in rows
        ]

    def add_recovered(self, paid: Sequence[tuple[Debt, int]]) -> None:
        """Debts paid in full in one UPDATE per batch (recovered = due); the others (at most
        the last one a payment reaches) one by one."""
        database = self._store.database
        full = [debt.seq for debt, amount in paid if amount == debt.outstanding]
        for batch in chunked(full, BATCH):
            where, params = in_list(database, '"id"', batch)
            execute_sql(
                database, f'UPDATE "clawback_line" SET "recovered" = "due" WHERE {where}', params
            )
        partial = {debt.seq: amount for debt, amount in paid if amount != debt.outstanding}
        for batch in chunked(list(partial), BATCH):
            add_by_id(
                database,
                "clawback_line",
                "recovered",
                {seq: partial[seq] for seq in batch},
                floor=False,
            )

    def totals(self, clawback_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        database = self._store.database
        found: dict[str, tuple[int, int]] = {}
        for batch in chunked(sorted(clawback_ids), BATCH):
            where, params = in_list(database, '"clawback_id"', batch)
            cursor = execute_sql(
                database,
                'SELECT "clawback_id", SUM("due"), SUM("recovered") FROM "clawback_line" '
                f'WHERE {where} GROUP BY "clawback_id"',
                params,
            )
            for clawback_id, due, recovered in cursor.fetchall():
                found[clawback_id] = (int(due), int(recovered))
        return found

    def set_states(self, states: dict[str, ClawbackState]) -> None:
        """One UPDATE per state and batch of clawbacks."""
        database = self._store.database
        by_state: dict[ClawbackState, list[str]] = defaultdict(list)
        for clawback_id, state in sorted(states.items()):
            by_state[state].append(clawback_id)
        for state, ids in by_state.items():
            for batch in chunked(ids, BATCH):
                where, params = in_list(database, '"id"', batch)
                execute_sql(
                    database,
                    f'UPDATE "clawback" SET "state" = {database.param} WHERE {where}',
                    [state.value, *params],
                )

    def mark_debts_pending(self, payee_id: str, now: datetime, by: Actor) -> None:
        PendingDebtsRow.insert(payee_id=payee_id, noted_at=to_us(now), **audit(by)).on_conflict(
            conflict_target=[PendingDebtsRow.payee_id], action="IGNORE"
        ).execute()

    def debts_pending(self, limit: int) -> list[tuple[str, Actor]]:
        cursor = execute_sql(
            self._store.database,
            'SELECT "payee_id", "recorded_by_service", "recorded_by_person" FROM "pending_debts" '
            f'ORDER BY "noted_at", "payee_id" LIMIT {self._store.database.param}',
            [limit],
        )
        return [(payee, actor(service, person)) for payee, service, person in cursor.fetchall()]

    def debts_pending_among(self, payee_ids: Collection[str]) -> set[str]:
        if not payee_ids:
            return set()
        p = self._store.database.param
        cursor = execute_sql(
            self._store.database,
            'SELECT "payee_id" FROM "pending_debts" WHERE "payee_id" IN ('
            + ", ".join([p] * len(payee_ids))
            + ")",
            list(payee_ids),
        )
        return {row[0] for row in cursor.fetchall()}

    def postpone_debts_pending(self, payee_id: str, now: datetime) -> None:
        PendingDebtsRow.update(noted_at=to_us(now)).where(
            PendingDebtsRow.payee_id == payee_id
        ).execute()

    def clear_debts_pending(self, payee_id: str) -> None:
        PendingDebtsRow.delete().where(PendingDebtsRow.payee_id == payee_id).execute()

    def clawback(
        self, *, clawback_id: str | None = None, refund_id: str | None = None
    ) -> RefundClawback:
        found = (
            self._one(ClawbackRow.id, clawback_id)
            if clawback_id
            else self._one(ClawbackRow.refund, refund_id or "")
        )
        if found is None:
            raise NotFound("clawback", clawback_id or f"refund {refund_id}")
        return found

    def clawback_of_refund(self, refund_id: str) -> RefundClawback | None:
        return self._one(ClawbackRow.refund, refund_id)

    def _one(self, column: Any, key: str) -> RefundClawback | None:
        """The clawback whose `column` is `key`: SQL made once per column."""
        cursor = self._store.run_prepared(
            f"clawback_by:{column.column_name}",
            lambda: _clawback_query(column == KEY, order=(), limit=1),
            key,
        )
        found = self._with_lines(cursor.fetchall())
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
        shape = (state is not None, start is not None, end is not None, after is not None)
        cursor = self._store.run_bound(
            f"list_clawbacks:{shape}",
            lambda: _list_clawbacks_query(*shape),
            {
                _SHOP_ID: shop_id,
                _STATE: state,
                _START: None if start is None else to_us(start),
                _END: None if end is None else to_us(end),
                _AFTER_CREATED_AT: after[0] if after else None,
                _AFTER_ID: after[1] if after else None,
                LIMIT: limit,
            },
        )
        return self._with_lines(cursor.fetchall())

    def _with_lines(self, found: list[tuple[Any, ...]]) -> list[RefundClawback]:
        """The clawbacks of rows of _clawback_query, with all their lines read in one more
        query; rows are read as tuples (no model instances)."""
        if not found:
            return []
        lines: dict[str, list[ClawbackLine]] = {row[0]: [] for row in found}
        database = self._store.database
        where, params = in_list(database, '"clawback_id"', list(lines))
        cursor = execute_sql(
            database,
            'SELECT "clawback_id", "line_no", "payee_kind", "payee_id", "commission", "due", '
            f'"recovered" FROM "clawback_line" WHERE {where} ORDER BY "clawback_id", "line_no"',
            params,
        )
        for (
            clawback_id,
            line_no,
            payee_kind,
            payee_id,
            commission,
            due,
            recovered,
        ) in cursor.fetchall():
            lines[clawback_id].append(
                restored(
                    ClawbackLine,
                    line_no=line_no,
                    payee_kind=members(PayeeKind)[payee_kind],
                    payee_id=payee_id,
                    commission=commission,
                    due=due,
                    recovered=recovered,
                )
            )
        return [_clawback(row, tuple(lines[row[0]])) for row in found]


# Stand-ins for the values of a ListClawbacks query, replaced when it runs (SqlStore.run_bound).
_SHOP_ID = stand_in("shop_id")
_STATE = stand_in("state")
_START = stand_in("start")
_END = stand_in("end")
_AFTER_CREATED_AT = stand_in("after_created_at")
_AFTER_ID = stand_in("after_id")


def _list_clawbacks_query(state: bool, start: bool, end: bool, after: bool) -> pw.Query:
    """The query of SqlClawbacks.list_clawbacks for one shape of request (which filters it has),
    built once per shape, with stand-ins for the values."""
    where = ClawbackRow.shop_id == _SHOP_ID
    if state:
        where &= ClawbackRow.state == _STATE
    if start:
        where &= ClawbackRow.created_at >= _START
    if end:
        where &= ClawbackRow.created_at < _END
    if after:
        where &= (ClawbackRow.created_at < _AFTER_CREATED_AT) | (
            (ClawbackRow.created_at == _AFTER_CREATED_AT) & (ClawbackRow.id < _AFTER_ID)
        )
    return _clawback_query(
        where, order=(ClawbackRow.created_at.desc(), ClawbackRow.id.desc()), limit=LIMIT
    )


def _clawback_query(where: Any, order: tuple[Any, ...], limit: int | str) -> pw.Query:
    """Clawbacks with their refunds, one row each, the columns _clawback reads."""
    return (
        ClawbackRow.select(
            ClawbackRow.id,
            ClawbackRow.shop_id,
            ClawbackRow.reasons,
            ClawbackRow.policy_version,
            ClawbackRow.created_at,
            RefundRow.id,
            RefundRow.order,
            RefundRow.application_id,
            RefundRow.amount,
            RefundRow.started_at,
            RefundRow.paid_at,
            RefundRow.refunded_before,
            RefundRow.refunded_after,
            RefundRow.paid_from_wallet,
            RefundRow.paid_from_deposit,
            RefundRow.recorded_by_service,
            RefundRow.recorded_by_person,
        )
        .join(RefundRow)
        .where(where)
        .order_by(*order)
        .limit(limit)
    )


def _clawback(row: tuple[Any, ...], lines: tuple[ClawbackLine, ...]) -> RefundClawback:
    (
        clawback_id,
        shop_id,
        reasons,
        policy_version,
        created_at,
        refund_id,
        order_id,
        application_id,
        amount,
        started_at,
        paid_at,
        refunded_before,
        refunded_after,
        from_wallet,
        from_deposit,
        service,
        person,
    ) = row
    return restored(
        RefundClawback,
        clawback_id=clawback_id,
        refund=restored(
            Refund,
            refund_id=refund_id,
            order_id=order_id,
            application_id=application_id,
            amount=amount,
            started_at=at(started_at),
            paid_at=at(paid_at),
        ),
        shop_id=shop_id,
        reasons=tuple(
            Violation(members(ReasonCode)[code], text) for code, text in json.loads(reasons)
        ),
        lines=lines,
        refunded_before=refunded_before,
        refunded_after=refunded_after,
        policy_version=policy_version,
        created_at=at(created_at),
        payment=RefundPayment(from_wallet, from_deposit),
        recorded_by=actor(service or "", person or ""),
    )


@functools.cache
def _record_refund_sql(refund_columns: tuple[str, ...], clawback_columns: tuple[str, ...]) -> str:
    """PostgreSQL's one statement for a refund recorded: the refund, the order's refunded
    amount, the application (none when its id is empty), the clawback and its lines, in
    data-modifying CTEs (foreign keys are checked at the statement's end, when all are in)."""
    refund = insert_rows_sql("refund", refund_columns, 1, "%s", ignore_conflicts=False)
    clawback = insert_rows_sql("clawback", clawback_columns, 1, "%s", ignore_conflicts=False)
    return (
        f"WITH r AS ({refund}), "
        'o AS (UPDATE "orders" SET "recorded_refunded_amount" = "recorded_refunded_amount" + %s '
        'WHERE "id" = %s), '
        'a AS (UPDATE "application" SET "state" = %s WHERE "id" = %s), '
        f"c AS ({clawback}) "
        + unnest_insert_sql("clawback_line", _LINE_COLUMNS, ignore_conflicts=False)
    )
