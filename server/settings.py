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
    chosen = _chosen(path, POLICY_ENV, POLICY_PATH)
    return policy.parse(_toml(chosen, "policy", policy.PolicyError), source=str(chosen))


def load_access(
    known_methods: Iterable[str], path: str | os.PathLike[str] | None = None
) -> access.AccessTable:
    """The access table at `path`, else at $AFTERSALES_ACCESS, else the shipped one
    (access.AccessTableError if it cannot be read or is not a valid table)."""
    chosen = _chosen(path, ACCESS_ENV, ACCESS_PATH)
    raw = _toml(chosen, "access table", access.AccessTableError)
    return access.parse(raw, known_methods, source=str(chosen))


def _chosen(path: str | os.PathLike[str] | None, env: str, shipped: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(path or os.environ.get(env) or shipped)


def _toml(path: pathlib.Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The file's TOML; `error`, in one line naming `what` and the file, if it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        reason = " ".join(str(e).split())
        raise error(f"cannot read {what} {path}: {reason}") from e
