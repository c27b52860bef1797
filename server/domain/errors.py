"""The ways a request can be refused, as domain exceptions; the gRPC layer maps them to statuses."""

from __future__ import annotations

from collections.abc import Sequence

from server.domain.model import ReasonCode, Violation


class Refused(Exception):
    """Base of every refusal: nothing was written."""


class InvalidArgument(Refused):
    """Malformed input: each (field path, description) pair names one bad field; `reason`, when
    given, is a reason code for callers to branch on."""

    def __init__(
        self, violations: Sequence[tuple[str, str]], reason: ReasonCode | None = None
    ) -> None:
        self.violations = tuple(violations)
        self.reason = reason
        super().__init__("; ".join(f"{f}: {d}" for f, d in self.violations))


class NotFound(Refused):
    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(f"{resource_type} {name!r} not found")


class RequestIdReused(InvalidArgument):
    """The request id was seen before with a different request."""

    def __init__(self, request_id: str, method: str) -> None:
        self.request_id = request_id
        self.method = method
        super().__init__(
            # Not naming the method of the request it was used for: it may be another caller's.
            [("request_id", f"{request_id!r} was already used for a different request")],
            reason=ReasonCode.REQUEST_ID_REUSED,
        )


class RequestIdExpired(Refused):
    """The request id was used longer ago than the request retention: its response is no longer
    kept, and what that request did stands (`transfer_id`, the transfer it posted)."""

    def __init__(self, request_id: str, method: str, transfer_id: str) -> None:
        self.request_id = request_id
        self.method = method
        self.transfer_id = transfer_id
        super().__init__(
            f"request id {request_id!r} was used for a {method} request longer ago than the "
            f"request retention; it posted transfer {transfer_id}, which stands"
        )


class RulesRefused(Refused):
    """Business rules unmet: every violation is listed. `subject` names what they are about."""

    def __init__(
        self,
        subject: str,
        violations: Sequence[Violation],
        metadata: dict[str, str] | None = None,
    ) -> None:
        if not violations:
            raise ValueError("a refusal names at least one broken rule")
        self.subject = subject
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})
        super().__init__("; ".join(v.description for v in self.violations))

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(v.code for v in self.violations)


class PermissionDenied(RulesRefused):
    """The caller may not do this; `violations[0]` says why, the rest is what else is unmet."""


class Unauthenticated(Refused):
    """The caller proved no identity (its certificate names none), or the person it acts for
    sent no valid token (`person` set)."""

    def __init__(self, method: str, why: str, *, person: bool = False) -> None:
        self.method = method
        self.person = person
        super().__init__(f"{method}: {why}")


class CallerNotAllowed(Refused):
    """The caller's identity is not granted the method (the access table denies by default), or
    not granted to act for people and yet sent a person's token (`why` says so)."""

    def __init__(self, identity: str, method: str, why: str = "") -> None:
        self.identity = identity
        self.method = method
        super().__init__(why or f"{identity} may not call {method}")


class NotTheAuthenticatedPerson(Refused):
    """The request names a staff member or buyer other than the one its token proves."""

    def __init__(self, person_id: str, why: str) -> None:
        self.person_id = person_id
        super().__init__(why)


class EventsPruned(Refused):
    """The events after the position asked for are no longer all held: some were pruned
    (retention). Every event at or below `pruned_through` is gone, every one above it held."""

    def __init__(self, after: int, pruned_through: int) -> None:
        self.after = after
        self.pruned_through = pruned_through
        super().__init__(
            f"events after position {after} were pruned up to position {pruned_through}; resume "
            f"after {pruned_through} once what was missed is caught up from its source"
        )


class EventsAhead(Refused):
    """The position asked for is past every position ever handed out (`top`): it is not of this
    database, or of one restored from an older backup."""

    def __init__(self, after: int, top: int) -> None:
        self.after = after
        self.top = top
        super().__init__(
            f"position {after} is past the highest position held, {top}: it is not of this "
            "event log"
        )
