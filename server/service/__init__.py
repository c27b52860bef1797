"""The service layer: each use case reads its facts through a unit of work, asks the rules in
server/domain/, and persists. It orchestrates and decides nothing itself.

    Service(store, clock, policy).open_entry(order_id, operator_id, note)

One class per gRPC service holds its use cases (sync.py, entries.py, clawbacks.py); `Service`
is all of them over one store, clock and policy.
"""

from __future__ import annotations

from server.service.clawbacks import ClawbackUseCases
from server.service.entries import Eligibility, EntryUseCases
from server.service.events import EventUseCases
from server.service.idempotency import IdempotencyUseCases, RequestKey, fingerprint
from server.service.paging import Page
from server.service.sync import Posted, SyncUseCases
from server.service.unit_of_work import (
    UPKEEP_SECONDS,
    Store,
    StoreUnavailable,
    TransactionAborted,
    UnitOfWork,
)


class Service(SyncUseCases, EntryUseCases, ClawbackUseCases, EventUseCases, IdempotencyUseCases):
    """Every use case of the service."""


__all__ = [
    "UPKEEP_SECONDS",
    "Eligibility",
    "Page",
    "Posted",
    "RequestKey",
    "Service",
    "Store",
    "StoreUnavailable",
    "TransactionAborted",
    "UnitOfWork",
    "fingerprint",
]
