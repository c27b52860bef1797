"""The commission clawback rules, on facts built by hand (no database).

Eligibility (check_clawback), the arithmetic of what each refund owes back (line_due,
clawback_lines), where the buyer's money comes from (split_refund_payment), what a payee gives
now (recoverable_now) and how money reaching a payee pays its debts (settle_debts).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from server.domain import rules
from server.domain.model import (
    PLATFORM_COMMISSION,
    AccountKind,
    AccountRef,
    ClawbackLine,
    CommissionLine,
    LineState,
    Order,
    OrderKind,
    PayeeKind,
    Policy,
    ReasonCode,
    RefundPayment,
    Shop,
    ShopStatus,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)

DESIGNATED = "home-appliances"
POLICY = Policy(version="unit-test", designated_categories=frozenset({DESIGNATED, "furniture"}))

COMPLETED_AT = NOW - 30 * DAY
WALLET_OPENED_AT = NOW - 400 * DAY
PAID = 10_000  # 100.00 yuan, in fen


def make_order(**changes) -> Order:
    """A designated-category order created after the wallet opened, completed 30 days ago."""
    order = Order(
        order_id="order-1",
        shop_id="shop-1",
        buyer_id="buyer-1",
        kind=OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id=DESIGNATED,
        paid_amount=PAID,
        created_at=COMPLETED_AT - 5 * DAY,
        completed_at=COMPLETED_AT,
        after_sales_ends_at=COMPLETED_AT + 7 * DAY,
        commission_lines=(
            CommissionLine(PayeeKind.INFLUENCER, "influencer-1", 2_000),
            CommissionLine(PayeeKind.GROUP_LEADER, "leader-1", 500),
            CommissionLine(PayeeKind.AFFILIATE, "affiliate-1", 300),
            CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "platform", 100),
        ),
    )
    return dataclasses.replace(order, **changes)


def make_shop(wallet_opened_at: datetime | None = WALLET_OPENED_AT) -> Shop:
    return Shop("shop-1", "Shop One", ShopStatus.NORMAL, wallet_opened_at)


def codes(
    order: Order | None = None,
    shop: Shop | None = None,
    started_at: datetime = NOW,
    late: bool = True,
    policy: Policy = POLICY,
    entry_opened_at: datetime | None = None,
) -> tuple[ReasonCode, ...]:
    """The reason codes for a refund started at `started_at`; a late one comes through an entry
    opened at `entry_opened_at` (by default the moment the refund started)."""
    violations = rules.check_clawback(
        order if order is not None else make_order(),
        shop if shop is not None else make_shop(),
        started_at,
        (entry_opened_at or started_at) if late else None,
        policy,
    )
    assert all(v.description.strip() for v in violations)
    return tuple(v.code for v in violations)


def a_line(
    kind: PayeeKind = PayeeKind.INFLUENCER, due: int = 1_000, recovered: int = 0
) -> ClawbackLine:
    return ClawbackLine(
        line_no=0,
        payee_kind=kind,
        payee_id="payee-1",
        commission=5_000,
        due=due,
        recovered=recovered,
    )


# --- Eligibility ----------------------------------------------------------------------------------


def test_a_late_refund_of_a_designated_order_within_the_window_is_eligible():
    assert codes() == ()


SINGLE_FAILURES = [
    pytest.param(
        {"order": make_order(category_id="toys")},
        ReasonCode.CATEGORY_NOT_DESIGNATED,
        id="category-not-designated",
    ),
    pytest.param(
        {"order": make_order(category_id="")},
        ReasonCode.CATEGORY_NOT_DESIGNATED,
        id="no-category-at-all",
    ),
    pytest.param(
        {"order": make_order(created_at=WALLET_OPENED_AT - DAY)},
        ReasonCode.ORDER_BEFORE_WALLET_OPENED,
        id="order-created-the-day-before-the-wallet-opened",
    ),
    pytest.param(
        {"shop": make_shop(wallet_opened_at=None)},
        ReasonCode.ORDER_BEFORE_WALLET_OPENED,
        id="shop-has-no-wallet",
    ),
    pytest.param(
        {"started_at": COMPLETED_AT + 121 * DAY},
        ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,
        id="refund-started-121-days-after-completion",
    ),
    pytest.param(
        {"order": make_order(completed_at=None, after_sales_ends_at=None)},
        ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,
        id="trade-never-completed",
    ),
    pytest.param(
        {"late": False},
        ReasonCode.NOT_A_LATE_REFUND,
        id="refund-not-through-a-reopened-entry",
    ),
]


@pytest.mark.parametrize(("facts", "code"), SINGLE_FAILURES)
def test_each_unmet_condition_is_reported_with_its_own_reason_code(facts, code):
    assert codes(**facts) == (code,)


def test_a_refund_started_before_its_entry_was_opened_is_not_a_late_refund():
    opened = NOW - DAY
    assert codes(started_at=opened - SECOND, entry_opened_at=opened) == (
        ReasonCode.NOT_A_LATE_REFUND,
    )
    assert codes(started_at=opened, entry_opened_at=opened) == ()


def test_every_unmet_condition_is_reported_at_once_in_the_order_of_the_product_brief():
    order = make_order(category_id="toys", created_at=WALLET_OPENED_AT - SECOND)

    assert codes(order=order, started_at=COMPLETED_AT + 200 * DAY, late=False) == (
        ReasonCode.CATEGORY_NOT_DESIGNATED,
        ReasonCode.ORDER_BEFORE_WALLET_OPENED,
        ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,
        ReasonCode.NOT_A_LATE_REFUND,
    )


def test_a_shop_without_a_wallet_is_reported_along_with_the_other_failures():
    assert codes(order=make_order(category_id="toys"), shop=make_shop(None), late=False) == (
        ReasonCode.CATEGORY_NOT_DESIGNATED,
        ReasonCode.ORDER_BEFORE_WALLET_OPENED,
        ReasonCode.NOT_A_LATE_REFUND,
    )


@pytest.mark.parametrize("category", sorted(POLICY.designated_categories))
def test_every_category_on_the_policy_list_is_designated(category):
    assert codes(order=make_order(category_id=category)) == ()


def test_the_designated_categories_come_from_the_policy():
    policy = Policy(version="toys-only", designated_categories=frozenset({"toys"}))

    assert codes(order=make_order(category_id="toys"), policy=policy) == ()
    assert codes(policy=policy) == (ReasonCode.CATEGORY_NOT_DESIGNATED,)


def test_no_category_is_designated_under_an_empty_list():
    assert codes(policy=Policy(version="none")) == (ReasonCode.CATEGORY_NOT_DESIGNATED,)


# --- Boundaries: the wallet's opening moment and the 120-day window -------------------------------


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        pytest.param(WALLET_OPENED_AT + DAY, (), id="created-a-day-after"),
        pytest.param(WALLET_OPENED_AT + SECOND, (), id="created-a-second-after"),
        pytest.param(WALLET_OPENED_AT, (), id="created-at-the-very-second-the-wallet-opened"),
        pytest.param(
            WALLET_OPENED_AT - SECOND,
            (ReasonCode.ORDER_BEFORE_WALLET_OPENED,),
            id="created-a-second-before",
        ),
    ],
)
def test_an_order_created_at_or_after_the_wallet_opened_is_eligible(created_at, expected):
    assert codes(order=make_order(created_at=created_at)) == expected


@pytest.mark.parametrize(
    ("since_completion", "expected"),
    [
        pytest.param(0 * DAY, (), id="started-at-completion"),
        pytest.param(120 * DAY - SECOND, (), id="a-second-inside"),
        pytest.param(120 * DAY, (), id="exactly-120-days-is-inside"),
        pytest.param(
            120 * DAY + SECOND,
            (ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,),
            id="120-days-and-one-second-is-outside",
        ),
        pytest.param(365 * DAY, (ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,), id="a-year-later"),
    ],
)
def test_the_clawback_window_runs_120_days_from_completion_to_the_refunds_start(
    since_completion, expected
):
    assert codes(started_at=COMPLETED_AT + since_completion) == expected


def test_the_window_is_measured_to_the_refunds_start_not_to_now():
    # Started on day 120, paid (and recorded) much later: still inside.
    order = make_order(completed_at=NOW - 200 * DAY, created_at=NOW - 210 * DAY)

    assert codes(order=order, started_at=NOW - 80 * DAY) == ()


def test_the_clawback_window_comes_from_the_policy():
    policy = dataclasses.replace(POLICY, clawback_window=30 * DAY)

    assert codes(started_at=COMPLETED_AT + 30 * DAY, policy=policy) == ()
    assert codes(started_at=COMPLETED_AT + 30 * DAY + SECOND, policy=policy) == (
        ReasonCode.REFUND_OUTSIDE_CLAWBACK_WINDOW,
    )


# --- The arithmetic: what each refund owes back of each line --------------------------------------


@pytest.mark.parametrize(
    ("commission", "paid", "refunds", "dues"),
    [
        # 999 * 1 // 1000 = 0; 999 * 2 // 1000 = 1; 999 * 1000 // 1000 = 999.
        pytest.param(999, 1_000, [1, 1, 998], [0, 1, 998], id="999-over-1000-in-1-1-998"),
        # 100 // 3 = 33; 200 // 3 = 66; 300 // 3 = 100: rounding each third would give 99 or 102.
        pytest.param(100, 3, [1, 1, 1], [33, 33, 34], id="100-in-thirds"),
        # 1 * 5000 // 10000 = 0; then 1.
        pytest.param(1, 10_000, [5_000, 5_000], [0, 1], id="one-fen-in-halves"),
        pytest.param(2_000, 10_000, [10_000], [2_000], id="one-full-refund"),
        pytest.param(2_000, 10_000, [2_500, 2_500, 5_000], [500, 500, 1_000], id="exact-quarters"),
        # 333 * 3333 // 10000 = 110; 333 * 6666 // 10000 = 221; then 333.
        pytest.param(333, 10_000, [3_333, 3_333, 3_334], [110, 111, 112], id="333-in-thirds"),
        pytest.param(10_000, 10_000, [1, 9_999], [1, 9_999], id="commission-equal-to-paid"),
        pytest.param(0, 10_000, [4_000, 6_000], [0, 0], id="no-commission"),
        # A partial sequence that stops short recovers at most its proportional share.
        pytest.param(999, 1_000, [500, 1], [499, 1], id="partial-sequence-stops-short"),
    ],
)
def test_each_refund_owes_the_difference_of_the_rounded_down_cumulative_shares(
    commission, paid, refunds, dues
):
    got, before = [], 0
    for amount in refunds:
        got.append(rules.line_due(commission, paid, before, before + amount))
        before += amount

    assert got == dues
    assert sum(got) <= commission


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([10_000], id="in-one"),
        pytest.param([1] * 7 + [9_993], id="seven-fen-then-the-rest"),
        pytest.param([3_333, 3_333, 3_334], id="in-thirds"),
        pytest.param([9_999, 1], id="all-but-one-fen-then-one-fen"),
        pytest.param([1_234, 4_321, 17, 4_428], id="uneven"),
    ],
)
@pytest.mark.parametrize("commission", [0, 1, 7, 999, 3_333, 10_000])
def test_a_full_refund_in_parts_recovers_exactly_what_one_full_refund_would(parts, commission):
    before, total = 0, 0
    for amount in parts:
        total += rules.line_due(commission, PAID, before, before + amount)
        before += amount

    assert before == PAID
    assert total == rules.line_due(commission, PAID, 0, PAID) == commission


def test_the_clawback_has_one_line_per_commission_line_with_its_payee_and_due():
    order = make_order(paid_amount=10_000)

    lines = rules.clawback_lines(order, refunded_before=0, refunded_after=2_500)

    assert [(ln.line_no, ln.payee_kind, ln.payee_id, ln.commission, ln.due) for ln in lines] == [
        (0, PayeeKind.INFLUENCER, "influencer-1", 2_000, 500),
        (1, PayeeKind.GROUP_LEADER, "leader-1", 500, 125),
        (2, PayeeKind.AFFILIATE, "affiliate-1", 300, 75),
        (3, PayeeKind.TECHNICAL_SERVICE_FEE, "platform", 100, 25),
    ]
    assert all(ln.recovered == 0 and ln.state is LineState.OUTSTANDING for ln in lines)


def test_the_lines_of_a_later_refund_account_for_what_was_refunded_before():
    order = make_order(
        commission_lines=(CommissionLine(PayeeKind.INFLUENCER, "i", 999),), paid_amount=1_000
    )

    (first,) = rules.clawback_lines(order, 0, 1)
    (second,) = rules.clawback_lines(order, 1, 2)
    (third,) = rules.clawback_lines(order, 2, 1_000)

    assert (first.due, second.due, third.due) == (0, 1, 998)


def test_an_order_without_commission_lines_has_no_clawback_lines():
    assert rules.clawback_lines(make_order(commission_lines=()), 0, PAID) == ()


def test_the_fee_is_taken_from_the_platform_commission_account_and_the_rest_from_cash():
    lines = rules.clawback_lines(make_order(), 0, PAID)

    assert [ln.account for ln in lines] == [
        AccountRef(AccountKind.CASH, "influencer-1"),
        AccountRef(AccountKind.CASH, "leader-1"),
        AccountRef(AccountKind.CASH, "affiliate-1"),
        PLATFORM_COMMISSION,
    ]


# --- A refund may not exceed what is left ---------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "amount", "refused"),
    [
        pytest.param(make_order(), PAID, False, id="the-whole-paid-amount"),
        pytest.param(make_order(), PAID + 1, True, id="one-fen-more-than-paid"),
        pytest.param(make_order(recorded_refunded_amount=4_000), 6_000, False, id="what-is-left"),
        pytest.param(make_order(recorded_refunded_amount=4_000), 6_001, True, id="one-fen-over"),
        pytest.param(
            make_order(prior_refunded_amount=3_000, recorded_refunded_amount=2_000),
            5_001,
            True,
            id="prior-and-recorded-refunds-both-count",
        ),
        pytest.param(make_order(recorded_refunded_amount=PAID), 1, True, id="fully-refunded"),
    ],
)
def test_a_refund_may_take_at_most_what_is_left_to_refund(order, amount, refused):
    violations = rules.check_refund(order, amount)

    expected = (ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE,) if refused else ()
    assert tuple(v.code for v in violations) == expected


# --- Paying the buyer: the wallet first, then the deposit ----------------------------------------


@pytest.mark.parametrize(
    ("amount", "wallet", "payment"),
    [
        pytest.param(500, 1_000, RefundPayment(500, 0), id="wallet-covers"),
        pytest.param(500, 500, RefundPayment(500, 0), id="wallet-covers-exactly"),
        pytest.param(500, 200, RefundPayment(200, 300), id="wallet-short-deposit-pays-the-rest"),
        pytest.param(500, 0, RefundPayment(0, 500), id="empty-wallet-all-from-deposit"),
        pytest.param(500, -100, RefundPayment(0, 500), id="negative-wallet-all-from-deposit"),
    ],
)
def test_the_buyer_is_paid_from_the_wallet_first_and_the_rest_from_the_deposit(
    amount, wallet, payment
):
    got = rules.split_refund_payment(amount, wallet)

    assert got == payment
    assert got.from_wallet + got.from_deposit == amount


# --- What a payee gives now -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "balance", "taken"),
    [
        pytest.param(a_line(due=1_000), 5_000, 1_000, id="enough-cash-gives-the-whole-due"),
        pytest.param(a_line(due=1_000), 1_000, 1_000, id="exactly-enough"),
        pytest.param(a_line(due=1_000), 300, 300, id="short-payee-gives-what-it-has"),
        pytest.param(a_line(due=1_000), 0, 0, id="empty-cash-gives-nothing"),
        pytest.param(a_line(due=1_000), -50, 0, id="never-below-zero"),
        pytest.param(a_line(due=1_000, recovered=700), 5_000, 300, id="only-what-is-outstanding"),
        pytest.param(a_line(due=1_000, recovered=1_000), 5_000, 0, id="nothing-when-recovered"),
        pytest.param(a_line(due=0), 5_000, 0, id="nothing-when-nothing-is-due"),
        pytest.param(a_line(PayeeKind.GROUP_LEADER, due=400), 100, 100, id="group-leader-short"),
        pytest.param(a_line(PayeeKind.AFFILIATE, due=400), 0, 0, id="affiliate-empty"),
        pytest.param(
            a_line(PayeeKind.TECHNICAL_SERVICE_FEE, due=1_000), 0, 1_000, id="fee-in-full-from-zero"
        ),
        pytest.param(
            a_line(PayeeKind.TECHNICAL_SERVICE_FEE, due=1_000),
            -5_000,
            1_000,
            id="fee-in-full-when-negative",
        ),
        pytest.param(
            a_line(PayeeKind.TECHNICAL_SERVICE_FEE, due=1_000, recovered=400),
            0,
            600,
            id="fee-outstanding-part",
        ),
    ],
)
def test_a_payee_gives_what_it_has_and_the_platform_its_fee_in_full(line, balance, taken):
    assert rules.recoverable_now(line, balance) == taken


@pytest.mark.parametrize(
    ("due", "recovered", "state"),
    [
        pytest.param(1_000, 0, LineState.OUTSTANDING, id="nothing-recovered"),
        pytest.param(1_000, 1, LineState.PARTIAL, id="one-fen-recovered"),
        pytest.param(1_000, 999, LineState.PARTIAL, id="one-fen-outstanding"),
        pytest.param(1_000, 1_000, LineState.RECOVERED, id="all-recovered"),
        pytest.param(0, 0, LineState.RECOVERED, id="nothing-due"),
    ],
)
def test_a_line_is_outstanding_partial_or_recovered(due, recovered, state):
    line = a_line(due=due, recovered=recovered)

    assert line.state is state
    assert line.recovered + line.outstanding == line.due


def test_a_payee_whose_older_debts_are_still_being_paid_gives_a_new_line_nothing_yet():
    owing = dataclasses.replace(a_line(due=300), line_no=0, payee_id="kol-owing")
    other = dataclasses.replace(a_line(due=200), line_no=1, payee_id="kol-clear")
    fee = dataclasses.replace(
        a_line(PayeeKind.TECHNICAL_SERVICE_FEE, due=50), line_no=2, payee_id=""
    )
    balances = {owing.account: 10_000, other.account: 10_000}

    lines, left = rules.recover([owing, other, fee], balances, owing={owing.account})

    # Its cash is its older debts' first: the line waits behind them, outstanding.
    assert [(ln.payee_id, ln.recovered) for ln in lines] == [
        ("kol-owing", 0),
        ("kol-clear", 200),
        ("", 50),
    ]
    assert left == {owing.account: 10_000, other.account: 9_800}


# --- Money reaching a payee pays its debts, oldest first ------------------------------------------


@pytest.mark.parametrize(
    ("balance", "debts", "paid"),
    [
        pytest.param(100, [30, 50, 40], [30, 50, 20], id="oldest-first-the-newest-waits"),
        pytest.param(80, [30, 50, 40], [30, 50, 0], id="exactly-the-two-oldest"),
        pytest.param(10, [30, 50], [10, 0], id="not-even-the-oldest-in-full"),
        pytest.param(1_000, [30, 50, 40], [30, 50, 40], id="enough-for-all"),
        pytest.param(0, [30, 50], [0, 0], id="nothing-arrived"),
        pytest.param(-20, [30, 50], [0, 0], id="negative-balance-pays-nothing"),
        pytest.param(100, [], [], id="no-debts"),
    ],
)
def test_money_reaching_a_payee_pays_its_debts_oldest_first(balance, debts, paid):
    got = rules.settle_debts(balance, debts)

    assert got == paid
    assert sum(got) <= max(balance, 0)
    assert all(0 <= g <= d for g, d in zip(got, debts, strict=True))
