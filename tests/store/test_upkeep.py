"""The store's upkeep: on SQLite the write-ahead log is copied into the database file by the
server's upkeep thread, not by the commit of whichever call crosses SQLite's default threshold;
the threshold stays, higher, as the bound of the log."""

from __future__ import annotations

import logging
import threading

import pytest

from server.domain.model import Shop, ShopStatus
from server.grpc.background import StoreUpkeep
from server.store import SqlStore, database, open_database
from server.store.database import WAL_AUTOCHECKPOINT_PAGES
from server.store.schema import execute_sql
from tests.store.factories import a_writer_holding_its_turn


def sqlite_store(tmp_path) -> SqlStore:
    store = SqlStore(open_database(f"sqlite:///{tmp_path / 'upkeep.db'}"))
    store.migrate()
    return store


def put_shops(service_of, count: int, prefix: str) -> None:
    for i in range(count):
        service_of.put_shop(Shop(f"{prefix}-{i}", f"Shop {i}", ShopStatus.NORMAL, None))


def test_calls_leave_the_log_to_the_upkeep_up_to_its_bound(tmp_path):
    store = sqlite_store(tmp_path)
    with store.session():
        (pages,) = execute_sql(store.database, "PRAGMA wal_autocheckpoint").fetchone()
    assert pages == WAL_AUTOCHECKPOINT_PAGES
    store.close()


def test_the_upkeep_copies_the_log_and_the_next_write_starts_it_over(tmp_path, clock, policy):
    from server.service import Service

    store = sqlite_store(tmp_path)
    service = Service(store, clock, policy)
    put_shops(service, 200, "many")

    copied = store.upkeep()
    assert copied > 200  # each commit wrote a frame or more, none copied before

    put_shops(service, 1, "one-more")
    # Had the log gone on growing, it would hold every frame copied before and the new ones.
    assert 0 < store.upkeep() < copied
    store.close()


def test_a_transaction_far_past_the_log_s_bound_leaves_no_log_file_of_its_size(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(database, "WAL_FILE_LIMIT_BYTES", 64 * 1024)
    store = sqlite_store(tmp_path)
    log_file = tmp_path / "upkeep.db-wal"
    with store.session():
        (limit,) = execute_sql(store.database, "PRAGMA journal_size_limit").fetchone()
        assert limit == 64 * 1024
        with store.database.atomic():  # a bulk write: some 2.5 MB in one transaction
            execute_sql(store.database, "CREATE TABLE bulk (data BLOB)")
            for _ in range(5):
                execute_sql(
                    store.database,
                    "INSERT INTO bulk SELECT randomblob(500) FROM "
                    "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                    "WHERE i < 1000) SELECT i FROM n)",
                )
    assert log_file.stat().st_size > 2_000_000

    store.upkeep()
    with store.session(), store.database.atomic():
        execute_sql(store.database, "INSERT INTO bulk VALUES (x'00')")
    # The log started over, and its file went back to the limit.
    assert log_file.stat().st_size <= 64 * 1024
    store.close()


def test_the_log_s_file_is_kept_up_to_the_log_s_bound(tmp_path):
    store = sqlite_store(tmp_path)
    with store.session():
        (limit,) = execute_sql(store.database, "PRAGMA journal_size_limit").fetchone()
        (page,) = execute_sql(store.database, "PRAGMA page_size").fetchone()
        (bound,) = execute_sql(store.database, "PRAGMA wal_autocheckpoint").fetchone()
    assert limit == bound * page
    store.close()


@pytest.mark.postgres
def test_postgresql_has_no_upkeep(postgres_server):
    store = SqlStore(open_database(postgres_server.create_database("upkeep")))
    store.migrate()
    assert store.upkeep() == 0
    store.close()


class CountingService:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.called = threading.Event()

    def store_upkeep(self) -> int:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("the disk is full")
        if self.calls > self.fail_first + 1:
            self.called.set()
        return 1


def test_the_upkeep_thread_runs_again_after_a_failure_and_logs_it_once(caplog):
    caplog.set_level(logging.INFO, logger="aftersales")
    service = CountingService(fail_first=3)
    upkeep = StoreUpkeep(service, interval=0.01)  # type: ignore[arg-type]
    upkeep.start()
    assert service.called.wait(10)
    upkeep.stop()
    upkeep.join(10)
    failed = [r for r in caplog.records if "failed; will retry" in r.getMessage()]
    again = [r for r in caplog.records if "works again" in r.getMessage()]
    assert (len(failed), len(again)) == (1, 1)


def test_a_server_runs_the_upkeep_from_its_start_to_its_stop(service):
    from server.grpc.app import App

    app = App(service, "127.0.0.1:0", workers=2, sweep_interval=None)
    assert not app.upkeep.is_alive()
    app.start()
    assert app.upkeep.is_alive()
    app.stop(grace=0)
    assert not app.upkeep.is_alive()


def test_the_writers_wait_for_the_upkeep_only_once_the_log_is_long(
    tmp_path, clock, policy, monkeypatch
):
    import time

    from server.service import Service
    from server.store import unit_of_work

    store = sqlite_store(tmp_path)
    store.writer_wait = 1.0
    put_shops(Service(store, clock, policy), 20, "short")
    log = store.upkeep()  # with no reader, every frame is copied: the log's length
    assert 20 <= log < unit_of_work.UPKEEP_HOLD_FROM_FRAMES

    with a_writer_holding_its_turn(store):
        took = {}
        for hold_from in (log + 1, log):
            monkeypatch.setattr(unit_of_work, "UPKEEP_HOLD_FROM_FRAMES", hold_from)
            began = time.monotonic()
            store.upkeep()
            took[hold_from] = time.monotonic() - began
    # Shorter than the threshold: copied alongside the writer. As long: the upkeep waited for
    # the writer's turn, which did not come within writer_wait.
    assert took[log + 1] < 0.9 and took[log] >= 1.0
    store.close()


def test_a_log_a_reader_holds_is_left_to_the_next_round_without_holding_the_writers(
    tmp_path, clock, policy
):
    import sqlite3
    import time

    from server.service import Service
    from server.store.unit_of_work import UPKEEP_FRAMES_HELD

    store = sqlite_store(tmp_path)
    store.writer_wait = 5.0
    service = Service(store, clock, policy)
    reader = sqlite3.connect(tmp_path / "upkeep.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute('SELECT COUNT(*) FROM "shop"').fetchall()  # a snapshot, held
    put_shops(service, 600, "behind-the-reader")

    with a_writer_holding_its_turn(store):
        began = time.monotonic()
        copied = store.upkeep()
        took = time.monotonic() - began
    # Only what came before the reader's snapshot could be copied, and the writers' turn was not
    # waited for (that would have taken writer_wait, 5 s).
    assert copied < UPKEEP_FRAMES_HELD and took < 2.0
    reader.rollback()
    assert store.upkeep() > UPKEEP_FRAMES_HELD  # the reader gone, it is all copied
    reader.close()
    store.close()
