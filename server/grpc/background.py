"""The server's background threads: the sweeper, the store's upkeep and the health monitor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health_pb2

from server.service import UPKEEP_SECONDS, Service, StoreUnavailable

log = logging.getLogger("aftersales")


class _Failures:
    """Runs the tasks of a thread that repeats them, each on its own: a failing task is logged
    when it starts failing and when it works again, not each time."""

    def __init__(self, thread: str) -> None:
        self.thread = thread
        self.failing: set[str] = set()

    def run(self, name: str, task: Callable[[], int]) -> int:
        """What `task` returns; 0 when it failed."""
        try:
            done = task()
        except StoreUnavailable as e:
            if name not in self.failing:
                log.warning(
                    "%s: %s fails, the database is unavailable; will retry: %s",
                    self.thread,
                    name,
                    e,
                )
            self.failing.add(name)
            return 0
        except Exception:
            if name not in self.failing:
                log.exception("%s: %s failed; will retry", self.thread, name)
            self.failing.add(name)
            return 0
        if name in self.failing:
            log.info("%s: %s works again", self.thread, name)
            self.failing.discard(name)
        return done


# The debts PostFunds leaves (past what one call pays) are paid on by each sweep in rounds of at
# most SWEEP_PAYEES payees, a transaction each, until none is left or SWEEP_ROUNDS rounds ran.
SWEEP_PAYEES = 20
SWEEP_ROUNDS = 100


class _Every(threading.Thread):
    """A daemon thread that runs `round()` every `interval` seconds until stopped, each of its
    tasks through _Failures (logged when it starts failing and when it works again)."""

    def __init__(self, name: str, label: str, service: Service, interval: float) -> None:
        """`name`: the thread's; `label`: what its log lines call it."""
        super().__init__(name=name, daemon=True)
        self.service = service
        self.interval = interval
        self.stopped = threading.Event()
        self._task = _Failures(label).run

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.round()

    def round(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopped.set()


class Sweeper(_Every):
    """Stores as EXPIRED the entries whose window passed (readers see them EXPIRED already), each
    with its event, pays on the debts PostFunds left to it, folds the movements to or from the
    outside into the external account's balance, prunes the events older than their retention
    and forgets the request ids older than theirs: five tasks, each on its own, so that one
    failing holds up none of the others.
    A failing task is logged when it starts failing and when it works again, not each time."""

    def __init__(self, service: Service, interval: float) -> None:
        super().__init__("sweeper", "sweep", service, interval)

    def round(self) -> None:
        expired = self._task("expiring entries", self.service.expire_entries)
        if expired:
            log.info("entries expired", extra={"count": expired})
        payees = self._task("paying pending debts", self._settle_debts)
        if payees:
            log.info("pending debts paid on", extra={"payee_transactions": payees})
        folded = self._task("folding external movements", self.service.fold_external_movements)
        if folded:
            log.info("external movements folded", extra={"count": folded})
        pruned = self._task("pruning events", self.service.prune_events)
        if pruned:
            log.info("events pruned", extra={"count": pruned})
        forgotten = self._task("forgetting request ids", self.service.prune_requests)
        if forgotten:
            log.info("request ids forgotten", extra={"count": forgotten})

    def _settle_debts(self) -> int:
        payees = 0
        for _ in range(SWEEP_ROUNDS):
            handled = self.service.settle_pending_debts(SWEEP_PAYEES)
            if not handled or self.stopped.is_set():
                break
            payees += handled
        return payees


class StoreUpkeep(_Every):
    """Runs the store's upkeep (Store.upkeep: on SQLite, copying the write-ahead log into the
    database file) every `interval` seconds, off the threads that serve calls."""

    def __init__(self, service: Service, interval: float = UPKEEP_SECONDS) -> None:
        super().__init__("store-upkeep", "store upkeep", service, interval)

    def round(self) -> None:
        self._task("upkeep", self.service.store_upkeep)


class _Attempt:
    """One probe, run on a daemon thread of its own so that a hung database blocks only it
    (and never the exit of the process)."""

    def __init__(self, probe: Callable[[], None]) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None
        self.took = 0.0  # seconds, once done
        threading.Thread(target=self._run, args=(probe,), name="health-probe", daemon=True).start()

    def _run(self, probe: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            probe()
        except Exception as e:
            self.error = e
        finally:
            self.took = time.monotonic() - started
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
        on_round: Callable[[str | None], None] | None = None,
    ) -> None:
        """`on_round` is told after each round whether the probe hung: why (it did not answer
        within `timeout`), else None (it answered, or failed at once)."""
        super().__init__(name="health-monitor", daemon=True)
        self.health = health
        self.services = services
        self.probe = probe
        self.interval = interval
        self.timeout = interval if timeout is None else timeout
        self.on_round = on_round
        # Set for a drain: health stays as it was made (NOT_SERVING), the probe goes on.
        self.held = threading.Event()
        self.stopped = threading.Event()
        self.serving = True

    def run(self) -> None:
        attempt: _Attempt | None = None
        while not self.stopped.is_set():
            if attempt is None or attempt.done.is_set():
                attempt = _Attempt(self.probe)
            failure = hung = None
            if not attempt.done.wait(self.timeout):
                failure = hung = f"the database did not answer within {self.timeout:g} s"
            elif attempt.error is not None:
                failure = str(attempt.error) or type(attempt.error).__name__
                if attempt.took >= self.timeout:  # it gave up waiting: a hang all the same
                    hung = failure
            self._record(failure)
            if self.on_round is not None and not self.stopped.is_set():
                try:
                    self.on_round(hung)
                except Exception:  # a bug; health goes on
                    log.exception("telling what the health probe found failed")
            self.stopped.wait(self.interval)

    def _record(self, failure: str | None) -> None:
        serving = failure is None
        if serving == self.serving or self.stopped.is_set() or self.held.is_set():
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

    def hold(self) -> None:
        """Health changes no more (a drain made it NOT_SERVING); the probe goes on."""
        self.held.set()

    def stop(self) -> None:
        self.stopped.set()
