"""What a use case achieved, told to the service's observers once its unit of work committed
(UseCases.observe): a refusal, a rolled-back transaction or a retry answered from the stored
response tells nothing. The business metrics count these (server/grpc/metrics.py)."""

from __future__ import annotations

import dataclasses

from server.domain.model import ClawbackState, PayeeKind, RefundClawback


@dataclasses.dataclass(frozen=True)
class EntryOpened:
    entry_id: str


@dataclasses.dataclass(frozen=True)
class EntryUsed:
    entry_id: str


@dataclasses.dataclass(frozen=True)
class EntriesExpired:
    count: int


@dataclasses.dataclass(frozen=True)
class ClawbackRecorded:
    """A refund recorded for the first time, with its clawback as recorded."""

    clawback: RefundClawback


@dataclasses.dataclass(frozen=True)
class DebtsRecovered:
    """Money reaching a payee paid debts: each amount by the kind of payee the line is of, and
    each clawback whose state changed, from what to what."""

    paid: tuple[tuple[PayeeKind, int], ...]
    state_changes: tuple[tuple[ClawbackState, ClawbackState], ...]


Outcome = EntryOpened | EntryUsed | EntriesExpired | ClawbackRecorded | DebtsRecovered
