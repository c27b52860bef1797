"""Use cases of the Sync service: upstream facts (shops, staff, orders) and money from outside."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from server.domain import rules
from server.domain.errors import NotFound, RulesRefused
from server.domain.model import (
    EXTERNAL,
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    Debt,
    Order,
    Shop,
    Staff,
    Transfer,
    TransferKind,
)
from server.service.base import UseCases, account_subject, order_subject, wallet_of
from server.service.unit_of_work import InsufficientBalance, UnitOfWork


@dataclasses.dataclass(frozen=True)
class Posted:
    transfer: Transfer
    balance: int


class SyncUseCases(UseCases):
    # Each put returns what is stored: the record sent, or a newer version already there.

    def put_shop(self, shop: Shop) -> Shop:
        with self.unit_of_work() as uow:
            return uow.facts.put_shop(shop)

    def shop_exists(self, shop_id: str) -> bool:
        with self.unit_of_work(read_only=True) as uow:
            return uow.facts.shop_exists(shop_id)

    def put_staff(self, staff: Staff) -> Staff:
        with self.unit_of_work() as uow:
            if not uow.facts.shop_exists(staff.shop_id):
                raise NotFound("shop", staff.shop_id)
            return uow.facts.put_staff(staff)

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
                    raise RulesRefused(order_subject(order.order_id), violations)
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
        in the same transaction."""
        now = self.clock.now()
        with self.unit_of_work() as uow:
            if account.kind in (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT):
                if not uow.facts.shop_exists(account.owner_id):
                    raise NotFound("shop", account.owner_id)
            # Lock what will move, in the store's global order, before any write: the account,
            # then (money reaching a payee in debt) the wallets of the shops it owes.
            uow.ledger.lock_accounts({account})
            incoming = amount > 0
            debts = []
            if incoming and account.kind is AccountKind.CASH:
                debts = uow.clawbacks.debts_of(account.owner_id)
                uow.ledger.lock_accounts({wallet_of(d.shop_id) for d in debts})
            try:
                transfer = uow.ledger.post_transfer(
                    from_account=EXTERNAL if incoming else account,
                    to_account=account if incoming else EXTERNAL,
                    amount=abs(amount),
                    kind=TransferKind.FUNDS_IN if incoming else TransferKind.FUNDS_OUT,
                    reference=f"requests/{request_id}",
                    memo=memo,
                    idempotency_key=f"funds:{request_id}",
                    now=now,
                    # A withdrawal never overdraws (check_withdrawal), whatever the account.
                    guard_from=not incoming,
                    recorded_by=by,
                )
            except InsufficientBalance as short:
                raise RulesRefused(
                    account_subject(account), rules.check_withdrawal(short.balance, -amount)
                ) from None
            if debts:
                self._settle_debts(uow, account, debts, now, by)
            return Posted(transfer, uow.ledger.balances([account])[account])

    def _settle_debts(
        self, uow: UnitOfWork, cash: AccountRef, debts: list[Debt], now: datetime, by: Actor
    ) -> None:
        """Pays the payee's debts, oldest first, from what its cash account holds now."""
        balance = uow.ledger.balances([cash])[cash]
        touched = set()
        for debt, amount in zip(
            debts, rules.settle_debts(balance, [d.outstanding for d in debts]), strict=True
        ):
            if amount == 0:
                continue
            uow.ledger.post_transfer(
                from_account=cash,
                to_account=wallet_of(debt.shop_id),
                amount=amount,
                kind=TransferKind.DEBT_RECOVERY,
                reference=f"clawbacks/{debt.clawback_id}/lines/{debt.line_no}",
                idempotency_key=f"debt:{debt.clawback_id}:{debt.line_no}:{debt.recovered}",
                now=now,
                guard_from=not rules.may_go_below_zero(cash),
                recorded_by=by,
            )
            uow.clawbacks.add_recovered(debt.clawback_id, debt.line_no, amount)
            touched.add(debt.clawback_id)
        for clawback_id in touched:
            clawback = uow.clawbacks.clawback(clawback_id=clawback_id)
            uow.clawbacks.set_clawback_state(clawback_id, clawback.state.value)
