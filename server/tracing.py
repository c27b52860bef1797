"""OpenTelemetry tracing: a span per RPC (the gRPC server interceptor of
opentelemetry-instrumentation-grpc, added by server/grpc/interceptors.py) and, as its child, a
span per unit of work of the database (server/store/unit_of_work.py).

Off unless the standard OTEL_* variables name an exporter: OTEL_TRACES_EXPORTER (`otlp`,
`console`, or any exporter installed under the `opentelemetry_traces_exporter` entry points;
`none` is off), or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) alone, which means `otlp`. OTEL_SDK_DISABLED=true turns it
off whatever the rest says. The OTLP protocol (OTEL_EXPORTER_OTLP_PROTOCOL, default `grpc`),
OTEL_SERVICE_NAME (default `aftersales`), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and the
exporters' and batch processor's own variables are read by the SDK as usual. Off, nothing is
made and each unit of work pays one test of a module variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
    get_current_span,
    set_tracer_provider,
)

# Set by configure() or use(): None while tracing is off.
_provider: TracerProvider | None = None
_tracer: Tracer | None = None

_ENTRY_POINTS = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class TracingMisconfigured(Exception):
    """The OTEL_* variables name an exporter or a protocol this server does not have."""


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The entry-point names of the span exporters the variables ask for; empty: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if chosen == ["none"]:
        return []
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if "otlp" in chosen and protocol not in _OTLP_BY_PROTOCOL:
        raise TracingMisconfigured(
            f"unsupported OTLP protocol {protocol!r}: use {' or '.join(_OTLP_BY_PROTOCOL)}"
        )
    return [_OTLP_BY_PROTOCOL[protocol] if name == "otlp" else name for name in chosen]


def exporters(environ: Mapping[str, str] = os.environ) -> list[EntryPoint]:
    """The span exporters the variables ask for, found but not loaded; empty: tracing off.
    Raises TracingMisconfigured for one this server does not have."""
    names = exporter_names(environ)
    if not names:
        return []
    found = {ep.name: ep for ep in entry_points(group=_ENTRY_POINTS)}
    missing = [name for name in names if name not in found]
    if missing:
        raise TracingMisconfigured(
            f"unknown OTEL_TRACES_EXPORTER {', '.join(missing)}: this server has "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    return [found[name] for name in names]


def resource() -> Any:
    """What the spans say of their service: `service.name` is `aftersales` unless
    OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name it (the SDK reads them)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()
    named = str(detected.attributes.get(SERVICE_NAME, ""))
    if named and not named.startswith("unknown_service"):
        return detected
    return detected.merge(Resource({SERVICE_NAME: "aftersales"}))


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Turns tracing on as the OTEL_* variables say, in this process (each worker calls it
    after the fork: the batch processor's thread is not forked); whether it is on.

    `environ` chooses the exporters; what they are configured with (endpoint, headers) and the
    resource (service name, attributes) the SDK reads from the process's own environment, as
    every OpenTelemetry SDK does: pass anything but os.environ only to test the choice."""
    chosen = exporters(environ)
    if not chosen:
        return False
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkTracerProvider(resource=resource())
    for exporter in chosen:
        provider.add_span_processor(BatchSpanProcessor(exporter.load()()))
    set_tracer_provider(provider)
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Traces with `provider` from now on (None: off). configure() calls it; tests give an
    SDK provider of their own, with an in-memory exporter."""
    global _provider, _tracer
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("aftersales")


def provider() -> TracerProvider | None:
    """The provider traces go to; None while tracing is off."""
    return _provider


def shutdown() -> None:
    """Sends the spans still waiting (a batch processor's) before the process exits."""
    if _provider is not None and hasattr(_provider, "shutdown"):
        _provider.shutdown()


def start_transaction(database: str, *, read_only: bool) -> Span | None:
    """A span for one unit of work of the database, child of the current one (the RPC's);
    None while tracing is off. The caller ends it (end_transaction)."""
    if _tracer is None:
        return None
    return _tracer.start_span(
        "db.transaction" if not read_only else "db.read",
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": database, "db.transaction.read_only": read_only},
    )


def end_transaction(
    span: Span, *, committed: bool, error: BaseException | None, grouped: bool = False
) -> None:
    """Ends a unit of work's span: committed or rolled back, and the database's error if one
    ended it (a refusal that rolls back is not one). A unit of work `grouped` in a group commit's
    transaction (SQLite) ends at its savepoint: "release" there, as the group commits after it
    (or rolls back, and the call's unit of work runs again, alone, in a span of its own)."""
    outcome = "commit" if committed else "rollback"
    span.set_attribute("db.transaction.outcome", "release" if grouped and committed else outcome)
    span.set_attribute("db.transaction.grouped", grouped)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def tag_request(request_id: str) -> None:
    """Names the request id of the call on its span (while tracing)."""
    if _tracer is not None:
        get_current_span().set_attribute("aftersales.request_id", request_id)


def current_ids() -> tuple[str, str] | None:
    """The trace id and span id of the span running now, in hex; None while tracing is off or
    outside any span (what the log lines carry)."""
    if _tracer is None:
        return None
    context: Any = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
