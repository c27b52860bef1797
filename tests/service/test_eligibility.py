"""Checking eligibility reports every unmet condition at once, and refuses other shops' staff."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.domain.errors import NotFound
from server.domain.model import (
    Order,
    OrderKind,
    ReasonCode,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service import Service
from tests.service.scenarios import fund
from tests.store.factories import a_normal_shop, an_eligible_setup, an_owner, deposit_of

DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def an_order(service: Service, shop_id: str, **changes: object) -> Order:
    completed = service.now() - 30 * DAY
    fields: dict[str, object] = dict(
        order_id="order-1",
        shop_id=shop_id,
        buyer_id="buyer-1",
        kind=OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id="appliances",
        paid_amount=10_000,
        created_at=completed - 3 * DAY,
        completed_at=completed,
        after_sales_ends_at=completed + 15 * DAY,
    )
    fields.update(changes)
    return service.put_order(Order(**fields))  # type: ignore[arg-type]


def test_an_eligible_order_of_the_shop_s_owner_has_no_unmet_condition(service):
    setup = an_eligible_setup(service)

    eligibility = service.check_eligibility(setup.order_id, setup.owner_id)

    assert eligibility.decision.eligible
    assert eligibility.decision.codes == ()
    assert eligibility.decision.days_since_completion == 30
    assert eligibility.facts.wallet_balance == 1_000_000
    assert eligibility.policy_version == service.policy.version


def test_every_unmet_condition_is_reported_at_once_in_the_rules_order(service):
    shop_id = a_normal_shop(service, wallet=0)
    service.put_shop(Shop(shop_id, "Shop", ShopStatus.SUSPENDED, service.now() - 365 * DAY))
    service.put_staff(Staff("agent-1", shop_id, StaffRole.CS_AGENT, "An agent"))
    an_order(service, shop_id, kind=OrderKind.PRESALE, completed_at=service.now() - 200 * DAY)

    decision = service.check_eligibility("order-1", "agent-1").decision

    assert decision.codes == (
        ReasonCode.COMPLETION_WINDOW_EXCEEDED,
        ReasonCode.INSUFFICIENT_GUARANTEE,
        ReasonCode.SHOP_NOT_OPERATING,
        ReasonCode.ORDER_KIND_NOT_SUPPORTED,
        ReasonCode.OPERATOR_NOT_ALLOWED,
    )


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        (lambda now: {"completed_at": None}, ReasonCode.ORDER_NOT_COMPLETED),
        (lambda now: {"after_sales_ends_at": now + DAY}, ReasonCode.WITHIN_AFTER_SALES_PERIOD),
        (lambda now: {"prior_refunded_amount": 10_000}, ReasonCode.NOTHING_REFUNDABLE),
        (lambda now: {"kind": OrderKind.CROSS_BORDER}, None),
        (lambda now: {"kind": OrderKind.PRESALE}, ReasonCode.ORDER_KIND_NOT_SUPPORTED),
        (lambda now: {"completed_at": now - 120 * DAY}, None),
        (lambda now: {"completed_at": now - 120 * DAY - US}, ReasonCode.COMPLETION_WINDOW_EXCEEDED),
    ],
)
def test_one_unmet_fact_of_the_order_is_reported_alone(service, changes, code):
    shop_id = a_normal_shop(service)
    owner_id = an_owner(service, shop_id)
    an_order(service, shop_id, **changes(service.now()))

    assert service.check_eligibility("order-1", owner_id).decision.codes == (
        () if code is None else (code,)
    )


def test_the_wallet_and_the_deposit_each_on_its_own_must_cover_the_refundable_amount(service):
    shop_id = a_normal_shop(service, wallet=6_000)
    owner_id = an_owner(service, shop_id)
    fund(service, deposit_of(shop_id), 6_000)
    an_order(service, shop_id, paid_amount=10_000)

    refused = service.check_eligibility("order-1", owner_id).decision
    fund(service, deposit_of(shop_id), 4_000)
    accepted = service.check_eligibility("order-1", owner_id).decision

    assert refused.codes == (ReasonCode.INSUFFICIENT_GUARANTEE,)
    assert accepted.eligible


def test_a_marketing_campaign_order_may_be_opened_under_the_shipped_policy(service):
    shop_id = a_normal_shop(service)
    owner_id = an_owner(service, shop_id)
    an_order(service, shop_id, marketing_campaign=True)

    assert service.check_eligibility("order-1", owner_id).decision.eligible


def test_an_operator_of_another_shop_is_told_the_order_does_not_exist(service):
    setup = an_eligible_setup(service)
    a_normal_shop(service, "shop-2")
    stranger = an_owner(service, "shop-2")

    with pytest.raises(NotFound) as denied:
        service.check_eligibility(setup.order_id, stranger)
    with pytest.raises(NotFound) as unknown:
        service.check_eligibility("no-such-order", stranger)

    assert (denied.value.resource_type, denied.value.name) == ("order", setup.order_id)
    assert str(denied.value) == str(unknown.value).replace("no-such-order", setup.order_id)


def test_an_unknown_operator_is_named_before_an_unknown_order(service):
    setup = an_eligible_setup(service)

    with pytest.raises(NotFound) as unknown_both:
        service.check_eligibility("no-such-order", "no-such-staff")
    with pytest.raises(NotFound) as unknown_order:
        service.check_eligibility("no-such-order", setup.owner_id)

    assert (unknown_both.value.resource_type, unknown_both.value.name) == (
        "staff",
        "no-such-staff",
    )
    assert (unknown_order.value.resource_type, unknown_order.value.name) == (
        "order",
        "no-such-order",
    )


def test_the_wallet_balance_read_is_the_shop_s_own(service):
    setup = an_eligible_setup(service)
    a_normal_shop(service, "shop-2", wallet=777)  # another shop's money is not this one's

    assert service.check_eligibility(setup.order_id, setup.owner_id).facts.wallet_balance == (
        1_000_000
    )


def test_the_balances_are_shown_only_to_those_who_may_open(service):
    setup = an_eligible_setup(service, order_id="order-big")
    service.put_staff(Staff("agent-1", setup.shop_id, StaffRole.CS_AGENT, "Agent"))
    fund(service, deposit_of(setup.shop_id), 1_234)
    service.put_order(
        Order(
            order_id="order-big",
            shop_id=setup.shop_id,
            buyer_id="buyer-1",
            kind=OrderKind.ORDINARY,
            marketing_campaign=False,
            category_id="appliances",
            paid_amount=5_000_000,  # more than the wallet (1,000,000) and the deposit hold
            created_at=service.now() - timedelta(days=33),
            completed_at=service.now() - timedelta(days=30),
            after_sales_ends_at=service.now() - timedelta(days=15),
        )
    )

    owner = service.check_eligibility("order-big", setup.owner_id)
    agent = service.check_eligibility("order-big", "agent-1")

    assert owner.shows_balances and not agent.shows_balances
    short = ReasonCode.INSUFFICIENT_GUARANTEE
    (owner_says,) = [v.description for v in owner.decision.violations if v.code is short]
    (agent_hears,) = [v.description for v in agent.decision.violations if v.code is short]
    assert "10000.00" in owner_says and "12.34" in owner_says
    assert not any(figure in agent_hears for figure in ("10000.00", "12.34", "50000.00"))


def test_a_batch_decides_each_order_as_a_single_check_does_in_the_request_s_order(service):
    setup = an_eligible_setup(service)
    an_order(service, setup.shop_id, order_id="order-presale", kind=OrderKind.PRESALE)
    an_eligible_setup(service, "shop-2", "order-theirs")
    ids = ["order-presale", "no-such-order", setup.order_id, "order-theirs", "order-presale"]

    batch = service.check_eligibilities(ids, setup.owner_id)

    for order_id, found in zip(ids, batch, strict=True):
        try:
            alone = service.check_eligibility(order_id, setup.owner_id)
        except NotFound as e:
            assert isinstance(found, NotFound) and str(found) == str(e)
        else:
            assert found == alone
    assert [type(f).__name__ for f in batch] == [
        "Eligibility",
        "NotFound",
        "Eligibility",
        "NotFound",
        "Eligibility",
    ]


def test_a_batch_of_an_unknown_operator_is_refused_as_a_whole(service):
    setup = an_eligible_setup(service)

    with pytest.raises(NotFound) as unknown:
        service.check_eligibilities([setup.order_id], "no-such-staff")

    assert (unknown.value.resource_type, unknown.value.name) == ("staff", "no-such-staff")
