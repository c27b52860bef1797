"""Many event streams on one server process: WRITES PostFunds calls from WRITERS writers, while
N WatchEvents streams each follow every event. How long the writes take (the streams' sending
shares the process's one core with them), and how long until the last stream has received the
last of their events. The streams run in a process of their own, as consumer services do; the
CPU time of the server's process and of theirs is reported beside, as they share the machine's
cores."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from aftersales.v1 import events_pb2, events_pb2_grpc, resources_pb2, sync_pb2, sync_pb2_grpc
from client.client import MAX_BATCH_EVENTS, events_in
from tests.bench import procfs

WRITES = 200
WRITERS = 4
# Events a message, when the streams ask for batches: the most a stream may ask for.
BATCH = MAX_BATCH_EVENTS
# Streams per connection of the followers' process.
STREAMS_PER_CONNECTION = 50
# What a round waits at most: the streams to start, the events to reach them.
TIMEOUT_SECONDS = 120.0


def newest_position(address: str) -> int:
    """The position of the newest event, found by paging past the events: one call per 10,000
    positions at most, and none of them sent (no event is of the type asked for)."""
    after = 0
    with grpc.insecure_channel(address) as channel:
        stub = events_pb2_grpc.EventsStub(channel)
        while True:
            page = stub.ListEvents(
                events_pb2.ListEventsRequest(
                    after_position=after,
                    page_size=1,
                    types=[events_pb2.EVENT_TYPE_SHOP_STATUS_CHANGED],
                ),
                timeout=60,
            )
            after = page.next_after_position
            if page.caught_up:
                return after


def warm_up(address: str) -> None:
    """A few writes first: the server's connections, caches and statements are made."""
    write(address, f"fanout-warm-up-{uuid.uuid4().hex[:12]}", WRITES // 10)


def measure(
    address: str,
    database: str,
    orders: int,
    streams: int,
    server_cpu: Callable[[], float],
    batch: int = 1,
) -> dict[str, Any]:
    """One round: `streams` streams (0: none) follow from the newest event while the writes
    run, each asking for up to `batch` events a message. `server_cpu`: the CPU seconds the
    server's process used so far."""
    result: dict[str, Any] = {
        "database": database,
        "orders": orders,
        "streams": streams,
        "batch": batch,
        "writes": WRITES,
        "writers": WRITERS,
    }
    memo = f"fanout-{uuid.uuid4().hex[:12]}"
    followers = None
    try:
        if streams:
            followers = Followers(address, streams, newest_position(address), memo, batch)
            error = followers.begin()
            if error:
                return {**result, "error": error}
        started, cpu = time.time(), server_cpu()
        failures = write(address, memo)
        result["writes_seconds"] = round(time.time() - started, 3)
        if failures:
            return {**result, "error": failures[0]}
        if followers is not None:
            delivered = followers.finish()
            if "error" in delivered:
                return {**result, "error": delivered["error"]}
            result["delivered_seconds"] = round(delivered["last_received"] - started, 3)
            result["streams_cpu_seconds"] = round(delivered["cpu_seconds"], 3)
        # Until the last stream had the last event: the server's sending included.
        result["server_cpu_seconds"] = round(server_cpu() - cpu, 3)
        return result
    except grpc.RpcError as e:
        return {**result, "error": f"{e.code().name}: {e.details()}"}
    finally:
        if followers is not None:
            followers.stop()


def catch_up(
    address: str, database: str, orders: int, batch: int, server_cpu: Callable[[], float]
) -> dict[str, Any]:
    """One consumer reads every event held, from the oldest, up to `batch` a message: how long
    until it had the last, and the server's CPU until its first heartbeat (caught up)."""
    result: dict[str, Any] = {"database": database, "orders": orders, "batch": batch}
    events = messages = 0
    started, cpu = time.time(), server_cpu()
    last = started
    try:
        with grpc.insecure_channel(address) as channel:
            stream = events_pb2_grpc.EventsStub(channel).WatchEvents(
                events_pb2.WatchEventsRequest(
                    from_oldest=True, heartbeat_seconds=1, max_batch_events=batch
                ),
                timeout=TIMEOUT_SECONDS,
            )
            for item in stream:
                if item.HasField("heartbeat"):
                    break
                messages += 1
                events += len(events_in(item))
                last = time.time()
            stream.cancel()
    except grpc.RpcError as e:
        return {**result, "error": f"{e.code().name}: {e.details()}"}
    return {
        **result,
        "events": events,
        "messages": messages,
        "seconds": round(last - started, 3),
        "server_cpu_seconds": round(server_cpu() - cpu, 3),
    }


def catch_up_line(result: dict[str, Any]) -> str:
    from tests.bench.report import label  # the report prints these lines

    head = (
        f"a consumer catching up from the oldest event at {label(result['orders'])} orders, "
        f"up to {result['batch']} a message"
    )
    if "error" in result:
        return f"{head}: {result['error']}"
    return (
        f"{head}: {result['events']} events in {result['messages']} messages, the last after "
        f"{result['seconds']} s; the server's CPU {result['server_cpu_seconds']} s"
    )


def write(address: str, memo: str, writes: int = WRITES) -> list[str]:
    """`writes` PostFunds into fresh cash accounts (one event each, no debt to pay), from
    WRITERS threads with a connection each; the failures."""
    failures: list[str] = []

    def writer(index: int) -> None:
        with grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            sync = sync_pb2_grpc.SyncStub(channel)
            for i in range(index, writes, WRITERS):
                request = sync_pb2.PostFundsRequest(
                    request_id=f"{memo}-{i}",
                    account=resources_pb2.AccountRef(
                        kind=resources_pb2.ACCOUNT_KIND_CASH, owner_id=f"{memo}-payee-{i}"
                    ),
                    amount=100,
                    memo=memo,
                )
                try:
                    sync.PostFunds(request, timeout=60)
                except grpc.RpcError as e:
                    failures.append(f"PostFunds: {e.code().name}: {e.details()}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


class Followers:
    """`streams` WatchEvents streams from `after`, in a process of their own (spawned: the
    parent's gRPC does not survive a fork), each until it has received the WRITES events whose
    memo is `memo`, up to `batch` events a message."""

    def __init__(self, address: str, streams: int, after: int, memo: str, batch: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, self._child = context.Pipe()
        self.process = context.Process(
            target=_follow, args=(address, streams, after, memo, batch, self._child), daemon=True
        )

    def begin(self) -> str | None:
        """Once every stream has answered (its first heartbeat); the error, if one did not."""
        self.process.start()
        self._child.close()  # the process's end: its death is then an end of the pipe here
        said = self._receive()
        if said == "watching":
            return None
        return str(said["error"]) if isinstance(said, dict) else "the streams did not start"

    def finish(self) -> dict[str, Any]:
        """When the last stream received the last event (time.time()) and the CPU seconds the
        process used meanwhile, or the error."""
        said = self._receive()
        if not isinstance(said, dict):
            return {"error": f"the streams' process said {said!r}"}
        return said

    def _receive(self) -> Any:
        if not self.connection.poll(TIMEOUT_SECONDS):
            return {"error": f"the streams did not answer within {TIMEOUT_SECONDS:.0f} s"}
        try:
            return self.connection.recv()
        except EOFError:
            self.process.join(1)
            return {"error": f"the streams' process ended ({self.process.exitcode})"}

    def stop(self) -> None:
        """Ends the process (it has ended, when it answered its last)."""
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.connection.close()


def _follow(address: str, streams: int, after: int, memo: str, batch: int, connection: Any) -> None:
    connection.send(asyncio.run(_streams(address, streams, after, memo, batch, connection)))
    connection.close()


async def _streams(
    address: str, streams: int, after: int, memo: str, batch: int, connection: Any
) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(-(-streams // STREAMS_PER_CONNECTION))
    ]
    answered = 0
    all_answered = asyncio.Event()

    async def follow(index: int) -> float:
        nonlocal answered
        stub = events_pb2_grpc.EventsStub(channels[index // STREAMS_PER_CONNECTION])
        call = stub.WatchEvents(
            events_pb2.WatchEventsRequest(
                after_position=after, heartbeat_seconds=1, max_batch_events=batch
            )
        )
        first = True
        received = 0
        async for item in call:
            if first:
                first = False
                answered += 1
                if answered == streams:
                    all_answered.set()
            received += sum(1 for e in events_in(item) if e.funds_posted.memo == memo)
            if received == WRITES:
                call.cancel()
                return time.time()
        raise RuntimeError("the stream ended")

    try:
        tasks = [asyncio.ensure_future(follow(i)) for i in range(streams)]
        waiting = asyncio.ensure_future(all_answered.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not all_answered.is_set():
            failed = next(t for t in tasks if t.done())
            return {"error": f"a stream failed: {failed.exception()}"}
        connection.send("watching")
        cpu = procfs.cpu_seconds([os.getpid()])
        try:
            last = await asyncio.gather(*tasks)
        except (grpc.aio.AioRpcError, RuntimeError) as e:
            return {"error": f"a stream failed: {e}"}
        return {"last_received": max(last), "cpu_seconds": procfs.cpu_seconds([os.getpid()]) - cpu}
    finally:
        for channel in channels:
            await channel.close(grace=None)


def line(result: dict[str, Any]) -> str:
    from tests.bench.report import label  # the report prints these lines

    if "streams" not in result:
        return f"event streams at {label(result['orders'])} orders: {result['error']}"
    head = (
        f"{result['writes']} PostFunds from {result['writers']} writers at "
        f"{label(result['orders'])} orders, {result['streams']} streams following every event"
        + (f" (up to {result['batch']} a message)" if result.get("batch", 1) > 1 else "")
    )
    if "error" in result:
        return f"{head}: {result['error']}"
    if "delivered_seconds" in result:
        return (
            f"{head}: written in {result['writes_seconds']} s, the last stream had them all "
            f"after {result['delivered_seconds']} s; CPU meanwhile: the server "
            f"{result['server_cpu_seconds']} s, the streams' process "
            f"{result['streams_cpu_seconds']} s"
        )
    return (
        f"{head}: written in {result['writes_seconds']} s; CPU meanwhile: the server "
        f"{result['server_cpu_seconds']} s"
    )
