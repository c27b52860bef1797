"""The AfterSalesEntry service: the merchant checks and opens the entry, the buyer files."""

from __future__ import annotations

from typing import Any

from google.rpc import code_pb2

from aftersales.v1 import entry_pb2, entry_pb2_grpc, resources_pb2
from server.domain import model
from server.domain.access import PersonKind, acting_person, authenticated_person
from server.domain.errors import NotFound
from server.grpc.callers import actor, current_caller, viewer
from server.grpc.common import (
    MAX_BATCH_ORDERS,
    Fields,
    Servicer,
    enum_value,
    page_size,
    timestamp,
)
from server.grpc.resources import application_pb, entry_fields, entry_pb, violation_pb
from server.service import Eligibility

GET_BUYER_ORDER_ENTRY = "aftersales.v1.AfterSalesEntry/GetBuyerOrderEntry"


class AfterSalesEntryServicer(entry_pb2_grpc.AfterSalesEntryServicer, Servicer):
    def CheckEligibility(
        self, request: entry_pb2.CheckEligibilityRequest, context: Any
    ) -> entry_pb2.CheckEligibilityResponse:
        operator = acting_person(current_caller.get(), PersonKind.STAFF, request.operator_id)
        order_id, operator_id = check_eligibility(request, operator)
        return eligibility_pb(self.service.check_eligibility(order_id, operator_id))

    def OpenEntry(self, request: entry_pb2.OpenEntryRequest, context: Any) -> resources_pb2.Entry:
        operator = acting_person(
            current_caller.get(), PersonKind.STAFF, request.operator_id, changes=True
        )
        order_id, operator_id, note = open_entry(request, operator)
        return self.once(
            "OpenEntry",
            request,
            resources_pb2.Entry,
            lambda: entry_pb(self.service.open_entry(order_id, operator_id, note, actor())),
        )

    def GetEntry(self, request: entry_pb2.GetEntryRequest, context: Any) -> resources_pb2.Entry:
        return entry_pb(self.service.get_entry(get_entry(request), viewer()))

    def ListEntries(
        self, request: entry_pb2.ListEntriesRequest, context: Any
    ) -> entry_pb2.ListEntriesResponse:
        shop_id, order_id, state, size = list_entries(request)
        page = self.service.list_entries(
            shop_id=shop_id,
            order_id=order_id,
            state=state,
            page_size=size,
            page_token=request.page_token,
            viewer=viewer(),
        )
        response = entry_pb2.ListEntriesResponse(next_page_token=page.next_page_token)
        for e in page.items:
            response.entries.add(**entry_fields(e))
        return response

    def ApplyAfterSales(
        self, request: entry_pb2.ApplyAfterSalesRequest, context: Any
    ) -> resources_pb2.Application:
        buyer = acting_person(
            current_caller.get(), PersonKind.BUYER, request.buyer_id, changes=True
        )
        order_id, buyer_id, amount, reason = apply_after_sales(request, buyer)
        return self.once(
            "ApplyAfterSales",
            request,
            resources_pb2.Application,
            lambda: application_pb(
                self.service.apply(order_id, buyer_id, amount, reason, actor(), viewer())
            ),
        )

    def BatchCheckEligibility(
        self, request: entry_pb2.BatchCheckEligibilityRequest, context: Any
    ) -> entry_pb2.BatchCheckEligibilityResponse:
        operator = acting_person(current_caller.get(), PersonKind.STAFF, request.operator_id)
        order_ids, operator_id = batch_check_eligibility(request, operator)
        found = self.service.check_eligibilities(order_ids, operator_id)
        return entry_pb2.BatchCheckEligibilityResponse(
            results=[
                order_eligibility_pb(order_id, item)
                for order_id, item in zip(order_ids, found, strict=True)
            ]
        )

    def GetBuyerOrderEntry(
        self, request: entry_pb2.GetBuyerOrderEntryRequest, context: Any
    ) -> entry_pb2.BuyerOrderEntry:
        buyer_id = authenticated_person(
            current_caller.get(), PersonKind.BUYER, GET_BUYER_ORDER_ENTRY
        )
        order_id = get_buyer_order_entry(request)
        entry = self.service.buyer_order_entry(order_id, buyer_id)
        return entry_pb2.BuyerOrderEntry(
            order_id=order_id, entry=None if entry is None else buyer_entry_pb(entry)
        )


# --- Requests -------------------------------------------------------------------------------------


# The acting staff member or buyer comes from the caller's token when it has one (acting_person);
# the request's field then only has to agree with it.


def check_eligibility(
    request: entry_pb2.CheckEligibilityRequest, operator: str | None = None
) -> tuple[str, str]:
    f = Fields(request)
    order_id = f.id("order_id", request.order_id)
    operator_id = f.id("operator_id", request.operator_id if operator is None else operator)
    f.raise_if_any()
    return order_id, operator_id


def batch_check_eligibility(
    request: entry_pb2.BatchCheckEligibilityRequest, operator: str | None = None
) -> tuple[list[str], str]:
    f = Fields(request)
    order_ids = list(request.order_ids[:MAX_BATCH_ORDERS])
    for i, order_id in enumerate(order_ids):
        f.id(f"order_ids[{i}]", order_id)
    operator_id = f.id("operator_id", request.operator_id if operator is None else operator)
    f.raise_if_any()
    return order_ids, operator_id


def get_buyer_order_entry(request: entry_pb2.GetBuyerOrderEntryRequest) -> str:
    f = Fields(request)
    order_id = f.id("order_id", request.order_id)
    f.raise_if_any()
    return order_id


def open_entry(
    request: entry_pb2.OpenEntryRequest, operator: str | None = None
) -> tuple[str, str, str]:
    f = Fields(request)
    order_id = f.id("order_id", request.order_id)
    operator_id = f.id("operator_id", request.operator_id if operator is None else operator)
    note = f.text("note", request.note)
    f.raise_if_any()
    return order_id, operator_id, note


def get_entry(request: entry_pb2.GetEntryRequest) -> str:
    f = Fields(request)
    entry_id = f.id("entry_id", request.entry_id)
    f.raise_if_any()
    return entry_id


def list_entries(
    request: entry_pb2.ListEntriesRequest,
) -> tuple[str | None, str | None, model.EntryState | None, int]:
    f = Fields(request)
    shop_id = f.id("shop_id", request.shop_id, required=False) or None
    order_id = f.id("order_id", request.order_id, required=False) or None
    state = None
    if request.state != 0:
        state = f.enum(
            "state", resources_pb2.EntryState, request.state, model.EntryState, "ENTRY_STATE_"
        )
    f.raise_if_any()
    return shop_id, order_id, state, page_size(request.page_size)


def apply_after_sales(
    request: entry_pb2.ApplyAfterSalesRequest, buyer: str | None = None
) -> tuple[str, str, int, str]:
    f = Fields(request)
    order_id = f.id("order_id", request.order_id)
    buyer_id = f.id("buyer_id", request.buyer_id if buyer is None else buyer)
    reason = f.text("reason", request.reason)
    f.raise_if_any()
    return order_id, buyer_id, request.amount, reason


def eligibility_pb(eligibility: Eligibility) -> entry_pb2.CheckEligibilityResponse:
    decision, facts = eligibility.decision, eligibility.facts
    order = facts.order
    return entry_pb2.CheckEligibilityResponse(
        eligible=decision.eligible,
        violations=[violation_pb(v) for v in decision.violations],
        facts=entry_pb2.EligibilityFacts(
            refundable_amount=order.refundable_amount,
            wallet_balance=facts.wallet_balance if eligibility.shows_balances else None,
            deposit_balance=facts.deposit_balance if eligibility.shows_balances else None,
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


def order_eligibility_pb(
    order_id: str, found: Eligibility | NotFound
) -> entry_pb2.OrderEligibility:
    if isinstance(found, NotFound):
        return entry_pb2.OrderEligibility(
            order_id=order_id,
            error=entry_pb2.ItemError(code=code_pb2.NOT_FOUND, message=str(found)),
        )
    return entry_pb2.OrderEligibility(order_id=order_id, eligibility=eligibility_pb(found))


def buyer_entry_pb(entry: model.Entry) -> entry_pb2.BuyerEntry:
    """What the buyer's order page shows of an entry: its state and deadline; not who opened it,
    the merchant's note or anything of the shop's money."""
    return entry_pb2.BuyerEntry(
        state=enum_value(resources_pb2.EntryState, "ENTRY_STATE_", entry.state),
        opened_at=timestamp(entry.opened_at),
        expires_at=timestamp(entry.expires_at),
        used_at=timestamp(entry.used_at),
    )
