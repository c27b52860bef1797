"""The outbox: events written at the end of the transaction of the change they tell, read in
position order.

Why a consumer resuming from the last position it handled never misses an event, although
transactions commit out of order across replicas: a position drawn before the commit could become
visible after a higher one committed meanwhile, and a consumer that had read the higher one would
skip it. So positions are handed out in commit order. On PostgreSQL the database draws them at
the commit itself: the events are inserted with a provisional position below zero, and a
deferred trigger (schema step 5, migrations.py) that runs as the transaction commits takes a
transaction-level advisory lock (EVENT_LOCK) and only then gives each event its position. The
lock is held until the transaction has ended (PostgreSQL releases locks after the commit is
visible), so a transaction that draws position N + 1 does so only after the one holding N has
committed. Whoever sees N + 1 therefore sees N, and the highest position visible is a safe point
to resume from. The lock is the last thing a transaction takes (nothing else is waited for while
holding it), so it adds no deadlock; and as it is taken inside the COMMIT, it is held for the
commit's own work, not across the client's round trips, so the commits of the transactions that
write events follow one another only for that short while. On SQLite the single writer commits
in order already.

The alternative, storing each event's transaction id and reading only those below the oldest
transaction still running (pg_snapshot_xmin), orders by transaction start rather than commit and
still needs the consumers to resume by transaction id; the lock keeps the position itself safe.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.domain.events import (
    Event,
    EventPage,
    EventType,
    payload_from_values,
    payload_values,
)
from server.store.schema import (
    BATCH,
    EVENTS_PRUNED_THROUGH,
    Statement,
    actor,
    at,
    chunked,
    execute_sql,
    insert_rows,
    members,
    restored,
    rows_pg,
    to_us,
)

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore

# The PostgreSQL advisory lock (two-key form) under which the commit draws the events' positions.
EVENT_LOCK = (726_0433, 0)
# Positions one read ranges over at most (EventsStore.read).
SCAN_SPAN = 10_000
# The highest position a column holds (a signed 64-bit integer), which a range reaches at most.
MAX_POSITION = 2**63 - 1
# The highest position pruned (NULL before the first prune), as a scalar subquery.
_PRUNED_THROUGH = (
    f'(SELECT CAST("value" AS BIGINT) FROM "setting" WHERE "name" = \'{EVENTS_PRUNED_THROUGH}\')'
)

_COLUMNS = (
    "type",
    "occurred_at",
    "shop_id",
    "order_id",
    "actor_service",
    "actor_person",
    "policy_version",
    "payload",
)
_SELECTED = ", ".join(f'e."{c}"' for c in ("position", *_COLUMNS))
# PostgreSQL's INSERT of events (their rows, schema.rows_pg), each with a provisional position
# below zero (unique among the transactions still open, never seen by a reader) for the commit
# to replace. Positions rise in commit order; they may skip numbers (a commit that fails after
# drawing, a sequence after a crash), so a consumer resumes after the last it read, never
# expects it plus one.
_INSERT = (
    'INSERT INTO "event" ("position", {names}) '
    "SELECT -nextval('event_provisional_position'), u.* FROM ({{rows}}) AS u".format(
        names=", ".join(f'"{c}"' for c in _COLUMNS)
    )
)
_TYPES = ("text", "bigint", "text", "text", "text", "text", "text", "text")


class SqlEvents:
    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.pending: list[Event] = []
        self.added_any = False

    def add(self, *events: Event) -> None:
        self.pending.extend(events)
        self.added_any = self.added_any or bool(events)

    def flush(self, alongside: Sequence[Statement] = ()) -> None:
        """Writes the pending events, in one statement: called just before the commit. On
        PostgreSQL, `alongside` are the transaction's other last writes (the response of its
        request, the balance changes kept for its end), each a data-modifying statement with its
        parameters, run by that same statement (SqlUnitOfWork.commit)."""
        if alongside and not (self._store.is_postgres and self.pending):
            raise ValueError("other writes go with events, on PostgreSQL only")
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        rows = [
            (
                e.type.value,
                to_us(e.occurred_at),
                e.shop_id,
                e.order_id,
                e.actor.service,
                e.actor.person,
                e.policy_version,
                json.dumps(payload_values(e.payload), separators=(",", ":")),
            )
            for e in pending
        ]
        database = self._store.database
        if not self._store.is_postgres:
            # SQLite bounds the parameters of a statement: BATCH rows at a time.
            for batch in chunked(rows, BATCH):
                insert_rows(database, "event", _COLUMNS, list(batch))
            return
        # Their positions are provisional until the commit draws the real ones (see above).
        params = [value for _, values in alongside for value in values]
        listed, values = rows_pg(rows, _TYPES, besides=len(params))
        insert = _INSERT.format(rows=listed)
        if not alongside:
            execute_sql(database, insert, values)
            return
        with_ = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(alongside))
        execute_sql(database, f"WITH {with_} {insert}", [*params, *values])

    def read(
        self,
        *,
        after: int,
        shop_id: str | None,
        types: Collection[EventType],
        limit: int,
        from_oldest: bool = False,
    ) -> EventPage:
        """One statement, so that the page, the highest position and the highest pruned one are
        of one snapshot."""
        p = self._store.database.param
        # A range of at most SCAN_SPAN positions per statement: a filter that matches few events
        # of a long backlog reads on span by span instead of in one statement of any length.
        # From the oldest held, the range begins past the highest position pruned, read in the
        # statement itself: past a long pruned stretch, not in it.
        if from_oldest:
            low = f"COALESCE({_PRUNED_THROUGH}, 0)"
            where = [f'"position" > {low}', f'"position" <= {low} + {SCAN_SPAN}']
            params: list[Any] = []
        else:
            where = [f'"position" > {p}', f'"position" <= {p}']
            params = [after, min(after + SCAN_SPAN, MAX_POSITION)]
        if shop_id is not None:
            where.append(f'"shop_id" = {p}')
            params.append(shop_id)
        if types:
            where.append('"type" IN (' + ", ".join([p] * len(types)) + ")")
            params += [t.value for t in types]
        names = ", ".join(f'"{c}"' for c in ("position", *_COLUMNS))
        sql = (
            f'SELECT h.top, h.pruned, {_SELECTED} FROM (SELECT (SELECT MAX("position") FROM '
            f'"event") AS top, {_PRUNED_THROUGH} AS pruned) AS h LEFT JOIN (SELECT {names} FROM '
            f'"event" WHERE {" AND ".join(where)} ORDER BY "position" LIMIT {p}) AS e ON 1 = 1 '
            'ORDER BY e."position"'
        )
        cursor = execute_sql(self._store.database, sql, [*params, limit])
        found = cursor.fetchall()
        top, pruned = (found[0][0] or 0, found[0][1] or 0) if found else (0, 0)
        events = [_event(row[2:]) for row in found if row[2] is not None]
        top, pruned = int(top), int(pruned)
        if from_oldest:
            after = pruned
        upto = min(after + SCAN_SPAN, MAX_POSITION)
        if len(events) >= limit:
            through = events[-1].position
        else:
            # Everything at or below the highest position seen has committed (positions follow
            # the commit order), so a consumer may resume from here without missing anything.
            through = max(after, min(upto, top))
        return EventPage(events, through, pruned, top=top)

    def held(self) -> tuple[int, int]:
        cursor = execute_sql(
            self._store.database,
            f'SELECT {_PRUNED_THROUGH}, (SELECT MAX("position") FROM "event")',
        )
        pruned, top = cursor.fetchone()
        return int(pruned or 0), int(top or 0)

    def prune(self, before: datetime, limit: int) -> int:
        """Prunes a prefix of the positions: every event up to the last of the oldest `limit`
        that occurred before `before`, so that everything at or below the highest position
        pruned is gone and everything above it is held."""
        database, p = self._store.database, self._store.database.param
        cursor = execute_sql(
            database,
            # From above zero: below it are the index entries of provisional positions, dead.
            f'SELECT "position", "occurred_at" FROM "event" WHERE "position" > 0 AND "position" < '
            f'(SELECT MAX("position") FROM "event") ORDER BY "position" LIMIT {p}',
            [limit],
        )
        cutoff, last = to_us(before), None
        for position, occurred_at in cursor.fetchall():
            if occurred_at >= cutoff:
                break
            last = position
        if last is None:
            return 0
        deleted = execute_sql(
            database, f'DELETE FROM "event" WHERE "position" <= {p}', [last]
        ).rowcount
        execute_sql(
            database,
            f'UPDATE "setting" SET "value" = {p} WHERE "name" = {p} AND '
            f'CAST("value" AS BIGINT) < {p}',
            [str(last), EVENTS_PRUNED_THROUGH, last],
        )
        return int(deleted)


def _event(row: tuple[Any, ...]) -> Event:
    position, kind, occurred_at, shop_id, order_id, service, person, policy, payload = row
    event_type = members(EventType)[kind]
    return restored(
        Event,
        type=event_type,
        occurred_at=at(occurred_at),
        shop_id=shop_id,
        order_id=order_id,
        actor=actor(service, person),
        policy_version=policy,
        payload=payload_from_values(event_type, json.loads(payload)),
        position=int(position),
    )
