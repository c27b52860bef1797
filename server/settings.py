"""The server's two settings files, read from disk: the policy (the rules' numbers and switches,
server/domain/policy.py parses it) and the access table (who may call what,
server/domain/access.py). Each is the file a flag names, else the one its environment variable
names, else the one shipped next to this module."""

from __future__ import annotations

import os
import pathlib
import tomllib
from collections.abc import Iterable
from typing import Any

from server.domain import access, policy
from server.domain.model import Policy

POLICY_PATH = pathlib.Path(__file__).parent / "policy.toml"
POLICY_ENV = "AFTERSALES_POLICY"
ACCESS_PATH = pathlib.Path(__file__).parent / "access.toml"
ACCESS_ENV = "AFTERSALES_ACCESS"


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """The policy at `path`, else at $AFTERSALES_POLICY, else the shipped default
    (policy.PolicyError, one line, if it cannot be read or is not a valid policy)."""
    chosen = pathlib.Path(path or os.environ.get(POLICY_ENV) or POLICY_PATH)
    try:
        raw = _toml(chosen)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        reason = " ".join(str(e).split())
        raise policy.PolicyError(f"cannot read policy {chosen}: {reason}") from e
    return policy.parse(raw, source=str(chosen))


def load_access(
    known_methods: Iterable[str], path: str | os.PathLike[str] | None = None
) -> access.AccessTable:
    """The access table at `path`, else at $AFTERSALES_ACCESS, else the shipped one
    (access.AccessTableError if it cannot be read or is not a valid table)."""
    chosen = pathlib.Path(path or os.environ.get(ACCESS_ENV) or ACCESS_PATH)
    try:
        raw = _toml(chosen)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise access.AccessTableError(f"cannot read access table {chosen}: {e}") from e
    return access.parse(raw, known_methods, source=str(chosen))


def _toml(path: pathlib.Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))
