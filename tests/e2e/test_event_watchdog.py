"""A consumer whose server falls silent (a dead host, a dropped connection: not even heartbeats
come) is not left waiting forever: the client's watch_events gives up on the stream after three
heartbeat intervals and resumes from the last position it yielded."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from aftersales.v1 import events_pb2, events_pb2_grpc
from client import Client


class Recording(events_pb2_grpc.EventsServicer):
    """A servicer that keeps the requests it was sent, and holds its streams until released."""

    def __init__(self) -> None:
        self.requests: list[events_pb2.WatchEventsRequest] = []
        self.released = threading.Event()


class SilentOnce(Recording):
    """The first stream sends one event and then nothing; the next ones send the event after the
    position asked for."""

    def WatchEvents(self, request, context):  # noqa: N802  # the proto's name
        self.requests.append(request)
        position = request.after_position + 1
        yield events_pb2.WatchEventsResponse(event=events_pb2.Event(position=position))
        if len(self.requests) == 1:
            self.released.wait(60)  # a server that hangs: no heartbeat, no end


class OneBatchThenHeartbeats(Recording):
    """A batch of 4 events, then a heartbeat every second."""

    def WatchEvents(self, request, context):  # noqa: N802  # the proto's name
        self.requests.append(request)
        first = request.after_position + 1
        yield events_pb2.WatchEventsResponse(
            batch=events_pb2.EventBatch(
                events=[events_pb2.Event(position=first + i) for i in range(4)]
            )
        )
        while not self.released.wait(1):
            yield events_pb2.WatchEventsResponse(heartbeat=events_pb2.Heartbeat(position=first + 3))


@contextlib.contextmanager
def serving(servicer: Recording) -> Iterator[Client]:
    """A client of a server of `servicer`, released and stopped after."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    events_pb2_grpc.add_EventsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}") as client:
            yield client
    finally:
        servicer.released.set()
        server.stop(grace=None)


def test_a_silent_stream_is_given_up_and_resumed_after_the_last_position():
    servicer = SilentOnce()
    received: list[int] = []
    with serving(servicer) as client:
        stream = client.watch_events(41, heartbeat_seconds=1, reconnect_delay=0)
        consumer = threading.Thread(
            target=lambda: received.extend(next(stream).position for _ in range(2)),
            daemon=True,
        )
        consumer.start()
        consumer.join(30)
        assert not consumer.is_alive(), "the consumer still waits on the silent stream"
    assert received == [42, 43]
    assert [r.after_position for r in servicer.requests] == [41, 42]


def test_a_consumer_slow_on_each_event_of_a_batch_keeps_its_stream():
    servicer = OneBatchThenHeartbeats()
    received: list[int] = []
    with serving(servicer) as client:
        # Silence is 3 s; handling the batch takes 4 x 1.2 s, longer than that.
        for item in client.watch_events(
            10, heartbeat_seconds=1, heartbeats=True, reconnect_delay=0
        ):
            if isinstance(item, events_pb2.Heartbeat) or len(received) == 8:
                break
            received.append(item.position)
            time.sleep(1.2)
    assert received == [11, 12, 13, 14]
    assert len(servicer.requests) == 1  # never given up on and reconnected
