"""What the use cases tell their observers (the business metrics): what committed, once; never a
refusal, a rollback or a retry answered from the stored response."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from server.domain.errors import RulesRefused
from server.domain.model import ClawbackState, PayeeKind
from server.service import RequestKey, Service, fingerprint
from server.service.outcomes import (
    ClawbackRecorded,
    DebtsRecovered,
    EntriesExpired,
    EntryOpened,
    EntryUsed,
    Outcome,
)
from tests.service.scenarios import a_clawback_setup, a_late_refund, cash_of, fund
from tests.store.factories import an_eligible_setup


class Told:
    """An observer: each committed unit of work's outcomes, in order."""

    def __init__(self, service: Service) -> None:
        self.batches: list[list[Outcome]] = []
        service.observe(self)

    def __call__(self, outcomes: Sequence[Outcome]) -> None:
        self.batches.append(list(outcomes))

    def outcomes(self) -> list[Outcome]:
        return [outcome for batch in self.batches for outcome in batch]

    def of(self, kind: type) -> list[Outcome]:
        return [outcome for outcome in self.outcomes() if isinstance(outcome, kind)]


def test_an_entry_opened_used_and_its_refund_recovered_are_told_once_each(service, clock):
    setup = a_clawback_setup(service)
    told = Told(service)

    entry = service.open_entry(setup.order_id, setup.owner_id, "")
    application = service.apply(setup.order_id, setup.buyer_id, 10_000, "broken")
    clawback = service.record_refund(a_late_refund(service, application))
    service.record_refund(a_late_refund(service, application))  # reported again: nothing new

    assert told.of(EntryOpened) == [EntryOpened(entry.entry_id)]
    assert told.of(EntryUsed) == [EntryUsed(entry.entry_id)]
    [recorded] = told.of(ClawbackRecorded)
    assert recorded.clawback == clawback
    # The payees' cash accounts are empty: only the platform's fee (TR) is recovered at once.
    assert clawback.state is ClawbackState.PARTIAL
    by_kind = {line.payee_kind: (line.due, line.recovered) for line in clawback.lines}
    assert by_kind[PayeeKind.TECHNICAL_SERVICE_FEE] == (200, 200)
    assert by_kind[PayeeKind.GROUP_LEADER] == (500, 0)


def test_debts_paid_by_money_reaching_payees_are_told_with_the_states_they_change(service):
    setup = a_clawback_setup(service)
    service.open_entry(setup.order_id, setup.owner_id, "")
    application = service.apply(setup.order_id, setup.buyer_id, 10_000, "broken")
    service.record_refund(a_late_refund(service, application))
    told = Told(service)

    fund(service, cash_of("leader-1"), 10_000)  # pays its 500; others still owe
    fund(service, cash_of("influencer-1"), 300)  # pays 300 of its 1,000
    fund(service, cash_of("influencer-1"), 5_000)  # pays the 700 left
    fund(service, cash_of("affiliate-1"), 300)  # pays its 300: all recovered
    fund(service, cash_of("affiliate-1"), 300)  # owes nothing: nothing told

    assert told.of(DebtsRecovered) == [
        DebtsRecovered(((PayeeKind.GROUP_LEADER, 500),), ()),
        DebtsRecovered(((PayeeKind.INFLUENCER, 300),), ()),
        DebtsRecovered(((PayeeKind.INFLUENCER, 700),), ()),
        DebtsRecovered(
            ((PayeeKind.AFFILIATE, 300),), ((ClawbackState.PARTIAL, ClawbackState.RECOVERED),)
        ),
    ]


def test_a_retry_answered_from_the_stored_response_tells_nothing_again(service):
    setup = an_eligible_setup(service)
    told = Told(service)
    key = RequestKey("request-once", "OpenEntry", fingerprint(b"open"))

    def run() -> bytes:
        return service.open_entry(setup.order_id, setup.owner_id, "").entry_id.encode()

    first = service.once(key, run)
    again = service.once(key, run)

    assert first == again
    assert told.of(EntryOpened) == [EntryOpened(first.decode())]


def test_a_refusal_and_a_rolled_back_run_tell_nothing(service):
    setup = an_eligible_setup(service)
    service.open_entry(setup.order_id, setup.owner_id, "")
    told = Told(service)

    with pytest.raises(RulesRefused):
        service.open_entry(setup.order_id, setup.owner_id, "")  # one is open already
    other = an_eligible_setup(service, "shop-2", "order-2")

    def opens_then_fails() -> bytes:
        service.open_entry(other.order_id, other.owner_id, "")
        raise RuntimeError("the response could not be made")

    with pytest.raises(RuntimeError):
        service.once(RequestKey("request-fails", "OpenEntry", fingerprint(b"x")), opens_then_fails)

    assert told.of(EntryOpened) == []


def test_entries_expired_by_a_sweep_are_told_by_their_count(service, clock):
    for n in (1, 2):
        setup = an_eligible_setup(service, f"shop-{n}", f"order-{n}")
        service.open_entry(setup.order_id, setup.owner_id, "")
    told = Told(service)

    clock.advance(service.policy.entry_window)
    assert service.expire_entries() == 2
    assert service.expire_entries() == 0

    assert told.outcomes() == [EntriesExpired(2)]


def test_a_failing_observer_fails_no_call_and_the_others_are_still_told(service):
    setup = an_eligible_setup(service)

    def broken(outcomes: Sequence[Outcome]) -> None:
        raise RuntimeError("a bug in an observer")

    service.observe(broken)
    told = Told(service)

    entry = service.open_entry(setup.order_id, setup.owner_id, "")

    assert told.of(EntryOpened) == [EntryOpened(entry.entry_id)]
