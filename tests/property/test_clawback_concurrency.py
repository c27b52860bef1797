"""Replicas recording refunds and posting funds at once, on SQLite and PostgreSQL: threads of one
process, each on its own connection, stand for server replicas over one database."""

from __future__ import annotations

from server.domain.errors import RulesRefused
from server.domain.model import (
    PLATFORM_COMMISSION,
    ClawbackState,
    CommissionLine,
    PayeeKind,
    ReasonCode,
    RefundClawback,
    TransferKind,
)
from tests.property import (
    a_late_order,
    assert_ledger_is_sound,
    assert_lines_are_consistent,
    at_once,
    balances,
    cash_of,
    deposit_of,
    fresh,
    post,
    wallet_of,
)

REPLICAS = 8


def errors_of(outcomes) -> list[str]:
    return [repr(o.error) for o in outcomes if o.error is not None]


def refunded_amount(store, order_id: str) -> int:
    with store.unit_of_work(read_only=True) as uow:
        return uow.facts.order(order_id).recorded_refunded_amount


def transfers_of(service, account) -> list:
    page = service.list_transfers(account, 1_000)
    assert not page.next_page_token
    return page.items


def test_replicas_recording_the_same_refund_at_once_record_one_refund_and_move_money_once(
    service, store
):
    influencer, leader = fresh("influencer"), fresh("leader")
    post(service, cash_of(influencer), 300)
    post(service, cash_of(leader), 100_000)
    order = a_late_order(
        service,
        paid=10_000,
        commission_lines=[
            CommissionLine(PayeeKind.INFLUENCER, influencer, 2_000),
            CommissionLine(PayeeKind.GROUP_LEADER, leader, 500),
            CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 300),
        ],
        wallet=4_000,
        deposit=10_000,
    )
    platform_before = balances(service, PLATFORM_COMMISSION)[PLATFORM_COMMISSION]
    refund = order.refund(6_000, service)

    outcomes = at_once(store, [lambda: service.record_refund(refund)] * REPLICAS)

    assert errors_of(outcomes) == []
    clawbacks: list[RefundClawback] = [o.value for o in outcomes]
    assert len({c.clawback_id for c in clawbacks}) == 1
    assert all(c == clawbacks[0] for c in clawbacks)
    assert [(line.due, line.recovered) for line in clawbacks[0].lines] == [
        (1_200, 300),
        (300, 300),
        (180, 180),
    ]
    assert refunded_amount(store, order.order_id) == 6_000
    assert_ledger_is_sound(store)
    wallet, deposit = wallet_of(order.shop_id), deposit_of(order.shop_id)
    assert balances(
        service, wallet, deposit, cash_of(influencer), cash_of(leader), PLATFORM_COMMISSION
    ) == {
        wallet: 4_000 - 4_000 + 300 + 300 + 180,
        deposit: 10_000 - 2_000,
        cash_of(influencer): 0,
        cash_of(leader): 100_000 - 300,
        PLATFORM_COMMISSION: platform_before - 180,
    }
    kinds = [t.kind for t in transfers_of(service, wallet)]
    assert kinds.count(TransferKind.REFUND_PAYMENT) == 1
    assert kinds.count(TransferKind.CLAWBACK) == 3


def test_replicas_recording_different_partial_refunds_while_funds_reach_a_short_payee(
    service, store
):
    # The influencer has no cash and already owes the shop for an earlier order; the refunds
    # of the second order add to the debt while money reaches the influencer.
    influencer, leader = fresh("influencer"), fresh("leader")
    post(service, cash_of(leader), 1_000_000)
    lines = [
        CommissionLine(PayeeKind.INFLUENCER, influencer, 3_000),
        CommissionLine(PayeeKind.GROUP_LEADER, leader, 1_000),
        CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 500),
    ]
    earlier = a_late_order(service, paid=10_000, commission_lines=lines, wallet=20_000)
    service.record_refund(earlier.refund(5_000, service))
    order = a_late_order(
        service,
        paid=10_000,
        commission_lines=lines,
        wallet=0,
        deposit=10_000,
        shop_id=earlier.shop_id,
    )
    refund_amounts = [1_500] * 6 + [1_600, 1_700]  # any six fit in 100.00, no seven do
    fundings = [400] * 6

    outcomes = at_once(
        store,
        [lambda a=a: service.record_refund(order.refund(a, service)) for a in refund_amounts]
        + [lambda f=f: post(service, cash_of(influencer), f) for f in fundings],
    )

    refund_outcomes = outcomes[: len(refund_amounts)]
    funding_outcomes = outcomes[len(refund_amounts) :]
    assert errors_of(funding_outcomes) == []
    accepted = [o.value for o in refund_outcomes if o.error is None]
    pairs = zip(refund_amounts, refund_outcomes, strict=True)
    refused = [(amount, o.error) for amount, o in pairs if o.error is not None]
    assert all(isinstance(e, RulesRefused) for _, e in refused), [repr(e) for _, e in refused]
    # The application asked for the whole paid amount: a refund past the order's refundable
    # amount is past what the application asked for too, and both rules are named.
    both = (ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE, ReasonCode.AMOUNT_EXCEEDS_APPLICATION)
    assert [e.codes for _, e in refused] == [both] * 2
    assert len(accepted) == 6  # whatever order the replicas ran in
    accepted_total = sum(c.refund.amount for c in accepted)
    assert all(amount > order.paid - accepted_total for amount, _ in refused)
    assert refunded_amount(store, order.order_id) == accepted_total

    assert_ledger_is_sound(store)
    clawbacks = sorted(
        (service.get_clawback(clawback_id=c.clawback_id) for c in accepted),
        key=lambda c: c.refunded_before,
    )
    # The refunds were applied one after another: each starts where the one before ended, and
    # owes the difference of the rounded-down cumulative shares.
    refunded = 0
    for clawback in clawbacks:
        assert_lines_are_consistent(clawback)
        assert clawback.refunded_before == refunded
        refunded = clawback.refunded_after
        assert refunded - clawback.refunded_before == clawback.refund.amount
        for line, commission in zip(clawback.lines, lines, strict=True):
            assert line.due == (
                commission.amount * clawback.refunded_after // order.paid
                - commission.amount * clawback.refunded_before // order.paid
            )
    for i, line in enumerate(lines):
        assert sum(c.lines[i].due for c in clawbacks) <= line.amount

    # The influencer's money went to its debts; what it still owes, it has no cash for.
    every = clawbacks_of_shop(service, order.shop_id)
    owed = sum(line.outstanding for c in every for line in c.lines if line.payee_id == influencer)
    recovered_from_influencer = sum(
        line.recovered for c in every for line in c.lines if line.payee_id == influencer
    )
    assert (
        recovered_from_influencer
        == sum(fundings) - balances(service, cash_of(influencer))[cash_of(influencer)]
    )
    if owed:
        assert balances(service, cash_of(influencer))[cash_of(influencer)] == 0
    # The shop's wallet got exactly what was recovered, on both orders.
    assert balances(service, wallet_of(order.shop_id))[wallet_of(order.shop_id)] == (
        20_000 - sum(c.payment.from_wallet for c in every) + sum(c.recovered for c in every)
    )

    # Enough money: every debt is paid, and the shop got all of it.
    post(service, cash_of(influencer), owed)
    every = [service.get_clawback(clawback_id=c.clawback_id) for c in every]
    assert all(c.state is ClawbackState.RECOVERED for c in every)
    assert balances(service, cash_of(influencer))[cash_of(influencer)] == 0
    assert balances(service, wallet_of(order.shop_id))[wallet_of(order.shop_id)] == (
        20_000 - sum(c.payment.from_wallet for c in every) + sum(c.recovered for c in every)
    )
    assert_ledger_is_sound(store)


def clawbacks_of_shop(service, shop_id: str) -> list[RefundClawback]:
    page = service.list_clawbacks(shop_id=shop_id, state=None, start=None, end=None, page_size=100)
    assert not page.next_page_token
    return page.items


def test_funds_reaching_a_payee_in_debt_never_deadlock_with_refunds_of_the_shop_it_owes(
    service, store
):
    # An influencer owes the shop for one order; meanwhile the shop's other orders, sold by a
    # group leader, are refunded, and the influencer's earnings come in: all of it goes through.
    influencer, leader = fresh("influencer"), fresh("leader")
    post(service, cash_of(leader), 1_000_000)
    owed_order = a_late_order(
        service,
        paid=100_000,
        commission_lines=[CommissionLine(PayeeKind.INFLUENCER, influencer, 50_000)],
        wallet=200_000,
    )
    service.record_refund(owed_order.refund(100_000, service))
    errors = []
    for _ in range(2):
        order = a_late_order(
            service,
            paid=10_000,
            commission_lines=[
                CommissionLine(PayeeKind.GROUP_LEADER, leader, 1_000),
                CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 500),
            ],
            wallet=20_000,
            shop_id=owed_order.shop_id,
        )
        outcomes = at_once(
            store,
            [lambda o=order: service.record_refund(o.refund(1_000, service))] * 6
            + [lambda: post(service, cash_of(influencer), 100)] * 6,
        )
        errors += errors_of(outcomes)

    assert errors == []
    assert_ledger_is_sound(store)
    (debt,) = next(
        c
        for c in clawbacks_of_shop(service, owed_order.shop_id)
        if c.refund.order_id == owed_order.order_id
    ).lines
    assert (debt.due, debt.recovered) == (50_000, 2 * 6 * 100)
    assert balances(service, cash_of(influencer))[cash_of(influencer)] == 0
