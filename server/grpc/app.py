"""Assembles the gRPC server: services, health, reflection, the interceptors (interceptors.py)
and the background threads (background.py); binds its address and stops it in order."""

from __future__ import annotations

import logging
import socket
import threading
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
from server.domain.access import AccessTable
from server.grpc import metrics
from server.grpc.background import HealthMonitor, StoreUpkeep, Sweeper
from server.grpc.callers import AccessGuard, PersonGuard
from server.grpc.clawbacks import ClawbackServicer
from server.grpc.entries import AfterSalesEntryServicer
from server.grpc.events import EventsServicer
from server.grpc.interceptors import CallInterceptor, OwnThreads, traced
from server.grpc.methods import METHOD_NAMES as METHOD_NAMES  # also imported from here
from server.grpc.sync import SyncServicer
from server.grpc.threads import DEFAULT_MAX_STREAMS, DEFAULT_WORKERS
from server.grpc.tokens import TokenVerifier
from server.service import Service

log = logging.getLogger("aftersales")

SERVICE_NAMES = (
    sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name,
    entry_pb2.DESCRIPTOR.services_by_name["AfterSalesEntry"].full_name,
    clawback_pb2.DESCRIPTOR.services_by_name["Clawback"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
)

# How long stopping waits, after the grace, for the workers to end and the connections to close.
STOP_SECONDS = 2.0

# Pings on a connection idle this long, closed unless answered within the timeout.
KEEPALIVE_SECONDS = 60
KEEPALIVE_TIMEOUT_SECONDS = 20

HEALTH_CHECK_METHOD = f"/{health.SERVICE_NAME}/Check"
WATCH_EVENTS_METHOD = "/{}/WatchEvents".format(
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name
)

# Server reflection's stream (grpcurl holds one open for each of its commands), served on threads
# of its own: this many at once, the others waiting for one.
REFLECTION_METHOD = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"
REFLECTION_STREAMS = 4

# Threads the event streams' pool has beyond its streams: those that refuse a stream over the
# limit (RESOURCE_EXHAUSTED), so that the refusal does not wait for a stream to end.
_STREAM_REFUSERS = 2


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
        workers: int = DEFAULT_WORKERS,
        credentials: grpc.ServerCredentials | None = None,
        access: AccessTable | None = None,
        tokens: TokenVerifier | None = None,
        sweep_interval: float | None = 30.0,
        health_probe: Callable[[], None] | None = None,
        health_interval: float = 2.0,
        on_health: Callable[[str | None], None] | None = None,
        reuse_port: bool = False,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        """`access`: the table callers are checked against, by the identity their certificate
        proves (credentials must then require client certificates); None checks no caller.
        `tokens` verifies the tokens of the people callers act for; without an access table,
        the methods that name a person need that person's token (PersonGuard).
        `health_probe` raises when the database does not answer; it is called every
        `health_interval` seconds once started, and health follows it; `on_health` is told
        after each probe whether it hung (why, else None). Without
        `sweep_interval` this server does not sweep (another process does).

        Binds the address at once (OSError with the reason when it cannot), so a caller may
        bind before touching anything else. With `reuse_port`, other processes listen on the
        same port (SO_REUSEPORT) and the kernel spreads the connections among them: the address
        is then held by a PortReservation, and not probed again. `max_streams`: event streams
        served at once, each on a thread of its own while it lasts (not an RPC worker's)."""
        self.service = service
        service.observe(metrics.record)
        # Health checks run on threads of their own: a load balancer's Check is answered even
        # when every RPC worker waits on the database.
        self._health_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
        # Event streams run on threads of their own: a consumer holds its thread for hours, and
        # the RPC workers are few (threads.py).
        self._streams_pool = futures.ThreadPoolExecutor(
            max_workers=max_streams + _STREAM_REFUSERS, thread_name_prefix="stream"
        )
        # So do reflection's streams: a grpcurl command holds one while it lasts (a WatchEvents
        # followed for minutes), and it would hold an RPC worker.
        self._reflection_pool = futures.ThreadPoolExecutor(
            max_workers=REFLECTION_STREAMS, thread_name_prefix="reflection"
        )
        self._workers = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc")
        # The first interceptor's handler is the one grpc runs: the own threads of the health
        # Check and of the event streams are given there. The RPC's span, when tracing,
        # encloses everything else.
        interceptors: list[grpc.ServerInterceptor] = [  # type: ignore[type-arg]  # grpc-stubs
            OwnThreads(
                {
                    HEALTH_CHECK_METHOD: self._health_pool,
                    WATCH_EVENTS_METHOD: self._streams_pool,
                    REFLECTION_METHOD: self._reflection_pool,
                }
            )
        ]
        tracer = traced()
        if tracer is not None:
            interceptors.append(tracer)
        self.calls = CallInterceptor(guard(access, tokens))
        interceptors.append(self.calls)
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
        self.events = EventsServicer(service, max_streams=max_streams)
        events_pb2_grpc.add_EventsServicer_to_server(self.events, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = _listen(self.server, address, credentials, probe=not reuse_port)
        self.sweeper = Sweeper(service, sweep_interval) if sweep_interval is not None else None
        self.upkeep = StoreUpkeep(service)
        self.monitor = (
            HealthMonitor(
                self.health,
                (*SERVICE_NAMES, ""),
                health_probe,
                health_interval,
                on_round=on_health,
            )
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
        self.upkeep.start()
        if self.monitor is not None:
            self.monitor.start()
        return self

    def not_serving(self) -> None:
        """Health goes NOT_SERVING for good (a drain begins: load balancers stop sending new
        callers); calls are still served until `stop()`."""
        if self.monitor is not None:
            # The probe goes on: calls are still served, and follow it (on_health).
            self.monitor.hold()
        self.health.enter_graceful_shutdown()
        # Event streams would hold their threads to the end of the grace: their consumers
        # resume on another server at once instead.
        self.events.feed.close()

    def stop(self, grace: float = 10.0) -> bool:
        """Health goes NOT_SERVING, new calls are refused, and calls in flight get up to `grace`
        seconds to finish. False when calls are still running after it (on a database that does
        not answer): gRPC has answered them UNAVAILABLE (DEADLINE_EXCEEDED when their deadline
        had passed), each is logged and counted so (InFlight.abandon), and the caller may exit
        without them."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        self.not_serving()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.upkeep.stop()
        self.calls.in_flight.stopping()
        self.server.stop(grace).wait()
        # What still runs has lost its call to gRPC's cancelling at the grace's end.
        self.calls.in_flight.abandon()
        self._health_pool.shutdown(wait=False)
        finished = _within(STOP_SECONDS, self._shutdown_pools)
        if self.monitor is not None:
            # Only now: calls still running follow the probe (on_health) to their end.
            self.monitor.stop()
        # The threads that read the database on their own end their statements before the
        # connections close under them (closing one in use can crash the driver).
        for thread in (self.sweeper, self.upkeep, self.events.feed.thread):
            if thread is not None and thread.is_alive():
                thread.join(STOP_SECONDS)
        return _within(STOP_SECONDS, self.service.close) and finished

    def wait(self) -> None:
        self.server.wait_for_termination()

    def _shutdown_pools(self) -> None:
        """Waits for the RPC workers and the event streams to end their calls."""
        self._workers.shutdown()
        self._streams_pool.shutdown()
        self._reflection_pool.shutdown()


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
    if probe:
        probe_address(address)
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


def probe_address(address: str) -> None:
    """OSError with the operating system's reason (address in use, not of this host, unknown
    host) unless a plain socket can bind `address`; port 0 tries any free port."""
    found = _resolve(address)
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
