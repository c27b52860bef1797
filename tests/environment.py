"""The environment of a server process a test or the benchmark starts."""

from __future__ import annotations

import os

_DATABASE = ("DATABASE_URL", "DATABASE_PASSWORD_FILE")


def server_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the server's own settings (AFTERSALES_*, and the
    database's: DATABASE_URL, DATABASE_PASSWORD_FILE), with `settings` (name: value) instead."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AFTERSALES_") and k not in _DATABASE
        },
        **settings,
    }
