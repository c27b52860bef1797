"""The rules the protos state (buf.validate: required fields, lengths, ranges, item counts, the
request_id pattern, cross-field CEL rules), checked by protovalidate, the library that enforces
the same rules in every language: what a Go or Java caller validates is what this server refuses.

A violation is named as the BadRequest names it: the field's path ("order.commission_lines[2].
amount"), and protovalidate's message as its description. A message-level rule names no field; it
is reported on the field RULE_FIELDS gives for its id, inside the message it belongs to. A oneof
none of whose fields is set is reported on its first field.

A list longer than its bound (`max_items`) is refused for that alone, before any of its items is
read: checking each item of a list that may hold millions (a request may be 4 MiB) is work the
caller could make without bound.

One rule is checked by hand, as no proto can state it for every id alike, including the ids a
person's token names (tokens.py): what makes an id (id_fault).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from buf.validate import validate_pb2

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

# The longest id (the protos' max_len, which a token's subject is held to as well).
MAX_ID = 128


def id_fault(value: str) -> str | None:
    """What is wrong with a non-empty id, or None: at most MAX_ID characters, printable, no
    surrounding spaces (an id that differs from the one meant only by them would name another
    record)."""
    if len(value) > MAX_ID:
        return f"is longer than {MAX_ID} characters"
    if not value.isprintable() or value != value.strip():
        return "has control characters or surrounding spaces"
    return None


# One validator for the process: it compiles each message type's rules once and keeps them.
_validator = protovalidate.Validator()


def violations(request: Message) -> list[tuple[str, str]]:
    """(field path, description) of every rule of the protos that `request` breaks; only the
    lists over their bound if there are any."""
    return oversized(request) or stated(request)


def stated(request: Message) -> list[tuple[str, str]]:
    """The same, for a request whose lists are within their bounds (see oversized)."""
    return [_named(request, v.proto) for v in _validator.collect_violations(request)]


def oversized(request: Message) -> list[tuple[str, str]]:
    """(field path, description) of each list in `request` longer than its bound."""
    return list(_oversized(request, ""))


def _oversized(message: Message, prefix: str) -> Iterable[tuple[str, str]]:
    """The lists in `message` longer than their bound, with protovalidate's description; the
    items of a list within its bound are looked into, those of one over it are not."""
    for field, bound in _bounds(message.DESCRIPTOR):
        value = getattr(message, field.name)
        path = prefix + field.name
        if field.is_repeated:
            if bound is not None and len(value) > bound:
                yield path, f"value must contain no more than {bound} item(s)"
            elif field.message_type is not None and _bounds(field.message_type):
                for i, item in enumerate(value):
                    yield from _oversized(item, f"{path}[{i}].")
        elif message.HasField(field.name):
            yield from _oversized(value, path + ".")


@functools.cache
def _bounds(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, int | None], ...]:
    """The fields of a message type that are or may hold lists: each list with its `max_items`
    (None: unbounded), and each message field; maps are not looked into."""
    found: list[tuple[FieldDescriptor, int | None]] = []
    for field in descriptor.fields:
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            rules = field.GetOptions().Extensions[validate_pb2.field]
            has_bound = rules.HasField("repeated") and rules.repeated.HasField("max_items")
            found.append((field, rules.repeated.max_items if has_bound else None))
        elif field.message_type is not None and not is_map and _holds_lists(field.message_type):
            found.append((field, None))
    return tuple(found)


def _holds_lists(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message type has a list, itself or in a message field (recursive types once)."""
    if descriptor.full_name in seen:
        return False
    for field in descriptor.fields:
        if field.is_repeated:
            return True
        if field.message_type is not None and _holds_lists(
            field.message_type, seen | {descriptor.full_name}
        ):
            return True
    return False


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
