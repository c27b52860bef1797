"""Use cases of the AfterSalesEntry service: check, open, read and list entries; the buyer files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from server.domain import events, rules
from server.domain.access import Person
from server.domain.errors import NotFound, PermissionDenied, RulesRefused
from server.domain.model import (
    NOBODY,
    Actor,
    Application,
    ApplicationState,
    EligibilityDecision,
    EligibilityFacts,
    Entry,
    EntryState,
    ReasonCode,
    Staff,
    Violation,
)
from server.service.base import UseCases, order_subject
from server.service.outcomes import EntriesExpired, EntryOpened, EntryUsed
from server.service.paging import Page, PageTokens, micros
from server.service.unit_of_work import EligibilityRow, EntryConflict, UnitOfWork

# Entries a sweep expires per transaction, and transactions per sweep at most.
EXPIRY_BATCH = 500
EXPIRY_BATCHES = 20


@dataclasses.dataclass(frozen=True)
class Eligibility:
    decision: EligibilityDecision
    facts: EligibilityFacts
    policy_version: str
    # Whether the facts' wallet and deposit balances may be shown to the operator.
    shows_balances: bool


class EntryUseCases(UseCases):
    def check_eligibility(self, order_id: str, operator_id: str) -> Eligibility:
        """The decision OpenEntry would make now. An account of another shop gets NOT_FOUND, as
        for an order that does not exist: it learns nothing of other shops' orders."""
        with self.unit_of_work(read_only=True) as uow:
            return self._eligibility(uow, order_id, operator_id)

    def check_eligibilities(
        self, order_ids: Sequence[str], operator_id: str
    ) -> list[Eligibility | NotFound]:
        """check_eligibility of each order, in the same order, read together: the decision, or
        the NotFound check_eligibility would raise for that order alone (an order nobody has or
        another shop's). An unknown operator raises, as for a single order."""
        with self.unit_of_work(read_only=True) as uow:
            operator, rows = uow.facts.eligibilities(order_ids, operator_id)
        now = self.clock.now()
        found: list[Eligibility | NotFound] = []
        for order_id in order_ids:
            row = rows.get(order_id)
            if row is None or not rules.operator_belongs_to_shop(operator, row.order):
                found.append(NotFound("order", order_id))
            else:
                found.append(self._decide(operator, row, now))
        return found

    def _eligibility(self, uow: UnitOfWork, order_id: str, operator_id: str) -> Eligibility:
        operator, row = uow.facts.eligibility(order_id, operator_id)
        if not rules.operator_belongs_to_shop(operator, row.order):
            raise NotFound("order", order_id)
        return self._decide(operator, row, self.clock.now())

    def _decide(self, operator: Staff, row: EligibilityRow, now: datetime) -> Eligibility:
        facts = EligibilityFacts(
            now=now,
            order=row.order,
            shop=row.shop,
            operator=operator,
            wallet_balance=row.wallet_balance,
            deposit_balance=row.deposit_balance,
            stored_open_entry=row.stored_open_entry,
        )
        return Eligibility(
            rules.check_entry(facts, self.policy),
            facts,
            self.policy.version,
            rules.shows_balances(operator, self.policy),
        )

    def open_entry(self, order_id: str, operator_id: str, note: str, by: Actor = NOBODY) -> Entry:
        with self.unit_of_work() as uow:
            eligibility = self._eligibility(uow, order_id, operator_id)
            decision, facts = eligibility.decision, eligibility.facts
            if not decision.eligible:
                raise _refusal(order_id, decision)
            if facts.stored_open_entry is not None:
                # Stored as OPEN but its window has passed: it closed by itself.
                expired = uow.entries.expire_entries(facts.now, order_id=order_id)
                if expired:
                    uow.events.add(*(events.entry_expired(e, facts.now, by) for e in expired))
                    self.happened(EntriesExpired(len(expired)))
            entry = rules.new_entry(self.new_id(), facts, note, self.policy, by)
            try:
                uow.entries.insert_entry(entry)
            except EntryConflict:
                # Another replica opened one between our read and our write.
                decision = self._eligibility(uow, order_id, operator_id).decision
                if decision.eligible:  # ... and it has been used or has expired since
                    decision = dataclasses.replace(decision, violations=(rules.OPENED_MEANWHILE,))
                raise _refusal(order_id, decision) from None
            uow.events.add(events.entry_opened(entry))
            self.happened(EntryOpened(entry.entry_id))
            return entry

    def get_entry(self, entry_id: str, viewer: Person | None = None) -> Entry:
        """One entry; a viewer sees only entries of its shop's (staff) or its own (buyer)
        orders, and any other answers as if it did not exist."""
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            entry = uow.entries.entry(entry_id)
            if scope is not None:
                order = uow.facts.order(entry.order_id)
                if not scope.sees_order(order.shop_id, order.buyer_id):
                    raise NotFound("entry", entry_id)
            return rules.entry_as_seen(entry, self.clock.now())

    def buyer_order_entry(self, order_id: str, buyer_id: str) -> Entry | None:
        """The newest entry of the buyer's own order, as it reads now (None: never opened). An
        order of another buyer answers as if it did not exist."""
        now = self.clock.now()
        with self.unit_of_work(read_only=True) as uow:
            order = uow.facts.order_or_none(order_id)
            if order is None or not rules.buyer_owns_order(order, buyer_id):
                raise NotFound("order", order_id)
            newest = uow.entries.list_entries(
                shop_id=None, order_id=order_id, states=None, now=now, after=None, limit=1
            )
        return rules.entry_as_seen(newest[0], now) if newest else None

    def list_entries(
        self,
        *,
        shop_id: str | None,
        order_id: str | None,
        state: EntryState | None,
        page_size: int,
        page_token: str = "",
        viewer: Person | None = None,
    ) -> Page[Entry]:
        """A page of entries, newest first. A viewer lists only its own shop's (staff) or its own
        orders' (buyer) entries; another shop or order answers as if it did not exist."""
        tokens = PageTokens(self.store.page_token_key)
        filters = f"{shop_id or ''}|{order_id or ''}|{state.value if state else ''}"
        after = tokens.decode(page_token, filters, (int, str))
        now = self.clock.now()
        with self.unit_of_work(read_only=True) as uow:
            scope = self.scope(uow, viewer)
            if scope is not None:
                if shop_id and not scope.sees_shop(shop_id):
                    raise NotFound("shop", shop_id)
                order = uow.facts.order_or_none(order_id) if order_id else None
                if order_id and (
                    order is None or not scope.sees_order(order.shop_id, order.buyer_id)
                ):
                    raise NotFound("order", order_id)
                if not order_id and scope.shop_id is None:
                    raise NotFound("shop", shop_id or "")
            entries = uow.entries.list_entries(
                shop_id=shop_id,
                order_id=order_id,
                states=None if state is None else (state,),
                now=now,
                after=after,  # type: ignore[arg-type]  # checked by decode: (int, str)
                limit=page_size + 1,
            )
            if not entries:
                # An empty list of a shop or order that does not exist is a caller's mistake.
                if shop_id and not uow.facts.shop_exists(shop_id):
                    raise NotFound("shop", shop_id)
                if order_id and uow.facts.order_or_none(order_id) is None:
                    raise NotFound("order", order_id)
        seen = [rules.entry_as_seen(e, now) for e in entries]
        return tokens.page(seen, page_size, filters, _entry_position)

    def apply(
        self,
        order_id: str,
        buyer_id: str,
        amount: int,
        reason: str,
        by: Actor = NOBODY,
        viewer: Person | None = None,
    ) -> Application:
        """The buyer files through the open entry. A buyer known by a token who is not the
        order's learns nothing of it (NOT_FOUND, as for an order nobody has)."""
        now = self.clock.now()
        with self.unit_of_work() as uow:
            order = uow.facts.order(order_id, for_update=True)
            subject = order_subject(order_id)
            not_owner = rules.check_buyer(order, buyer_id)
            if not_owner and viewer is not None:
                raise NotFound("order", order_id)
            if not_owner:
                # Refused for that alone: the state of another's order is not theirs to learn.
                raise PermissionDenied(
                    subject, not_owner, {"order_id": order_id, "buyer_id": buyer_id}
                )
            entry = uow.entries.stored_open_entry(order_id)
            violations = rules.check_application(order, amount, entry, now)
            if violations or entry is None:
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
                recorded_by=by,
            )
            if not uow.entries.use_entry(entry.entry_id, application.application_id, now):
                # Someone else used it between our read and our write.
                raise RulesRefused(
                    subject,
                    rules.check_application(order, amount, None, now),
                    {"order_id": order_id},
                )
            uow.entries.insert_application(application)
            uow.events.add(events.entry_used(entry, application))
            self.happened(EntryUsed(entry.entry_id))
            return application

    def expire_entries(self, batch: int = EXPIRY_BATCH, batches: int = EXPIRY_BATCHES) -> int:
        """Persists what readers already see: open entries past their window are EXPIRED, each
        with its event, in transactions of at most `batch` entries, `batches` of them at most
        (the next sweep goes on). Returns how many expired."""

        def step(uow: UnitOfWork) -> int:
            now = self.clock.now()
            found = uow.entries.expire_entries(now, limit=batch)
            uow.events.add(*(events.entry_expired(entry, now) for entry in found))
            if found:
                self.happened(EntriesExpired(len(found)))
            return len(found)

        return self.in_batches(step, batch, batches)


def _entry_position(entry: Entry) -> tuple[int, str]:
    return (micros(entry.opened_at), entry.entry_id)


def _refusal(order_id: str, decision: EligibilityDecision) -> RulesRefused:
    """The refusal of an unmet decision: PERMISSION_DENIED when the operator may not open (named
    first), else with an entry already open named first, else every violation in rule order."""
    metadata = {"order_id": order_id}
    if decision.already_open is not None:
        metadata["entry_id"] = decision.already_open.entry_id
    subject = order_subject(order_id)
    if ReasonCode.OPERATOR_NOT_ALLOWED in decision.codes:
        return PermissionDenied(
            subject, _first(decision, ReasonCode.OPERATOR_NOT_ALLOWED), metadata
        )
    if ReasonCode.ENTRY_ALREADY_OPEN in decision.codes:
        return RulesRefused(subject, _first(decision, ReasonCode.ENTRY_ALREADY_OPEN), metadata)
    return RulesRefused(subject, decision.violations, metadata)


def _first(decision: EligibilityDecision, code: ReasonCode) -> list[Violation]:
    first = [v for v in decision.violations if v.code is code]
    return first + [v for v in decision.violations if v.code is not code]
