"""A call the database fails answers what the failure is, through a real server and the client:
ABORTED or UNAVAILABLE, retryable and said so (ErrorInfo `retryable`, RetryInfo), when the database
aborted the transaction or is down, busy or gave up waiting; INTERNAL with an incident id (and a
log line with its traceback) when it is a bug that would fail again on every retry.

Each fault is the database's own: raised for real in the call where one call can raise it, else
captured from the same kind of database beforehand and raised from the store as peewee raises it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator

import grpc
import peewee as pw
import psycopg
import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AfterSalesError, Client, Unavailable
from server.grpc.app import App
from server.service import Service
from server.store import SqlStore, open_database
from server.store.facts import SqlFacts
from server.store.schema import execute_sql
from tests.pg import free_port

postgres = pytest.mark.postgres


def a_shop(shop_id: str = "shop-faults") -> pb.Shop:
    return pb.Shop(shop_id=shop_id, name=shop_id, status=pb.SHOP_STATUS_NORMAL)


def as_peewee_raises(error: Exception) -> None:
    """Raises `error`, a driver's exception, wrapped as peewee wraps it."""
    with pw.__exception_wrapper__:  # type: ignore[attr-defined]
        raise error


# --- Faults captured from a real database -------------------------------------------------------


def _two_at_once(url: str, run) -> Exception:
    """What one of two transactions running `run(connection, barrier)` together raised."""
    barrier = threading.Barrier(2, timeout=30)
    raised: list[Exception] = []

    def side(i: int) -> None:
        try:
            with psycopg.connect(url) as connection:
                run(connection, barrier, i)
        except psycopg.Error as e:
            raised.append(e)

    threads = [threading.Thread(target=side, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(raised) == 1, raised
    return raised[0]


def _prepare(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS fault (id int PRIMARY KEY, n int)")
        connection.execute("INSERT INTO fault VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING")


def a_deadlock(url: str) -> Exception:
    _prepare(url)

    def lock_both(connection, barrier, i: int) -> None:
        first, second = (1, 2) if i == 0 else (2, 1)
        connection.execute("UPDATE fault SET n = n + 1 WHERE id = %s", (first,))
        barrier.wait()
        connection.execute("UPDATE fault SET n = n + 1 WHERE id = %s", (second,))

    return _two_at_once(url, lock_both)


def a_serialization_failure(url: str) -> Exception:
    _prepare(url)

    def read_then_write(connection, barrier, i: int) -> None:
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        connection.execute("SELECT n FROM fault WHERE id = 1")
        barrier.wait()
        connection.execute("UPDATE fault SET n = n + 1 WHERE id = 1")
        connection.commit()

    return _two_at_once(url, read_then_write)


def a_lost_connection(url: str) -> Exception:
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    except psycopg.OperationalError as e:
        return e
    raise AssertionError("connected to a port nobody listens on")


def a_busy_sqlite(url: str) -> Exception:
    path = url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        return e
    finally:
        holder.close()
        other.close()
    raise AssertionError("two writers at once")


def captured(capture):
    """A fault raising, as peewee does, what `capture` caught from the database (once per
    database: the client retries)."""
    caught: dict[str, Exception] = {}

    def fault(store, url: str) -> None:
        if url not in caught:
            caught[url] = capture(url)
        as_peewee_raises(caught[url])

    fault.__name__ = capture.__name__
    return fault


# --- Faults raised for real in the call ---------------------------------------------------------


def a_statement_timeout(store, url: str) -> None:
    execute_sql(store.database, "SET LOCAL statement_timeout = 10")
    execute_sql(store.database, "SELECT pg_sleep(1)")


def a_lock_timeout(store, url: str) -> None:
    _prepare(url)
    with psycopg.connect(url) as holder:
        holder.execute("SELECT 1 FROM fault WHERE id = 1 FOR UPDATE")
        execute_sql(store.database, "SET LOCAL lock_timeout = 10")
        execute_sql(store.database, "UPDATE fault SET n = n + 1 WHERE id = 1")


def the_server_ending_the_session(store, url: str) -> None:
    pid = execute_sql(store.database, "SELECT pg_backend_pid()").fetchone()[0]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    execute_sql(store.database, "SELECT 1")


def bad_sql(store, url: str) -> None:
    execute_sql(store.database, "SELECT no_such_column FROM shop")


def a_value_too_long(store, url: str) -> None:
    execute_sql(store.database, "CREATE TEMPORARY TABLE short (s varchar(4))")
    execute_sql(store.database, "INSERT INTO short VALUES (%s)", ("too long",))


def a_parser_stack_overflow(store, url: str) -> None:
    execute_sql(store.database, "SELECT " + "(" * 5000 + "1" + ")" * 5000)


def case(kind: str, fault, code: grpc.StatusCode, reason: str):
    return pytest.param(
        kind,
        fault,
        code,
        reason,
        marks=[postgres] if kind == "postgres" else [],
        id=f"{kind}-{fault.__name__}",
    )


ABORTED = (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
INTERNAL = (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR")

RETRYABLE_FAULTS = [
    case("postgres", captured(a_deadlock), *ABORTED),
    case("postgres", captured(a_serialization_failure), *ABORTED),
    case("postgres", a_statement_timeout, *UNAVAILABLE),
    case("postgres", a_lock_timeout, *UNAVAILABLE),
    case("postgres", the_server_ending_the_session, *UNAVAILABLE),
    case("postgres", captured(a_lost_connection), *UNAVAILABLE),
    case("sqlite", captured(a_busy_sqlite), *UNAVAILABLE),
]
BUGS = [
    case("postgres", bad_sql, *INTERNAL),
    case("postgres", a_value_too_long, *INTERNAL),
    case("sqlite", bad_sql, *INTERNAL),
    case("sqlite", a_parser_stack_overflow, *INTERNAL),
]


def failing_put_shop(monkeypatch, store, url: str, fault, times: int | None = None) -> list[int]:
    """PutShop's store write fails with `fault` (the first `times` calls; None: every call).
    Returns the list the calls are counted in."""
    calls: list[int] = []
    put_shop = SqlFacts.put_shop

    def failing(facts, shop):
        calls.append(1)
        if times is None or len(calls) <= times:
            fault(store, url)
        return put_shop(facts, shop)

    monkeypatch.setattr(SqlFacts, "put_shop", failing)
    return calls


@pytest.mark.parametrize(
    ("database_url", "fault", "code", "reason"), RETRYABLE_FAULTS, indirect=["database_url"]
)
def test_a_fault_a_retry_may_cure_answers_a_retryable_status(
    database_url, store, client, monkeypatch, fault, code, reason
):
    failing_put_shop(monkeypatch, store, database_url, fault)

    with pytest.raises(AfterSalesError) as failed:
        client.put_shop(a_shop())

    assert failed.value.code == code
    assert failed.value.reason == reason
    assert failed.value.metadata == {"retryable": "true"}
    assert failed.value.retry_delay is not None and failed.value.retry_delay.total_seconds() > 0
    assert failed.value.retryable


@pytest.mark.parametrize(
    ("database_url", "fault", "code", "reason"), BUGS, indirect=["database_url"]
)
def test_a_fault_that_would_fail_again_is_internal_with_an_incident_id(
    database_url, store, client, monkeypatch, caplog, fault, code, reason
):
    calls = failing_put_shop(monkeypatch, store, database_url, fault)

    with caplog.at_level(logging.ERROR, logger="aftersales"):
        with pytest.raises(AfterSalesError) as failed:
            client.put_shop(a_shop())

    assert failed.value.code == code
    assert failed.value.reason == reason
    incident = failed.value.metadata["incident"]
    assert incident in failed.value.message
    assert not failed.value.retryable and failed.value.retry_delay is None
    assert len(calls) == 1  # the client did not retry it
    logged = [r for r in caplog.records if getattr(r, "incident", None) == incident]
    assert len(logged) == 1 and logged[0].exc_info is not None


@postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("capture", [a_deadlock, a_serialization_failure])
def test_the_client_retries_an_aborted_transaction_by_itself(
    database_url, store, client, monkeypatch, capture
):
    calls = failing_put_shop(monkeypatch, store, database_url, captured(capture), times=1)

    stored = client.put_shop(a_shop("shop-retried"))

    assert stored.shop_id == "shop-retried"
    assert len(calls) == 2


# --- Timeouts, configured -----------------------------------------------------------------------


@pytest.fixture
def impatient_client(database_url, clock, policy):
    """A client of a server whose database waits 50 ms at most for a lock (another writer's, on
    SQLite)."""
    store = SqlStore(open_database(database_url, lock_timeout=0.05, busy_timeout=0.05))
    store.migrate()
    app = App(Service(store, clock, policy), "127.0.0.1:0", workers=2, sweep_interval=3600)
    app.start()
    try:
        with Client(f"127.0.0.1:{app.port}", timeout=30) as client:
            yield client
    finally:
        app.stop(grace=1)


@contextlib.contextmanager
def shop_locked_by_another_writer(database_url: str, shop_id: str) -> Iterator[None]:
    if database_url.startswith("sqlite"):
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.close()
        return
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM shop WHERE id = %s FOR UPDATE", (shop_id,))
        yield


def test_a_write_waiting_past_the_lock_timeout_answers_unavailable(database_url, impatient_client):
    impatient_client.put_shop(a_shop("shop-locked"))

    with shop_locked_by_another_writer(database_url, "shop-locked"):
        with pytest.raises(Unavailable) as failed:
            impatient_client.put_shop(a_shop("shop-locked"))

    assert failed.value.reason == "DATABASE_UNAVAILABLE" and failed.value.retryable
    assert impatient_client.put_shop(a_shop("shop-locked")).shop_id == "shop-locked"
