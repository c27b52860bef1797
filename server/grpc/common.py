"""What every servicer shares: reading request fields (every bad field at once), protobuf times
and enums, the request key of a mutation."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from server.domain.errors import InvalidArgument
from server.grpc import validation
from server.grpc.callers import current_caller
from server.service import RequestKey, Service, fingerprint

if TYPE_CHECKING:
    # The generic wrapper of protobuf enums exists in the stubs only (types-protobuf).
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper as EnumTypeWrapper

# A bound of the protos' rules also checked here, on one amount of money where a request is read
# by hand (10 billion yuan: far above any order, far below where sums of int64 overflow). Ids:
# validation.id_fault.
MAX_AMOUNT = 10**12
# Timestamps from 1970 to 9999: what the store and every language's date type can hold.
MIN_SECONDS = 0
MAX_SECONDS = 253_402_300_799

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# The most bytes of items one page holds, below the 4 MiB a gRPC client takes by default: a
# page of the largest clawbacks or refund events (100 lines each) would hold some 14 MB at
# MAX_PAGE_SIZE items; it stops before this many instead, the next page going on from there.
MAX_PAGE_BYTES = 3 * 1024 * 1024
# Commission lines of one order: a live-commerce order pays a handful (influencer, group leader,
# affiliate, technical service fee); the bound keeps a late refund's clawback one short
# transaction.
MAX_COMMISSION_LINES = 100
# Accounts one GetBalances names.
MAX_BALANCE_ACCOUNTS = 100
# Orders one BatchCheckEligibility names: a back office's page of orders, read in one statement.
MAX_BATCH_ORDERS = 500

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class Fields:
    """Collects field violations while a request is read; raises them all at the end. Made from
    the request, it holds the violations of the rules the protos state (validation.py) too; what
    is read here checks only what those rules cannot say, or says it better: a field found bad
    here gets the server's own descriptions ("is required") instead of protovalidate's for the
    same rules, unless the rule checked here is one protovalidate cannot state (`extra`), in
    which case both are given: every broken rule is named."""

    def __init__(self, request: Message | None = None) -> None:
        # In the order found, each once (a dict keeps the order and finds a pair at once).
        self._violations: dict[tuple[str, str], None] = {}
        self._worded: set[str] = set()  # fields whose protovalidate violations are not added
        if request is not None and (too_long := validation.oversized(request)):
            # Refused before any item is read (validation.py).
            raise InvalidArgument(too_long)
        self._stated = [] if request is None else validation.stated(request)

    def bad(self, field: str, description: str, *, extra: bool = False) -> None:
        if not extra:
            self._worded.add(field)
        self._violations[field, description] = None

    def raise_if_any(self) -> None:
        for field, description in self._stated:
            if field not in self._worded:
                self.bad(field, description, extra=True)
        self._stated = []
        if self._violations:
            raise InvalidArgument(list(self._violations))

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        """An id: required (the protos say so of a request's own fields), at most
        validation.MAX_ID characters, printable (validation.id_fault)."""
        if not value:
            if required:
                self.bad(field, "is required")
        elif fault := validation.id_fault(value):
            self.bad(field, fault)
        return value

    def amount(self, field: str, value: int) -> None:
        """An amount of money the protos bound (above zero, at most MAX_AMOUNT fen), by hand."""
        if not 0 < value <= MAX_AMOUNT:
            self.bad(field, f"must be above zero and at most {MAX_AMOUNT} fen, not {value}")

    def text(self, field: str, value: str) -> str:
        """Free text: its length is the protos' rule; no NUL (which no database column holds)."""
        if "\x00" in value:
            self.bad(field, "has a NUL character", extra=True)
        return value

    def enum(
        self,
        field: str,
        proto_enum: EnumTypeWrapper[Any],
        value: int,
        domain: type[E],
        prefix: str,
    ) -> E | None:
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

    def time(self, field: str, message: Message, name: str, *, required: bool) -> datetime | None:
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


# A message's fields as its constructor (or a repeated field's add) takes them, nested messages
# as dicts (resources.py).
MessageFields = dict[str, Any]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_fields(moment: datetime | None) -> MessageFields | None:
    """A google.protobuf.Timestamp's fields; None leaves the field unset."""
    if moment is None:
        return None
    # From the difference's whole days, seconds and microseconds: exact, and cheaper than
    # FromDatetime's time tuples or a division. (Before the epoch, days are negative and the
    # rest not, as Timestamp's seconds and nanos are.)
    since = moment - _EPOCH
    return {"seconds": since.days * 86_400 + since.seconds, "nanos": since.microseconds * 1000}


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    fields = timestamp_fields(moment)
    return None if fields is None else timestamp_pb2.Timestamp(**fields)


@functools.cache
def enum_value(proto_enum: EnumTypeWrapper[V], prefix: str, member: enum.StrEnum) -> V:
    """The proto enum value of a domain member: the same name behind the enum's prefix (a few
    dozen pairs in all, remembered: every rendered line asks for three)."""
    return proto_enum.Value(prefix + member.value)


def present(value: T | None) -> T:
    """A value that was read without a violation: call it after Fields.raise_if_any()."""
    assert value is not None, "read after raise_if_any"
    return value


def filled(
    response: Message, name: str, items: Sequence[T], fields: Callable[[T], dict[str, Any]]
) -> int:
    """Adds messages made of `items` to the list `name` of `response` while they hold at most
    MAX_PAGE_BYTES, one at least; returns how many it added."""
    listed = getattr(response, name)
    for item in items:
        listed.add(**fields(item))
    if response.ByteSize() <= MAX_PAGE_BYTES:
        return len(items)  # the usual page: its size read once
    total = 0
    for count, message in enumerate(listed):
        total += message.ByteSize() + 8  # with its tag and length
        if total > MAX_PAGE_BYTES and count:
            del listed[count:]
            return count
    return len(items)


def page_size(value: int) -> int:
    """The page size asked for (never negative: the protos' rule), defaulted and capped."""
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class _Mutation(Protocol):
    """A mutation's request: every one carries a request id."""

    @property
    def request_id(self) -> str: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


M = TypeVar("M", bound=Message)
V = TypeVar("V", bound=int)


class Servicer:
    """The base of the three servicers: they hold the service and nothing else."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def once(
        self, method: str, request: _Mutation, response_type: type[M], run: Callable[[], M]
    ) -> M:
        """run() once per request_id; a retry of the same request gets the first response."""
        # The person a token names is part of the request: the same request id and body from
        # another person is another request, never answered with this one's response.
        caller = current_caller.get()
        body = request.SerializeToString(deterministic=True)
        if caller is not None and (caller.identity or caller.person):
            who = f"{caller.identity}\0{caller.person.person_id if caller.person else ''}"
            body += b"\0" + who.encode()
        key = RequestKey(request.request_id, method, fingerprint(body))
        data = self.service.once(key, lambda: run().SerializeToString(deterministic=True))
        return response_type.FromString(data)
