"""A Python client for the late after-sales service: snake_case methods on the generated stubs,
typed exceptions with the rich error details.

    with Client("127.0.0.1:50051") as client:
        try:
            entry = client.open_entry("order-eligible", operator_id="staff-owner")
        except FailedPrecondition as e:
            print(e.reasons)        # ["INSUFFICIENT_GUARANTEE", ...]
"""

from client.client import Client
from client.errors import (
    DOMAIN,
    Aborted,
    AfterSalesError,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Violation,
)

__all__ = [
    "DOMAIN",
    "Aborted",
    "AfterSalesError",
    "AlreadyExists",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Violation",
]
