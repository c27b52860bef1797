"""The ledger: accounts and the transfers between them, double entry (balances sum to zero)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import peewee as pw

from server.domain.model import (
    EXTERNAL,
    NOBODY,
    PLATFORM_COMMISSION,
    AccountKind,
    AccountRef,
    Actor,
    Movement,
    Transfer,
    TransferKind,
)
from server.service.unit_of_work import InsufficientBalance, TransactionAborted, TransferExists
from server.store.schema import (
    BATCH,
    EXTERNAL_CHANGES_SUM_SQL,
    LIMIT,
    AccountRow,
    Statement,
    TransferRow,
    actor,
    add_by_id,
    add_by_id_pg,
    at,
    chunked,
    execute_sql,
    in_list,
    insert_rows,
    members,
    restored,
    rows,
    rows_query,
    stand_in,
    to_us,
)

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore

# Accounts are locked in this order (then by id) so that concurrent money movements never wait
# on each other in a cycle. Two accounts are not locked up front: the external account (no
# transfer changes its row, only the sweep's fold, which holds nothing else) and, in a refund, the
# platform's commission account, whose row is changed by the transaction's last statement
# (SqlLedger.take_deferred), so that whoever holds it waits on nothing more but the commit.
_LOCK_RANK = {
    AccountKind.CASH: 0,
    AccountKind.PLATFORM_COMMISSION: 1,
    AccountKind.ANXIN_WALLET: 2,
    AccountKind.DEPOSIT: 3,
}


_TRANSFER_COLUMNS = (
    "from_account_id",
    "to_account_id",
    "amount",
    "kind",
    "reference",
    "memo",
    "idempotency_key",
    "posted_at",
    "recorded_by_service",
    "recorded_by_person",
)


def _by_name(ref: AccountRef) -> tuple[str, str]:
    return (ref.kind.value, ref.owner_id)


# Above every transfer id (a BIGINT).
_NO_TRANSFER_ID = 2**63 - 1

_NAMED = "WITH named (kind, owner_id) AS"

_RANK_SQL = (
    'CASE a."kind" '
    + " ".join(f"WHEN '{kind.value}' THEN {rank}" for kind, rank in _LOCK_RANK.items())
    + " ELSE 9 END"
)


# The kinds of account that have an owner (a shop's, a payee's).
_OWNED_KINDS = tuple(sorted(kind.value for kind in AccountKind if kind.has_owner))


class SqlLedger:
    def __init__(
        self,
        store: SqlStore,
        account_ids: dict[AccountRef, int],
        on_commit: Callable[[Callable[[], None]], None],
    ) -> None:
        """`on_commit(callback)`: the unit of work's, to run `callback` once it committed."""
        self._store = store
        # Ids of accounts met in this unit of work.
        self._account_ids = account_ids
        self._on_commit = on_commit
        # Changes of balances kept for the transaction's end, by account id: the platform's
        # commission account, which every late refund moves. Its row, once changed, is locked
        # until the commit, and every other refund waits for it; changed by the last statement
        # (on PostgreSQL the one that writes the events, then only the COMMIT), it is held for
        # one round trip instead of several. Made before any read of the accounts.
        self._deferred: dict[int, int] = {}

    def take_deferred(self) -> Statement | None:
        """On PostgreSQL, the statement that makes the balance changes kept for the end, for the
        unit of work's last statement to run (it must: they are this ledger's no more); None
        when there are none."""
        if not self._deferred:
            return None
        deferred, self._deferred = self._deferred, {}
        return add_by_id_pg("account", "balance", deferred)

    def make_deferred(self) -> None:
        """Makes the balance changes kept for the end now: the transaction ends on SQLite, or
        something reads the accounts first."""
        if self._deferred:
            deferred, self._deferred = self._deferred, {}
            add_by_id(self._store.database, "account", "balance", deferred, floor=False)

    def fold_external(self, limit: int) -> int:
        """Adds at most `limit` of the oldest changes in "external_change" to the external
        account's row, and deletes them; how many. On PostgreSQL one statement, which skips
        the changes another replica's sweep holds and leaves the row alone when there are
        none."""
        external_id = self._store.external_account_id()
        database = self._store.database
        # The limit written out: a plan made for any limit could read the whole table.
        picked = f'SELECT "id" FROM "external_change" ORDER BY "id" LIMIT {int(limit)}'
        if self._store.is_postgres:
            found = execute_sql(
                database,
                'WITH gone AS (DELETE FROM "external_change" WHERE "id" IN '
                f'({picked} FOR UPDATE SKIP LOCKED) RETURNING "amount") '
                'UPDATE "account" SET "balance" = "balance" + (SELECT SUM("amount") FROM gone) '
                f'WHERE "id" = {external_id} AND EXISTS (SELECT 1 FROM gone) '
                "RETURNING (SELECT count(*) FROM gone)",
            ).fetchall()
            return int(found[0][0]) if found else 0
        changes = execute_sql(
            database, f'DELETE FROM "external_change" WHERE "id" IN ({picked}) RETURNING "amount"'
        ).fetchall()
        if changes:
            p = database.param
            execute_sql(
                database,
                f'UPDATE "account" SET "balance" = "balance" + {p} WHERE "id" = {p}',
                [sum(amount for (amount,) in changes), external_id],
            )
        return len(changes)

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
        recorded_by: Actor = NOBODY,
    ) -> Transfer:
        """Moves `amount` in one transaction. With guard_from, the payer may not go below zero
        (InsufficientBalance, nothing posted).

        The external account's row is not changed here (every movement from outside would queue
        on that one row): the database notes each movement's change as the transfer is inserted
        ("external_change"), the sweep folds those into the row (fold_external), and a read adds
        those not yet folded (balances)."""
        movement = Movement(
            from_account, to_account, amount, kind, reference, idempotency_key, memo
        )
        guarded = (from_account,) if guard_from else ()
        (transfer_id,) = self.post_transfers(
            [movement], now=now, guarded=guarded, recorded_by=recorded_by
        )
        return Transfer(
            transfer_id, from_account, to_account, amount, kind, reference, now, memo, recorded_by
        )

    def post_transfers(
        self,
        movements: Sequence[Movement],
        *,
        now: datetime,
        guarded: Collection[AccountRef],
        recorded_by: Actor = NOBODY,
    ) -> list[str]:
        """Posts the movements set-wise: per BATCH accounts one UPDATE of their balances (one
        more for the guarded ones that go down), per BATCH movements one multi-row INSERT; the
        platform's commission account's change is kept for the transaction's last statement
        (take_deferred), unless guarded. Returns the transfers' ids, in the movements' order."""
        if not movements:
            return []
        if any(m.amount <= 0 for m in movements):
            raise ValueError("a transfer moves a positive amount")
        if len({m.idempotency_key for m in movements}) < len(movements):
            raise ValueError("two movements share an idempotency key")
        ids = self._ensure_ids(
            {m.from_account for m in movements} | {m.to_account for m in movements}
        )
        change: dict[AccountRef, int] = defaultdict(int)
        for m in movements:
            change[m.from_account] -= m.amount
            change[m.to_account] += m.amount
        change.pop(EXTERNAL, None)
        last = change.pop(PLATFORM_COMMISSION, 0)
        database = self._store.database
        falling = [ref for ref, amount in change.items() if ref in guarded and amount < 0]
        for batch in chunked(falling, BATCH):
            amounts = {ids[ref]: change[ref] for ref in batch}
            changed = add_by_id(database, "account", "balance", amounts, floor=True)
            short = [ref for ref in batch if ids[ref] not in changed]
            if short:
                raise InsufficientBalance(self.balances(short[:1])[short[0]])
        fell = set(falling)
        rest = [ref for ref, amount in change.items() if amount and ref not in fell]
        for batch in chunked(rest, BATCH):
            amounts = {ids[ref]: change[ref] for ref in batch}
            add_by_id(database, "account", "balance", amounts, floor=False)
        if last:
            # Every late refund gives back its technical service fee: the one row all of them
            # share is changed at the transaction's end (see __init__), unless its guard must be
            # checked now. (Every guard is checked before a transfer is written: a refused
            # movement leaves none in this transaction, for the caller's refusal to look at.)
            platform = ids[PLATFORM_COMMISSION]
            last += self._deferred.pop(platform, 0)
            if PLATFORM_COMMISSION in guarded and last < 0:
                if not add_by_id(database, "account", "balance", {platform: last}, floor=True):
                    raise InsufficientBalance(
                        self.balances([PLATFORM_COMMISSION])[PLATFORM_COMMISSION]
                    )
            elif last:
                self._deferred[platform] = last
        posted_at = to_us(now)
        service, person = recorded_by.service, recorded_by.person
        transfer_ids: dict[str, int] = {}
        for some in chunked(movements, BATCH):
            returned = insert_rows(
                database,
                "transfer",
                _TRANSFER_COLUMNS,
                [
                    (
                        ids[m.from_account],
                        ids[m.to_account],
                        m.amount,
                        m.kind.value,
                        m.reference,
                        m.memo,
                        m.idempotency_key,
                        posted_at,
                        service,
                        person,
                    )
                    for m in some
                ],
                ignore_conflicts=True,
                returning=("idempotency_key", "id"),
            )
            transfer_ids.update(returned)
        skipped = [m.idempotency_key for m in movements if m.idempotency_key not in transfer_ids]
        if skipped:
            self._refuse_posted_before(skipped[0])
        return [str(transfer_ids[m.idempotency_key]) for m in movements]

    def _refuse_posted_before(self, key: str) -> NoReturn:
        """TransferExists: the movements' INSERT skipped the one with idempotency key `key`,
        posted before."""
        posted = self.transfer_with_key(key)
        assert posted is not None, key
        raise TransferExists(key, posted)

    def transfer_with_key(self, idempotency_key: str) -> Transfer | None:
        p = self._store.database.param
        found = execute_sql(
            self._store.database,
            'SELECT t."id", s."kind", s."owner_id", d."kind", d."owner_id", t."amount", t."kind", '
            't."reference", t."posted_at", t."memo", t."recorded_by_service", '
            't."recorded_by_person" FROM "transfer" AS t '
            'JOIN "account" AS s ON s."id" = t."from_account_id" '
            'JOIN "account" AS d ON d."id" = t."to_account_id" '
            f'WHERE t."idempotency_key" = {p}',
            [idempotency_key],
        ).fetchone()
        return None if found is None else _transfer(found)

    def _ensure_ids(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        """The ids of `refs`, accounts created if need be; ids already met cost nothing."""
        known = {**self._store.fixed_account_ids, **self._account_ids}
        found = {ref: known[ref] for ref in refs if ref in known}
        missing = sorted((ref for ref in refs if ref not in found), key=_by_name)
        if missing:
            self._create(missing)
            fresh = {ref: account_id for account_id, ref, _ in self._select(missing)}
            self._account_ids.update(fresh)
            found.update(fresh)
        return found

    def _create(self, refs: Sequence[AccountRef]) -> None:
        for batch in chunked(refs, BATCH):
            insert_rows(
                self._store.database,
                "account",
                ("kind", "owner_id", "balance"),
                [(ref.kind.value, ref.owner_id, 0) for ref in batch],
                ignore_conflicts=True,
            )

    def lock_accounts(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        """Creates the accounts that do not exist yet, locks them (on PostgreSQL) in the one
        global order, and returns their balances. However many accounts (a payee owing
        thousands of shops), every statement names at most BATCH of them."""
        wanted = sorted((ref for ref in refs if ref.kind is not AccountKind.EXTERNAL), key=_by_name)
        if not wanted:
            return {}
        # Those this process saw committed exist: only the others may have to be made.
        known = self._store.known_accounts
        unknown = [ref for ref in wanted if ref not in known]
        self._create(unknown)
        if len(wanted) <= BATCH:
            # One statement locks them all, in the global order.
            found = self._select(wanted, lock=True)
        else:
            # More: find their ids, then lock batch after batch along the global order.
            ids = sorted(
                (_LOCK_RANK.get(ref.kind, 9), account_id)
                for account_id, ref, _ in self._select(wanted)
            )
            found = []
            for batch in chunked(ids, BATCH):
                found += self._select_ids([account_id for _, account_id in batch])
        if len(found) < len(wanted):
            # One was known but is not there (the database was restored from an older copy).
            # Made now, it would be locked after the others, out of the one order: the hint is
            # dropped instead, and the retry makes every account before it locks any.
            self._store.forget_accounts()
            raise TransactionAborted(
                "an account this process had seen is not in the database (restored from an "
                "older copy?): retry"
            )
        balances = {}
        for account_id, ref, balance in found:
            self._account_ids[ref] = account_id
            balances[ref] = balance
        if unknown:
            self._on_commit(lambda: self._store.knows_accounts(unknown))
        return balances

    def _select(
        self, refs: Sequence[AccountRef], *, lock: bool = False, external: bool = False
    ) -> list[tuple[int, AccountRef, int]]:
        """(id, account, balance) of the accounts named, BATCH at a time; with `lock`, locked in
        the global order (one batch at most)."""
        found = []
        for batch in chunked(refs, BATCH):
            # A join with a list of values: a row-value IN list is compared row by row on
            # PostgreSQL, quadratic in the batch.
            named_rows, params = rows_query(
                self._store.database,
                [(ref.kind.value, ref.owner_id) for ref in batch],
                ("text", "text"),
            )
            named = f"{_NAMED} ({named_rows})"
            found += self._rows(
                named + " ",
                'JOIN named ON named.kind = a."kind" AND named.owner_id = a."owner_id"',
                params,
                lock=lock,
                external=external,
            )
        return found

    def _select_ids(self, ids: Sequence[int]) -> list[tuple[int, AccountRef, int]]:
        """The same, by id; locked in the global order."""
        where, params = in_list(self._store.database, 'a."id"', ids)
        return self._rows("", f"WHERE {where}", params, lock=True)

    def _rows(
        self,
        with_: str,
        where: str,
        params: Sequence[object],
        *,
        lock: bool,
        external: bool = False,
    ) -> list[tuple[int, AccountRef, int]]:
        """(id, account, balance) of the accounts `where` finds. With `external`, the external
        account among them is read with the changes not yet folded into its row (it is never
        locked: lock_accounts leaves it out)."""
        self.make_deferred()
        balance = _balance_sql(self._store.external_account_id()) if external else 'a."balance"'
        sql = f'{with_}SELECT a."id", a."kind", a."owner_id", {balance} FROM "account" AS a {where}'
        if lock:
            sql += f' ORDER BY {_RANK_SQL}, a."id"'
            if self._store.is_postgres:
                sql += " FOR UPDATE OF a"
        cursor = execute_sql(self._store.database, sql, params)
        return [
            (account_id, AccountRef(members(AccountKind)[kind], owner), balance)
            for account_id, kind, owner, balance in cursor.fetchall()
        ]

    def balances(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        """Balances of the named accounts, read together (BATCH at a time); an account that
        never moved money has zero."""
        found = {ref: balance for _, ref, balance in self._select(refs, external=EXTERNAL in refs)}
        return {ref: found.get(ref, 0) for ref in refs}

    def balances_of(self, owner_id: str) -> dict[AccountRef, int]:
        """The owner's accounts (a shop's wallet and deposit, a payee's cash) and their
        balances, by kind."""
        param = self._store.database.param
        # Each kind named: the accounts' index is by (kind, owner_id), and an owner alone would
        # read every account.
        named = ", ".join([param] * len(_OWNED_KINDS))
        return {
            ref: balance
            for _, ref, balance in self._rows(
                "",
                f'WHERE a."kind" IN ({named}) AND a."owner_id" = {param} ORDER BY a."kind"',
                [*_OWNED_KINDS, owner_id],
                lock=False,
            )
        }

    def list_transfers(self, ref: AccountRef, after: int | None, limit: int) -> list[Transfer]:
        """Transfers into or out of the account, newest first, after the given transfer id."""
        found = self._select([ref])
        if not found:
            return []
        ((account_id, _, _),) = found
        cursor = self._store.run_bound(
            "list_transfers",
            lambda: _list_transfers_query(self._store.database.param),
            {
                _ACCOUNT_ID: account_id,
                _BEFORE_ID: _NO_TRANSFER_ID if after is None else after,
                LIMIT: limit,
            },
        )
        return [_transfer(row) for row in cursor.fetchall()]

    def ledger_totals(self) -> tuple[int, dict[AccountRef, tuple[int, int]]]:
        """The sum of all balances, and per account (maintained balance, balance from transfers);
        for reconciliation."""
        self.make_deferred()
        incoming: dict[int, int] = dict(
            rows(
                TransferRow.select(TransferRow.to_account, pw.fn.SUM(TransferRow.amount)).group_by(
                    TransferRow.to_account
                )
            )
        )
        outgoing: dict[int, int] = dict(
            rows(
                TransferRow.select(
                    TransferRow.from_account, pw.fn.SUM(TransferRow.amount)
                ).group_by(TransferRow.from_account)
            )
        )
        accounts: dict[AccountRef, tuple[int, int]] = {}
        for row in AccountRow.select():
            ref = AccountRef(members(AccountKind)[row.kind], row.owner_id)
            derived = int(incoming.get(row.id, 0)) - int(outgoing.get(row.id, 0))
            accounts[ref] = (row.balance, derived)
        if EXTERNAL in accounts:
            accounts[EXTERNAL] = (self.balances([EXTERNAL])[EXTERNAL], accounts[EXTERNAL][1])
        return sum(kept for kept, _ in accounts.values()), accounts


def _balance_sql(external_id: int) -> str:
    """An account's balance as a read of the external account sees it (`a` the account's row):
    its row's, and for the external account the changes not yet folded into it."""
    return (
        f'a."balance" + CASE WHEN a."id" = {external_id} THEN ({EXTERNAL_CHANGES_SUM_SQL}) '
        "ELSE 0 END"
    )


# Stand-ins for the values of the ListTransfers query, replaced when it runs (SqlStore.run_bound).
_ACCOUNT_ID = stand_in("account_id")
_BEFORE_ID = stand_in("before_id")


def _transfer(row: tuple[Any, ...]) -> Transfer:
    """A transfer from a row of its id, accounts (kind, owner), amount, kind, reference, time,
    memo and recorder (service, person)."""
    tid, fk, fo, tk, to, amount, kind, reference, posted_at, memo, service, person = row
    return restored(
        Transfer,
        transfer_id=str(tid),
        from_account=AccountRef(members(AccountKind)[fk], fo),
        to_account=AccountRef(members(AccountKind)[tk], to),
        amount=amount,
        kind=members(TransferKind)[kind],
        reference=reference,
        posted_at=at(posted_at),
        memo=memo,
        recorded_by=actor(service, person),
    )


def _list_transfers_query(param: str) -> pw.Query:
    """SqlLedger.list_transfers' query, built once (`param`: the database's placeholder). The
    account's newest transfers out and its newest in are each a range read of their index, then
    merged: `from = X OR to = X ORDER BY id DESC` would read every transfer of the account (a
    shop's wallet has millions) on SQLite."""
    newest = (
        'SELECT "id" FROM (SELECT "id" FROM "transfer" WHERE "{0}" = {1} AND "id" < {1} '
        'ORDER BY "id" DESC LIMIT {1}) AS "{0}_newest"'
    )
    ids = pw.SQL(
        f"({newest.format('from_account_id', param)} UNION ALL "
        f"{newest.format('to_account_id', param)})",
        [_ACCOUNT_ID, _BEFORE_ID, LIMIT] * 2,
    )
    source = AccountRow.alias("source")
    target = AccountRow.alias("target")
    return (
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
            TransferRow.recorded_by_service,
            TransferRow.recorded_by_person,
        )
        .join(source, on=(TransferRow.from_account == source.id))
        .join_from(TransferRow, target, on=(TransferRow.to_account == target.id))
        .where(TransferRow.id.in_(ids))
        .order_by(TransferRow.id.desc())
        .limit(LIMIT)
    )
