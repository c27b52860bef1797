"""Protobuf requests in, domain values out: every malformed field is named at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from aftersales.v1 import entry_pb2, resources_pb2, sync_pb2
from server.domain import model
from server.domain.errors import InvalidArgument
from server.grpc import entries as entry_api
from server.grpc import sync as sync_api

CREATED = datetime(2026, 1, 10, 8, 30, 0, tzinfo=UTC)
COMPLETED = datetime(2026, 1, 15, 20, 0, 0, 250_000, tzinfo=UTC)
PERIOD_ENDS = datetime(2026, 1, 22, 20, 0, 0, tzinfo=UTC)
WALLET_OPENED = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)

REQUEST_ID = "7f9c2ba4-e88f-4a2b-9d1c-0b8d2f6e3a11"


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def bad_fields(convert_fn, request) -> set[str]:
    """The field paths the conversion refuses; fails the test if it accepts the request."""
    with pytest.raises(InvalidArgument) as refused:
        convert_fn(request)
    violations = refused.value.violations
    assert all(description.strip() for _, description in violations)
    return {field for field, _ in violations}


# --- Good requests --------------------------------------------------------------------------------


def set_field(message, name: str, value) -> None:
    """Sets a scalar, copies a sub-message in, or clears the field for None."""
    if value is None:
        message.ClearField(name)
    elif isinstance(value, Message):
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def good_shop(**changes) -> resources_pb2.Shop:
    shop = resources_pb2.Shop(
        shop_id="shop-1",
        name="Shop One",
        status=resources_pb2.SHOP_STATUS_NORMAL,
        wallet_opened_at=ts(WALLET_OPENED),
    )
    for name, value in changes.items():
        set_field(shop, name, value)
    return shop


def good_staff(**changes) -> resources_pb2.Staff:
    staff = resources_pb2.Staff(
        staff_id="staff-1", shop_id="shop-1", role=resources_pb2.STAFF_ROLE_OWNER, name="Owner"
    )
    for name, value in changes.items():
        set_field(staff, name, value)
    return staff


def line(kind, payee_id: str, amount: int) -> resources_pb2.CommissionLine:
    return resources_pb2.CommissionLine(payee_kind=kind, payee_id=payee_id, amount=amount)


def good_order(**changes) -> resources_pb2.Order:
    order = resources_pb2.Order(
        order_id="order-1",
        shop_id="shop-1",
        buyer_id="buyer-1",
        kind=resources_pb2.ORDER_KIND_ORDINARY,
        marketing_campaign=False,
        category_id="appliances",
        paid_amount=10_000,
        prior_refunded_amount=0,
        created_at=ts(CREATED),
        completed_at=ts(COMPLETED),
        after_sales_ends_at=ts(PERIOD_ENDS),
        commission_lines=[
            line(resources_pb2.PAYEE_KIND_INFLUENCER, "influencer-1", 1_000),
            line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "", 500),
        ],
    )
    for name, value in changes.items():
        if name == "commission_lines":
            del order.commission_lines[:]
            order.commission_lines.extend(value)
        else:
            set_field(order, name, value)
    return order


def put_order(**changes) -> sync_pb2.PutOrderRequest:
    return sync_pb2.PutOrderRequest(order=good_order(**changes))


def assert_aware_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


# --- PutShop --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(resources_pb2.SHOP_STATUS_NORMAL, model.ShopStatus.NORMAL, id="normal"),
        pytest.param(
            resources_pb2.SHOP_STATUS_SUSPENDED, model.ShopStatus.SUSPENDED, id="suspended"
        ),
        pytest.param(resources_pb2.SHOP_STATUS_CLOSED, model.ShopStatus.CLOSED, id="closed"),
    ],
)
def test_a_shop_status_maps_to_the_domain_status(status, expected):
    shop = sync_api.shop(sync_pb2.PutShopRequest(shop=good_shop(status=status)))

    assert shop.status is expected


def test_a_good_shop_converts_to_its_domain_values():
    shop = sync_api.shop(sync_pb2.PutShopRequest(shop=good_shop()))

    assert shop == model.Shop("shop-1", "Shop One", model.ShopStatus.NORMAL, WALLET_OPENED)
    assert_aware_utc(shop.wallet_opened_at)


def test_a_shop_without_a_wallet_has_no_wallet_opening_time():
    request = sync_pb2.PutShopRequest(shop=good_shop())
    request.shop.ClearField("wallet_opened_at")

    assert sync_api.shop(request).wallet_opened_at is None


def test_a_put_shop_without_a_shop_is_refused():
    assert bad_fields(sync_api.shop, sync_pb2.PutShopRequest()) == {"shop"}


def test_an_empty_shop_names_every_missing_field():
    request = sync_pb2.PutShopRequest(shop=resources_pb2.Shop())

    assert bad_fields(sync_api.shop, request) == {"shop.shop_id", "shop.status"}


@pytest.mark.parametrize("status", [0, 99], ids=["unspecified", "unknown-99"])
def test_a_shop_status_must_be_a_known_value(status):
    request = sync_pb2.PutShopRequest(shop=good_shop(status=status))

    assert bad_fields(sync_api.shop, request) == {"shop.status"}


# --- PutStaff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        pytest.param(resources_pb2.STAFF_ROLE_OWNER, model.StaffRole.OWNER, id="owner"),
        pytest.param(resources_pb2.STAFF_ROLE_ADMIN, model.StaffRole.ADMIN, id="admin"),
        pytest.param(resources_pb2.STAFF_ROLE_CS_ADMIN, model.StaffRole.CS_ADMIN, id="cs-admin"),
        pytest.param(resources_pb2.STAFF_ROLE_CS_AGENT, model.StaffRole.CS_AGENT, id="cs-agent"),
        pytest.param(resources_pb2.STAFF_ROLE_FINANCE, model.StaffRole.FINANCE, id="finance"),
        pytest.param(
            resources_pb2.STAFF_ROLE_OPERATIONS, model.StaffRole.OPERATIONS, id="operations"
        ),
    ],
)
def test_a_staff_role_maps_to_the_domain_role(role, expected):
    staff = sync_api.staff(sync_pb2.PutStaffRequest(staff=good_staff(role=role)))

    assert staff == model.Staff("staff-1", "shop-1", expected, "Owner")


def test_an_empty_staff_account_names_every_missing_field():
    request = sync_pb2.PutStaffRequest(staff=resources_pb2.Staff())

    assert bad_fields(sync_api.staff, request) == {
        "staff.staff_id",
        "staff.shop_id",
        "staff.role",
    }


@pytest.mark.parametrize("role", [0, 99], ids=["unspecified", "unknown-99"])
def test_a_staff_role_must_be_a_known_value(role):
    request = sync_pb2.PutStaffRequest(staff=good_staff(role=role))

    assert bad_fields(sync_api.staff, request) == {"staff.role"}


# --- PutOrder: good orders ------------------------------------------------------------------------


def test_a_good_order_converts_to_its_domain_values():
    order = sync_api.order(put_order())

    assert order == model.Order(
        order_id="order-1",
        shop_id="shop-1",
        buyer_id="buyer-1",
        kind=model.OrderKind.ORDINARY,
        marketing_campaign=False,
        category_id="appliances",
        paid_amount=10_000,
        created_at=CREATED,
        completed_at=COMPLETED,
        after_sales_ends_at=PERIOD_ENDS,
        prior_refunded_amount=0,
        recorded_refunded_amount=0,
        commission_lines=(
            model.CommissionLine(model.PayeeKind.INFLUENCER, "influencer-1", 1_000),
            model.CommissionLine(model.PayeeKind.TECHNICAL_SERVICE_FEE, "", 500),
        ),
    )
    for moment in (order.created_at, order.completed_at, order.after_sales_ends_at):
        assert_aware_utc(moment)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(resources_pb2.ORDER_KIND_ORDINARY, model.OrderKind.ORDINARY, id="ordinary"),
        pytest.param(
            resources_pb2.ORDER_KIND_CROSS_BORDER, model.OrderKind.CROSS_BORDER, id="cross-border"
        ),
        pytest.param(
            resources_pb2.ORDER_KIND_PRESALE,
            model.OrderKind.PRESALE,
            id="deposit-presale",
        ),
    ],
)
def test_an_order_kind_maps_to_the_domain_kind(kind, expected):
    assert sync_api.order(put_order(kind=kind)).kind is expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            resources_pb2.PAYEE_KIND_INFLUENCER, model.PayeeKind.INFLUENCER, id="influencer"
        ),
        pytest.param(
            resources_pb2.PAYEE_KIND_GROUP_LEADER, model.PayeeKind.GROUP_LEADER, id="group-leader"
        ),
        pytest.param(resources_pb2.PAYEE_KIND_AFFILIATE, model.PayeeKind.AFFILIATE, id="affiliate"),
    ],
)
def test_a_payee_kind_maps_to_the_domain_kind(kind, expected):
    order = sync_api.order(put_order(commission_lines=[line(kind, "payee-1", 300)]))

    assert order.commission_lines == (model.CommissionLine(expected, "payee-1", 300),)


def test_a_marketing_campaign_order_keeps_its_flag():
    assert sync_api.order(put_order(marketing_campaign=True)).marketing_campaign is True


def test_an_order_not_yet_completed_is_valid_and_has_no_completion_times():
    order = sync_api.order(put_order(completed_at=None, after_sales_ends_at=None))

    assert order.completed_at is None
    assert order.after_sales_ends_at is None


def test_an_order_may_have_no_commissions_and_no_category():
    order = sync_api.order(put_order(commission_lines=[], category_id=""))

    assert order.commission_lines == ()
    assert order.category_id == ""


def test_the_output_only_amounts_of_an_order_are_ignored():
    order = sync_api.order(
        put_order(prior_refunded_amount=2_000, refunded_amount=9_999, refundable_amount=1)
    )

    assert order.prior_refunded_amount == 2_000
    assert order.recorded_refunded_amount == 0
    assert order.refundable_amount == 8_000


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"prior_refunded_amount": 10_000}, id="prior-refunds-equal-to-paid"),
        pytest.param(
            {
                "commission_lines": [
                    line(resources_pb2.PAYEE_KIND_INFLUENCER, "i-1", 6_000),
                    line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "", 4_000),
                ]
            },
            id="commissions-equal-to-paid",
        ),
        pytest.param({"after_sales_ends_at": ts(COMPLETED)}, id="period-ends-at-completion"),
        pytest.param(
            {"completed_at": ts(CREATED), "after_sales_ends_at": ts(CREATED)},
            id="completed-at-creation",
        ),
        pytest.param({"order_id": "o" * 128}, id="id-of-128-characters"),
    ],
)
def test_an_order_at_the_edge_of_every_limit_is_accepted(changes):
    sync_api.order(put_order(**changes))


# --- PutOrder: malformed orders -------------------------------------------------------------------


def test_a_put_order_without_an_order_is_refused():
    assert bad_fields(sync_api.order, sync_pb2.PutOrderRequest()) == {"order"}


def test_an_empty_order_names_every_missing_field():
    request = sync_pb2.PutOrderRequest(order=resources_pb2.Order())

    assert bad_fields(sync_api.order, request) == {
        "order.order_id",
        "order.shop_id",
        "order.buyer_id",
        "order.kind",
        "order.paid_amount",
        "order.created_at",
    }


def test_every_bad_field_of_an_order_is_named_at_once():
    request = put_order(
        order_id="",
        paid_amount=-100,
        kind=99,
        prior_refunded_amount=-1,
        after_sales_ends_at=None,
        commission_lines=[
            line(resources_pb2.PAYEE_KIND_INFLUENCER, "influencer-1", 0),
            line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "tr-account", 10),
            line(0, "affiliate-1", -5),
        ],
    )

    assert bad_fields(sync_api.order, request) == {
        "order.order_id",
        "order.paid_amount",
        "order.kind",
        "order.prior_refunded_amount",
        "order.after_sales_ends_at",
        "order.commission_lines[0].amount",
        "order.commission_lines[1].payee_id",
        "order.commission_lines[2].payee_kind",
        "order.commission_lines[2].amount",
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"order_id": ""}, {"order.order_id"}, id="empty-order-id"),
        pytest.param({"shop_id": ""}, {"order.shop_id"}, id="empty-shop-id"),
        pytest.param({"buyer_id": ""}, {"order.buyer_id"}, id="empty-buyer-id"),
        pytest.param({"order_id": " order-1"}, {"order.order_id"}, id="id-with-leading-space"),
        pytest.param({"order_id": "order-1 "}, {"order.order_id"}, id="id-with-trailing-space"),
        pytest.param({"order_id": "   "}, {"order.order_id"}, id="id-of-spaces"),
        pytest.param({"order_id": "order\n1"}, {"order.order_id"}, id="id-with-newline"),
        pytest.param({"order_id": "o" * 129}, {"order.order_id"}, id="id-of-129-characters"),
        pytest.param({"category_id": " c"}, {"order.category_id"}, id="category-with-space"),
        pytest.param({"kind": 0}, {"order.kind"}, id="unspecified-kind"),
        pytest.param({"kind": 99}, {"order.kind"}, id="unknown-kind-99"),
        pytest.param({"paid_amount": 0}, {"order.paid_amount"}, id="zero-paid"),
        pytest.param({"paid_amount": -1}, {"order.paid_amount"}, id="negative-paid"),
        pytest.param(
            {"prior_refunded_amount": -1},
            {"order.prior_refunded_amount"},
            id="negative-prior-refunds",
        ),
        pytest.param(
            {"prior_refunded_amount": 10_001},
            {"order.prior_refunded_amount"},
            id="prior-refunds-above-paid",
        ),
        pytest.param({"created_at": None}, {"order.created_at"}, id="no-creation-time"),
        pytest.param(
            {"after_sales_ends_at": None},
            {"order.after_sales_ends_at"},
            id="completed-without-period-end",
        ),
        pytest.param(
            {"after_sales_ends_at": ts(COMPLETED - timedelta(seconds=1))},
            {"order.after_sales_ends_at"},
            id="period-ends-before-completion",
        ),
        pytest.param(
            {
                "completed_at": ts(CREATED - timedelta(seconds=1)),
                "after_sales_ends_at": ts(CREATED),
            },
            {"order.completed_at"},
            id="completed-before-created",
        ),
    ],
)
def test_a_malformed_order_field_is_named(changes, expected):
    assert bad_fields(sync_api.order, put_order(**changes)) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [line(resources_pb2.PAYEE_KIND_INFLUENCER, "i-1", -1)],
            {"order.commission_lines[0].amount"},
            id="negative-amount",
        ),
        pytest.param(
            [
                line(resources_pb2.PAYEE_KIND_INFLUENCER, "i-1", 100),
                line(resources_pb2.PAYEE_KIND_AFFILIATE, "a-1", 0),
            ],
            {"order.commission_lines[1].amount"},
            id="zero-amount-on-second-line",
        ),
        pytest.param(
            [line(0, "i-1", 100)],
            {"order.commission_lines[0].payee_kind"},
            id="unspecified-payee-kind",
        ),
        pytest.param(
            [line(99, "i-1", 100)],
            {"order.commission_lines[0].payee_kind"},
            id="unknown-payee-kind-99",
        ),
        pytest.param(
            [line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "tr-1", 100)],
            {"order.commission_lines[0].payee_id"},
            id="platform-fee-with-a-payee",
        ),
        pytest.param(
            [line(resources_pb2.PAYEE_KIND_GROUP_LEADER, "", 100)],
            {"order.commission_lines[0].payee_id"},
            id="group-leader-without-a-payee",
        ),
        pytest.param(
            [
                line(resources_pb2.PAYEE_KIND_INFLUENCER, "i-1", 6_000),
                line(resources_pb2.PAYEE_KIND_TECHNICAL_SERVICE_FEE, "", 4_001),
            ],
            {"order.commission_lines"},
            id="commissions-one-fen-above-paid",
        ),
    ],
)
def test_a_malformed_commission_line_is_named_by_its_index(lines, expected):
    assert bad_fields(sync_api.order, put_order(commission_lines=lines)) == expected


# --- PostFunds ------------------------------------------------------------------------------------


def post_funds(**changes) -> sync_pb2.PostFundsRequest:
    request = sync_pb2.PostFundsRequest(
        request_id=REQUEST_ID,
        account=resources_pb2.AccountRef(
            kind=resources_pb2.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-1"
        ),
        amount=50_000,
        memo="top-up",
    )
    for name, value in changes.items():
        set_field(request, name, value)
    return request


@pytest.mark.parametrize(
    ("amount", "kind"),
    [
        pytest.param(50_000, resources_pb2.ACCOUNT_KIND_ANXIN_WALLET, id="into-the-wallet"),
        pytest.param(-50_000, resources_pb2.ACCOUNT_KIND_DEPOSIT, id="out-of-the-deposit"),
    ],
)
def test_good_funds_convert_to_an_account_and_a_signed_amount(amount, kind):
    account = resources_pb2.AccountRef(kind=kind, owner_id="shop-1")

    request_id, ref, got_amount, memo = sync_api.post_funds(
        post_funds(account=account, amount=amount)
    )

    assert request_id == REQUEST_ID
    assert ref == model.AccountRef(
        model.AccountKind(resources_pb2.AccountKind.Name(kind).removeprefix("ACCOUNT_KIND_")),
        "shop-1",
    )
    assert got_amount == amount
    assert memo == "top-up"


def test_funds_with_every_field_bad_name_every_field():
    request = sync_pb2.PostFundsRequest(request_id="short", amount=0)

    assert bad_fields(sync_api.post_funds, request) == {"request_id", "account", "amount"}


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        pytest.param(
            resources_pb2.AccountRef(kind=0, owner_id="shop-1"),
            {"account.kind"},
            id="unspecified-kind",
        ),
        pytest.param(
            resources_pb2.AccountRef(kind=99, owner_id="shop-1"),
            {"account.kind"},
            id="unknown-kind-99",
        ),
        pytest.param(
            resources_pb2.AccountRef(kind=resources_pb2.ACCOUNT_KIND_ANXIN_WALLET),
            {"account.owner_id"},
            id="wallet-without-its-shop",
        ),
        pytest.param(
            resources_pb2.AccountRef(
                kind=resources_pb2.ACCOUNT_KIND_PLATFORM_COMMISSION, owner_id="shop-1"
            ),
            {"account.owner_id"},
            id="platform-account-with-an-owner",
        ),
        pytest.param(
            resources_pb2.AccountRef(kind=resources_pb2.ACCOUNT_KIND_EXTERNAL),
            {"account.kind"},
            id="the-outside-itself",
        ),
    ],
)
def test_funds_must_name_a_real_account(account, expected):
    assert bad_fields(sync_api.post_funds, post_funds(account=account)) == expected


# --- AfterSalesEntry requests ---------------------------------------------------------------------


def test_check_eligibility_names_both_missing_ids():
    request = entry_pb2.CheckEligibilityRequest()

    assert bad_fields(entry_api.check_eligibility, request) == {"order_id", "operator_id"}


def test_a_good_eligibility_check_gives_the_ids():
    request = entry_pb2.CheckEligibilityRequest(order_id="order-1", operator_id="staff-1")

    assert entry_api.check_eligibility(request) == ("order-1", "staff-1")


def open_entry(**changes) -> entry_pb2.OpenEntryRequest:
    fields = {
        "order_id": "order-1",
        "operator_id": "staff-1",
        "request_id": REQUEST_ID,
        "note": "agreed a refund for the broken compressor",
    }
    fields.update(changes)
    return entry_pb2.OpenEntryRequest(**fields)


def test_a_good_open_entry_request_gives_the_ids_and_the_note():
    assert entry_api.open_entry(open_entry()) == (
        "order-1",
        "staff-1",
        "agreed a refund for the broken compressor",
    )


def test_an_empty_open_entry_request_names_every_missing_field():
    assert bad_fields(entry_api.open_entry, entry_pb2.OpenEntryRequest()) == {
        "order_id",
        "operator_id",
        "request_id",
    }


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param(str(uuid.UUID(int=1)), id="uuid"),
        pytest.param(str(uuid.UUID(int=1)).upper(), id="upper-case-uuid"),
        pytest.param("retry-01", id="eight-characters"),
        pytest.param("a" * 128, id="128-characters"),
        pytest.param("batch.2026:run_7-x", id="dots-colons-underscores"),
    ],
)
def test_a_uuid_like_request_id_is_accepted(request_id):
    entry_api.open_entry(open_entry(request_id=request_id))


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("", id="empty"),
        pytest.param("retry-1", id="seven-characters"),
        pytest.param("a" * 129, id="129-characters"),
        pytest.param("has spaces in it", id="spaces"),
        pytest.param(" " + REQUEST_ID, id="leading-space"),
        pytest.param(REQUEST_ID + "\n", id="trailing-newline"),
        pytest.param("order/1234567", id="slash"),
        pytest.param("重试请求编号一二三", id="non-ascii"),
    ],
)
def test_a_request_id_that_is_not_uuid_like_is_refused(request_id):
    assert bad_fields(entry_api.open_entry, open_entry(request_id=request_id)) == {"request_id"}


def test_a_note_of_500_characters_is_accepted():
    _, _, note = entry_api.open_entry(open_entry(note="n" * 500))

    assert note == "n" * 500


def test_a_note_over_500_characters_is_refused():
    assert bad_fields(entry_api.open_entry, open_entry(note="n" * 501)) == {"note"}


def test_a_note_breaking_two_rules_is_refused_for_both():
    with pytest.raises(InvalidArgument) as refused:
        entry_api.open_entry(open_entry(note="\x00" + "n" * 500))

    descriptions = [d for field, d in refused.value.violations if field == "note"]
    assert len(descriptions) == 2, descriptions
    assert any("NUL" in d for d in descriptions) and any("500" in d for d in descriptions)


def test_an_open_entry_request_with_several_bad_fields_names_them_all():
    request = open_entry(order_id="", operator_id="o" * 129, request_id="x y", note="n" * 501)

    assert bad_fields(entry_api.open_entry, request) == {
        "order_id",
        "operator_id",
        "request_id",
        "note",
    }


def test_get_entry_needs_an_entry_id():
    assert bad_fields(entry_api.get_entry, entry_pb2.GetEntryRequest()) == {"entry_id"}
    assert entry_api.get_entry(entry_pb2.GetEntryRequest(entry_id="entry-1")) == "entry-1"


# --- ListEntries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"shop_id": "shop-1"}, ("shop-1", None), id="by-shop"),
        pytest.param({"order_id": "order-1"}, (None, "order-1"), id="by-order"),
        pytest.param(
            {"shop_id": "shop-1", "order_id": "order-1"}, ("shop-1", "order-1"), id="by-both"
        ),
    ],
)
def test_entries_are_listed_by_shop_or_order_or_both(fields, expected):
    shop_id, order_id, _, _ = entry_api.list_entries(entry_pb2.ListEntriesRequest(**fields))

    assert (shop_id, order_id) == expected


def test_listing_without_shop_or_order_is_refused():
    fields = bad_fields(entry_api.list_entries, entry_pb2.ListEntriesRequest(page_size=10))

    assert fields & {"shop_id", "order_id"}
    assert fields <= {"shop_id", "order_id"}


def test_a_negative_page_size_is_refused():
    request = entry_pb2.ListEntriesRequest(shop_id="shop-1", page_size=-1)

    assert bad_fields(entry_api.list_entries, request) == {"page_size"}


def test_an_unknown_state_filter_is_refused():
    request = entry_pb2.ListEntriesRequest(shop_id="shop-1", state=99)

    assert bad_fields(entry_api.list_entries, request) == {"state"}


def test_a_listing_with_several_bad_fields_names_them_all():
    request = entry_pb2.ListEntriesRequest(state=99, page_size=-5)

    fields = bad_fields(entry_api.list_entries, request)

    assert {"state", "page_size"} <= fields
    assert fields & {"shop_id", "order_id"}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(resources_pb2.ENTRY_STATE_UNSPECIFIED, None, id="unspecified-means-all"),
        pytest.param(resources_pb2.ENTRY_STATE_OPEN, model.EntryState.OPEN, id="open"),
        pytest.param(resources_pb2.ENTRY_STATE_USED, model.EntryState.USED, id="used"),
        pytest.param(resources_pb2.ENTRY_STATE_EXPIRED, model.EntryState.EXPIRED, id="expired"),
    ],
)
def test_the_state_filter_maps_to_the_domain_state(state, expected):
    _, _, got, _ = entry_api.list_entries(entry_pb2.ListEntriesRequest(shop_id="s", state=state))

    assert got is expected


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [
        pytest.param(0, 50, id="unset-means-50"),
        pytest.param(1, 1, id="one"),
        pytest.param(500, 500, id="the-maximum"),
        pytest.param(10_000, 500, id="above-the-maximum-is-capped"),
    ],
)
def test_the_page_size_defaults_to_50_and_is_capped_at_500(page_size, expected):
    request = entry_pb2.ListEntriesRequest(shop_id="shop-1", page_size=page_size)

    assert entry_api.list_entries(request)[3] == expected


# --- ApplyAfterSales ------------------------------------------------------------------------------


def apply(**changes) -> entry_pb2.ApplyAfterSalesRequest:
    fields = {
        "order_id": "order-1",
        "buyer_id": "buyer-1",
        "amount": 3_000,
        "reason": "the compressor stopped",
        "request_id": REQUEST_ID,
    }
    fields.update(changes)
    return entry_pb2.ApplyAfterSalesRequest(**fields)


def test_a_good_application_gives_its_values():
    assert entry_api.apply_after_sales(apply()) == (
        "order-1",
        "buyer-1",
        3_000,
        "the compressor stopped",
    )


def test_an_empty_application_names_every_missing_field():
    assert bad_fields(entry_api.apply_after_sales, entry_pb2.ApplyAfterSalesRequest()) == {
        "order_id",
        "buyer_id",
        "amount",
        "request_id",
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"amount": 0}, {"amount"}, id="zero-amount"),
        pytest.param({"amount": -3_000}, {"amount"}, id="negative-amount"),
        pytest.param({"reason": "r" * 501}, {"reason"}, id="reason-over-500"),
        pytest.param({"buyer_id": " buyer-1"}, {"buyer_id"}, id="buyer-with-space"),
        pytest.param({"request_id": "abc"}, {"request_id"}, id="short-request-id"),
        pytest.param(
            {"amount": -1, "request_id": "a b c d e f", "order_id": ""},
            {"amount", "request_id", "order_id"},
            id="three-at-once",
        ),
    ],
)
def test_a_malformed_application_field_is_named(changes, expected):
    assert bad_fields(entry_api.apply_after_sales, apply(**changes)) == expected
