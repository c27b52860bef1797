"""Request ids: a mutation runs once per request id and its response is kept for the retries."""

from __future__ import annotations

import itertools
import threading

import pytest

from server.errors import RequestIdReused
from server.model import EXTERNAL, EntryState, TransferKind
from server.store import RequestRow
from tests.store.factories import (
    an_eligible_setup,
    an_entry,
    at_once,
    request_id,
    wallet_of,
)

REPLICAS = 8


class Counted:
    """A `run` for store.idempotent that counts its calls and answers `response`."""

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
    with store.session():
        return [
            (r.request_id, r.method, r.fingerprint, bytes(r.response)) for r in RequestRow.select()
        ]


def test_a_new_request_runs_once_and_its_response_is_stored(store, clock):
    rid, run = request_id(), Counted(b"\x00first\xff")

    assert store.idempotent(rid, "OpenEntry", "fp-1", run, clock.now()) == b"\x00first\xff"

    assert run.calls == 1
    assert stored_requests(store) == [(rid, "OpenEntry", "fp-1", b"\x00first\xff")]


def test_the_same_request_again_answers_the_stored_response_without_running(store, clock):
    rid = request_id()
    store.idempotent(rid, "OpenEntry", "fp-1", Counted(b"original"), clock.now())
    again = Counted(b"something else")

    assert store.idempotent(rid, "OpenEntry", "fp-1", again, clock.now()) == b"original"

    assert again.calls == 0


def test_the_same_request_id_with_another_request_is_refused(store, clock):
    rid = request_id()
    store.idempotent(rid, "OpenEntry", "fp-1", Counted(), clock.now())
    other = Counted()

    with pytest.raises(RequestIdReused):
        store.idempotent(rid, "OpenEntry", "fp-2", other, clock.now())
    with pytest.raises(RequestIdReused):
        store.idempotent(rid, "ApplyAfterSales", "fp-1", other, clock.now())

    assert other.calls == 0
    assert [r[:3] for r in stored_requests(store)] == [(rid, "OpenEntry", "fp-1")]


def test_a_failing_run_stores_nothing_and_its_writes_are_rolled_back(store, service, clock):
    setup = an_eligible_setup(service)
    entry = an_entry(setup, service)

    def insert_then_fail() -> bytes:
        store.insert_entry(entry)
        raise RuntimeError("crashed after writing")

    rid = request_id()
    with pytest.raises(RuntimeError, match="crashed"):
        store.idempotent(rid, "OpenEntry", "fp-1", insert_then_fail, clock.now())

    assert stored_requests(store) == []
    with store.session():
        assert store.stored_open_entry(setup.order_id) is None

    # Nothing was kept, so a retry runs for real.
    retry = Counted(b"retried", effect=lambda: store.insert_entry(entry))
    assert store.idempotent(rid, "OpenEntry", "fp-1", retry, clock.now()) == b"retried"
    assert retry.calls == 1
    with store.session():
        assert store.entry(entry.entry_id).state is EntryState.OPEN


def test_the_same_request_from_several_replicas_at_once_takes_effect_once(store, service, clock):
    setup = an_eligible_setup(service)
    wallet = wallet_of(setup.shop_id)
    with store.session():
        before = store.balance(wallet)
    keys = itertools.count()

    def credit_the_wallet() -> None:
        # A fresh transfer key per run: only the request id can stop a second posting.
        store.post_transfer(
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
        store, REPLICAS, lambda _: store.idempotent(rid, "PostFunds", "fp-1", run, clock.now())
    )

    assert [o.error for o in outcomes] == [None] * REPLICAS
    assert [o.value for o in outcomes] == [b"credited 7.00"] * REPLICAS
    with store.session():
        assert store.balance(wallet) == before + 700
    total, accounts = store.ledger_totals()
    assert total == 0
    assert all(kept == derived for kept, derived in accounts.values())
    assert [r[:3] for r in stored_requests(store)] == [(rid, "PostFunds", "fp-1")]


def test_the_same_open_entry_request_from_several_replicas_at_once_answers_alike(
    store, service, clock
):
    """As the API runs it: the request id wraps service.open_entry, retried while in flight."""
    setup = an_eligible_setup(service)

    def open_it() -> bytes:
        return service.open_entry(setup.order_id, setup.owner_id, "agreed").entry_id.encode()

    rid = request_id()
    outcomes = at_once(
        store, REPLICAS, lambda _: store.idempotent(rid, "OpenEntry", "fp-1", open_it, clock.now())
    )

    assert [repr(o.error) for o in outcomes if o.error is not None] == []
    answers = {o.value for o in outcomes}
    assert len(answers) == 1
    entries, _ = service.list_entries(
        shop_id=None, order_id=setup.order_id, state=None, after=None, limit=10
    )
    assert [e.entry_id.encode() for e in entries] == list(answers)
