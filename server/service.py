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
from server.errors import NotFound, PermissionDenied, RulesRefused
from server.model import (
    EXTERNAL,
    AccountKind,
    AccountRef,
    Application,
    ApplicationState,
    Entry,
    EntryDecision,
    EntryFacts,
    EntryState,
    Order,
    Policy,
    ReasonCode,
    Shop,
    Staff,
    Transfer,
    TransferKind,
    Violation,
)
from server.store import EntryConflict, InsufficientBalance, Store


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class Eligibility:
    decision: EntryDecision
    facts: EntryFacts
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

    def put_shop(self, shop: Shop) -> Shop:
        with self.store.transaction():
            self.store.put_shop(shop)
        return shop

    def put_staff(self, staff: Staff) -> Staff:
        with self.store.transaction():
            if not self.store.shop_exists(staff.shop_id):
                raise NotFound("shop", staff.shop_id)
            self.store.put_staff(staff)
        return staff

    def put_order(self, order: Order) -> Order:
        with self.store.transaction():
            if not self.store.shop_exists(order.shop_id):
                raise NotFound("shop", order.shop_id)
            stored = self.store.order_or_none(order.order_id)
            if stored is not None:
                violations = rules.order_facts_frozen(stored, order)
                if violations:
                    raise RulesRefused(_order_subject(order.order_id), violations)
                order = dataclasses.replace(
                    order, recorded_refunded_amount=stored.recorded_refunded_amount
                )
            self.store.put_order(order)
        return order

    def post_funds(self, request_id: str, account: AccountRef, amount: int, memo: str) -> Posted:
        """Money from outside into `account` (amount > 0) or out of it (amount < 0)."""
        now = self.clock.now()
        with self.store.transaction():
            if account.kind in (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT):
                if not self.store.shop_exists(account.owner_id):
                    raise NotFound("shop", account.owner_id)
            incoming = amount > 0
            try:
                transfer = self.store.post_transfer(
                    from_account=EXTERNAL if incoming else account,
                    to_account=account if incoming else EXTERNAL,
                    amount=abs(amount),
                    kind=TransferKind.FUNDS_IN if incoming else TransferKind.FUNDS_OUT,
                    reference=memo or request_id,
                    idempotency_key=f"funds:{request_id}",
                    now=now,
                    guard_from=not incoming,
                )
            except InsufficientBalance as short:
                raise RulesRefused(
                    _account_subject(account), rules.check_withdrawal(short.balance, -amount)
                ) from None
            return Posted(transfer, self.store.balance(account))

    # --- The entry -----------------------------------------------------------------------------

    def check_eligibility(self, order_id: str, operator_id: str) -> Eligibility:
        with self.store.session():
            return self._eligibility(order_id, operator_id)

    def _eligibility(self, order_id: str, operator_id: str) -> Eligibility:
        operator = self.store.staff(operator_id)
        row = self.store.entry_facts(order_id)
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
        facts = EntryFacts(
            now=self.clock.now(),
            order=row.order,
            shop=row.shop,
            operator=operator,
            wallet_balance=row.wallet_balance,
            deposit_balance=row.deposit_balance,
            open_entry=row.open_entry,
        )
        return Eligibility(rules.check_entry(facts, self.policy), facts, self.policy.version)

    def open_entry(self, order_id: str, operator_id: str, note: str) -> Entry:
        with self.store.transaction():
            eligibility = self._eligibility(order_id, operator_id)
            decision, facts = eligibility.decision, eligibility.facts
            if not decision.eligible:
                raise self._refusal(order_id, decision)
            if facts.open_entry is not None:
                # Stored as OPEN but its window has passed: it closed by itself.
                self.store.expire_entries(facts.now, order_id=order_id)
            entry = Entry(
                entry_id=self.new_id(),
                order_id=order_id,
                shop_id=facts.order.shop_id,
                state=EntryState.OPEN,
                opened_at=facts.now,
                expires_at=facts.now + self.policy.entry_window,
                opened_by=operator_id,
                note=note,
                policy_version=self.policy.version,
            )
            try:
                self.store.insert_entry(entry)
            except EntryConflict:
                # Another replica opened one between our read and our write.
                raise self._refusal(order_id, self._eligibility(order_id, operator_id).decision)
            return entry

    @staticmethod
    def _refusal(order_id: str, decision: EntryDecision) -> RulesRefused:
        metadata = {"order_id": order_id}
        if decision.open_entry is not None:
            metadata["entry_id"] = decision.open_entry.entry_id
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
        return [rules.entry_as_seen(e, now) for e in entries[:limit]], len(entries) > limit

    def apply(self, order_id: str, buyer_id: str, amount: int, reason: str) -> Application:
        now = self.clock.now()
        with self.store.transaction():
            order = self.store.order(order_id, for_update=True)
            subject = _order_subject(order_id)
            if not rules.buyer_owns_order(order, buyer_id):
                raise PermissionDenied(
                    subject,
                    [Violation(ReasonCode.BUYER_NOT_ORDER_OWNER, f"{buyer_id} is not the order's buyer")],
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

    def expire_entries(self) -> int:
        """Persists what readers already see: open entries past their window are EXPIRED."""
        with self.store.transaction():
            return self.store.expire_entries(self.clock.now())

    def now(self) -> datetime:
        return self.clock.now()


def _order_subject(order_id: str) -> str:
    return f"orders/{order_id}"


def _account_subject(account: AccountRef) -> str:
    owner = f"/{account.owner_id}" if account.owner_id else ""
    return f"accounts/{account.kind.value.lower()}{owner}"
