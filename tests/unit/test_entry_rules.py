"""The entry rules, table by table, on facts built by hand (no database, no gRPC)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from server.domain import rules
from server.domain.model import (
    CommissionLine,
    EligibilityFacts,
    Entry,
    EntryState,
    Order,
    OrderKind,
    PayeeKind,
    Policy,
    ReasonCode,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)

DEFAULT_POLICY = Policy(version="unit-test")

SHOP_ID = "shop-1"
OTHER_SHOP_ID = "shop-2"
PAID = 10_000  # 100.00 yuan, in fen


def make_order(**changes) -> Order:
    """An ordinary order completed 30 days ago; its regular period ended 23 days ago."""
    completed_at = NOW - 30 * DAY
    order = Order(
        order_id="order-1",
        shop_id=SHOP_ID,
        buyer_id="buyer-1",
        kind=OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id="appliances",
        paid_amount=PAID,
        created_at=completed_at - 5 * DAY,
        completed_at=completed_at,
        after_sales_ends_at=completed_at + 7 * DAY,
    )
    return dataclasses.replace(order, **changes)


def partly_refunded() -> Order:
    """Paid 100.00, 30.00 refunded before this service, 20.00 through it: 50.00 is left."""
    return make_order(
        paid_amount=10_000, prior_refunded_amount=3_000, recorded_refunded_amount=2_000
    )


def completed(ago: timedelta) -> dict:
    """Order fields for a trade completed `ago` before NOW, its regular period long over."""
    completed_at = NOW - ago
    return {
        "created_at": completed_at - 5 * DAY,
        "completed_at": completed_at,
        "after_sales_ends_at": completed_at + 7 * DAY,
    }


def make_shop(status: ShopStatus = ShopStatus.NORMAL) -> Shop:
    return Shop(shop_id=SHOP_ID, name="Shop One", status=status, wallet_opened_at=NOW - 400 * DAY)


def make_operator(role: StaffRole = StaffRole.OWNER, shop_id: str = SHOP_ID) -> Staff:
    return Staff(
        staff_id=f"staff-{role.value.lower()}-{shop_id}", shop_id=shop_id, role=role, name="someone"
    )


def make_entry(
    state: EntryState = EntryState.OPEN,
    expires_at: datetime | None = None,
    opened_at: datetime | None = None,
) -> Entry:
    expires_at = expires_at if expires_at is not None else NOW + 24 * timedelta(hours=1)
    return Entry(
        entry_id="entry-1",
        order_id="order-1",
        shop_id=SHOP_ID,
        state=state,
        opened_at=opened_at if opened_at is not None else expires_at - 72 * timedelta(hours=1),
        expires_at=expires_at,
        operator_id="staff-owner",
        note="agreed with the buyer in chat",
        policy_version="unit-test",
    )


def make_facts(
    *,
    order: Order | None = None,
    shop: Shop | None = None,
    operator: Staff | None = None,
    wallet: int = PAID,
    deposit: int = 0,
    stored_open_entry: Entry | None = None,
    now: datetime = NOW,
) -> EligibilityFacts:
    return EligibilityFacts(
        now=now,
        order=order if order is not None else make_order(),
        shop=shop if shop is not None else make_shop(),
        operator=operator if operator is not None else make_operator(),
        wallet_balance=wallet,
        deposit_balance=deposit,
        stored_open_entry=stored_open_entry,
    )


def codes_of(facts: EligibilityFacts, policy: Policy = DEFAULT_POLICY) -> tuple[ReasonCode, ...]:
    return rules.check_entry(facts, policy).codes


# --- The baseline ----------------------------------------------------------------------------


def test_an_order_meeting_every_condition_is_eligible():
    decision = rules.check_entry(make_facts(), DEFAULT_POLICY)

    assert decision.eligible
    assert decision.codes == ()
    assert decision.already_open is None
    assert decision.days_since_completion == 30


# --- Each reason code on its own ---------------------------------------------------------------

SINGLE_FAILURES = [
    pytest.param(
        {"order": make_order(**completed(121 * DAY))},
        ReasonCode.COMPLETION_WINDOW_EXCEEDED,
        id="completed-121-days-ago",
    ),
    pytest.param(
        {"order": make_order(completed_at=None, after_sales_ends_at=None)},
        ReasonCode.ORDER_NOT_COMPLETED,
        id="trade-not-completed",
    ),
    pytest.param(
        {"order": make_order(after_sales_ends_at=NOW + 2 * DAY)},
        ReasonCode.WITHIN_AFTER_SALES_PERIOD,
        id="regular-period-still-running",
    ),
    pytest.param(
        {"wallet": 0, "deposit": 0},
        ReasonCode.INSUFFICIENT_GUARANTEE,
        id="no-wallet-no-deposit",
    ),
    pytest.param(
        {"shop": make_shop(ShopStatus.SUSPENDED)},
        ReasonCode.SHOP_NOT_OPERATING,
        id="shop-suspended-for-rectification",
    ),
    pytest.param(
        {"shop": make_shop(ShopStatus.CLOSED)},
        ReasonCode.SHOP_NOT_OPERATING,
        id="shop-closed",
    ),
    pytest.param(
        {"order": make_order(kind=OrderKind.PRESALE)},
        ReasonCode.ORDER_KIND_NOT_SUPPORTED,
        id="deposit-presale-order",
    ),
    pytest.param(
        {"order": make_order(prior_refunded_amount=PAID)},
        ReasonCode.NOTHING_REFUNDABLE,
        id="fully-refunded-before",
    ),
    pytest.param(
        {"order": make_order(recorded_refunded_amount=PAID)},
        ReasonCode.NOTHING_REFUNDABLE,
        id="fully-refunded-through-this-service",
    ),
    pytest.param(
        {"order": make_order(prior_refunded_amount=PAID // 2, recorded_refunded_amount=PAID // 2)},
        ReasonCode.NOTHING_REFUNDABLE,
        id="fully-refunded-in-two-parts",
    ),
    pytest.param(
        {"stored_open_entry": make_entry(expires_at=NOW + DAY)},
        ReasonCode.ENTRY_ALREADY_OPEN,
        id="entry-already-open",
    ),
    pytest.param(
        {"operator": make_operator(StaffRole.CS_AGENT)},
        ReasonCode.OPERATOR_NOT_ALLOWED,
        id="customer-service-agent",
    ),
    pytest.param(
        {"operator": make_operator(StaffRole.FINANCE)},
        ReasonCode.OPERATOR_NOT_ALLOWED,
        id="finance",
    ),
    pytest.param(
        {"operator": make_operator(StaffRole.OPERATIONS)},
        ReasonCode.OPERATOR_NOT_ALLOWED,
        id="operations",
    ),
    pytest.param(
        {"operator": make_operator(StaffRole.OWNER, shop_id=OTHER_SHOP_ID)},
        ReasonCode.OPERATOR_NOT_ALLOWED,
        id="another-shops-main-account",
    ),
]


@pytest.mark.parametrize(("facts", "code"), SINGLE_FAILURES)
def test_each_unmet_condition_is_refused_with_its_reason_code(facts, code):
    decision = rules.check_entry(make_facts(**facts), DEFAULT_POLICY)

    assert not decision.eligible
    assert decision.codes == (code,)
    assert decision.violations[0].description.strip()


@pytest.mark.parametrize(
    "role", [StaffRole.OWNER, StaffRole.ADMIN, StaffRole.CS_ADMIN], ids=lambda r: r.value
)
def test_each_allowed_role_of_the_shop_may_open(role):
    assert codes_of(make_facts(operator=make_operator(role))) == ()


@pytest.mark.parametrize(
    "role", [StaffRole.CS_AGENT, StaffRole.FINANCE, StaffRole.OPERATIONS], ids=lambda r: r.value
)
def test_other_roles_of_the_shop_may_not_open(role):
    assert codes_of(make_facts(operator=make_operator(role))) == (ReasonCode.OPERATOR_NOT_ALLOWED,)


@pytest.mark.parametrize("role", list(StaffRole), ids=lambda r: r.value)
def test_no_account_of_another_shop_may_open_whatever_its_role(role):
    operator = make_operator(role, shop_id=OTHER_SHOP_ID)

    assert codes_of(make_facts(operator=operator)) == (ReasonCode.OPERATOR_NOT_ALLOWED,)


# --- Condition 1: completed at most 120 days ago ------------------------------------------------


def test_completed_exactly_120_days_ago_is_allowed():
    decision = rules.check_entry(
        make_facts(order=make_order(**completed(120 * DAY))), DEFAULT_POLICY
    )

    assert decision.codes == ()
    assert decision.days_since_completion == 120


def test_completed_120_days_and_one_second_ago_is_refused():
    facts = make_facts(order=make_order(**completed(120 * DAY + SECOND)))

    assert codes_of(facts) == (ReasonCode.COMPLETION_WINDOW_EXCEEDED,)
    # Not "completed 120 days ago; within 120 days", which reads as allowed.
    (violation,) = rules.check_entry(facts, DEFAULT_POLICY).violations
    assert violation.description.startswith(
        "the trade completed more than 120 days ago (120 whole days)"
    )


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        pytest.param(0 * DAY, (), id="completed-just-now"),
        pytest.param(120 * DAY - SECOND, (), id="one-second-inside-the-window"),
        pytest.param(120 * DAY, (), id="exactly-at-the-window"),
        pytest.param(
            120 * DAY + MICROSECOND,
            (ReasonCode.COMPLETION_WINDOW_EXCEEDED,),
            id="one-microsecond-past-the-window",
        ),
        pytest.param(
            365 * DAY, (ReasonCode.COMPLETION_WINDOW_EXCEEDED,), id="completed-a-year-ago"
        ),
    ],
)
def test_the_completion_window_is_120_days_inclusive(ago, expected):
    # Keep the regular period over whatever `ago` is, so only condition 1 is in play.
    order = make_order(
        created_at=NOW - ago - DAY, completed_at=NOW - ago, after_sales_ends_at=NOW - ago
    )

    assert codes_of(make_facts(order=order)) == expected


def test_the_completion_window_comes_from_the_policy():
    policy = Policy(version="short", completion_window=timedelta(days=30))

    assert codes_of(make_facts(order=make_order(**completed(30 * DAY))), policy) == ()
    assert codes_of(make_facts(order=make_order(**completed(31 * DAY))), policy) == (
        ReasonCode.COMPLETION_WINDOW_EXCEEDED,
    )


def test_days_since_completion_is_reported_even_when_the_window_is_exceeded():
    decision = rules.check_entry(
        make_facts(order=make_order(**completed(200 * DAY))), DEFAULT_POLICY
    )

    assert decision.days_since_completion == 200


def test_an_order_never_completed_is_not_also_reported_as_out_of_window():
    order = make_order(completed_at=None, after_sales_ends_at=None)

    decision = rules.check_entry(make_facts(order=order), DEFAULT_POLICY)

    assert decision.codes == (ReasonCode.ORDER_NOT_COMPLETED,)
    assert decision.days_since_completion == 0


# --- The regular after-sales period must be over -------------------------------------------------


@pytest.mark.parametrize(
    ("ends_at", "expected"),
    [
        pytest.param(NOW + 3 * DAY, (ReasonCode.WITHIN_AFTER_SALES_PERIOD,), id="ends-in-3-days"),
        pytest.param(NOW + SECOND, (ReasonCode.WITHIN_AFTER_SALES_PERIOD,), id="ends-in-1-second"),
        pytest.param(NOW - SECOND, (), id="ended-1-second-ago"),
        pytest.param(NOW - 20 * DAY, (), id="ended-20-days-ago"),
    ],
)
def test_the_entry_is_only_for_orders_whose_regular_period_is_over(ends_at, expected):
    order = make_order(after_sales_ends_at=ends_at)

    assert codes_of(make_facts(order=order)) == expected


# --- Condition 2: the wallet or the deposit, each on its own -------------------------------------


@pytest.mark.parametrize(
    ("paid", "wallet", "deposit", "enough"),
    [
        pytest.param(100, 100, 0, True, id="wallet-equal-to-refundable-is-enough"),
        pytest.param(100, 0, 100, True, id="deposit-equal-to-refundable-is-enough"),
        pytest.param(100, 100, 100, True, id="both-equal"),
        pytest.param(100, 1_000, 0, True, id="wallet-above"),
        pytest.param(100, 0, 1_000, True, id="deposit-above"),
        pytest.param(100, 99, 0, False, id="wallet-one-fen-short-no-deposit"),
        pytest.param(100, 0, 99, False, id="deposit-one-fen-short-no-wallet"),
        pytest.param(100, 99, 99, False, id="both-one-fen-short"),
        pytest.param(100, 50, 60, False, id="wallet-50-and-deposit-60-never-add-up-to-100"),
        pytest.param(100, 0, 0, False, id="nothing-at-all"),
    ],
)
def test_the_wallet_or_the_deposit_alone_must_cover_the_refundable_amount(
    paid, wallet, deposit, enough
):
    facts = make_facts(order=make_order(paid_amount=paid), wallet=wallet, deposit=deposit)

    expected = () if enough else (ReasonCode.INSUFFICIENT_GUARANTEE,)
    assert codes_of(facts) == expected


def test_refundable_is_paid_minus_prior_refunds_minus_recorded_refunds():
    order = partly_refunded()

    assert order.refundable_amount == 5_000


@pytest.mark.parametrize(
    ("wallet", "deposit", "enough"),
    [
        pytest.param(5_000, 0, True, id="wallet-covers-what-is-left"),
        pytest.param(0, 5_000, True, id="deposit-covers-what-is-left"),
        pytest.param(4_999, 4_999, False, id="neither-covers-what-is-left"),
    ],
)
def test_the_guarantee_is_measured_against_what_is_left_to_refund(wallet, deposit, enough):
    order = partly_refunded()

    codes = codes_of(make_facts(order=order, wallet=wallet, deposit=deposit))

    assert codes == (() if enough else (ReasonCode.INSUFFICIENT_GUARANTEE,))


def test_an_over_refunded_order_has_nothing_refundable_not_a_negative_amount():
    order = make_order(
        paid_amount=10_000, prior_refunded_amount=8_000, recorded_refunded_amount=3_000
    )

    assert order.refundable_amount == 0
    assert codes_of(make_facts(order=order, wallet=0, deposit=0)) == (
        ReasonCode.NOTHING_REFUNDABLE,
    )


def test_one_fen_left_to_refund_is_still_refundable():
    order = make_order(paid_amount=10_000, prior_refunded_amount=9_999)

    assert codes_of(make_facts(order=order, wallet=1)) == ()


# --- Condition 3: the shop operates normally -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(ShopStatus.NORMAL, (), id="normal"),
        pytest.param(ShopStatus.SUSPENDED, (ReasonCode.SHOP_NOT_OPERATING,), id="suspended"),
        pytest.param(ShopStatus.CLOSED, (ReasonCode.SHOP_NOT_OPERATING,), id="closed"),
    ],
)
def test_only_a_shop_in_normal_operation_may_open(status, expected):
    assert codes_of(make_facts(shop=make_shop(status))) == expected


# --- Condition 4: order kinds, and marketing-campaign orders -------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(OrderKind.ORDINARY, (), id="ordinary"),
        pytest.param(OrderKind.CROSS_BORDER, (), id="cross-border"),
        pytest.param(
            OrderKind.PRESALE, (ReasonCode.ORDER_KIND_NOT_SUPPORTED,), id="deposit-presale"
        ),
    ],
)
def test_ordinary_and_cross_border_orders_are_supported_deposit_orders_are_not(kind, expected):
    assert codes_of(make_facts(order=make_order(kind=kind))) == expected


def test_the_supported_order_kinds_come_from_the_policy():
    policy = Policy(version="presale-too", order_kinds=frozenset(OrderKind))

    assert codes_of(make_facts(order=make_order(kind=OrderKind.PRESALE)), policy) == ()


def test_a_marketing_campaign_order_may_be_opened_under_the_default_policy():
    assert codes_of(make_facts(order=make_order(marketing_campaign=True))) == ()


def test_a_marketing_campaign_order_is_refused_when_the_policy_switch_is_off():
    policy = Policy(version="no-campaigns", marketing_campaign_orders_allowed=False)

    assert codes_of(make_facts(order=make_order(marketing_campaign=True)), policy) == (
        ReasonCode.MARKETING_CAMPAIGN_NOT_ALLOWED,
    )


def test_an_ordinary_order_is_unaffected_when_the_campaign_switch_is_off():
    policy = Policy(version="no-campaigns", marketing_campaign_orders_allowed=False)

    assert codes_of(make_facts(order=make_order(marketing_campaign=False)), policy) == ()


def test_the_roles_that_may_open_come_from_the_policy():
    policy = Policy(version="agents-too", opener_roles=frozenset({StaffRole.CS_AGENT}))

    assert codes_of(make_facts(operator=make_operator(StaffRole.CS_AGENT)), policy) == ()
    assert codes_of(make_facts(operator=make_operator(StaffRole.OWNER)), policy) == (
        ReasonCode.OPERATOR_NOT_ALLOWED,
    )


# --- One open entry per order --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "counts_as_open"),
    [
        pytest.param(make_entry(expires_at=NOW + 2 * DAY), True, id="open-for-two-more-days"),
        pytest.param(
            make_entry(expires_at=NOW + MICROSECOND),
            True,
            id="one-microsecond-before-expiry-is-open",
        ),
        pytest.param(make_entry(expires_at=NOW), False, id="exactly-at-expiry-is-expired"),
        pytest.param(
            make_entry(expires_at=NOW - SECOND), False, id="stored-open-but-expired-a-second-ago"
        ),
        pytest.param(
            make_entry(expires_at=NOW - 10 * DAY), False, id="stored-open-but-expired-long-ago"
        ),
        pytest.param(make_entry(EntryState.USED, expires_at=NOW + DAY), False, id="used-entry"),
        pytest.param(
            make_entry(EntryState.EXPIRED, expires_at=NOW - DAY), False, id="expired-entry"
        ),
    ],
)
def test_only_an_entry_open_by_time_blocks_opening_again(entry, counts_as_open):
    decision = rules.check_entry(make_facts(stored_open_entry=entry), DEFAULT_POLICY)

    if counts_as_open:
        assert decision.codes == (ReasonCode.ENTRY_ALREADY_OPEN,)
        assert decision.already_open == entry
    else:
        assert decision.codes == ()
        assert decision.already_open is None


# --- Every unmet condition at once ---------------------------------------------------------------


def test_every_failing_condition_is_listed_at_once():
    facts = make_facts(
        order=make_order(kind=OrderKind.PRESALE, marketing_campaign=True, **completed(200 * DAY)),
        shop=make_shop(ShopStatus.SUSPENDED),
        operator=make_operator(StaffRole.FINANCE),
        wallet=50,
        deposit=60,
        stored_open_entry=make_entry(expires_at=NOW + DAY),
    )
    policy = Policy(version="no-campaigns", marketing_campaign_orders_allowed=False)

    codes = codes_of(facts, policy)

    assert sorted(codes) == sorted(
        [
            ReasonCode.COMPLETION_WINDOW_EXCEEDED,
            ReasonCode.INSUFFICIENT_GUARANTEE,
            ReasonCode.SHOP_NOT_OPERATING,
            ReasonCode.ORDER_KIND_NOT_SUPPORTED,
            ReasonCode.MARKETING_CAMPAIGN_NOT_ALLOWED,
            ReasonCode.ENTRY_ALREADY_OPEN,
            ReasonCode.OPERATOR_NOT_ALLOWED,
        ]
    )


def test_an_uncompleted_fully_refunded_order_of_a_closed_shop_lists_every_problem():
    facts = make_facts(
        order=make_order(completed_at=None, after_sales_ends_at=None, prior_refunded_amount=PAID),
        shop=make_shop(ShopStatus.CLOSED),
        operator=make_operator(StaffRole.ADMIN, shop_id=OTHER_SHOP_ID),
        wallet=0,
        deposit=0,
    )

    assert sorted(codes_of(facts)) == sorted(
        [
            ReasonCode.ORDER_NOT_COMPLETED,
            ReasonCode.SHOP_NOT_OPERATING,
            ReasonCode.NOTHING_REFUNDABLE,
            ReasonCode.OPERATOR_NOT_ALLOWED,
        ]
    )


def test_a_still_running_regular_period_is_listed_with_the_other_problems():
    facts = make_facts(
        order=make_order(after_sales_ends_at=NOW + DAY),
        wallet=0,
        deposit=0,
        operator=make_operator(StaffRole.CS_AGENT),
    )

    assert sorted(codes_of(facts)) == sorted(
        [
            ReasonCode.WITHIN_AFTER_SALES_PERIOD,
            ReasonCode.INSUFFICIENT_GUARANTEE,
            ReasonCode.OPERATOR_NOT_ALLOWED,
        ]
    )


def test_every_violation_carries_a_description():
    facts = make_facts(
        order=make_order(kind=OrderKind.PRESALE, **completed(200 * DAY)),
        shop=make_shop(ShopStatus.CLOSED),
        operator=make_operator(StaffRole.FINANCE),
        wallet=0,
        stored_open_entry=make_entry(),
    )

    decision = rules.check_entry(facts, DEFAULT_POLICY)

    assert len(decision.violations) == 6
    assert all(v.description.strip() for v in decision.violations)


# --- The window: entry_state ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "now", "seen"),
    [
        pytest.param(EntryState.OPEN, NOW - DAY, EntryState.OPEN, id="open-before-expiry"),
        pytest.param(
            EntryState.OPEN,
            NOW - MICROSECOND,
            EntryState.OPEN,
            id="open-one-microsecond-before-expiry",
        ),
        pytest.param(EntryState.OPEN, NOW, EntryState.EXPIRED, id="open-exactly-at-expiry"),
        pytest.param(
            EntryState.OPEN, NOW + SECOND, EntryState.EXPIRED, id="open-after-expiry-reads-expired"
        ),
        pytest.param(EntryState.USED, NOW - DAY, EntryState.USED, id="used-before-expiry"),
        pytest.param(
            EntryState.USED, NOW + DAY, EntryState.USED, id="used-stays-used-after-expiry"
        ),
        pytest.param(EntryState.EXPIRED, NOW + DAY, EntryState.EXPIRED, id="expired-stays-expired"),
    ],
)
def test_entry_state_is_what_a_reader_sees_now(stored, now, seen):
    entry = make_entry(stored, expires_at=NOW)

    assert rules.entry_state(entry, now) is seen


def test_an_entry_is_open_at_the_moment_it_was_opened():
    entry = make_entry(opened_at=NOW, expires_at=NOW + 72 * timedelta(hours=1))

    assert rules.entry_state(entry, NOW) is EntryState.OPEN


def test_an_entry_seen_after_expiry_reads_expired_and_keeps_everything_else():
    entry = make_entry(expires_at=NOW - SECOND)

    seen = rules.entry_as_seen(entry, NOW)

    assert seen.state is EntryState.EXPIRED
    assert dataclasses.replace(seen, state=EntryState.OPEN) == entry
    assert seen.closed_at == entry.expires_at


# --- Filing within the window: check_application -------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "entry", "expected"),
    [
        pytest.param(PAID, make_entry(), (), id="amount-equal-to-refundable-is-fine"),
        pytest.param(1, make_entry(), (), id="one-fen"),
        pytest.param(
            PAID + 1,
            make_entry(),
            (ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE,),
            id="one-fen-above-refundable",
        ),
        pytest.param(PAID, None, (ReasonCode.ENTRY_NOT_OPEN,), id="no-entry"),
        pytest.param(
            PAID,
            make_entry(expires_at=NOW),
            (ReasonCode.ENTRY_NOT_OPEN,),
            id="entry-expires-exactly-now",
        ),
        pytest.param(
            PAID,
            make_entry(expires_at=NOW - DAY),
            (ReasonCode.ENTRY_NOT_OPEN,),
            id="entry-stored-open-but-expired",
        ),
        pytest.param(
            PAID,
            make_entry(expires_at=NOW + MICROSECOND),
            (),
            id="entry-one-microsecond-before-expiry",
        ),
        pytest.param(
            PAID, make_entry(EntryState.USED), (ReasonCode.ENTRY_NOT_OPEN,), id="entry-already-used"
        ),
        pytest.param(
            PAID + 1,
            None,
            (ReasonCode.ENTRY_NOT_OPEN, ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE),
            id="no-entry-and-too-much-both-listed",
        ),
    ],
)
def test_the_buyer_may_file_up_to_the_refundable_amount_while_the_entry_is_open(
    amount, entry, expected
):
    violations = rules.check_application(make_order(), amount, entry, NOW)

    assert sorted(v.code for v in violations) == sorted(expected)
    assert all(v.description.strip() for v in violations)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        pytest.param(5_000, (), id="exactly-what-is-left"),
        pytest.param(5_001, (ReasonCode.AMOUNT_EXCEEDS_REFUNDABLE,), id="one-fen-more-than-left"),
    ],
)
def test_what_the_buyer_may_file_excludes_prior_and_recorded_refunds(amount, expected):
    order = partly_refunded()

    violations = rules.check_application(order, amount, make_entry(), NOW)

    assert tuple(v.code for v in violations) == expected


# --- Moving money: check_withdrawal --------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "amount", "expected"),
    [
        pytest.param(100, 1, (), id="part-of-the-balance"),
        pytest.param(100, 100, (), id="exactly-the-balance"),
        pytest.param(
            100, 101, (ReasonCode.INSUFFICIENT_FUNDS,), id="one-fen-more-than-the-balance"
        ),
        pytest.param(0, 1, (ReasonCode.INSUFFICIENT_FUNDS,), id="from-an-empty-account"),
    ],
)
def test_a_withdrawal_may_not_take_an_account_below_zero(balance, amount, expected):
    violations = rules.check_withdrawal(balance, amount)

    assert tuple(v.code for v in violations) == expected


# --- Order facts frozen once money moved ----------------------------------------------------------


def resent(order: Order, **changes) -> Order:
    """The order as upstream sends it again: it never carries this service's recorded refunds."""
    return dataclasses.replace(order, recorded_refunded_amount=0, **changes)


REFUNDED = make_order(recorded_refunded_amount=1_000)


def test_an_order_without_recorded_refunds_may_change_freely():
    stored = make_order()

    assert rules.order_facts_frozen(stored, resent(stored, paid_amount=20_000, shop_id="x")) == ()


def test_an_order_with_recorded_refunds_may_be_resent_unchanged():
    assert rules.order_facts_frozen(REFUNDED, resent(REFUNDED)) == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("shop_id", OTHER_SHOP_ID, id="shop"),
        pytest.param("paid_amount", PAID + 1, id="paid-amount"),
        pytest.param("prior_refunded_amount", 500, id="prior-refunds"),
        pytest.param(
            "commission_lines",
            (CommissionLine(PayeeKind.INFLUENCER, "influencer-1", 500),),
            id="commission-lines",
        ),
    ],
)
def test_after_a_recorded_refund_the_money_facts_of_an_order_are_frozen(field, value):
    violations = rules.order_facts_frozen(REFUNDED, resent(REFUNDED, **{field: value}))

    assert tuple(v.code for v in violations) == (ReasonCode.ORDER_FACTS_FROZEN,)
    assert field in violations[0].description


def test_a_frozen_order_names_every_field_that_changed():
    violations = rules.order_facts_frozen(
        REFUNDED, resent(REFUNDED, paid_amount=PAID * 2, prior_refunded_amount=100)
    )

    assert len(violations) == 1
    assert "paid_amount" in violations[0].description
    assert "prior_refunded_amount" in violations[0].description
