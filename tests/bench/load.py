"""The load generator: a fixed number of calls in flight on one grpc.aio channel, each call
timed from send to answer."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from tests.bench import procfs

CALL_TIMEOUT = 60.0


@dataclasses.dataclass
class Sample:
    """What one measurement saw."""

    calls: int  # answered without error within the window
    seconds: float  # the window
    latencies: list[float]
    errors: collections.Counter[str]
    first_error: str
    exhausted: bool  # its prepared requests ran out before the time was up
    server_cpu: float  # server CPU seconds per wall second
    client_cpu: float  # this process's CPU seconds per wall second
    # The database server's CPU seconds per wall second (None: it runs in the server's process)
    database_cpu: float | None = None
    # The share of the machine's CPU time left idle meanwhile, every core
    machine_idle: float | None = None
    # The share of the time SQLite's writer turn was held meanwhile (None: not measured)
    writer_busy: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile of the latencies, in seconds (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]


async def measure(
    methods: Sequence[Callable[..., Any]],
    requests: Iterator[Any],
    in_flight: int,
    seconds: float,
    server_cpu: Callable[[], float],
    database_cpu: Callable[[], float] | None = None,
    writer_busy: Callable[[], float] | None = None,
) -> Sample:
    """Keeps `in_flight` calls going for `seconds`, or until `requests` runs out, spread over
    `methods` (the same method on several connections).
    Calls in flight at the deadline are waited for: their latencies count, not their number.
    A window in which fewer than `in_flight` calls were answered (a stall, a slow machine, a
    short window) is stretched until that many are, so that the rate is over whole calls
    (answers with an error count as answers here, so that failing calls cannot keep it going)."""
    latencies: list[float] = []
    finished: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    first_error = ""
    exhausted = False
    deadline = time.perf_counter() + seconds

    async def caller(method: Callable[..., Any]) -> None:
        nonlocal first_error, exhausted
        clock = time.perf_counter
        while clock() < deadline or len(finished) + errors.total() < in_flight:
            request = next(requests, None)
            if request is None:
                exhausted = True
                return
            sent = clock()
            try:
                await method(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                first_error = first_error or f"{e.code().name}: {e.details()}"
            else:
                done = clock()
                latencies.append(done - sent)
                finished.append(done)

    # First: reading it is a call to the server, whose CPU time is not the window's.
    writer_before = writer_busy() if writer_busy else 0.0
    cpu_before, server_before = time.process_time(), server_cpu()
    database_before = database_cpu() if database_cpu else 0.0
    idle_before, machine_before = procfs.machine_times()
    start = time.perf_counter()
    await asyncio.gather(*(caller(methods[n % len(methods)]) for n in range(in_flight)))
    elapsed = time.perf_counter() - start
    idle_after, machine_after = procfs.machine_times()
    if exhausted:
        # Every prepared request was answered: the rate is over the time they took.
        calls, window = len(finished), (max(finished, default=start) - start)
    else:
        # The rate is over the window, with the calls in flight at its end not counted (their
        # latencies are).
        stretched = sorted(finished)[in_flight - 1] if len(finished) >= in_flight else deadline
        end = max(deadline, stretched)
        calls, window = sum(1 for t in finished if t <= end), end - start
    return Sample(
        calls=calls,
        seconds=window,
        latencies=latencies,
        errors=errors,
        first_error=first_error,
        exhausted=exhausted,
        server_cpu=(server_cpu() - server_before) / elapsed,
        client_cpu=(time.process_time() - cpu_before) / elapsed,
        database_cpu=(database_cpu() - database_before) / elapsed if database_cpu else None,
        machine_idle=(idle_after - idle_before) / ((machine_after - machine_before) or 1.0),
        writer_busy=(writer_busy() - writer_before) / elapsed if writer_busy else None,
    )
