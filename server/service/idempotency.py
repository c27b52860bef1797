"""Every mutation runs once per request id: a retry gets the stored response, across replicas."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

from server.domain.errors import RequestIdReused
from server.service.base import UseCases, serial
from server.service.unit_of_work import StoredResponse, TransactionAborted, WriteConflict

# Request ids a sweep forgets per transaction, and transactions per sweep at most: up to
# 200,000 a sweep (every 30 s by default), well above the mutations the platform makes meanwhile,
# so that the retention holds; a sweep that finds fewer stops at the first short batch.
PRUNE_BATCH = 1_000
PRUNE_BATCHES = 200


@dataclasses.dataclass(frozen=True)
class RequestKey:
    """Who a mutation is: its request id, its method, and a fingerprint of the whole request (the
    same id sent again with another request is refused, REQUEST_ID_REUSED)."""

    request_id: str
    method: str
    fingerprint: str


def fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class IdempotencyUseCases(UseCases):
    @serial
    def once(self, key: RequestKey, run: Callable[[], bytes]) -> bytes:
        """The stored response of key.request_id, or run() and store its response, in one unit
        of work: run() (a use case) joins it, so its writes and the record commit together.

        Two replicas running the same request at once: one commits, the other's record clashes
        on the key (WriteConflict) and it answers the stored response."""
        claimed = False
        try:
            with self.unit_of_work() as uow:
                # Retries of one request arriving together wait for each other's claim, so
                # that the later ones answer from the record instead of running the rules again.
                stored = uow.requests.claim(
                    key.request_id, key.method, key.fingerprint, self.clock.now()
                )
                claimed = True
                if stored is not None:
                    return _replay(stored, key)
                response = run()
                uow.requests.complete(key.request_id, response)
                return response
        except WriteConflict:
            # Another replica committed the same request first: answer what it stored. Any
            # other conflict is not this request's and stays an error.
            with self.unit_of_work(read_only=True) as uow:
                stored = uow.requests.get(key.request_id)
            if stored is None:
                if not claimed:
                    # The record the claim met was gone when it was read: forgotten meanwhile
                    # (retention). Nothing ran; a retry runs the request afresh.
                    raise TransactionAborted(
                        f"request {key.request_id}'s record was forgotten as it was claimed"
                    ) from None
                raise
            return _replay(stored, key)

    def prune_requests(self, batch: int = PRUNE_BATCH, batches: int = PRUNE_BATCHES) -> int:
        """Forgets the request ids older than the policy's retention, in transactions of at most
        `batch` ids, `batches` of them at most (the next sweep goes on); returns how many."""
        return self.in_batches(
            lambda uow: uow.requests.prune(self.clock.now() - self.policy.request_retention, batch),
            batch,
            batches,
        )


def _replay(stored: StoredResponse, key: RequestKey) -> bytes:
    if stored.method != key.method or stored.fingerprint != key.fingerprint:
        raise RequestIdReused(key.request_id, key.method)
    return stored.response
