"""An in-memory store for the service tests: the protocols of server/service/unit_of_work.py over
plain dicts and lists, with the semantics of the SQL store (server/store/).

    service = Service(FakeStore(), FakeClock(T0), settings.load_policy())

Transactions: a unit of work works on its own copy of the committed state and swaps it in on
`commit()`; leaving without commit (or raising) drops the copy, so nothing is left behind. Write
units of work hold one lock from `__enter__` to `__exit__`, so they run one at a time, like
SQLite's exclusive write transactions; read-only ones read a copy taken when they start.

The copy is one level deep: the domain values it holds are frozen dataclasses, which the
repositories replace (dataclasses.replace) and never change in place.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import TypeVar

from server.domain import rules
from server.domain.errors import NotFound
from server.domain.events import Event, EventPage, EventType
from server.domain.model import (
    NOBODY,
    PLATFORM_COMMISSION,
    AccountKind,
    AccountRef,
    Actor,
    Application,
    ApplicationState,
    AppliedThrough,
    ClawbackState,
    Debt,
    Entry,
    EntryState,
    Movement,
    Order,
    RefundClawback,
    Shop,
    Staff,
    Transfer,
    TransferKind,
)
from server.service.paging import micros
from server.service.unit_of_work import (
    Clawbacks,
    EligibilityRow,
    Entries,
    EntryConflict,
    Events,
    Facts,
    InsufficientBalance,
    Ledger,
    Requests,
    Store,
    StoredResponse,
    StoreUnavailable,
    TransferExists,
    UnitOfWork,
    WriteConflict,
)

# How long a write unit of work waits for another to end (SQLite's busy timeout, in spirit).
BUSY_TIMEOUT_SECONDS = 10.0

T = TypeVar("T")


@dataclasses.dataclass
class State:
    """Everything the store holds. Dicts keep insertion order, which stands for row ids."""

    shops: dict[str, Shop] = dataclasses.field(default_factory=dict)
    staff: dict[str, Staff] = dataclasses.field(default_factory=dict)
    orders: dict[str, Order] = dataclasses.field(default_factory=dict)
    entries: dict[str, Entry] = dataclasses.field(default_factory=dict)
    applications: dict[str, Application] = dataclasses.field(default_factory=dict)
    # Every account but the external one, whose balance is minus the sum of the others; the
    # platform's commission account is made with the schema, as in SQL.
    accounts: dict[AccountRef, int] = dataclasses.field(
        default_factory=lambda: {PLATFORM_COMMISSION: 0}
    )
    transfers: list[Transfer] = dataclasses.field(default_factory=list)
    # Each transfer's id by its idempotency key.
    transfer_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    # Clawbacks by id, each with its refund; their stored state (ClawbackRow.state) apart.
    clawbacks: dict[str, RefundClawback] = dataclasses.field(default_factory=dict)
    clawback_states: dict[str, str] = dataclasses.field(default_factory=dict)
    requests: dict[str, StoredResponse] = dataclasses.field(default_factory=dict)
    requests_claimed_at: dict[str, datetime] = dataclasses.field(default_factory=dict)
    # Payees whose debts the sweeper still pays, oldest first, with who posted their funds.
    debts_pending: dict[str, Actor] = dataclasses.field(default_factory=dict)
    last_transfer_id: int = 0
    events: list[Event] = dataclasses.field(default_factory=list)
    last_position: int = 0
    pruned_through: int = 0

    def copy(self) -> State:
        return State(
            shops=dict(self.shops),
            staff=dict(self.staff),
            orders=dict(self.orders),
            entries=dict(self.entries),
            applications=dict(self.applications),
            accounts=dict(self.accounts),
            transfers=list(self.transfers),
            transfer_keys=dict(self.transfer_keys),
            clawbacks=dict(self.clawbacks),
            clawback_states=dict(self.clawback_states),
            requests=dict(self.requests),
            requests_claimed_at=dict(self.requests_claimed_at),
            debts_pending=dict(self.debts_pending),
            last_transfer_id=self.last_transfer_id,
            events=list(self.events),
            last_position=self.last_position,
            pruned_through=self.pruned_through,
        )


_Fact = TypeVar("_Fact", Shop, Staff, Order)


def _applied(stored: _Fact | None, incoming: _Fact) -> _Fact | None:
    """What an upsert stores, or None when it keeps what is stored (the newer): version 0 always
    applies, else not below the stored; the version stored is the newest seen."""
    if stored is None:
        return incoming
    if rules.is_stale(stored.version, incoming.version):
        return None
    return dataclasses.replace(
        incoming, version=rules.version_kept(stored.version, incoming.version)
    )


def _stored_open(state: State, order_id: str) -> Entry | None:
    """The order's entry stored as OPEN (its window may have passed)."""
    found = (e for e in state.entries.values() if e.order_id == order_id)
    return next((e for e in found if e.state is EntryState.OPEN), None)


class FakeFacts:
    def __init__(self, state: State) -> None:
        self._s = state

    def put_shop(self, shop: Shop) -> Shop:
        applied = _applied(self._s.shops.get(shop.shop_id), shop)
        if applied is not None:
            self._s.shops[shop.shop_id] = applied
        return self._s.shops[shop.shop_id]

    def shop(self, shop_id: str) -> Shop:
        if shop_id not in self._s.shops:
            raise NotFound("shop", shop_id)
        return self._s.shops[shop_id]

    def shop_or_none(self, shop_id: str) -> Shop | None:
        return self._s.shops.get(shop_id)

    def shop_exists(self, shop_id: str) -> bool:
        return shop_id in self._s.shops

    def put_staff(self, staff: Staff) -> Staff:
        applied = _applied(self._s.staff.get(staff.staff_id), staff)
        if applied is not None:
            self._s.staff[staff.staff_id] = applied
        return self._s.staff[staff.staff_id]

    def staff(self, staff_id: str) -> Staff:
        if staff_id not in self._s.staff:
            raise NotFound("staff", staff_id)
        return self._s.staff[staff_id]

    def put_order(self, order: Order) -> Order:
        """The refunds recorded here stay as they are (0 for a new order)."""
        stored = self._s.orders.get(order.order_id)
        applied = _applied(stored, order)
        if applied is not None:
            recorded = stored.recorded_refunded_amount if stored else 0
            self._s.orders[order.order_id] = dataclasses.replace(
                applied, recorded_refunded_amount=recorded
            )
        return self._s.orders[order.order_id]

    def order(self, order_id: str, *, for_update: bool = False) -> Order:
        order = self.order_or_none(order_id, for_update=for_update)
        if order is None:
            raise NotFound("order", order_id)
        return order

    def order_or_none(self, order_id: str, *, for_update: bool = False) -> Order | None:
        return self._s.orders.get(order_id)

    def order_and_shop(self, order_id: str, *, for_update: bool = False) -> tuple[Order, Shop]:
        order = self.order(order_id, for_update=for_update)
        return order, self.shop(order.shop_id)

    def eligibility(self, order_id: str, operator_id: str) -> tuple[Staff, EligibilityRow]:
        order = self._s.orders.get(order_id)
        if order is None:
            self.staff(operator_id)  # an unknown operator is named first
            raise NotFound("order", order_id)
        operator = self.staff(operator_id)
        return operator, EligibilityRow(
            order=order,
            shop=self.shop(order.shop_id),
            wallet_balance=self._s.accounts.get(
                AccountRef(AccountKind.ANXIN_WALLET, order.shop_id), 0
            ),
            deposit_balance=self._s.accounts.get(AccountRef(AccountKind.DEPOSIT, order.shop_id), 0),
            stored_open_entry=_stored_open(self._s, order_id),
        )

    def eligibilities(
        self, order_ids: Collection[str], operator_id: str
    ) -> tuple[Staff, dict[str, EligibilityRow]]:
        operator = self.staff(operator_id)
        return operator, {
            order_id: self.eligibility(order_id, operator_id)[1]
            for order_id in order_ids
            if order_id in self._s.orders
        }


class FakeEntries:
    def __init__(self, state: State) -> None:
        self._s = state

    def insert_entry(self, entry: Entry) -> None:
        if entry.entry_id in self._s.entries or self.stored_open_entry(entry.order_id):
            raise EntryConflict(entry.order_id)
        self._s.entries[entry.entry_id] = entry

    def entry(self, entry_id: str) -> Entry:
        if entry_id not in self._s.entries:
            raise NotFound("entry", entry_id)
        return self._s.entries[entry_id]

    def stored_open_entry(self, order_id: str) -> Entry | None:
        return _stored_open(self._s, order_id)

    def expire_entries(
        self, now: datetime, *, order_id: str | None = None, limit: int | None = None
    ) -> list[Entry]:
        expired = sorted(
            (
                e
                for e in self._s.entries.values()
                if e.state is EntryState.OPEN
                and e.expires_at <= now
                and (order_id is None or e.order_id == order_id)
            ),
            key=lambda e: e.expires_at,
        )[:limit]
        stored = [dataclasses.replace(e, state=EntryState.EXPIRED) for e in expired]
        for e in stored:
            self._s.entries[e.entry_id] = e
        return stored

    def use_entry(self, entry_id: str, application_id: str, now: datetime) -> bool:
        entry = self._s.entries.get(entry_id)
        if entry is None or entry.state is not EntryState.OPEN or entry.expires_at <= now:
            return False
        self._s.entries[entry_id] = dataclasses.replace(
            entry, state=EntryState.USED, used_at=now, application_id=application_id
        )
        return True

    def list_entries(
        self,
        *,
        shop_id: str | None,
        order_id: str | None,
        states: tuple[EntryState, ...] | None,
        now: datetime,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Entry]:
        def seen_state(e: Entry) -> EntryState:
            expired = e.state is EntryState.OPEN and e.expires_at <= now
            return EntryState.EXPIRED if expired else e.state

        def position(e: Entry) -> tuple[int, str]:
            return micros(e.opened_at), e.entry_id

        found = [
            e
            for e in self._s.entries.values()
            if (not shop_id or e.shop_id == shop_id)
            and (not order_id or e.order_id == order_id)
            and (states is None or seen_state(e) in states)
            and (after is None or position(e) < after)
        ]
        return sorted(found, key=position, reverse=True)[:limit]

    def insert_application(self, application: Application) -> None:
        if application.application_id in self._s.applications:
            raise WriteConflict(f"application {application.application_id}")
        self._s.applications[application.application_id] = application

    def applied_through(self, application_id: str) -> AppliedThrough:
        application = self._s.applications.get(application_id)
        if application is None:
            raise NotFound("application", application_id)
        refunded = sum(
            c.refund.amount
            for c in self._s.clawbacks.values()
            if c.refund.application_id == application_id
        )
        return AppliedThrough(
            application=application,
            entry_opened_at=self._s.entries[application.entry_id].opened_at,
            refunded=refunded,
        )


class FakeLedger:
    def __init__(self, state: State) -> None:
        self._s = state

    def _create(self, ref: AccountRef) -> None:
        if ref.kind is not AccountKind.EXTERNAL:
            self._s.accounts.setdefault(ref, 0)

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
        change: dict[AccountRef, int] = {}
        for m in movements:
            if m.amount <= 0:
                raise ValueError("a transfer moves a positive amount")
            change[m.from_account] = change.get(m.from_account, 0) - m.amount
            change[m.to_account] = change.get(m.to_account, 0) + m.amount
        for ref, amount in change.items():
            if ref.kind is AccountKind.EXTERNAL:
                continue
            self._create(ref)
            if ref in guarded and self._s.accounts[ref] + amount < 0:
                raise InsufficientBalance(self._s.accounts[ref])
        if len({m.idempotency_key for m in movements}) < len(movements):
            raise ValueError("two movements share an idempotency key")
        for m in movements:
            posted = self.transfer_with_key(m.idempotency_key)
            if posted is not None:
                raise TransferExists(m.idempotency_key, posted)
        for ref, amount in change.items():
            if ref.kind is not AccountKind.EXTERNAL:
                self._s.accounts[ref] += amount
        ids = []
        for m in movements:
            self._s.last_transfer_id += 1
            ids.append(str(self._s.last_transfer_id))
            self._s.transfer_keys[m.idempotency_key] = ids[-1]
            self._s.transfers.append(
                Transfer(
                    str(self._s.last_transfer_id),
                    m.from_account,
                    m.to_account,
                    m.amount,
                    m.kind,
                    m.reference,
                    now,
                    m.memo,
                    recorded_by,
                )
            )
        return ids

    def transfer_with_key(self, idempotency_key: str) -> Transfer | None:
        transfer_id = self._s.transfer_keys.get(idempotency_key)
        return next((t for t in self._s.transfers if t.transfer_id == transfer_id), None)

    def lock_accounts(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        kept = [ref for ref in refs if ref.kind is not AccountKind.EXTERNAL]
        for ref in kept:
            self._create(ref)
        return {ref: self._s.accounts[ref] for ref in kept}

    def balances(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        external = -sum(self._s.accounts.values())
        return {
            ref: external if ref.kind is AccountKind.EXTERNAL else self._s.accounts.get(ref, 0)
            for ref in refs
        }

    def fold_external(self, limit: int) -> int:
        return 0  # the external account's balance is derived here

    def balances_of(self, owner_id: str) -> dict[AccountRef, int]:
        owned = sorted(
            (r for r in self._s.accounts if r.kind.has_owner and r.owner_id == owner_id),
            key=lambda r: r.kind.value,
        )
        return self.balances(owned)

    def list_transfers(self, ref: AccountRef, after: int | None, limit: int) -> list[Transfer]:
        if ref.kind is not AccountKind.EXTERNAL and ref not in self._s.accounts:
            return []
        found = [
            t
            for t in reversed(self._s.transfers)
            if ref in (t.from_account, t.to_account)
            and (after is None or int(t.transfer_id) < after)
        ]
        return found[:limit]


class FakeClawbacks:
    def __init__(self, state: State) -> None:
        self._s = state

    def record_refund(self, clawback: RefundClawback) -> None:
        refund = clawback.refund
        if clawback.clawback_id in self._s.clawbacks or self.clawback_of_refund(refund.refund_id):
            raise WriteConflict(f"refund {refund.refund_id}")
        order = self._s.orders.get(refund.order_id)
        if order is not None:
            self._s.orders[order.order_id] = dataclasses.replace(
                order, recorded_refunded_amount=order.recorded_refunded_amount + refund.amount
            )
        application = self._s.applications.get(refund.application_id)
        if application is not None:
            self._s.applications[application.application_id] = dataclasses.replace(
                application, state=ApplicationState.REFUNDED
            )
        self._s.clawbacks[clawback.clawback_id] = clawback
        self._s.clawback_states[clawback.clawback_id] = clawback.state.value

    def debts_of(self, payee_id: str, *, after: int | None, limit: int) -> list[Debt]:
        # A line's seq is its place among every line stored, as a row id would be.
        lines = ((c, line) for c in self._s.clawbacks.values() for line in c.lines)
        debts = [
            Debt(
                c.clawback_id,
                line.line_no,
                c.shop_id,
                line.due,
                line.recovered,
                line.payee_kind,
                seq,
                c.refund.order_id,
            )
            for seq, (c, line) in enumerate(lines, start=1)
            if line.payee_id == payee_id and line.recovered < line.due
        ]
        return [d for d in debts if after is None or d.seq > after][:limit]

    def add_recovered(self, paid: Sequence[tuple[Debt, int]]) -> None:
        for debt, amount in paid:
            c = self._s.clawbacks[debt.clawback_id]
            lines = tuple(
                dataclasses.replace(ln, recovered=ln.recovered + amount)
                if ln.line_no == debt.line_no
                else ln
                for ln in c.lines
            )
            self._s.clawbacks[debt.clawback_id] = dataclasses.replace(c, lines=lines)

    def totals(self, clawback_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        return {i: (self._s.clawbacks[i].due, self._s.clawbacks[i].recovered) for i in clawback_ids}

    def set_states(self, states: dict[str, ClawbackState]) -> None:
        for clawback_id, state in states.items():
            if clawback_id in self._s.clawback_states:
                self._s.clawback_states[clawback_id] = state.value

    def mark_debts_pending(self, payee_id: str, now: datetime, by: Actor) -> None:
        self._s.debts_pending.setdefault(payee_id, by)

    def debts_pending(self, limit: int) -> list[tuple[str, Actor]]:
        return list(self._s.debts_pending.items())[:limit]

    def debts_pending_among(self, payee_ids: Collection[str]) -> set[str]:
        return {p for p in payee_ids if p in self._s.debts_pending}

    def postpone_debts_pending(self, payee_id: str, now: datetime) -> None:
        if payee_id in self._s.debts_pending:
            self._s.debts_pending[payee_id] = self._s.debts_pending.pop(payee_id)

    def clear_debts_pending(self, payee_id: str) -> None:
        self._s.debts_pending.pop(payee_id, None)

    def clawback(
        self, *, clawback_id: str | None = None, refund_id: str | None = None
    ) -> RefundClawback:
        found = (
            self._s.clawbacks.get(clawback_id)
            if clawback_id
            else self.clawback_of_refund(refund_id or "")
        )
        if found is None:
            raise NotFound("clawback", clawback_id or f"refund {refund_id}")
        return found

    def clawback_of_refund(self, refund_id: str) -> RefundClawback | None:
        return next(
            (c for c in self._s.clawbacks.values() if c.refund.refund_id == refund_id), None
        )

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
        def position(c: RefundClawback) -> tuple[int, str]:
            return micros(c.created_at), c.clawback_id

        found = [
            c
            for c in self._s.clawbacks.values()
            if c.shop_id == shop_id
            and (state is None or self._s.clawback_states[c.clawback_id] == state)
            and (start is None or c.created_at >= start)
            and (end is None or c.created_at < end)
            and (after is None or position(c) < after)
        ]
        return sorted(found, key=position, reverse=True)[:limit]


class FakeRequests:
    def __init__(self, state: State) -> None:
        self._s = state

    def get(self, request_id: str) -> StoredResponse | None:
        return self._s.requests.get(request_id)

    def claim(
        self, request_id: str, method: str, fingerprint: str, now: datetime
    ) -> StoredResponse | None:
        stored = self._s.requests.get(request_id)
        if stored is None:
            self._s.requests[request_id] = StoredResponse(method, fingerprint, b"")
            self._s.requests_claimed_at[request_id] = now
        return stored

    def complete(self, request_id: str, response: bytes) -> None:
        claimed = self._s.requests[request_id]
        self._s.requests[request_id] = StoredResponse(claimed.method, claimed.fingerprint, response)

    def prune(self, before: datetime, limit: int) -> int:
        claimed = self._s.requests_claimed_at
        old = sorted((at, rid) for rid, at in claimed.items() if at < before)[:limit]
        for _, rid in old:
            del self._s.requests[rid], claimed[rid]
        return len(old)


class FakeEvents:
    def __init__(self, state: State) -> None:
        self._s = state
        self.added_any = False

    def add(self, *events: Event) -> None:
        self.added_any = self.added_any or bool(events)
        for event in events:
            self._s.last_position += 1
            self._s.events.append(dataclasses.replace(event, position=self._s.last_position))

    def read(
        self,
        *,
        after: int,
        shop_id: str | None,
        types: Collection[EventType],
        limit: int,
        from_oldest: bool = False,
    ) -> EventPage:
        if from_oldest:
            after = self._s.pruned_through
        found = [
            e
            for e in self._s.events
            if e.position > after
            and (shop_id is None or e.shop_id == shop_id)
            and (not types or e.type in types)
        ][:limit]
        top = self._s.events[-1].position if self._s.events else 0
        through = found[-1].position if len(found) >= limit else max(after, top)
        return EventPage(found, through, self._s.pruned_through, top=top)

    def held(self) -> tuple[int, int]:
        return self._s.pruned_through, self._s.last_position

    def prune(self, before: datetime, limit: int) -> int:
        old = []
        for e in self._s.events[:-1][:limit]:
            if e.occurred_at >= before:
                break
            old.append(e)
        if old:
            self._s.events = self._s.events[len(old) :]
            self._s.pruned_through = old[-1].position
        return len(old)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore, *, read_only: bool) -> None:
        self._store = store
        self._read_only = read_only
        self._locked = False
        self._committed = False
        self._after_commit: list[Callable[[], None]] = []
        self._state = State()
        self._bind(self._state)

    def _bind(self, state: State) -> None:
        self.facts: Facts = FakeFacts(state)
        self.entries: Entries = FakeEntries(state)
        self.ledger: Ledger = FakeLedger(state)
        self.clawbacks: Clawbacks = FakeClawbacks(state)
        self.requests: Requests = FakeRequests(state)
        self.events: Events = FakeEvents(state)

    def __enter__(self) -> FakeUnitOfWork:
        if not self._read_only:
            if not self._store.write_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
                raise StoreUnavailable("another unit of work holds the store")
            self._locked = True
        self._state = self._store.committed.copy()
        self._bind(self._state)
        return self

    def serialize_on(self, key: str) -> None:
        """Write units of work run one at a time already."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def commit(self) -> None:
        """Makes this unit of work's changes the committed state; later changes in it are lost
        unless committed again."""
        if self._read_only:
            return
        self._committed = True
        self._store.committed = self._state
        self._state = self._state.copy()
        added_any = self.events.added_any
        self._bind(self._state)
        self.events.added_any = added_any

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # What was not committed is dropped with the copy.
        if self._locked:
            self._locked = False
            self._store.write_lock.release()
        if exc is None and self._committed:
            for callback in self._after_commit:
                callback()


class FakeStore:
    """The committed state, and units of work over copies of it."""

    page_token_key: bytes = b"fake-store-page-token-key"

    def __init__(self) -> None:
        self.committed = State()
        self.write_lock = threading.Lock()
        self.closed = False

    def unit_of_work(self, *, read_only: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, read_only=read_only)

    def serially(self, work: Callable[[], T]) -> T:
        return work()

    def upkeep(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


# The fake implements the protocols the service takes (checked by mypy).
def _conforms(store: FakeStore, uow: FakeUnitOfWork) -> tuple[Store, UnitOfWork]:
    return store, uow
