"""Each way a call is refused, through a real server and the client, with its rich details; and
that a refused call wrote nothing."""

from __future__ import annotations

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tests.e2e.seed import DAY, DOMAIN, PAID, error_info, ts, wallet


def fields(refused) -> list[str]:
    return sorted(v.field for v in refused.value.field_violations)


def entries_of(client, order_id) -> list:
    return list(client.list_entries(order_id=order_id).entries)


# --- INVALID_ARGUMENT ---------------------------------------------------------------------------


def test_open_entry_names_every_bad_field_at_once_and_writes_nothing(client, seed):
    case = seed.case("bad-open")

    with pytest.raises(InvalidArgument) as refused:
        client.open_entry("", case.owner_id, request_id="bad id!")
    assert fields(refused) == ["order_id", "request_id"]
    assert all(v.description for v in refused.value.field_violations)

    with pytest.raises(InvalidArgument) as refused:
        client.open_entry(case.order_id, case.owner_id, note="x" * 501, request_id="short")
    assert fields(refused) == ["note", "request_id"]
    assert entries_of(client, case.order_id) == []


def test_apply_after_sales_names_every_bad_field_at_once(client, seed):
    case = seed.case("bad-apply")
    client.open_entry(case.order_id, case.owner_id)

    with pytest.raises(InvalidArgument) as refused:
        client.apply_after_sales("", "", -5, reason="r" * 501, request_id="no spaces please")

    assert fields(refused) == ["amount", "buyer_id", "order_id", "reason", "request_id"]
    assert entries_of(client, case.order_id)[0].state == pb.ENTRY_STATE_OPEN


def test_a_zero_amount_is_invalid_argument(client, seed):
    case = seed.case("zero-apply")
    client.open_entry(case.order_id, case.owner_id)

    with pytest.raises(InvalidArgument) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 0)

    assert fields(refused) == ["amount"]


def test_check_eligibility_and_get_entry_need_their_ids(client):
    with pytest.raises(InvalidArgument) as refused:
        client.check_eligibility("", "")
    assert fields(refused) == ["operator_id", "order_id"]

    with pytest.raises(InvalidArgument) as refused:
        client.get_entry("")
    assert fields(refused) == ["entry_id"]


def test_list_entries_needs_a_shop_or_an_order_and_a_sane_page(client):
    with pytest.raises(InvalidArgument) as refused:
        client.list_entries(page_size=-1, state=99)

    assert "page_size" in fields(refused) and "state" in fields(refused)
    assert {"shop_id", "order_id"} & set(fields(refused))


def test_put_order_names_every_bad_field_and_stores_nothing(client, seed, clock):
    shop_id = seed.shop("shop-bad-order")
    order = pb.Order(
        order_id="order-bad",
        shop_id=shop_id,
        buyer_id="",
        kind=99,
        paid_amount=-1,
        completed_at=ts(clock.now()),
    )

    with pytest.raises(InvalidArgument) as refused:
        client.put_order(order)

    assert set(fields(refused)) >= {
        "order.buyer_id",
        "order.kind",
        "order.paid_amount",
        "order.created_at",
        "order.after_sales_ends_at",
    }
    owner = seed.staff("owner-bad-order", shop_id)
    with pytest.raises(NotFound):
        client.check_eligibility("order-bad", owner)


def test_put_shop_and_put_staff_refuse_unspecified_enums(client, seed):
    with pytest.raises(InvalidArgument) as refused:
        client.put_shop(pb.Shop(shop_id="shop-no-status"))
    assert fields(refused) == ["shop.status"]

    shop_id = seed.shop("shop-for-bad-staff")
    with pytest.raises(InvalidArgument) as refused:
        client.put_staff(pb.Staff(staff_id="", shop_id=shop_id, role=0))
    assert fields(refused) == ["staff.role", "staff.staff_id"]


def test_post_funds_names_every_bad_field(client):
    with pytest.raises(InvalidArgument) as refused:
        client.post_funds(pb.AccountRef(), 0, request_id="?")

    assert fields(refused) == ["account.kind", "amount", "request_id"]


# --- NOT_FOUND ----------------------------------------------------------------------------------


def test_an_unknown_order_is_not_found(client, seed):
    case = seed.case("known")

    for call in (client.check_eligibility, client.open_entry):
        with pytest.raises(NotFound) as refused:
            call("order-nobody-knows", case.owner_id)
        assert refused.value.resource == ("order", "order-nobody-knows")

    with pytest.raises(NotFound) as refused:
        client.apply_after_sales("order-nobody-knows", case.buyer_id, 100)
    assert refused.value.resource == ("order", "order-nobody-knows")


def test_an_unknown_staff_account_is_not_found(client, seed):
    case = seed.case("no-staff")

    for call in (client.check_eligibility, client.open_entry):
        with pytest.raises(NotFound) as refused:
            call(case.order_id, "staff-nobody-knows")
        assert refused.value.resource == ("staff", "staff-nobody-knows")
    assert entries_of(client, case.order_id) == []


def test_an_unknown_entry_is_not_found(client):
    with pytest.raises(NotFound) as refused:
        client.get_entry("entry-nobody-knows")

    assert refused.value.resource == ("entry", "entry-nobody-knows")


def test_listing_an_unknown_shop_or_order_is_not_found_and_a_known_empty_one_is_empty(client, seed):
    case = seed.case("quiet")
    assert list(client.list_entries(order_id=case.order_id).entries) == []
    assert list(client.list_entries(shop_id=case.shop_id).entries) == []
    assert list(client.list_clawbacks(case.shop_id).clawbacks) == []

    with pytest.raises(NotFound) as refused:
        client.list_entries(order_id="order-nobody-knows")
    assert refused.value.resource == ("order", "order-nobody-knows")
    with pytest.raises(NotFound) as refused:
        client.list_entries(shop_id="shop-nobody-knows")
    assert refused.value.resource == ("shop", "shop-nobody-knows")
    with pytest.raises(NotFound) as refused:
        client.list_clawbacks("shop-nobody-knows")
    assert refused.value.resource == ("shop", "shop-nobody-knows")


def test_staff_orders_and_funds_of_an_unknown_shop_are_not_found(client, clock):
    with pytest.raises(NotFound) as refused:
        client.put_staff(
            pb.Staff(staff_id="orphan", shop_id="shop-nobody-knows", role=pb.STAFF_ROLE_OWNER)
        )
    assert refused.value.resource == ("shop", "shop-nobody-knows")

    order = pb.Order(
        order_id="order-orphan",
        shop_id="shop-nobody-knows",
        buyer_id="buyer",
        kind=pb.ORDER_KIND_ORDINARY,
        paid_amount=100,
        created_at=ts(clock.now() - DAY),
    )
    with pytest.raises(NotFound) as refused:
        client.put_order(order)
    assert refused.value.resource == ("shop", "shop-nobody-knows")

    with pytest.raises(NotFound) as refused:
        client.post_funds(wallet("shop-nobody-knows"), 100)
    assert refused.value.resource == ("shop", "shop-nobody-knows")


# --- PERMISSION_DENIED --------------------------------------------------------------------------


def test_another_shops_main_account_learns_nothing_not_even_that_the_order_exists(client, seed):
    # An order that fails several rules: none of them may show to an outsider, and the answer is
    # the very one for an order id that does not exist.
    shop_id = seed.shop("shop-secret", status=pb.SHOP_STATUS_SUSPENDED)
    order = seed.order("order-secret", shop_id, completed_days_ago=200)
    outsider = seed.case("outsider").owner_id

    def refusals(order_id: str) -> list[NotFound]:
        found = []
        for call in (client.check_eligibility, client.open_entry):
            with pytest.raises(NotFound) as refused:
                call(order_id, outsider)
            found.append(refused.value)
        return found

    secret, unknown = refusals(order.order_id), refusals("order-nobody-has")
    for refused, nothing in zip(secret, unknown, strict=True):
        assert refused.code == nothing.code
        assert refused.message == nothing.message.replace("order-nobody-has", "order-secret")
        assert refused.resource == ("order", "order-secret")
        for leak in ("200", "suspended", "SHOP_NOT_OPERATING", "COMPLETION_WINDOW", "OPERATOR"):
            assert leak not in refused.message
    assert entries_of(client, order.order_id) == []


@pytest.mark.parametrize(
    "role", [pb.STAFF_ROLE_CS_AGENT, pb.STAFF_ROLE_FINANCE, pb.STAFF_ROLE_OPERATIONS]
)
def test_a_staff_account_of_the_shop_in_another_role_may_not_open(client, seed, role):
    case = seed.case("roles-denied")
    agent = seed.staff("the-agent", case.shop_id, role)

    with pytest.raises(PermissionDenied) as refused:
        client.open_entry(case.order_id, agent)

    assert refused.value.reason == "OPERATOR_NOT_ALLOWED"
    assert refused.value.reasons == ["OPERATOR_NOT_ALLOWED"]
    assert error_info(refused.value).domain == DOMAIN
    assert entries_of(client, case.order_id) == []
    check = client.check_eligibility(case.order_id, agent)
    assert not check.eligible
    assert [v.code for v in check.violations] == [pb.OPERATOR_NOT_ALLOWED]


def test_a_cs_agent_is_denied_first_of_all_on_an_order_that_fails_other_rules_too(client, seed):
    shop_id = seed.shop("shop-agent", status=pb.SHOP_STATUS_SUSPENDED)
    agent = seed.staff("agent-of-the-shop", shop_id, pb.STAFF_ROLE_CS_AGENT)
    order = seed.order("order-agent", shop_id, completed_days_ago=200)

    with pytest.raises(PermissionDenied) as refused:
        client.open_entry(order.order_id, agent)

    assert refused.value.reason == "OPERATOR_NOT_ALLOWED"
    assert refused.value.reasons[0] == "OPERATOR_NOT_ALLOWED"
    assert entries_of(client, order.order_id) == []


def test_someone_other_than_the_buyer_may_not_file(client, seed):
    case = seed.case("not-the-buyer")
    entry = client.open_entry(case.order_id, case.owner_id)

    with pytest.raises(PermissionDenied) as refused:
        client.apply_after_sales(case.order_id, "buyer-someone-else", 10_000)

    assert refused.value.reason == "BUYER_NOT_ORDER_OWNER"
    assert refused.value.reasons == ["BUYER_NOT_ORDER_OWNER"]
    assert error_info(refused.value).domain == DOMAIN
    assert client.get_entry(entry.entry_id).state == pb.ENTRY_STATE_OPEN


# --- FAILED_PRECONDITION ------------------------------------------------------------------------


def test_every_unmet_condition_is_listed_at_once(client, seed, clock):
    shop_id = seed.shop("shop-suspended", status=pb.SHOP_STATUS_SUSPENDED, wallet_balance=5 * PAID)
    owner = seed.staff("owner-suspended", shop_id)
    order = seed.order(
        "order-old-presale", shop_id, completed_days_ago=121, kind=pb.ORDER_KIND_PRESALE
    )

    with pytest.raises(FailedPrecondition) as refused:
        client.open_entry(order.order_id, owner)

    error = refused.value
    assert error.reasons == [
        "COMPLETION_WINDOW_EXCEEDED",
        "SHOP_NOT_OPERATING",
        "ORDER_KIND_NOT_SUPPORTED",
    ]
    assert {v.subject for v in error.violations} == {"orders/order-old-presale"}
    assert all(v.description for v in error.violations)
    info = error_info(error)
    assert info.domain == DOMAIN
    assert info.reason == "COMPLETION_WINDOW_EXCEEDED"
    assert info.metadata["order_id"] == "order-old-presale"
    assert entries_of(client, order.order_id) == []


def test_a_not_completed_order_of_a_closed_shop_without_guarantee_lists_all_three(client, seed):
    shop_id = seed.shop("shop-closed", status=pb.SHOP_STATUS_CLOSED, wallet_balance=PAID - 1)
    owner = seed.staff("owner-closed", shop_id)
    order = seed.order("order-in-transit", shop_id, completed_days_ago=None)

    with pytest.raises(FailedPrecondition) as refused:
        client.open_entry(order.order_id, owner)

    assert refused.value.reasons == [
        "ORDER_NOT_COMPLETED",
        "INSUFFICIENT_GUARANTEE",
        "SHOP_NOT_OPERATING",
    ]


@pytest.mark.parametrize(
    "order_facts, code",
    [
        ({"completed_days_ago": 3, "period_days": 7}, "WITHIN_AFTER_SALES_PERIOD"),
        ({"prior_refunded": PAID}, "NOTHING_REFUNDABLE"),
        ({"completed_days_ago": 120.00002}, "COMPLETION_WINDOW_EXCEEDED"),
    ],
)
def test_each_single_unmet_condition_is_failed_precondition_with_its_code(
    client, seed, order_facts, code
):
    case = seed.case("single", **order_facts)

    with pytest.raises(FailedPrecondition) as refused:
        client.open_entry(case.order_id, case.owner_id)

    assert refused.value.reasons == [code]
    assert refused.value.violations[0].subject == f"orders/{case.order_id}"


def test_completed_exactly_120_days_ago_may_still_be_opened(client, seed):
    case = seed.case("boundary", completed_days_ago=120)

    assert client.open_entry(case.order_id, case.owner_id).state == pb.ENTRY_STATE_OPEN


def test_the_wallet_and_the_deposit_each_on_its_own_must_cover_the_refundable_amount(client, seed):
    shop_id = seed.shop("shop-split", wallet_balance=50, deposit_balance=60)
    owner = seed.staff("owner-split", shop_id)
    order = seed.order("order-split", shop_id, paid=100)

    with pytest.raises(FailedPrecondition) as refused:
        client.open_entry(order.order_id, owner)
    assert refused.value.reasons == ["INSUFFICIENT_GUARANTEE"]

    seed.funds(wallet(shop_id), 50)
    assert client.open_entry(order.order_id, owner).state == pb.ENTRY_STATE_OPEN


def test_check_eligibility_of_a_refused_case_gives_every_code_and_the_facts(client, seed, clock):
    shop_id = seed.shop(
        "shop-facts",
        status=pb.SHOP_STATUS_SUSPENDED,
        wallet_balance=30_000,
        deposit_balance=40_000,
    )
    owner = seed.staff("owner-facts", shop_id)
    order = seed.order(
        "order-facts", shop_id, completed_days_ago=130.5, paid=90_000, prior_refunded=10_000
    )

    check = client.check_eligibility(order.order_id, owner)

    assert check.eligible is False
    assert [v.code for v in check.violations] == [
        pb.COMPLETION_WINDOW_EXCEEDED,
        pb.INSUFFICIENT_GUARANTEE,
        pb.SHOP_NOT_OPERATING,
    ]
    assert all(v.description for v in check.violations)
    facts = check.facts
    assert facts.refundable_amount == 80_000
    assert (facts.wallet_balance, facts.deposit_balance) == (30_000, 40_000)
    assert facts.days_since_completion == 130
    assert facts.completed_at == order.completed_at
    assert facts.after_sales_ends_at == order.after_sales_ends_at
    assert facts.shop_status == pb.SHOP_STATUS_SUSPENDED
    assert facts.order_kind == pb.ORDER_KIND_ORDINARY
    assert facts.operator_role == pb.STAFF_ROLE_OWNER
    assert facts.open_entry_id == ""
    assert facts.checked_at == ts(clock.now())
    assert check.policy_version


def test_check_eligibility_of_an_eligible_case_lists_nothing(client, seed):
    case = seed.case("eligible")

    check = client.check_eligibility(case.order_id, case.owner_id)

    assert check.eligible is True
    assert list(check.violations) == []
    assert check.facts.refundable_amount == PAID
    assert check.facts.days_since_completion == 30
    assert entries_of(client, case.order_id) == []


def test_filing_without_an_open_entry_and_above_the_refundable_amount_lists_both(client, seed):
    case = seed.case("apply-unmet", prior_refunded=PAID - 100)

    with pytest.raises(FailedPrecondition) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 101)
    assert refused.value.reasons == ["ENTRY_NOT_OPEN", "AMOUNT_EXCEEDS_REFUNDABLE"]
    assert error_info(refused.value).domain == DOMAIN

    entry = client.open_entry(case.order_id, case.owner_id)
    with pytest.raises(FailedPrecondition) as refused:
        client.apply_after_sales(case.order_id, case.buyer_id, 101)
    assert refused.value.reasons == ["AMOUNT_EXCEEDS_REFUNDABLE"]
    assert client.get_entry(entry.entry_id).state == pb.ENTRY_STATE_OPEN


def test_already_open_also_lists_the_other_unmet_conditions(client, seed):
    case = seed.case("open-then-suspended")
    entry = client.open_entry(case.order_id, case.owner_id)
    client.put_shop(pb.Shop(shop_id=case.shop_id, status=pb.SHOP_STATUS_SUSPENDED))

    with pytest.raises(Exception) as refused:
        client.open_entry(case.order_id, case.owner_id)

    assert type(refused.value).__name__ == "AlreadyExists"
    assert refused.value.entry_id == entry.entry_id
    assert refused.value.reasons[0] == "ENTRY_ALREADY_OPEN"
    assert set(refused.value.reasons) == {"ENTRY_ALREADY_OPEN", "SHOP_NOT_OPERATING"}
    assert error_info(refused.value).domain == DOMAIN


def test_a_withdrawal_above_the_balance_is_insufficient_funds_and_moves_nothing(client, seed):
    case = seed.case("withdraw", wallet_balance=70_000)

    with pytest.raises(FailedPrecondition) as refused:
        client.post_funds(wallet(case.shop_id), -70_001)

    assert refused.value.reasons == ["INSUFFICIENT_FUNDS"]
    assert error_info(refused.value).domain == DOMAIN
    assert dict(error_info(refused.value).metadata) == {
        "account": f"accounts/anxin_wallet/{case.shop_id}"
    }
    assert client.check_eligibility(case.order_id, case.owner_id).facts.wallet_balance == 70_000
    assert client.post_funds(wallet(case.shop_id), -70_000).balance.balance == 0


def test_a_withdrawal_of_exactly_the_balance_empties_the_account(client, seed):
    shop_id = seed.shop("shop-empty-out", deposit_balance=12_345)

    response = client.post_funds(
        pb.AccountRef(kind=pb.ACCOUNT_KIND_DEPOSIT, owner_id=shop_id), -12_345
    )

    assert response.balance.balance == 0
    assert response.transfer.amount == 12_345
    assert response.transfer.kind == pb.TRANSFER_KIND_FUNDS_OUT


def test_check_eligibility_shows_the_balances_only_to_roles_that_may_open(client, seed):
    case = seed.case("balances-shown")
    agent = seed.staff("agent-balances", case.shop_id, pb.STAFF_ROLE_CS_AGENT)

    owner_sees = client.check_eligibility(case.order_id, case.owner_id).facts
    agent_sees = client.check_eligibility(case.order_id, agent).facts

    assert owner_sees.HasField("wallet_balance") and owner_sees.wallet_balance > 0
    assert owner_sees.HasField("deposit_balance")
    assert not agent_sees.HasField("wallet_balance")
    assert not agent_sees.HasField("deposit_balance")
