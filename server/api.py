"""The gRPC servicers: translate requests to service calls and results back; no rule lives here.

Refusals travel as server.errors exceptions; the interceptor in server/app.py turns them into
rich statuses, so each method reads as: validate, call, render.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    resources_pb2,
    sync_pb2,
    sync_pb2_grpc,
)
from server import convert
from server.errors import InvalidArgument
from server.service import Service
from server.store import fingerprint, to_us


class _Idempotent:
    def __init__(self, service: Service) -> None:
        self.service = service

    def once(
        self,
        method: str,
        request: Message,
        response_type: type[Message],
        run: Callable[[], Message],
    ):
        """run() once per request_id: a retry of the same request gets the stored response."""
        data = self.service.store.idempotent(
            request.request_id,
            method,
            fingerprint(request.SerializeToString(deterministic=True)),
            lambda: run().SerializeToString(deterministic=True),
            self.service.now(),
        )
        return response_type.FromString(data)

    def _page_token(self, token: str, filters: str, types: tuple[type, ...]) -> tuple | None:
        if not token:
            return None
        position = self.service.store.decode_page_token(token, filters, types)
        if position is None:
            raise InvalidArgument(
                [("page_token", "is not a page token of this listing with these filters")]
            )
        return position


class SyncServicer(sync_pb2_grpc.SyncServicer, _Idempotent):
    def PutShop(self, request, context):
        return convert.shop_pb(self.service.put_shop(convert.shop(request)))

    def PutStaff(self, request, context):
        return convert.staff_pb(self.service.put_staff(convert.staff(request)))

    def PutOrder(self, request, context):
        return convert.order_pb(self.service.put_order(convert.order(request)))

    def PostFunds(self, request, context):
        request_id, account, amount, memo = convert.post_funds(request)

        def run():
            posted = self.service.post_funds(request_id, account, amount, memo)
            return sync_pb2.PostFundsResponse(
                transfer=convert.transfer_pb(posted.transfer),
                balance=resources_pb2.Balance(
                    account=convert.account_pb(account), balance=posted.balance
                ),
            )

        return self.once("PostFunds", request, sync_pb2.PostFundsResponse, run)


class AfterSalesEntryServicer(entry_pb2_grpc.AfterSalesEntryServicer, _Idempotent):
    def CheckEligibility(self, request, context):
        order_id, operator_id = convert.check_eligibility(request)
        return convert.eligibility_pb(self.service.check_eligibility(order_id, operator_id))

    def OpenEntry(self, request, context):
        order_id, operator_id, note = convert.open_entry(request)
        return self.once(
            "OpenEntry",
            request,
            resources_pb2.Entry,
            lambda: convert.entry_pb(self.service.open_entry(order_id, operator_id, note)),
        )

    def GetEntry(self, request, context):
        return convert.entry_pb(self.service.get_entry(convert.get_entry(request)))

    def ListEntries(self, request, context):
        shop_id, order_id, state, page_size = convert.list_entries(request)
        filters = f"{shop_id or ''}|{order_id or ''}|{request.state}"
        after = self._page_token(request.page_token, filters, (int, str))
        entries, more = self.service.list_entries(
            shop_id=shop_id, order_id=order_id, state=state, after=after, limit=page_size
        )
        next_token = ""
        if more:
            last = entries[-1]
            next_token = self.service.store.encode_page_token(
                (to_us(last.opened_at), last.entry_id), filters
            )
        return entry_pb2.ListEntriesResponse(
            entries=[convert.entry_pb(e) for e in entries], next_page_token=next_token
        )

    def ApplyAfterSales(self, request, context):
        order_id, buyer_id, amount, reason = convert.apply_after_sales(request)
        return self.once(
            "ApplyAfterSales",
            request,
            resources_pb2.Application,
            lambda: convert.application_pb(self.service.apply(order_id, buyer_id, amount, reason)),
        )


class ClawbackServicer(clawback_pb2_grpc.ClawbackServicer, _Idempotent):
    def RecordRefund(self, request, context):
        refund = convert.record_refund(request)
        return self.once(
            "RecordRefund",
            request,
            resources_pb2.RefundClawback,
            lambda: convert.clawback_pb(self.service.record_refund(refund)),
        )

    def PreviewClawback(self, request, context):
        order_id, amount, started_at = convert.preview_clawback(request)
        return convert.clawback_pb(self.service.preview_clawback(order_id, amount, started_at))

    def GetClawback(self, request, context):
        return convert.clawback_pb(self.service.get_clawback(**convert.get_clawback(request)))

    def ListClawbacks(self, request, context):
        shop_id, state, start, end, page_size = convert.list_clawbacks(request)
        filters = "|".join(
            [
                shop_id,
                str(request.state),
                request.start_time.ToJsonString() if start else "",
                request.end_time.ToJsonString() if end else "",
            ]
        )
        after = self._page_token(request.page_token, filters, (int, str))
        clawbacks, more = self.service.list_clawbacks(
            shop_id=shop_id, state=state, start=start, end=end, after=after, limit=page_size
        )
        next_token = ""
        if more:
            last = clawbacks[-1]
            next_token = self.service.store.encode_page_token(
                (to_us(last.created_at), last.clawback_id), filters
            )
        return clawback_pb2.ListClawbacksResponse(
            clawbacks=[convert.clawback_pb(c) for c in clawbacks], next_page_token=next_token
        )

    def GetBalances(self, request, context):
        accounts, owner_id = convert.get_balances(request)
        balances = self.service.balances(accounts, owner_id)
        return clawback_pb2.GetBalancesResponse(
            balances=[convert.balance_pb(ref, amount) for ref, amount in balances.items()]
        )

    def ListTransfers(self, request, context):
        account, page_size = convert.list_transfers(request)
        filters = f"{account.kind.value}|{account.owner_id}"
        after = self._page_token(request.page_token, filters, (int,))
        transfers, more = self.service.list_transfers(
            account, after[0] if after else None, page_size
        )
        next_token = (
            self.service.store.encode_page_token((int(transfers[-1].transfer_id),), filters)
            if more
            else ""
        )
        return clawback_pb2.ListTransfersResponse(
            transfers=[convert.transfer_pb(t) for t in transfers], next_page_token=next_token
        )
