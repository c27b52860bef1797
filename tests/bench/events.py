"""The events' end-to-end latency under load: a consumer follows WatchEvents while the RPCs are
measured, and for each event takes the time from the change (the server's timestamp of it: the
clock as the call making the change read it, before its writes and its commit) to the consumer
receiving it. Under load that includes the rest of the call's transaction, most of it on
PostgreSQL. The consumer runs in a process of its own (EventLatencyProcess), as a consumer
service would: in the load generator's, it would wait on that process's GIL."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import grpc

from aftersales.v1 import events_pb2, events_pb2_grpc


class EventLatency(threading.Thread):
    def __init__(self, address: str, database: str, orders: int, after: int) -> None:
        super().__init__(name="event-consumer", daemon=True)
        self.after = after
        self.channel = grpc.insecure_channel(address)
        self.result: dict[str, Any] = {"database": database, "orders": orders}
        self.latencies: list[float] = []
        self.watching = threading.Event()
        self.stream: Any = None
        self.started = time.time()

    def run(self) -> None:
        stub = events_pb2_grpc.EventsStub(self.channel)
        # From the newest position: the backlog (the data set's history, the runs before) would
        # delay the live events by however long reading it takes, which is not what a consumer
        # that keeps up sees. `after` is the newest the data set holds; read on to the end.
        newest = self.after
        while True:
            page = stub.ListEvents(
                events_pb2.ListEventsRequest(after_position=newest, page_size=500), timeout=60
            )
            newest = page.next_after_position
            if page.caught_up:
                break
        self.stream = stub.WatchEvents(
            events_pb2.WatchEventsRequest(after_position=newest, heartbeat_seconds=1)
        )
        self.watching.set()
        try:
            for item in self.stream:
                if item.HasField("event"):
                    received = time.time()
                    occurred = item.event.occurred_at.ToNanoseconds() / 1e9
                    if occurred >= self.started:  # not the backlog
                        self.latencies.append(received - occurred)
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.CANCELLED:
                self.result["error"] = f"{e.code().name}: {e.details()}"

    def begin(self) -> EventLatency:
        self.start()
        self.watching.wait(30)
        return self

    def finish(self) -> dict[str, Any]:
        """Stops following; the figures."""
        time.sleep(0.5)  # the last commits' events on their way
        if self.stream is not None:
            self.stream.cancel()
        self.join(10)
        self.channel.close()
        ordered = sorted(self.latencies)
        self.result["events"] = len(ordered)
        if ordered:
            self.result["p50_ms"] = round(_percentile(ordered, 50) * 1000, 2)
            self.result["p99_ms"] = round(_percentile(ordered, 99) * 1000, 2)
        return self.result


class EventLatencyProcess:
    """An EventLatency in a process of its own (spawned: the load generator's gRPC does not
    survive a fork)."""

    def __init__(self, address: str, database: str, orders: int, after: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.result: dict[str, Any] = {"database": database, "orders": orders}
        self.process = context.Process(
            target=_follow, args=(address, database, orders, after, child), daemon=True
        )

    def begin(self) -> EventLatencyProcess:
        self.process.start()
        if self.connection.poll(60):
            self.connection.recv()  # watching
        else:
            self.result["error"] = "the consumer was not watching within 60 s"
        return self

    def finish(self) -> dict[str, Any]:
        """Stops following; the figures."""
        self.connection.send("finish")
        result = (
            self.connection.recv()
            if self.connection.poll(60)
            else {**self.result, "events": 0, "error": "the consumer did not answer"}
        )
        if "error" in self.result and "error" not in result:
            result["error"] = self.result["error"]
        self.process.join(10)
        return result


def _follow(address: str, database: str, orders: int, after: int, connection: Any) -> None:
    consumer = EventLatency(address, database, orders, after).begin()
    connection.send("watching")
    connection.recv()  # finish
    connection.send(consumer.finish())


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def line(result: dict[str, Any]) -> str:
    from tests.bench.report import label  # the report prints these lines

    figures = (
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
        if result.get("events")
        else "none received"
    )
    return (
        f"events change -> consumer (WatchEvents) during the RPCs at "
        f"{label(result['orders'])} orders: {result['events']} events, {figures}"
        + (f" ({result['error']})" if "error" in result else "")
    )
