"""SQLite's group commit: the writes of a process queued behind a writer's turn commit together,
on the group writer, and each caller is told only what concerns its own write; the group
writer's observers are told how long each call of a group waited for it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server import tracing
from server.domain.errors import NotFound
from server.domain.model import Shop, ShopStatus, Staff, StaffRole
from server.service import Service
from server.service.unit_of_work import StoreUnavailable
from server.store import SqlStore, open_database
from server.store.database import MAP_BYTES
from server.store.group_commit import GROUP_AT_MOST
from server.store.schema import execute_sql
from tests.store.factories import a_writer_holding_its_turn, counted_statements


def sqlite_store(tmp_path, **options: Any) -> SqlStore:
    store = SqlStore(open_database(f"sqlite:///{tmp_path / 'group.db'}"), **options)
    store.migrate()
    return store


@pytest.fixture
def store(tmp_path):
    store = sqlite_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def service(store, clock, policy):
    return Service(store, clock, policy)


def a_shop(shop_id: str) -> Shop:
    return Shop(shop_id, f"Shop {shop_id}", ShopStatus.NORMAL, None)


class Calls:
    """Calls made from threads of their own, each queued before the next is made."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.threads: dict[str, threading.Thread] = {}
        self.outcomes: dict[str, Any] = {}

    def make(self, name: str, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.outcomes[name] = call()
            except Exception as e:
                self.outcomes[name] = e

        queued = self._store.group.waiting()
        thread = threading.Thread(target=run)
        thread.start()
        self.threads[name] = thread
        deadline = time.monotonic() + 10
        while self._store.group.waiting() == queued:
            assert time.monotonic() < deadline, f"{name} was not queued"
            time.sleep(0.001)

    def join(self) -> dict[str, Any]:
        for thread in self.threads.values():
            thread.join(10)
        return self.outcomes


class Writes:
    """Writes of a shop each, through Store.serially, as the write use cases make them: each run
    noted, and each commit its caller is told of, with the thread told."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self.runs: list[str] = []
        self.told: list[tuple[str, threading.Thread]] = []

    def __call__(self, shop_id: str, raising: Exception | None = None) -> Callable[[], str]:
        def work() -> str:
            self.runs.append(shop_id)
            with self._service.unit_of_work() as uow:
                uow.facts.put_shop(a_shop(shop_id))
                uow.on_commit(lambda: self.told.append((shop_id, threading.current_thread())))
                if raising is not None:
                    raise raising
            return shop_id

        return lambda: self._service.serially(work)


def shops_stored(service: Service, *shop_ids: str) -> set[str]:
    return {shop_id for shop_id in shop_ids if service.shop_exists(shop_id)}


def test_writes_queued_behind_a_writer_s_turn_commit_in_one_transaction(store, service):
    calls = Calls(store)
    with counted_statements(store) as statements:
        with a_writer_holding_its_turn(store):
            for i in range(5):
                calls.make(f"shop-{i}", lambda i=i: service.put_shop(a_shop(f"shop-{i}")))
        outcomes = calls.join()

    assert {name: o.shop_id for name, o in outcomes.items()} == {
        f"shop-{i}": f"shop-{i}" for i in range(5)
    }
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1, statements
    assert shops_stored(service, *outcomes) == set(outcomes)


def test_a_group_takes_at_most_its_limit_and_the_rest_commit_after(store, service):
    calls = Calls(store)
    count = GROUP_AT_MOST + 3
    with counted_statements(store) as statements:
        with a_writer_holding_its_turn(store):
            for i in range(count):
                calls.make(f"shop-{i}", lambda i=i: service.put_shop(a_shop(f"shop-{i}")))
        outcomes = calls.join()

    assert statements.count("COMMIT") == 2, statements
    assert shops_stored(service, *outcomes) == {f"shop-{i}" for i in range(count)}


def test_a_refused_call_is_rolled_back_alone_and_the_others_commit(store, service):
    service.put_shop(a_shop("shop-a"))
    calls = Calls(store)
    with counted_statements(store) as statements:
        with a_writer_holding_its_turn(store):
            calls.make("before", lambda: service.put_shop(a_shop("shop-b")))
            calls.make(
                "refused",
                lambda: service.put_staff(Staff("staff-x", "nowhere", StaffRole.OWNER, "Nobody")),
            )
            calls.make("after", lambda: service.put_shop(a_shop("shop-c")))
        outcomes = calls.join()

    assert isinstance(outcomes["refused"], NotFound)
    assert shops_stored(service, "shop-b", "shop-c") == {"shop-b", "shop-c"}
    assert statements.count("COMMIT") == 1 and "ROLLBACK" not in statements, statements


@pytest.mark.parametrize(
    "failure",
    [StoreUnavailable("the disk is gone"), sqlite3.OperationalError("disk I/O error")],
    ids=["unavailable", "sqlite error"],
)
def test_a_call_failing_in_the_database_makes_the_others_run_again_alone(store, service, failure):
    writes = Writes(service)

    calls = Calls(store)
    with a_writer_holding_its_turn(store):
        calls.make("first", writes("shop-1"))
        calls.make("failing", writes("shop-doomed", raising=failure))
        calls.make("last", writes("shop-3"))
    outcomes = calls.join()
    runs, told = writes.runs, writes.told

    assert outcomes["first"] == "shop-1" and outcomes["last"] == "shop-3"
    assert outcomes["failing"] is failure
    assert shops_stored(service, "shop-1", "shop-doomed", "shop-3") == {"shop-1", "shop-3"}
    # Run in the group, then again alone; told of the commit once, on the caller's thread.
    assert runs == ["shop-1", "shop-doomed", "shop-1", "shop-doomed", "shop-3"]
    assert sorted(told, key=lambda t: t[0]) == [
        ("shop-1", calls.threads["first"]),
        ("shop-3", calls.threads["last"]),
    ]


def test_a_savepoint_that_cannot_be_rolled_back_makes_the_others_run_again_alone(
    store, service, monkeypatch
):
    """A refusal is rolled back to its savepoint; when that rollback fails, what the refused
    call wrote may still be in the transaction, so the group must not commit it."""
    failed_rollbacks: list[str] = []
    rollback = pw._savepoint.rollback

    def failing_once(savepoint: Any, begin: bool = True) -> None:
        if not failed_rollbacks:
            failed_rollbacks.append(savepoint.sid)
            raise sqlite3.OperationalError("disk I/O error")
        rollback(savepoint, begin)

    monkeypatch.setattr(pw._savepoint, "rollback", failing_once)
    writes = Writes(service)

    calls = Calls(store)
    with a_writer_holding_its_turn(store):
        calls.make("first", writes("shop-1"))
        calls.make("refused", writes("shop-refused", raising=NotFound("staff", "nobody")))
        calls.make("last", writes("shop-3"))
    outcomes = calls.join()

    assert len(failed_rollbacks) == 1
    assert outcomes["first"] == "shop-1" and outcomes["last"] == "shop-3"
    assert isinstance(outcomes["refused"], NotFound)
    assert shops_stored(service, "shop-1", "shop-refused", "shop-3") == {"shop-1", "shop-3"}
    assert writes.runs == ["shop-1", "shop-refused", "shop-1", "shop-refused", "shop-3"]


def test_a_grouped_call_s_span_ends_at_its_savepoint_and_a_call_alone_s_at_its_commit(
    store, service
):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        calls = Calls(store)
        with a_writer_holding_its_turn(store):
            for i in range(3):
                calls.make(f"shop-{i}", lambda i=i: service.put_shop(a_shop(f"shop-{i}")))
        calls.join()
        service.put_shop(a_shop("shop-alone"))
    finally:
        tracing.use(None)

    outcomes = [
        (span.attributes["db.transaction.outcome"], span.attributes["db.transaction.grouped"])
        for span in exporter.get_finished_spans()
        if span.name == "db.transaction"
    ]
    assert outcomes == [("release", True)] * 3 + [("commit", False)]


def test_what_a_call_runs_once_committed_runs_on_its_thread_and_sees_the_commit(store, service):
    seen: list[tuple[bool, threading.Thread]] = []

    def work() -> None:
        with service.unit_of_work() as uow:
            uow.facts.put_shop(a_shop("shop-seen"))
            uow.on_commit(
                lambda: seen.append((service.shop_exists("shop-seen"), threading.current_thread()))
            )

    service.serially(work)

    assert seen == [(True, threading.current_thread())]


def test_nothing_is_run_once_committed_for_a_call_that_rolled_back(store, service):
    told: list[str] = []

    def work() -> None:
        with service.unit_of_work() as uow:
            uow.facts.put_shop(a_shop("shop-refused"))
            uow.on_commit(lambda: told.append("committed"))
            raise NotFound("staff", "nobody")

    with pytest.raises(NotFound):
        service.serially(work)

    assert told == [] and not service.shop_exists("shop-refused")


def test_a_call_whose_group_does_not_begin_within_the_wait_is_refused_and_never_runs(
    tmp_path, clock, policy
):
    store = sqlite_store(tmp_path, writer_wait=0.2)
    service = Service(store, clock, policy)
    try:
        with a_writer_holding_its_turn(store), pytest.raises(StoreUnavailable, match="busy"):
            service.put_shop(a_shop("shop-late"))
        service.put_shop(a_shop("shop-next"))

        assert shops_stored(service, "shop-late", "shop-next") == {"shop-next"}
    finally:
        store.close()


def told_of(groups: list[list[float]], count: int) -> None:
    """Waits until `count` groups were told of: a group's observers are told once its callers
    are woken, so a caller may return first."""
    deadline = time.monotonic() + 10
    while len(groups) < count:
        assert time.monotonic() < deadline, groups
        time.sleep(0.001)


def test_observers_are_told_each_group_with_how_long_each_of_its_calls_waited(store, service):
    groups: list[list[float]] = []
    store.group.observe(groups.append)
    calls = Calls(store)
    before = time.perf_counter()
    with a_writer_holding_its_turn(store):
        for i in range(3):
            calls.make(f"shop-{i}", lambda i=i: service.put_shop(a_shop(f"shop-{i}")))
        time.sleep(0.05)
    outcomes = calls.join()
    elapsed = time.perf_counter() - before
    service.put_shop(a_shop("shop-alone"))
    told_of(groups, 2)

    assert shops_stored(service, *outcomes, "shop-alone") == {*outcomes, "shop-alone"}
    assert [len(waits) for waits in groups] == [3, 1]
    (first, second, third), (alone,) = groups
    # Queued in turn, behind the turn held 50 ms at least after the last was queued.
    assert elapsed >= first >= second >= third >= 0.05
    assert 0 <= alone < third


def test_an_observer_that_fails_is_logged_and_the_writes_commit(store, service, caplog):
    groups: list[list[float]] = []

    def failing(waits: list[float]) -> None:
        raise RuntimeError("the metrics broke")

    store.group.observe(failing)
    store.group.observe(groups.append)
    service.put_shop(a_shop("shop-a"))
    service.put_shop(a_shop("shop-b"))
    told_of(groups, 2)

    assert shops_stored(service, "shop-a", "shop-b") == {"shop-a", "shop-b"}
    assert caplog.text.count("a group writer's observer failed") == 2
    assert "the metrics broke" in caplog.text


def test_a_thread_holding_its_turn_writes_in_it_instead_of_waiting_for_the_group(store, service):
    with store.unit_of_work() as uow:
        uow.facts.put_shop(a_shop("shop-outer"))
        service.put_shop(a_shop("shop-inner"))
        uow.commit()

    assert shops_stored(service, "shop-outer", "shop-inner") == {"shop-outer", "shop-inner"}


def test_a_closed_store_refuses_writes(tmp_path, clock, policy):
    store = sqlite_store(tmp_path)
    service = Service(store, clock, policy)
    service.put_shop(a_shop("shop-open"))
    store.close()

    with pytest.raises(StoreUnavailable, match="closed"):
        service.put_shop(a_shop("shop-closed"))


def test_readers_read_the_file_through_its_map_and_the_group_writer_through_its_cache(store):
    def map_size() -> int:
        with store.session():
            (size,) = execute_sql(store.database, "PRAGMA mmap_size").fetchone()
        return int(size)

    def reconnected() -> int:
        store.database.close()
        return map_size()

    assert map_size() == MAP_BYTES  # this thread's connection: a reader's
    assert store.serially(map_size) == 0
    assert store.serially(reconnected) == 0  # its next connection too
    # Other threads read through the map.
    outcome: list[int] = []
    reader = threading.Thread(target=lambda: outcome.append(map_size()))
    reader.start()
    reader.join()
    assert outcome == [MAP_BYTES]


def test_readers_follow_the_file_shrunk_under_them_by_another_sqlite_program(
    tmp_path, store, service
):
    """A file cut shorter under a memory map faults on the next read (SIGBUS, the process
    ends), unless SQLite cut it: its readers look at the file's size at each read."""
    for i in range(300):
        service.put_shop(Shop(f"shop-{i}", "x" * 3000, ShopStatus.NORMAL, None))
    path = str(tmp_path / "group.db")

    def shops() -> int:
        with store.session():
            (count,) = execute_sql(store.database, 'SELECT count(*) FROM "shop"').fetchone()
        return int(count)

    store.upkeep()  # the log copied into the file
    assert shops() == 300  # read through the map of the whole file
    before = os.path.getsize(path)
    another_program = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute(\"DELETE FROM shop WHERE id NOT LIKE 'shop-1%'\")\n"
        "c.execute('VACUUM')\n"
        "c.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
    )
    subprocess.run([sys.executable, "-c", another_program, path], check=True)
    assert os.path.getsize(path) < before / 2
    assert shops() == 111  # shop-1, shop-10..19, shop-100..199: read through the map again
    service.put_shop(a_shop("after"))
    assert shops() == 112
