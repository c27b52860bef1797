"""Assembles the gRPC server: services, health, reflection, call logs and metrics, the sweeper."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)
from buf.validate import validate_pb2
from server import logs, tracing
from server.domain.access import AccessTable, Caller
from server.domain.errors import Refused
from server.grpc import answers, decoding, metrics, status
from server.grpc.callers import AccessGuard, PersonGuard, current_caller
from server.grpc.clawbacks import ClawbackServicer
from server.grpc.entries import AfterSalesEntryServicer
from server.grpc.events import EventsServicer, ServerStopping, TooManyStreams
from server.grpc.methods import METHOD_NAMES as METHOD_NAMES  # also imported from here
from server.grpc.sync import SyncServicer
from server.grpc.tokens import TokenVerifier
from server.service import Service, StoreUnavailable, TransactionAborted

log = logging.getLogger("aftersales")

SERVICE_NAMES = (
    sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name,
    entry_pb2.DESCRIPTOR.services_by_name["AfterSalesEntry"].full_name,
    clawback_pb2.DESCRIPTOR.services_by_name["Clawback"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
)

SERVICE_PACKAGE = "aftersales.v1"

# How long stopping waits, after the grace, for the workers to end and the connections to close.
STOP_SECONDS = 2.0

# The request_id rule of the protos, read from them (8 to 128 characters from [A-Za-z0-9._:-]).
LOGGED_REQUEST_ID = re.compile(
    entry_pb2.OpenEntryRequest.DESCRIPTOR.fields_by_name["request_id"]
    .GetOptions()
    .Extensions[validate_pb2.field]
    .string.pattern
)

# Pings on a connection idle this long, closed unless answered within the timeout.
KEEPALIVE_SECONDS = 60
KEEPALIVE_TIMEOUT_SECONDS = 20

HEALTH_CHECK_METHOD = f"/{health.SERVICE_NAME}/Check"


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
            start = time.perf_counter()
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
                tracing.tag_request(rid)
            try:
                if self.guard is not None:
                    caller = self.guard.check(method, context)
                token = current_caller.set(caller)
                if isinstance(request, decoding.Undecodable):
                    decoding.refuse(request, context, method, self.undecodable_peers)
                response = inner(request, context)
                # A method may answer an error without raising (health Check, an unknown service).
                code = context.code() or code  # type: ignore[attr-defined]  # grpc-stubs lag
                return response
            except Exception as error:
                code, rich = _failure(error, context, method)
                if rich is None:
                    raise  # the handler aborted by itself
                answers.abort(context, rich)
            finally:
                if token is not None:
                    current_caller.reset(token)
                seconds = time.perf_counter() - start
                counted.handled(code)
                counted.seconds.observe(seconds)
                if code is grpc.StatusCode.OK:
                    counted.sent.inc()
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "rpc",
                        extra={
                            "method": method,
                            "code": code.name,
                            "duration_ms": round(seconds * 1000, 3),
                            "peer": context.peer(),
                            "caller": caller.identity if caller else None,
                            "person": caller.person.person_id if caller and caller.person else None,
                        },
                    )
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
            start = time.perf_counter()
            counted.started.inc()
            counted.received.inc()
            code = grpc.StatusCode.OK
            caller: Caller | None = None
            try:
                if self.guard is not None:
                    caller = self.guard.check(method, context)
                # The stream runs on this thread from its first message to its last.
                current_caller.set(caller)
                if isinstance(request, decoding.Undecodable):
                    decoding.refuse(request, context, method, self.undecodable_peers)
                for response in inner(request, context):
                    counted.sent.inc()
                    yield response
            except GeneratorExit:  # the caller cancelled
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                code, rich = _failure(error, context, method)
                if rich is None:
                    raise  # the handler aborted by itself
                answers.abort(context, rich)
            finally:
                current_caller.set(None)
                seconds = time.perf_counter() - start
                counted.handled(code)
                counted.seconds.observe(seconds)
                log.info(
                    "rpc",
                    extra={
                        "method": method,
                        "code": code.name,
                        "duration_ms": round(seconds * 1000, 3),
                        "peer": context.peer(),
                        "caller": caller.identity if caller else None,
                    },
                )

        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=decoding.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


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


# The debts PostFunds leaves (past what one call pays) are paid on by each sweep in rounds of at
# most SWEEP_PAYEES payees, a transaction each, until none is left or SWEEP_ROUNDS rounds ran.
SWEEP_PAYEES = 20
SWEEP_ROUNDS = 100


class Sweeper(threading.Thread):
    """Stores as EXPIRED the entries whose window passed (readers see them EXPIRED already), each
    with its event, pays on the debts PostFunds left to it, and prunes the events older than the
    retention: three tasks, each on its own, so that one failing holds up neither of the others.
    A failing task is logged when it starts failing and when it works again, not each time."""

    def __init__(self, service: Service, interval: float) -> None:
        super().__init__(name="sweeper", daemon=True)
        self.service = service
        self.interval = interval
        self.stopped = threading.Event()
        self.failing: set[str] = set()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            expired = self._task("expiring entries", self.service.expire_entries)
            if expired:
                log.info("entries expired", extra={"count": expired})
            payees = self._task("paying pending debts", self._settle_debts)
            if payees:
                log.info("pending debts paid on", extra={"payee_transactions": payees})
            pruned = self._task("pruning events", self.service.prune_events)
            if pruned:
                log.info("events pruned", extra={"count": pruned})

    def _settle_debts(self) -> int:
        payees = 0
        for _ in range(SWEEP_ROUNDS):
            handled = self.service.settle_pending_debts(SWEEP_PAYEES)
            if not handled or self.stopped.is_set():
                break
            payees += handled
        return payees

    def _task(self, name: str, task: Callable[[], int]) -> int:
        try:
            done = task()
        except StoreUnavailable as e:
            if name not in self.failing:
                log.warning("sweep: %s fails, the database is unavailable; will retry: %s", name, e)
            self.failing.add(name)
            return 0
        except Exception:
            if name not in self.failing:
                log.exception("sweep: %s failed; will retry", name)
            self.failing.add(name)
            return 0
        if name in self.failing:
            log.info("sweep: %s works again", name)
            self.failing.discard(name)
        return done

    def stop(self) -> None:
        self.stopped.set()


class _Attempt:
    """One probe, run on a daemon thread of its own so that a hung database blocks only it
    (and never the exit of the process)."""

    def __init__(self, probe: Callable[[], None]) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None
        threading.Thread(target=self._run, args=(probe,), name="health-probe", daemon=True).start()

    def _run(self, probe: Callable[[], None]) -> None:
        try:
            probe()
        except Exception as e:
            self.error = e
        finally:
            self.done.set()


class HealthMonitor(threading.Thread):
    """Health follows the database: every `interval` seconds `probe` must return within
    `timeout` seconds, else the server and each service are NOT_SERVING until it does again.
    Each change is logged once. A probe still hung from the round before is waited for again,
    not started twice."""

    def __init__(
        self,
        health: Any,
        services: tuple[str, ...],
        probe: Callable[[], None],
        interval: float,
        timeout: float | None = None,
    ) -> None:
        super().__init__(name="health-monitor", daemon=True)
        self.health = health
        self.services = services
        self.probe = probe
        self.interval = interval
        self.timeout = interval if timeout is None else timeout
        self.stopped = threading.Event()
        self.serving = True

    def run(self) -> None:
        attempt: _Attempt | None = None
        while not self.stopped.is_set():
            if attempt is None or attempt.done.is_set():
                attempt = _Attempt(self.probe)
            if not attempt.done.wait(self.timeout):
                self._record(f"the database did not answer within {self.timeout:g} s")
            elif attempt.error is not None:
                self._record(str(attempt.error) or type(attempt.error).__name__)
            else:
                self._record(None)
            self.stopped.wait(self.interval)

    def _record(self, failure: str | None) -> None:
        serving = failure is None
        if serving == self.serving or self.stopped.is_set():
            return
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.services:
            self.health.set(name, status)
        if serving:
            log.warning("the database answers again: SERVING")
        else:
            log.error("the database does not answer: NOT_SERVING", extra={"reason": failure})

    def stop(self) -> None:
        self.stopped.set()


class _OwnThreads(grpc.ServerInterceptor):  # type: ignore[type-arg]  # grpc-stubs
    """Runs one method on a thread pool of its own (grpc's per-method `experimental_thread_pool`):
    the health Check answers even when every RPC worker is blocked."""

    def __init__(self, method: str, pool: futures.ThreadPoolExecutor) -> None:
        self.method = method
        self.pool = pool

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or handler_call_details.method != self.method
        ):
            return handler
        inner = handler.unary_unary

        def on_own_threads(request: Any, context: grpc.ServicerContext) -> Any:
            return inner(request, context)

        setattr(on_own_threads, "experimental_thread_pool", self.pool)  # noqa: B010  # for grpc
        return grpc.unary_unary_rpc_method_handler(
            on_own_threads,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _traced() -> grpc.ServerInterceptor | None:  # type: ignore[type-arg]  # grpc-stubs
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


def guard(
    access: AccessTable | None, tokens: TokenVerifier | None
) -> AccessGuard | PersonGuard | None:
    """How callers are checked: by certificate and access table, else by the people's tokens
    only, else (an open development server) not at all."""
    if access is not None:
        return AccessGuard(access, tokens)
    if tokens is not None:
        return PersonGuard(tokens)
    return None


class App:
    """A running server: bound to its address when made, `start()`, then `stop()` (graceful)."""

    def __init__(
        self,
        service: Service,
        address: str = "127.0.0.1:50051",
        *,
        workers: int = 8,
        credentials: grpc.ServerCredentials | None = None,
        access: AccessTable | None = None,
        tokens: TokenVerifier | None = None,
        sweep_interval: float | None = 30.0,
        health_probe: Callable[[], None] | None = None,
        health_interval: float = 2.0,
        reuse_port: bool = False,
        max_streams: int | None = None,
    ) -> None:
        """`access`: the table callers are checked against, by the identity their certificate
        proves (credentials must then require client certificates); None checks no caller.
        `tokens` verifies the tokens of the people callers act for; without an access table,
        the methods that name a person need that person's token (PersonGuard).
        `health_probe` raises when the database does not answer; it is called every
        `health_interval` seconds once started, and health follows it. Without
        `sweep_interval` this server does not sweep (another process does).

        Binds the address at once (OSError with the reason when it cannot), so a caller may
        bind before touching anything else. With `reuse_port`, other processes listen on the
        same port (SO_REUSEPORT) and the kernel spreads the connections among them: the address
        is then held by a PortReservation, and not probed again. `max_streams`: event streams
        served at once (each holds a worker thread while it lasts); half the workers by
        default."""
        self.service = service
        service.observe(metrics.record)
        # Health checks run on threads of their own: a load balancer's Check is answered even
        # when every RPC worker waits on the database.
        self._health_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
        self._workers = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc")
        # The first interceptor's handler is the one grpc runs: the health Check's own threads
        # are given there. The RPC's span, when tracing, encloses everything else.
        interceptors: list[grpc.ServerInterceptor] = [  # type: ignore[type-arg]  # grpc-stubs
            _OwnThreads(HEALTH_CHECK_METHOD, self._health_pool)
        ]
        traced = _traced()
        if traced is not None:
            interceptors.append(traced)
        interceptors.append(CallInterceptor(guard(access, tokens)))
        self.server = grpc.server(
            self._workers,
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", int(reuse_port)),
                # A consumer whose host died or whose connection a middlebox dropped would hold
                # its event stream (a worker) until TCP gave up: ping idle connections, and close
                # those that do not answer.
                ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
            ],
        )
        sync_pb2_grpc.add_SyncServicer_to_server(SyncServicer(service), self.server)
        entry_pb2_grpc.add_AfterSalesEntryServicer_to_server(
            AfterSalesEntryServicer(service), self.server
        )
        # Watch answers from the servicer's own callbacks and holds no thread (non-blocking).
        self.health = health.HealthServicer()
        clawback_pb2_grpc.add_ClawbackServicer_to_server(ClawbackServicer(service), self.server)
        self.events = EventsServicer(
            service, max_streams=max_streams if max_streams is not None else max(1, workers // 2)
        )
        events_pb2_grpc.add_EventsServicer_to_server(self.events, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = _listen(self.server, address, credentials, probe=not reuse_port)
        self.sweeper = Sweeper(service, sweep_interval) if sweep_interval is not None else None
        self.monitor = (
            HealthMonitor(self.health, (*SERVICE_NAMES, ""), health_probe, health_interval)
            if health_probe is not None
            else None
        )
        self._stopped = threading.Event()

    def start(self) -> App:
        self.server.start()
        for name in (*SERVICE_NAMES, ""):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.sweeper is not None:
            self.sweeper.start()
        if self.monitor is not None:
            self.monitor.start()
        return self

    def not_serving(self) -> None:
        """Health goes NOT_SERVING for good (a drain begins: load balancers stop sending new
        callers); calls are still served until `stop()`."""
        if self.monitor is not None:
            self.monitor.stop()
        self.health.enter_graceful_shutdown()
        # Event streams would hold their workers to the end of the grace: their consumers
        # resume on another server at once instead.
        self.events.feed.close()

    def stop(self, grace: float = 10.0) -> bool:
        """Health goes NOT_SERVING, new calls are refused, and calls in flight get up to `grace`
        seconds to finish. False when calls are still running after it (on a database that does
        not answer): gRPC has answered them CANCELLED, and the caller may exit without them."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        self.not_serving()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.server.stop(grace).wait()
        self._health_pool.shutdown(wait=False)
        finished = _within(STOP_SECONDS, self._workers.shutdown)
        # The threads that read the database on their own end their statements before the
        # connections close under them (closing one in use can crash the driver).
        for thread in (self.sweeper, self.events.feed.thread):
            if thread is not None and thread.is_alive():
                thread.join(STOP_SECONDS)
        return _within(STOP_SECONDS, self.service.close) and finished

    def wait(self) -> None:
        self.server.wait_for_termination()


def _within(seconds: float, step: Callable[[], object]) -> bool:
    """Runs `step` on a daemon thread; whether it finished within `seconds`."""
    thread = threading.Thread(target=step, name="stopping", daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _resolve(address: str) -> list[tuple[Any, ...]]:
    """The socket addresses `host:port` names, for listening."""
    host, _, port = address.rpartition(":")
    try:
        return socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as e:
        raise OSError(f"cannot listen on {address}: {e}") from None


def _listen(
    server: grpc.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    probe: bool = True,
) -> int:
    """Binds `address`; the port bound. Tries the address with a plain socket first, to fail
    with the operating system's reason (address in use, unknown host) rather than gRPC's."""
    found = _resolve(address)
    if probe and int(address.rpartition(":")[2]) != 0:
        errors = []
        for family, kind, proto, _, where in found:
            try:
                with socket.socket(family, kind, proto) as attempt:
                    attempt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    attempt.bind(where)
            except OSError as e:
                errors.append(e)
        if len(errors) == len(found):
            raise OSError(f"cannot listen on {address}: {errors[0].strerror or errors[0]}")
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return bound


class PortReservation:
    """`host:port` held for the processes that will each listen on it with `reuse_port`: bound
    (port 0: a free port chosen) but not listening, so it takes no connection. Raises OSError
    with the operating system's reason when someone listens there already. No gRPC object is
    made: processes forked after it may still make their own servers."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        chosen = int(port)
        self.sockets: list[socket.socket] = []
        errors: list[OSError] = []
        for family, kind, proto, _, where in _resolve(address):
            held = socket.socket(family, kind, proto)
            try:
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                held.bind((where[0], chosen, *where[2:]))
                # Only after the bind, which fails when anyone listens here already.
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except OSError as e:
                held.close()
                errors.append(e)
                continue
            chosen = held.getsockname()[1]
            self.sockets.append(held)
        if not self.sockets:
            raise OSError(f"cannot listen on {address}: {errors[0].strerror or errors[0]}")
        self.port = chosen
        self.address = f"{host}:{chosen}"

    def close(self) -> None:
        for held in self.sockets:
            held.close()
