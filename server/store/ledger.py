"""The ledger: accounts and the transfers between them, double entry (balances sum to zero)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import peewee as pw

from server.domain.model import (
    EXTERNAL,
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    Transfer,
    TransferKind,
)
from server.service.unit_of_work import InsufficientBalance
from server.store.schema import AccountRow, TransferRow, at, audit, rows, to_us

T = TypeVar("T")

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore

# Accounts are locked in this order (then by id) so that concurrent money movements never wait
# on each other in a cycle. The external account is not locked up front: every transaction
# touches it last.
_LOCK_RANK = {
    AccountKind.CASH: 0,
    AccountKind.PLATFORM_COMMISSION: 1,
    AccountKind.ANXIN_WALLET: 2,
    AccountKind.DEPOSIT: 3,
}


# Accounts named in one statement at most: a list of row values, not a chain of ORs (which
# SQLite's parser refuses past a few dozen and peewee cannot even build past a few hundred).
BATCH = 500


def _named(refs: Sequence[AccountRef]) -> pw.Expression:
    """The accounts `refs` name, as (kind, owner_id) IN ((?, ?), ...)."""
    expression: pw.Expression = pw.Tuple(AccountRow.kind, AccountRow.owner_id).in_(
        [(ref.kind.value, ref.owner_id) for ref in refs]
    )
    return expression


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqlLedger:
    def __init__(self, store: SqlStore, account_ids: dict[AccountRef, int]) -> None:
        self._store = store
        # Ids of accounts met in this unit of work.
        self._account_ids = account_ids

    def _account_id(self, ref: AccountRef) -> int:
        """The account's id, the account created if need be. The external and platform accounts
        are made with the schema, and ids met in this transaction are remembered until it ends."""
        if ref in self._store.fixed_account_ids:
            return self._store.fixed_account_ids[ref]
        known = self._account_ids
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
        recorded_by: Actor = NOBODY,
    ) -> Transfer:
        """Moves `amount` in one transaction. With guard_from, the payer may not go below zero
        (InsufficientBalance, nothing posted).

        The external account's balance is not kept on its row (every movement from outside would
        queue on that one row): it is minus the sum of all others (see _external_balance)."""
        if amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        # Part of the unit of work's transaction (no savepoint needed: a refused debit wrote
        # nothing).
        from_id = self._account_id(from_account)
        to_id = self._account_id(to_account)
        if from_account.kind is not AccountKind.EXTERNAL:
            debit = AccountRow.update(balance=AccountRow.balance - amount).where(
                AccountRow.id == from_id
            )
            if guard_from:
                debit = debit.where(AccountRow.balance >= amount)
            if not debit.execute():
                raise InsufficientBalance(self.balances([from_account])[from_account])
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
            **audit(recorded_by),
        ).execute()
        return Transfer(
            str(transfer_id),
            from_account,
            to_account,
            amount,
            kind,
            reference,
            now,
            memo,
            recorded_by,
        )

    def lock_accounts(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        """Creates the accounts that do not exist yet, locks them (on PostgreSQL) in the one
        global order, and returns their balances. However many accounts (a payee owing
        thousands of shops), every statement names at most BATCH of them."""
        wanted = sorted(
            (ref for ref in refs if ref.kind is not AccountKind.EXTERNAL),
            key=lambda r: (r.kind.value, r.owner_id),
        )
        if not wanted:
            return {}
        for batch in chunked(wanted, BATCH):
            AccountRow.insert_many(
                [{"kind": r.kind.value, "owner_id": r.owner_id} for r in batch]
            ).on_conflict_ignore().execute()
        if len(wanted) <= BATCH:
            # One statement locks them all, in the global order.
            return self._lock(_named(wanted))
        # More: find their ids, then lock batch after batch along the global order.
        ids = self._ids(wanted)
        in_order = [
            account_id
            for ref, account_id in sorted(
                ids.items(), key=lambda item: (_LOCK_RANK.get(item[0].kind, 9), item[1])
            )
        ]
        balances: dict[AccountRef, int] = {}
        for ids_batch in chunked(in_order, BATCH):
            balances.update(self._lock(AccountRow.id.in_(list(ids_batch))))
        return balances

    def _lock(self, where: pw.Expression) -> dict[AccountRef, int]:
        rank = pw.Case(
            AccountRow.kind, [(kind.value, value) for kind, value in _LOCK_RANK.items()], 9
        )
        query = (
            AccountRow.select(
                AccountRow.id, AccountRow.kind, AccountRow.owner_id, AccountRow.balance
            )
            .where(where)
            .order_by(rank, AccountRow.id)
        )
        balances = {}
        for account_id, kind, owner, balance in rows(self._store.locked(query)):
            ref = AccountRef(AccountKind(kind), owner)
            self._account_ids[ref] = account_id
            balances[ref] = balance
        return balances

    def _ids(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        found = {}
        for batch in chunked(refs, BATCH):
            query = AccountRow.select(AccountRow.id, AccountRow.kind, AccountRow.owner_id).where(
                _named(batch)
            )
            for account_id, kind, owner in rows(query):
                found[AccountRef(AccountKind(kind), owner)] = account_id
        return found

    def balances(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        """Balances of the named accounts; an account that never moved money has zero."""
        kept = [r for r in refs if r.kind is not AccountKind.EXTERNAL]
        found = {}
        for batch in chunked(kept, BATCH):
            query = AccountRow.select(
                AccountRow.kind, AccountRow.owner_id, AccountRow.balance
            ).where(_named(batch))
            for kind, owner, balance in rows(query):
                found[AccountRef(AccountKind(kind), owner)] = balance
        if len(kept) < len(refs):
            found[EXTERNAL] = self._external_balance()
        return {ref: found.get(ref, 0) for ref in refs}

    def accounts_of(self, owner_id: str) -> list[AccountRef]:
        return [
            AccountRef(AccountKind(kind), owner)
            for kind, owner in rows(
                AccountRow.select(AccountRow.kind, AccountRow.owner_id)
                .where(AccountRow.owner_id == owner_id)
                .order_by(AccountRow.kind)
            )
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
                TransferRow.recorded_by_service,
                TransferRow.recorded_by_person,
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
                posted_at=at(posted_at),
                memo=memo,
                recorded_by=Actor(service, person),
            )
            for (
                tid,
                fk,
                fo,
                tk,
                to,
                amount,
                kind,
                reference,
                posted_at,
                memo,
                service,
                person,
            ) in rows(query)
        ]

    def ledger_totals(self) -> tuple[int, dict[AccountRef, tuple[int, int]]]:
        """The sum of all balances, and per account (maintained balance, balance from transfers);
        for reconciliation."""
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
            ref = AccountRef(AccountKind(row.kind), row.owner_id)
            derived = int(incoming.get(row.id, 0)) - int(outgoing.get(row.id, 0))
            accounts[ref] = (row.balance, derived)
        if EXTERNAL in accounts:
            accounts[EXTERNAL] = (self._external_balance(), accounts[EXTERNAL][1])
        return sum(kept for kept, _ in accounts.values()), accounts
