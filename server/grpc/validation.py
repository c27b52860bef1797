"""The rules the protos state (buf.validate: required fields, lengths, ranges, item counts, the
request_id pattern, cross-field CEL rules), checked by protovalidate, the library that enforces
the same rules in every language: what a Go or Java caller validates is what this server refuses.

A violation is named as the BadRequest names it: the field's path ("order.commission_lines[2].
amount"), and protovalidate's message as its description. A message-level rule names no field; it
is reported on the field RULE_FIELDS gives for its id, inside the message it belongs to. A oneof
none of whose fields is set is reported on its first field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf.message import Message

# The field each message-level (CEL) rule of the protos is reported on, by the rule's id.
RULE_FIELDS = {
    "shop_id_or_order_id": "shop_id",
    "paid_at_not_before_started_at": "paid_at",
    "end_time_not_before_start_time": "end_time",
    "accounts_or_owner_id": "accounts",
    "account_not_external": "account.kind",
    "owner_id_by_kind": "owner_id",
    "payee_id_by_kind": "payee_id",
    "prior_refunded_within_paid": "prior_refunded_amount",
    "completed_not_before_created": "completed_at",
    "after_sales_ends_once_completed": "after_sales_ends_at",
    "after_sales_ends_not_before_completed": "after_sales_ends_at",
}

# One validator for the process: it compiles each message type's rules once and keeps them.
_validator = protovalidate.Validator()


def violations(request: Message) -> list[tuple[str, str]]:
    """(field path, description) of every rule of the protos that `request` breaks."""
    return [_named(request, v.proto) for v in _validator.collect_violations(request)]


def _named(request: Message, violation: Any) -> tuple[str, str]:
    elements = list(violation.field.elements) if violation.field is not None else []
    path = [_element(e) for e in elements]
    if elements and not elements[-1].field_number:
        # A oneof: none of its fields is set.
        message = _message_at(request, elements[:-1])
        oneof = message.DESCRIPTOR.oneofs_by_name[elements[-1].field_name]
        path[-1] = oneof.fields[0].name
    elif violation.rule_id in RULE_FIELDS:
        path.append(RULE_FIELDS[violation.rule_id])
    return ".".join(path), violation.message


def _element(element: Any) -> str:
    subscript = element.subscript
    return element.field_name if subscript is None else f"{element.field_name}[{subscript.value}]"


def _message_at(message: Message, elements: Iterable[Any]) -> Message:
    for element in elements:
        message = getattr(message, element.field_name)
        if element.subscript is not None:
            message = message[element.subscript.value]  # type: ignore[index]
    return message
