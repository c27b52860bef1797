"""The clawback arithmetic and the ledger, as properties (hypothesis).

First the pure arithmetic of the clawback; then random orders, commissions, balances
and sequences of partial late refunds and fund postings, played through the service on SQLite and
PostgreSQL, with the ledger and every clawback checked after every step.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from server.domain import rules
from server.domain.errors import InvalidArgument
from server.domain.model import (
    PLATFORM_COMMISSION,
    ClawbackState,
    CommissionLine,
    LineState,
    Order,
    OrderKind,
    PayeeKind,
    RefundClawback,
    TransferKind,
)
from tests.conftest import T0
from tests.property import (
    a_late_order,
    assert_ledger_is_sound,
    assert_lines_are_consistent,
    balances,
    cash_of,
    deposit_of,
    fresh,
    post,
    wallet_of,
)

MAX_PAID = 10**9

# --- The pure arithmetic -------------------------------------------------------------------------


@st.composite
def orders_and_refunds(draw, full: bool | None = None):
    """(paid, commissions with sum <= paid, partial refunds with sum <= paid); with full=True the
    refunds add up to paid exactly."""
    paid = draw(st.integers(1, MAX_PAID))
    commissions = []
    left = paid
    for _ in range(draw(st.integers(0, 5))):
        if left == 0:
            break
        amount = draw(st.integers(1, left))
        commissions.append(amount)
        left -= amount
    refunds = []
    left = paid
    for _ in range(draw(st.integers(0, 8))):
        if left == 0:
            break
        amount = draw(st.integers(1, left))
        refunds.append(amount)
        left -= amount
    if full is None:
        full = draw(st.booleans())
    if full and left:
        refunds.append(left)
    return paid, commissions, refunds


def dues_of(commission: int, paid: int, refunds: list[int]) -> list[int]:
    dues, before = [], 0
    for amount in refunds:
        dues.append(rules.line_due(commission, paid, before, before + amount))
        before += amount
    return dues


@given(orders_and_refunds())
def test_partial_refunds_never_recover_more_than_the_commission(case):
    paid, commissions, refunds = case

    for commission in commissions:
        dues = dues_of(commission, paid, refunds)
        assert all(due >= 0 for due in dues)
        assert sum(dues) <= commission


@given(orders_and_refunds(full=True))
def test_refunding_everything_in_parts_recovers_exactly_the_commission(case):
    paid, commissions, refunds = case
    assert sum(refunds) == paid

    for commission in commissions:
        dues = dues_of(commission, paid, refunds)
        assert sum(dues) == commission == rules.line_due(commission, paid, 0, paid)


@given(orders_and_refunds())
def test_each_refund_owes_at_least_its_rounded_down_share_and_at_most_one_fen_more(case):
    paid, commissions, refunds = case

    for commission in commissions:
        for amount, due in zip(refunds, dues_of(commission, paid, refunds), strict=True):
            # |due - commission * amount / paid| < 1, in integers.
            assert abs(due * paid - commission * amount) < paid


@given(orders_and_refunds())
def test_the_clawback_lines_are_the_line_dues_of_the_orders_commission_lines(case):
    paid, commissions, refunds = case
    order = Order(
        order_id="order-1",
        shop_id="shop-1",
        buyer_id="buyer-1",
        kind=OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id="furniture",
        paid_amount=paid,
        created_at=T0,
        completed_at=T0,
        after_sales_ends_at=T0,
        commission_lines=tuple(
            CommissionLine(PayeeKind.INFLUENCER, f"p{i}", c) for i, c in enumerate(commissions)
        ),
    )
    before = 0
    for amount in refunds:
        lines = rules.clawback_lines(order, before, before + amount)
        assert [line.due for line in lines] == [
            rules.line_due(c, paid, before, before + amount) for c in commissions
        ]
        before += amount


# --- Through the service, on both databases ------------------------------------------------------

SERVICE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

PAYEES_PER_ORDER = 3
MAX_STEPS = 6


def draw_balance(data, label: str, up_to: int) -> int:
    return data.draw(st.one_of(st.just(0), st.integers(1, up_to)), label=label)


class Played:
    """One order played through the service, with what the test expects of its money."""

    def __init__(self, service, store, data) -> None:
        self.service, self.store = service, store
        paid = data.draw(st.integers(1, MAX_PAID), label="paid")
        payees = [fresh("payee") for _ in range(PAYEES_PER_ORDER)]
        lines, left = [], paid
        for _ in range(data.draw(st.integers(0, 5), label="number of commission lines")):
            if left == 0:
                break
            kind = data.draw(st.sampled_from(list(PayeeKind)), label="payee kind")
            payee = (
                ""
                if kind is PayeeKind.TECHNICAL_SERVICE_FEE
                else data.draw(st.sampled_from(payees))
            )
            amount = data.draw(st.integers(1, left), label="commission")
            lines.append(CommissionLine(kind, payee, amount))
            left -= amount
        wallet = draw_balance(data, "wallet", 2 * paid)
        deposit = draw_balance(data, "deposit", 2 * paid)
        if max(wallet, deposit) < paid:
            deposit = paid  # the entry opens only when the wallet or the deposit covers the order
        self.cash = {p: draw_balance(data, f"cash of {p}", paid) for p in payees}
        for payee, amount in self.cash.items():
            post(service, cash_of(payee), amount)
        self.platform_before = balances(service, PLATFORM_COMMISSION)[PLATFORM_COMMISSION]
        self.order = a_late_order(
            service, paid=paid, commission_lines=lines, wallet=wallet, deposit=deposit
        )
        # Once the entry is open, the merchant may take money out again: the deposit may then
        # be too small for the refunds and go below zero.
        self.wallet = wallet - data.draw(st.integers(0, wallet), label="wallet withdrawn")
        self.deposit = deposit - data.draw(st.integers(0, deposit), label="deposit withdrawn")
        post(service, wallet_of(self.order.shop_id), self.wallet - wallet)
        post(service, deposit_of(self.order.shop_id), self.deposit - deposit)
        self.payees = payees
        self.clawbacks: list[RefundClawback] = []
        self.refunded = 0
        self.paid_from_wallet = 0

    # --- Steps

    def refund(self, amount: int) -> None:
        wallet_before = balances(self.service, wallet_of(self.order.shop_id))
        refund = self.order.refund(amount, self.service)
        preview = self.service.preview_clawback(self.order.order_id, amount, refund.started_at)
        clawback = self.service.record_refund(refund)
        # The preview showed what the refund then recovered, and where the buyer's money came from.
        assert preview.lines == clawback.lines
        assert preview.payment == clawback.payment
        assert clawback.eligible, clawback.reasons
        assert clawback.state is not ClawbackState.NOT_ELIGIBLE
        assert (clawback.refunded_before, clawback.refunded_after) == (
            self.refunded,
            self.refunded + amount,
        )
        assert clawback.payment == rules.split_refund_payment(
            amount, wallet_before[wallet_of(self.order.shop_id)]
        )
        assert [line.commission for line in clawback.lines] == [
            line.amount for line in self.order.commission_lines
        ]
        self.refunded += amount
        self.paid_from_wallet += clawback.payment.from_wallet
        self.deposit -= clawback.payment.from_deposit
        self.clawbacks.append(clawback)

    def funds(self, payee: str, amount: int) -> None:
        if self.outstanding_of(payee):
            event("funds reach a payee in debt")
        post(self.service, cash_of(payee), amount)
        self.cash[payee] += amount

    # --- What must hold after every step

    def reread(self) -> list[RefundClawback]:
        self.clawbacks = [
            self.service.get_clawback(clawback_id=c.clawback_id) for c in self.clawbacks
        ]
        return self.clawbacks

    def recovered_from(self, payee: str) -> int:
        return sum(
            line.recovered
            for c in self.clawbacks
            for line in c.lines
            if line.payee_kind is not PayeeKind.TECHNICAL_SERVICE_FEE and line.payee_id == payee
        )

    def outstanding_of(self, payee: str) -> int:
        return sum(
            line.outstanding
            for c in self.clawbacks
            for line in c.lines
            if line.payee_kind is not PayeeKind.TECHNICAL_SERVICE_FEE and line.payee_id == payee
        )

    def check(self) -> None:
        assert_ledger_is_sound(self.store)
        clawbacks = self.reread()
        for clawback in clawbacks:
            assert_lines_are_consistent(clawback)

        if any(c.state is not ClawbackState.RECOVERED for c in clawbacks):
            event("a payee is short")
        if self.deposit < 0:
            event("the deposit went below zero")

        # Per commission line, the dues of all refunds never exceed the commission.
        for i, line in enumerate(self.order.commission_lines):
            total_due = sum(c.lines[i].due for c in clawbacks)
            assert total_due <= line.amount
            if self.refunded == self.order.paid:
                event("the order was refunded in full")
                assert total_due == line.amount

        # Every fen recovered went from the payee (or the platform) to the merchant's wallet.
        recovered = sum(c.recovered for c in clawbacks)
        fees = sum(
            line.recovered
            for c in clawbacks
            for line in c.lines
            if line.payee_kind is PayeeKind.TECHNICAL_SERVICE_FEE
        )
        shop = self.order.shop_id
        expected = {
            wallet_of(shop): self.wallet - self.paid_from_wallet + recovered,
            deposit_of(shop): self.deposit,
            PLATFORM_COMMISSION: self.platform_before - fees,
            **{cash_of(p): self.cash[p] - self.recovered_from(p) for p in self.payees},
        }
        assert balances(self.service, *expected) == expected

        # A payee with money left owes nothing; its debts are paid oldest first.
        for payee in self.payees:
            if self.outstanding_of(payee):
                assert expected[cash_of(payee)] == 0
            states = "".join(
                {LineState.RECOVERED: "R", LineState.PARTIAL: "P", LineState.OUTSTANDING: "O"}[
                    line.state
                ]
                for c in clawbacks
                for line in c.lines
                if line.payee_kind is not PayeeKind.TECHNICAL_SERVICE_FEE
                and line.payee_id == payee
                and line.due > 0
            )
            assert re.fullmatch("R*P?O*", states), f"debts of {payee} not paid oldest first"

        # The state kept for listing is the state the lines add up to.
        for state in (ClawbackState.RECOVERED, ClawbackState.PARTIAL, ClawbackState.OUTSTANDING):
            listed = self.service.list_clawbacks(
                shop_id=shop, state=state, start=None, end=None, page_size=100
            ).items
            assert {c.clawback_id for c in listed} == {
                c.clawback_id for c in clawbacks if c.state is state
            }


@SERVICE_SETTINGS
@given(data=st.data())
def test_random_late_refunds_and_fund_postings_keep_the_ledger_and_the_clawbacks_exact(
    service, store, data
):
    played = Played(service, store, data)
    played.check()

    refund_everything = data.draw(st.booleans(), label="refund everything in the end")
    for _ in range(data.draw(st.integers(0, MAX_STEPS), label="steps")):
        left = played.order.paid - played.refunded
        if left and data.draw(st.booleans(), label="a refund (or else funds)"):
            played.refund(data.draw(st.integers(1, left), label="refund"))
        else:
            payee = data.draw(st.sampled_from(played.payees), label="funds to")
            played.funds(payee, data.draw(st.integers(1, played.order.paid), label="funds"))
        played.check()
    if refund_everything and played.refunded < played.order.paid:
        played.refund(played.order.paid - played.refunded)
        played.check()

    # Enough money reaches every payee: every debt is paid, with no manual step.
    for payee in played.payees:
        owed = played.outstanding_of(payee)
        if owed:
            played.funds(payee, owed + data.draw(st.integers(0, 10), label="extra"))
    played.check()
    assert all(c.state is ClawbackState.RECOVERED for c in played.clawbacks)


# --- The same refund reported twice -------------------------------------------------------------


@pytest.fixture
def short_payee_order(service):
    """Paid 100.00; commissions 20.00 to an influencer with 5.00 of cash, 5.00 to a group leader
    with plenty, 3.00 of technical service fee. The wallet holds 30.00, the deposit 100.00."""
    influencer, leader = fresh("influencer"), fresh("leader")
    post(service, cash_of(influencer), 500)
    post(service, cash_of(leader), 100_000)
    order = a_late_order(
        service,
        paid=10_000,
        commission_lines=[
            CommissionLine(PayeeKind.INFLUENCER, influencer, 2_000),
            CommissionLine(PayeeKind.GROUP_LEADER, leader, 500),
            CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 300),
        ],
        wallet=3_000,
        deposit=10_000,
    )
    return order, influencer, leader


def transfers_of(service, account) -> list:
    page = service.list_transfers(account, 1_000)
    assert not page.next_page_token
    return page.items


def test_the_same_refund_recorded_twice_is_one_refund_and_one_clawback(
    service, store, short_payee_order
):
    order, influencer, leader = short_payee_order
    refund = order.refund(5_000, service)

    first = service.record_refund(refund)
    after_first = assert_ledger_is_sound(store)
    again = service.record_refund(refund)

    assert again == first
    assert assert_ledger_is_sound(store) == after_first
    assert [(line.due, line.recovered) for line in first.lines] == [
        (1_000, 500),
        (250, 250),
        (150, 150),
    ]
    assert first.state is ClawbackState.PARTIAL
    assert (first.payment.from_wallet, first.payment.from_deposit) == (3_000, 2_000)
    assert service.get_clawback(refund_id=refund.refund_id) == first
    wallet = transfers_of(service, wallet_of(order.shop_id))
    assert [t.kind for t in wallet].count(TransferKind.REFUND_PAYMENT) == 1
    assert [t.kind for t in wallet].count(TransferKind.CLAWBACK) == 3
    assert balances(service, wallet_of(order.shop_id), deposit_of(order.shop_id)) == {
        wallet_of(order.shop_id): 3_000 - 3_000 + 500 + 250 + 150,
        deposit_of(order.shop_id): 10_000 - 2_000,
    }


def test_the_same_refund_id_with_another_amount_is_an_invalid_argument_and_writes_nothing(
    service, store, short_payee_order
):
    order, _, _ = short_payee_order
    refund = order.refund(5_000, service)
    first = service.record_refund(refund)
    before = assert_ledger_is_sound(store)

    with pytest.raises(InvalidArgument) as refused:
        service.record_refund(order.refund(4_000, service, refund_id=refund.refund_id))

    assert [field for field, _ in refused.value.violations] == ["refund_id"]
    assert assert_ledger_is_sound(store) == before
    assert service.get_clawback(refund_id=refund.refund_id) == first


def test_a_refund_whose_share_of_a_small_commission_rounds_down_to_zero_is_recorded(service, store):
    influencer, leader = fresh("influencer"), fresh("leader")
    post(service, cash_of(leader), 10_000)
    order = a_late_order(
        service,
        paid=10_000,
        commission_lines=[
            CommissionLine(PayeeKind.INFLUENCER, influencer, 1),  # 1 * 100 // 10_000 = 0
            CommissionLine(PayeeKind.GROUP_LEADER, leader, 2_000),
        ],
        wallet=10_000,
    )

    clawback = service.record_refund(order.refund(100, service))

    assert [(line.due, line.recovered) for line in clawback.lines] == [(0, 0), (20, 20)]
    assert clawback.state is ClawbackState.RECOVERED
    assert_ledger_is_sound(store)
