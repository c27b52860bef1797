"""The service layer: each use case reads its facts from the store, asks the rules, persists.

It orchestrates and decides nothing itself: every condition is in server/rules.py. Each mutation
runs in one transaction opened here; refusals raise server.errors exceptions and write nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime

from server import rules
from server.clock import Clock
from server.errors import InvalidArgument, NotFound, PermissionDenied, RulesRefused
from server.model import (
    EXTERNAL,
    AccountKind,
    AccountRef,
    Application,
    ApplicationState,
    ClawbackState,
    EligibilityDecision,
    EligibilityFacts,
    Entry,
    EntryState,
    Order,
    Policy,
    ReasonCode,
    Refund,
    RefundClawback,
    Shop,
    Staff,
    Transfer,
    TransferKind,
    Violation,
)
from server.store import Debt, EntryConflict, InsufficientBalance, Store


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class Eligibility:
    decision: EligibilityDecision
    facts: EligibilityFacts
    policy_version: str


@dataclasses.dataclass(frozen=True)
class Posted:
    transfer: Transfer
    balance: int


class Service:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: Policy,
        new_id: Callable[[], str] = _uuid,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.new_id = new_id

    # --- Sync: upstream facts ------------------------------------------------------------------

    # Each put returns what is stored: the record sent, or a newer version already there.

    def put_shop(self, shop: Shop) -> Shop:
        with self.store.transaction():
            return self.store.put_shop(shop)

    def put_staff(self, staff: Staff) -> Staff:
        with self.store.transaction():
            if not self.store.shop_exists(staff.shop_id):
                raise NotFound("shop", staff.shop_id)
            return self.store.put_staff(staff)

    def put_order(self, order: Order) -> Order:
        with self.store.transaction():
            if not self.store.shop_exists(order.shop_id):
                raise NotFound("shop", order.shop_id)
            stored = self.store.order_or_none(order.order_id, for_update=True)
            if stored is not None:
                if rules.is_stale(stored.version, order.version):
                    return stored
                violations = rules.order_facts_frozen(stored, order)
                if violations:
                    raise RulesRefused(_order_subject(order.order_id), violations)
            return self.store.put_order(order)

    def post_funds(self, request_id: str, account: AccountRef, amount: int, memo: str) -> Posted:
        """Money from outside into `account` (amount > 0) or out of it (amount < 0). Money
        reaching a payee's cash account first pays its outstanding clawback debts, oldest first,
        in the same transaction."""
        now = self.clock.now()
        with self.store.transaction():
            if account.kind in (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT):
                if not self.store.shop_exists(account.owner_id):
                    raise NotFound("shop", account.owner_id)
            # Lock what will move, in the store's global order, before any write: the account,
            # then (money reaching a payee in debt) the wallets of the shops it owes.
            self.store.lock_accounts({account})
            incoming = amount > 0
            debts = []
            if incoming and account.kind is AccountKind.CASH:
                debts = self.store.debts_of(account.owner_id)
                self.store.lock_accounts({_wallet(d.shop_id) for d in debts})
            try:
                transfer = self.store.post_transfer(
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
                )
            except InsufficientBalance as short:
                raise RulesRefused(
                    _account_subject(account), rules.check_withdrawal(short.balance, -amount)
                ) from None
            if debts:
                self._settle_debts(account, debts, now)
            return Posted(transfer, self.store.balances([account])[account])

    def _settle_debts(self, cash: AccountRef, debts: list[Debt], now: datetime) -> None:
        """Pays the payee's debts, oldest first, from what its cash account holds now."""
        balance = self.store.balances([cash])[cash]
        touched = set()
        for debt, amount in zip(
            debts, rules.settle_debts(balance, [d.outstanding for d in debts]), strict=True
        ):
            if amount == 0:
                continue
            self.store.post_transfer(
                from_account=cash,
                to_account=AccountRef(AccountKind.ANXIN_WALLET, debt.shop_id),
                amount=amount,
                kind=TransferKind.DEBT_RECOVERY,
                reference=f"clawbacks/{debt.clawback_id}/lines/{debt.line_no}",
                idempotency_key=f"debt:{debt.clawback_id}:{debt.line_no}:{debt.recovered}",
                now=now,
                guard_from=not rules.may_go_below_zero(cash),
            )
            self.store.add_recovered(debt.clawback_id, debt.line_no, amount)
            touched.add(debt.clawback_id)
        for clawback_id in touched:
            clawback = self.store.clawback(clawback_id=clawback_id)
            self.store.set_clawback_state(clawback_id, clawback.state.value)

    # --- The entry -----------------------------------------------------------------------------

    def check_eligibility(self, order_id: str, operator_id: str) -> Eligibility:
        with self.store.session():
            return self._eligibility(order_id, operator_id)

    def _eligibility(self, order_id: str, operator_id: str) -> Eligibility:
        operator, row = self.store.entry_facts(order_id, operator_id)
        if not rules.operator_belongs_to_shop(operator, row.order):
            raise PermissionDenied(
                _order_subject(order_id),
                [
                    Violation(
                        ReasonCode.OPERATOR_NOT_ALLOWED,
                        f"staff account {operator_id} does not belong to the order's shop",
                    )
                ],
                {"order_id": order_id, "operator_id": operator_id},
            )
        facts = EligibilityFacts(
            now=self.clock.now(),
            order=row.order,
            shop=row.shop,
            operator=operator,
            wallet_balance=row.wallet_balance,
            deposit_balance=row.deposit_balance,
            stored_open_entry=row.stored_open_entry,
        )
        return Eligibility(rules.check_entry(facts, self.policy), facts, self.policy.version)

    def open_entry(self, order_id: str, operator_id: str, note: str) -> Entry:
        with self.store.transaction():
            eligibility = self._eligibility(order_id, operator_id)
            decision, facts = eligibility.decision, eligibility.facts
            if not decision.eligible:
                raise self._refusal(order_id, decision)
            if facts.stored_open_entry is not None:
                # Stored as OPEN but its window has passed: it closed by itself.
                self.store.expire_entries(facts.now, order_id=order_id)
            entry = Entry(
                entry_id=self.new_id(),
                order_id=order_id,
                shop_id=facts.order.shop_id,
                state=EntryState.OPEN,
                opened_at=facts.now,
                expires_at=facts.now + self.policy.entry_window,
                operator_id=operator_id,
                note=note,
                policy_version=self.policy.version,
            )
            try:
                self.store.insert_entry(entry)
            except EntryConflict:
                # Another replica opened one between our read and our write.
                decision = self._eligibility(order_id, operator_id).decision
                if decision.eligible:  # ... and it has been used or has expired since
                    decision = dataclasses.replace(
                        decision,
                        violations=(
                            Violation(
                                ReasonCode.ENTRY_ALREADY_OPEN,
                                "another entry of the order was opened at the same moment",
                            ),
                        ),
                    )
                raise self._refusal(order_id, decision) from None
            return entry

    @staticmethod
    def _refusal(order_id: str, decision: EligibilityDecision) -> RulesRefused:
        metadata = {"order_id": order_id}
        if decision.already_open is not None:
            metadata["entry_id"] = decision.already_open.entry_id
        violations = decision.violations
        if ReasonCode.OPERATOR_NOT_ALLOWED in decision.codes:
            first = [v for v in violations if v.code is ReasonCode.OPERATOR_NOT_ALLOWED]
            rest = [v for v in violations if v.code is not ReasonCode.OPERATOR_NOT_ALLOWED]
            return PermissionDenied(_order_subject(order_id), first + rest, metadata)
        if ReasonCode.ENTRY_ALREADY_OPEN in decision.codes:
            first = [v for v in violations if v.code is ReasonCode.ENTRY_ALREADY_OPEN]
            rest = [v for v in violations if v.code is not ReasonCode.ENTRY_ALREADY_OPEN]
            violations = tuple(first + rest)
        return RulesRefused(_order_subject(order_id), violations, metadata)

    def get_entry(self, entry_id: str) -> Entry:
        with self.store.session():
            return rules.entry_as_seen(self.store.entry(entry_id), self.clock.now())

    def list_entries(
        self,
        *,
        shop_id: str | None,
        order_id: str | None,
        state: EntryState | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[Entry], bool]:
        """A page of entries, newest first, and whether more follow."""
        now = self.clock.now()
        with self.store.session():
            entries = self.store.list_entries(
                shop_id=shop_id,
                order_id=order_id,
                states=None if state is None else (state,),
                now=now,
                after=after,
                limit=limit + 1,
            )
            if not entries:
                # An empty list of a shop or order that does not exist is a caller's mistake.
                if shop_id and not self.store.shop_exists(shop_id):
                    raise NotFound("shop", shop_id)
                if order_id and self.store.order_or_none(order_id) is None:
                    raise NotFound("order", order_id)
        return [rules.entry_as_seen(e, now) for e in entries[:limit]], len(entries) > limit

    def apply(self, order_id: str, buyer_id: str, amount: int, reason: str) -> Application:
        now = self.clock.now()
        with self.store.transaction():
            order = self.store.order(order_id, for_update=True)
            subject = _order_subject(order_id)
            if not rules.buyer_owns_order(order, buyer_id):
                raise PermissionDenied(
                    subject,
                    [
                        Violation(
                            ReasonCode.BUYER_NOT_ORDER_OWNER, f"{buyer_id} is not the order's buyer"
                        )
                    ],
                    {"order_id": order_id, "buyer_id": buyer_id},
                )
            entry = self.store.stored_open_entry(order_id)
            violations = rules.check_application(order, amount, entry, now)
            if violations:
                raise RulesRefused(subject, violations, {"order_id": order_id})
            application = Application(
                application_id=self.new_id(),
                order_id=order_id,
                entry_id=entry.entry_id,
                buyer_id=buyer_id,
                amount=amount,
                reason=reason,
                state=ApplicationState.FILED,
                filed_at=now,
            )
            if not self.store.use_entry(entry.entry_id, application.application_id, now):
                raise RulesRefused(
                    subject,
                    rules.check_application(order, amount, None, now),
                    {"order_id": order_id},
                )
            self.store.insert_application(application)
            return application

    # --- Refunds and clawbacks (TR/佣金退回) ------------------------------------------------------

    def record_refund(self, refund: Refund) -> RefundClawback:
        """Pays the refund, and recovers the order's commissions when the rules allow, in one
        transaction. The same refund reported again returns its clawback."""
        now = self.clock.now()
        with self.store.transaction():
            # One refund id at a time, whatever its order; then the order's row lock serialises
            # everything that moves money on this order.
            self.store.serialize_on(f"refund:{refund.refund_id}")
            existing = self.store.clawback_of_refund(refund.refund_id)
            if existing is not None:
                if existing.refund != refund:
                    raise InvalidArgument(
                        [("refund_id", f"refund {refund.refund_id} was recorded with other facts")],
                        reason=ReasonCode.REFUND_ID_REUSED,
                    )
                return existing
            order = self.store.order(refund.order_id, for_update=True)
            via = None
            if refund.application_id:
                via = self.store.applied_through(refund.application_id)
            violations = rules.check_refund(order, refund.amount, via)
            if violations:
                raise RulesRefused(
                    _order_subject(order.order_id),
                    violations,
                    {"order_id": order.order_id, "refund_id": refund.refund_id},
                )
            shop = self.store.shop(order.shop_id)
            clawback = self._clawback(
                order,
                shop,
                refund,
                now,
                entry_opened_at=via.entry_opened_at if via else None,
                clawback_id=self.new_id(),
            )
            wallet, deposit = _wallet(shop.shop_id), _deposit(shop.shop_id)
            balances = self.store.lock_accounts(
                {wallet, deposit, *(line.account for line in clawback.lines if line.due)}
            )
            clawback = dataclasses.replace(
                clawback, payment=rules.split_refund_payment(refund.amount, balances[wallet])
            )
            for source, amount in (
                (wallet, clawback.payment.from_wallet),
                (deposit, clawback.payment.from_deposit),
            ):
                if amount:
                    self.store.post_transfer(
                        from_account=source,
                        to_account=EXTERNAL,
                        amount=amount,
                        kind=TransferKind.REFUND_PAYMENT,
                        reference=f"refunds/{refund.refund_id}",
                        idempotency_key=f"refund:{refund.refund_id}:{source.kind.value}",
                        now=now,
                        guard_from=not rules.may_go_below_zero(source),
                    )
            lines = []
            for line in clawback.lines:
                take = rules.recoverable_now(line, balances[line.account]) if line.due else 0
                if take:
                    self.store.post_transfer(
                        from_account=line.account,
                        to_account=wallet,
                        amount=take,
                        kind=TransferKind.CLAWBACK,
                        reference=f"clawbacks/{clawback.clawback_id}/lines/{line.line_no}",
                        idempotency_key=f"clawback:{clawback.clawback_id}:{line.line_no}",
                        now=now,
                        guard_from=not rules.may_go_below_zero(line.account),
                    )
                    balances[line.account] -= take
                lines.append(dataclasses.replace(line, recovered=take))
            clawback = dataclasses.replace(clawback, lines=tuple(lines))
            self.store.record_refund(clawback)
            return clawback

    def preview_clawback(
        self, order_id: str, amount: int, started_at: datetime | None
    ) -> RefundClawback:
        """What a late refund would recover now, without writing anything."""
        now = self.clock.now()
        with self.store.session():
            order = self.store.order(order_id)
            violations = rules.check_refund(order, amount)
            if violations:
                raise RulesRefused(_order_subject(order_id), violations, {"order_id": order_id})
            shop = self.store.shop(order.shop_id)
            refund = Refund("", order_id, "", amount, started_at or now, now)
            # A preview is of a late refund: as if through an entry opened when it starts.
            clawback = self._clawback(
                order, shop, refund, now, entry_opened_at=refund.started_at, clawback_id=""
            )
            wallet = _wallet(shop.shop_id)
            balances = self.store.balances([wallet, *{line.account for line in clawback.lines}])
            lines = []
            for line in clawback.lines:
                take = rules.recoverable_now(line, balances[line.account])
                balances[line.account] -= take
                lines.append(dataclasses.replace(line, recovered=take))
            return dataclasses.replace(
                clawback,
                lines=tuple(lines),
                payment=rules.split_refund_payment(amount, balances[wallet]),
            )

    def _clawback(
        self,
        order: Order,
        shop: Shop,
        refund: Refund,
        now: datetime,
        *,
        entry_opened_at: datetime | None,
        clawback_id: str,
    ) -> RefundClawback:
        reasons = rules.check_clawback(order, shop, refund.started_at, entry_opened_at, self.policy)
        before = order.refunded_amount
        after = before + refund.amount
        return RefundClawback(
            clawback_id=clawback_id,
            refund=refund,
            shop_id=shop.shop_id,
            reasons=reasons,
            lines=() if reasons else rules.clawback_lines(order, before, after),
            refunded_before=before,
            refunded_after=after,
            policy_version=self.policy.version,
            created_at=now,
        )

    def get_clawback(
        self, *, clawback_id: str | None = None, refund_id: str | None = None
    ) -> RefundClawback:
        with self.store.session():
            return self.store.clawback(clawback_id=clawback_id, refund_id=refund_id)

    def list_clawbacks(
        self,
        *,
        shop_id: str,
        state: ClawbackState | None,
        start: datetime | None,
        end: datetime | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[RefundClawback], bool]:
        with self.store.session():
            found = self.store.list_clawbacks(
                shop_id=shop_id,
                state=None if state is None else state.value,
                start=start,
                end=end,
                after=after,
                limit=limit + 1,
            )
            if not found and not self.store.shop_exists(shop_id):
                raise NotFound("shop", shop_id)
        return found[:limit], len(found) > limit

    def balances(self, accounts: list[AccountRef], owner_id: str | None) -> dict[AccountRef, int]:
        with self.store.session():
            refs = list(dict.fromkeys(accounts))
            if owner_id:
                refs += [r for r in self.store.accounts_of(owner_id) if r not in refs]
            return self.store.balances(refs)

    def list_transfers(
        self, account: AccountRef, after: int | None, limit: int
    ) -> tuple[list[Transfer], bool]:
        with self.store.session():
            found = self.store.list_transfers(account, after, limit + 1)
        return found[:limit], len(found) > limit

    def expire_entries(self) -> int:
        """Persists what readers already see: open entries past their window are EXPIRED."""
        with self.store.transaction():
            return self.store.expire_entries(self.clock.now())

    def now(self) -> datetime:
        return self.clock.now()


def _order_subject(order_id: str) -> str:
    return f"orders/{order_id}"


def _wallet(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.ANXIN_WALLET, shop_id)


def _deposit(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.DEPOSIT, shop_id)


def _account_subject(account: AccountRef) -> str:
    owner = f"/{account.owner_id}" if account.owner_id else ""
    return f"accounts/{account.kind.value.lower()}{owner}"
