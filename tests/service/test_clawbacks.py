"""A late refund recovers the order's commissions for the merchant (TR/佣金退回): each line in
proportion, from the payees' cash accounts into the wallet; a short payee pays the rest later."""

from __future__ import annotations

import pytest

from server.domain.access import Person, PersonKind
from server.domain.errors import InvalidArgument, NotFound, RulesRefused
from server.domain.model import (
    EXTERNAL,
    PLATFORM_COMMISSION,
    ClawbackState,
    LineState,
    ReasonCode,
    Refund,
    Staff,
    StaffRole,
    TransferKind,
)
from server.service import Service
from tests.service.scenarios import (
    a_clawback_setup,
    a_late_refund,
    an_application,
    balance,
    cash_of,
    fund,
)
from tests.store.factories import deposit_of, wallet_of

WALLET = 1_000_000


def every_balance(service: Service, *payees: str) -> dict:
    accounts = [
        wallet_of("shop-1"),
        deposit_of("shop-1"),
        PLATFORM_COMMISSION,
        EXTERNAL,
        *(cash_of(p) for p in payees),
    ]
    return service.balances(accounts, None)


@pytest.fixture
def funded_payees(service):
    """The influencer and the affiliate can pay back everything; the group leader has 1.00."""
    fund(service, cash_of("influencer-1"), 5_000)
    fund(service, cash_of("leader-1"), 100)
    fund(service, cash_of("affiliate-1"), 5_000)


def test_a_late_refund_recovers_each_commission_line_in_proportion(service, funded_payees):
    setup = a_clawback_setup(service)
    application = an_application(service, setup, 5_000)  # half of the 100.00 paid

    clawback = service.record_refund(a_late_refund(service, application))

    assert clawback.eligible
    assert [(ln.payee_id, ln.commission, ln.due) for ln in clawback.lines] == [
        ("influencer-1", 1_000, 500),
        ("leader-1", 500, 250),
        ("affiliate-1", 300, 150),
        ("", 200, 100),
    ]
    assert [ln.recovered for ln in clawback.lines] == [500, 100, 150, 100]
    assert [ln.state for ln in clawback.lines] == [
        LineState.RECOVERED,
        LineState.PARTIAL,
        LineState.RECOVERED,
        LineState.RECOVERED,
    ]
    assert clawback.state is ClawbackState.PARTIAL
    assert (clawback.refunded_before, clawback.refunded_after) == (0, 5_000)
    assert (clawback.payment.from_wallet, clawback.payment.from_deposit) == (5_000, 0)
    assert service.get_clawback(refund_id="refund-1") == clawback


def test_the_refund_leaves_the_wallet_and_the_recovered_amounts_reach_it(service, funded_payees):
    setup = a_clawback_setup(service)
    application = an_application(service, setup, 5_000)

    service.record_refund(a_late_refund(service, application))

    balances = every_balance(service, "influencer-1", "leader-1", "affiliate-1")
    assert balances[wallet_of("shop-1")] == WALLET - 5_000 + 500 + 100 + 150 + 100
    assert balances[cash_of("influencer-1")] == 4_500
    assert balances[cash_of("leader-1")] == 0
    assert balances[cash_of("affiliate-1")] == 4_850
    assert balances[PLATFORM_COMMISSION] == -100
    assert sum(balances.values()) == 0
    kinds = [t.kind for t in service.list_transfers(wallet_of("shop-1"), 10).items]
    assert kinds.count(TransferKind.CLAWBACK) == 4
    assert kinds.count(TransferKind.REFUND_PAYMENT) == 1


def test_a_short_payee_s_rest_is_recovered_when_money_next_reaches_its_cash_account(
    service, funded_payees
):
    setup = a_clawback_setup(service)
    application = an_application(service, setup, 5_000)
    clawback = service.record_refund(a_late_refund(service, application))
    wallet_before = balance(service, wallet_of("shop-1"))

    leader_after = fund(service, cash_of("leader-1"), 1_000)

    assert leader_after == 1_000 - 150
    assert balance(service, wallet_of("shop-1")) == wallet_before + 150
    recovered = service.get_clawback(clawback_id=clawback.clawback_id)
    assert [ln.recovered for ln in recovered.lines] == [500, 250, 150, 100]
    assert recovered.state is ClawbackState.RECOVERED
    assert recovered.outstanding == 0
    # Nothing is taken twice: more money later stays with the payee.
    assert fund(service, cash_of("leader-1"), 1_000) == 1_850
    assert balance(service, wallet_of("shop-1")) == wallet_before + 150


def test_a_payee_with_too_little_pays_its_debt_in_parts(service):
    setup = a_clawback_setup(service)
    application = an_application(service, setup, 10_000)
    clawback = service.record_refund(a_late_refund(service, application))
    assert [ln.recovered for ln in clawback.lines] == [0, 0, 0, 200]

    fund(service, cash_of("influencer-1"), 400)
    fund(service, cash_of("influencer-1"), 400)
    fund(service, cash_of("influencer-1"), 400)

    lines = service.get_clawback(clawback_id=clawback.clawback_id).lines
    assert (lines[0].due, lines[0].recovered) == (1_000, 1_000)
    assert balance(service, cash_of("influencer-1")) == 200


def test_the_refund_is_recorded_on_the_order_and_its_application(service, funded_payees):
    setup = a_clawback_setup(service)
    application = an_application(service, setup, 5_000)

    service.record_refund(a_late_refund(service, application))

    eligibility = service.check_eligibility(setup.order_id, setup.owner_id)
    assert eligibility.facts.order.refundable_amount == 5_000
    now = service.now()
    one_more = Refund("refund-2", setup.order_id, application.application_id, 1, now, now)
    with pytest.raises(RulesRefused) as refused:
        service.record_refund(one_more)
    assert refused.value.codes == (ReasonCode.AMOUNT_EXCEEDS_APPLICATION,)


def test_the_same_refund_recorded_twice_gives_the_same_clawback_and_moves_no_more_money(
    service, funded_payees
):
    setup = a_clawback_setup(service)
    refund = a_late_refund(service, an_application(service, setup, 5_000))
    first = service.record_refund(refund)
    balances = every_balance(service, "influencer-1", "leader-1", "affiliate-1")

    again = service.record_refund(refund)

    assert again == first
    assert every_balance(service, "influencer-1", "leader-1", "affiliate-1") == balances


def test_a_refund_id_recorded_again_with_other_facts_is_refund_id_reused(service, funded_payees):
    setup = a_clawback_setup(service)
    refund = a_late_refund(service, an_application(service, setup, 5_000))
    service.record_refund(refund)
    other = Refund(
        refund.refund_id,
        refund.order_id,
        refund.application_id,
        4_000,
        refund.started_at,
        refund.paid_at,
    )

    with pytest.raises(InvalidArgument) as refused:
        service.record_refund(other)

    assert refused.value.reason is ReasonCode.REFUND_ID_REUSED
    assert [field for field, _ in refused.value.violations] == ["refund_id"]


def test_a_refund_outside_a_re_opened_entry_is_recorded_but_recovers_nothing(service):
    setup = a_clawback_setup(service)
    now = service.now()

    clawback = service.record_refund(Refund("refund-1", setup.order_id, "", 1_000, now, now))

    assert clawback.state is ClawbackState.NOT_ELIGIBLE
    assert [v.code for v in clawback.reasons] == [ReasonCode.NOT_A_LATE_REFUND]
    assert clawback.lines == ()
    assert balance(service, wallet_of("shop-1")) == WALLET - 1_000


def test_a_refund_of_an_unknown_application_is_not_found_and_pays_nothing(service):
    setup = a_clawback_setup(service)
    now = service.now()

    with pytest.raises(NotFound) as unknown:
        service.record_refund(Refund("refund-1", setup.order_id, "nope", 1_000, now, now))

    assert unknown.value.resource_type == "application"
    assert balance(service, wallet_of("shop-1")) == WALLET
    with pytest.raises(NotFound):
        service.get_clawback(refund_id="refund-1")


def test_the_preview_says_what_a_refund_would_recover_and_writes_nothing(service, funded_payees):
    setup = a_clawback_setup(service)

    preview = service.preview_clawback(setup.order_id, 5_000, None)

    assert [ln.recovered for ln in preview.lines] == [500, 100, 150, 100]
    assert balance(service, cash_of("leader-1")) == 100
    assert (
        service.list_clawbacks(
            shop_id="shop-1", state=None, start=None, end=None, page_size=10
        ).items
        == []
    )


def test_a_shop_s_clawbacks_show_only_to_its_staff_who_may_see_its_money(service, funded_payees):
    setup = a_clawback_setup(service)
    clawback = service.record_refund(a_late_refund(service, an_application(service, setup, 5_000)))
    service.put_staff(Staff("agent-1", setup.shop_id, StaffRole.CS_AGENT, "no money"))
    owner = Person(PersonKind.STAFF, setup.owner_id)
    agent = Person(PersonKind.STAFF, "agent-1")

    def views(viewer: Person) -> list:
        return [
            service.get_clawback(clawback_id=clawback.clawback_id, viewer=viewer).clawback_id,
            [c.clawback_id for c in list_of(service, setup.shop_id, viewer)],
            service.preview_clawback(setup.order_id, 1_000, None, viewer=viewer).refund.amount,
        ]

    assert views(owner) == [clawback.clawback_id, [clawback.clawback_id], 1_000]
    with pytest.raises(NotFound):
        service.get_clawback(clawback_id=clawback.clawback_id, viewer=agent)
    with pytest.raises(NotFound):
        list_of(service, setup.shop_id, agent)
    with pytest.raises(NotFound):
        service.preview_clawback(setup.order_id, 1_000, None, viewer=agent)


def list_of(service: Service, shop_id: str, viewer: Person) -> list:
    return service.list_clawbacks(
        shop_id=shop_id, state=None, start=None, end=None, page_size=10, viewer=viewer
    ).items
