"""The policy (the rules' numbers and switches), parsed from its TOML's values (server/settings.py
reads the file).

Every value is checked by range as well as by type, so that a policy the server accepts cannot
fail a call later: the version fits the column that records it, and a window added to any time
of this era stays far inside what dates can hold.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any, TypeVar

from server.domain.model import OrderKind, Policy, StaffRole

# The version is recorded with every entry and clawback, in a column of 64 characters.
MAX_VERSION_LENGTH = 64
# The longest duration a policy may set: 10 years (365-day years). Ample for any window of the
# product, and `now + window` stays millennia away from the largest date there is.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
# The shortest request retention: an hour, well past any caller's retries of one call, which a
# shorter one would let run twice (every other duration may be as short as a second, for tests).
MIN_REQUEST_RETENTION_SECONDS = 3600

E = TypeVar("E", bound=enum.Enum)


class PolicyError(ValueError):
    """The policy file is missing, malformed, names something unknown or a value out of range;
    the message is one line naming the setting and its limit."""


def warnings(policy: Policy) -> list[str]:
    """What a policy that loads may still not mean: each said once, as the server starts."""
    said = []
    if not policy.designated_categories:
        said.append(
            "the policy designates no category ([clawback] designated_categories): "
            "no late refund recovers commissions"
        )
    return said


def parse(raw: dict[str, Any], source: str = "<policy>") -> Policy:
    raw = dict(raw)
    try:
        entry = _table(raw.pop("entry", {}), "entry")
        clawback = _table(raw.pop("clawback", {}), "clawback")
        events = _table(raw.pop("events", {}), "events")
        requests = _table(raw.pop("requests", {}), "requests")
        version = _version(raw.pop("version", None))
        defaults = Policy(version=version)
        policy = Policy(
            version=version,
            completion_window=_seconds(
                "entry.completion_window_seconds",
                entry.pop("completion_window_seconds", None),
                defaults.completion_window,
            ),
            entry_window=_seconds(
                "entry.window_seconds", entry.pop("window_seconds", None), defaults.entry_window
            ),
            opener_roles=_members(
                "entry.opener_roles",
                StaffRole,
                entry.pop("opener_roles", None),
                defaults.opener_roles,
            ),
            order_kinds=_members(
                "entry.order_kinds", OrderKind, entry.pop("order_kinds", None), defaults.order_kinds
            ),
            marketing_campaign_orders_allowed=_flag(
                "entry.marketing_campaign_orders_allowed",
                entry.pop("marketing_campaign_orders_allowed", None),
                defaults.marketing_campaign_orders_allowed,
            ),
            clawback_window=_seconds(
                "clawback.window_seconds",
                clawback.pop("window_seconds", None),
                defaults.clawback_window,
            ),
            designated_categories=_strings(
                "clawback.designated_categories",
                clawback.pop("designated_categories", None),
                defaults.designated_categories,
            ),
            event_retention=_seconds(
                "events.retention_seconds",
                events.pop("retention_seconds", None),
                defaults.event_retention,
            ),
            request_retention=_seconds(
                "requests.retention_seconds",
                requests.pop("retention_seconds", None),
                defaults.request_retention,
                least=MIN_REQUEST_RETENTION_SECONDS,
            ),
        )
    except _Bad as e:
        raise PolicyError(f"{source}: {e}") from None
    unknown = [
        *raw,
        *(f"entry.{k}" for k in entry),
        *(f"clawback.{k}" for k in clawback),
        *(f"events.{k}" for k in events),
        *(f"requests.{k}" for k in requests),
    ]
    if unknown:
        raise PolicyError(f"{source}: unknown settings {', '.join(sorted(unknown))}")
    return policy


class _Bad(ValueError):
    """One setting's value is refused; the message names the setting and what it may be."""


def _table(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"[{name}] must be a table")
    return dict(value)


def _version(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("`version` must be a non-empty string")
    if len(value) > MAX_VERSION_LENGTH:
        raise _Bad(f"`version` must be at most {MAX_VERSION_LENGTH} characters, not {len(value)}")
    if not value.isprintable():
        raise _Bad(f"`version` must be printable characters only, not {value!r}")
    return value


def _flag(name: str, value: object, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _Bad(f"{name} is a switch, true or false, not {value!r}")
    return value


def _seconds(name: str, value: object, default: timedelta, *, least: int = 1) -> timedelta:
    if value is None:
        return default
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not least <= value <= MAX_DURATION_SECONDS
    ):
        raise _Bad(
            f"{name} must be a whole number of seconds from {least} to {MAX_DURATION_SECONDS} "
            f"(10 years), not {value!r}"
        )
    return timedelta(seconds=value)


def _members(name: str, enum_type: type[E], values: object, default: frozenset[E]) -> frozenset[E]:
    if values is None:
        return default
    known = ", ".join(str(member.value) for member in enum_type)
    if not isinstance(values, list) or not values:
        raise _Bad(f"{name} must be a non-empty list of names among {known}, not {values!r}")
    members = []
    for value in values:
        try:
            members.append(enum_type(value))
        except ValueError:
            raise _Bad(f"{name}: {value!r} is not one of {known}") from None
    return frozenset(members)


def _strings(name: str, values: object, default: frozenset[str]) -> frozenset[str]:
    if values is None:
        return default
    if not isinstance(values, list) or not all(
        isinstance(v, str) and v and v.isprintable() for v in values
    ):
        raise _Bad(f"{name} must be a list of non-empty, printable names, not {values!r}")
    return frozenset(values)
