"""Typed exceptions for refused calls, carrying the rich error details of the status."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# ErrorInfo.domain of the errors the service sends (AIP-193); their reasons: the proto's ReasonCode.
DOMAIN = "aftersales.livecommerce.io"


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. "order_id") and what is wrong with it."""

    field: str
    description: str


@dataclasses.dataclass(frozen=True)
class Violation:
    """One unmet rule: `type` is the reason code (e.g. "INSUFFICIENT_GUARANTEE")."""

    type: str
    subject: str
    description: str


class AfterSalesError(Exception):
    """A refused or failed call. `code` is the gRPC status code; the details are unpacked into
    `field_violations`, `violations`, `reason` and `domain` (the ErrorInfo's: DOMAIN on every
    error the service sends, empty when the call failed before reaching it), `metadata`,
    `resource` and `retry_delay` (how long the server asks a retry to wait, when it sent one).

    `request_id` is, for a call that changes something (post_funds, open_entry,
    apply_after_sales, record_refund), the request id it was sent with, the client's own when
    the caller gave none; None for a read. To retry that request, send it again with this
    request_id: the server answers a request it already did from its record, and does it once.
    A retry without it is another request."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: list[Message],
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.field_violations: list[FieldViolation] = []
        self.violations: list[Violation] = []
        self.reason = ""
        self.domain = ""
        self.metadata: dict[str, str] = {}
        self.resource: tuple[str, str] | None = None
        self.retry_delay: timedelta | None = None
        for detail in details:
            if isinstance(detail, error_details_pb2.BadRequest):
                self.field_violations += [
                    FieldViolation(v.field, v.description) for v in detail.field_violations
                ]
            elif isinstance(detail, error_details_pb2.PreconditionFailure):
                self.violations += [
                    Violation(v.type, v.subject, v.description) for v in detail.violations
                ]
            elif isinstance(detail, error_details_pb2.ErrorInfo):
                self.reason = detail.reason
                self.domain = detail.domain
                self.metadata = dict(detail.metadata)
            elif isinstance(detail, error_details_pb2.ResourceInfo):
                self.resource = (detail.resource_type, detail.resource_name)
            elif isinstance(detail, error_details_pb2.RetryInfo):
                self.retry_delay = detail.retry_delay.ToTimedelta()

    def __reduce__(self) -> tuple[type[AfterSalesError], tuple[object, ...]]:
        """Pickled as what it was made of (e.g. to cross a process pool)."""
        return type(self), (self.code, self.message, self.details, self.request_id)

    @property
    def retryable(self) -> bool:
        """Whether the same call (with the same request_id) may succeed when sent again: the
        server said so, or the call failed before it reached the server."""
        return self.metadata.get("retryable") == "true" or self.code in _RETRYABLE_CODES

    @property
    def reasons(self) -> list[str]:
        """Every unmet rule's reason code, in the server's order; else the ErrorInfo's reason."""
        return [v.type for v in self.violations] or ([self.reason] if self.reason else [])


class InvalidArgument(AfterSalesError):
    """Malformed input; `field_violations` names each bad field."""


class NotFound(AfterSalesError):
    """`resource` is (type, name) of what does not exist."""


class Unauthenticated(AfterSalesError):
    """The caller, or the person it acts for, proved no identity: `reason` says which
    (CALLER_NOT_AUTHENTICATED, PERSON_NOT_AUTHENTICATED: a token missing, expired or forged)."""


class PermissionDenied(AfterSalesError):
    """`reason` says why (OPERATOR_NOT_ALLOWED, BUYER_NOT_ORDER_OWNER)."""


class FailedPrecondition(AfterSalesError):
    """Business rules unmet; `violations` lists every one."""


class AlreadyExists(AfterSalesError):
    """An entry of the order is open already (`reason` ENTRY_ALREADY_OPEN; `entry_id` names
    it); or a PostFunds whose request_id was used longer ago than the server's request
    retention (`reason` REQUEST_ID_EXPIRED): that request's transfer stands (`transfer_id`)
    and nothing moved again."""

    @property
    def entry_id(self) -> str:
        """The entry open already (ENTRY_ALREADY_OPEN); empty otherwise."""
        return self.metadata.get("entry_id", "")

    @property
    def transfer_id(self) -> str:
        """The transfer the expired request posted (REQUEST_ID_EXPIRED); empty otherwise."""
        return self.metadata.get("transfer_id", "")


class Unavailable(AfterSalesError):
    """The server could not be reached, is shutting down, or its database is unavailable
    (`reason` DATABASE_UNAVAILABLE); retrying with the same request_id is safe.

    A failed TLS handshake is UNAVAILABLE too, with no details (`domain` empty): a CA that is
    not the server's, a client certificate the server refuses, TLS to a plaintext server or the
    reverse. `retryable` is then True all the same, but no retry will succeed: an Unavailable
    that persists with an empty `domain` is worth checking the channel's settings for."""


class Aborted(AfterSalesError):
    """The server's database aborted the call's transaction for a concurrent one (`reason`
    TRANSACTION_ABORTED); nothing was written, and retrying with the same request_id is safe."""


class Internal(AfterSalesError):
    """A bug in the server; `incident` names its log line. Retrying will not help."""

    @property
    def incident(self) -> str:
        """The id of the server's log line of this failure, to quote to its operators."""
        return self.metadata.get("incident", "")


class DeadlineExceeded(AfterSalesError):
    """The call took longer than its deadline; a mutation may or may not have happened.
    `retryable` is False: the client does not send it again by itself, as it may have been done.
    Sending it again is the caller's choice, and safe: a read has no effect, and a mutation sent
    again with the request_id it was sent with (`request_id`) is answered from the server's
    record if it was done, and done once otherwise."""


class OutOfRange(AfterSalesError):
    """Events after the position asked for were pruned (reason EVENTS_PRUNED): what was missed is
    gone from the service; catch it up from its source, then resume after `pruned_through`. Or
    the position is past every one handed out (reason EVENTS_AHEAD): it is not of this event log.
    """

    @property
    def pruned_through(self) -> int:
        """The last position pruned (EVENTS_PRUNED): resume after it."""
        return int(self.metadata.get("pruned_through", "0"))

    @property
    def oldest_position(self) -> int:
        """The oldest position the server still holds."""
        return int(self.metadata.get("oldest_position", "0"))


class ResourceExhausted(AfterSalesError):
    """The server serves as many event streams as it may; retry later (it is retryable)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}

# Retryable whatever the details say (the channel's own UNAVAILABLE carries none).
_RETRYABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)

_DETAIL_TYPES = (
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ErrorInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)


def from_rpc_error(error: grpc.RpcError, request_id: str | None = None) -> AfterSalesError:
    """The typed exception for a failed call: its class by the status code, with the details
    of the status's `grpc-status-details-bin` trailer (none when that trailer is of another
    status than the call's, as when a proxy rewrote the status). `request_id`: that of the
    request, for a call that changes something."""
    # Every RpcError a call raises is also its grpc.Call (the stubs keep the two apart); from_call
    # reads only its code, details and trailing metadata.
    status: status_pb2.Status | None
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The details are of another status than the call's (a proxy rewrote the code or the
        # message): the call's own status stands, without them.
        status = None
    details: list[Message] = []
    message = error.details() or ""
    if status is not None:
        message = status.message
        for any_detail in status.details:
            for detail_type in _DETAIL_TYPES:
                # types-protobuf: Message.DESCRIPTOR may be upb's Descriptor (it is, at run time),
                # which Any.Is takes but its stub does not list.
                if any_detail.Is(detail_type.DESCRIPTOR):  # type: ignore[arg-type]
                    detail = detail_type()
                    any_detail.Unpack(detail)
                    details.append(detail)
                    break
    cls = _BY_CODE.get(error.code(), AfterSalesError)
    return cls(error.code(), message, details, request_id)
