"""Health follows the database's probe; what each round found is told on (on_round): a probe
that hangs is told, one that fails at once or answers is not (the store gates its calls only on
a database that takes what is sent and does not answer, server/store/database.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from grpc_health.v1 import health_pb2

from server.grpc.background import HealthMonitor

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL = 0.05


class Health:
    def __init__(self) -> None:
        self.status: dict[str, int] = {}

    def set(self, name: str, status: int) -> None:
        self.status[name] = status


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def monitored(probe: Callable[[], None]) -> tuple[HealthMonitor, Health, list[str | None]]:
    health, told = Health(), []
    monitor = HealthMonitor(health, ("",), probe, INTERVAL, on_round=told.append)
    monitor.start()
    return monitor, health, told


def rounds(probe: Callable[[], None], count: int) -> tuple[Health, list[str | None]]:
    """Health and what was told after `count` rounds of `probe` at least."""
    monitor, health, told = monitored(probe)
    try:
        until(lambda: len(told) >= count, f"{count} rounds")
    finally:
        monitor.stop()
    return health, told


def test_a_probe_that_fails_at_once_is_not_serving_but_tells_no_hang():
    def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    health, told = rounds(refused, 3)

    assert health.status[""] == NOT_SERVING
    assert set(told) == {None}


def test_a_probe_that_hangs_is_told_until_it_answers_again():
    answering = threading.Event()
    monitor, health, told = monitored(lambda: answering.wait(10) and None)
    try:
        until(lambda: told and told[-1] is not None, "a hang told")
        assert health.status[""] == NOT_SERVING
        answering.set()
        until(lambda: told[-1] is None, "the answer told")
        until(lambda: health.status[""] == SERVING, "serving again")
    finally:
        answering.set()
        monitor.stop()

    assert any(f"did not answer within {INTERVAL:g} s" in (t or "") for t in told)


def test_held_for_a_drain_health_stays_but_the_probe_goes_on():
    answering = threading.Event()
    monitor, health, told = monitored(lambda: answering.wait(10) and None)
    try:
        until(lambda: told and told[-1] is not None, "a hang told")
        monitor.hold()
        health.set("", NOT_SERVING)  # what a drain makes it
        answering.set()
        until(lambda: told[-1] is None, "the answer told, held as it is")
        time.sleep(5 * INTERVAL)
    finally:
        answering.set()
        monitor.stop()

    assert health.status[""] == NOT_SERVING


def test_a_probe_that_gives_up_after_waiting_as_long_as_a_hang_is_told_as_one():
    """A hung probe that ends on its own timeout (its connection's) is still a hang: the store
    must not open its calls to a database that does not answer between two rounds."""

    def gives_up() -> None:
        time.sleep(2.5 * INTERVAL)  # ends during a later round's wait
        raise TimeoutError("connection timeout expired")

    health, told = rounds(gives_up, 6)

    assert None not in told
    assert health.status[""] == NOT_SERVING
