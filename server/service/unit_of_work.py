"""What the service needs of persistence: a unit of work and the repositories it opens.

The service layer owns the transaction: `Store.unit_of_work()` begins one, the service commits it
when the use case returns and rolls it back when it raises. The SQL store (server/store/) and the
in-memory fake of the service tests implement these protocols; nothing else in the service knows
which one runs.

Exceptions a store raises, for the service to act on: `StoreUnavailable` and
`TransactionAborted` (a retry may cure them), `WriteConflict` (a concurrent writer committed the
same key first), and the two refusals that only the database can see at write time,
`EntryConflict` and `InsufficientBalance`. Any other failure of the database is a bug, and the
store lets it propagate as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar

from server.domain.events import Event, EventPage, EventType
from server.domain.model import (
    AccountRef,
    Actor,
    Application,
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

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database cannot be reached, is busy, or gave up waiting (for a connection, a lock, a
    statement): a retry with the same request id may succeed, later. Nothing was committed."""


class TransactionAborted(Exception):
    """The database aborted this transaction to keep concurrent ones consistent (a deadlock, a
    serialization failure): retrying it with the same request id may succeed at once. Nothing was
    committed."""


class WriteConflict(Exception):
    """A uniqueness the database keeps was broken by a concurrent writer; nothing was committed."""


class TransferExists(Exception):
    """A transfer with the idempotency key was posted before (`transfer`); nothing was posted
    now."""

    def __init__(self, idempotency_key: str, transfer: Transfer) -> None:
        self.idempotency_key = idempotency_key
        self.transfer = transfer
        super().__init__(
            f"transfer {transfer.transfer_id} has the idempotency key {idempotency_key!r}"
        )

    @property
    def transfer_id(self) -> str:
        return self.transfer.transfer_id


class EntryConflict(Exception):
    """Another OPEN entry of the order was committed first."""


class InsufficientBalance(Exception):
    """A guarded account would have gone below zero; nothing was posted."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        super().__init__(f"balance {balance}")


@dataclasses.dataclass(frozen=True)
class EligibilityRow:
    """What one read gives the entry rules: the order, its shop, the shop's wallet and deposit
    balances and the order's entry stored as OPEN (which may have expired by time)."""

    order: Order
    shop: Shop
    wallet_balance: int
    deposit_balance: int
    stored_open_entry: Entry | None


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """The record of a mutation that ran: which method, a fingerprint of its request, and the
    response it gave (opaque bytes, answered again to a retry)."""

    method: str
    fingerprint: str
    response: bytes


class Facts(Protocol):
    """Upstream facts: shops, staff, orders. Each put keeps the newest version (rules.is_stale,
    said again in the upsert so that it holds between replicas) and returns what is stored."""

    def put_shop(self, shop: Shop) -> Shop: ...
    def shop(self, shop_id: str) -> Shop: ...
    def shop_or_none(self, shop_id: str) -> Shop | None: ...
    def shop_exists(self, shop_id: str) -> bool: ...
    def put_staff(self, staff: Staff) -> Staff: ...
    def staff(self, staff_id: str) -> Staff: ...
    def put_order(self, order: Order) -> Order: ...
    def order(self, order_id: str, *, for_update: bool = False) -> Order: ...
    def order_or_none(self, order_id: str, *, for_update: bool = False) -> Order | None: ...
    def order_and_shop(self, order_id: str, *, for_update: bool = False) -> tuple[Order, Shop]:
        """The order and its shop, in one read (NotFound for an unknown order); with
        `for_update`, the order locked as by `order`."""
        ...

    def eligibility(self, order_id: str, operator_id: str) -> tuple[Staff, EligibilityRow]: ...
    def eligibilities(
        self, order_ids: Collection[str], operator_id: str
    ) -> tuple[Staff, dict[str, EligibilityRow]]:
        """The operator, and the eligibility row of each order that exists by its id, in a
        bounded number of statements (not one per order); NotFound for an unknown operator."""
        ...


class Entries(Protocol):
    """Entries and the applications filed through them."""

    def insert_entry(self, entry: Entry) -> None: ...
    def entry(self, entry_id: str) -> Entry: ...
    def stored_open_entry(self, order_id: str) -> Entry | None: ...
    def expire_entries(
        self, now: datetime, *, order_id: str | None = None, limit: int | None = None
    ) -> list[Entry]:
        """Stores as EXPIRED the OPEN entries whose window has passed (at most `limit`, those
        that expired first) and returns them as they were. Each entry is changed by one
        transaction only, however many run at once: the change is conditional on the entry
        still being OPEN, and on PostgreSQL entries another transaction holds are skipped."""

    def use_entry(self, entry_id: str, application_id: str, now: datetime) -> bool: ...
    def list_entries(
        self,
        *,
        shop_id: str | None,
        order_id: str | None,
        states: tuple[EntryState, ...] | None,
        now: datetime,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Entry]: ...
    def insert_application(self, application: Application) -> None: ...
    def applied_through(self, application_id: str) -> AppliedThrough: ...


class Ledger(Protocol):
    """Accounts and the transfers between them (double entry: balances always sum to zero)."""

    def lock_accounts(self, refs: set[AccountRef]) -> dict[AccountRef, int]:
        """Locks the accounts (made if need be; not the external one), and returns their
        balances, which no other transaction changes until this unit of work ends."""

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
        recorded_by: Actor = ...,
    ) -> Transfer: ...
    def post_transfers(
        self,
        movements: Sequence[Movement],
        *,
        now: datetime,
        guarded: Collection[AccountRef],
        recorded_by: Actor = ...,
    ) -> list[str]:
        """Posts every movement at once: each account's balance changes by its net amount, and a
        `guarded` account may not end below zero (InsufficientBalance; the unit of work must then
        be rolled back). The platform's commission account, which every late refund touches, is
        changed by the transaction's last statement, so that its row is held only for the
        commit (unless guarded: its guard is checked at once). Every guard is checked before a
        transfer is written. Returns the transfers' ids, in the movements' order.
        TransferExists if a movement's idempotency key is a transfer's already (the unit of work
        must then be rolled back); ValueError if two movements share one."""

    def transfer_with_key(self, idempotency_key: str) -> Transfer | None:
        """The transfer posted with `idempotency_key`, None if there is none."""

    def balances(self, refs: list[AccountRef]) -> dict[AccountRef, int]:
        """The accounts' balances, read together; the external account's is minus what all
        the others hold."""

    def fold_external(self, limit: int) -> int:
        """Adds at most `limit` of the oldest changes of movements to or from the outside not
        yet added to the external account's stored balance, which no transfer changes (every
        movement from outside would queue on its row); returns how many. Its balance as read is
        the same before and after."""

    def balances_of(self, owner_id: str) -> dict[AccountRef, int]:
        """The owner's accounts and their balances, by kind."""

    def list_transfers(self, ref: AccountRef, after: int | None, limit: int) -> list[Transfer]: ...


class Clawbacks(Protocol):
    """Refunds recorded here, their clawbacks and the payees' outstanding debts."""

    def record_refund(self, clawback: RefundClawback) -> None: ...
    def debts_of(self, payee_id: str, *, after: int | None, limit: int) -> list[Debt]:
        """At most `limit` of the payee's outstanding debts, oldest first, after the one whose
        `seq` is `after`."""

    def add_recovered(self, paid: Sequence[tuple[Debt, int]]) -> None:
        """Adds each amount to what its debt's line has recovered."""

    def totals(self, clawback_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        """Each clawback's (due, recovered), summed over its lines."""

    def set_states(self, states: dict[str, ClawbackState]) -> None: ...
    def mark_debts_pending(self, payee_id: str, now: datetime, by: Actor) -> None:
        """Notes that the payee has debts and money left for the sweeper to pay; `by` posted the
        funds, and is recorded on the recoveries the sweeper posts."""

    def debts_pending(self, limit: int) -> list[tuple[str, Actor]]:
        """At most `limit` payees noted by mark_debts_pending, oldest note first."""

    def debts_pending_among(self, payee_ids: Collection[str]) -> set[str]:
        """Those of `payee_ids` noted by mark_debts_pending (one statement; none for none)."""

    def postpone_debts_pending(self, payee_id: str, now: datetime) -> None:
        """Puts the payee last among those debts_pending gives."""

    def clear_debts_pending(self, payee_id: str) -> None: ...
    def clawback(
        self, *, clawback_id: str | None = None, refund_id: str | None = None
    ) -> RefundClawback: ...
    def clawback_of_refund(self, refund_id: str) -> RefundClawback | None: ...
    def list_clawbacks(
        self,
        *,
        shop_id: str,
        state: str | None,
        start: datetime | None,
        end: datetime | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[RefundClawback]: ...


class Events(Protocol):
    """The outbox: events written in the transaction of the change they tell."""

    # Whether events were added in this unit of work (what streams are woken for).
    added_any: bool

    def add(self, *events: Event) -> None:
        """Events to write when the unit of work commits, in this order (one statement for all
        of them, at the end of the transaction)."""

    def read(
        self,
        *,
        after: int,
        shop_id: str | None,
        types: Collection[EventType],
        limit: int,
        from_oldest: bool = False,
    ) -> EventPage:
        """At most `limit` events after position `after` (`from_oldest`: after the highest
        position pruned, in the same snapshot), in position order, of `shop_id` and of `types`
        (each when given). Only committed events are read, and never one whose position could
        still be overtaken by a lower one committing later."""

    def held(self) -> tuple[int, int]:
        """(the highest position pruned, 0 when none; the highest position written, 0 when
        none)."""

    def prune(self, before: datetime, limit: int) -> int:
        """Deletes at most `limit` of the oldest events that occurred before `before` (never the
        newest event, whose position the next one follows); returns how many."""


class Requests(Protocol):
    """The responses of mutations, by request id."""

    def claim(
        self, request_id: str, method: str, fingerprint: str, now: datetime
    ) -> StoredResponse | None:
        """Claims the request id for this transaction, or returns the response stored under it.
        A claim another transaction holds is waited for: its response once it commits, the
        claim once it rolls back."""

    def complete(self, request_id: str, response: bytes) -> None:
        """Stores the response of the request this transaction claimed, with the commit (once
        per unit of work)."""

    def get(self, request_id: str) -> StoredResponse | None: ...

    def prune(self, before: datetime, limit: int) -> int:
        """Forgets at most `limit` of the request ids claimed before `before`, the oldest first;
        returns how many."""


class UnitOfWork(Protocol):
    """One transaction (or, read-only, one connection) and the repositories that work in it.

    Used as a context manager: leaving it without `commit()` rolls everything back."""

    @property
    def facts(self) -> Facts: ...
    @property
    def entries(self) -> Entries: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def clawbacks(self) -> Clawbacks: ...
    @property
    def requests(self) -> Requests: ...
    @property
    def events(self) -> Events: ...

    def serialize_on(self, key: str) -> None:
        """Until the transaction ends, other transactions serialising on `key` wait."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """`callback()` once this unit of work's writes are committed, on the thread that asked
        for them (Store.serially may run them on another); never if it rolls back."""

    def commit(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# How often the server runs the store's upkeep (seconds).
UPKEEP_SECONDS = 1.0


class Store(Protocol):
    """Where units of work come from."""

    @property
    def page_token_key(self) -> bytes:
        """A secret all replicas share, made once with the schema: it signs page tokens."""

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork: ...

    def serially(self, work: Callable[[], T]) -> T:
        """Runs `work`, which writes in a unit of work of its own, and returns what it
        returns, once its writes are committed: wherever the store runs writers best (on
        another thread, its commit shared with other writes: the caller is told only what
        concerns its own)."""

    def upkeep(self) -> int:
        """The store's own upkeep, run between calls by a thread of the server every
        UPKEEP_SECONDS rather than inside them; how much it did (what it is depends on the
        store)."""

    def close(self) -> None: ...
