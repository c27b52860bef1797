"""The server's interceptors: the one every call goes through (the caller checked, refusals and
failures as rich statuses, a log line and the standard metrics), the health Check on threads of
its own, and OpenTelemetry's when tracing is on."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

import grpc

from aftersales.v1 import entry_pb2
from buf.validate import validate_pb2
from server import logs, tracing
from server.domain.access import Caller
from server.domain.errors import Refused
from server.grpc import answers, decoding, metrics, status
from server.grpc.callers import AccessGuard, PersonGuard, current_caller, identity_of
from server.grpc.events import ServerStopping, TooManyStreams
from server.service import StoreUnavailable, TransactionAborted

log = logging.getLogger("aftersales")

SERVICE_PACKAGE = "aftersales.v1"

# The request_id rule of the protos, read from them (8 to 128 characters from [A-Za-z0-9._:-]).
LOGGED_REQUEST_ID = re.compile(
    entry_pb2.OpenEntryRequest.DESCRIPTOR.fields_by_name["request_id"]
    .GetOptions()
    .Extensions[validate_pb2.field]
    .string.pattern
)


class CallInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]  # grpc-stubs
    """One log line and the standard gRPC server metrics per unary call (metrics.py, which
    counts the streaming ones too). The caller is checked first (with a guard: its
    certificate's identity against the access table). Refusals become rich statuses; a
    database that is down, busy or gave up waiting UNAVAILABLE and a transaction it aborted
    ABORTED, both retryable (status.py); any other exception is a bug, answered INTERNAL and
    logged with its traceback under an incident id. Each is answered through answers.abort, so
    that the tracing interceptor outside records the code the caller gets.

    A request whose bytes are not its message is refused INVALID_ARGUMENT without reaching the
    servicer, on every method, streaming ones too (decoding.py)."""

    def __init__(self, guard: AccessGuard | PersonGuard | None) -> None:
        self.guard = guard
        self.undecodable_peers = decoding.PeerLog()
        self.in_flight = InFlight()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_stream is not None and method.startswith(f"/{SERVICE_PACKAGE}."):
            # This service's own streams (WatchEvents); health Watch stays non-blocking below.
            return self._server_streaming(handler, method)
        if handler.unary_unary is None:
            checked = decoding.streaming(handler, method, self.undecodable_peers)
            return metrics.streaming(checked, method)
        inner = handler.unary_unary
        counted = metrics.of(method)

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = self.in_flight.begin(counted, method, context, person=True)
            counted.started.inc()
            counted.received.inc()
            code = grpc.StatusCode.OK
            caller: Caller | None = None
            token = None
            rid = getattr(request, "request_id", None)
            rid_token = None
            # Only an id of the form the protos allow reaches logs and spans: the request is
            # not validated yet, and a refused one must not write megabytes into either.
            if rid and LOGGED_REQUEST_ID.fullmatch(rid):
                rid_token = logs.request_id.set(rid)
                call.request_id = rid
                tracing.tag_request(rid)
            try:
                if self.guard is not None:
                    caller = call.caller = self.guard.check(method, context)
                token = current_caller.set(caller)
                if isinstance(request, decoding.Undecodable):
                    decoding.refuse(request, context, method, self.undecodable_peers)
                response = inner(request, context)
                # A method may answer an error without raising (health Check, an unknown service).
                code = context.code() or code  # type: ignore[attr-defined]  # grpc-stubs lag
                if code is grpc.StatusCode.OK and not context.is_active():
                    code = _left(context)  # its caller left while it ran: no answer reaches it
                return response
            except Exception as error:
                if caller is None and self.guard is not None:
                    call.caller = _certified(context)  # the guard refused it
                code, rich = _failure(error, context, method)
                if rich is None:
                    raise  # the handler aborted by itself
                answers.abort(context, rich)
            finally:
                if token is not None:
                    current_caller.reset(token)
                if code is grpc.StatusCode.OK:
                    counted.sent.inc()
                self.in_flight.end(call, code)
                if rid_token is not None:
                    logs.request_id.reset(rid_token)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=decoding.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _server_streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A server-streaming call gets what a unary one does: the caller checked, refusals and
        failures as rich statuses (raised while the stream runs, too), one log line at its end."""
        inner = handler.unary_stream
        assert inner is not None
        counted = metrics.of(method, metrics.grpc_type(handler))

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = self.in_flight.begin(counted, method, context, person=False)
            counted.started.inc()
            counted.received.inc()
            code = grpc.StatusCode.OK
            caller: Caller | None = None
            try:
                if self.guard is not None:
                    caller = call.caller = self.guard.check(method, context)
                # The stream runs on this thread from its first message to its last.
                current_caller.set(caller)
                if isinstance(request, decoding.Undecodable):
                    decoding.refuse(request, context, method, self.undecodable_peers)
                for response in inner(request, context):
                    counted.sent.inc()
                    yield response
                if not context.is_active():
                    # The stream ended because its call did: what the caller got was that.
                    code = _left(context)
            except GeneratorExit:  # the call ended while the stream waited to send
                code = _left(context)
                raise
            except Exception as error:
                if caller is None and self.guard is not None:
                    call.caller = _certified(context)  # the guard refused it
                code, rich = _failure(error, context, method)
                if rich is None:
                    raise  # the handler aborted by itself
                answers.abort(context, rich)
            finally:
                current_caller.set(None)
                self.in_flight.end(call, code)

        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=decoding.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Serving:
    """A call from its start to its end: what its log line says."""

    __slots__ = (
        "counted", "method", "start", "context", "peer", "trace", "caller", "person", "request_id",
        "left",
    )  # fmt: skip

    def __init__(
        self,
        counted: metrics.MethodMetrics,
        method: str,
        context: grpc.ServicerContext,
        *,
        person: bool,
    ) -> None:
        self.counted = counted
        self.method = method
        self.start = time.perf_counter()
        self.context = context
        # Read now: a call its caller left, or one a stop cancelled, has none at its end.
        self.peer = context.peer() if log.isEnabledFor(logging.INFO) else None
        # Its span's ids, while tracing: the line of a call abandoned is written on another
        # thread, outside the span.
        self.trace = tracing.current_ids()
        self.caller: Caller | None = None
        self.person = person
        self.request_id: str | None = None  # one of the form the protos allow
        # The code its caller got, if the caller left before the server began to stop.
        self.left: grpc.StatusCode | None = None

    def ended(self, code: grpc.StatusCode) -> None:
        """Its code and duration counted, and its log line: with the person its caller acts for
        (if `person`), and its request id, which the log's context does not name on another
        thread than the call's (InFlight.abandon)."""
        seconds = time.perf_counter() - self.start
        self.counted.handled(code)
        self.counted.seconds.observe(seconds)
        if not log.isEnabledFor(logging.INFO):
            return
        caller = self.caller
        line = {
            "method": self.method,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
            "peer": self.context.peer() if self.peer is None else self.peer,
            "caller": caller.identity if caller else None,
        }
        if self.person:
            line["person"] = caller.person.person_id if caller and caller.person else None
        if self.request_id is not None:
            line["request_id"] = self.request_id
        if self.trace is not None:
            line["trace_id"], line["span_id"] = self.trace
        log.info("rpc", extra=line)


class InFlight:
    """The calls being served: each is counted and logged once, when it ends, or when the server
    stops without it (abandon)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[_Serving] = set()

    def begin(
        self,
        counted: metrics.MethodMetrics,
        method: str,
        context: grpc.ServicerContext,
        *,
        person: bool,
    ) -> _Serving:
        call = _Serving(counted, method, context, person=person)
        with self._lock:
            self._calls.add(call)
        return call

    def end(self, call: _Serving, code: grpc.StatusCode) -> None:
        with self._lock:
            if call not in self._calls:
                return  # abandoned: its line is written
            self._calls.remove(call)
        call.ended(code)

    def stopping(self) -> None:
        """Before a stop: the calls whose callers have already left (cancelled, or past their
        deadline) keep the code those callers got, which gRPC's cancelling of every call at the
        grace's end would otherwise hide."""
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            if not call.context.is_active():
                call.left = _left(call.context)

    def abandon(self) -> int:
        """Ends the calls whose handlers still run once a stop's grace is over (on a database
        that does not answer), each counted and logged now, before the process exits without
        them, with the code its caller got: the one it had left with before the stop
        (`stopping`), else gRPC's cancelling of each at the grace's end (UNAVAILABLE,
        "Cancelling all calls"), unless its deadline had passed before (DEADLINE_EXCEEDED).
        How many there were."""
        with self._lock:
            calls, self._calls = self._calls, set()
        for call in calls:
            call.ended(call.left or _left(call.context, cancelled=grpc.StatusCode.UNAVAILABLE))
        return len(calls)


def _certified(context: grpc.ServicerContext) -> Caller | None:
    """Who a call the guard refused came from, for its log line: the identity its certificate
    proves, if any (the person's token, if it sent one, was not believed)."""
    try:
        identity = identity_of(context)
    except Exception:  # a certificate the guard could not read either: its refusal stands
        return None
    return Caller(identity) if identity else None


def _left(
    context: grpc.ServicerContext, cancelled: grpc.StatusCode = grpc.StatusCode.CANCELLED
) -> grpc.StatusCode:
    """The code of a call that ended before its handler did: its deadline passed, or it was
    cancelled (by its caller, or by the server cutting a stalled stream), which its caller got
    as `cancelled`."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return cancelled


def _failure(
    error: Exception, context: grpc.ServicerContext, method: str
) -> tuple[grpc.StatusCode, Any]:
    """The code and rich status a call that raised `error` is answered with, logged as it
    deserves; no status when the handler aborted by itself (the error is raised on). Refusals
    are the caller's; a database that is down or aborted a transaction is retryable (no
    traceback: an outage fails every call); anything else is a bug, INTERNAL with an incident."""
    if isinstance(error, Refused):
        rich = status.to_status(error)
        return rich.code, rich
    if isinstance(error, TooManyStreams):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, status.too_many_streams(str(error))
    if isinstance(error, ServerStopping):
        return grpc.StatusCode.UNAVAILABLE, status.stopping(str(error))
    if isinstance(error, StoreUnavailable):
        log.warning("database unavailable while serving %s: %s", method, error)
        return grpc.StatusCode.UNAVAILABLE, status.unavailable()
    if isinstance(error, TransactionAborted):
        log.info("transaction aborted while serving %s: %s", method, error)
        return grpc.StatusCode.ABORTED, status.aborted()
    aborted = context.code()  # type: ignore[attr-defined]  # grpc-stubs lag grpcio
    if aborted not in (None, grpc.StatusCode.OK):
        return aborted, None
    incident = uuid.uuid4().hex[:12]
    log.exception("bug while serving %s", method, extra={"incident": incident})
    return grpc.StatusCode.INTERNAL, status.internal(incident)


class OwnThreads(grpc.ServerInterceptor):  # type: ignore[type-arg]  # grpc-stubs
    """Runs some methods on thread pools of their own (grpc's per-method
    `experimental_thread_pool`), out of the RPC workers' pool: the health Check answers even when
    every RPC worker is blocked, and an event stream, which holds its thread while it lasts,
    takes none of the workers the other calls need."""

    def __init__(self, pools: Mapping[str, futures.ThreadPoolExecutor]) -> None:
        """`pools`: the pool of each method (its full name): unary, server-streaming or
        bidirectional (server reflection's)."""
        self.pools = dict(pools)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        pool = self.pools.get(handler_call_details.method)
        if handler is None or pool is None:
            return handler
        inner: Callable[..., Any]
        if handler.unary_unary is not None:
            inner, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            inner, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        elif handler.stream_stream is not None:
            inner, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        else:
            return handler

        def on_own_threads(request: Any, context: grpc.ServicerContext) -> Any:
            return inner(request, context)  # a stream's: its iterator, which grpc runs there

        setattr(on_own_threads, "experimental_thread_pool", pool)  # noqa: B010  # for grpc
        return make(
            on_own_threads,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def traced() -> grpc.ServerInterceptor | None:  # type: ignore[type-arg]  # grpc-stubs
    """OpenTelemetry's server interceptor, when tracing is on (server/tracing.py): a span per
    call, health's excepted (load balancers call it every few seconds; and its Watch would
    lose its non-blocking way)."""
    provider = tracing.provider()
    if provider is None:
        return None
    from opentelemetry.instrumentation.grpc import filters, server_interceptor

    interceptor: grpc.ServerInterceptor = server_interceptor(  # type: ignore[type-arg,no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(filters.health_check())
    )
    return interceptor
