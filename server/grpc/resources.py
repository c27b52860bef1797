"""Domain -> the messages of resources.proto, and the account references requests name."""

from __future__ import annotations

from aftersales.v1 import resources_pb2
from server.domain import model
from server.grpc.common import Fields, enum_value, timestamp


def account_ref(
    f: Fields, field: str, message: resources_pb2.AccountRef
) -> model.AccountRef | None:
    """The account a request names; None (and the field marked bad) when its kind is not."""
    kind = f.enum(
        f"{field}.kind", resources_pb2.AccountKind, message.kind, model.AccountKind, "ACCOUNT_KIND_"
    )
    if kind is None:
        return None
    # Whether the kind has an owner is the protos' rule (AccountRef's owner_id_by_kind).
    f.id(f"{field}.owner_id", message.owner_id, required=False)
    return model.AccountRef(kind, message.owner_id)


def actor_pb(a: model.Actor) -> resources_pb2.Actor | None:
    """Who recorded it; unset where nobody was authenticated."""
    if a == model.NOBODY:
        return None
    return resources_pb2.Actor(service=a.service, person=a.person)


def shop_pb(s: model.Shop) -> resources_pb2.Shop:
    return resources_pb2.Shop(
        shop_id=s.shop_id,
        name=s.name,
        status=enum_value(resources_pb2.ShopStatus, "SHOP_STATUS_", s.status),
        wallet_opened_at=timestamp(s.wallet_opened_at),
        version=s.version,
        recorded_by=actor_pb(s.recorded_by),
    )


def staff_pb(s: model.Staff) -> resources_pb2.Staff:
    return resources_pb2.Staff(
        staff_id=s.staff_id,
        shop_id=s.shop_id,
        role=enum_value(resources_pb2.StaffRole, "STAFF_ROLE_", s.role),
        name=s.name,
        version=s.version,
        recorded_by=actor_pb(s.recorded_by),
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
        recorded_by=actor_pb(o.recorded_by),
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
        recorded_by=actor_pb(t.recorded_by),
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
        recorded_by=actor_pb(e.recorded_by),
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
        recorded_by=actor_pb(a.recorded_by),
    )


def violation_pb(v: model.Violation) -> resources_pb2.Violation:
    return resources_pb2.Violation(
        code=resources_pb2.ReasonCode.Value(v.code.value), description=v.description
    )


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
        outstanding=c.outstanding,
        policy_version=c.policy_version,
        created_at=timestamp(c.created_at),
        recorded_by=actor_pb(c.recorded_by),
    )
