"""Faults of a real database leave a unit of work as what they are: a transaction the database
aborted for a concurrent one (deadlock, serialization failure) is TransactionAborted; a database
that is down, busy or gave up waiting is StoreUnavailable; anything else (bad SQL, a value that
does not fit) is a bug and leaves as it is, never as something a retry would cure."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

import peewee as pw
import psycopg
import pytest

from server.domain.model import Shop, ShopStatus
from server.service.unit_of_work import StoreUnavailable, TransactionAborted
from server.store import SqlStore, database, open_database
from server.store.schema import execute_sql
from tests.conftest import T0
from tests.pg import free_port
from tests.store.factories import held_by_another_thread

RETRYABLE = (StoreUnavailable, TransactionAborted)
postgres = pytest.mark.postgres


def a_store(url: str, **timeouts: float) -> SqlStore:
    store = SqlStore(open_database(url, **timeouts))
    store.migrate()
    return store


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.create_database(f"faults_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def pg_store(pg_url):
    store = a_store(pg_url)
    yield store
    store.close()


def with_options(url: str, options: str) -> str:
    """`url` with libpq `options` (settings the server applies to each session)."""
    return f"{url}?options={quote(options)}"


def shops(store: SqlStore, *shop_ids: str) -> None:
    with store.unit_of_work() as uow:
        for shop_id in shop_ids:
            uow.facts.put_shop(Shop(shop_id, shop_id, ShopStatus.NORMAL, T0))
        uow.commit()


def touch(store: SqlStore, shop_id: str) -> None:
    """Writes the shop's row (and so locks it until the transaction ends)."""
    execute_sql(store.database, "UPDATE shop SET name = name WHERE id = %s", (shop_id,))


def both_at_once(*runs) -> list[BaseException | None]:
    """Runs each function in its own thread; what each raised, or None."""
    outcomes: list[BaseException | None] = [None] * len(runs)

    def run(i: int) -> None:
        try:
            runs[i]()
        except BaseException as e:  # noqa: BLE001 - collected for the test to judge
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a transaction never ended"
    return outcomes


@postgres
def test_the_victim_of_a_deadlock_is_aborted_and_the_other_commits(pg_store):
    shops(pg_store, "shop-a", "shop-b")
    both_locked_one = threading.Barrier(2, timeout=30)

    def lock_in_order(first: str, second: str):
        def run() -> None:
            with pg_store.unit_of_work() as uow:
                touch(pg_store, first)
                both_locked_one.wait()
                touch(pg_store, second)
                uow.commit()

        return run

    outcomes = both_at_once(lock_in_order("shop-a", "shop-b"), lock_in_order("shop-b", "shop-a"))

    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "TransactionAborted"]
    aborted = next(o for o in outcomes if o is not None)
    assert isinstance(aborted.__cause__.orig, psycopg.errors.DeadlockDetected)


@postgres
def test_a_serialization_failure_is_aborted_and_the_other_commits(pg_store):
    shops(pg_store, "shop-a")
    both_read = threading.Barrier(2, timeout=30)

    def read_then_write() -> None:
        with pg_store.unit_of_work() as uow:
            execute_sql(pg_store.database, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            execute_sql(pg_store.database, "SELECT name FROM shop WHERE id = 'shop-a'")
            both_read.wait()
            touch(pg_store, "shop-a")
            uow.commit()

    outcomes = both_at_once(read_then_write, read_then_write)

    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "TransactionAborted"]
    aborted = next(o for o in outcomes if o is not None)
    assert isinstance(aborted.__cause__.orig, psycopg.errors.SerializationFailure)


# --- Timeouts ----------------------------------------------------------------------------------


def settings(store: SqlStore) -> dict[str, str]:
    """The timeouts a connection of `store` runs with."""
    with store.unit_of_work(read_only=True):
        connection = store.database.connection()
        return {
            "connect_timeout": connection.info.get_parameters().get("connect_timeout", ""),
            **{
                name: execute_sql(store.database, f"SHOW {name}").fetchone()[0]
                for name in ("statement_timeout", "lock_timeout")
            },
        }


@postgres
def test_postgresql_connections_have_timeouts_by_default(pg_store):
    assert settings(pg_store) == {
        "connect_timeout": "5",
        "statement_timeout": "10s",
        "lock_timeout": "5s",
    }


@postgres
def test_the_timeouts_are_set_by_open_database_s_arguments(pg_url):
    store = a_store(pg_url, connect_timeout=7, statement_timeout=30, lock_timeout=0.25)
    try:
        assert settings(store) == {
            "connect_timeout": "7",
            "statement_timeout": "30s",
            "lock_timeout": "250ms",
        }
    finally:
        store.close()


@postgres
def test_the_url_s_own_timeouts_win(pg_url):
    url = with_options(pg_url, "-c lock_timeout=2s -c deadlock_timeout=3s") + "&connect_timeout=3"
    store = a_store(url, connect_timeout=7, statement_timeout=30, lock_timeout=0.25)
    try:
        assert settings(store) == {
            "connect_timeout": "3",
            "statement_timeout": "30s",
            "lock_timeout": "2s",
        }
    finally:
        store.close()


def test_a_negative_timeout_is_refused():
    with pytest.raises(ValueError, match="negative"):
        open_database("sqlite:///:memory:", busy_timeout=-1)


def test_sqlite_waits_for_another_writer_as_long_as_its_busy_timeout(tmp_path):
    default = a_store(f"sqlite:///{tmp_path / 'default.db'}")
    configured = a_store(f"sqlite:///{tmp_path / 'configured.db'}", busy_timeout=2.5)
    try:
        assert default.database.pragma("busy_timeout") == 10_000
        assert configured.database.pragma("busy_timeout") == 2_500
    finally:
        default.close()
        configured.close()


@postgres
def test_a_server_that_accepts_but_never_answers_is_unavailable_after_the_connect_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x"
        store = SqlStore(open_database(url, connect_timeout=2))
        outcome = both_at_once(lambda: store.unit_of_work(read_only=True).__enter__())

    assert isinstance(outcome[0], StoreUnavailable)


@postgres
def test_a_statement_running_past_the_statement_timeout_is_unavailable(pg_url):
    store = a_store(pg_url, statement_timeout=0.05)
    try:
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            with store.unit_of_work(read_only=True):
                execute_sql(store.database, "SELECT pg_sleep(1)")
    finally:
        store.close()


@postgres
def test_a_statement_timeout_the_url_sets_is_unavailable(pg_url):
    store = a_store(with_options(pg_url, "-c statement_timeout=50"))
    try:
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            with store.unit_of_work(read_only=True):
                execute_sql(store.database, "SELECT pg_sleep(1)")
    finally:
        store.close()


@postgres
def test_a_lock_wait_past_the_lock_timeout_the_url_sets_is_unavailable(pg_url):
    store = a_store(with_options(pg_url, "-c lock_timeout=50"))
    shops(store, "shop-a")
    try:
        with psycopg.connect(pg_url) as holder:
            holder.execute("SELECT 1 FROM shop WHERE id = 'shop-a' FOR UPDATE")
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                with store.unit_of_work() as uow:
                    touch(store, "shop-a")
                    uow.commit()
    finally:
        store.close()


@postgres
def test_a_connection_cut_under_a_transaction_is_unavailable(pg_store, pg_url):
    with pytest.raises(StoreUnavailable):
        with pg_store.unit_of_work() as uow:
            pid = execute_sql(pg_store.database, "SELECT pg_backend_pid()").fetchone()[0]
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            execute_sql(pg_store.database, "SELECT 1")
            uow.commit()
    # The broken connection is not handed out again.
    with pg_store.unit_of_work(read_only=True):
        assert execute_sql(pg_store.database, "SELECT 1").fetchone() == (1,)


def pid_of_the_pooled_connection(store: SqlStore) -> int:
    with store.unit_of_work(read_only=True):
        return int(execute_sql(store.database, "SELECT pg_backend_pid()").fetchone()[0])


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Until the backend is gone (the client's socket learns it then).
        for _ in range(100):
            gone = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
            if gone.fetchone() is None:
                return
            time.sleep(0.05)


@postgres
def test_a_connection_back_in_the_pool_for_a_moment_is_handed_out_unpinged(pg_store):
    pings = []
    adapter = pg_store.database._adapter
    checked = adapter.is_connection_closed
    adapter.is_connection_closed = lambda conn: pings.append(1) or checked(conn)
    first = pid_of_the_pooled_connection(pg_store)
    assert pid_of_the_pooled_connection(pg_store) == first
    assert pings == []  # a round trip each call would have cost


@postgres
def test_a_connection_idle_in_the_pool_is_pinged_and_replaced_if_the_server_dropped_it(
    pg_store, pg_url, monkeypatch
):
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    dropped = pid_of_the_pooled_connection(pg_store)
    terminate(pg_url, dropped)
    # The ping finds it gone: the call gets a new connection and succeeds.
    assert pid_of_the_pooled_connection(pg_store) != dropped
    # What the pool remembers of its connections is of those it holds, not of those it dropped.
    assert len(pg_store.database._returned_at) == len(pg_store.database._connections) == 1


@postgres
def test_a_connection_the_server_dropped_within_the_moment_fails_one_call_retryably(
    pg_store, pg_url, monkeypatch
):
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 60.0)
    dropped = pid_of_the_pooled_connection(pg_store)
    terminate(pg_url, dropped)
    with pytest.raises(StoreUnavailable):
        pid_of_the_pooled_connection(pg_store)
    # Not pooled again: the next call has a connection that works.
    assert pid_of_the_pooled_connection(pg_store) != dropped


@postgres
def test_a_connection_waiting_past_the_bound_is_cut(pg_url):
    """A connection that has waited on the database past the bound is cut: its socket shut
    down, its call fails as with a lost connection (UNAVAILABLE, retryable)."""
    pool = open_database(pg_url)
    assert isinstance(pool, database.Pool)
    pool.connect()
    stuck = pool.connection()
    pool._waiting[pool.conn_key(stuck)] = (stuck, time.monotonic() - 100)

    assert pool.cut_stuck(1.0) == 1
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("SELECT 1")
    pool.close_all()


@postgres
@pytest.mark.parametrize("taker", ["a socket", "a file"])
def test_a_stuck_connection_whose_number_went_to_another_file_leaves_that_file_alone(
    pg_url, monkeypatch, tmp_path, taker
):
    """libpq closes a connection's socket itself when a read fails, and by the time it is cut
    the number may name another socket (a caller's) or a file: that one is left alone."""
    pool = open_database(pg_url)
    assert isinstance(pool, database.Pool)
    pool.connect()  # a call holds a connection for long
    held = pool.connection()
    key = pool.conn_key(held)
    pool._waiting[key] = (held, time.monotonic() - 100)
    listener = socket.create_server(("127.0.0.1", 0))
    other: dict[str, Any] = {}
    dup = os.dup

    def meanwhile(fd: int) -> int:
        # The call's connection fails and libpq closes its socket; another takes the number.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (held.info.backend_pid,))
        with contextlib.suppress(psycopg.Error):
            held.execute("SELECT 1")
        if taker == "a socket":
            other["client"] = socket.create_connection(listener.getsockname())
            other["server"] = listener.accept()[0]
        else:
            other["client"] = (tmp_path / "log").open("w")
        assert other["client"].fileno() == fd
        other["descriptors"] = len(os.listdir("/proc/self/fd"))
        return dup(fd)

    monkeypatch.setattr(database.os, "dup", meanwhile)
    assert pool.cut_stuck(1.0) == 0
    monkeypatch.undo()
    descriptors = other.pop("descriptors")
    assert len(os.listdir("/proc/self/fd")) == descriptors  # its copy closed
    if taker == "a socket":
        other["client"].sendall(b"still open")
        assert other["server"].recv(16) == b"still open"
    else:
        other["client"].write("still open")
        other["client"].flush()
    for opened in (*other.values(), listener):
        opened.close()
    with contextlib.suppress(Exception):
        pool.close_all()


class FreezingProxy:
    """A TCP relay to `port` on loopback that can stop relaying (a network whose kernel still
    takes what is sent, and nothing comes back)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                self.flowing.wait()
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()


@postgres
def test_a_ping_on_a_database_that_does_not_answer_is_cut_and_its_call_fails(
    pg_url, postgres_server
):
    """A connection idle for a while is pinged as it is handed out, under the pool's lock: on a
    database that does not answer, the ping is cut like any call's wait, and the call fails at
    once (no new connection tried meanwhile), leaving the pool as it was."""
    proxy = FreezingProxy(postgres_server.port)
    pool = open_database(pg_url.replace(f":{postgres_server.port}/", f":{proxy.port}/"))
    assert isinstance(pool, database.Pool)
    pool.connect()
    key = pool.conn_key(pool.connection())
    pool.close()  # back in the pool
    pool._returned_at[key] -= 60  # idle long enough to be pinged
    proxy.flowing.clear()
    failed: list[BaseException] = []

    def call() -> None:
        try:
            pool.connect()
        except Exception as e:  # noqa: BLE001 - what the call ends with is the point
            failed.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while key not in pool._waiting:
        assert time.monotonic() < deadline, "the ping never began"
        time.sleep(0.01)
    pool.unanswered = "the database did not answer within 0.5 s"
    assert pool.cut_stuck(0) == 1
    caller.join(10)

    assert not caller.is_alive()
    assert [type(e).__name__ for e in failed] == ["OperationalError"]
    assert "the database does not answer" in str(failed[0])
    assert (pool._in_use, pool._waiting, pool._sockets, pool._connections) == ({}, {}, {}, [])
    proxy.flowing.set()
    pool.unanswered = None
    pool.connect()
    assert pool.execute_sql("SELECT 1").fetchone() == (1,)
    pool.close_all()
    proxy.close()


@postgres
def test_an_unreachable_database_is_unavailable():
    store = SqlStore(open_database(f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    with pytest.raises(StoreUnavailable):
        with store.unit_of_work(read_only=True):
            pass


@postgres
def test_no_free_connection_in_the_pool_is_unavailable(pg_store):
    pg_store.database._max_connections = 1
    pg_store.database._wait_timeout = 0.05
    with held_by_another_thread(pg_store.unit_of_work(read_only=True)):
        with pytest.raises(StoreUnavailable, match="no database connection free"):
            with pg_store.unit_of_work(read_only=True):
                pass


@postgres
def test_a_value_too_long_for_its_column_is_a_bug_not_a_retry(pg_store):
    with pytest.raises(pw.DataError, match="too long"):
        with pg_store.unit_of_work() as uow:
            uow.facts.put_shop(Shop("shop-" + "x" * 200, "", ShopStatus.NORMAL, T0))
            uow.commit()


def test_bad_sql_is_a_bug_not_a_retry(store):
    with pytest.raises(pw.DatabaseError) as raised:
        with store.unit_of_work(read_only=True):
            execute_sql(store.database, "SELECT no_such_column FROM shop")

    assert not isinstance(raised.value, RETRYABLE)


def test_sqlite_s_parser_stack_overflow_is_a_bug_not_a_retry(tmp_path):
    store = a_store(f"sqlite:///{tmp_path / 'deep.db'}")
    deep = "SELECT " + "(" * 5000 + "1" + ")" * 5000

    with pytest.raises(pw.OperationalError, match="parser stack overflow") as raised:
        with store.unit_of_work(read_only=True):
            execute_sql(store.database, deep)

    assert not isinstance(raised.value, RETRYABLE)
    store.close()


def test_a_sqlite_commit_failing_on_a_full_disk_is_unavailable_not_a_bug(tmp_path, monkeypatch):
    """SQLite rolls a transaction back by itself when its file cannot grow at COMMIT; peewee's
    ROLLBACK that follows then fails too ("no transaction is active"). The unit of work is
    StoreUnavailable, as for the full disk itself, not a bug; and nothing of it was written."""
    store = a_store(f"sqlite:///{tmp_path / 'full.db'}")
    scratch = sqlite3.connect(":memory:")
    scratch.execute("CREATE TABLE t (x)")
    scratch.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        scratch.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert full.value.sqlite_errorcode == sqlite3.SQLITE_FULL

    def commit_on_a_full_disk() -> None:
        store.database.connection().rollback()  # what SQLite does by itself
        raise full.value

    shop = Shop("shop-full", "Full", ShopStatus.NORMAL, T0)
    with pytest.raises(StoreUnavailable, match="SQLITE_FULL"):
        with store.unit_of_work() as uow:
            uow.facts.put_shop(shop)
            monkeypatch.setattr(store.database, "commit", commit_on_a_full_disk)
            uow.commit()
    monkeypatch.undo()

    with store.unit_of_work(read_only=True) as uow:
        assert not uow.facts.shop_exists("shop-full")
    store.close()


def test_a_sqlite_database_locked_by_another_writer_is_unavailable(tmp_path):
    path = tmp_path / "locked.db"
    store = a_store(f"sqlite:///{path}", busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="SQLITE_BUSY"):
            with store.unit_of_work() as uow:
                uow.commit()
    finally:
        other.rollback()
        other.close()
        store.close()


def test_a_sqlite_file_that_went_away_is_unavailable_and_never_made_anew(tmp_path):
    path = tmp_path / "aftersales.db"
    store = a_store(f"sqlite:///{path}")
    path.rename(tmp_path / "elsewhere.db")  # as when the volume holding it goes away
    failed: list[BaseException] = []

    def read_on_a_new_connection() -> None:  # a thread's first unit of work connects
        try:
            with store.unit_of_work(read_only=True) as uow:
                uow.facts.order("order-1")
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=read_on_a_new_connection)
    thread.start()
    thread.join(10)
    store.close()

    assert [type(e) for e in failed] == [StoreUnavailable], failed
    assert not path.exists()  # no empty database in its place


def test_a_sqlite_file_named_by_a_relative_path_with_spaces_and_percents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = a_store("sqlite:///data dir/after sales 100%.db")
    try:
        with store.unit_of_work() as uow:
            uow.facts.put_shop(Shop("shop-1", "A shop", ShopStatus.NORMAL, T0))
            uow.commit()
    finally:
        store.close()

    [made] = (tmp_path / "data dir").glob("*.db")
    assert made.name == "after sales 100%.db"
    reopened = a_store(f"sqlite:///{made}")
    try:
        with reopened.unit_of_work(read_only=True) as uow:
            assert uow.facts.shop("shop-1").name == "A shop"
    finally:
        reopened.close()


def test_a_connection_whose_sqlite_file_went_away_fails_its_calls_until_the_file_is_back(
    tmp_path,
):
    path, elsewhere = tmp_path / "aftersales.db", tmp_path / "elsewhere.db"
    store = a_store(f"sqlite:///{path}")  # this thread's connection has the file open
    path.rename(elsewhere)

    try:
        with pytest.raises(StoreUnavailable, match="went away"):
            with store.unit_of_work() as uow:
                uow.facts.put_shop(Shop("shop-1", "A shop", ShopStatus.NORMAL, T0))
                uow.commit()
        with pytest.raises(StoreUnavailable, match="CANTOPEN"):  # connecting again
            with store.unit_of_work(read_only=True) as uow:
                uow.facts.shop_or_none("shop-1")
        assert not path.exists()

        elsewhere.rename(path)
        with store.unit_of_work() as uow:
            uow.facts.put_shop(Shop("shop-1", "A shop", ShopStatus.NORMAL, T0))
            uow.commit()
        with store.unit_of_work(read_only=True) as uow:
            assert uow.facts.shop("shop-1").name == "A shop"
    finally:
        store.close()
