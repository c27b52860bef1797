"""Positions follow the commit order, on two PostgreSQL connections at once: a transaction that
began first (or wrote its events first) and commits last gets the higher position, so a consumer
that resumed from the position of the one that committed first still receives it; and the
positions are drawn at the commit, by the database, so a transaction whose events are written
but not committed holds back no other's commit."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest

from server.domain.events import Event, EventType, ShopStatusChanged, payload_values
from server.domain.model import Actor
from server.store import SqlStore, open_database
from server.store.events import EVENT_LOCK

pytestmark = pytest.mark.postgres

T = datetime(2026, 6, 1, tzinfo=UTC)


def told(shop_id: str) -> Event:
    return Event(
        EventType.SHOP_STATUS_CHANGED,
        T,
        shop_id,
        "",
        Actor(),
        "",
        ShopStatusChanged("NORMAL", "SUSPENDED"),
    )


def read(store, after: int):
    """A reader on a connection of its own (peewee keeps one per thread)."""
    return on_a_thread(lambda: _read(store, after))


def _read(store, after):
    with store.unit_of_work(read_only=True) as uow:
        return uow.events.read(after=after, shop_id=None, types=(), limit=100)


def on_a_thread(work):
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join(10)
    return result[0]


def commit_one(store, shop_id: str) -> None:
    with store.unit_of_work() as uow:
        uow.events.add(told(shop_id))
        uow.commit()


class Held:
    """A transaction on a thread of its own that adds its event (with `written`, also writes it
    to the table) and then waits to be told to commit."""

    def __init__(self, store, shop_id: str, *, written: bool) -> None:
        self.ready, self.go = threading.Event(), threading.Event()

        def run():
            with store.unit_of_work() as uow:
                uow.events.add(told(shop_id))
                if written:
                    uow.events.flush()
                self.ready.set()
                self.go.wait(10)
                uow.commit()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.ready.wait(10)

    def commit(self) -> None:
        self.go.set()
        self.thread.join(10)


@pytest.fixture
def pg_store(postgres_server):
    """PostgreSQL only: SQLite's one writer commits in the order it writes."""
    store = SqlStore(open_database(postgres_server.create_database(f"order_{uuid.uuid4().hex}")))
    store.migrate()
    yield store
    store.close()


@pytest.mark.parametrize("written", [False, True], ids=["began-first", "wrote-first"])
def test_the_transaction_that_commits_last_is_handed_out_after(pg_store, written):
    store = pg_store
    first = Held(store, "shop-first", written=written)  # began first; its change is uncommitted

    on_a_thread(lambda: commit_one(store, "shop-second"))
    consumer = read(store, 0)
    assert [e.shop_id for e in consumer.events] == ["shop-second"]
    resume_from = consumer.events[-1].position

    first.commit()

    late = read(store, resume_from).events
    assert [e.shop_id for e in late] == ["shop-first"]
    assert late[0].position > resume_from


def test_written_but_uncommitted_events_hold_back_no_other_commit(pg_store):
    store = pg_store
    start = read(store, 0).through
    holder = Held(store, "shop-holder", written=True)  # its events written, not committed

    other = threading.Thread(target=commit_one, args=(store, "shop-other"))
    other.start()
    other.join(10)
    assert not other.is_alive()  # it committed without waiting for the holder
    page = read(store, start)
    assert [e.shop_id for e in page.events] == ["shop-other"]
    assert page.through == page.events[-1].position

    holder.commit()
    assert [e.shop_id for e in read(store, start).events] == ["shop-other", "shop-holder"]


def test_a_replica_still_at_step_4_keeps_the_position_it_drew_under_the_lock(pg_store):
    """During a rolling upgrade a replica of schema step 4 takes the lock itself and draws its
    positions as it inserts (the sequence's own values): the commit leaves them as they are, and
    the positions go on from them without a gap."""
    store = pg_store
    before = read(store, 0).through
    with store.unit_of_work() as uow:
        # Step 4's statement (store/events.py at that step), with one event.
        cursor = store.database.execute_sql(
            "WITH turn AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s, %s)) "
            'INSERT INTO "event" ("type", "occurred_at", "shop_id", "order_id", "actor_service", '
            '"actor_person", "policy_version", "payload") '
            "SELECT %s, 0, 'shop-old-replica', '', '', '', '', %s FROM turn "
            'RETURNING "position"',
            [
                *EVENT_LOCK,
                EventType.SHOP_STATUS_CHANGED.value,
                json.dumps(payload_values(ShopStatusChanged("NORMAL", "SUSPENDED"))),
            ],
        )
        drawn = cursor.fetchone()[0]
        uow.commit()
    on_a_thread(lambda: commit_one(store, "shop-new-replica"))

    page = read(store, before)
    assert [(e.shop_id, e.position) for e in page.events] == [
        ("shop-old-replica", drawn),
        ("shop-new-replica", drawn + 1),
    ]


def test_the_commit_finds_its_events_by_key_however_the_outbox_has_grown(pg_store):
    """The outbox analysed while empty, as a new deployment's (or a pruned one's) is, then grown
    without a new ANALYZE: the position drawn at each commit finds its event by the primary key.
    A plan of the draw made while the outbox was that small would read the whole table at every
    commit of the connection's life, under the lock every commit that writes events waits on."""
    store = pg_store
    # No ANALYZE but the test's: one would make every connection plan its statements again.
    store.database.execute_sql('ALTER TABLE "event" SET (autovacuum_enabled = off)')
    store.database.execute_sql('ANALYZE "event"')
    for i in range(8):  # the draw's plan, made and kept by this thread's connection
        commit_one(store, f"shop-young-{i}")
    grown = 5_000
    with store.unit_of_work() as uow:
        store.database.execute_sql(
            'INSERT INTO "event" ("type", "occurred_at", "shop_id", "order_id", "actor_service", '
            '"actor_person", "policy_version", "payload") '
            "SELECT %s, 0, 'shop-' || i, '', '', '', '', %s FROM generate_series(1, %s) AS i",
            [
                EventType.SHOP_STATUS_CHANGED.value,
                json.dumps(payload_values(ShopStatusChanged("NORMAL", "SUSPENDED"))),
                grown,
            ],
        )
        uow.commit()
    scans = outbox_scans(store)

    for i in range(5):
        commit_one(store, f"shop-grown-{i}")

    assert outbox_scans(store) == scans
    assert read(store, 0).top == 8 + grown + 5  # each commit drew its position


def outbox_scans(store) -> int:
    """How many times the outbox was read whole so far, this connection's reads included (the
    statistics it has not reported yet are sent first)."""
    store.database.execute_sql("SELECT pg_stat_force_next_flush()")
    cursor = store.database.execute_sql(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'event'"
    )
    return int(cursor.fetchone()[0])
