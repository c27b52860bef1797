"""The benchmark's data, written straight into the store's tables (server/store/schema.py).

Millions of rows are made by the database itself, `INSERT ... SELECT` over a series of integers
(`generate_series` on PostgreSQL, a recursive CTE on SQLite), in one transaction per step; the
orders that the timed writes use are prepared just before they are timed. The ledger stays
consistent: every balance is moved by a transfer row, and the balances of the accounts a step
touched are brought up to date from the transfers it inserted.

The data set, for N orders `bench-o-<i>`:

- SHOPS shops in normal operation, each with an owner, a funded Anxin wallet and deposit; order i
  is sold by shop i % SHOPS, completed 30 days ago, after its regular after-sales period, with
  four commission lines (influencer, group leader, affiliate, the platform's fee) whose payees
  have funded cash accounts: every order is eligible for the late entry.
- A quarter of the orders (`history`) went the whole way: an entry opened and used, an
  application refunded, a late refund of 10,000 fen whose 4-line clawback was recovered in full,
  with its five transfers, six to three days ago. They give GetEntry, ListEntries, GetClawback,
  ListClawbacks and ListTransfers something to read, 50 entries and clawbacks per shop at 10k
  orders. Their mutations left what a database in service keeps of them: the request ids with
  their responses, and the events (entry opened, entry used, refund recorded) in the outbox,
  whose 7 days of retention they are within. So the idempotency table and the outbox have the
  size (and, on PostgreSQL, the planner's statistics) of a service that ran, not of an empty
  one.
- The other orders are `fresh`: each timed write takes orders of its own from them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import psycopg

from server.domain.events import (
    EntryOpened,
    EntryUsed,
    EventType,
    RecoveredLine,
    RefundRecorded,
    payload_values,
)

SHOPS = 50
INFLUENCERS = 1000
GROUP_LEADERS = 100
AFFILIATES = 997

PAID = 129_900
REFUND = 10_000
# (payee kind, commission, what a refund of REFUND owes back of it): the commissions are
# multiples of PAID / REFUND, so each line's due is exact.
LINES = (
    ("INFLUENCER", 12_990, 1_000),
    ("GROUP_LEADER", 2_598, 200),
    ("AFFILIATE", 1_299, 100),
    ("TECHNICAL_SERVICE_FEE", 6_495, 500),
)

DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
# How long ago the history's entries were opened: its last events (the refunds, 3 days later)
# are within the retention of the outbox and of the request ids (the policy's, 7 days each,
# checked by the benchmark's smoke test).
HISTORY_DAYS = 6
# A time in a payload whose times the SQL gives.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

WALLET_FUNDS = 10**12
DEPOSIT_FUNDS = 10**10
CASH_FUNDS = 10**11
PLATFORM_FUNDS = 10**12
DEBTOR_SHOP_FUNDS = 1_000_000


def shop_id(s: int) -> str:
    return f"bench-shop-{s}"


def owner_id(s: int) -> str:
    return f"bench-staff-{s}"


def order_id(i: int) -> str:
    return f"bench-o-{i}"


def buyer_id(i: int) -> str:
    return f"bench-b-{i}"


def is_history(i: int) -> bool:
    return (i // SHOPS) % 4 == 0


def history_at_or_below(i: int) -> int:
    """The history order nearest below order i (same shop, the last group of four blocks)."""
    return (i // (4 * SHOPS)) * 4 * SHOPS + i % SHOPS


def payees() -> list[str]:
    return (
        [f"bench-kol-{k}" for k in range(INFLUENCERS)]
        + [f"bench-leader-{g}" for g in range(GROUP_LEADERS)]
        + [f"bench-aff-{a}" for a in range(AFFILIATES)]
    )


def q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Group:
    """Orders `<prefix>-o-<i>` for i in a range, as SQL expressions over the series' `i`."""

    prefix: str
    shop: str  # the order's shop id
    operator: str  # who opened its entry
    influencer: str  # the influencer's id
    history: str  # which orders had a late refund recorded (a condition)
    influencer_recovered: bool  # whether that refund recovered the influencer's line

    def recovered(self, kind: str, due: int) -> int:
        """What the history's refund recovered of a line of `kind` that owed `due`."""
        return due if kind != "INFLUENCER" or self.influencer_recovered else 0

    @property
    def clawback_state(self) -> str:
        return "RECOVERED" if self.influencer_recovered else "PARTIAL"


MAIN = Group(
    prefix="bench",
    shop=f"'bench-shop-' || (i % {SHOPS})",
    operator=f"'bench-staff-' || (i % {SHOPS})",
    influencer=f"'bench-kol-' || (i % {INFLUENCERS})",
    history=f"(i / {SHOPS}) % 4 = 0",
    influencer_recovered=True,
)


def debtor_group(tag: str) -> Group:
    """One shop per order, every order's late refund left its influencer's line unpaid."""
    prefix = f"bench-{tag}"
    return Group(
        prefix=prefix,
        shop=f"'{prefix}-shop-' || i",
        operator=q(f"{prefix}-staff"),
        influencer=q(f"{prefix}-kol"),
        history="1 = 1",
        influencer_recovered=False,
    )


def payee_sql(group: Group) -> dict[str, str]:
    """Each commission line's payee id, by payee kind, as SQL over `i`."""
    return {
        "INFLUENCER": group.influencer,
        "GROUP_LEADER": f"'bench-leader-' || (i % {GROUP_LEADERS})",
        "AFFILIATE": f"'bench-aff-' || (i % {AFFILIATES})",
        "TECHNICAL_SERVICE_FEE": "''",
    }


def commission_json(group: Group) -> str:
    """The orders' commission lines as the store keeps them (JSON), built in SQL."""
    payee = payee_sql(group)
    parts = []
    for kind, amount, _ in LINES:
        head = q(f'{{"payee_kind":"{kind}","payee_id":"')
        tail = q(f'","amount":{amount}}}')
        parts.append(f"{head} || {payee[kind]} || {tail}")
    return "'[' || " + " || ',' || ".join(parts) + " || ']'"


def json_sql(values: dict[str, Any], fields: dict[str, str]) -> str:
    """`values` as JSON text built in SQL, as the store writes a payload: each string value that
    names one of `fields` (a marker such as "@entry") is that field's SQL expression over `i`,
    a string (quoted) or, for a time, a number."""
    text = q(json.dumps(values, separators=(",", ":")))
    for marker, expression in fields.items():
        number = marker.endswith("_at")
        quote = "" if number else '"'
        text = text.replace(f'"{marker}"', f"{quote}' || ({expression}) || '{quote}")
    return text


class Database:
    """A plain connection to the benchmark's database, for bulk writes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = urlparse(url).scheme in ("postgres", "postgresql")
        self.param = "%s" if self.postgres else "?"
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if self.postgres:
            self._pg = psycopg.connect(url, autocommit=True)
            # The rows are consistent by construction: no foreign-key trigger per row (this
            # session only; the throwaway server's role may do this).
            self._pg.execute("SET session_replication_role = replica")
        else:
            path = urlparse(url).path[1:]
            self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("PRAGMA busy_timeout = 30000")
            # Bulk loads touch indexes all over: a cache of 512 MiB rather than 2.
            self._sqlite.execute("PRAGMA cache_size = -524288")

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            # Without parameters psycopg sends the text as it is (a % is a modulo).
            with self._pg.cursor() as cursor:
                cursor.execute(sql.encode(), params)  # bytes: a query built at run time
                return cursor.fetchall() if cursor.description else []
        assert self._sqlite is not None
        return self._sqlite.execute(sql, params or ()).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._pg is not None:
            with self._pg.cursor() as cursor:
                cursor.executemany(sql.encode(), rows)
            return
        assert self._sqlite is not None
        self._sqlite.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._pg is not None:
            with self._pg.transaction():
                yield
            return
        assert self._sqlite is not None
        self._sqlite.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._sqlite.execute("ROLLBACK")
            raise
        self._sqlite.execute("COMMIT")

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Rows as {column: value}, all with the same columns."""
        if not rows:
            return
        columns = list(rows[0])
        marks = ", ".join([self.param] * len(columns))
        self.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            [[row[c] for c in columns] for row in rows],
        )

    def fingerprint(self, text: str) -> str:
        """A SQL expression: 64 hexadecimal digits, as a request's fingerprint (a SHA-256 in the
        service): of the SQL text expression `text` on PostgreSQL, random on SQLite (which has
        no SHA-256 built in)."""
        if self.postgres:
            return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"
        return "lower(hex(randomblob(32)))"

    def blob(self, size: int) -> str:
        """A SQL expression: `size` bytes, as a stored response."""
        if self.postgres:
            return f"decode(repeat('5a', {size}), 'hex')"
        return f"randomblob({size})"

    def series(self, start: int, stop: int) -> tuple[str, str]:
        """(a WITH clause, a FROM item) naming the integers start..stop-1 as `i`."""
        if self.postgres:
            return "", f"generate_series({start}, {stop - 1}) AS s(i)"
        return (
            f"WITH RECURSIVE s(i) AS (SELECT {start} UNION ALL "
            f"SELECT i + 1 FROM s WHERE i < {stop - 1}) ",
            "s",
        )

    def tidy(self) -> None:
        """What a database in service has after a bulk load: statistics for the planner."""
        if self.postgres:
            self.execute("VACUUM (ANALYZE)")


class Dataset:
    """The data set in one database, grown size after size; hands out fresh orders."""

    def __init__(self, database: Database, policy_version: str) -> None:
        self.db = database
        self.policy_version = policy_version
        self.now = int(time.time() * 1_000_000)
        self.orders = 0
        self._next_fresh = 0
        self._debtors = 0

    # --- bulk loading -------------------------------------------------------------------------

    def load_base(self) -> None:
        """The shops, their owners, the payees and their funded accounts."""
        db, now = self.db, self.now
        marks = self._marks()
        with db.transaction():
            db.insert(
                "shop",
                [
                    {
                        "id": shop_id(s),
                        "name": f"Bench shop {s}",
                        "status": "NORMAL",
                        "wallet_opened_at": now - 400 * DAY_US,
                        "version": 0,
                    }
                    for s in range(SHOPS)
                ],
            )
            db.insert(
                "staff",
                [
                    {
                        "id": owner_id(s),
                        "shop_id": shop_id(s),
                        "role": "OWNER",
                        "name": f"Owner {s}",
                        "version": 0,
                    }
                    for s in range(SHOPS)
                ],
            )
            funds = (
                [("ANXIN_WALLET", shop_id(s), WALLET_FUNDS) for s in range(SHOPS)]
                + [("DEPOSIT", shop_id(s), DEPOSIT_FUNDS) for s in range(SHOPS)]
                + [("CASH", p, CASH_FUNDS) for p in payees()]
            )
            db.insert("account", [{"kind": k, "owner_id": o, "balance": 0} for k, o, _ in funds])
            funds.append(("PLATFORM_COMMISSION", "", PLATFORM_FUNDS))
            self._fund(funds, "base")
            self._settle(marks)

    def grow(self, size: int) -> float:
        """Adds orders until there are `size`; returns the seconds it took."""
        if size <= self.orders:
            return 0.0
        start = time.perf_counter()
        marks = self._marks()
        with self.db.transaction():
            self._orders(MAIN, self.orders, size)
            self._settle(marks)
        self.db.tidy()
        self.orders = size
        return time.perf_counter() - start

    def _fund(self, funds: Sequence[tuple[str, str, int]], tag: str) -> None:
        """Money from outside into each (kind, owner, amount), as PostFunds moves it."""
        db, now = self.db, self.now
        rows = []
        for kind, owner, amount in funds:
            request = f"bench-fund-{tag}-{kind.lower()}-{owner or 'platform'}"
            rows.append((kind, owner, amount, f"requests/{request}", f"funds:{request}"))
        p = db.param
        db.executemany(
            "INSERT INTO transfer (from_account_id, to_account_id, amount, kind, reference, memo, "
            "idempotency_key, posted_at) SELECT "
            "(SELECT id FROM account WHERE kind = 'EXTERNAL'), "
            f"(SELECT id FROM account WHERE kind = {p} AND owner_id = {p}), "
            f"{p}, 'FUNDS_IN', {p}, 'bench funds', {p}, {now - 300 * DAY_US}",
            rows,
        )

    def _orders(self, group: Group, start: int, stop: int) -> None:
        """Orders start..stop-1 of the group, and the late refunds of its history orders."""
        db, g, now = self.db, group, self.now
        with_, source = db.series(start, stop)
        p = g.prefix
        db.execute(
            f"{with_}INSERT INTO orders (id, shop_id, buyer_id, kind, marketing_campaign, "
            "category_id, paid_amount, prior_refunded_amount, recorded_refunded_amount, "
            "created_at, completed_at, after_sales_ends_at, commission_lines, version) "
            f"SELECT '{p}-o-' || i, {g.shop}, '{p}-b-' || i, 'ORDINARY', FALSE, "
            f"'home-appliances', {PAID}, 0, CASE WHEN {g.history} THEN {REFUND} ELSE 0 END, "
            f"{now - 35 * DAY_US}, {now - 30 * DAY_US}, {now - 23 * DAY_US}, "
            f"{commission_json(g)}, 0 FROM {source}"
        )
        # The history: opened 6 days ago, used a day later, refunded two and three days later;
        # its events are still in the outbox, whose retention is 7 days.
        opened = f"({now - HISTORY_DAYS * DAY_US} + i)"
        used = f"({opened} + {DAY_US})"
        started = f"({opened} + {2 * DAY_US})"
        paid = f"({opened} + {3 * DAY_US})"
        expires = paid  # the entry's window, 3 days
        where = f"FROM {source} WHERE {g.history}"
        version = q(self.policy_version)
        db.execute(
            f"{with_}INSERT INTO entry (id, order_id, shop_id, state, opened_at, expires_at, "
            "operator_id, note, policy_version, used_at, application_id) "
            f"SELECT '{p}-e-' || i, '{p}-o-' || i, {g.shop}, 'USED', {opened}, "
            f"{expires}, {g.operator}, '', {version}, {used}, '{p}-a-' || i {where}"
        )
        db.execute(
            f"{with_}INSERT INTO application (id, order_id, entry_id, buyer_id, amount, reason, "
            f"state, filed_at) SELECT '{p}-a-' || i, '{p}-o-' || i, '{p}-e-' || i, "
            f"'{p}-b-' || i, {REFUND}, 'stopped working', 'REFUNDED', {used} {where}"
        )
        db.execute(
            f"{with_}INSERT INTO refund (id, order_id, application_id, amount, started_at, "
            "paid_at, refunded_before, refunded_after, paid_from_wallet, paid_from_deposit, "
            f"recorded_at) SELECT '{p}-r-' || i, '{p}-o-' || i, '{p}-a-' || i, {REFUND}, "
            f"{started}, {paid}, 0, {REFUND}, {REFUND}, 0, {paid} {where}"
        )
        db.execute(
            f"{with_}INSERT INTO clawback (id, refund_id, order_id, shop_id, state, reasons, "
            f"policy_version, created_at) SELECT '{p}-c-' || i, '{p}-r-' || i, '{p}-o-' || i, "
            f"{g.shop}, '{g.clawback_state}', '[]', {version}, {paid} {where}"
        )
        payee = payee_sql(g)
        # The accounts by join, not by a subquery per row.
        wallet = f"JOIN account w ON w.kind = 'ANXIN_WALLET' AND w.owner_id = {g.shop}"
        db.execute(
            f"{with_}INSERT INTO transfer (from_account_id, to_account_id, amount, kind, "
            "reference, memo, idempotency_key, posted_at) "
            f"SELECT w.id, x.id, {REFUND}, 'REFUND_PAYMENT', 'refunds/{p}-r-' || i, '', "
            f"'refund:{p}-r-' || i || ':ANXIN_WALLET', {paid} FROM {source} {wallet} "
            f"JOIN account x ON x.kind = 'EXTERNAL' WHERE {g.history} ORDER BY i"
        )
        for line_no, (kind, commission, due) in enumerate(LINES):
            recovered = g.recovered(kind, due)
            db.execute(
                f"{with_}INSERT INTO clawback_line (clawback_id, line_no, payee_kind, payee_id, "
                f"commission, due, recovered) SELECT '{p}-c-' || i, {line_no}, '{kind}', "
                f"{payee[kind]}, {commission}, {due}, {recovered} {where} ORDER BY i"
            )
            if not recovered:
                continue
            payer = (
                "JOIN account f ON f.kind = 'PLATFORM_COMMISSION'"
                if kind == "TECHNICAL_SERVICE_FEE"
                else f"JOIN account f ON f.kind = 'CASH' AND f.owner_id = {payee[kind]}"
            )
            db.execute(
                f"{with_}INSERT INTO transfer (from_account_id, to_account_id, amount, kind, "
                "reference, memo, idempotency_key, posted_at) "
                f"SELECT f.id, w.id, {recovered}, 'CLAWBACK', "
                f"'clawbacks/{p}-c-' || i || '/lines/{line_no}', '', "
                f"'clawback:{p}-c-' || i || ':{line_no}', {paid} "
                f"FROM {source} {wallet} {payer} WHERE {g.history} ORDER BY i"
            )
        self._requests(g, with_, where, opened, used, paid)
        self._outbox(g, with_, where, opened, expires, used, paid)

    def _requests(
        self, g: Group, with_: str, where: str, opened: str, used: str, paid: str
    ) -> None:
        """The request ids of the history's mutations, each with its response, as the service
        keeps them for replays (forever)."""
        p = g.prefix
        for method, tag, size, at in (
            ("OpenEntry", "open", 160, opened),
            ("ApplyAfterSales", "apply", 200, used),
            ("RecordRefund", "refund", 600, paid),
        ):
            request_id = f"'{p}-req-{tag}-' || i"
            self.db.execute(
                f"{with_}INSERT INTO request (request_id, method, fingerprint, response, "
                f"created_at) SELECT {request_id}, '{method}', "
                f"{self.db.fingerprint(request_id)}, {self.db.blob(size)}, {at} {where}"
            )

    def _outbox(
        self, g: Group, with_: str, where: str, opened: str, expires: str, used: str, paid: str
    ) -> None:
        """The history's events, in the order they happened: its entries opened, then used,
        then its refunds recorded (positions drawn in that order)."""
        p = g.prefix
        version = q(self.policy_version)
        payee = payee_sql(g)
        lines = []
        for line_no, (kind, _, due) in enumerate(LINES):
            recovered = g.recovered(kind, due)
            fee = kind == "TECHNICAL_SERVICE_FEE"
            lines.append(
                RecoveredLine(
                    line_no=line_no,
                    payee_kind=kind,
                    payee_id=f"@payee{line_no}",
                    account_kind="PLATFORM_COMMISSION" if fee else "CASH",
                    account_owner_id=f"@payee{line_no}",
                    due=due,
                    recovered=recovered,
                    outstanding=due - recovered,
                )
            )
        told = (
            (
                EventType.ENTRY_OPENED,
                opened,
                f"'staff:' || {g.operator}",
                version,
                EntryOpened("@entry", EPOCH, EPOCH, "@operator", ""),
            ),
            (
                EventType.ENTRY_USED,
                used,
                f"'buyer:{p}-b-' || i",
                "''",
                EntryUsed("@entry", "@application", "@buyer", REFUND, EPOCH),
            ),
            (
                EventType.REFUND_RECORDED,
                paid,
                "''",
                version,
                RefundRecorded(
                    "@refund",
                    "@clawback",
                    "@application",
                    REFUND,
                    REFUND,
                    0,
                    g.clawback_state,
                    (),
                    tuple(lines),
                ),
            ),
        )
        fields = {
            "@entry": f"'{p}-e-' || i",
            "@application": f"'{p}-a-' || i",
            "@refund": f"'{p}-r-' || i",
            "@clawback": f"'{p}-c-' || i",
            "@buyer": f"'{p}-b-' || i",
            "@operator": g.operator,
            **{f"@payee{n}": payee[kind] for n, (kind, _, _) in enumerate(LINES)},
        }
        times = {"opened_at": opened, "expires_at": expires, "filed_at": used}
        for event_type, at, person, policy_version, payload in told:
            values = payload_values(payload)
            for name, expression in times.items():
                if name in values:
                    values[name] = f"@{name}"
                    fields[f"@{name}"] = expression
            payload_sql = json_sql(values, fields)
            self.db.execute(
                f"{with_}INSERT INTO event (type, occurred_at, shop_id, order_id, "
                "actor_service, actor_person, policy_version, payload) "
                f"SELECT '{event_type.value}', {at}, {g.shop}, '{p}-o-' || i, '', {person}, "
                f"{policy_version}, {payload_sql} {where} ORDER BY i"
            )

    def newest_event(self) -> int:
        """The highest position in the outbox, 0 when it is empty."""
        return int(self.db.execute("SELECT COALESCE(MAX(position), 0) FROM event")[0][0])

    def _marks(self) -> tuple[int, int]:
        """The last transfer and the last external change noted (by the store's trigger, which
        PostgreSQL's bulk load does not fire)."""
        return (
            int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM transfer")[0][0]),
            int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM external_change")[0][0]),
        )

    def _settle(self, marks: tuple[int, int]) -> None:
        """Moves the balances of the accounts that transfers after `marks` touched, as the
        store's own transfers do, the external account's included, as the sweep leaves it
        (so that the server's sweeps find none of these changes to fold while measured)."""
        mark, change_mark = marks
        self.db.execute(
            "UPDATE account SET balance = balance + moved.amount FROM ("
            "SELECT account_id, SUM(amount) AS amount FROM ("
            f"SELECT to_account_id AS account_id, amount FROM transfer WHERE id > {mark} "
            f"UNION ALL SELECT from_account_id, -amount FROM transfer WHERE id > {mark}"
            ") AS legs GROUP BY account_id) AS moved "
            "WHERE account.id = moved.account_id"
        )
        if not self.db.postgres:
            # The changes SQLite's trigger noted of these transfers, just counted in. (The bulk
            # load runs on PostgreSQL as a replica, which fires no trigger: the changes there
            # after the mark are the running server's own, to be folded by its sweep.)
            self.db.execute(f"DELETE FROM external_change WHERE id > {change_mark}")

    # --- orders for the timed writes ------------------------------------------------------------

    def fresh_left(self) -> int:
        """Fresh orders not handed out yet."""
        return sum(1 for i in range(self._next_fresh, self.orders) if not is_history(i))

    def take_fresh(self, count: int) -> list[int]:
        """`count` fresh orders (fewer if there are not as many), never handed out again."""
        taken: list[int] = []
        while len(taken) < count and self._next_fresh < self.orders:
            if not is_history(self._next_fresh):
                taken.append(self._next_fresh)
            self._next_fresh += 1
        return taken

    def open_entries(self, orders: Sequence[int]) -> None:
        """An entry opened an hour ago on each order: the buyer may file."""
        with self.db.transaction():
            self.db.insert("entry", self._entries(orders, self.now_us() - HOUR_US, used=False))

    def file_applications(self, orders: Sequence[int]) -> list[str]:
        """On each order, an entry opened a day ago and the buyer's application of REFUND
        through it, not refunded yet; returns the applications' ids."""
        opened = self.now_us() - DAY_US
        with self.db.transaction():
            self.db.insert("entry", self._entries(orders, opened, used=True))
            self.db.insert(
                "application",
                [
                    {
                        "id": f"bench-pa-{i}",
                        "order_id": order_id(i),
                        "entry_id": f"bench-pe-{i}",
                        "buyer_id": buyer_id(i),
                        "amount": REFUND,
                        "reason": "stopped working",
                        "state": "FILED",
                        "filed_at": opened + HOUR_US,
                    }
                    for i in orders
                ],
            )
        return [f"bench-pa-{i}" for i in orders]

    def _entries(self, orders: Sequence[int], opened: int, *, used: bool) -> list[dict[str, Any]]:
        """Entries of the orders, OPEN, or USED an hour after they opened."""
        return [
            {
                "id": f"bench-pe-{i}",
                "order_id": order_id(i),
                "shop_id": shop_id(i % SHOPS),
                "state": "USED" if used else "OPEN",
                "opened_at": opened,
                "expires_at": opened + 72 * HOUR_US,
                "operator_id": owner_id(i % SHOPS),
                "note": "",
                "policy_version": self.policy_version,
                "used_at": opened + HOUR_US if used else None,
                "application_id": f"bench-pa-{i}" if used else None,
            }
            for i in orders
        ]

    @staticmethod
    def now_us() -> int:
        return int(time.time() * 1_000_000)

    # --- a payee owing many shops ---------------------------------------------------------------

    def load_debtor(self, shops: int) -> str:
        """An influencer with an empty cash account who owes REFUND's influencer line to each of
        `shops` new shops; returns the influencer's id."""
        self._debtors += 1
        group = debtor_group(f"d{self._debtors}")
        db, p = self.db, group.prefix
        with_, source = db.series(0, shops)
        marks = self._marks()
        with db.transaction():
            db.execute(
                f"{with_}INSERT INTO shop (id, name, status, wallet_opened_at, version) "
                f"SELECT {group.shop}, 'Bench debtor shop', 'NORMAL', "
                f"{self.now - 400 * DAY_US}, 0 FROM {source}"
            )
            db.execute(
                f"{with_}INSERT INTO account (kind, owner_id, balance) "
                f"SELECT 'ANXIN_WALLET', {group.shop}, 0 FROM {source}"
            )
            db.insert("account", [{"kind": "CASH", "owner_id": f"{p}-kol", "balance": 0}])
            db.execute(
                f"{with_}INSERT INTO transfer (from_account_id, to_account_id, amount, kind, "
                "reference, memo, idempotency_key, posted_at) "
                "SELECT (SELECT id FROM account WHERE kind = 'EXTERNAL'), "
                "(SELECT id FROM account WHERE kind = 'ANXIN_WALLET' "
                f"AND owner_id = {group.shop}), "
                f"{DEBTOR_SHOP_FUNDS}, 'FUNDS_IN', 'requests/{p}-fund-' || i, 'bench funds', "
                f"'funds:{p}-fund-' || i, {self.now - 300 * DAY_US} FROM {source} ORDER BY i"
            )
            self._orders(group, 0, shops)
            self._settle(marks)
        self.db.tidy()
        return f"{p}-kol"
