"""Prometheus metrics: the standard gRPC server metrics, and the business counters.

The gRPC metrics have the names and labels of py-grpc-prometheus (and of go-grpc-prometheus,
whose stock dashboards read them): `grpc_server_started_total`, `grpc_server_handled_total`
(with `grpc_code`), `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
`grpc_server_handling_seconds` histogram, each labelled `grpc_type`, `grpc_service` and
`grpc_method`. Messages are counted on every method, one each way for a unary call, as
go-grpc-prometheus does; the latency histogram is of unary calls only (a stream such as a
health Watch lasts as long as its caller wants).

The business counters (`aftersales_*`) count what the use cases achieved, once their
transaction committed (server/service/outcomes.py): a retry answered from the stored response
counts nothing again.

On SQLite, the writer's metrics (`aftersales_sqlite_*`) tell how much of the database's one
writer is in use: every write of every process runs in its turn, one group at a time
(server/store/group_commit.py). `rate(aftersales_sqlite_writer_busy_seconds_total[1m])`, added
up over the processes, is the share of the time the turn was held: near 1, writes queue for it
and adding load adds only latency (`aftersales_sqlite_write_wait_seconds`), whatever the cores.

prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is first imported: this module is
imported only once the server knows how many processes it runs (server/__main__.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from server.grpc import decoding
from server.service.outcomes import (
    ClawbackRecorded,
    DebtsRecovered,
    EntriesExpired,
    EntryOpened,
    EntryUsed,
    Outcome,
)

_LABELS = ["grpc_type", "grpc_service", "grpc_method"]

STARTED = Counter(
    "grpc_server_started_total", "Total number of RPCs started on the server.", _LABELS
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    [*_LABELS, "grpc_code"],
)
RECEIVED = Counter(
    "grpc_server_msg_received_total",
    "Total number of RPC messages received on the server.",
    _LABELS,
)
SENT = Counter(
    "grpc_server_msg_sent_total", "Total number of gRPC messages sent by the server.", _LABELS
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled "
    "by the server.",
    _LABELS,
    # Finer than prometheus_client's default buckets (5 ms and up): most calls take 1 to 5 ms.
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

UNARY = "UNARY"


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "BIDI_STREAMING"
    if handler.request_streaming:
        return "CLIENT_STREAMING"
    return "SERVER_STREAMING" if handler.response_streaming else UNARY


class MethodMetrics:
    """The samples of one method, their labels looked up once."""

    def __init__(self, method: str, kind: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        labels = (kind, service, name)
        self.labels = labels
        self.started = STARTED.labels(*labels)
        self.received = RECEIVED.labels(*labels)
        self.sent = SENT.labels(*labels)
        self.seconds = HANDLING_SECONDS.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> None:
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = HANDLED.labels(*self.labels, code.name)
        counter.inc()


_methods: dict[tuple[str, str], MethodMetrics] = {}
_methods_lock = threading.Lock()


def of(method: str, kind: str = UNARY) -> MethodMetrics:
    """The metrics of `method` (its full name, "/package.Service/Method")."""
    found = _methods.get((method, kind))
    if found is None:
        with _methods_lock:
            found = _methods.setdefault((method, kind), MethodMetrics(method, kind))
    return found


def streaming(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming method's handler that counts its call, its messages each way and how it
    ended. A non-blocking method (health Watch) stays non-blocking."""
    metrics = of(method, grpc_type(handler))
    deserializer, serializer = handler.request_deserializer, handler.response_serializer

    def counted(requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            metrics.received.inc()
            yield request

    def answered(responses: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        code = grpc.StatusCode.OK
        try:
            for response in responses:
                metrics.sent.inc()
                yield response
        except GeneratorExit:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = _code_of(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            metrics.handled(code)

    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def one_in(request: Any, context: grpc.ServicerContext, *callback: Any) -> Any:
            metrics.started.inc()
            metrics.received.inc()
            if callback:  # non-blocking: grpc takes each response from this callback
                send = callback[0]

                def send_counted(response: Any) -> None:
                    if response is not None:
                        metrics.sent.inc()
                    send(response)

                context.add_callback(
                    lambda: metrics.handled(_code_of(context, grpc.StatusCode.CANCELLED))
                )
                non_blocking: Callable[..., Any] = unary_stream
                return non_blocking(request, context, send_counted)
            try:
                responses = unary_stream(request, context)
            except Exception:
                metrics.handled(_code_of(context, grpc.StatusCode.UNKNOWN))
                raise
            return answered(responses, context) if responses is not None else None

        decoding.keep_threading(one_in, unary_stream)
        return grpc.unary_stream_rpc_method_handler(
            one_in, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        def many_in_many_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            metrics.started.inc()
            try:
                responses = stream_stream(counted(requests), context)
            except Exception:
                metrics.handled(_code_of(context, grpc.StatusCode.UNKNOWN))
                raise
            return answered(responses, context)

        return grpc.stream_stream_rpc_method_handler(
            many_in_many_out, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        def many_in(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            metrics.started.inc()
            code = grpc.StatusCode.OK
            try:
                response = stream_unary(counted(requests), context)
                metrics.sent.inc()
                return response
            except Exception:
                code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                metrics.handled(code)

        return grpc.stream_unary_rpc_method_handler(
            many_in, request_deserializer=deserializer, response_serializer=serializer
        )
    return handler


def _code_of(context: grpc.ServicerContext, otherwise: grpc.StatusCode) -> grpc.StatusCode:
    """The code the method's context was given (by an abort), else `otherwise`."""
    code = context.code()  # type: ignore[attr-defined]  # grpc-stubs lag grpcio
    return otherwise if code in (None, grpc.StatusCode.OK) else code


# --- Business counters ------------------------------------------------------------------------

ENTRIES_OPENED = Counter("aftersales_entries_opened_total", "Late after-sales entries opened.")
ENTRIES_USED = Counter(
    "aftersales_entries_used_total", "Entries used: a buyer filed an application through one."
)
ENTRIES_EXPIRED = Counter(
    "aftersales_entries_expired_total",
    "Entries stored as EXPIRED: their window passed unused (by a sweep, or found by an open).",
)
CLAWBACKS_RECORDED = Counter(
    "aftersales_clawbacks_recorded_total",
    "Refunds recorded, by the state of their clawback when recorded (RECOVERED, PARTIAL, "
    "OUTSTANDING, NOT_ELIGIBLE).",
    ["state"],
)
CLAWBACK_STATE_CHANGES = Counter(
    "aftersales_clawback_state_changes_total",
    "Clawbacks whose state changed after they were recorded, as payees' debts were paid.",
    ["from_state", "to_state"],
)
DUE = Counter(
    "aftersales_clawback_due_minor_units_total",
    "Commissions due back by the clawbacks recorded, in minor units (fen), by payee kind.",
    ["payee_kind"],
)
RECOVERED = Counter(
    "aftersales_clawback_recovered_minor_units_total",
    "Commissions recovered, in minor units (fen), by payee kind; source: refund (when the "
    "refund was recorded) or debt (later, from money reaching the payee).",
    ["payee_kind", "source"],
)
OUTSTANDING = Counter(
    "aftersales_clawback_outstanding_minor_units_total",
    "Commissions left owed when a refund was recorded (new debts), in minor units (fen), by "
    'payee kind; what is owed now grew by this and shrank by the recovered{source="debt"}.',
    ["payee_kind"],
)


def record(outcomes: Sequence[Outcome]) -> None:
    """Counts the outcomes of one committed unit of work."""
    for outcome in outcomes:
        match outcome:
            case EntryOpened():
                ENTRIES_OPENED.inc()
            case EntryUsed():
                ENTRIES_USED.inc()
            case EntriesExpired(count=count):
                ENTRIES_EXPIRED.inc(count)
            case ClawbackRecorded(clawback=clawback):
                CLAWBACKS_RECORDED.labels(clawback.state.value).inc()
                for line in clawback.lines:
                    kind = line.payee_kind.value
                    DUE.labels(kind).inc(line.due)
                    if line.recovered:
                        RECOVERED.labels(kind, "refund").inc(line.recovered)
                    if line.outstanding:
                        OUTSTANDING.labels(kind).inc(line.outstanding)
            case DebtsRecovered(paid=paid, state_changes=changes):
                for payee_kind, amount in paid:
                    RECOVERED.labels(payee_kind.value, "debt").inc(amount)
                for before, after in changes:
                    CLAWBACK_STATE_CHANGES.labels(before.value, after.value).inc()


# --- SQLite's writer --------------------------------------------------------------------------

WRITER_BUSY_SECONDS = Counter(
    "aftersales_sqlite_writer_busy_seconds_total",
    "Seconds this process held SQLite's one writer turn (its calls' writes, its sweeps, its "
    "upkeep's copies of the log that make the writers wait); added up over the processes, its "
    "rate is the share of the database's writing capacity in use (1: every write waits its turn).",
)
WRITER_GROUPS = Counter(
    "aftersales_sqlite_writer_groups_total",
    "Groups of calls' writes this process ran, one turn each (one transaction, or one a call "
    "when the group was rolled back and its calls ran again alone).",
)
WRITES = Counter(
    "aftersales_sqlite_writes_total",
    "Calls' writes this process ran in groups (every mutation: committed, or refused and rolled "
    "back); over the groups, the calls one turn carried.",
)
WRITE_WAIT_SECONDS = Histogram(
    "aftersales_sqlite_write_wait_seconds",
    "Seconds a call's writes waited for the writer's turn: from being queued to their group "
    "beginning (a call whose group did not begin within the writer's wait is not counted: it "
    "is answered UNAVAILABLE).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def writer_turn(held_seconds: float) -> None:
    """Counts one turn of SQLite's writer (WriterTurns.observe)."""
    WRITER_BUSY_SECONDS.inc(held_seconds)


def writer_group(waits: Sequence[float]) -> None:
    """Counts one group of SQLite's group writer, each of its calls having waited `waits[i]`
    seconds for it (GroupCommit.observe)."""
    for wait in waits:
        WRITE_WAIT_SECONDS.observe(wait)
    WRITER_GROUPS.inc()
    WRITES.inc(len(waits))  # last: a scrape that sees it sees the rest of the group
