"""Request ids: a mutation runs once per request id and its response is kept for the retries."""

from __future__ import annotations

import itertools
import threading

import psycopg
import pytest

from server.domain.errors import RequestIdReused
from server.domain.model import EXTERNAL, EntryState, TransferKind
from server.service import RequestKey, TransactionAborted
from server.store.requests import SqlRequests
from server.store.schema import RequestRow
from tests.store.factories import (
    an_eligible_setup,
    an_entry,
    at_once,
    request_id,
    wallet_of,
)

REPLICAS = 8


class Counted:
    """A `run` for service.once that counts its calls and answers `response`."""

    def __init__(self, response: bytes = b"response", effect=None) -> None:
        self.calls = 0
        self.response = response
        self.effect = effect
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        if self.effect is not None:
            self.effect()
        return self.response


def stored_requests(store) -> list[tuple[str, str, str, bytes]]:
    with store.unit_of_work(read_only=True):
        return [
            (r.request_id, r.method, r.fingerprint, bytes(r.response)) for r in RequestRow.select()
        ]


def test_a_new_request_runs_once_and_its_response_is_stored(store, service):
    rid, run = request_id(), Counted(b"\x00first\xff")

    assert service.once(RequestKey(rid, "OpenEntry", "fp-1"), run) == b"\x00first\xff"

    assert run.calls == 1
    assert stored_requests(store) == [(rid, "OpenEntry", "fp-1", b"\x00first\xff")]


def test_the_same_request_again_answers_the_stored_response_without_running(service):
    rid = request_id()
    service.once(RequestKey(rid, "OpenEntry", "fp-1"), Counted(b"original"))
    again = Counted(b"something else")

    assert service.once(RequestKey(rid, "OpenEntry", "fp-1"), again) == b"original"

    assert again.calls == 0


def test_the_same_request_id_with_another_request_is_refused(store, service):
    rid = request_id()
    service.once(RequestKey(rid, "OpenEntry", "fp-1"), Counted())
    other = Counted()

    with pytest.raises(RequestIdReused):
        service.once(RequestKey(rid, "OpenEntry", "fp-2"), other)
    with pytest.raises(RequestIdReused):
        service.once(RequestKey(rid, "ApplyAfterSales", "fp-1"), other)

    assert other.calls == 0
    assert [r[:3] for r in stored_requests(store)] == [(rid, "OpenEntry", "fp-1")]


def insert_entry(service, entry) -> None:
    """Writes the entry below the service, in the unit of work of the request running it."""
    with service.unit_of_work() as uow:
        uow.entries.insert_entry(entry)


def test_a_failing_run_stores_nothing_and_its_writes_are_rolled_back(store, service):
    setup = an_eligible_setup(service)
    entry = an_entry(setup, service)

    def insert_then_fail() -> bytes:
        insert_entry(service, entry)
        raise RuntimeError("crashed after writing")

    rid = request_id()
    with pytest.raises(RuntimeError, match="crashed"):
        service.once(RequestKey(rid, "OpenEntry", "fp-1"), insert_then_fail)

    assert stored_requests(store) == []
    with store.unit_of_work(read_only=True) as uow:
        assert uow.entries.stored_open_entry(setup.order_id) is None

    # Nothing was kept, so a retry runs for real.
    retry = Counted(b"retried", effect=lambda: insert_entry(service, entry))
    assert service.once(RequestKey(rid, "OpenEntry", "fp-1"), retry) == b"retried"
    assert retry.calls == 1
    with store.unit_of_work(read_only=True) as uow:
        assert uow.entries.entry(entry.entry_id).state is EntryState.OPEN


def test_the_same_request_from_several_replicas_at_once_takes_effect_once(store, service, clock):
    setup = an_eligible_setup(service)
    wallet = wallet_of(setup.shop_id)
    with store.unit_of_work(read_only=True) as uow:
        before = uow.ledger.balances([wallet])[wallet]
    keys = itertools.count()

    def credit_the_wallet() -> None:
        # A fresh transfer key per run: only the request id can stop a second posting.
        with service.unit_of_work() as uow:
            uow.ledger.post_transfer(
                from_account=EXTERNAL,
                to_account=wallet,
                amount=700,
                kind=TransferKind.FUNDS_IN,
                reference="idempotency race",
                idempotency_key=f"race:{next(keys)}",
                now=clock.now(),
                guard_from=False,
            )

    rid, run = request_id(), Counted(b"credited 7.00", effect=credit_the_wallet)

    outcomes = at_once(
        store, REPLICAS, lambda _: service.once(RequestKey(rid, "PostFunds", "fp-1"), run)
    )

    assert [o.error for o in outcomes] == [None] * REPLICAS
    assert [o.value for o in outcomes] == [b"credited 7.00"] * REPLICAS
    with store.unit_of_work(read_only=True) as uow:
        assert uow.ledger.balances([wallet])[wallet] == before + 700
        total, accounts = uow.ledger.ledger_totals()
    assert total == 0
    assert all(kept == derived for kept, derived in accounts.values())
    assert [r[:3] for r in stored_requests(store)] == [(rid, "PostFunds", "fp-1")]


def test_the_same_open_entry_request_from_several_replicas_at_once_answers_alike(store, service):
    """As the API runs it: the request id wraps service.open_entry, retried while in flight."""
    setup = an_eligible_setup(service)

    def open_it() -> bytes:
        return service.open_entry(setup.order_id, setup.owner_id, "agreed").entry_id.encode()

    rid = request_id()
    outcomes = at_once(
        store, REPLICAS, lambda _: service.once(RequestKey(rid, "OpenEntry", "fp-1"), open_it)
    )

    assert [repr(o.error) for o in outcomes if o.error is not None] == []
    answers = {o.value for o in outcomes}
    assert len(answers) == 1
    entries = service.list_entries(
        shop_id=None, order_id=setup.order_id, state=None, page_size=10
    ).items
    assert [e.entry_id.encode() for e in entries] == list(answers)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_record_the_sweep_forgets_as_it_is_claimed_is_retryable_then_runs_afresh(
    store, service, database_url, monkeypatch
):
    """The claim meets the record; the sweep forgets it before the claim reads it (PostgreSQL:
    the claim's INSERT takes no lock on a row it conflicts with). Nothing runs, the call is
    ABORTED (retryable), and its retry runs the request as a new one."""
    key = RequestKey("request-vanishing", "PostFunds", "f" * 64)
    assert service.once(key, Counted(b"first")) == b"first"
    read = SqlRequests.get

    def read_after_the_sweep(self, request_id):
        with psycopg.connect(database_url, autocommit=True) as sweep:
            sweep.execute('DELETE FROM "request" WHERE "request_id" = %s', [request_id])
        monkeypatch.setattr(SqlRequests, "get", read)
        return read(self, request_id)

    monkeypatch.setattr(SqlRequests, "get", read_after_the_sweep)
    run = Counted(b"afresh")

    with pytest.raises(TransactionAborted):
        service.once(key, run)
    assert run.calls == 0

    assert service.once(key, run) == b"afresh"
    assert run.calls == 1
