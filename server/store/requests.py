"""The responses of mutations, by request id (see server/service/idempotency.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from server.service.unit_of_work import StoredResponse, WriteConflict
from server.store.schema import RequestRow, Statement, execute_sql, to_us

if TYPE_CHECKING:
    from server.store.unit_of_work import SqlStore


class SqlRequests:
    def __init__(self, store: SqlStore) -> None:
        self._store = store
        # The response `complete` was given, written with the transaction's last statement
        # (SqlUnitOfWork.commit).
        self.completed: tuple[str, bytes] | None = None

    def get(self, request_id: str) -> StoredResponse | None:
        row = self._store.row_by_id(RequestRow, request_id)
        if row is None:
            return None
        return StoredResponse(row["method"], row["fingerprint"], bytes(row["response"]))

    def claim(
        self, request_id: str, method: str, fingerprint: str, now: datetime
    ) -> StoredResponse | None:
        """One INSERT that either claims the id (the row, its response still empty, is this
        transaction's until it ends) or, the id being taken, does nothing; then the stored
        response is read. A claim of an open transaction makes the INSERT wait for its end."""
        p = self._store.database.param
        cursor = execute_sql(
            self._store.database,
            'INSERT INTO "request" ("request_id", "method", "fingerprint", "response", '
            f'"created_at") VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING '
            'RETURNING "request_id"',
            [request_id, method, fingerprint, b"", to_us(now)],
        )
        claimed = cursor.fetchall()
        if claimed:
            return None
        stored = self.get(request_id)
        if stored is None:  # taken by a transaction this one's snapshot cannot see
            raise WriteConflict(f"request {request_id}")
        return stored

    def complete(self, request_id: str, response: bytes) -> None:
        if self.completed is not None:
            raise RuntimeError("one request per unit of work: its response is given once")
        self.completed = (request_id, response)

    def write(self, request_id: str, response: bytes) -> None:
        execute_sql(self._store.database, *self.answer(request_id, response))

    def answer(self, request_id: str, response: bytes) -> Statement:
        """The statement that writes the response of a claimed request id."""
        p = self._store.database.param
        return (
            f'UPDATE "request" SET "response" = {p} WHERE "request_id" = {p}',
            [response, request_id],
        )

    def prune(self, before: datetime, limit: int) -> int:
        """Forgets the oldest `limit` request ids at most among those stored before `before`
        (by the index of their age): one statement, its work bounded by `limit`. On PostgreSQL
        the rows another replica's sweep holds are skipped, as it forgets them."""
        p = self._store.database.param
        skip = " FOR UPDATE SKIP LOCKED" if self._store.is_postgres else ""
        cursor = execute_sql(
            self._store.database,
            'DELETE FROM "request" WHERE "request_id" IN (SELECT "request_id" FROM "request" '
            f'WHERE "created_at" < {p} ORDER BY "created_at" LIMIT {p}{skip})',
            [to_us(before), limit],
        )
        return int(cursor.rowcount)
