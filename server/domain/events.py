"""Events: what happened here that other services act on, written in the transaction of the change.

An event is kept in the outbox (the `event` table) with a global position; consumers read them in
position order (service Events). Each carries a typed payload, one class per kind of change.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.model import (
    NOBODY,
    AccountKind,
    AccountRef,
    Actor,
    Application,
    Debt,
    Entry,
    RefundClawback,
    Shop,
    Transfer,
)


class EventType(enum.StrEnum):
    ENTRY_OPENED = "ENTRY_OPENED"
    ENTRY_USED = "ENTRY_USED"
    ENTRY_EXPIRED = "ENTRY_EXPIRED"
    REFUND_RECORDED = "REFUND_RECORDED"
    DEBT_RECOVERED = "DEBT_RECOVERED"
    FUNDS_POSTED = "FUNDS_POSTED"
    SHOP_STATUS_CHANGED = "SHOP_STATUS_CHANGED"


@dataclasses.dataclass(frozen=True)
class EntryOpened:
    entry_id: str
    opened_at: datetime
    expires_at: datetime
    operator_id: str
    note: str


@dataclasses.dataclass(frozen=True)
class EntryUsed:
    """The buyer filed through the entry: it is used."""

    entry_id: str
    application_id: str
    buyer_id: str
    amount: int
    filed_at: datetime


@dataclasses.dataclass(frozen=True)
class EntryExpired:
    """Nobody filed through the entry within its window; it closed by itself at `expires_at`."""

    entry_id: str
    opened_at: datetime
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class RecoveredLine:
    """One commission line of a clawback as recorded: what was due, recovered at once and is
    still owed by its payee (recovered later: DEBT_RECOVERED)."""

    line_no: int
    payee_kind: str
    payee_id: str
    account_kind: str
    account_owner_id: str
    due: int
    recovered: int
    outstanding: int


@dataclasses.dataclass(frozen=True)
class RefundRecorded:
    refund_id: str
    clawback_id: str
    application_id: str
    amount: int
    paid_from_wallet: int
    paid_from_deposit: int
    state: str
    reasons: tuple[str, ...]
    lines: tuple[RecoveredLine, ...]


@dataclasses.dataclass(frozen=True)
class DebtRecovered:
    """Money reaching a payee's cash account paid (part of) a clawback line it owed: from that
    cash account into the shop's wallet."""

    clawback_id: str
    line_no: int
    payee_id: str
    from_account_kind: str
    from_account_owner_id: str
    to_account_kind: str
    to_account_owner_id: str
    amount: int
    outstanding: int
    transfer_id: str


@dataclasses.dataclass(frozen=True)
class FundsPosted:
    """Money from outside into an account (amount > 0) or out of it (amount < 0)."""

    transfer_id: str
    account_kind: str
    account_owner_id: str
    amount: int
    memo: str
    balance: int


@dataclasses.dataclass(frozen=True)
class ShopStatusChanged:
    previous: str  # empty when the shop was not known before
    status: str


Payload = (
    EntryOpened
    | EntryUsed
    | EntryExpired
    | RefundRecorded
    | DebtRecovered
    | FundsPosted
    | ShopStatusChanged
)

PAYLOAD_TYPES: dict[EventType, type[Any]] = {
    EventType.ENTRY_OPENED: EntryOpened,
    EventType.ENTRY_USED: EntryUsed,
    EventType.ENTRY_EXPIRED: EntryExpired,
    EventType.REFUND_RECORDED: RefundRecorded,
    EventType.DEBT_RECOVERED: DebtRecovered,
    EventType.FUNDS_POSTED: FundsPosted,
    EventType.SHOP_STATUS_CHANGED: ShopStatusChanged,
}


@dataclasses.dataclass(frozen=True)
class Event:
    type: EventType
    occurred_at: datetime
    shop_id: str
    order_id: str
    actor: Actor
    # The policy version of the decision the change made; empty where none was made.
    policy_version: str
    payload: Payload
    # Given by the outbox when the event is written; 0 before.
    position: int = 0


@dataclasses.dataclass(frozen=True)
class EventPage:
    """Events read after a position, and the position read up to: a consumer filtering events may
    resume from `through` without reading again what it skipped."""

    events: list[Event]
    through: int
    # The highest position pruned when it was read: events at or below it are gone.
    pruned_through: int = 0
    # The highest position held when it was read.
    top: int = 0

    @property
    def caught_up(self) -> bool:
        """Nothing more is held past `through` (for now)."""
        return self.through >= self.top


# --- What each change tells ---------------------------------------------------------------


def entry_opened(entry: Entry) -> Event:
    return Event(
        EventType.ENTRY_OPENED,
        entry.opened_at,
        entry.shop_id,
        entry.order_id,
        entry.recorded_by,
        entry.policy_version,
        EntryOpened(
            entry.entry_id, entry.opened_at, entry.expires_at, entry.operator_id, entry.note
        ),
    )


def entry_used(entry: Entry, application: Application) -> Event:
    return Event(
        EventType.ENTRY_USED,
        application.filed_at,
        entry.shop_id,
        entry.order_id,
        application.recorded_by,
        "",
        EntryUsed(
            entry.entry_id,
            application.application_id,
            application.buyer_id,
            application.amount,
            application.filed_at,
        ),
    )


def entry_expired(entry: Entry, now: datetime, by: Actor = NOBODY) -> Event:
    """`by`: who caused the expiry to be stored (nobody for the sweeper; the operator whose
    opening found it expired)."""
    return Event(
        EventType.ENTRY_EXPIRED,
        now,
        entry.shop_id,
        entry.order_id,
        by,
        entry.policy_version,
        EntryExpired(entry.entry_id, entry.opened_at, entry.expires_at),
    )


def refund_recorded(clawback: RefundClawback) -> Event:
    refund = clawback.refund
    return Event(
        EventType.REFUND_RECORDED,
        clawback.created_at,
        clawback.shop_id,
        refund.order_id,
        clawback.recorded_by,
        clawback.policy_version,
        RefundRecorded(
            refund_id=refund.refund_id,
            clawback_id=clawback.clawback_id,
            application_id=refund.application_id,
            amount=refund.amount,
            paid_from_wallet=clawback.payment.from_wallet,
            paid_from_deposit=clawback.payment.from_deposit,
            state=clawback.state.value,
            reasons=tuple(v.code.value for v in clawback.reasons),
            lines=tuple(
                RecoveredLine(
                    line.line_no,
                    line.payee_kind.value,
                    line.payee_id,
                    line.account.kind.value,
                    line.account.owner_id,
                    line.due,
                    line.recovered,
                    line.outstanding,
                )
                for line in clawback.lines
            ),
        ),
    )


def debt_recovered(
    debt: Debt,
    paid: int,
    cash: AccountRef,
    wallet: AccountRef,
    transfer_id: str,
    now: datetime,
    by: Actor,
) -> Event:
    return Event(
        EventType.DEBT_RECOVERED,
        now,
        debt.shop_id,
        debt.order_id,
        by,
        "",
        DebtRecovered(
            clawback_id=debt.clawback_id,
            line_no=debt.line_no,
            payee_id=cash.owner_id,
            from_account_kind=cash.kind.value,
            from_account_owner_id=cash.owner_id,
            to_account_kind=wallet.kind.value,
            to_account_owner_id=wallet.owner_id,
            amount=paid,
            outstanding=debt.outstanding - paid,
            transfer_id=transfer_id,
        ),
    )


def funds_posted(transfer: Transfer, account: AccountRef, balance: int) -> Event:
    incoming = transfer.to_account == account
    shop_id = account.owner_id if account.kind in _SHOP_ACCOUNTS else ""
    return Event(
        EventType.FUNDS_POSTED,
        transfer.posted_at,
        shop_id,
        "",
        transfer.recorded_by,
        "",
        FundsPosted(
            transfer.transfer_id,
            account.kind.value,
            account.owner_id,
            transfer.amount if incoming else -transfer.amount,
            transfer.memo,
            balance,
        ),
    )


_SHOP_ACCOUNTS = (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT)


def shop_status_changed(previous: Shop | None, stored: Shop, now: datetime) -> Event | None:
    """The event of a put shop whose status changed (a shop first known as operating normally
    tells nothing), else None."""
    before = previous.status.value if previous is not None else ""
    if before == stored.status.value or (previous is None and stored.status.value == "NORMAL"):
        return None
    return Event(
        EventType.SHOP_STATUS_CHANGED,
        now,
        stored.shop_id,
        "",
        stored.recorded_by,
        "",
        ShopStatusChanged(before, stored.status.value),
    )


# --- Stored form ---------------------------------------------------------------------------


def payload_values(payload: Payload) -> dict[str, Any]:
    """The payload as plain values (times as microseconds since the epoch), for storing as JSON."""
    return _values(payload)


def payload_from_values(event_type: EventType, values: dict[str, Any]) -> Payload:
    """The payload `payload_values` gave."""
    cls = PAYLOAD_TYPES[event_type]
    return typing.cast(Payload, _typed(cls, values))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _values(payload: Any) -> dict[str, Any]:
    values = {}
    for name, plain in _plain_converters(type(payload)):
        value = getattr(payload, name)
        values[name] = value if plain is None else plain(value)
    return values


def _plain_converter(hint: Any) -> Callable[[Any], Any] | None:
    """What makes a field of type `hint` plain (None: it is already). The kinds of field
    `_typed` reads back, and only those."""
    if hint is datetime:
        return _micros
    if hint in (str, int, bool):
        return None
    if typing.get_origin(hint) is tuple:
        item = _item(hint)
        if dataclasses.is_dataclass(item) and isinstance(item, type):
            return lambda items: [_values(i) for i in items]
        if item in (str, int, bool):
            return list
    raise TypeError(f"a payload field of type {hint} has no stored form")


# Read once per payload class (a few dozen), not once per event stored or read.
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}
_HINTS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}
_PLAIN: dict[type[Any], tuple[tuple[str, Callable[[Any], Any] | None], ...]] = {}


def _plain_converters(cls: type[Any]) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    converters = _PLAIN.get(cls)
    if converters is None:
        converters = _PLAIN[cls] = tuple(
            (name, _plain_converter(hint)) for name, hint in _hints(cls)
        )
    return converters


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _hints(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    hints = _HINTS.get(cls)
    if hints is None:
        every = typing.get_type_hints(cls)
        hints = _HINTS[cls] = tuple((name, every[name]) for name in _field_names(cls))
    return hints


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _item(hint: Any) -> Any:
    """The item type of tuple[X, ...]."""
    (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
    return item


def _typed(cls: type[Any], values: dict[str, Any]) -> Any:
    kwargs = {}
    for name, hint in _hints(cls):
        value = values[name]
        if hint is datetime:
            value = _EPOCH + timedelta(microseconds=value)
        elif typing.get_origin(hint) is tuple:
            item = _item(hint)
            nested = dataclasses.is_dataclass(item) and isinstance(item, type)
            value = tuple(_typed(item, v) if nested else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)
