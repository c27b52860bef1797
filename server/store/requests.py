"""The responses of mutations, by request id (see server/service/idempotency.py)."""

from __future__ import annotations

from datetime import datetime

from server.service.unit_of_work import StoredResponse
from server.store.schema import RequestRow, to_us


class SqlRequests:
    def get(self, request_id: str) -> StoredResponse | None:
        row = RequestRow.get_or_none(RequestRow.request_id == request_id)
        if row is None:
            return None
        return StoredResponse(row.method, row.fingerprint, bytes(row.response))

    def add(self, request_id: str, stored: StoredResponse, now: datetime) -> None:
        """Records the response; a record of the same id committed meanwhile by another replica
        makes the transaction fail with WriteConflict."""
        RequestRow.insert(
            request_id=request_id,
            method=stored.method,
            fingerprint=stored.fingerprint,
            response=stored.response,
            created_at=to_us(now),
        ).execute()
