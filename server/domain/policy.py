"""Loads the policy (the rules' numbers and switches) from TOML; the shipped one by default."""

from __future__ import annotations

import enum
import os
import pathlib
import tomllib
from datetime import timedelta
from typing import Any, TypeVar

from server.domain.model import OrderKind, Policy, StaffRole

DEFAULT_PATH = pathlib.Path(__file__).parent.parent / "policy.toml"
ENV_VAR = "AFTERSALES_POLICY"

E = TypeVar("E", bound=enum.Enum)


class PolicyError(ValueError):
    """The policy file is missing, malformed or names something unknown."""


def load(path: str | os.PathLike[str] | None = None) -> Policy:
    """The policy at `path`, else at $AFTERSALES_POLICY, else the shipped default."""
    chosen = pathlib.Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    try:
        raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(f"cannot read policy {chosen}: {e}") from e
    return parse(raw, source=str(chosen))


def parse(raw: dict[str, Any], source: str = "<policy>") -> Policy:
    raw = dict(raw)
    entry = _table(raw.pop("entry", {}), "entry", source)
    clawback = _table(raw.pop("clawback", {}), "clawback", source)
    version = raw.pop("version", None)
    if not isinstance(version, str) or not version:
        raise PolicyError(f"{source}: `version` must be a non-empty string")
    defaults = Policy(version=version)
    try:
        policy = Policy(
            version=version,
            completion_window=_seconds(
                entry.pop("completion_window_seconds", None), defaults.completion_window
            ),
            entry_window=_seconds(entry.pop("window_seconds", None), defaults.entry_window),
            opener_roles=_members(
                StaffRole, entry.pop("opener_roles", None), defaults.opener_roles
            ),
            order_kinds=_members(OrderKind, entry.pop("order_kinds", None), defaults.order_kinds),
            marketing_campaign_orders_allowed=_flag(
                entry.pop("marketing_campaign_orders_allowed", None),
                defaults.marketing_campaign_orders_allowed,
            ),
            clawback_window=_seconds(
                clawback.pop("window_seconds", None), defaults.clawback_window
            ),
            designated_categories=_strings(
                clawback.pop("designated_categories", None), defaults.designated_categories
            ),
        )
    except (TypeError, ValueError) as e:
        raise PolicyError(f"{source}: {e}") from e
    unknown = [*raw, *(f"entry.{k}" for k in entry), *(f"clawback.{k}" for k in clawback)]
    if unknown:
        raise PolicyError(f"{source}: unknown settings {', '.join(sorted(unknown))}")
    return policy


def _table(value: object, name: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: [{name}] must be a table")
    return dict(value)


def _flag(value: object, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"switches are true or false, not {value!r}")
    return value


def _seconds(value: object, default: timedelta) -> timedelta:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"durations are positive whole seconds, not {value!r}")
    return timedelta(seconds=value)


def _members(enum_type: type[E], values: object, default: frozenset[E]) -> frozenset[E]:
    if values is None:
        return default
    if not isinstance(values, list):
        raise ValueError(f"expected a list of {enum_type.__name__} names, not {values!r}")
    return frozenset(enum_type(v) for v in values)


def _strings(values: object, default: frozenset[str]) -> frozenset[str]:
    if values is None:
        return default
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"expected a list of non-empty strings, not {values!r}")
    return frozenset(values)
