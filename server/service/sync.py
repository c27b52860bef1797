"""Use cases of the Sync service: upstream facts (shops, staff, orders) and money from outside."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from server.domain import events, rules
from server.domain.errors import NotFound, Refused, RequestIdExpired, RequestIdReused, RulesRefused
from server.domain.model import (
    EXTERNAL,
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    ClawbackState,
    Debt,
    Movement,
    Order,
    Shop,
    Staff,
    Transfer,
    TransferKind,
    Violation,
)
from server.service.base import UseCases, account_subject, order_subject, serial, wallet_of
from server.service.outcomes import DebtsRecovered
from server.service.unit_of_work import (
    InsufficientBalance,
    StoreUnavailable,
    TransactionAborted,
    TransferExists,
    UnitOfWork,
)

# Debts read per statement while paying a payee's debts.
DEBT_PAGE = 500
# Debts one transaction pays at most (PostFunds, or one sweep of a payee): the work a call does
# stays bounded however many shops a payee owes. What is left is paid by the sweeper
# (settle_pending_debts); the proto documents the figure (PostFundsResponse.debts_pending).
DEBTS_PER_TRANSACTION = 1_000
# Changes of the external account folded into its row per transaction, and transactions per
# sweep at most: a sweep folds what came since the last one, up to 10 million (a read of the
# account adds those not yet folded, so that is what a read costs); it stops at the first short
# batch.
FOLD_BATCH = 1_000
FOLD_BATCHES = 10_000


@dataclasses.dataclass(frozen=True)
class Posted:
    transfer: Transfer
    balance: int
    # More debts are owed than one call pays and money is left: the sweeper pays the rest.
    debts_pending: bool = False


class SyncUseCases(UseCases):
    # Each put returns what is stored: the record sent, or a newer version already there.

    @serial
    def put_shop(self, shop: Shop) -> Shop:
        """A change of the shop's status is an event (a shop suspended, closed, reopened)."""
        with self.unit_of_work() as uow:
            # Two puts of one shop at once must not both tell the same change.
            uow.serialize_on(f"shop:{shop.shop_id}")
            previous = uow.facts.shop_or_none(shop.shop_id)
            stored = uow.facts.put_shop(shop)
            changed = events.shop_status_changed(previous, stored, self.clock.now())
            if changed is not None:
                uow.events.add(changed)
            return stored

    def shop_exists(self, shop_id: str) -> bool:
        with self.unit_of_work(read_only=True) as uow:
            return uow.facts.shop_exists(shop_id)

    @serial
    def put_staff(self, staff: Staff) -> Staff:
        with self.unit_of_work() as uow:
            if not uow.facts.shop_exists(staff.shop_id):
                raise NotFound("shop", staff.shop_id)
            return uow.facts.put_staff(staff)

    @serial
    def put_order(self, order: Order) -> Order:
        with self.unit_of_work() as uow:
            if not uow.facts.shop_exists(order.shop_id):
                raise NotFound("shop", order.shop_id)
            stored = uow.facts.order_or_none(order.order_id, for_update=True)
            if stored is not None:
                if rules.is_stale(stored.version, order.version):
                    return stored
                violations = rules.order_facts_frozen(stored, order)
                if violations:
                    raise RulesRefused(
                        order_subject(order.order_id), violations, {"order_id": order.order_id}
                    )
            return uow.facts.put_order(order)

    def post_funds(
        self,
        request_id: str,
        account: AccountRef,
        amount: int,
        memo: str,
        by: Actor = NOBODY,
    ) -> Posted:
        """Money from outside into `account` (amount > 0) or out of it (amount < 0). Money
        reaching a payee's cash account first pays its outstanding clawback debts, oldest first,
        in the same transaction, up to DEBTS_PER_TRANSACTION of them; the sweeper pays the rest,
        and until it has, no money leaves that account."""
        now = self.clock.now()
        with self.unit_of_work() as uow:
            if account.kind in (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT):
                if not uow.facts.shop_exists(account.owner_id):
                    raise NotFound("shop", account.owner_id)
            # Lock the account before any write (its balance is known from then on: nothing
            # else changes it meanwhile); the wallets of the shops a payee owes are locked (in the
            # store's global order) once it is known which debts are paid.
            balance = uow.ledger.lock_accounts({account})[account]
            incoming = amount > 0
            key = f"funds:{request_id}"

            def refused(violations: Sequence[Violation]) -> Refused:
                # Unless this request id posted its transfer already, and the record of the
                # request was forgotten since (retention): what it did is what the caller hears.
                posted = uow.ledger.transfer_with_key(key)
                if posted is not None:
                    return _posted_before(posted, request_id, account, amount, memo, by)
                subject = account_subject(account)
                return RulesRefused(subject, violations, {"account": subject})

            if not incoming and account.kind is AccountKind.CASH:
                if uow.clawbacks.debts_pending_among({account.owner_id}):
                    raise refused(rules.check_withdrawal(balance, -amount, debts_pending=True))
            try:
                transfer = uow.ledger.post_transfer(
                    from_account=EXTERNAL if incoming else account,
                    to_account=account if incoming else EXTERNAL,
                    amount=abs(amount),
                    kind=TransferKind.FUNDS_IN if incoming else TransferKind.FUNDS_OUT,
                    reference=f"requests/{request_id}",
                    memo=memo,
                    idempotency_key=key,
                    now=now,
                    # A withdrawal never overdraws (check_withdrawal), whatever the account.
                    guard_from=not incoming,
                    recorded_by=by,
                )
            except InsufficientBalance as short:
                raise refused(rules.check_withdrawal(short.balance, -amount)) from None
            except TransferExists as posted:
                # The request id's record was forgotten (retention); the transfer it made was not.
                raise _posted_before(
                    posted.transfer, request_id, account, amount, memo, by
                ) from None
            balance += amount
            pending = False
            recovered: list[events.Event] = []
            if incoming and account.kind is AccountKind.CASH:
                pending, balance = self._settle_debts(uow, account, balance, now, by, recovered)
                if pending:
                    uow.clawbacks.mark_debts_pending(account.owner_id, now, by)
                elif recovered:
                    # It paid the last of them: a note left by an earlier call goes now, not at
                    # the sweeper's next pass (meanwhile new clawback lines would wait behind
                    # debts nobody owes). A payee that owed nothing has no note to clear.
                    uow.clawbacks.clear_debts_pending(account.owner_id)
            # The funds first, then the debts they paid: the order the money moved in.
            uow.events.add(events.funds_posted(transfer, account, balance), *recovered)
            return Posted(transfer, balance, pending)

    def fold_external_movements(self, batch: int = FOLD_BATCH, batches: int = FOLD_BATCHES) -> int:
        """The sweeper's part of the external account's balance: adds to its row the changes of
        the movements to or from the outside made since the last sweep (which every read of it
        adds until then), oldest first, in transactions of at most `batch`; returns how many."""
        return self.in_batches(lambda uow: uow.ledger.fold_external(batch), batch, batches)

    def settle_pending_debts(self, payees: int) -> int:
        """The sweeper's part of debt recovery: pays the debts PostFunds left (more than
        DEBTS_PER_TRANSACTION), oldest payee first, one transaction per payee and at most
        DEBTS_PER_TRANSACTION debts each; at most `payees` payees. Returns how many it handled."""
        with self.unit_of_work(read_only=True) as uow:
            waiting = uow.clawbacks.debts_pending(payees)
        for payee_id, by in waiting:
            now = self.clock.now()
            try:
                with self.unit_of_work() as uow:
                    cash = AccountRef(AccountKind.CASH, payee_id)
                    balance = uow.ledger.lock_accounts({cash})[cash]
                    recovered: list[events.Event] = []
                    if not self._settle_debts(uow, cash, balance, now, by, recovered)[0]:
                        uow.clawbacks.clear_debts_pending(payee_id)
                    uow.events.add(*recovered)
            except TransactionAborted:
                continue  # a concurrent transaction won; this payee is paid on next time
            except StoreUnavailable:
                raise
            except Exception:
                # Whatever fails for this payee must not hold up the others: it goes last.
                with self.unit_of_work() as uow:
                    uow.clawbacks.postpone_debts_pending(payee_id, now)
                raise
        return len(waiting)

    def _settle_debts(
        self,
        uow: UnitOfWork,
        cash: AccountRef,
        balance: int,
        now: datetime,
        by: Actor,
        told: list[events.Event],
    ) -> tuple[bool, int]:
        """Pays the payee's debts, oldest first, from what its cash account holds now
        (`balance`, the account locked), set-wise: a bounded number of statements per DEBT_PAGE
        debts, at most DEBTS_PER_TRANSACTION debts. Adds the event of each debt paid to `told`.
        Returns whether it stopped there with money and debts left, for the sweeper to go on,
        and the balance left."""
        paying: list[tuple[Debt, int]] = []
        after = None
        pending = False
        while balance > 0:
            if len(paying) >= DEBTS_PER_TRANSACTION:
                pending = bool(uow.clawbacks.debts_of(cash.owner_id, after=after, limit=1))
                break
            limit = min(DEBT_PAGE, DEBTS_PER_TRANSACTION - len(paying))
            page = uow.clawbacks.debts_of(cash.owner_id, after=after, limit=limit)
            amounts = rules.settle_debts(balance, [d.outstanding for d in page])
            paying += [(debt, paid) for debt, paid in zip(page, amounts, strict=True) if paid]
            balance -= sum(amounts)
            if len(page) < limit:
                break
            after = page[-1].seq
        if not paying:
            return False, balance
        uow.ledger.lock_accounts({wallet_of(debt.shop_id) for debt, _ in paying})
        transfer_ids = uow.ledger.post_transfers(
            [
                Movement(
                    from_account=cash,
                    to_account=wallet_of(debt.shop_id),
                    amount=paid,
                    kind=TransferKind.DEBT_RECOVERY,
                    reference=f"clawbacks/{debt.clawback_id}/lines/{debt.line_no}",
                    idempotency_key=f"debt:{debt.clawback_id}:{debt.line_no}:{debt.recovered}",
                )
                for debt, paid in paying
            ],
            now=now,
            guarded=() if rules.may_go_below_zero(cash) else (cash,),
            recorded_by=by,
        )
        uow.clawbacks.add_recovered(paying)
        totals = uow.clawbacks.totals({debt.clawback_id for debt, _ in paying})
        states = {
            clawback_id: ClawbackState.of(due, recovered)
            for clawback_id, (due, recovered) in totals.items()
        }
        uow.clawbacks.set_states(states)
        paid_now: dict[str, int] = {}
        for debt, paid in paying:
            paid_now[debt.clawback_id] = paid_now.get(debt.clawback_id, 0) + paid
        changes = (
            (ClawbackState.of(due, recovered - paid_now[clawback_id]), states[clawback_id])
            for clawback_id, (due, recovered) in totals.items()
        )
        self.happened(
            DebtsRecovered(
                paid=tuple((debt.payee_kind, paid) for debt, paid in paying),
                state_changes=tuple((old, new) for old, new in changes if old is not new),
            )
        )
        told += [
            events.debt_recovered(debt, paid, cash, wallet_of(debt.shop_id), transfer_id, now, by)
            for (debt, paid), transfer_id in zip(paying, transfer_ids, strict=True)
        ]
        return pending, balance


def _posted_before(
    posted: Transfer, request_id: str, account: AccountRef, amount: int, memo: str, by: Actor
) -> Refused:
    """The answer to a PostFunds whose request id posted `posted` (its record forgotten since,
    retention): REQUEST_ID_EXPIRED if that transfer is what this request asks for, from the same
    caller; else REQUEST_ID_REUSED, as within the retention."""
    asked = (EXTERNAL, account) if amount > 0 else (account, EXTERNAL)
    if (posted.from_account, posted.to_account, posted.amount, posted.memo, posted.recorded_by) == (
        *asked,
        abs(amount),
        memo,
        by,
    ):
        return RequestIdExpired(request_id, "PostFunds", posted.transfer_id)
    return RequestIdReused(request_id, "PostFunds")
