"""Domain refusals -> gRPC status codes with google.rpc error details (grpcio-status); and the
statuses of calls that failed for another reason than a rule: a retryable failure (AIP-193:
`ErrorInfo.metadata["retryable"]` and a `RetryInfo`), a bug, an undecodable request.

Every status the service sends carries an ErrorInfo (AIP-193) whose domain is DOMAIN and whose
reason is a value of the proto's ReasonCode: a rule's code for a refusal, one of REASONS below
for the rest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.errors import (
    CallerNotAllowed,
    EventsAhead,
    EventsPruned,
    InvalidArgument,
    NotFound,
    NotTheAuthenticatedPerson,
    PermissionDenied,
    Refused,
    RequestIdExpired,
    RequestIdReused,
    RulesRefused,
    Unauthenticated,
)
from server.domain.model import ReasonCode

# The service's name: ErrorInfo.domain of every error, the namespace of its reasons.
DOMAIN = "aftersales.livecommerce.io"

# ErrorInfo reasons that are not a rule's (the domain's ReasonCode lists those); the proto's
# ReasonCode lists both.
INVALID_FIELDS = "INVALID_FIELDS"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
TRANSACTION_ABORTED = "TRANSACTION_ABORTED"
INTERNAL_ERROR = "INTERNAL_ERROR"
UNDECODABLE_REQUEST = "UNDECODABLE_REQUEST"
EVENTS_PRUNED = "EVENTS_PRUNED"
TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
SERVER_STOPPING = "SERVER_STOPPING"
EVENTS_AHEAD = "EVENTS_AHEAD"
REASONS = frozenset(
    {
        INVALID_FIELDS,
        RESOURCE_NOT_FOUND,
        DATABASE_UNAVAILABLE,
        TRANSACTION_ABORTED,
        INTERNAL_ERROR,
        UNDECODABLE_REQUEST,
        EVENTS_PRUNED,
        EVENTS_AHEAD,
        TOO_MANY_STREAMS,
        SERVER_STOPPING,
    }
)

# How long a caller should wait before it retries: a database that is down or busy needs a while;
# a transaction aborted by a concurrent one may run again at once.
UNAVAILABLE_RETRY_DELAY = timedelta(seconds=1)
ABORTED_RETRY_DELAY = timedelta(milliseconds=50)


def _metadata(error: InvalidArgument) -> dict[str, str]:
    if isinstance(error, RequestIdReused):
        return {"request_id": error.request_id, "method": error.method}
    return {}


def _pack(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


# The most field violations a refusal lists in its BadRequest, and in its message. A status
# travels in the call's trailers, which gRPC clients take up to 8 KiB by default
# (grpc.max_metadata_size): the thousands of bad items one request may hold would outgrow them,
# and the caller would get RESOURCE_EXHAUSTED instead of the refusal. Past them, one violation
# more, on the request as a whole (field ""), says how many were left out.
LISTED_VIOLATIONS = 20
VIOLATIONS_IN_MESSAGE = 5


def to_status(error: Refused) -> grpc.Status:
    """The rich status a refusal is sent as."""
    code, details = _code_and_details(error)
    message = str(error)
    if isinstance(error, InvalidArgument):
        message = _message(error.violations)
    return _status(code, message, details)


def _listed(violations: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The violations a refusal lists (LISTED_VIOLATIONS), and how many it leaves out."""
    listed = list(violations[:LISTED_VIOLATIONS])
    if len(violations) > LISTED_VIOLATIONS:
        more = len(violations) - LISTED_VIOLATIONS
        listed.append(
            ("", f"{more} more field violations, not listed (at most {LISTED_VIOLATIONS} are)")
        )
    return listed


def _message(violations: Sequence[tuple[str, str]]) -> str:
    said = "; ".join(f"{f}: {d}" for f, d in violations[:VIOLATIONS_IN_MESSAGE])
    more = len(violations) - VIOLATIONS_IN_MESSAGE
    return said if more <= 0 else f"{said}; and {more} more (see the BadRequest detail)"


def unavailable() -> grpc.Status:
    """The database is down, busy or gave up waiting: retry later."""
    return _retryable(
        code_pb2.UNAVAILABLE,
        "the database is unavailable; retry the same request (same request_id) after the "
        "RetryInfo delay, doubling the wait on each further failure",
        DATABASE_UNAVAILABLE,
        UNAVAILABLE_RETRY_DELAY,
    )


def aborted() -> grpc.Status:
    """The database aborted the transaction for a concurrent one: retry at once."""
    return _retryable(
        code_pb2.ABORTED,
        "the database aborted the transaction for a concurrent one; retry with the same request id",
        TRANSACTION_ABORTED,
        ABORTED_RETRY_DELAY,
    )


def too_many_streams(message: str) -> grpc.Status:
    """Every stream this server may serve is open: retry later (or on another server)."""
    return _retryable(
        code_pb2.RESOURCE_EXHAUSTED, message, TOO_MANY_STREAMS, UNAVAILABLE_RETRY_DELAY
    )


def stopping(message: str) -> grpc.Status:
    """The server is stopping: a stream ends so that its consumer resumes elsewhere at once."""
    return _retryable(code_pb2.UNAVAILABLE, message, SERVER_STOPPING, timedelta(0))


def internal(incident: str) -> grpc.Status:
    """A bug: the incident id names its log line. Retrying will not help."""
    return _status(
        code_pb2.INTERNAL,
        f"internal error (incident {incident})",
        [
            error_details_pb2.ErrorInfo(
                reason=INTERNAL_ERROR, domain=DOMAIN, metadata={"incident": incident}
            )
        ],
    )


def undecodable(message_type: str) -> grpc.Status:
    """The request's bytes are not a `message_type`."""
    description = f"request is not a valid {message_type}"
    return _status(
        code_pb2.INVALID_ARGUMENT,
        description,
        [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="", description=description)
                ]
            ),
            error_details_pb2.ErrorInfo(
                reason=UNDECODABLE_REQUEST, domain=DOMAIN, metadata={"message_type": message_type}
            ),
        ],
    )


def _retryable(code: int, message: str, reason: str, delay: timedelta) -> grpc.Status:
    retry_delay = duration_pb2.Duration()
    retry_delay.FromTimedelta(delay)
    return _status(
        code,
        message,
        [
            error_details_pb2.ErrorInfo(
                reason=reason, domain=DOMAIN, metadata={"retryable": "true"}
            ),
            error_details_pb2.RetryInfo(retry_delay=retry_delay),
        ],
    )


def _status(code: int, message: str, details: list[Message]) -> grpc.Status:
    return rpc_status.to_status(
        status_pb2.Status(code=code, message=message, details=[_pack(d) for d in details])
    )


def _code_and_details(error: Refused) -> tuple[int, list[Message]]:
    if isinstance(error, InvalidArgument):
        details: list[Message] = [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in _listed(error.violations)
                ]
            )
        ]
        details.append(
            error_details_pb2.ErrorInfo(
                reason=INVALID_FIELDS if error.reason is None else error.reason.value,
                domain=DOMAIN,
                metadata=_metadata(error),
            )
        )
        return code_pb2.INVALID_ARGUMENT, details
    if isinstance(error, NotFound):
        return code_pb2.NOT_FOUND, [
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type, resource_name=error.name, description=str(error)
            ),
            error_details_pb2.ErrorInfo(
                reason=RESOURCE_NOT_FOUND,
                domain=DOMAIN,
                metadata={"resource_type": error.resource_type, "resource_name": error.name},
            ),
        ]
    if isinstance(error, RulesRefused):
        if isinstance(error, PermissionDenied):
            code = code_pb2.PERMISSION_DENIED
        elif ReasonCode.ENTRY_ALREADY_OPEN in error.codes:
            code = code_pb2.ALREADY_EXISTS
        else:
            code = code_pb2.FAILED_PRECONDITION
        return code, [
            error_details_pb2.ErrorInfo(
                reason=error.violations[0].code.value, domain=DOMAIN, metadata=error.metadata
            ),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.code.value, subject=error.subject, description=v.description
                    )
                    for v in error.violations
                ]
            ),
        ]
    if isinstance(error, Unauthenticated):
        reason = (
            ReasonCode.PERSON_NOT_AUTHENTICATED
            if error.person
            else ReasonCode.CALLER_NOT_AUTHENTICATED
        )
        return code_pb2.UNAUTHENTICATED, [
            error_details_pb2.ErrorInfo(
                reason=reason.value,
                domain=DOMAIN,
                metadata={"method": error.method},
            )
        ]
    if isinstance(error, CallerNotAllowed):
        return code_pb2.PERMISSION_DENIED, [
            error_details_pb2.ErrorInfo(
                reason=ReasonCode.CALLER_NOT_ALLOWED.value,
                domain=DOMAIN,
                metadata={"identity": error.identity, "method": error.method},
            )
        ]
    if isinstance(error, NotTheAuthenticatedPerson):
        return code_pb2.PERMISSION_DENIED, [
            error_details_pb2.ErrorInfo(
                reason=ReasonCode.NOT_THE_AUTHENTICATED_PERSON.value,
                domain=DOMAIN,
                metadata={"person_id": error.person_id},
            )
        ]
    if isinstance(error, RequestIdExpired):
        return code_pb2.ALREADY_EXISTS, [
            error_details_pb2.ResourceInfo(
                resource_type="transfer",
                resource_name=error.transfer_id,
                description=str(error),
            ),
            error_details_pb2.ErrorInfo(
                reason=ReasonCode.REQUEST_ID_EXPIRED.value,
                domain=DOMAIN,
                metadata={
                    "request_id": error.request_id,
                    "method": error.method,
                    "transfer_id": error.transfer_id,
                },
            ),
        ]
    if isinstance(error, EventsPruned):
        return code_pb2.OUT_OF_RANGE, [
            error_details_pb2.ErrorInfo(
                reason=EVENTS_PRUNED,
                domain=DOMAIN,
                metadata={
                    "after_position": str(error.after),
                    "pruned_through": str(error.pruned_through),
                    "oldest_position": str(error.pruned_through + 1),
                },
            )
        ]
    if isinstance(error, EventsAhead):
        return code_pb2.OUT_OF_RANGE, [
            error_details_pb2.ErrorInfo(
                reason=EVENTS_AHEAD,
                domain=DOMAIN,
                metadata={"after_position": str(error.after), "top": str(error.top)},
            )
        ]
    raise TypeError(f"no status for {type(error).__name__}")
