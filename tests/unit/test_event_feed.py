"""The feed of a process's streams over a log of events: what it holds in memory, which streams
it wakes, and what a stream reads from it, against the same reads from the log itself."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from server.domain.events import Event, EventPage, EventType, FundsPosted, ShopStatusChanged
from server.domain.model import Actor
from server.grpc.events import Feed, Interest

EVERYTHING = Interest(None, frozenset())
AT = datetime(2026, 12, 1, tzinfo=UTC)


class Log:
    """The service's side of the feed: an outbox in memory, read as the store reads it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.committed: list = []
        self.reads = 0

    def write(self, shop_id: str, kind: EventType = EventType.FUNDS_POSTED, skip: int = 0) -> None:
        position = (self.events[-1].position if self.events else 0) + 1 + skip
        payload = (
            FundsPosted("t", "ANXIN_WALLET", shop_id, 1, "", 1)
            if kind is EventType.FUNDS_POSTED
            else ShopStatusChanged("NORMAL", "CLOSED")
        )
        self.events.append(Event(kind, AT, shop_id, "", Actor(), "", payload, position))
        for told in self.committed:
            told()

    def top(self) -> int:
        return self.events[-1].position if self.events else 0

    def last_event_position(self) -> int:
        return self.top()

    def read_events(self, *, after, from_oldest, shop_id, types, limit, viewer=None) -> EventPage:
        self.reads += 1
        found = [e for e in self.events if e.position > after][:limit]
        through = found[-1].position if len(found) >= limit else max(after, self.top())
        return EventPage(found, through, top=self.top())


@pytest.fixture
def log():
    return Log()


def started(log: Log, keep: int = 10, poll: float = 3600) -> tuple[Feed, threading.Event]:
    """A feed followed by one stream; by default only the commits wake it."""
    feed = Feed(log, poll=poll, keep=keep)  # type: ignore[arg-type]
    watcher = feed.subscribe(EVERYTHING)
    settled(feed, log)
    return feed, watcher.wake


def settled(feed: Feed, log: Log) -> None:
    deadline = time.monotonic() + 5
    while (page := feed.since(log.top(), EVERYTHING, 1)) is None or not page.caught_up:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_stream_within_what_the_feed_holds_reads_as_from_the_log(log):
    log.write("shop-1")
    feed, _ = started(log)
    start = log.top()
    for i in range(7):
        log.write(f"shop-{i % 2}", skip=i % 3)  # positions may skip numbers
    settled(feed, log)

    for after in range(start, log.top() + 1):
        for interest in (EVERYTHING, Interest("shop-1", frozenset())):
            page = feed.since(after, interest, 100)
            assert page is not None
            assert page.events == [e for e in log.events if e.position > after and interest(e)]
            assert page.through == log.top() and page.caught_up
    # A page cut at its limit goes on from its last event.
    page = feed.since(start, EVERYTHING, 3)
    assert page is not None
    assert page.events == log.events[1:4]
    assert page.through == log.events[3].position and not page.caught_up
    # Before the feed started, it holds nothing: the stream reads the log.
    assert feed.since(start - 1, EVERYTHING, 100) is None
    feed.close()


def test_the_feed_keeps_the_newest_events_only_and_a_stream_further_behind_reads_the_log(log):
    feed, _ = started(log, keep=5)
    for _ in range(12):
        log.write("shop-1")
    settled(feed, log)

    assert feed.since(6, EVERYTHING, 100) is None
    page = feed.since(7, EVERYTHING, 100)
    assert page is not None
    assert [e.position for e in page.events] == [8, 9, 10, 11, 12]
    feed.close()


def test_the_feed_wakes_only_the_streams_a_new_event_is_for(log):
    feed, everything = started(log)
    shop_1 = feed.subscribe(Interest("shop-1", frozenset())).wake
    shop_2 = feed.subscribe(Interest("shop-2", frozenset())).wake
    closed_2 = feed.subscribe(Interest("shop-2", frozenset({EventType.SHOP_STATUS_CHANGED}))).wake
    settled(feed, log)
    for waiter in (everything, shop_1, shop_2, closed_2):
        waiter.clear()

    log.write("shop-2")
    settled(feed, log)
    assert everything.wait(5) and shop_2.wait(5)
    assert not shop_1.is_set() and not closed_2.is_set()

    log.write("shop-2", EventType.SHOP_STATUS_CHANGED)
    assert closed_2.wait(5)
    assert not shop_1.is_set()
    feed.close()


def test_one_read_of_the_log_per_commit_whatever_the_number_of_streams(log):
    feed, _ = started(log)
    for i in range(50):
        feed.subscribe(Interest(f"shop-{i}", frozenset()))
    settled(feed, log)
    before = log.reads

    for i in range(10):
        log.write(f"shop-{i}")
        settled(feed, log)
    assert log.reads - before == 10
    feed.close()


def test_a_failed_read_forgets_what_the_feed_held_and_the_streams_read_the_log(log):
    feed, wake = started(log, poll=0.01)
    log.write("shop-1")
    settled(feed, log)
    wake.clear()
    failing = log.read_events

    def down(**request):
        raise ConnectionError("the database is down")

    log.read_events = down  # type: ignore[method-assign]
    log.write("shop-1")
    deadline = time.monotonic() + 5
    while feed.since(log.top() - 1, EVERYTHING, 100) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.005)

    # The stream is woken for the event the feed failed to read: it reads it from the log.
    assert wake.wait(5)

    log.read_events = failing  # type: ignore[method-assign]
    settled(feed, log)
    page = feed.since(log.top(), EVERYTHING, 100)
    assert page is not None and page.caught_up
    wake.clear()
    log.write("shop-1")
    assert wake.wait(5)
    feed.close()


def test_a_stream_is_woken_for_a_commit_between_its_first_read_and_the_feed_s_start(log):
    log.write("shop-1")
    its_first_read = log.top()
    newest = log.last_event_position

    cleared = threading.Event()

    def a_commit_first() -> int:
        assert cleared.wait(5)
        log.write("shop-1")
        return newest()

    log.last_event_position = a_commit_first  # type: ignore[method-assign]
    feed = Feed(log, poll=3600)  # type: ignore[arg-type]
    watcher = feed.subscribe(EVERYTHING)
    watcher.wake.clear()  # the stream reads the log through its_first_read, then waits
    cleared.set()

    assert watcher.wake.wait(5)
    assert log.top() == its_first_read + 1
    assert feed.since(its_first_read, EVERYTHING, 100) is None  # it reads the log
    feed.close()


class Gone:
    """The context of a stream whose call is torn down: it cannot say its peer."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def peer(self) -> str:
        raise RuntimeError("the call is torn down")


def test_the_feed_outlives_a_failure_of_its_own_and_still_cuts_every_stalled_stream(log):
    feed, wake = started(log, poll=0.01)
    gone = [Gone(), Gone()]  # stalled together: the second is cut though the first raised
    for context in gone:
        feed.subscribe(EVERYTHING, context).sending_since = time.monotonic() - 3600

    deadline = time.monotonic() + 5
    while not all(context.cancelled for context in gone):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    settled(feed, log)
    wake.clear()
    log.write("shop-1")
    settled(feed, log)
    assert wake.wait(5)
    page = feed.since(log.top() - 1, EVERYTHING, 100)
    assert page is not None and [e.position for e in page.events] == [log.top()]
    feed.close()


def test_a_closed_feed_reads_no_more_and_lets_go_of_what_it_kept(log):
    for _ in range(450):
        log.write("shop-1")
    reading, go_on = threading.Event(), threading.Event()
    read = log.read_events
    reads_after_close = []

    def slow(**kwargs):
        page = read(**kwargs)
        if feed.closed.is_set():
            reads_after_close.append(kwargs["after"])
        reading.set()
        assert go_on.wait(5)
        return page

    feed = Feed(log, poll=3600, keep=1000)  # type: ignore[arg-type]
    log.last_event_position = lambda: 0  # type: ignore[method-assign]  # it reads them all
    log.read_events = slow  # type: ignore[method-assign]
    watcher = feed.subscribe(EVERYTHING)
    assert reading.wait(5)  # its first read of 100 events, of the 450 behind it
    feed.close()
    assert watcher.wake.is_set()  # the stream is woken, to end
    go_on.set()
    assert feed.thread is not None
    feed.thread.join(5)
    assert not feed.thread.is_alive()
    assert reads_after_close == []
    assert feed.since(0, EVERYTHING, 100) is None
    assert feed.since(log.top(), EVERYTHING, 100) is None
