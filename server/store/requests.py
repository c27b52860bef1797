"""The responses of mutations, by request id (see server/service/idempotency.py)."""

from __future__ import annotations

from datetime import datetime

from server.service.unit_of_work import StoredResponse, WriteConflict
from server.store.schema import RequestRow, rows, to_us


class SqlRequests:
    def get(self, request_id: str) -> StoredResponse | None:
        row = RequestRow.get_or_none(RequestRow.request_id == request_id)
        if row is None:
            return None
        return StoredResponse(row.method, row.fingerprint, bytes(row.response))

    def claim(
        self, request_id: str, method: str, fingerprint: str, now: datetime
    ) -> StoredResponse | None:
        """One INSERT that either claims the id (the row, its response still empty, is this
        transaction's until it ends) or, the id being taken, does nothing; then the stored
        response is read. A claim of an open transaction makes the INSERT wait for its end."""
        claimed = rows(
            RequestRow.insert(
                request_id=request_id,
                method=method,
                fingerprint=fingerprint,
                response=b"",
                created_at=to_us(now),
            )
            .on_conflict_ignore()
            .returning(RequestRow.request_id)
        )
        if claimed:
            return None
        stored = self.get(request_id)
        if stored is None:  # taken by a transaction this one's snapshot cannot see
            raise WriteConflict(f"request {request_id}")
        return stored

    def complete(self, request_id: str, response: bytes) -> None:
        RequestRow.update(response=response).where(RequestRow.request_id == request_id).execute()
