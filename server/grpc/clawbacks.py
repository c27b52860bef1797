"""The Clawback service: refunds paid, what they recover (TR/佣金退回), balances and transfers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aftersales.v1 import clawback_pb2, clawback_pb2_grpc, resources_pb2
from server.domain import model
from server.grpc.callers import actor, viewer
from server.grpc.common import (
    MAX_BALANCE_ACCOUNTS,
    Fields,
    Servicer,
    filled,
    page_size,
    present,
)
from server.grpc.resources import (
    account_ref,
    balance_fields,
    clawback_fields,
    clawback_pb,
    transfer_fields,
)


class ClawbackServicer(clawback_pb2_grpc.ClawbackServicer, Servicer):
    def RecordRefund(
        self, request: clawback_pb2.RecordRefundRequest, context: Any
    ) -> resources_pb2.RefundClawback:
        refund = record_refund(request)
        return self.once(
            "RecordRefund",
            request,
            resources_pb2.RefundClawback,
            lambda: clawback_pb(self.service.record_refund(refund, actor())),
        )

    def PreviewClawback(
        self, request: clawback_pb2.PreviewClawbackRequest, context: Any
    ) -> resources_pb2.RefundClawback:
        order_id, amount, started_at = preview_clawback(request)
        return clawback_pb(self.service.preview_clawback(order_id, amount, started_at, viewer()))

    def GetClawback(
        self, request: clawback_pb2.GetClawbackRequest, context: Any
    ) -> resources_pb2.RefundClawback:
        key = get_clawback(request)
        return clawback_pb(
            self.service.get_clawback(
                clawback_id=key.get("clawback_id"), refund_id=key.get("refund_id"), viewer=viewer()
            )
        )

    def ListClawbacks(
        self, request: clawback_pb2.ListClawbacksRequest, context: Any
    ) -> clawback_pb2.ListClawbacksResponse:
        shop_id, state, start, end, size = list_clawbacks(request)
        page = self.service.list_clawbacks(
            shop_id=shop_id,
            state=state,
            start=start,
            end=end,
            page_size=size,
            page_token=request.page_token,
            viewer=viewer(),
        )
        response = clawback_pb2.ListClawbacksResponse()
        held = filled(response, "clawbacks", page.items, clawback_fields)
        response.next_page_token = page.cut(held).next_page_token
        return response

    def GetBalances(
        self, request: clawback_pb2.GetBalancesRequest, context: Any
    ) -> clawback_pb2.GetBalancesResponse:
        accounts, owner_id = get_balances(request)
        balances = self.service.balances(accounts, owner_id, viewer())
        response = clawback_pb2.GetBalancesResponse()
        for ref, amount in balances.items():
            response.balances.add(**balance_fields(ref, amount))
        return response

    def ListTransfers(
        self, request: clawback_pb2.ListTransfersRequest, context: Any
    ) -> clawback_pb2.ListTransfersResponse:
        account, size = list_transfers(request)
        page = self.service.list_transfers(account, size, request.page_token, viewer())
        response = clawback_pb2.ListTransfersResponse(next_page_token=page.next_page_token)
        for t in page.items:
            response.transfers.add(**transfer_fields(t))
        return response


# --- Requests -------------------------------------------------------------------------------------


def record_refund(request: clawback_pb2.RecordRefundRequest) -> model.Refund:
    f = Fields(request)
    started_at = f.time("started_at", request, "started_at", required=True)
    paid_at = f.time("paid_at", request, "paid_at", required=True)
    refund_id = f.id("refund_id", request.refund_id)
    order_id = f.id("order_id", request.order_id)
    application_id = f.id("application_id", request.application_id, required=False)
    f.raise_if_any()
    return model.Refund(
        refund_id, order_id, application_id, request.amount, present(started_at), present(paid_at)
    )


def preview_clawback(
    request: clawback_pb2.PreviewClawbackRequest,
) -> tuple[str, int, datetime | None]:
    f = Fields(request)
    order_id = f.id("order_id", request.order_id)
    started_at = f.time("started_at", request, "started_at", required=False)
    f.raise_if_any()
    return order_id, request.amount, started_at


def get_clawback(request: clawback_pb2.GetClawbackRequest) -> dict[str, str]:
    f = Fields(request)
    key = request.WhichOneof("key")
    if key is not None:
        f.id(key, getattr(request, key))
    f.raise_if_any()
    name = present(key)
    return {name: getattr(request, name)}


def list_clawbacks(
    request: clawback_pb2.ListClawbacksRequest,
) -> tuple[str, model.ClawbackState | None, datetime | None, datetime | None, int]:
    f = Fields(request)
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
    f.raise_if_any()
    return shop_id, state, start, end, page_size(request.page_size)


def get_balances(
    request: clawback_pb2.GetBalancesRequest,
) -> tuple[list[model.AccountRef], str | None]:
    f = Fields(request)
    accounts = request.accounts[:MAX_BALANCE_ACCOUNTS]
    refs = [account_ref(f, f"accounts[{i}]", a) for i, a in enumerate(accounts)]
    owner_id = f.id("owner_id", request.owner_id, required=False)
    f.raise_if_any()
    return [present(ref) for ref in refs], owner_id or None


def list_transfers(
    request: clawback_pb2.ListTransfersRequest,
) -> tuple[model.AccountRef, int]:
    f = Fields(request)
    ref = account_ref(f, "account", request.account) if request.HasField("account") else None
    f.raise_if_any()
    return present(ref), page_size(request.page_size)
