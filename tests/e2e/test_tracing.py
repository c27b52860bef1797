"""OpenTelemetry tracing, with an in-memory exporter: a span per call with the status code the
caller got (a refusal's too), and as its child a span per database transaction."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from client import Client, FailedPrecondition
from server import demo, tracing
from server.grpc.app import App

OPEN_ENTRY = "/aftersales.v1.AfterSalesEntry/OpenEntry"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


@pytest.fixture
def traced_client(spans, service):
    """A client of a server made while tracing is on, with the demo data."""
    demo.load(service)
    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=None).start()
    with Client(f"127.0.0.1:{app.port}") as client:
        yield client
    app.stop(grace=1)


def calls(exporter: InMemorySpanExporter, method: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == method]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def test_a_refused_open_entry_is_traced_failed_precondition_with_its_rolled_back_transaction(
    spans, traced_client
):
    with pytest.raises(FailedPrecondition):
        traced_client.open_entry("order-tiny", "tiny-owner", request_id="traced-refusal")

    [call] = calls(spans, OPEN_ENTRY)
    assert call.kind is SpanKind.SERVER
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert call.attributes["rpc.method"] == "OpenEntry"
    assert call.attributes["aftersales.request_id"] == "traced-refusal"
    [transaction] = children(spans, call)
    assert transaction.name == "db.transaction"
    assert transaction.context.trace_id == call.context.trace_id
    assert transaction.attributes["db.transaction.outcome"] == "rollback"
    assert transaction.attributes["db.system.name"] in ("sqlite", "postgresql")


def test_an_open_entry_is_traced_ok_with_its_committed_transaction(spans, traced_client):
    traced_client.open_entry("order-eligible", "staff-owner")
    traced_client.check_eligibility("order-eligible", "staff-owner")

    [call] = calls(spans, OPEN_ENTRY)
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    [transaction] = children(spans, call)
    assert transaction.attributes["db.transaction.outcome"] == "commit"
    [check] = calls(spans, "/aftersales.v1.AfterSalesEntry/CheckEligibility")
    assert [s.name for s in children(spans, check)] == ["db.read"]


def test_health_checks_are_not_traced(spans, traced_client):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(traced_client.channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    traced_client.get_balances(owner_id="shop-sunny")

    names = [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert names == ["/aftersales.v1.Clawback/GetBalances"]


def test_tracing_is_off_unless_the_otel_variables_name_an_exporter():
    assert tracing.exporter_names({}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert tracing.exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == [
        "otlp_proto_grpc"
    ]
    assert tracing.exporter_names(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    ) == ["otlp_proto_http"]
    assert (
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    )
    with pytest.raises(tracing.TracingMisconfigured):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin-that-is-not-installed"})


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({}, "aftersales"),
        ({"OTEL_SERVICE_NAME": "aftersales-canary"}, "aftersales-canary"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=after-x,region=sh"}, "after-x"),
    ],
)
def test_the_spans_service_is_aftersales_unless_the_otel_variables_name_it(
    environ, name, monkeypatch
):
    for variable in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)

    assert tracing.resource().attributes["service.name"] == name
