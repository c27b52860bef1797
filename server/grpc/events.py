"""The Events service: the outbox read in position order, paged (ListEvents) or as a stream that
follows the commits (WatchEvents)."""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aftersales.v1 import events_pb2, events_pb2_grpc, resources_pb2
from server.domain import events
from server.grpc.callers import viewer
from server.grpc.common import (
    Fields,
    MessageFields,
    Servicer,
    filled,
    page_size,
    timestamp,
    timestamp_fields,
)
from server.grpc.resources import actor_fields
from server.service import Service

# Events read per statement while a stream catches up: what a stream holds in memory at most.
STREAM_BATCH = 100
DEFAULT_HEARTBEAT_SECONDS = 10
MAX_HEARTBEAT_SECONDS = 300
# Events one message of a stream holds at most, when its consumer asks for batches (events.proto).
MAX_BATCH_EVENTS = 50
# How often a process looks for events other processes committed (its own are read at once),
# while anyone watches.
POLL_SECONDS = 0.05
# The newest events a process keeps in memory while anyone watches (up to about 10 MB). A
# stream within them takes its events from there: the database is read once per commit, for
# every stream of the process, whatever their number. A stream further behind reads the database
# itself, STREAM_BATCH events at a time, until it is within them.
RECENT_EVENTS = 2_000
# Reads of the feed per round at most (then it looks at its streams again).
FEED_READS = RECENT_EVENTS // STREAM_BATCH
# How often a stream served from memory checks that its caller may still see what it follows (a
# staff member moved to another shop, or whose role no longer shows the money).
ACCESS_CHECK_SECONDS = 10.0
# A stream whose message has waited this long for its consumer to take it (a consumer that reads
# nothing, a hung host whose connection stays up) is cut: it would hold its slot for good.
STALLED_STREAM_SECONDS = 60.0
# A feed whose reads fail says so at most this often.
FAILURE_LOG_SECONDS = 60.0

log = logging.getLogger("aftersales")


@dataclass(frozen=True)
class Kept:
    """Events a stream takes from the feed, each with its message (rendered once for every
    stream), and the position read through, as EventsStore.read gives them."""

    events: list[events.Event]
    messages: list[Any]
    through: int
    top: int

    @property
    def caught_up(self) -> bool:
        return self.through >= self.top


@dataclass(frozen=True)
class Interest:
    """What a stream follows: one shop's events or every shop's, of some types or of all."""

    shop_id: str | None
    types: frozenset[events.EventType]

    def __call__(self, event: events.Event) -> bool:
        return (self.shop_id is None or event.shop_id == self.shop_id) and (
            not self.types or event.type in self.types
        )

    def any_of(self, told: dict[str | None, set[events.EventType]]) -> bool:
        """Whether any of the events `told` (their types by shop, every shop's under None) is
        for this stream."""
        kinds = told[None] if self.shop_id is None else told.get(self.shop_id)
        if not kinds:
            return False
        return not self.types or not self.types.isdisjoint(kinds)


class Watcher:
    """A stream of this process: what it follows, the event that wakes it, and since when the
    message it hands to gRPC has waited for its consumer to take it (None: none waits). Its own
    thread alone writes it, with no lock: the feed's checks read it."""

    __slots__ = ("context", "interest", "sending_since", "wake")

    def __init__(self, interest: Interest, context: Any = None) -> None:
        self.interest = interest
        self.context = context
        self.wake = threading.Event()
        self.sending_since: float | None = None

    def sending(self) -> None:
        """A message is handed to gRPC, which takes it once the consumer has room for it (its
        flow-control window)."""
        self.sending_since = time.monotonic()

    def sent(self) -> None:
        self.sending_since = None


class Feed:
    """The newest events, read once for every stream of this process: at once after this
    process's commits, and within POLL_SECONDS of other processes' (one thread reads them while
    anyone watches). It keeps the last RECENT_EVENTS in memory for the streams to take theirs
    from, and wakes only the streams some new event is for. The same thread cuts the streams
    whose consumer has taken nothing for STALLED_STREAM_SECONDS.

    Safe to resume from: the feed reads as a stream does (positions follow the commit order, so
    nothing is visible later at or below the position it read through), and keeps every event
    after `_base` through `_head`."""

    def __init__(
        self,
        service: Service,
        poll: float = POLL_SECONDS,
        keep: int = RECENT_EVENTS,
        render: Callable[[events.Event], Any] = lambda event: event,
    ) -> None:
        self.service = service
        self.poll = poll
        self.keep = keep
        self.render = render
        self.closed = threading.Event()
        self._news = threading.Event()
        self._watchers: set[Watcher] = set()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        # Every event after _base (None: none kept) through _head, in position order.
        self._recent: list[events.Event] = []
        self._messages: list[Any] = []
        self._positions: list[int] = []
        self._base: int | None = None
        self._head = 0
        self._failure_logged = -FAILURE_LOG_SECONDS
        service.committed.append(self._news.set)

    def _cut_stalled(self) -> None:
        cutoff = time.monotonic() - STALLED_STREAM_SECONDS
        with self._lock:
            stalled = [
                w
                for w in self._watchers
                if (since := w.sending_since) is not None and since < cutoff
            ]
            self._watchers.difference_update(stalled)  # cut once
        for watcher in stalled:
            # Each on its own: a call torn down meanwhile may refuse either, and the streams
            # after it must still be cut. Its peer first: a cancelled call no longer has one.
            try:
                peer = watcher.context.peer()
            except Exception:
                peer = None
            with contextlib.suppress(Exception):
                watcher.context.cancel()
            log.warning(
                "an event stream is cut: its consumer took no message for %.0f s",
                STALLED_STREAM_SECONDS,
                extra={"peer": peer},
            )

    def subscribe(self, interest: Interest, context: Any = None) -> Watcher:
        """A stream of `context` follows `interest` from now on, until it unsubscribes."""
        watcher = Watcher(interest, context)
        with self._lock:
            self._watchers.add(watcher)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="event-feed", daemon=True)
                self.thread.start()
        self._news.set()  # the feed starts reading, if it was not
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def since(self, after: int, interest: Interest, limit: int) -> Kept | None:
        """At most `limit` events after `after` that `interest` follows, from memory, read
        through as EventsStore.read reads; None when the feed does not hold every event after
        `after` (the stream reads the database)."""
        with self._lock:
            if self._base is None or not self._base <= after <= self._head:
                return None
            found: list[events.Event] = []
            messages: list[Any] = []
            through = self._head
            first = bisect.bisect_right(self._positions, after)
            for i in range(first, len(self._recent)):
                event = self._recent[i]
                if interest(event):
                    found.append(event)
                    messages.append(self._messages[i])
                    if len(found) >= limit:
                        through = event.position
                        break
            return Kept(found, messages, through, self._head)

    def close(self) -> None:
        """Streams end (UNAVAILABLE: the server is stopping; their consumers reconnect). The
        feed's thread reads no more and lets go of what it keeps."""
        self.closed.set()
        self._news.set()
        if self._news.set in self.service.committed:
            self.service.committed.remove(self._news.set)
        with self._lock:
            everyone = list(self._watchers)
        for watcher in everyone:  # to end
            watcher.wake.set()

    def _run(self) -> None:
        while not self.closed.is_set():
            self._news.wait(self.poll)
            self._news.clear()
            if self.closed.is_set():
                break
            try:
                with self._lock:
                    watched = bool(self._watchers)
                if not watched:
                    self._restart(None)  # nothing kept while nobody watches
                    continue
                self._cut_stalled()
                self._read_on()
            except Exception:  # the streams read the database and report the failure
                self._failed()
                self._restart(None)
        self._restart(None)  # closed

    def _failed(self) -> None:
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_SECONDS:
            self._failure_logged = now
            log.warning(
                "the event feed failed: its streams read the database until it reads again "
                "(said at most once a minute)",
                exc_info=True,
            )

    def _read_on(self) -> None:
        if self._base is None:
            self._restart(self.service.last_event_position())
        for _ in range(FEED_READS):
            if self.closed.is_set():
                return
            page = self.service.read_events(
                after=self._head, from_oldest=False, shop_id=None, types=(), limit=STREAM_BATCH
            )
            self._keep(page.events, page.through)
            if page.caught_up:
                return
        self._news.set()  # more to read, after a look at the streams

    def _restart(self, top: int | None) -> None:
        """Forgets every event kept, and holds those after `top` from now on (None: none). Every
        stream is woken: the events it has not read, at or before `top`, woke none (it reads
        them from the database)."""
        with self._lock:
            self._recent, self._messages, self._positions = [], [], []
            self._base, self._head = top, top or 0
            everyone = list(self._watchers)
        for watcher in everyone:
            watcher.wake.set()

    def _keep(self, new: list[events.Event], through: int) -> None:
        """Adds `new`, read through `through`, and wakes the streams they are for."""
        messages = [self.render(event) for event in new]
        with self._lock:
            self._recent += new
            self._messages += messages
            self._positions += (e.position for e in new)
            excess = len(self._recent) - self.keep
            if excess > 0:
                self._base = self._positions[excess - 1]
                del self._recent[:excess], self._messages[:excess], self._positions[:excess]
            self._head = max(self._head, through)
            told: dict[str | None, set[events.EventType]] = {None: set()}
            for event in new:
                told.setdefault(event.shop_id, set()).add(event.type)
                told[None].add(event.type)
            woken = [w for w in self._watchers if w.interest.any_of(told)]
        for watcher in woken:
            watcher.wake.set()


class StreamSlots:
    """At most `limit` streams at once: each holds a thread while it lasts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1

    def busy(self) -> int:
        with self._lock:
            return self._open


class EventsServicer(events_pb2_grpc.EventsServicer, Servicer):
    def __init__(self, service: Service, *, max_streams: int, poll: float = POLL_SECONDS) -> None:
        super().__init__(service)
        self.feed = Feed(service, poll, render=_watched)
        self.slots = StreamSlots(max_streams)

    def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: Any
    ) -> events_pb2.ListEventsResponse:
        f = Fields(request)
        after, from_oldest, shop_id, types = _filters(f, request)
        if request.page_size < 0:
            f.bad("page_size", "must not be negative")
        f.raise_if_any()
        size = page_size(request.page_size)
        page = self.service.read_events(
            after=after,
            from_oldest=from_oldest,
            shop_id=shop_id,
            types=types,
            limit=size,
            viewer=viewer(),
        )
        response = events_pb2.ListEventsResponse(
            next_after_position=page.through, caught_up=page.caught_up
        )
        held = filled(response, "events", page.events, event_fields)
        if held < len(page.events):
            # Cut for its bytes: the next page goes on after the last event sent.
            response.next_after_position = page.events[held - 1].position
            response.caught_up = False
        return response

    def WatchEvents(
        self, request: events_pb2.WatchEventsRequest, context: Any
    ) -> Iterator[events_pb2.WatchEventsResponse]:
        f = Fields(request)
        after, from_oldest, shop_id, types = _filters(f, request)
        heartbeat = request.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        if not 1 <= heartbeat <= MAX_HEARTBEAT_SECONDS:
            f.bad("heartbeat_seconds", f"must be from 1 to {MAX_HEARTBEAT_SECONDS}, or 0")
        if not 0 <= request.max_batch_events <= MAX_BATCH_EVENTS:
            f.bad("max_batch_events", f"must be from 0 to {MAX_BATCH_EVENTS}")
        batch = max(request.max_batch_events, 1)
        f.raise_if_any()
        person = viewer()
        shop_id = self.service.events_shop(shop_id=shop_id, viewer=person)
        interest = Interest(shop_id, frozenset(types))
        if not self.slots.take():
            raise TooManyStreams(self.slots.limit)
        watcher = self.feed.subscribe(interest, context)
        wake = watcher.wake
        context.add_callback(wake.set)
        try:
            last_sent = checked = time.monotonic()
            while context.is_active() and not self.feed.closed.is_set():
                wake.clear()
                page: Kept | events.EventPage | None = None
                if not from_oldest:
                    page = self.feed.since(after, interest, STREAM_BATCH)
                if page is None:
                    page = self.service.read_events(
                        after=after,
                        from_oldest=from_oldest,
                        shop_id=shop_id,
                        types=types,
                        limit=STREAM_BATCH,
                        viewer=person,
                    )
                    checked = time.monotonic()
                elif person is not None and time.monotonic() - checked >= ACCESS_CHECK_SECONDS:
                    self.service.events_shop(shop_id=shop_id, viewer=person)
                    checked = time.monotonic()
                from_oldest = False
                sent: Iterable[events_pb2.WatchEventsResponse]
                if batch > 1 and len(page.events) > 1:
                    sent = _batched(
                        [m.event for m in page.messages]
                        if isinstance(page, Kept)
                        else [event_pb(e) for e in page.events],
                        batch,
                    )
                else:
                    sent = page.messages if isinstance(page, Kept) else map(_watched, page.events)
                for message in sent:
                    watcher.sending()
                    yield message
                    watcher.sent()
                after = page.through
                if page.events:
                    last_sent = time.monotonic()
                idle = time.monotonic() - last_sent
                if idle >= heartbeat:  # also while a filtered backlog is read on, span by span
                    watcher.sending()
                    yield events_pb2.WatchEventsResponse(
                        heartbeat=events_pb2.Heartbeat(
                            position=after, sent_at=timestamp(self.service.now())
                        )
                    )
                    watcher.sent()
                    last_sent = time.monotonic()
                    idle = 0.0
                if len(page.events) >= STREAM_BATCH or not page.caught_up:
                    continue
                wake.wait(heartbeat - idle)
        finally:
            self.feed.unsubscribe(watcher)
            self.slots.give_back()
        if self.feed.closed.is_set() and context.is_active():
            raise ServerStopping()


class TooManyStreams(Exception):
    """Every slot for a stream is taken (RESOURCE_EXHAUSTED, retryable later)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"this server serves {limit} event streams at most; retry later")


class ServerStopping(Exception):
    """The server is stopping: its streams end UNAVAILABLE, for consumers to resume elsewhere."""

    def __init__(self) -> None:
        super().__init__("the server is stopping; resume from the last position handled")


def _filters(
    f: Fields, request: events_pb2.ListEventsRequest | events_pb2.WatchEventsRequest
) -> tuple[int, bool, str | None, tuple[events.EventType, ...]]:
    if request.after_position < 0:
        f.bad("after_position", "must not be negative")
    if request.from_oldest and request.after_position:
        f.bad("from_oldest", "goes with after_position 0 only")
    shop_id = f.id("shop_id", request.shop_id, required=False) or None
    types = []
    for i, value in enumerate(request.types):
        member = f.enum(f"types[{i}]", events_pb2.EventType, value, events.EventType, "EVENT_TYPE_")
        if member is not None:
            types.append(member)
    return request.after_position, request.from_oldest, shop_id, tuple(dict.fromkeys(types))


# --- Events -> messages ------------------------------------------------------------------------


def _watched(e: events.Event) -> events_pb2.WatchEventsResponse:
    return events_pb2.WatchEventsResponse(event=event_pb(e))


def _batched(page: list[events_pb2.Event], size: int) -> Iterator[events_pb2.WatchEventsResponse]:
    """The events of a page (STREAM_BATCH at most), `size` to a message at most; one alone
    as `event` (a stream that keeps up mostly sends its events one by one: the message the feed
    rendered for every stream is sent, and no event copied into a batch)."""
    for start in range(0, len(page), size):
        chunk = page[start : start + size]
        yield (
            events_pb2.WatchEventsResponse(event=chunk[0])
            if len(chunk) == 1
            else events_pb2.WatchEventsResponse(batch=events_pb2.EventBatch(events=chunk))
        )


def event_pb(e: events.Event) -> events_pb2.Event:
    return events_pb2.Event(**event_fields(e))


def event_fields(e: events.Event) -> MessageFields:
    """The event as its message's fields, its payload under the name of its oneof field
    (resources.py: nested messages as dicts are built in place)."""
    name, payload = _payload_fields(e.payload)
    return {
        "position": e.position,
        "type": events_pb2.EventType.Value("EVENT_TYPE_" + e.type.value),
        "occurred_at": timestamp_fields(e.occurred_at),
        "shop_id": e.shop_id,
        "order_id": e.order_id,
        "actor": actor_fields(e.actor),
        "policy_version": e.policy_version,
        name: payload,
    }


def _payload_fields(p: events.Payload) -> tuple[str, MessageFields]:
    if isinstance(p, events.EntryOpened):
        return "entry_opened", {
            "entry_id": p.entry_id,
            "opened_at": timestamp_fields(p.opened_at),
            "expires_at": timestamp_fields(p.expires_at),
            "operator_id": p.operator_id,
            "note": p.note,
        }
    if isinstance(p, events.EntryUsed):
        return "entry_used", {
            "entry_id": p.entry_id,
            "application_id": p.application_id,
            "buyer_id": p.buyer_id,
            "amount": p.amount,
            "filed_at": timestamp_fields(p.filed_at),
        }
    if isinstance(p, events.EntryExpired):
        return "entry_expired", {
            "entry_id": p.entry_id,
            "opened_at": timestamp_fields(p.opened_at),
            "expires_at": timestamp_fields(p.expires_at),
        }
    if isinstance(p, events.RefundRecorded):
        return "refund_recorded", {
            "refund_id": p.refund_id,
            "clawback_id": p.clawback_id,
            "application_id": p.application_id,
            "amount": p.amount,
            "paid_from_wallet": p.paid_from_wallet,
            "paid_from_deposit": p.paid_from_deposit,
            "state": resources_pb2.ClawbackState.Value("CLAWBACK_STATE_" + p.state),
            "reasons": [resources_pb2.ReasonCode.Value(r) for r in p.reasons],
            "lines": [
                {
                    "line_no": line.line_no,
                    "payee_kind": resources_pb2.PayeeKind.Value("PAYEE_KIND_" + line.payee_kind),
                    "payee_id": line.payee_id,
                    "account": _account(line.account_kind, line.account_owner_id),
                    "due": line.due,
                    "recovered": line.recovered,
                    "outstanding": line.outstanding,
                }
                for line in p.lines
            ],
        }
    if isinstance(p, events.DebtRecovered):
        return "debt_recovered", {
            "clawback_id": p.clawback_id,
            "line_no": p.line_no,
            "payee_id": p.payee_id,
            "from_account": _account(p.from_account_kind, p.from_account_owner_id),
            "to_account": _account(p.to_account_kind, p.to_account_owner_id),
            "amount": p.amount,
            "outstanding": p.outstanding,
            "transfer_id": p.transfer_id,
        }
    if isinstance(p, events.FundsPosted):
        return "funds_posted", {
            "transfer_id": p.transfer_id,
            "account": _account(p.account_kind, p.account_owner_id),
            "amount": p.amount,
            "memo": p.memo,
            "balance": p.balance,
        }
    assert isinstance(p, events.ShopStatusChanged)
    return "shop_status_changed", {
        "previous": _shop_status(p.previous),
        "status": _shop_status(p.status),
    }


def _account(kind: str, owner_id: str) -> MessageFields:
    return {"kind": resources_pb2.AccountKind.Value("ACCOUNT_KIND_" + kind), "owner_id": owner_id}


def _shop_status(status: str) -> resources_pb2.ShopStatus.ValueType:
    if not status:
        return resources_pb2.SHOP_STATUS_UNSPECIFIED
    return resources_pb2.ShopStatus.Value("SHOP_STATUS_" + status)
