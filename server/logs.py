"""The log lines: JSON on stderr, each with a UTC ISO 8601 timestamp (`asctime`, e.g.
`2026-11-30T06:01:02.123Z`), and while a call is served the request id it carries
(`request_id`, mutations only) and, when tracing, the ids of its trace (`trace_id`,
`span_id`), for finding its spans."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from server import tracing

# The request id of the call this thread serves (the one a mutation carries), else None.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        rid = request_id.get()
        if rid:
            log_data.setdefault("request_id", rid)
        ids = tracing.current_ids()
        if ids is not None:
            log_data["trace_id"], log_data["span_id"] = ids


def configure(level: str, static_fields: dict[str, Any] | None = None) -> None:
    """JSON lines on stderr at `level`, with `static_fields` on each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        Formatter("{asctime}{levelname}{name}{message}", style="{", static_fields=static_fields)
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
