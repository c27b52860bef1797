"""The environment of a server process a test or the benchmark starts."""

from __future__ import annotations

import os


def server_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the settings that would point a server elsewhere
    (AFTERSALES_*, DATABASE_URL), with `settings` (name: value) instead."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AFTERSALES_") and k != "DATABASE_URL"
        },
        **settings,
    }
