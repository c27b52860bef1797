"""Black box: what dashboards and log searches see of `python -m server` (SQLite, the demo data,
tracing on through OTEL_TRACES_EXPORTER=console): the standard gRPC server metrics with the
status code each caller got, the business counters counted once per outcome, and log lines
with a UTC ISO 8601 time, the request id and the trace id of their call; and with an OTLP
endpoint in the environment, the spans reach it."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from datetime import UTC, datetime

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from aftersales.v1 import resources_pb2 as pb
from client import Client, FailedPrecondition, InvalidArgument
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.pg import free_port

LEADER = pb.AccountRef(kind=pb.ACCOUNT_KIND_CASH, owner_id="leader-zhou")
ENTRY = {"grpc_type": "UNARY", "grpc_service": "aftersales.v1.AfterSalesEntry"}
UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclasses.dataclass
class Observed(ServerProcess):
    metrics_address: str = ""
    spans_file: pathlib.Path | None = None

    def scrape(self) -> dict[tuple[str, frozenset], float]:
        """Every sample of the metrics endpoint, by name and labels."""
        url = f"http://{self.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def client(self, kind: str | None = None, person: str | None = None) -> Client:
        token = self.token(kind, person) if kind and person else None
        return Client(self.address, token=token)


@pytest.fixture
def observed(tmp_path):
    address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    stderr, stdout = tmp_path / "server.stderr", tmp_path / "spans.jsonl"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", f"sqlite:///{tmp_path / 'aftersales.db'}",
        "--metrics-address", metrics,
        "--sweep-interval", "3600",
        "--drain-seconds", "0",
        "--demo",
        "--demo-keys", str(tmp_path / "demo"),
    ]  # fmt: skip
    env = {**_environment(), "OTEL_TRACES_EXPORTER": "console"}
    with stderr.open("wb") as errors, stdout.open("wb") as spans:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=spans, stderr=errors)
    server = Observed(process, address, stderr, tmp_path / "demo", metrics, stdout)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_scrape_under_load_counts_each_call_by_its_code_and_each_outcome_once(observed):
    checks, refusals, threads = 10, 3, 4
    failures: list[BaseException] = []

    def load() -> None:
        try:
            with observed.client("staff", "staff-owner") as owner:
                for _ in range(checks):
                    owner.check_eligibility("order-eligible", "staff-owner")
            with observed.client("staff", "tiny-owner") as tiny:
                for _ in range(refusals):
                    with pytest.raises(FailedPrecondition):
                        tiny.open_entry("order-tiny", "tiny-owner")
        except BaseException as e:  # reported by the test's thread
            failures.append(e)

    running = [threading.Thread(target=load) for _ in range(threads)]
    for thread in running:
        thread.start()
    with observed.client("staff", "staff-owner") as owner:
        entry = owner.open_entry("order-eligible", "staff-owner", request_id="metrics-open-1")
        replayed = owner.open_entry("order-eligible", "staff-owner", request_id="metrics-open-1")
    assert replayed.entry_id == entry.entry_id
    with observed.client("buyer", "buyer-eligible") as buyer:
        application = buyer.apply_after_sales("order-eligible", "buyer-eligible", 64_950)
    with observed.client() as platform:
        now = datetime.now(UTC)
        clawback = platform.record_refund(
            "refund-metrics",
            "order-eligible",
            64_950,
            application_id=application.application_id,
            started_at=now,
            paid_at=now,
        )
        platform.post_funds(LEADER, 5_000, memo="commission payout")
    for thread in running:
        thread.join(timeout=120)
    assert failures == []
    assert clawback.state == pb.CLAWBACK_STATE_PARTIAL

    samples = observed.scrape()
    handled = "grpc_server_handled_total"
    refused = dict(ENTRY, grpc_method="OpenEntry", grpc_code="FAILED_PRECONDITION")
    assert metric(samples, handled, **refused) == threads * refusals
    assert metric(samples, handled, **ENTRY, grpc_method="OpenEntry", grpc_code="OK") == 2
    check = dict(ENTRY, grpc_method="CheckEligibility")
    assert metric(samples, handled, **check, grpc_code="OK") == threads * checks
    assert metric(samples, "grpc_server_started_total", **check) == threads * checks
    assert metric(samples, "grpc_server_msg_received_total", **check) == threads * checks
    assert metric(samples, "grpc_server_msg_sent_total", **check) == threads * checks
    assert metric(samples, "grpc_server_handling_seconds_count", **check) == threads * checks

    # The replayed OpenEntry answered the stored entry: one entry opened, counted once.
    assert metric(samples, "aftersales_entries_opened_total") == 1
    assert metric(samples, "aftersales_entries_used_total") == 1
    assert metric(samples, "aftersales_clawbacks_recorded_total", state="PARTIAL") == 1
    # What the walkthrough's refund recovers (README): all but the group leader, who owed it
    # until the payout paid it.
    due = {"INFLUENCER": 6_495, "GROUP_LEADER": 1_299, "AFFILIATE": 649}
    due["TECHNICAL_SERVICE_FEE"] = 3_247
    for kind, amount in due.items():
        assert metric(samples, "aftersales_clawback_due_minor_units_total", payee_kind=kind) == (
            amount
        )
    recovered = "aftersales_clawback_recovered_minor_units_total"
    assert metric(samples, recovered, payee_kind="INFLUENCER", source="refund") == 6_495
    assert metric(samples, recovered, payee_kind="GROUP_LEADER", source="refund") == 0
    assert metric(samples, recovered, payee_kind="GROUP_LEADER", source="debt") == 1_299
    outstanding = "aftersales_clawback_outstanding_minor_units_total"
    assert metric(samples, outstanding, payee_kind="GROUP_LEADER") == 1_299
    assert metric(samples, outstanding, payee_kind="INFLUENCER") == 0
    changes = "aftersales_clawback_state_changes_total"
    assert metric(samples, changes, from_state="PARTIAL", to_state="RECOVERED") == 1
    assert_the_dashboard_reads_only_what_is_exported(samples)


def test_sqlite_s_writer_counts_each_write_its_group_its_wait_and_the_time_its_turn_was_held(
    observed,
):
    writes = 5
    waits = "aftersales_sqlite_write_wait_seconds"
    before, started = observed.scrape(), time.perf_counter()
    with observed.client() as platform:
        for i in range(writes):  # one after another: each alone in its group
            platform.post_funds(LEADER, 100, memo=f"payout {i}")
        with pytest.raises(InvalidArgument):  # refused before it is queued to write
            platform.post_funds(LEADER, 0, memo="nothing")

    def grown(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    # A group is counted once its callers are woken: the last may be counted after its answer.
    deadline = time.monotonic() + 10
    after = observed.scrape()
    while grown("aftersales_sqlite_writes_total") < writes and time.monotonic() < deadline:
        time.sleep(0.05)
        after = observed.scrape()
    elapsed = time.perf_counter() - started

    assert grown("aftersales_sqlite_writes_total") == writes
    assert grown("aftersales_sqlite_writer_groups_total") == writes
    assert grown(f"{waits}_count") == writes
    assert 0 <= grown(f"{waits}_sum") <= elapsed
    assert grown(f"{waits}_bucket", le="+Inf") == writes
    # Held for the writes, and never longer than the time that passed: one turn at a time.
    assert 0 < grown("aftersales_sqlite_writer_busy_seconds_total") <= elapsed


def assert_the_dashboard_reads_only_what_is_exported(samples: dict) -> None:
    """Every metric the Grafana dashboard's queries name is in the scrape, with the labels they
    select or group by (the `job` and `instance` labels are Prometheus's)."""
    labels: dict[str, set[str]] = {}
    for name, pairs in samples:
        labels.setdefault(name, set()).update(key for key, _ in pairs)
    dashboard = json.loads((ROOT / "docs" / "grafana" / "aftersales.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) > 10
    for query in queries:
        named = re.findall(r"([a-z_]+)\{([^}]*)\}", query)
        assert named, query
        known: set[str] = {"job", "instance"}
        for name, selector in named:
            assert name in labels, f"{name} is not exported ({query})"
            known |= labels[name]
            assert {m.split("=")[0].rstrip("!~") for m in selector.split(",")} <= known, query
        for grouped in re.findall(r"by \(([^)]*)\)", query):
            assert {label.strip() for label in grouped.split(",")} <= known, query


def test_log_lines_carry_a_utc_iso_time_the_request_id_and_the_trace_id_of_their_call(observed):
    with observed.client("staff", "tiny-owner") as tiny:
        with pytest.raises(FailedPrecondition):
            tiny.open_entry("order-tiny", "tiny-owner", request_id="log-line-request")
        # A request id the protos refuse is not copied into the log line (nor its span).
        with pytest.raises(InvalidArgument):
            tiny.open_entry("order-tiny", "tiny-owner", request_id="x" * 100_000)
    assert observed.terminate() == 0  # the spans waiting in the batch are written at the stop

    records = observed.log_records()
    assert records and all(UTC_ISO.fullmatch(r["asctime"]) for r in records)
    [call] = [r for r in records if r.get("request_id") == "log-line-request"]
    assert call["message"] == "rpc"
    assert call["code"] == "FAILED_PRECONDITION"
    assert re.fullmatch(r"[0-9a-f]{32}", call["trace_id"])
    # The console exporter writes each span as JSON: the call's has the log line's trace id.
    assert observed.spans_file is not None
    text = observed.spans_file.read_text(encoding="utf-8")
    spans = [json.loads(s) for s in re.split(r"(?<=\n})\n(?={)", text.strip()) if s]
    calls = [s for s in spans if s["name"] == "/aftersales.v1.AfterSalesEntry/OpenEntry"]
    [span] = [s for s in calls if s["context"]["trace_id"] == f"0x{call['trace_id']}"]
    assert span["attributes"]["rpc.grpc.status_code"] == 9
    transactions = [s for s in spans if s["parent_id"] == span["context"]["span_id"]]
    assert [s["name"] for s in transactions] == ["db.transaction"]
    [refused] = [r for r in records if r.get("code") == "INVALID_ARGUMENT"]
    assert "request_id" not in refused and len(json.dumps(refused)) < 2_000
    [refused_span] = [s for s in calls if s["context"]["trace_id"] == f"0x{refused['trace_id']}"]
    assert "aftersales.request_id" not in refused_span["attributes"]
    # Outside any call, a line has no trace id.
    serving = [r for r in records if r["message"] == "serving"]
    assert serving and "trace_id" not in serving[0]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OpenTelemetry collector's trace service, keeping what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):  # noqa: N802  # the proto's name
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_an_otlp_endpoint_in_the_environment_sends_the_spans_there(tmp_path):
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    address = f"127.0.0.1:{free_port()}"
    stderr = tmp_path / "server.stderr"
    env = {
        **_environment(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "aftersales-test",
    }
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", f"sqlite:///{tmp_path / 'aftersales.db'}",
        "--drain-seconds", "0",
        "--demo",
        "--demo-keys", str(tmp_path / "demo"),
    ]  # fmt: skip
    try:
        with stderr.open("wb") as errors:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=errors)
        server = ServerProcess(process, address, stderr, tmp_path / "demo")
        try:
            _wait_until_serving(server)
            with Client(address, token=server.token("staff", "tiny-owner")) as tiny:
                with pytest.raises(FailedPrecondition):
                    tiny.open_entry("order-tiny", "tiny-owner")
        finally:
            assert server.terminate() == 0  # the batch of spans is sent at the stop
    finally:
        receiver.stop(0)

    sent = [
        (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [(resource, span)] = [(r, s) for r, s in sent if s.name.endswith("/OpenEntry")]
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rpc.grpc.status_code"].int_value == 9
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "aftersales-test"
    children = [s.name for _, s in sent if s.parent_span_id == span.span_id]
    assert children == ["db.transaction"]


def test_a_health_watch_is_counted_started_each_status_sent_and_cancelled_when_left(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from prometheus_client import REGISTRY

    from server import settings
    from server.grpc.app import App
    from server.service import Service
    from server.service.clock import SystemClock
    from server.store import SqlStore, open_database

    labels = {"grpc_type": "SERVER_STREAMING", "grpc_service": "grpc.health.v1.Health"}
    labels["grpc_method"] = "Watch"
    cancelled = {**labels, "grpc_code": "CANCELLED"}

    def sample(name: str, where: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, where) or 0.0

    before = {
        "started": sample("grpc_server_started_total", labels),
        "sent": sample("grpc_server_msg_sent_total", labels),
        "cancelled": sample("grpc_server_handled_total", cancelled),
    }
    store = SqlStore(open_database(f"sqlite:///{tmp_path / 'watch.db'}"))
    store.migrate()
    app = App(
        Service(store, SystemClock(), settings.load_policy()), "127.0.0.1:0", sweep_interval=None
    )
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=60
            )
            next(watch)
            app.not_serving()
            next(watch)
            watch.cancel()
            deadline = time.monotonic() + 60
            while sample("grpc_server_handled_total", cancelled) == before["cancelled"]:
                assert time.monotonic() < deadline, "the Watch's end was not counted"
                time.sleep(0.05)
    finally:
        app.stop(grace=1)

    assert sample("grpc_server_started_total", labels) == before["started"] + 1
    assert (
        sample("grpc_server_msg_sent_total", labels) == before["sent"] + 2
    )  # SERVING, then NOT_SERVING
    assert sample("grpc_server_handled_total", cancelled) == before["cancelled"] + 1
