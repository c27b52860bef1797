"""The Sync service: upstream systems feed shops, staff, orders and money from outside."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from google.protobuf import timestamp_pb2

from aftersales.v1 import resources_pb2, sync_pb2, sync_pb2_grpc
from server.domain import model, rules
from server.grpc.callers import actor
from server.grpc.common import MAX_COMMISSION_LINES, Fields, Servicer, present
from server.grpc.resources import account_ref, balance_pb, order_pb, shop_pb, staff_pb, transfer_pb


class SyncServicer(sync_pb2_grpc.SyncServicer, Servicer):
    def PutShop(self, request: sync_pb2.PutShopRequest, context: Any) -> resources_pb2.Shop:
        return shop_pb(self.service.put_shop(replace(shop(request), recorded_by=actor())))

    def PutStaff(self, request: sync_pb2.PutStaffRequest, context: Any) -> resources_pb2.Staff:
        return staff_pb(self.service.put_staff(replace(staff(request), recorded_by=actor())))

    def PutOrder(self, request: sync_pb2.PutOrderRequest, context: Any) -> resources_pb2.Order:
        return order_pb(self.service.put_order(replace(order(request), recorded_by=actor())))

    def PostFunds(
        self, request: sync_pb2.PostFundsRequest, context: Any
    ) -> sync_pb2.PostFundsResponse:
        request_id, account, amount, memo = post_funds(request)

        def run() -> sync_pb2.PostFundsResponse:
            posted = self.service.post_funds(request_id, account, amount, memo, actor())
            return sync_pb2.PostFundsResponse(
                transfer=transfer_pb(posted.transfer),
                balance=balance_pb(account, posted.balance),
                debts_pending=posted.debts_pending,
            )

        return self.once("PostFunds", request, sync_pb2.PostFundsResponse, run)


# --- Requests -------------------------------------------------------------------------------------


def shop(request: sync_pb2.PutShopRequest) -> model.Shop:
    f = Fields(request)
    if not request.HasField("shop"):
        f.raise_if_any()
    s = request.shop
    shop_id = f.id("shop.shop_id", s.shop_id)
    name = f.text("shop.name", s.name)
    status = f.enum(
        "shop.status", resources_pb2.ShopStatus, s.status, model.ShopStatus, "SHOP_STATUS_"
    )
    opened = f.time("shop.wallet_opened_at", s, "wallet_opened_at", required=False)
    f.raise_if_any()
    return model.Shop(shop_id, name, present(status), opened, s.version)


def staff(request: sync_pb2.PutStaffRequest) -> model.Staff:
    f = Fields(request)
    if not request.HasField("staff"):
        f.raise_if_any()
    s = request.staff
    staff_id = f.id("staff.staff_id", s.staff_id)
    shop_id = f.id("staff.shop_id", s.shop_id)
    role = f.enum("staff.role", resources_pb2.StaffRole, s.role, model.StaffRole, "STAFF_ROLE_")
    name = f.text("staff.name", s.name)
    f.raise_if_any()
    return model.Staff(staff_id, shop_id, present(role), name, s.version)


def order(request: sync_pb2.PutOrderRequest) -> model.Order:
    """PutOrder's request, read by hand against the same rules as the protos state: checked by
    protovalidate, the CEL rules of Order and CommissionLine alone cost about 0.1 ms a call (they
    need the message serialized), more than all of this. tests/unit/test_proto_rules.py holds
    both to naming the same fields."""
    f = Fields()
    if not request.HasField("order"):
        f.bad("order", "is required")
        f.raise_if_any()
    o = request.order
    if len(o.commission_lines) > MAX_COMMISSION_LINES:
        # Refused for that alone, before any line is read, as every list past its bound is.
        f.bad(
            "order.commission_lines",
            f"has {len(o.commission_lines)} lines; at most {MAX_COMMISSION_LINES}",
        )
        f.raise_if_any()
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
        fee = kind is model.PayeeKind.TECHNICAL_SERVICE_FEE
        f.id(f"{path}.payee_id", line.payee_id, required=not fee)
        f.amount(f"{path}.amount", line.amount)
        lines.append(model.CommissionLine(kind, line.payee_id, line.amount))  # type: ignore[arg-type]
    paid = o.paid_amount
    f.amount("order.paid_amount", paid)
    if o.prior_refunded_amount < 0 or (paid > 0 and o.prior_refunded_amount > paid):
        f.bad("order.prior_refunded_amount", "must be between zero and paid_amount")
    for field, problem in rules.commission_line_problems(lines, paid):
        f.bad(f"order.{field}", problem)
    completed_at = f.time("order.completed_at", o, "completed_at", required=False)
    ends_at = f.time(
        "order.after_sales_ends_at", o, "after_sales_ends_at", required=completed_at is not None
    )
    if (
        completed_at is not None
        and ends_at is not None
        and _earlier(o.after_sales_ends_at, o.completed_at)
    ):
        f.bad("order.after_sales_ends_at", "may not be before completed_at")
    created_at = f.time("order.created_at", o, "created_at", required=True)
    if (
        created_at is not None
        and completed_at is not None
        and _earlier(o.completed_at, o.created_at)
    ):
        f.bad("order.completed_at", "may not be before created_at")
    order_id = f.id("order.order_id", o.order_id)
    shop_id = f.id("order.shop_id", o.shop_id)
    buyer_id = f.id("order.buyer_id", o.buyer_id)
    order_kind = f.enum(
        "order.kind", resources_pb2.OrderKind, o.kind, model.OrderKind, "ORDER_KIND_"
    )
    category_id = f.id("order.category_id", o.category_id, required=False)
    if o.version < 0:
        f.bad("order.version", f"must not be negative, not {o.version}")
    f.raise_if_any()
    return model.Order(
        order_id=order_id,
        shop_id=shop_id,
        buyer_id=buyer_id,
        kind=present(order_kind),
        marketing_campaign=o.marketing_campaign,
        category_id=category_id,
        paid_amount=paid,
        prior_refunded_amount=o.prior_refunded_amount,
        created_at=present(created_at),
        completed_at=completed_at,
        after_sales_ends_at=ends_at,
        commission_lines=tuple(lines),
        version=o.version,
    )


def _earlier(a: timestamp_pb2.Timestamp, b: timestamp_pb2.Timestamp) -> bool:
    """Whether `a` is before `b`, to the nanosecond as the protos' rules compare them (the
    times read are kept to the microsecond)."""
    return (a.seconds, a.nanos) < (b.seconds, b.nanos)


def post_funds(request: sync_pb2.PostFundsRequest) -> tuple[str, model.AccountRef, int, str]:
    f = Fields(request)
    ref = account_ref(f, "account", request.account) if request.HasField("account") else None
    f.text("memo", request.memo)
    f.raise_if_any()
    return request.request_id, present(ref), request.amount, request.memo
