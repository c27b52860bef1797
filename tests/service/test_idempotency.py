"""`Service.once`: a mutation runs once per request id and a retry gets the stored response."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from server.domain.errors import RequestIdExpired, RequestIdReused, RulesRefused
from server.domain.model import Actor, ReasonCode, Shop, ShopStatus
from server.service import RequestKey, Service, TransactionAborted, fingerprint
from server.service.unit_of_work import WriteConflict
from tests.fakes import FakeRequests
from tests.store.factories import an_eligible_setup, wallet_of


def key(
    request_id: str = "request-1", payload: bytes = b"request", method: str = "Do"
) -> RequestKey:
    return RequestKey(request_id, method, fingerprint(payload))


class Counted:
    """A mutation that counts its runs and answers `response`."""

    def __init__(self, response: bytes = b"response", work: Callable[[], None] = lambda: None):
        self.runs = 0
        self.response = response
        self.work = work

    def __call__(self) -> bytes:
        self.runs += 1
        self.work()
        return self.response


def test_a_request_runs_once_and_a_retry_replays_the_stored_response(service):
    run = Counted(b"first answer")

    first = service.once(key(), run)
    run.response = b"would be another answer"
    again = service.once(key(), run)

    assert (first, again) == (b"first answer", b"first answer")
    assert run.runs == 1


def test_other_request_ids_run_on_their_own(service):
    run = Counted()

    service.once(key("request-1"), run)
    service.once(key("request-2"), run)

    assert run.runs == 2


@pytest.mark.parametrize("other", [key(payload=b"another request"), key(method="Other")])
def test_the_same_request_id_with_another_request_is_request_id_reused(service, other):
    run = Counted()
    service.once(key(), run)

    with pytest.raises(RequestIdReused) as reused:
        service.once(other, run)

    assert reused.value.reason is ReasonCode.REQUEST_ID_REUSED
    assert [field for field, _ in reused.value.violations] == ["request_id"]
    assert run.runs == 1


def test_a_request_whose_run_raises_stores_nothing_and_may_be_retried(service):
    def fail() -> None:
        raise RuntimeError("upstream went away")

    with pytest.raises(RuntimeError):
        service.once(key(), Counted(work=fail))
    run = Counted(b"retried")

    assert service.once(key(), run) == b"retried"
    assert run.runs == 1


def test_the_writes_of_a_run_that_raises_are_rolled_back_with_it(service):
    def write_then_fail() -> None:
        service.put_shop(Shop("shop-9", "Shop", ShopStatus.NORMAL, None))
        raise RuntimeError("after the write")

    with pytest.raises(RuntimeError):
        service.once(key(), Counted(work=write_then_fail))

    assert not service.shop_exists("shop-9")


def test_a_refused_use_case_under_once_stores_nothing(service: Service):
    setup = an_eligible_setup(service)
    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    def open_again() -> bytes:
        return service.open_entry(setup.order_id, setup.owner_id, "").entry_id.encode()

    with pytest.raises(RulesRefused):
        service.once(key(), open_again)
    service.apply(setup.order_id, setup.buyer_id, 1_000, "")  # the entry is used now

    assert service.once(key(), open_again) != entry.entry_id.encode()


def test_the_writes_of_a_run_commit_with_its_record(service: Service):
    setup = an_eligible_setup(service)

    def withdraw() -> bytes:
        posted = service.post_funds("request-1", wallet_of(setup.shop_id), -1_000, "payout")
        return str(posted.balance).encode()

    assert service.once(key(), withdraw) == b"999000"
    assert service.once(key(), withdraw) == b"999000"
    assert service.balances([wallet_of(setup.shop_id)], None)[wallet_of(setup.shop_id)] == 999_000


def test_a_request_id_older_than_the_retention_is_forgotten_and_runs_again(service, clock):
    run = Counted(b"first answer")
    service.once(key("request-old"), run)
    clock.advance(service.policy.request_retention / 2)
    service.once(key("request-new"), Counted())
    clock.advance(service.policy.request_retention / 2)
    assert service.prune_requests() == 0  # exactly as old as the retention: kept

    clock.advance(timedelta(seconds=1))
    assert service.prune_requests() == 1
    run.response = b"second answer"

    assert service.once(key("request-old"), run) == b"second answer"
    assert run.runs == 2
    assert service.once(key("request-new"), Counted(b"other")) == b"response"


def test_a_record_forgotten_between_the_claim_and_its_read_is_retryable(service, monkeypatch):
    """The claim met the request's record, which the sweep forgot before it was read: nothing
    ran, and the caller is told to retry (ABORTED), which then runs the request afresh."""
    run = Counted(b"answer")
    gone = {"times": 1}
    claim = FakeRequests.claim

    def claim_meeting_a_record_gone(self, *args):
        if gone["times"]:
            gone["times"] -= 1
            raise WriteConflict("request request-1")
        return claim(self, *args)

    monkeypatch.setattr(FakeRequests, "claim", claim_meeting_a_record_gone)

    with pytest.raises(TransactionAborted):
        service.once(key(), run)
    assert run.runs == 0
    assert service.once(key(), run) == b"answer"
    assert run.runs == 1


def test_a_conflict_of_the_run_itself_stays_an_error(service):
    def conflicting() -> bytes:
        raise WriteConflict("an order's unique key")

    with pytest.raises(WriteConflict):
        service.once(key(), conflicting)


def test_a_forgotten_post_funds_id_from_another_caller_is_request_id_reused(service):
    """The transfer a forgotten request id posted answers only the caller (and person) that
    posted it: the id is another request's for anyone else, as within the retention."""
    setup = an_eligible_setup(service)
    them = Actor("spiffe://payments", "staff:owner-1")
    first = service.post_funds("funds-request-1", wallet_of(setup.shop_id), 500, "in", them)

    with pytest.raises(RequestIdExpired) as done:
        service.post_funds("funds-request-1", wallet_of(setup.shop_id), 500, "in", them)
    assert done.value.transfer_id == first.transfer.transfer_id
    for someone_else in (Actor("spiffe://other"), Actor("spiffe://payments", "staff:owner-2")):
        with pytest.raises(RequestIdReused):
            service.post_funds("funds-request-1", wallet_of(setup.shop_id), 500, "in", someone_else)
