"""Protobuf <-> domain: validates what comes in (every bad field at once), renders what goes out."""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf import timestamp_pb2

from aftersales.v1 import clawback_pb2, entry_pb2, resources_pb2, sync_pb2
from server import model
from server.errors import InvalidArgument

MAX_ID = 128
MAX_TEXT = 500
# One movement of money is at most 10 billion yuan: far above any order, far below where sums of
# int64 could overflow.
MAX_AMOUNT = 10**12
# Timestamps from 1970 to 9999: what the store and every language's date type can hold.
MIN_SECONDS = 0
MAX_SECONDS = 253_402_300_799
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")

E = TypeVar("E", bound=enum.Enum)


class Fields:
    """Collects field violations while a request is read; raises them all at the end."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append((field, description))

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.bad(field, "is required")
        elif len(value) > MAX_ID:
            self.bad(field, f"is longer than {MAX_ID} characters")
        elif not value.isprintable() or value != value.strip():
            self.bad(field, "has control characters or surrounding spaces")
        return value

    def request_id(self, field: str, value: str) -> str:
        if not REQUEST_ID.fullmatch(value):
            self.bad(field, "must be a UUID or a token of 8 to 128 characters from [A-Za-z0-9._:-]")
        return value

    def text(self, field: str, value: str, limit: int = MAX_TEXT) -> str:
        if len(value) > limit:
            self.bad(field, f"is longer than {limit} characters")
        elif "\x00" in value:
            self.bad(field, "has a NUL character")
        return value

    def positive(self, field: str, value: int) -> int:
        if value <= 0:
            self.bad(field, f"must be above zero, not {value}")
        elif value > MAX_AMOUNT:
            self.bad(field, f"must be at most {MAX_AMOUNT} fen, not {value}")
        return value

    def version(self, field: str, value: int) -> int:
        if value < 0:
            self.bad(field, f"must not be negative, not {value}")
        return value

    def enum(self, field: str, proto_enum, value: int, domain: type[E], prefix: str) -> E | None:
        """The domain member for a proto enum value; unspecified and unknown values are bad."""
        try:
            name = proto_enum.Name(value)
        except ValueError:
            self.bad(field, f"unknown value {value}")
            return None
        if value == 0:
            self.bad(field, "is required")
            return None
        return domain(name.removeprefix(prefix))

    def time(self, field: str, message, name: str, *, required: bool) -> datetime | None:
        if not message.HasField(name):
            if required:
                self.bad(field, "is required")
            return None
        ts = getattr(message, name)
        if not (MIN_SECONDS <= ts.seconds <= MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
            self.bad(field, "must be a valid time between 1970 and 9999")
            return None
        return from_timestamp(ts)


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def enum_value(proto_enum, prefix: str, member: enum.Enum | None) -> int:
    return 0 if member is None else proto_enum.Value(prefix + member.value)


# --- Requests -------------------------------------------------------------------------------------


def shop(request: sync_pb2.PutShopRequest) -> model.Shop:
    f = Fields()
    if not request.HasField("shop"):
        f.bad("shop", "is required")
        f.raise_if_any()
    s = request.shop
    result = model.Shop(
        shop_id=f.id("shop.shop_id", s.shop_id),
        name=f.text("shop.name", s.name, 256),
        status=f.enum(
            "shop.status", resources_pb2.ShopStatus, s.status, model.ShopStatus, "SHOP_STATUS_"
        ),
        wallet_opened_at=f.time("shop.wallet_opened_at", s, "wallet_opened_at", required=False),
        version=f.version("shop.version", s.version),
    )
    f.raise_if_any()
    return result


def staff(request: sync_pb2.PutStaffRequest) -> model.Staff:
    f = Fields()
    if not request.HasField("staff"):
        f.bad("staff", "is required")
        f.raise_if_any()
    s = request.staff
    result = model.Staff(
        staff_id=f.id("staff.staff_id", s.staff_id),
        shop_id=f.id("staff.shop_id", s.shop_id),
        role=f.enum("staff.role", resources_pb2.StaffRole, s.role, model.StaffRole, "STAFF_ROLE_"),
        name=f.text("staff.name", s.name, 256),
        version=f.version("staff.version", s.version),
    )
    f.raise_if_any()
    return result


def order(request: sync_pb2.PutOrderRequest) -> model.Order:
    f = Fields()
    if not request.HasField("order"):
        f.bad("order", "is required")
        f.raise_if_any()
    o = request.order
    lines = []
    for i, line in enumerate(o.commission_lines):
        path = f"order.commission_lines[{i}]"
        kind = f.enum(
            f"{path}.payee_kind",
            resources_pb2.PayeeKind,
            line.payee_kind,
            model.PayeeKind,
            "PAYEE_KIND_",
        )
        if kind is model.PayeeKind.TECHNICAL_SERVICE_FEE:
            if line.payee_id:
                f.bad(f"{path}.payee_id", "must be empty for the platform's technical service fee")
        else:
            f.id(f"{path}.payee_id", line.payee_id)
        f.positive(f"{path}.amount", line.amount)
        lines.append(model.CommissionLine(kind, line.payee_id, line.amount))
    paid = f.positive("order.paid_amount", o.paid_amount)
    if o.prior_refunded_amount < 0 or (paid > 0 and o.prior_refunded_amount > paid):
        f.bad("order.prior_refunded_amount", "must be between zero and paid_amount")
    commission = sum(line.amount for line in o.commission_lines if line.amount > 0)
    if paid > 0 and commission > paid:
        f.bad(
            "order.commission_lines",
            f"the commissions add up to {commission}, more than the paid amount {paid}",
        )
    completed_at = f.time("order.completed_at", o, "completed_at", required=False)
    ends_at = f.time(
        "order.after_sales_ends_at", o, "after_sales_ends_at", required=completed_at is not None
    )
    if completed_at is not None and ends_at is not None and ends_at < completed_at:
        f.bad("order.after_sales_ends_at", "may not be before completed_at")
    created_at = f.time("order.created_at", o, "created_at", required=True)
    if created_at is not None and completed_at is not None and completed_at < created_at:
        f.bad("order.completed_at", "may not be before created_at")
    result = model.Order(
        order_id=f.id("order.order_id", o.order_id),
        shop_id=f.id("order.shop_id", o.shop_id),
        buyer_id=f.id("order.buyer_id", o.buyer_id),
        kind=f.enum("order.kind", resources_pb2.OrderKind, o.kind, model.OrderKind, "ORDER_KIND_"),
        marketing_campaign=o.marketing_campaign,
        category_id=f.id("order.category_id", o.category_id, required=False),
        paid_amount=paid,
        prior_refunded_amount=o.prior_refunded_amount,
        created_at=created_at,
        completed_at=completed_at,
        after_sales_ends_at=ends_at,
        commission_lines=tuple(lines),
        version=f.version("order.version", o.version),
    )
    f.raise_if_any()
    return result


def account_ref(f: Fields, field: str, message: resources_pb2.AccountRef) -> model.AccountRef:
    kind = f.enum(
        f"{field}.kind", resources_pb2.AccountKind, message.kind, model.AccountKind, "ACCOUNT_KIND_"
    )
    if kind in (model.AccountKind.PLATFORM_COMMISSION, model.AccountKind.EXTERNAL):
        if message.owner_id:
            f.bad(f"{field}.owner_id", f"must be empty for {kind.value}")
    elif kind is not None:
        f.id(f"{field}.owner_id", message.owner_id)
    return model.AccountRef(kind, message.owner_id) if kind else None


def post_funds(request: sync_pb2.PostFundsRequest) -> tuple[str, model.AccountRef, int, str]:
    f = Fields()
    f.request_id("request_id", request.request_id)
    if not request.HasField("account"):
        f.bad("account", "is required")
        ref = None
    else:
        ref = account_ref(f, "account", request.account)
        if ref is not None and ref.kind is model.AccountKind.EXTERNAL:
            f.bad(
                "account.kind",
                "funds move between an account and the outside, not the outside itself",
            )
    if request.amount == 0:
        f.bad("amount", "must not be zero")
    elif abs(request.amount) > MAX_AMOUNT:
        f.bad("amount", f"must be at most {MAX_AMOUNT} fen either way, not {request.amount}")
    f.text("memo", request.memo, 256)
    f.raise_if_any()
    return request.request_id, ref, request.amount, request.memo


def check_eligibility(request: entry_pb2.CheckEligibilityRequest) -> tuple[str, str]:
    f = Fields()
    order_id = f.id("order_id", request.order_id)
    operator_id = f.id("operator_id", request.operator_id)
    f.raise_if_any()
    return order_id, operator_id


def open_entry(request: entry_pb2.OpenEntryRequest) -> tuple[str, str, str]:
    f = Fields()
    order_id = f.id("order_id", request.order_id)
    operator_id = f.id("operator_id", request.operator_id)
    f.request_id("request_id", request.request_id)
    note = f.text("note", request.note)
    f.raise_if_any()
    return order_id, operator_id, note


def get_entry(request: entry_pb2.GetEntryRequest) -> str:
    f = Fields()
    entry_id = f.id("entry_id", request.entry_id)
    f.raise_if_any()
    return entry_id


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def list_entries(request: entry_pb2.ListEntriesRequest):
    f = Fields()
    shop_id = f.id("shop_id", request.shop_id, required=False) or None
    order_id = f.id("order_id", request.order_id, required=False) or None
    if shop_id is None and order_id is None:
        f.bad("shop_id", "shop_id or order_id is required")
    state = None
    if request.state != 0:
        state = f.enum(
            "state", resources_pb2.EntryState, request.state, model.EntryState, "ENTRY_STATE_"
        )
    if request.page_size < 0:
        f.bad("page_size", "must not be negative")
    page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    f.raise_if_any()
    return shop_id, order_id, state, page_size


def apply_after_sales(request: entry_pb2.ApplyAfterSalesRequest) -> tuple[str, str, int, str]:
    f = Fields()
    order_id = f.id("order_id", request.order_id)
    buyer_id = f.id("buyer_id", request.buyer_id)
    amount = f.positive("amount", request.amount)
    reason = f.text("reason", request.reason)
    f.request_id("request_id", request.request_id)
    f.raise_if_any()
    return order_id, buyer_id, amount, reason


# --- Responses ------------------------------------------------------------------------------------


def shop_pb(s: model.Shop) -> resources_pb2.Shop:
    return resources_pb2.Shop(
        shop_id=s.shop_id,
        name=s.name,
        status=enum_value(resources_pb2.ShopStatus, "SHOP_STATUS_", s.status),
        wallet_opened_at=timestamp(s.wallet_opened_at),
        version=s.version,
    )


def staff_pb(s: model.Staff) -> resources_pb2.Staff:
    return resources_pb2.Staff(
        staff_id=s.staff_id,
        shop_id=s.shop_id,
        role=enum_value(resources_pb2.StaffRole, "STAFF_ROLE_", s.role),
        name=s.name,
        version=s.version,
    )


def order_pb(o: model.Order) -> resources_pb2.Order:
    return resources_pb2.Order(
        order_id=o.order_id,
        shop_id=o.shop_id,
        buyer_id=o.buyer_id,
        kind=enum_value(resources_pb2.OrderKind, "ORDER_KIND_", o.kind),
        marketing_campaign=o.marketing_campaign,
        category_id=o.category_id,
        paid_amount=o.paid_amount,
        prior_refunded_amount=o.prior_refunded_amount,
        refunded_amount=o.refunded_amount,
        refundable_amount=o.refundable_amount,
        created_at=timestamp(o.created_at),
        completed_at=timestamp(o.completed_at),
        after_sales_ends_at=timestamp(o.after_sales_ends_at),
        commission_lines=[
            resources_pb2.CommissionLine(
                payee_kind=enum_value(resources_pb2.PayeeKind, "PAYEE_KIND_", line.payee_kind),
                payee_id=line.payee_id,
                amount=line.amount,
            )
            for line in o.commission_lines
        ],
        version=o.version,
    )


def account_pb(ref: model.AccountRef) -> resources_pb2.AccountRef:
    return resources_pb2.AccountRef(
        kind=enum_value(resources_pb2.AccountKind, "ACCOUNT_KIND_", ref.kind), owner_id=ref.owner_id
    )


def transfer_pb(t: model.Transfer) -> resources_pb2.Transfer:
    return resources_pb2.Transfer(
        transfer_id=t.transfer_id,
        from_account=account_pb(t.from_account),
        to_account=account_pb(t.to_account),
        amount=t.amount,
        kind=enum_value(resources_pb2.TransferKind, "TRANSFER_KIND_", t.kind),
        reference=t.reference,
        posted_at=timestamp(t.posted_at),
        memo=t.memo,
    )


def entry_pb(e: model.Entry) -> resources_pb2.Entry:
    return resources_pb2.Entry(
        entry_id=e.entry_id,
        order_id=e.order_id,
        shop_id=e.shop_id,
        state=enum_value(resources_pb2.EntryState, "ENTRY_STATE_", e.state),
        opened_at=timestamp(e.opened_at),
        expires_at=timestamp(e.expires_at),
        operator_id=e.operator_id,
        note=e.note,
        policy_version=e.policy_version,
        used_at=timestamp(e.used_at),
        application_id=e.application_id or "",
        closed_at=timestamp(e.closed_at),
    )


def application_pb(a: model.Application) -> resources_pb2.Application:
    return resources_pb2.Application(
        application_id=a.application_id,
        order_id=a.order_id,
        entry_id=a.entry_id,
        buyer_id=a.buyer_id,
        amount=a.amount,
        reason=a.reason,
        state=enum_value(resources_pb2.ApplicationState, "APPLICATION_STATE_", a.state),
        filed_at=timestamp(a.filed_at),
    )


def violation_pb(v: model.Violation) -> resources_pb2.Violation:
    return resources_pb2.Violation(
        code=resources_pb2.ReasonCode.Value(v.code.value), description=v.description
    )


def eligibility_pb(eligibility) -> entry_pb2.CheckEligibilityResponse:
    decision, facts = eligibility.decision, eligibility.facts
    order = facts.order
    return entry_pb2.CheckEligibilityResponse(
        eligible=decision.eligible,
        violations=[violation_pb(v) for v in decision.violations],
        facts=entry_pb2.EligibilityFacts(
            refundable_amount=order.refundable_amount,
            wallet_balance=facts.wallet_balance,
            deposit_balance=facts.deposit_balance,
            days_since_completion=decision.days_since_completion,
            completed_at=timestamp(order.completed_at),
            after_sales_ends_at=timestamp(order.after_sales_ends_at),
            shop_status=enum_value(resources_pb2.ShopStatus, "SHOP_STATUS_", facts.shop.status),
            order_kind=enum_value(resources_pb2.OrderKind, "ORDER_KIND_", order.kind),
            marketing_campaign=order.marketing_campaign,
            operator_role=enum_value(resources_pb2.StaffRole, "STAFF_ROLE_", facts.operator.role),
            open_entry_id=decision.already_open.entry_id if decision.already_open else "",
            checked_at=timestamp(facts.now),
        ),
        policy_version=eligibility.policy_version,
    )


# --- Clawback -------------------------------------------------------------------------------------


def _page_size(f: Fields, value: int) -> int:
    if value < 0:
        f.bad("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def record_refund(request: clawback_pb2.RecordRefundRequest) -> model.Refund:
    f = Fields()
    f.request_id("request_id", request.request_id)
    started_at = f.time("started_at", request, "started_at", required=True)
    paid_at = f.time("paid_at", request, "paid_at", required=True)
    if started_at and paid_at and paid_at < started_at:
        f.bad("paid_at", "may not be before started_at")
    refund = model.Refund(
        refund_id=f.id("refund_id", request.refund_id),
        order_id=f.id("order_id", request.order_id),
        application_id=f.id("application_id", request.application_id, required=False),
        amount=f.positive("amount", request.amount),
        started_at=started_at,
        paid_at=paid_at,
    )
    f.raise_if_any()
    return refund


def preview_clawback(request: clawback_pb2.PreviewClawbackRequest):
    f = Fields()
    order_id = f.id("order_id", request.order_id)
    amount = f.positive("amount", request.amount)
    started_at = f.time("started_at", request, "started_at", required=False)
    f.raise_if_any()
    return order_id, amount, started_at


def get_clawback(request: clawback_pb2.GetClawbackRequest) -> dict[str, str]:
    f = Fields()
    key = request.WhichOneof("key")
    if key is None:
        f.bad("clawback_id", "clawback_id or refund_id is required")
    else:
        f.id(key, getattr(request, key))
    f.raise_if_any()
    return {key: getattr(request, key)}


def list_clawbacks(request: clawback_pb2.ListClawbacksRequest):
    f = Fields()
    shop_id = f.id("shop_id", request.shop_id)
    state = None
    if request.state != 0:
        state = f.enum(
            "state",
            resources_pb2.ClawbackState,
            request.state,
            model.ClawbackState,
            "CLAWBACK_STATE_",
        )
    start = f.time("start_time", request, "start_time", required=False)
    end = f.time("end_time", request, "end_time", required=False)
    if start and end and end < start:
        f.bad("end_time", "may not be before start_time")
    page_size = _page_size(f, request.page_size)
    f.raise_if_any()
    return shop_id, state, start, end, page_size


def get_balances(request: clawback_pb2.GetBalancesRequest):
    f = Fields()
    refs = [account_ref(f, f"accounts[{i}]", a) for i, a in enumerate(request.accounts)]
    owner_id = f.id("owner_id", request.owner_id, required=False)
    if not refs and not owner_id:
        f.bad("accounts", "name accounts or an owner_id")
    f.raise_if_any()
    return refs, owner_id or None


def list_transfers(request: clawback_pb2.ListTransfersRequest):
    f = Fields()
    ref = None
    if not request.HasField("account"):
        f.bad("account", "is required")
    else:
        ref = account_ref(f, "account", request.account)
    page_size = _page_size(f, request.page_size)
    f.raise_if_any()
    return ref, page_size


def balance_pb(ref: model.AccountRef, balance: int) -> resources_pb2.Balance:
    return resources_pb2.Balance(account=account_pb(ref), balance=balance)


def clawback_pb(c: model.RefundClawback) -> resources_pb2.RefundClawback:
    return resources_pb2.RefundClawback(
        clawback_id=c.clawback_id,
        refund_id=c.refund.refund_id,
        order_id=c.refund.order_id,
        shop_id=c.shop_id,
        application_id=c.refund.application_id,
        refund_amount=c.refund.amount,
        refund_started_at=timestamp(c.refund.started_at),
        refund_paid_at=timestamp(c.refund.paid_at) if c.refund.refund_id else None,
        refunded_before=c.refunded_before,
        refunded_after=c.refunded_after,
        paid_from_wallet=c.payment.from_wallet,
        paid_from_deposit=c.payment.from_deposit,
        state=enum_value(resources_pb2.ClawbackState, "CLAWBACK_STATE_", c.state),
        reasons=[violation_pb(v) for v in c.reasons],
        lines=[
            resources_pb2.ClawbackLine(
                line_no=line.line_no,
                payee_kind=enum_value(resources_pb2.PayeeKind, "PAYEE_KIND_", line.payee_kind),
                payee_id=line.payee_id,
                account=account_pb(line.account),
                commission=line.commission,
                due=line.due,
                recovered=line.recovered,
                outstanding=line.outstanding,
                state=enum_value(
                    resources_pb2.ClawbackLineState, "CLAWBACK_LINE_STATE_", line.state
                ),
            )
            for line in c.lines
        ],
        due=c.due,
        recovered=c.recovered,
        outstanding=c.due - c.recovered,
        policy_version=c.policy_version,
        created_at=timestamp(c.created_at),
    )
